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

"""Recording the forward order of a model's layers during one trace.

The params tree does not carry the order in which layers run (JAX sorts dict
keys, NNX sorts attributes, Equinox keeps field order), so the tracers of
``_flax`` and ``_equinox`` trace the model once with ``jax.make_jaxpr``
(shapes only, no FLOPs), route every call of a layer module through a
:class:`CallRecorder`, and hand the traced data flow to ``_homogeneity``,
which reports what would break Theorem 1 (skip connections, attention,
non-ReLU activations). This module holds what the frameworks share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import contextlib
import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from optax_swr import _homogeneity
from optax_swr import _layers
from optax_swr import _warnings

Path = _layers.Path


class NotAChainWarning(UserWarning):
  """SWR bounds this network's weights but cannot keep its outputs proportional.

  Theorem 1 (one SWR step scales the output by one constant) needs a chain of
  layers joined by ReLU-like operations. Filter it with
  ``warnings.simplefilter("ignore", optax_swr.NotAChainWarning)``.
  """


class ConstrainedLayersWarning(UserWarning):
  """SWR keeps the network's function, but cannot rescale some layers.

  Non-homogeneous operations (GELU, tanh, softmax, adding a constant) fix the
  scale of what feeds them; where they fix a layer's factor completely, SWR
  leaves that layer's norm alone. Filter it with
  ``warnings.simplefilter("ignore", optax_swr.ConstrainedLayersWarning)``.
  """


_NORM_CLASS_NAMES = (
  "BatchNorm",
  "LayerNorm",
  "RMSNorm",
  "GroupNorm",
  "InstanceNorm",
)


def norm_types(namespace: Any) -> tuple[type, ...]:
  """The normalization module classes that ``namespace`` defines.

  ``namespace`` is ``flax.linen``, ``flax.nnx`` or ``equinox.nn``.
  """
  return tuple(
    getattr(namespace, name)
    for name in _NORM_CLASS_NAMES
    if hasattr(namespace, name)
  )


class CallRecorder:
  """Marks and records the calls of layers during one trace.

  A layer is a module that owns a weight leaf (by the naming conventions of
  ``_layers``) or a normalization module, which the tracer recognizes by its
  type, with or without params.

  The traced forward pass must take the params' leaves as its first inputs,
  so that a ``scan`` over stacked params is recognized.

  Args:
    params: the params tree the layers' paths are relative to.
    caller: the public function named in errors and warnings.
  """

  def __init__(self, params: Any, caller: str):
    self.caller = caller
    self.leaves = jax.tree.leaves(params)
    self.paths = _layers.leaf_paths(params)
    self.groups = _layers.group_by_layer(self.paths)
    self.weighted = {
      path
      for path, group in self.groups.items()
      if set(group) & set(_layers.WEIGHT_NAMES)
    }
    _check_no_nested_layers(self.weighted, caller)
    self.norms: set[Path] = set()
    self.ids: dict[Path, int] = {}
    self.active: list[Path] = []

  def is_layer(self, path: Path, is_norm: bool) -> bool:
    return path in self.weighted or is_norm

  def call(
    self,
    path: Path,
    is_norm: bool,
    next_fun: Callable[..., Any],
    args: Any,
    kwargs: Any,
  ) -> Any:
    """Calls ``next_fun``, marking its inputs and outputs as layer ``path``'s."""
    if not self.is_layer(path, is_norm) or path in self.active:
      return next_fun(*args, **kwargs)
    if is_norm:
      self.norms.add(path)
    layer = self.ids.setdefault(path, len(self.ids))
    args, kwargs = _homogeneity.mark((args, kwargs), "input", layer)
    self.active.append(path)
    try:
      out = next_fun(*args, **kwargs)
    finally:
      self.active.pop()
    return _homogeneity.mark(out, "output", layer)

  def finish(self, closed_jaxpr: Any) -> _layers.Layers:
    """The recorded layers in call order; warns about what is not a chain."""
    order = tuple(self.ids)
    never_called = sorted(self.weighted - set(order), key=str)
    if never_called:
      _warnings.warn(
        f"{self.caller}: these layers were never called in the forward "
        "pass, so they are left out of the order and SWR will not rescale "
        f"them: {never_called}.",
        UserWarning,
      )
    names = ["/".join(map(str, path)) for path in order]
    norms = [path in self.norms for path in order]
    layers = tuple(self._layer(path) for path in order)
    if not order:
      return _layers.Layers(layers)
    biases = [layer.bias is not None for layer in layers]
    graph = _homogeneity.analyze(
      closed_jaxpr, names, norms, biases, self._params(layers)
    )
    if graph.slices and any(index for _, index in graph.slices):
      layers = tuple(
        dataclasses.replace(layers[base], index=index)
        for base, index in graph.slices
      )
      names = [layer.name for layer in layers]
      norms = [layer.norm for layer in layers]
    if graph.reasons:
      _warnings.warn(
        f"{self.caller}: SWR cannot keep this network's function exactly: "
        "the trace does not show how the layers' scales reach its output, "
        "so an SWR step may change it (it still bounds the weights, "
        "Theorem 2). Measure the effect with optax_swr.check_proportional. "
        f"Found: {_listed(graph.reasons)}.",
        NotAChainWarning,
      )
    if graph.is_chain(norms):
      return self._traced(layers, None)
    self._warn_pinned(graph, names)
    return self._traced(layers, graph)

  def _traced(
    self, layers: tuple[_layers.Layer, ...], graph: Any
  ) -> _layers.Layers:
    """The :class:`Layers`, each layer knowing the trace it comes from."""
    trace = _layers.Trace(
      self.caller, tuple(layer.key for layer in layers), graph is not None
    )
    return _layers.Layers(
      tuple(dataclasses.replace(l, traced_from=trace) for l in layers), graph
    )

  def _warn_pinned(self, graph: Any, names: list[str]) -> None:
    pinned = np.array([c == "pinned" for c in graph.classes()])
    if not pinned.any():
      return
    # The operations whose equations involve a pinned layer, in the order
    # the forward pass meets them: the culprit comes first.
    touches = np.abs(graph.constraints[:, pinned]).sum(axis=1) > 0
    why = list(dict.fromkeys(n for n, t in zip(graph.notes, touches) if t))
    _warnings.warn(
      f"{self.caller}: SWR keeps this network's function exactly, but the "
      "network fixes the scale of some layers, so SWR cannot rescale them "
      "(Theorem 2 does not bound them): "
      f"{[n for n, p in zip(names, pinned) if p]}. Their scale is fixed by: "
      f"{_listed(why)}.",
      ConstrainedLayersWarning,
    )

  def _params(self, layers: tuple[_layers.Layer, ...]) -> _homogeneity.Params:
    """The layers' weight and bias leaves among the inputs of the traced
    forward pass, whose first inputs are the params' leaves."""
    position = {path: i for i, path in enumerate(self.paths)}
    roles = {}
    for index, layer in enumerate(layers):
      for role in ("weight", "bias"):
        leaf = getattr(layer, role)
        if leaf is not None:
          roles[position[leaf]] = (index, role)
    names = ["/".join(map(str, path)) for path in self.paths]
    return _homogeneity.Params(names, roles)

  def _layer(self, path: Path) -> _layers.Layer:
    group = self.groups.get(path, {})
    if path not in self.norms:
      # Normalization is recognized by the module's type, never by a leaf's
      # name: a LayerScale gain named `scale` is a weight like any other.
      layer = _layers.layer_from_group(path, group, self.leaves, self.caller)
      return dataclasses.replace(layer, norm=False)
    weight = [name for name in _layers.WEIGHT_NAMES if name in group]
    bias = [name for name in _layers.BIAS_NAMES if name in group]
    return _layers.Layer(
      weight=(*path, weight[0]) if weight else None,
      bias=(*path, bias[0]) if bias else None,
      norm=True,
      path=path,
    )


def _listed(items: Sequence[str], limit: int = 8) -> str:
  more = f"; ... ({len(items) - limit} more)" if len(items) > limit else ""
  return "; ".join(items[:limit]) + more


def _check_no_nested_layers(layers: set[Path], caller: str) -> None:
  for outer in sorted(layers, key=str):
    inner = [
      p for p in layers if len(p) > len(outer) and p[: len(outer)] == outer
    ]
    if inner:
      raise ValueError(
        f"{caller}: the module at {outer!r} owns a weight and also contains "
        f"the layers {sorted(inner, key=str)}, so where its weight sits in "
        "the forward order is unknown. Move the weight into a submodule "
        "(e.g. a Dense / Linear layer), or pass swr(layers=...) yourself "
        "and check it with optax_swr.check_proportional."
      )


# Where a framework rebuilds modules inside a transform (``nnx.scan`` merges
# fresh copies from sliced state), the copies find their path here: NNX keeps
# the attribute in the module's static structure.
PATH_ATTRIBUTE = "_optax_swr_path"
# ``attend``: a tied embedding's output projection (``nnx.Embed.attend``).
_RECORDED_METHODS = ("__call__", "attend")


@contextlib.contextmanager
def recording_calls(
  modules: dict[Path, Any],
  norm_types: tuple[type, ...],
  recorder: CallRecorder,
) -> Iterator[None]:
  """Routes ``__call__`` of the given modules through ``recorder``.

  NNX and Equinox have no method interceptor like Linen's, so the classes'
  ``__call__`` is wrapped for the duration of the trace and restored
  afterwards; calls on other instances of those classes pass straight
  through.

  Args:
    modules: the module instances to record, by path.
    norm_types: the classes of normalization modules.
    recorder: the recorder.
  """
  path_of = {id(module): path for path, module in modules.items()}
  originals = {}
  for cls in {type(module) for module in modules.values()}:
    is_norm = issubclass(cls, norm_types)
    for method in _RECORDED_METHODS:
      if not callable(getattr(cls, method, None)):
        continue
      originals[cls, method] = cls.__dict__.get(method)
      wrapped = _recording_call(
        getattr(cls, method), path_of, is_norm, recorder
      )
      setattr(cls, method, wrapped)
  try:
    yield
  finally:
    for (cls, method), original in originals.items():
      if original is None:
        delattr(cls, method)
      else:
        setattr(cls, method, original)


def _recording_call(
  original: Callable[..., Any],
  path_of: dict[int, Path],
  is_norm: bool,
  recorder: CallRecorder,
) -> Callable[..., Any]:
  @functools.wraps(original)
  def call(self, *args, **kwargs):
    bound = functools.partial(original, self)
    path = path_of.get(id(self), getattr(self, PATH_ATTRIBUTE, None))
    if path is None:
      return bound(*args, **kwargs)
    return recorder.call(path, is_norm, bound, args, kwargs)

  return call
