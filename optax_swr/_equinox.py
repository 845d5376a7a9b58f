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

"""Tracing the forward order of an Equinox model's layers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax

from optax_swr import _layers
from optax_swr import _tracing

Path = _layers.Path


def layers_from_equinox(
  model: Any,
  *example_args: Any,
  apply: Callable[..., Any] | None = None,
  **kwargs: Any,
) -> tuple[_layers.Layer, ...]:
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

  def forward(params, *args):
    copy = eqx.combine(params, static)
    modules = {
      path: module
      for path, module in _submodules(copy, eqx.Module)
      if recorder.is_layer(path, isinstance(module, norm_types))
    }
    for path, module in modules.items():
      _carry_path(module, path)
    with _tracing.recording_calls(modules, norm_types, recorder):
      if apply is not None:
        return apply(copy, *args)
      return copy(*args, **kwargs)

  return recorder.finish(jax.make_jaxpr(forward)(params, *example_args))


def _carry_path(module: Any, path: Path) -> None:
  """Gives the module (a copy, made for the trace) a class that knows ``path``.

  Blocks stacked with ``eqx.filter_vmap`` and run by ``jax.lax.scan`` are
  rebuilt inside the scan (``eqx.combine``) as new objects; a pytree keeps
  its class, so a subclass that carries the path finds them again.
  """
  cls = type(module)
  tagged = type(
    cls.__name__,
    (cls,),
    {_tracing.PATH_ATTRIBUTE: path, "__module__": cls.__module__},
  )
  object.__setattr__(module, "__class__", tagged)


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
