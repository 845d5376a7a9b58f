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

"""Whether a traced network is a chain that SWR rescales proportionally.

Theorem 1 of the paper holds for a chain of layers joined by positively
homogeneous operations (ReLU, pooling, reshapes, scaling by constants). A
forward pass traced with layer markers (see ``_tracing``) is checked here by
data flow over its jaxpr: every value between layers carries the set of layers
whose output scale it inherits. A chain needs each layer's input to carry
exactly the previous layer, and the output exactly the last one. Anything the
analysis does not know is reported, never assumed to be fine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from jax.extend import core as jex_core
from jax.interpreters import batching
import jax.numpy as jnp
import numpy as np

layer_marker_p = jex_core.Primitive("swr_layer_marker")
layer_marker_p.def_impl(lambda x, **_: x)
layer_marker_p.def_abstract_eval(lambda x, **_: x)
batching.primitive_batchers[layer_marker_p] = lambda args, dims, **params: (
  layer_marker_p.bind(*args, **params),
  dims[0],
)

# y(c x) = c y(x) for c > 0, in the first operand; other operands unscaled.
_HOMOGENEOUS = frozenset(
  {
    "abs",
    "broadcast_in_dim",
    "convert_element_type",
    "copy",
    "copy_p",
    "cummax",
    "cummin",
    "cumsum",
    "dynamic_slice",
    "expand_dims",
    "gather",
    "neg",
    "optimization_barrier",
    "reduce_max",
    "reduce_min",
    "reduce_precision",
    "reduce_sum",
    "reduce_window",
    "reduce_window_max",
    "reduce_window_min",
    "reduce_window_sum",
    "reshape",
    "rev",
    "sharding_constraint",
    "slice",
    "sort",
    "squeeze",
    "stop_gradient",
    "transpose",
  }
)
# Linear in each operand: fine while at most one operand is scaled.
_BILINEAR = frozenset({"mul", "dot_general", "conv_general_dilated"})
# Combine operands elementwise: all scaled operands need the same scale and
# unscaled ones must be zero (max(x, 0) is ReLU; x + 1 is not homogeneous).
_ELEMENTWISE = frozenset({"add", "add_any", "sub", "max", "min", "pad"})
# Outputs that do not change when the input is scaled by c > 0.
_SCALE_INVARIANT = frozenset(
  {
    "argmax",
    "argmin",
    "eq",
    "ge",
    "gt",
    "is_finite",
    "le",
    "lt",
    "ne",
    "sign",
  }
)
# Ops that keep a zero constant zero.
_SHAPE_ONLY = frozenset({"broadcast_in_dim", "convert_element_type", "reshape"})
_CONTROL_FLOW = frozenset({"cond", "scan", "while"})
# Call-like primitives whose sub-jaxpr maps operands to results one to one.
_CALL_JAXPR_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
_CALLS = frozenset(
  {
    "pjit",
    "jit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "remat",
    "checkpoint",
  }
)


def mark(tree: Any, kind: str, layer: int) -> Any:
  """Marks the arrays in ``tree`` as the input or output of ``layer``.

  The first floating-point array is the layer's activation (``kind``);
  other arrays (a BatchNorm's state, a PRNG key, a mask) are marked
  ``"extra_" + kind``: an extra input must not be scaled, and an extra output
  carries no scale.
  """
  leaves, treedef = jax.tree.flatten(tree)
  first = next((i for i, x in enumerate(leaves) if _is_activation(x)), None)
  marked = [
    layer_marker_p.bind(
      x, kind=kind if i == first else f"extra_{kind}", layer=layer
    )
    if isinstance(x, jax.Array)
    else x
    for i, x in enumerate(leaves)
  ]
  return jax.tree.unflatten(treedef, marked)


def _is_activation(x: Any) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.inexact)


class _Inside:
  """The tag of a value computed inside one layer from its marked input."""

  def __init__(self, layer: int):
    self.layer = layer


def non_chain_reasons(
  closed_jaxpr: Any, layer_names: Sequence[str]
) -> list[str]:
  """Why the marked forward pass is not a proportional chain ([] if it is).

  Args:
    closed_jaxpr: the forward pass, traced with :func:`mark` around every
      layer call; its outputs are the network's outputs.
    layer_names: printable names of the layers, indexed by marker id, in
      forward (first call) order.

  Returns:
    Human-readable reasons, at most one per kind of problem and place.
  """
  analysis = _Analysis(layer_names)
  outputs = analysis.run(
    closed_jaxpr.jaxpr, [None] * len(closed_jaxpr.in_avals)
  )
  analysis.check_layer_inputs()
  last = frozenset({len(layer_names) - 1})
  for tag in outputs:
    if isinstance(tag, frozenset) and tag != last:
      analysis.report(
        f"the output depends on {analysis.describe(tag)}, not only on the "
        f"last layer {layer_names[-1]}"
      )
  return analysis.reasons


class _Analysis:
  """Propagates scale tags through a jaxpr and collects the problems."""

  def __init__(self, layer_names: Sequence[str]):
    self.layer_names = layer_names
    self.layer_inputs: dict[int, list[Any]] = {}
    self.reasons: list[str] = []
    self.zeros: set[Any] = set()

  def report(self, reason: str) -> None:
    if reason not in self.reasons:
      self.reasons.append(reason)

  def describe(self, tag: frozenset) -> str:
    names = sorted(self.layer_names[i] for i in tag)
    return "the layers " + ", ".join(names) if len(names) > 1 else names[0]

  def run(self, jaxpr: Any, input_tags: list[Any]) -> list[Any]:
    tags: dict[Any, Any] = dict(zip(jaxpr.invars, input_tags))
    read = lambda v: None if hasattr(v, "val") else tags.get(v)
    for eqn in jaxpr.eqns:
      results = self.equation(eqn, [read(v) for v in eqn.invars])
      tags.update(zip(eqn.outvars, results))
      if eqn.primitive.name in _SHAPE_ONLY and self.is_zero(eqn.invars[0]):
        self.zeros.update(eqn.outvars)  # e.g. jnp.zeros_like(x) in dropout
    return [read(v) for v in jaxpr.outvars]

  def is_zero(self, var: Any) -> bool:
    if hasattr(var, "val"):
      return bool(np.all(np.asarray(var.val) == 0))
    return var in self.zeros

  def equation(self, eqn: Any, operand_tags: list[Any]) -> list[Any]:
    name = eqn.primitive.name
    outputs = len(eqn.outvars)
    if eqn.primitive is layer_marker_p:
      return [self.marker(eqn.params, operand_tags[0])]
    inside = [t for t in operand_tags if isinstance(t, _Inside)]
    if inside:  # Anything goes inside a layer.
      return [inside[0]] * outputs
    scaled = [t for t in operand_tags if t is not None]
    if not scaled:
      return [None] * outputs
    sub_jaxpr = _sub_jaxpr(eqn)
    if name in _CALLS and sub_jaxpr is not None:
      jaxpr = getattr(sub_jaxpr, "jaxpr", sub_jaxpr)
      if len(jaxpr.invars) == len(operand_tags):
        for outer, inner in zip(eqn.invars, jaxpr.invars):
          if self.is_zero(outer):  # e.g. the 0 of jnp.where(x > 0, x, 0)
            self.zeros.add(inner)
        return self.run(jaxpr, operand_tags)
    return [self.primitive(name, eqn, operand_tags, scaled)] * outputs

  def marker(self, params: dict[str, Any], tag: Any) -> Any:
    layer, kind = params["layer"], params["kind"]
    if kind == "input":
      self.layer_inputs.setdefault(layer, []).append(tag)
      return _Inside(layer)
    if kind == "extra_input":
      if tag is None:
        return None
      if not isinstance(tag, _Inside):
        self.report(
          f"the layer {self.layer_names[layer]} takes a second scaled input, "
          f"from {self.describe(tag)}"
        )
      return _Inside(layer)
    if kind == "extra_output":
      return None
    return frozenset({layer})

  def primitive(self, name, eqn, operand_tags, scaled) -> Any:
    after = self.describe(frozenset().union(*scaled))
    if name in _SCALE_INVARIANT:
      return None
    if name in _HOMOGENEOUS and operand_tags[0] is not None:
      if any(t is not None for t in operand_tags[1:]):
        self.report(f"`{name}` after {after} uses a scaled value as an index")
      return operand_tags[0]
    if name in _BILINEAR or name == "div":
      if len(scaled) > 1 or (name == "div" and operand_tags[1] is not None):
        self.report(
          f"`{name}` multiplies or divides two activations after {after} "
          "(as attention or gating do)"
        )
      return frozenset().union(*scaled)
    if name in _ELEMENTWISE or name in ("concatenate", "select_n"):
      return self.combine(name, eqn, operand_tags, scaled, after)
    if name in _CONTROL_FLOW:
      self.report(
        f"`{name}` after {after}: data flow through control flow is not checked"
      )
      return frozenset().union(*scaled)
    self.report(
      f"`{name}` after {after} is not positively homogeneous (Theorem 1 "
      "needs ReLU-like activations)"
    )
    return frozenset().union(*scaled)

  def combine(self, name, eqn, operand_tags, scaled, after) -> Any:
    if len(set(scaled)) > 1:
      self.report(
        f"`{name}` combines the outputs of {after} (a skip connection or "
        "branch)"
      )
    values = eqn.invars[1:] if name == "select_n" else eqn.invars
    tags = operand_tags[1:] if name == "select_n" else operand_tags
    for var, tag in zip(values, tags):
      if tag is None and not self.is_zero(var):
        self.report(
          f"`{name}` after {after} mixes in an unscaled value (a constant "
          "or an input of the network)"
        )
    return frozenset().union(*scaled)

  def check_layer_inputs(self) -> None:
    for layer, tags in sorted(self.layer_inputs.items()):
      expected = frozenset({layer - 1}) if layer else None
      name = self.layer_names[layer]
      if len(tags) > 1:
        self.report(f"the layer {name} is called {len(tags)} times (shared)")
      for tag in tags:
        if tag == expected or isinstance(tag, _Inside):
          continue
        source = "the network input" if tag is None else self.describe(tag)
        wanted = (
          "the network input"
          if expected is None
          else self.layer_names[layer - 1]
        )
        self.report(
          f"the input of {name} comes from {source}, not from {wanted}"
        )


def _sub_jaxpr(eqn: Any) -> Any:
  for param in _CALL_JAXPR_PARAMS:
    if param in eqn.params:
      return eqn.params[param]
  return None
