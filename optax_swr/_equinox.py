# Copyright 2026 The optax_swr Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Equinox models: their layers' forward order and BatchNorm statistics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import functools
from typing import Any

import jax

from optax_swr import _batch_stats
from optax_swr import _layers
from optax_swr import _tracing

Path = _layers.Path


def layers_from_equinox(
  model: Any,
  *example_args: Any,
  apply: Callable[..., Any] | None = None,
  **kwargs: Any,
) -> _layers.Layers:
  """The layers of an Equinox model in forward order, for ``swr(layers=...)``.

  Traces ``model(*example_args, **kwargs)`` abstractly and records the order
  in which the layers are first called: modules that own a ``weight`` (or
  another conventional weight leaf) and normalization modules
  (``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``BatchNorm``), with or without
  a weight. A module's field order need not be the order it calls its layers.
  The paths are relative to ``eqx.filter(model, eqx.is_inexact_array)``: the
  params of ``eqx.partition(model, eqx.is_inexact_array)`` and
  ``eqx.apply_updates``.

  Args:
    model: the ``eqx.Module``.
    *example_args: example inputs: arrays or ``jax.ShapeDtypeStruct`` (for
      a model that takes one example, one example).
    apply: how to call the model, ``apply(model, *example_args)``, e.g. to
      ``jax.vmap`` it with an ``axis_name`` for BatchNorm; by default
      ``model(*example_args, **kwargs)``.
    **kwargs: passed on to the model's ``__call__`` (non-array arguments
      such as ``key=None`` go here).

  Returns:
    The :class:`Layers`, in forward order, with the network's log-scale
    equations.

  Raises:
    ValueError: if a module owns a weight and also contains layers.

  Warns:
    NotAChainWarning: where the trace cannot follow how the layers' scales
      reach the output (control flow), so SWR may change the function.
    ConstrainedLayersWarning: where the network fixes some layers' factors
      completely (SWR keeps the function but leaves those layers alone).

  Example:
    >>> import equinox as eqx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax_swr
    >>> class Net(eqx.Module):
    ...   head: eqx.nn.Linear  # declared first, runs last
    ...   body: eqx.nn.Linear
    ...   def __init__(self, key):
    ...     k1, k2 = jax.random.split(key)
    ...     self.head = eqx.nn.Linear(8, 2, key=k1)
    ...     self.body = eqx.nn.Linear(4, 8, key=k2)
    ...   def __call__(self, x):
    ...     return self.head(jax.nn.relu(self.body(x)))
    >>> net = Net(jax.random.key(0))
    >>> for layer in optax_swr.layers_from_equinox(net, jnp.ones(4)):
    ...   print(layer.weight, layer.bias)
    ('body', 'weight') ('body', 'bias')
    ('head', 'weight') ('head', 'bias')
  """
  import equinox as eqx  # pylint: disable=g-import-not-at-top

  params, static = eqx.partition(model, eqx.is_inexact_array)
  recorder = _tracing.CallRecorder(params, "layers_from_equinox")
  norm_types = _tracing.norm_types(eqx.nn)

  def record(path: Path, module: Any) -> Any:
    is_norm = isinstance(module, norm_types)
    if not recorder.is_layer(path, is_norm):
      return module
    return _recorded_type(module)(module, path, is_norm, recorder)

  def forward(params, *args):
    # The layers of a copy are wrapped: the user's model is not touched.
    copy = _map_modules(eqx.combine(params, static), record)
    if apply is not None:
      return apply(copy, *args)
    return copy(*args, **kwargs)

  return recorder.finish(jax.make_jaxpr(forward)(params, *example_args))


def _map_modules(
  node: Any, f: Callable[[Path, Any], Any], path: Path = ()
) -> Any:
  """``node`` rebuilt with every module in it, itself included, replaced by
  ``f(path, module)``; inner modules first."""
  import equinox as eqx  # pylint: disable=g-import-not-at-top

  is_module = lambda x: x is not node and isinstance(x, eqx.Module)
  children, treedef = jax.tree_util.tree_flatten_with_path(
    node, is_leaf=is_module
  )
  rebuilt = [
    _map_modules(child, f, (*path, *_layers.path_of(key_path)))
    if isinstance(child, eqx.Module)
    else child
    for key_path, child in children
  ]
  return f(path, jax.tree.unflatten(treedef, rebuilt))


@functools.cache
def _recorded_types() -> tuple[type, type]:
  """The Equinox modules that wrap a layer in a traced copy: a plain one, and
  one for stateful layers (``eqx.nn.Sequential`` hands those the state)."""
  import equinox as eqx  # pylint: disable=g-import-not-at-top

  # The path is a static field: blocks that a model partitions and combines
  # again inside a ``lax.scan`` are new objects, which still know it.
  class RecordedLayer(_tracing.RecordedLayer, eqx.Module):
    module: Any
    path: Path = eqx.field(static=True)
    is_norm: bool = eqx.field(static=True)
    recorder: _tracing.CallRecorder = eqx.field(static=True)

  class RecordedStatefulLayer(RecordedLayer, eqx.nn.StatefulLayer):
    def is_stateful(self) -> bool:
      return self.module.is_stateful()

  return RecordedLayer, RecordedStatefulLayer


def _recorded_type(module: Any) -> type:
  import equinox as eqx  # pylint: disable=g-import-not-at-top

  plain, stateful = _recorded_types()
  return stateful if isinstance(module, eqx.nn.StatefulLayer) else plain


def _submodules(node: Any, module_type: type) -> Iterator[tuple[Path, Any]]:
  """Every module below ``node`` with its path, as ``leaf_paths`` writes it."""
  is_module = lambda x: x is not node and isinstance(x, module_type)
  children = jax.tree_util.tree_flatten_with_path(node, is_leaf=is_module)[0]
  for key_path, child in children:
    if isinstance(child, module_type):
      path = _layers.path_of(key_path)
      yield path, child
      for below, module in _submodules(child, module_type):
        yield (*path, *below), module


# The StateIndex fields of eqx.nn.BatchNorm that hold (running mean, running
# var): one per mode ("ema", "batch"), and the single one of older versions.
_BATCH_NORM_STAT_FIELDS = (
  "ema_state_index",
  "batch_state_index",
  "state_index",
)


def sync_equinox_batch_stats(
  model: Any, state: Any, opt_state: Any, layers: Any
) -> Any:
  """Rescales the running statistics of an Equinox model's BatchNorms.

  The Equinox form of :func:`sync_batch_stats`: call it after every update,
  on the ``eqx.nn.State`` that the training forward pass of that step
  returned. For every ``eqx.nn.BatchNorm`` in ``model`` the running mean is
  multiplied by the scale s of its input in the last SWR step and the
  running variance by s^2 (s is the BatchNorm's entry of
  ``SWRState.input_scales``). In ``mode="batch"`` these are the averages
  before debiasing, which inference divides by the same number. A BatchNorm
  stacked with ``eqx.filter_vmap`` (one :class:`Layer` per slice) gets one
  scale per slice.

  Args:
    model: the ``eqx.Module`` holding the BatchNorms. Only its structure is
      read: the model before or after the update, in training or inference
      mode, or the static part of ``eqx.partition(model, ...)`` (as inside a
      jitted step).
    state: its ``eqx.nn.State``.
    opt_state: the optimizer state holding the :class:`SWRState`.
    layers: the layers passed to ``swr``, e.g. from
      :func:`layers_from_equinox` (see :func:`sync_batch_stats`).

  Returns:
    The rescaled ``eqx.nn.State``. As with ``state.set``, the ``state``
    passed in can no longer be used where the model has a BatchNorm: use the
    returned one.

  Raises:
    ValueError: if ``state`` is not an ``eqx.nn.State``, ``opt_state`` holds
      no (or several) SWR states, ``layers`` does not match it, or a
      BatchNorm of ``model`` is not a normalization layer of ``layers``.

  Example:
    >>> import equinox as eqx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_swr
    >>> class Net(eqx.Module):
    ...   fc: eqx.nn.Linear
    ...   bn: eqx.nn.BatchNorm
    ...   def __init__(self, key):
    ...     self.fc = eqx.nn.Linear(3, 4, use_bias=False, key=key)
    ...     self.bn = eqx.nn.BatchNorm(4, axis_name="batch", mode="batch")
    ...   def __call__(self, x, state):
    ...     return self.bn(self.fc(x), state)
    >>> def train(model, x, state):  # BatchNorm reduces over "batch"
    ...   return jax.vmap(
    ...       model, axis_name="batch", in_axes=(0, None), out_axes=(0, None)
    ...   )(x, state)
    >>> model, state = eqx.nn.make_with_state(Net)(jax.random.key(0))
    >>> x = jnp.arange(6.0).reshape(2, 3)
    >>> layers = optax_swr.layers_from_equinox(model, x, state, apply=train)
    >>> params = eqx.filter(model, eqx.is_inexact_array)
    >>> tx = optax.chain(optax.sgd(0.1), optax_swr.swr(0.5, layers=layers))
    >>> opt_state = tx.init(params)
    >>> _, state = train(model, x, state)  # updates the running stats
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> _, opt_state = tx.update(grads, opt_state, params)
    >>> _, var_before = state.get(model.bn.batch_state_index)
    >>> state = optax_swr.sync_equinox_batch_stats(
    ...     model, state, opt_state, layers
    ... )
    >>> s = optax.tree.get(opt_state, "input_scales")[1]
    >>> _, var = state.get(model.bn.batch_state_index)
    >>> bool(jnp.allclose(var, var_before * s**2))
    True
  """
  import equinox as eqx  # pylint: disable=g-import-not-at-top

  caller = "sync_equinox_batch_stats"
  if not isinstance(state, eqx.nn.State):
    raise ValueError(
      f"{caller}: `state` must be the model's eqx.nn.State (from "
      f"eqx.nn.make_with_state), got {type(state).__name__}. For Flax "
      "statistics use optax_swr.sync_batch_stats or "
      "optax_swr.sync_nnx_batch_stats."
    )
  norms = _batch_stats.NormInputScales.from_opt_state(opt_state, layers, caller)
  for path, batch_norm in _submodules(model, eqx.Module):
    if not isinstance(batch_norm, eqx.nn.BatchNorm):
      continue
    if not norms.is_norm(path):
      raise ValueError(
        f"{caller}: the eqx.nn.BatchNorm at {path!r} is not a "
        f"normalization layer of `layers` ({norms.paths()}). Pass the "
        "layers swr rescales, with every BatchNorm among them "
        "(optax_swr.layers_from_equinox includes them), and paths "
        "relative to eqx.filter(model, eqx.is_inexact_array)."
      )
    for name in _BATCH_NORM_STAT_FIELDS:
      index = getattr(batch_norm, name, None)
      if index is None:
        continue
      mean, var = state.get(index)
      state = state.set(
        index, (norms.rescale(path, mean, 1), norms.rescale(path, var, 2))
      )
  return state
