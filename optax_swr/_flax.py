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

"""What is specific to Flax: tracing Linen and NNX models, NNX BatchStats.

Flax is a dependency of optax_swr, but only this module imports it, and only
inside the functions, so ``import optax_swr`` stays cheap.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from optax_swr import _batch_stats
from optax_swr import _layers
from optax_swr import _tracing
from optax_swr import _warnings

Path = _layers.Path


def layers_from_linen(
  module: Any, variables: Any, *example_args: Any, **kwargs: Any
) -> _layers.Layers:
  """The layers of a Linen model in forward order, for ``swr(layers=...)``.

  Traces ``module.apply(variables, *example_args, **kwargs)`` abstractly and
  records the order in which the layers are first called: modules that own a
  weight (``kernel``, ``scale``, ``embedding``, ...) and normalization
  modules (``BatchNorm``, ``LayerNorm``, ``RMSNorm``, ``GroupNorm``), with or
  without a scale. ``kwargs`` go to ``apply`` (e.g. ``train=True``,
  ``rngs=...``); ``mutable`` defaults to ``True`` so that BatchNorm in
  training mode can be traced.

  Args:
    module: the Linen module.
    variables: its variables, with a ``"params"`` collection.
    *example_args: example inputs: arrays or ``jax.ShapeDtypeStruct``.
    **kwargs: passed on to ``module.apply``.

  Returns:
    The :class:`Layers`: :class:`Layer` values with paths relative to
    ``variables["params"]``, in forward order, and the log-scale equations
    of residual merges, attention and non-homogeneous operations, which
    ``swr(layers=...)`` keeps.

  Raises:
    ValueError: if ``variables`` has no params, or a module owns a weight and
      also contains layers.

  Warns:
    NotAChainWarning: where the trace cannot follow how the layers' scales
      reach the output (control flow), so SWR may change the function.
    ConstrainedLayersWarning: where the network fixes some layers' factors
      completely (SWR keeps the function but leaves those layers alone).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import flax.linen as nn
    >>> import optax_swr
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
    ...     x = nn.BatchNorm(use_running_average=True, name="bn")(x)
    ...     return nn.Dense(10, name="head")(x.reshape(x.shape[0], -1))
    >>> x = jnp.ones((1, 8, 8, 1))
    >>> variables = Net().init(jax.random.key(0), x)
    >>> for layer in optax_swr.layers_from_linen(Net(), variables, x):
    ...   print(layer.name, layer.weight, layer.bias, layer.norm)
    conv ('conv', 'kernel') ('conv', 'bias') False
    bn ('bn', 'scale') ('bn', 'bias') True
    head ('head', 'kernel') ('head', 'bias') False
  """
  from flax import linen as nn  # pylint: disable=g-import-not-at-top

  if "params" not in variables:
    raise ValueError(
      "layers_from_linen: `variables` has no 'params' collection; pass the "
      "whole dict returned by module.init(...)."
    )
  recorder = _tracing.CallRecorder(variables["params"], "layers_from_linen")
  norm_types = _tracing.norm_types(nn)

  def interceptor(next_fun, args, call_kwargs, context):
    if context.method_name == "setup":  # runs lazily, not in forward order
      return next_fun(*args, **call_kwargs)
    path = tuple(context.module.scope.path)
    is_norm = isinstance(context.module, norm_types)
    return recorder.call(path, is_norm, next_fun, args, call_kwargs)

  apply_kwargs = {"mutable": True, **kwargs}

  def forward(params, others, *args):  # the params' leaves come first
    with nn.intercept_methods(interceptor):
      out = module.apply({**others, "params": params}, *args, **apply_kwargs)
    return out if apply_kwargs["mutable"] is False else out[0]

  others = {k: v for k, v in variables.items() if k != "params"}
  closed_jaxpr = jax.make_jaxpr(forward)(
    variables["params"], others, *example_args
  )
  return recorder.finish(closed_jaxpr)


def layers_from_nnx(
  model: Any, *example_args: Any, **kwargs: Any
) -> _layers.Layers:
  """The layers of an NNX model in forward order, for ``swr(layers=...)``.

  Traces ``model(*example_args, **kwargs)`` abstractly on a copy of the model
  (the model itself, BatchNorm statistics included, is not changed).
  Normalization modules count as layers with or without a scale.

  Args:
    model: the ``nnx.Module``.
    *example_args: example inputs: arrays or ``jax.ShapeDtypeStruct``.
    **kwargs: passed on to the model's ``__call__``.

  Returns:
    The :class:`Layers` (with the network's log-scale equations), paths
    relative to ``nnx.state(model, nnx.Param)`` (as ``nnx.Optimizer(model, tx,
    wrt=nnx.Param)`` passes the params to ``swr``), in forward order.

  Raises:
    ValueError: if a module owns a weight and also contains layers.

  Warns:
    NotAChainWarning: where the trace cannot follow how the layers' scales
      reach the output (control flow), so SWR may change the function.
    ConstrainedLayersWarning: where the network fixes some layers' factors
      completely (SWR keeps the function but leaves those layers alone).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import optax_swr
    >>> class Net(nnx.Module):
    ...   def __init__(self, rngs):
    ...     self.head = nnx.Linear(8, 10, rngs=rngs)  # sorts first, runs last
    ...     self.body = nnx.Linear(4, 8, rngs=rngs)
    ...   def __call__(self, x):
    ...     return self.head(nnx.relu(self.body(x)))
    >>> layers = optax_swr.layers_from_nnx(Net(nnx.Rngs(0)), jnp.ones((1, 4)))
    >>> [layer.name for layer in layers]
    ['body', 'head']
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  recorder = _tracing.CallRecorder(
    nnx.state(model, nnx.Param), "layers_from_nnx"
  )
  norm_types = _tracing.norm_types(nnx)
  graphdef, params, others = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]

  def record(path: tuple[Any, ...], node: Any) -> Any:
    path, is_norm = tuple(path), isinstance(node, norm_types)
    if isinstance(node, nnx.Module) and recorder.is_layer(path, is_norm):
      return _nnx_recorded_layer()(node, path, is_norm, recorder)
    return node

  def forward(params, others, *args):  # the params' leaves come first
    # The layers of a copy are wrapped: the user's model is not touched.
    copy = nnx.recursive_map(record, nnx.merge(graphdef, params, others))
    return copy(*args, **kwargs)

  closed_jaxpr = jax.make_jaxpr(forward)(params, others, *example_args)
  return recorder.finish(closed_jaxpr)


@functools.cache
def _nnx_recorded_layer() -> type:
  """The NNX module that wraps a layer in a traced copy."""
  from flax import nnx  # pylint: disable=g-import-not-at-top

  # NNX keeps the path, static data, in the graph definition of the copy:
  # the modules that ``nnx.scan`` merges from sliced state still know it.
  class RecordedLayer(_tracing.RecordedLayer, nnx.Module):
    pass

  return RecordedLayer


def sync_nnx_batch_stats(model: Any, opt_state: Any, layers: Any) -> None:
  """Rescales the ``nnx.BatchStat`` variables of ``model`` in place.

  The NNX form of :func:`sync_batch_stats`: call it after
  ``optimizer.update(model, grads)``.

  Args:
    model: the ``nnx.Module`` whose BatchNorm statistics to rescale.
    opt_state: the optimizer state, e.g. ``optimizer.opt_state``.
    layers: the layers passed to ``swr`` (see :func:`sync_batch_stats`).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from flax import nnx
    >>> import optax_swr
    >>> class Net(nnx.Module):
    ...   def __init__(self, rngs):
    ...     self.fc = nnx.Linear(3, 4, rngs=rngs)
    ...     self.bn = nnx.BatchNorm(4, rngs=rngs)
    ...   def __call__(self, x):
    ...     return self.bn(self.fc(x))
    >>> model = Net(nnx.Rngs(0))
    >>> layers = optax_swr.layers_from_nnx(model, jnp.ones((2, 3)))
    >>> tx = optax.chain(optax.sgd(0.1), optax_swr.swr(0.5, layers=layers))
    >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    >>> _ = model(jnp.arange(6.0).reshape(2, 3))  # updates the running stats
    >>> grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    >>> _ = optimizer.update(model, grads)
    >>> var_before = model.bn.var[...]
    >>> optax_swr.sync_nnx_batch_stats(model, optimizer.opt_state, layers)
    >>> s = optax.tree.get(optimizer.opt_state, "input_scales")[1]
    >>> bool(jnp.allclose(model.bn.var[...], var_before * s[...] ** 2))
    True
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  stats = nnx.state(model, nnx.BatchStat)
  nnx.update(model, _batch_stats.sync_batch_stats(stats, opt_state, layers))


def rescale_train_state(state: Any) -> Any:
  """:func:`rescale_params` for a Flax Linen ``TrainState``.

  The fast step with ``swr(..., deferred=True)`` in ``state.tx``: keep
  ``state.apply_gradients`` and add this one call after it, under the same
  ``jit``. Params with Flax's fp8 ``overwrite_with_gradient`` collection are
  rescaled in their ``params`` collection, the one ``tx`` updates.

  Args:
    state: a ``flax.training.train_state.TrainState`` (or a subclass), just
      after ``apply_gradients``.

  Returns:
    The state with the params rescaled and the applied factors set to 1.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from flax import linen as nn
    >>> from flax.training import train_state
    >>> import optax_swr
    >>> model = nn.Dense(3)
    >>> params = model.init(jax.random.key(0), jnp.ones((1, 2)))["params"]
    >>> tx = optax.chain(optax.adam(1e-3), optax_swr.swr(1e-3, deferred=True))
    >>> state = train_state.TrainState.create(
    ...     apply_fn=model.apply, params=params, tx=tx)
    >>> @jax.jit
    ... def step(state, grads):
    ...   state = state.apply_gradients(grads=grads)
    ...   return optax_swr.rescale_train_state(state)
    >>> state = step(state, jax.tree.map(jnp.ones_like, state.params))
    >>> int(state.step)
    1
  """
  # pylint: disable-next=g-import-not-at-top
  from flax.linen.fp8_ops import OVERWRITE_WITH_GRADIENT

  from optax_swr import _rescale  # pylint: disable=g-import-not-at-top

  params = state.params
  if OVERWRITE_WITH_GRADIENT in params:
    rescaled, opt_state = _rescale.rescale_params(
      params["params"], state.opt_state
    )
    params = {**params, "params": rescaled}
  else:
    params, opt_state = _rescale.rescale_params(params, state.opt_state)
  return state.replace(params=params, opt_state=opt_state)


def rescale_nnx(optimizer: Any, model: Any) -> None:
  """:func:`rescale_params` for an ``nnx.Optimizer``, in place.

  The fast step with ``swr(..., deferred=True)`` in ``optimizer.tx``: keep
  ``optimizer.update(model, grads)`` and add this one call after it, under
  the same ``nnx.jit``. For an ensemble made by ``nnx.vmap``, vmap it with
  the update.

  Args:
    optimizer: the ``nnx.Optimizer`` of ``model``, just after ``update``.
    model: the ``nnx.Module`` it updates.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from flax import nnx
    >>> import optax_swr
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> tx = optax.chain(optax.adam(1e-3), optax_swr.swr(1e-3, deferred=True))
    >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    >>> @nnx.jit
    ... def step(optimizer, model, grads):
    ...   optimizer.update(model, grads)
    ...   optax_swr.rescale_nnx(optimizer, model)
    >>> step(optimizer, model, jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param)))
    >>> int(optimizer.step[...])
    1
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from optax_swr import _rescale  # pylint: disable=g-import-not-at-top

  params = nnx.as_pure(nnx.state(model, optimizer.wrt))
  params, opt_state = _rescale.rescale_params(
    params, nnx.as_pure(optimizer.opt_state)
  )
  nnx.update(model, params)
  nnx.update(optimizer.opt_state, nnx.state(opt_state))


def apply_gradients(state: Any, *, grads: Any, **kwargs: Any) -> Any:
  """Deprecated: ``state.apply_gradients``, then :func:`rescale_train_state`
  where ``state.tx`` has a deferred ``swr``.

  Args:
    state: a ``flax.training.train_state.TrainState``.
    grads: the gradients, with the structure of ``state.params``.
    **kwargs: other fields to replace, as in ``TrainState.apply_gradients``.

  Returns:
    The new state.
  """
  from optax_swr import _rescale  # pylint: disable=g-import-not-at-top

  _warnings.deprecated(
    "apply_gradients",
    "state.apply_gradients (+ rescale_train_state)",
    "call optax_swr.rescale_train_state(state) after state.apply_gradients",
  )
  state = state.apply_gradients(grads=grads, **kwargs)
  if _rescale.has_deferred_swr(state.opt_state):
    state = rescale_train_state(state)
  return state


def update_nnx(optimizer: Any, model: Any, grads: Any, **kwargs: Any) -> None:
  """Deprecated: ``optimizer.update(model, grads)``, then
  :func:`rescale_nnx` where ``optimizer.tx`` has a deferred ``swr``.

  Args:
    optimizer: the ``nnx.Optimizer`` of ``model``.
    model: the ``nnx.Module`` whose params to update.
    grads: the gradients, e.g. from ``nnx.grad``.
    **kwargs: passed on to ``tx.update``.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from optax_swr import _rescale  # pylint: disable=g-import-not-at-top

  _warnings.deprecated(
    "update_nnx",
    "optimizer.update (+ rescale_nnx)",
    "call optax_swr.rescale_nnx(optimizer, model) after optimizer.update",
  )
  optimizer.update(model, grads, **kwargs)
  if _rescale.has_deferred_swr(nnx.as_pure(optimizer.opt_state)):
    rescale_nnx(optimizer, model)
