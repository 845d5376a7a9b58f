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

"""The forward order of a Flax model's layers, traced from one forward pass.

The params tree does not carry the order in which layers run (JAX sorts dict
keys, NNX sorts attributes), so these functions trace the model once with
``jax.make_jaxpr`` (shapes only, no FLOPs), record the order in which the
parameterized modules are called, and check the traced data flow for what
would break Theorem 1 (skip connections, attention, non-ReLU activations).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import functools
from typing import Any
import warnings

import jax

from optax_swr import _chain
from optax_swr import _layers

Path = _layers.Path


class NotAChainWarning(UserWarning):
  """SWR bounds this network's weights but cannot keep its outputs proportional.

  Theorem 1 (one SWR step scales the output by one constant) needs a chain of
  layers joined by ReLU-like operations. Filter it with
  ``warnings.simplefilter("ignore", optax_swr.NotAChainWarning)``.
  """


def layers_from_linen(
  module: Any, variables: Any, *example_args: Any, **kwargs: Any
) -> tuple[Path, ...]:
  """The forward order of a Linen model's layers, for ``swr(layers=...)``.

  Traces ``module.apply(variables, *example_args, **kwargs)`` abstractly and
  records the order in which modules that own a weight (``kernel``, ``scale``
  or ``embedding``) are first called. ``kwargs`` go to ``apply`` (e.g.
  ``train=True``, ``rngs=...``); ``mutable`` defaults to ``True`` so that
  BatchNorm in training mode can be traced.

  Args:
    module: the Linen module.
    variables: its variables, with a ``"params"`` collection.
    *example_args: example inputs: arrays or ``jax.ShapeDtypeStruct``.
    **kwargs: passed on to ``module.apply``.

  Returns:
    The layer paths relative to ``variables["params"]``, in forward order.

  Raises:
    ValueError: if ``variables`` has no params, or a module owns a weight and
      also contains layers.

  Warns:
    NotAChainWarning: if the traced network is not a chain (skip connections,
      branches, attention, non-homogeneous activations, shared layers).

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
    >>> optax_swr.layers_from_linen(Net(), variables, x)
    (('conv',), ('bn',), ('head',))
  """
  from flax import linen as nn  # pylint: disable=g-import-not-at-top

  if "params" not in variables:
    raise ValueError(
      "layers_from_linen: `variables` has no 'params' collection; pass the "
      "whole dict returned by module.init(...)."
    )
  recorder = _CallRecorder(_layers.leaf_paths(variables["params"]))

  def interceptor(next_fun, args, call_kwargs, context):
    if context.method_name == "setup":  # runs lazily, not in forward order
      return next_fun(*args, **call_kwargs)
    path = tuple(context.module.scope.path)
    return recorder.call(path, next_fun, args, call_kwargs)

  apply_kwargs = {"mutable": True, **kwargs}

  def forward(variables, *args):
    with nn.intercept_methods(interceptor):
      out = module.apply(variables, *args, **apply_kwargs)
    return out if apply_kwargs["mutable"] is False else out[0]

  return recorder.finish(jax.make_jaxpr(forward)(variables, *example_args))


def layers_from_nnx(
  model: Any, *example_args: Any, **kwargs: Any
) -> tuple[Path, ...]:
  """The forward order of an NNX model's layers, for ``swr(layers=...)``.

  Traces ``model(*example_args, **kwargs)`` abstractly on a copy of the model
  (the model itself, BatchNorm statistics included, is not changed).

  Args:
    model: the ``nnx.Module``.
    *example_args: example inputs: arrays or ``jax.ShapeDtypeStruct``.
    **kwargs: passed on to the model's ``__call__``.

  Returns:
    The layer paths relative to ``nnx.state(model, nnx.Param)``, as
    ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` passes them to ``swr``.

  Raises:
    ValueError: if a module owns a weight and also contains layers.

  Warns:
    NotAChainWarning: if the traced network is not a chain.

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
    >>> optax_swr.layers_from_nnx(Net(nnx.Rngs(0)), jnp.ones((1, 4)))
    (('body',), ('head',))
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  recorder = _CallRecorder(_layers.leaf_paths(nnx.state(model, nnx.Param)))
  graphdef, state = nnx.split(model)

  def forward(state, *args):
    copy = nnx.merge(graphdef, state)
    layers: dict[Path, Any] = {
      tuple(path): node
      for path, node in nnx.iter_graph(copy)
      if isinstance(node, nnx.Module) and tuple(path) in recorder.layers
    }
    with _recording_calls(layers, recorder):
      return copy(*args, **kwargs)

  return recorder.finish(jax.make_jaxpr(forward)(state, *example_args))


class _CallRecorder:
  """Marks and records the calls of layers during one trace."""

  def __init__(self, param_paths: list[Path]):
    groups = _layers.group_by_layer(param_paths)
    self.layers = {
      path
      for path, group in groups.items()
      if set(group) & set(_layers.WEIGHT_NAMES)
    }
    _check_no_nested_layers(self.layers)
    self.ids: dict[Path, int] = {}
    self.active: list[Path] = []

  def call(self, path: Path, next_fun: Callable[..., Any], args, kwargs) -> Any:
    if path not in self.layers or path in self.active:
      return next_fun(*args, **kwargs)
    layer = self.ids.setdefault(path, len(self.ids))
    args, kwargs = _chain.mark((args, kwargs), "input", layer)
    self.active.append(path)
    try:
      out = next_fun(*args, **kwargs)
    finally:
      self.active.pop()
    return _chain.mark(out, "output", layer)

  def finish(self, closed_jaxpr: Any) -> tuple[Path, ...]:
    order = tuple(self.ids)
    never_called = sorted(self.layers - set(order), key=str)
    if never_called:
      warnings.warn(
        f"These layers were never called in the forward pass, so they are "
        f"left out of the order and SWR will not rescale them: "
        f"{never_called}.",
        stacklevel=3,
      )
    names = ["/".join(map(str, path)) for path in order]
    reasons = _chain.non_chain_reasons(closed_jaxpr, names) if order else []
    if reasons:
      warnings.warn(
        NotAChainWarning(
          "This network is not a chain of layers joined by ReLU-like "
          "operations, so an SWR step does not scale its output by one "
          "constant (Theorem 1); it still bounds the weights (Theorem 2). "
          "Measure the effect with optax_swr.check_proportional. Found: "
          + "; ".join(reasons[:6])
          + ("; ..." if len(reasons) > 6 else "")
          + "."
        ),
        stacklevel=3,
      )
    return order


def _check_no_nested_layers(layers: set[Path]) -> None:
  for outer in sorted(layers, key=str):
    inner = [
      p for p in layers if len(p) > len(outer) and p[: len(outer)] == outer
    ]
    if inner:
      raise ValueError(
        f"The module at {outer!r} owns a weight and also contains the layers "
        f"{sorted(inner, key=str)}, so where its weight sits in the forward "
        "order is unknown. Move the weight into a submodule (e.g. "
        "nn.Dense), or pass swr(layers=...) yourself and check it with "
        "optax_swr.check_proportional."
      )


@contextlib.contextmanager
def _recording_calls(
  layers: dict[Path, Any], recorder: _CallRecorder
) -> Iterator[None]:
  """Routes ``__call__`` of the given layer modules through ``recorder``.

  NNX has no method interceptor like Linen's, so the classes' ``__call__`` is
  wrapped for the duration of the trace and restored afterwards; calls on
  other instances of those classes pass straight through.
  """
  path_of = {id(module): path for path, module in layers.items()}
  originals = {}
  for cls in {type(module) for module in layers.values()}:
    originals[cls] = cls.__dict__.get("__call__")
    cls.__call__ = _recording_call(cls.__call__, path_of, recorder)
  try:
    yield
  finally:
    for cls, original in originals.items():
      if original is None:
        del cls.__call__
      else:
        cls.__call__ = original


def _recording_call(
  original: Callable[..., Any],
  path_of: dict[int, Path],
  recorder: _CallRecorder,
) -> Callable[..., Any]:
  @functools.wraps(original)
  def call(self, *args, **kwargs):
    bound = functools.partial(original, self)
    path = path_of.get(id(self))
    if path is None:
      return bound(*args, **kwargs)
    return recorder.call(path, bound, args, kwargs)

  return call
