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
:class:`CallRecorder` (by Linen's method interceptor, or by a
:class:`RecordedLayer` around each layer of the traced copy), and hand the
traced data flow to ``_homogeneity``, which reports what would break
Theorem 1 (skip connections, attention, non-ReLU activations). This module
holds what the frameworks share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
from typing import TYPE_CHECKING, Any

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
      self.caller,
      tuple(layer.key for layer in layers),
      graph is not None,
      frozenset(layer.key for layer in layers if layer.norm),
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


# ``attend``: a tied embedding's output projection (``nnx.Embed.attend``).
_RECORDED_METHODS = ("attend",)
_RECORDED_FIELDS = ("module", "path", "is_norm", "recorder")


class RecordedLayer:
  """A layer of a model's copy whose calls a :class:`CallRecorder` marks.

  The tracers trace a copy of the model in which every layer is wrapped by a
  module of the framework's own kind that has this behaviour: ``__call__``
  (and ``attend``) go through the recorder, every other attribute is the
  layer's own. Nothing of the user's model or classes changes, so a trace in
  one thread never reaches a model used in another.

  The wrapper holds the layer's path as static data, part of the copy's
  structure: where a model rebuilds its blocks inside a transform (the
  merge of ``nnx.scan``, ``eqx.combine`` in a ``lax.scan`` body), the
  rebuilt wrappers still know their layer.

  Args:
    module: the layer, in the copy.
    path: its path in the params.
    is_norm: whether it is a normalization module.
    recorder: the recorder of this trace.
  """

  if TYPE_CHECKING:
    module: Any
    path: Path
    is_norm: bool
    recorder: CallRecorder

  def __init__(
    self, module: Any, path: Path, is_norm: bool, recorder: CallRecorder
  ):
    self.module = module
    self.path = path
    self.is_norm = is_norm
    self.recorder = recorder

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    return self.recorder.call(
      self.path, self.is_norm, self.module, args, kwargs
    )

  def __getattr__(self, name: str) -> Any:
    # Only names the wrapper lacks reach here. Its own fields and private
    # names are never the layer's: a framework rebuilding the wrapper probes
    # them before they are set.
    if name in _RECORDED_FIELDS or name.startswith("_"):
      raise AttributeError(name)
    value = getattr(self.module, name)
    if name not in _RECORDED_METHODS:
      return value
    return lambda *args, **kwargs: self.recorder.call(
      self.path, self.is_norm, value, args, kwargs
    )
