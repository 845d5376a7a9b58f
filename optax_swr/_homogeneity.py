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

"""The log-scale equations that keep a traced network's function under SWR.

Work in log space: layer l's weight gets the factor exp(a_l). A forward pass
traced with layer markers (see ``_tracing``) is walked over its jaxpr; every
value carries its log-scale as a linear form in the a's. Layer l's weight
carries e_l and its bias the form of the layer's output (e_l plus the form of
its input), wherever the jaxpr uses them: inside the layer's own module (a
custom module's tanh or extra parameter is seen, not assumed away) or outside
it (a tied embedding used directly). ``mul`` and ``dot_general`` add the
forms of their operands, a residual ``add`` or a ``concatenate`` needs its
operands' forms equal, and a non-homogeneous operation (GELU, tanh, softmax's
``exp``, adding a non-zero constant) needs its input's form to be 0. Those
needs are linear equations M a = 0. The network's function is kept, up to one
positive output scale, exactly when they hold. Only normalization modules,
recognized by their type, are not walked: they forget the scale of their
input (up to their epsilon), so their output carries their own e_l.
Operations the walk cannot see through (control flow) are reported, never
assumed to be fine; a higher-order primitive it does not know (see
``_jax_internals``) is left alone, its operands and the layers called inside
it pinned to their scale.

A ``scan`` whose scanned operands include a layer's stacked params (``nn.scan``,
``nnx.scan`` over ``nnx.vmap``-built blocks) is walked once per iteration:
iteration i of layer l is its own layer, the slice i of l's leaves. Other
scans are walked until their carried forms repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_swr import _jax_internals

# y(c x) = c y(x) for c > 0 in the first operand; the others are indices.
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
    "real",
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
    "split",
  }
)
# y(c x) = c**k y(x): the log-scale is multiplied by k.
_POWERS = {"square": 2.0, "sqrt": 0.5, "rsqrt": -0.5, "reciprocal": -1.0}
# Linear in each operand: the log-scales add.
_BILINEAR = frozenset({"mul", "dot_general", "conv_general_dilated"})
# Combine operands elementwise: their log-scales must be equal, and an
# unscaled non-zero operand (x + 1) forces them to 0; max(x, 0) is ReLU.
_ELEMENTWISE = frozenset(
  {"add", "add_any", "sub", "max", "min", "pad", "concatenate", "select_n"}
)
_COMPARISONS = frozenset({"eq", "ge", "gt", "le", "lt", "ne"})
# Outputs that do not change when the input is scaled by c > 0.
_SCALE_INVARIANT = frozenset({"argmax", "argmin", "is_finite", "sign"})
# Ops that keep a zero constant zero.
_SHAPE_ONLY = frozenset({"broadcast_in_dim", "convert_element_type", "reshape"})


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
    _jax_internals.layer_marker_p.bind(
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
  """The tag of a value computed inside a normalization layer."""

  def __init__(self, layer: int):
    self.layer = layer


class _Param(NamedTuple):
  """The tag of a layer's weight or bias leaf, resolved to a form where used
  (inside a scan over stacked params, to the form of that iteration's slice)."""

  layer: int  # the traced layer (before slicing)
  role: str  # "weight" or "bias"


class Graph(NamedTuple):
  """What the traced forward pass says about rescaling its layers.

  With ``a`` the log-factors of the layers' weights:

  Attributes:
    input_forms: ``[L, L]``; row l is the log-scale of layer l's input.
    output_form: ``[L]``; the log-scale of the network's output.
    constraints: ``[K, L]``; the function is kept iff ``constraints @ a = 0``.
    notes: for each constraint row, the operation that imposes it.
    reasons: what the walk could not see through; non-empty means the
      equations may be incomplete.
    slices: for each of the L layers, the traced layer it is a slice of and
      the slice's index in its stacked leaves (``()``: the whole leaves).
    names: the L layers' printable names.
  """

  input_forms: np.ndarray
  output_form: np.ndarray
  constraints: np.ndarray
  notes: tuple[str, ...]
  reasons: tuple[str, ...]
  slices: tuple[tuple[int, tuple[int, ...]], ...] = ()
  names: tuple[str, ...] = ()

  def output_forms(self, norms: Sequence[bool]) -> np.ndarray:
    """Row l: the log-scale of layer l's output, which its bias gets."""
    eye = np.eye(len(norms))
    keep_input = 1.0 - np.asarray(norms, float)[:, None]
    return eye + keep_input * self.input_forms

  def freedom(self) -> np.ndarray:
    """Per layer, the projection's diagonal: 1 free, 0 pinned (fixed)."""
    return np.diag(projection(self.constraints, len(self.input_forms)))

  def classes(self, tol: float = 1e-9) -> list[str]:
    """Per layer: "free", "constrained" (tied to others) or "pinned"."""
    return [
      "pinned" if f < tol else "constrained" if f < 1 - tol else "free"
      for f in self.freedom()
    ]

  def is_chain(self, norms: Sequence[bool]) -> bool:
    """No equations, and every layer reads the one before it (or nothing)."""
    if len(self.constraints) or self.reasons:
      return False
    chain = chain_graph(norms)
    return bool(
      np.array_equal(chain.input_forms, self.input_forms)
      and np.array_equal(chain.output_form, self.output_form)
    )

  def edited(
    self,
    kept: Sequence[int],
    unscaled_biases: Sequence[int],
    norms: Sequence[bool],
    biases: Sequence[bool],
  ) -> Graph:
    """The equations of the layers ``kept`` (the others keep c = 1), with
    the biases of ``unscaled_biases`` held at their scale (factor 1)."""
    outputs = self.output_forms(norms)
    held = [
      outputs[l] for l in unscaled_biases if biases[l] and np.any(outputs[l])
    ]
    rows = np.concatenate(
      [self.constraints, np.reshape(held, (-1, len(norms)))]
    )
    notes = self.notes + tuple(
      f"the bias of {self._name(l)}, which keeps its scale"
      for l in unscaled_biases
      if biases[l] and np.any(outputs[l])
    )
    kept = list(kept)
    return Graph(
      input_forms=self.input_forms[np.ix_(kept, kept)],
      output_form=self.output_form[kept],
      constraints=rows[:, kept],
      notes=notes,
      reasons=self.reasons,
      slices=tuple(self.slices[l] for l in kept) if self.slices else (),
      names=tuple(self.names[l] for l in kept) if self.names else (),
    )

  def _name(self, layer: int) -> str:
    return self.names[layer] if self.names else f"layer {layer}"


def chain_graph(norms: Sequence[bool]) -> Graph:
  """The graph of a chain: each layer reads the one before it."""
  size = len(norms)
  eye = np.eye(size)
  input_forms = np.zeros((size, size))
  outputs = eye.copy()
  for l in range(1, size):
    input_forms[l] = outputs[l - 1]
    outputs[l] = eye[l] + (0 if norms[l] else input_forms[l])
  return Graph(
    input_forms=input_forms,
    output_form=outputs[-1] if size else np.zeros(0),
    constraints=np.zeros((0, size)),
    notes=(),
    reasons=(),
  )


class Params(NamedTuple):
  """Where the layers' params are among the traced forward pass's inputs.

  Attributes:
    names: the printable path of every param leaf; the forward pass takes
      these leaves as its first inputs, in this order.
    roles: param leaf position -> (layer, "weight" or "bias").
  """

  names: Sequence[str] = ()
  roles: dict[int, tuple[int, str]] = {}

  def layer_leaves(self, size: int) -> list[int | None]:
    """One param leaf per layer (its weight, else its bias), or None."""
    leaves: list[int | None] = [None] * size
    for position, (layer, role) in sorted(self.roles.items()):
      if leaves[layer] is None or role == "weight":
        leaves[layer] = position
    return leaves


def analyze(
  closed_jaxpr: Any,
  layer_names: Sequence[str],
  norms: Sequence[bool],
  biases: Sequence[bool] | None = None,
  params: Params | None = None,
) -> Graph:
  """Walks the marked forward pass and collects its log-scale equations.

  Args:
    closed_jaxpr: the forward pass, traced with :func:`mark` around every
      layer call; its outputs are the network's outputs.
    layer_names: printable names of the layers, indexed by marker id.
    norms: whether each layer is a normalization layer.
    biases: whether each layer has a bias; a layer called more than once
      (shared, or a tied embedding's ``attend``) needs the same input scale
      at every call only if its one bias factor must serve them all.
    params: the layers' weight and bias leaves among the jaxpr's inputs; a
      ``scan`` over one makes each of its iterations a slice of the layer.

  Returns:
    The :class:`Graph`. Without stacked layers its layers are the marked
    ones, in marker order; with them, every slice is a layer, in the order
    the forward pass runs them (``Graph.slices``).
  """
  size = len(layer_names)
  if biases is None:
    biases = [True] * size
  params = params or Params()
  keys: list[tuple[int, tuple[int, ...]]] = [(l, ()) for l in range(size)]
  traced = _Analysis(layer_names, norms, biases, params, keys)
  graph = traced.graph(closed_jaxpr)
  if all(not index for _, index in traced.seen):
    return graph
  # Stacked layers: the same walk, with one layer per slice.
  keys = list(traced.seen) + [k for k in keys if k[0] not in traced.seen_base]
  sliced = _Analysis(layer_names, norms, biases, params, keys)
  return sliced.graph(closed_jaxpr)


class _Analysis:
  """Propagates log-scale forms through a jaxpr and collects the equations.

  A form is a float vector over the layers, or ``None`` for an unscaled value
  (the zero form); ``_Inside`` tags values computed inside a normalization
  layer, ``_Param`` a layer's weight or bias leaf.
  """

  def __init__(
    self,
    base_names: Sequence[str],
    base_norms: Sequence[bool],
    base_biases: Sequence[bool],
    params: Params,
    keys: Sequence[tuple[int, tuple[int, ...]]],
  ):
    self.keys = list(keys)
    self.id_of = {key: i for i, key in enumerate(self.keys)}
    self.layer_names = [
      base_names[b] + "".join(f"[{i}]" for i in index) for b, index in keys
    ]
    self.norms = [base_norms[b] for b, _ in keys]
    self.biases = [base_biases[b] for b, _ in keys]
    self.params = params
    self.layer_leaves = params.layer_leaves(len(base_names))
    self.stacked_leaves = {p for p in self.layer_leaves if p is not None}
    self.seen: dict[tuple[int, tuple[int, ...]], None] = {}  # marker order
    self.seen_base: set[int] = set()
    self.input_forms: dict[int, np.ndarray] = {}  # at the first call
    self.rows: list[np.ndarray] = []
    self.notes: list[str] = []
    self.reasons: list[str] = []
    self.zeros: set[Any] = set()
    self.leaf_of: dict[Any, int] = {}  # jaxpr variable -> param leaf
    # What an unscaled value is, for the notes: "the param 'wpe'", ...
    self.sources: dict[Any, str] = {}
    # The enclosing scans that slice params: (iteration, leaves sliced).
    self.scans: list[tuple[int, frozenset[int]]] = []
    self.where = ""  # " at file.py:12 (fn)" of the operation being walked

  def graph(self, closed_jaxpr: Any) -> Graph:
    invars = closed_jaxpr.jaxpr.invars
    self.leaf_of = dict(zip(invars, range(len(invars))))
    tags: list[Any] = []
    for position, var in enumerate(invars):
      if position in self.params.roles:
        tags.append(_Param(*self.params.roles[position]))
        continue
      tags.append(None)
      if position < len(self.params.names):
        self.sources[var] = f"the param {self.params.names[position]!r}"
      else:
        self.sources[var] = "the network's input"
    outputs = self.run(closed_jaxpr.jaxpr, tags)
    scaled = [self.resolve(f) for f in outputs if not isinstance(f, _Inside)]
    scaled = [f for f in scaled if f is not None]
    for form in scaled[1:]:  # several outputs share one output scale
      self.require(form - scaled[0], "the network's outputs")
    size = len(self.keys)
    for layer in range(size):
      if layer not in self.input_forms:
        self.input_forms[layer] = self.zero()
    return Graph(
      input_forms=np.stack([self.input_forms[l] for l in range(size)])
      if size
      else np.zeros((0, 0)),
      output_form=scaled[0] if scaled else self.zero(),
      constraints=np.array(self.rows).reshape(-1, size),
      notes=tuple(self.notes),
      reasons=tuple(self.reasons),
      slices=tuple(self.keys),
      names=tuple(self.layer_names),
    )

  def zero(self) -> np.ndarray:
    return np.zeros(len(self.layer_names))

  def unit(self, layer: int) -> np.ndarray:
    form = self.zero()
    form[layer] = 1.0
    return form

  def form(self, tag: Any) -> np.ndarray:
    tag = self.resolve(tag)
    return self.zero() if tag is None else tag

  def resolve(self, tag: Any) -> Any:
    """A ``_Param`` as the form its leaf carries here; other tags as they are.

    A weight carries e_l; a bias, the form of its layer's output (its first
    call's input form plus e_l; just e_l for a normalization layer), the one
    factor ``swr`` gives it.
    """
    if not isinstance(tag, _Param):
      return tag
    layer = self.layer_id(tag.layer)
    if tag.role == "weight" or self.norms[layer]:
      return self.unit(layer)
    if layer not in self.input_forms:  # used before its layer is called
      self.input_forms[layer] = self.zero()
    return self.unit(layer) + self.input_forms[layer]

  def report(self, reason: str) -> None:
    if reason not in self.reasons:
      self.reasons.append(reason)

  def require(self, row: np.ndarray, note: str) -> None:
    """Adds the equation row @ a = 0 (unless it is trivially true)."""
    if not np.any(row):
      return
    self.rows.append(row)
    self.notes.append(note)

  def describe(self, form: np.ndarray) -> str:
    names = [self.layer_names[int(i)] for i in np.flatnonzero(form)]
    return ", ".join(names) if names else "the input"

  def source(self, var: Any) -> str:
    """What an unscaled operand is: a constant, a param, the input."""
    if hasattr(var, "val"):
      value = np.asarray(var.val)
      return (
        f"the constant {value.item():g}" if value.size == 1 else ("a constant")
      )
    return self.sources.get(var, "a constant")

  def run(self, jaxpr: Any, input_tags: list[Any]) -> list[Any]:
    tags: dict[Any, Any] = dict(zip(jaxpr.invars, input_tags))
    read = lambda v: None if hasattr(v, "val") else tags.get(v)
    for eqn in jaxpr.eqns:
      self.where = _jax_internals.location(eqn)
      results = self.equation(eqn, [read(v) for v in eqn.invars])
      tags.update(zip(eqn.outvars, results))
      if eqn.primitive.name in _SHAPE_ONLY and self.is_zero(eqn.invars[0]):
        self.zeros.update(eqn.outvars)  # e.g. jnp.zeros_like(x) in dropout
      first = eqn.invars[0] if eqn.invars else None
      known = first is not None and not hasattr(first, "val")
      if known and first in self.sources and all(r is None for r in results):
        self.sources.update(dict.fromkeys(eqn.outvars, self.sources[first]))
    return [read(v) for v in jaxpr.outvars]

  def is_neutral(self, name: str, var: Any) -> bool:
    """An unscaled operand that keeps ``name`` homogeneous: 0 (ReLU's, a
    padding's), or -inf in ``max`` and inf in ``min`` (softmax's max)."""
    if self.is_zero(var):
      return True
    infinity = {"max": -np.inf, "min": np.inf}.get(name)
    return (
      infinity is not None
      and hasattr(var, "val")
      and bool(np.all(np.asarray(var.val) == infinity))
    )

  def is_zero(self, var: Any) -> bool:
    if hasattr(var, "val"):
      return bool(np.all(np.asarray(var.val) == 0))
    return var in self.zeros

  def equation(self, eqn: Any, operand_tags: list[Any]) -> list[Any]:
    name = eqn.primitive.name
    outputs = len(eqn.outvars)
    if _jax_internals.is_marker(eqn):
      return [self.marker(eqn.params, operand_tags[0])]
    inside = [t for t in operand_tags if isinstance(t, _Inside)]
    if inside:  # A normalization layer's internals are not walked.
      return [inside[0]] * outputs
    if name == "scan":
      return self.scan(eqn, operand_tags)
    body = _jax_internals.call_body(eqn)
    if body is not None:
      # Even with unscaled operands: layers may be called inside (remat).
      for outer, inner in zip(eqn.invars, body.invars):
        if self.is_zero(outer):  # e.g. the 0 of jnp.where(x > 0, x, 0)
          self.zeros.add(inner)
        self.pass_leaf(outer, inner)
      return self.run(body, operand_tags)
    sub_jaxprs = _jax_internals.sub_jaxprs(eqn)
    if sub_jaxprs and name not in _jax_internals.CONTROL_FLOW:
      return self.unknown_call(eqn, operand_tags, sub_jaxprs)
    tags = [self.resolve(t) for t in operand_tags]
    if all(t is None for t in tags):
      return [None] * outputs
    return [self.primitive(name, eqn, tags)] * outputs

  def unknown_call(
    self, eqn: Any, operand_tags: list[Any], sub_jaxprs: list[Any]
  ) -> list[Any]:
    """A higher-order primitive the walk does not know, kept exact by
    leaving it alone: its operands must not be scaled and every layer called
    inside its ``sub_jaxprs`` keeps its scale, so its results carry none."""
    what = f"`{eqn.primitive.name}` (a higher-order primitive not followed)"
    for tag in operand_tags:
      form = self.resolve(tag)
      if form is not None:
        self.require(form, self.note(f"{what} after {self.describe(form)}"))
    inside = [
      layer
      for jaxpr in sub_jaxprs
      for layer in _jax_internals.marked_layers(jaxpr)
    ]
    for base in dict.fromkeys(inside):
      layer = self.layer_id(base)
      self.require(
        self.unit(layer),
        self.note(f"{what} that calls {self.layer_names[layer]}"),
      )
    return [None] * len(eqn.outvars)

  def pass_leaf(self, outer: Any, inner: Any) -> None:
    """What is known of an operand, for the same value inside a sub-jaxpr."""
    if hasattr(outer, "val"):
      return
    if outer in self.leaf_of:
      self.leaf_of[inner] = self.leaf_of[outer]
    if outer in self.sources:
      self.sources[inner] = self.sources[outer]

  def scan(self, eqn: Any, tags: list[Any]) -> list[Any]:
    """Walks a scan: per iteration where it slices a layer's params."""
    params = eqn.params
    body = params["jaxpr"].jaxpr
    num_consts, num_carry = params["num_consts"], params["num_carry"]
    for outer, inner in zip(eqn.invars, body.invars):
      self.pass_leaf(outer, inner)
    scanned = eqn.invars[num_consts + num_carry :]
    sliced = frozenset(
      self.leaf_of[v]
      for v in scanned
      if not hasattr(v, "val") and v in self.leaf_of
    )
    per_slice = bool(sliced & self.stacked_leaves)
    consts, carry = tags[:num_consts], tags[num_consts : num_consts + num_carry]
    xs = tags[num_consts + num_carry :]
    ys: list[Any] | None = None
    for step in range(params["length"]):
      index = params["length"] - 1 - step if params["reverse"] else step
      self.scans.append((index, sliced if per_slice else frozenset()))
      try:
        outputs = self.run(body, [*consts, *carry, *xs])
        # A slice's params mean this iteration's layer: resolve them here.
        outputs = [self.resolve(t) for t in outputs]
      finally:
        self.scans.pop()
      new_carry, step_ys = outputs[:num_carry], outputs[num_carry:]
      if ys is None:
        ys = step_ys
      for first, later in zip(ys, step_ys):
        if _is_form(first) and _is_form(later):
          self.require(
            self.form(later) - self.form(first),
            "the stacked outputs of a `scan`",
          )
      repeats = all(map(_same_tag, carry, new_carry))
      carry = new_carry
      if repeats and not per_slice:
        break
    return [*carry, *(ys or [None] * (len(eqn.outvars) - num_carry))]

  def layer_id(self, base: int) -> int:
    """The layer (a slice, inside scans over its params) a marker stands for."""
    leaf = self.layer_leaves[base]
    index = tuple(i for i, leaves in self.scans if leaf in leaves)
    key = (base, index)
    self.seen.setdefault(key, None)
    self.seen_base.add(base)
    if key not in self.id_of:  # The first walk: slices are not known yet.
      return base
    return self.id_of[key]

  def marker(self, params: dict[str, Any], tag: Any) -> Any:
    """A layer's input or output: walked through, except for norm layers."""
    layer, kind = self.layer_id(params["layer"]), params["kind"]
    name = self.layer_names[layer]
    is_norm = self.norms[layer]
    if kind == "input":
      form = self.form(tag)
      if layer not in self.input_forms:
        self.input_forms[layer] = form
      elif self.biases[layer] and not is_norm:
        # One bias factor for every call: the inputs must share a scale.
        self.require(
          form - self.input_forms[layer], f"{name}, called more than once"
        )
      return _Inside(layer) if is_norm else self.resolve(tag)
    if not is_norm:  # The walk saw what the module computes.
      return self.resolve(tag)
    if kind == "extra_input":
      if self.resolve(tag) is not None:
        self.require(self.form(tag), f"the second input of {name}")
      return _Inside(layer)
    if kind == "extra_output":
      return None
    return self.unit(layer)

  def primitive(self, name: str, eqn: Any, tags: list[Any]) -> Any:
    if name in _SCALE_INVARIANT:
      return None
    if name in _HOMOGENEOUS:
      for tag in tags[1:]:
        if tag is not None:
          self.require(tag, self.note(f"`{name}` indexed by a scaled value"))
      return tags[0]
    if name in _POWERS and tags[0] is not None:
      return _POWERS[name] * tags[0]
    if name == "integer_pow" and tags[0] is not None:
      return float(eqn.params["y"]) * tags[0]
    if name in _BILINEAR:
      return sum(self.form(t) for t in tags)
    if name == "div":
      return self.form(tags[0]) - self.form(tags[1])
    if name in _ELEMENTWISE:
      return self.combine(name, eqn, tags)
    if name in _COMPARISONS:
      self.combine(name, eqn, tags)
      return None
    if name in _jax_internals.CONTROL_FLOW:
      scaled = [t for t in tags if t is not None]
      self.report(
        f"`{name}` after {self.describe(sum(scaled))}{self.where}: data "
        "flow through control flow is not followed"
      )
      return scaled[0]
    # Not positively homogeneous (exp, tanh, erf, logistic, log, pow, ...):
    # its scaled inputs must not be scaled at all.
    for tag in tags:
      if tag is not None:
        self.require(
          tag,
          self.note(
            f"`{name}` (not positively homogeneous) after {self.describe(tag)}"
          ),
        )
    return None

  def note(self, text: str) -> str:
    return text + self.where

  def combine(self, name: str, eqn: Any, tags: list[Any]) -> Any:
    values = eqn.invars[1:] if name == "select_n" else eqn.invars
    value_tags = tags[1:] if name == "select_n" else tags
    if name == "select_n" and tags[0] is not None:
      self.require(tags[0], self.note("`select_n` chosen by a scaled value"))
    scaled = [t for t in value_tags if t is not None]
    if not scaled:
      return None
    note = (
      "a residual merge"
      if name in ("add", "add_any", "sub")
      else "a concatenation"
      if name == "concatenate"
      else f"`{name}`"
    )
    for tag in scaled[1:]:
      self.require(
        tag - scaled[0],
        self.note(
          f"{note} of [{self.describe(scaled[0])}] and [{self.describe(tag)}]"
        ),
      )
    for var, tag in zip(values, value_tags):
      if tag is None and not self.is_neutral(name, var):
        self.require(
          scaled[0],
          self.note(
            f"`{name}` of {self.describe(scaled[0])} with {self.source(var)}"
          ),
        )
    return scaled[0]


def _is_form(tag: Any) -> bool:
  return tag is None or isinstance(tag, np.ndarray)


def _same_tag(a: Any, b: Any) -> bool:
  if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
    return bool(np.array_equal(a, b))
  return a is b


def projection(constraints: np.ndarray, size: int) -> np.ndarray:
  """The orthogonal projection onto {a : constraints @ a = 0}, float64.

  Least squares in log space: ``projection @ a_star`` is the solution of the
  equations nearest to the paper's log-factors ``a_star``.
  """
  if not len(constraints):
    return np.eye(size)
  m = np.asarray(constraints, np.float64)
  return np.eye(size) - np.linalg.pinv(m) @ m
