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

"""What a layer is, where its leaves are in a params tree, and their order.

A :class:`Layer` names one weight leaf and optionally one bias leaf of the
params by their paths (tuples of keys from the root of the params tree), and
says whether the layer normalizes its input. The tracers produce layers, users
may write them, and :func:`find_layers` infers them from the common naming
conventions of Flax, Equinox, PyTorch-style trees and Haiku.

This module only looks at tree structure and shapes, never at values, so it
runs once per trace in Python and costs nothing inside ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
import dataclasses
import functools
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_swr import _homogeneity

Path = tuple[Hashable, ...]

# Leaf names that hold a layer's weight, by convention: Flax (kernel, scale,
# embedding), Equinox and PyTorch-style (weight), Haiku (w, scale,
# embeddings). True: a normalization layer; None: decided by the shape (a
# vector `weight` is a normalization layer's scale).
WEIGHT_NAMES: dict[str, bool | None] = {
  "kernel": False,
  "embedding": False,
  "w": False,
  "embeddings": False,
  "weight": None,
  "scale": True,
}
BIAS_NAMES = ("bias", "b", "offset")
# nnx.Variable flattens to a node with a `value` attribute; the layer structure
# is the same with or without it.
_VARIABLE_ATTRIBUTES = ("value", "raw_value")
_NUMBERED_NAME = re.compile(r"^(.*?)_?(\d+)$")


def _as_path(value: Any) -> Path | None:
  if value is None:
    return None
  if isinstance(value, (str, int)):
    return (value,)
  if isinstance(value, (tuple, list)) and value:
    return tuple(value)
  raise ValueError(
    "optax_swr.Layer: a path must be a non-empty tuple of keys from the root "
    f"of the params tree, e.g. ('Dense_0', 'kernel'), or one key; got "
    f"{value!r}."
  )


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer of a network, as :func:`optax_swr.swr` rescales it.

  SWR multiplies ``weight`` by the layer's factor c and ``bias`` by the
  product C of the factors since the last normalization layer (or the
  input). A normalization layer (BatchNorm, LayerNorm, RMSNorm, GroupNorm)
  forgets the scale of its input, so the product restarts there; one without
  a scale has ``weight=None`` and still restarts it.

  Attributes:
    weight: the path of the weight leaf, e.g. ``("Dense_0", "kernel")``; a
      string is a one-key path (``"w1"``). ``None`` only for a normalization
      layer without a scale.
    bias: the path of the bias leaf, or ``None``.
    norm: whether the layer normalizes its input.
    path: the layer's own path, used to name it and to find its BatchNorm
      statistics; defaults to the parent of ``weight`` (or of ``bias``).
    coef: this layer's coefficient (a float in [0, 1] or a schedule), in
      place of ``swr``'s ``coef`` / ``classifier_coef``; ``0.0`` excludes the
      layer while keeping the network's function (unlike ``optax.masked``).
    index: for one slice of a stack of layers (``nn.scan``, or ``nnx.scan``
      over ``nnx.vmap``-built blocks), whose leaves carry the stack on their
      leading axes: the slice's index on those axes, e.g. ``(2,)`` for the
      third block. Each slice is its own layer, with its own norm and
      factor. ``()`` (the default): the whole leaves.
    traced_from: set by the tracers (leave it ``None``): the trace this
      layer comes from, so that ``swr`` can tell when a list of traced
      layers has lost what the trace found (see :class:`Layers`). Not part
      of the layer's identity (equality, hash, repr).

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_swr
    >>> params = {"w1": jnp.ones((3, 4)), "b1": jnp.ones(4),
    ...           "w2": jnp.ones((4, 2)), "b2": jnp.ones(2)}
    >>> layers = [optax_swr.Layer("w1", "b1"), optax_swr.Layer("w2", "b2")]
    >>> tx = optax.chain(optax.sgd(0.1), optax_swr.swr(0.1, layers=layers))
    >>> print(optax.tree.get(tx.init(params), "reference_norms"))
    [3.4641016 2.828427 ]
  """

  weight: Path | None
  bias: Path | None = None
  norm: bool = False
  path: Path | None = None
  coef: Any = None
  index: tuple[int, ...] = ()
  traced_from: Trace | None = dataclasses.field(
    default=None, compare=False, repr=False
  )

  def __post_init__(self):
    weight, bias = _as_path(self.weight), _as_path(self.bias)
    index = (self.index,) if isinstance(self.index, int) else self.index
    if not isinstance(index, (tuple, list)) or not all(
      isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in index
    ):
      raise ValueError(
        f"optax_swr.Layer({_as_path(self.path) or weight or bias!r}): "
        "`index` must be a tuple of non-negative ints, the slice of a "
        f"stack of layers (e.g. (2,)), or () for whole leaves; got "
        f"{self.index!r}."
      )
    if weight is None and not self.norm:
      raise ValueError(
        f"optax_swr.Layer(bias={bias!r}): only a normalization layer "
        "(norm=True) may have no weight; give the weight's path."
      )
    path = _as_path(self.path)
    if path is None:
      own = weight if weight is not None else bias
      if own is None:
        raise ValueError(
          "optax_swr.Layer: a normalization layer without a weight or a "
          "bias needs `path`, the path of the module, so that its place in "
          "the order and its statistics can be found."
        )
      path = own[:-1] if len(own) > 1 else own
    object.__setattr__(self, "weight", weight)
    object.__setattr__(self, "bias", bias)
    object.__setattr__(self, "norm", bool(self.norm))
    object.__setattr__(self, "path", path)
    object.__setattr__(self, "index", tuple(index))

  @property
  def name(self) -> str:
    """The layer's path joined with "/", e.g. ``"encoder/Dense_0"``.

    A slice of a stack adds its index: ``"blocks/Dense_0[2]"``.
    """
    return "/".join(map(str, self.path or ())) + "".join(
      f"[{i}]" for i in self.index
    )

  @property
  def key(self) -> tuple[Path | None, tuple[int, ...]]:
    """What identifies the layer: its path and its slice of a stack."""
    return self.path, self.index


LayerSpec = Layer | Path | str


@dataclasses.dataclass(frozen=True, eq=False)
class Trace:
  """What a tracer saw: every layer it traced, and whether it found equations.

  Attributes:
    caller: the tracer, e.g. ``"layers_from_linen"``.
    keys: the traced layers' keys (path, slice index), in forward order.
    has_equations: whether the network is not a chain, so that keeping its
      function needs the equations of its :class:`Layers`.
    norm_keys: the keys of the normalization layers among ``keys``, so that
      a list of traced layers without them still tells where they sit
      (``baselines.redo`` refuses to recycle a layer that one follows).
  """

  caller: str
  keys: tuple[tuple[Path | None, tuple[int, ...]], ...]
  has_equations: bool
  norm_keys: frozenset[tuple[Path | None, tuple[int, ...]]] = frozenset()


@dataclasses.dataclass(frozen=True, eq=False)
class Layers(Sequence[Layer]):
  """A traced network: its layers in forward order and the equations that
  keep its function.

  The tracers (:func:`layers_from_linen`, :func:`layers_from_nnx`,
  :func:`layers_from_equinox`) return one; pass it to ``swr(layers=...)`` as
  it is, or edited with its methods, which keep the equations:
  :meth:`with_coef` (a layer's own coefficient, 0.0 to leave its weight
  alone), :meth:`without` (leave layers out of SWR) and :meth:`restrict_to`
  (the layers an ``nnx.Optimizer(wrt=...)`` trains). It is a sequence of
  :class:`Layer` values, but a ``list``, a slice or a comprehension of them is
  only the layers: ``swr`` raises where such a list would lose what keeps the
  function, and says which method to use. :meth:`chain_rule` is the explicit
  opt-in to the paper's per-layer rule on a network that is not a chain (the
  function is not kept).

  Attributes:
    layers: the :class:`Layer` values, in forward order.
    graph: the network's log-scale equations (residual merges, attention,
      non-homogeneous operations; see ``how_it_works``), ``None`` for a chain
      or under :meth:`chain_rule`.
    chain_rule_only: whether :meth:`chain_rule` dropped the equations.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import flax.linen as nn
    >>> import optax_swr
    >>> class Residual(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = nn.Dense(4, name="embed")(x)
    ...     h = nn.Dense(4, name="down")(nn.relu(nn.Dense(8, name="up")(x)))
    ...     return nn.Dense(2, name="head")(nn.relu(x + h))
    >>> x = jnp.ones((1, 3))
    >>> variables = Residual().init(jax.random.key(0), x)
    >>> layers = optax_swr.layers_from_linen(Residual(), variables, x)
    >>> layers
    Layers(['embed', 'up', 'down', 'head'], equations=1)
    >>> layers.with_coef({"head": 0.0})[-1].coef
    0.0
    >>> layers.without("head")  # its bias keeps its scale: one more equation
    Layers(['embed', 'up', 'down'], equations=2)
    >>> tx = optax_swr.swr(1e-3, layers=list(layers))
    Traceback (most recent call last):
    ...
    ValueError: swr: `layers` is a list of layers from layers_from_linen, ...
  """

  layers: tuple[Layer, ...] = ()
  graph: Any = None
  chain_rule_only: bool = False

  def __post_init__(self):
    object.__setattr__(self, "layers", tuple(self.layers))
    if not all(isinstance(layer, Layer) for layer in self.layers):
      raise ValueError(
        "optax_swr.Layers: every entry must be an optax_swr.Layer; got "
        f"{[type(layer).__name__ for layer in self.layers]}."
      )
    size = len(self.layers)
    if self.graph is not None and self.graph.input_forms.shape != (size,) * 2:
      raise ValueError(
        f"optax_swr.Layers: the equations describe "
        f"{self.graph.input_forms.shape[0]} layers but {size} were given."
      )

  def __len__(self) -> int:
    return len(self.layers)

  def __getitem__(self, index):
    return self.layers[index]

  def __iter__(self) -> Iterator[Layer]:
    return iter(self.layers)

  def __repr__(self) -> str:
    details = ""
    if self.graph is not None:
      details = f", equations={len(self.graph.constraints)}"
    if self.chain_rule_only:
      details = ", chain_rule_only=True"
    return f"Layers({list(self.names)}{details})"

  @property
  def names(self) -> tuple[str, ...]:
    """The layers' names (``Layer.name``), in forward order."""
    return tuple(layer.name for layer in self.layers)

  def with_coef(self, coefs: Mapping[str, Any]) -> Layers:
    """These layers with their own coefficients; the equations are kept.

    Args:
      coefs: layer name (``Layer.name``; the path of a stack, e.g.
        ``"blocks/Dense_0"``, sets every slice) -> coefficient: a float in
        [0, 1] or a schedule, in place of ``swr``'s ``coef`` /
        ``classifier_coef``. ``0.0`` leaves the layer's weight exactly as the
        base optimizer made it; its bias still gets the factors that keep the
        function.

    Returns:
      A new :class:`Layers`.
    """
    coef_of = {}
    for name, coef in coefs.items():
      for index in self._select(name, "with_coef"):
        coef_of[index] = coef
    layers = tuple(
      dataclasses.replace(layer, coef=coef_of[i]) if i in coef_of else layer
      for i, layer in enumerate(self.layers)
    )
    return dataclasses.replace(self, layers=layers)

  def without(self, *names: str) -> Layers:
    """These layers but the named ones, which SWR then leaves alone.

    Their weights and biases keep the base optimizer's updates, and the
    equations gain what keeps the function with them unscaled: a left-out
    layer's bias keeps its scale, so the scale of its input is fixed too (in
    a chain, the product of the factors since the last normalization layer
    is then 1). To leave only a layer's weight alone, give it coef 0.0 with
    :meth:`with_coef` instead: that constrains nothing else.

    Args:
      *names: layer names (``Layer.name``, or the path of a stack).

    Returns:
      A new :class:`Layers`.
    """
    dropped = {i for name in names for i in self._select(name, "without")}
    return self._edited(
      [i for i in range(len(self)) if i not in dropped],
      unscaled_biases=dropped,
    )

  def restrict_to(self, params: Any) -> Layers:
    """The layers that ``params`` holds, for an optimizer of part of a model.

    ``nnx.Optimizer(model, tx, wrt=...)`` hands ``swr`` only the params that
    ``wrt`` selects (e.g. ``nnx.LoRAParam``); a traced layer whose weight is
    not among them is left out (as by :meth:`without`), and one whose bias is
    not among them keeps that bias's scale. The equations keep the function.

    Args:
      params: the params ``swr`` will be given, e.g.
        ``nnx.state(model, wrt)``.

    Returns:
      A new :class:`Layers`.

    Raises:
      ValueError: if ``params`` holds no layer's weight.
    """
    present = set(leaf_paths(params))
    kept, unscaled, layers = [], set(), list(self.layers)
    for i, layer in enumerate(self.layers):
      has_weight = layer.weight is None or layer.weight in present
      has_bias = layer.bias is None or layer.bias in present
      if has_weight and (layer.weight is not None or layer.bias is not None):
        kept.append(i)
      if layer.bias is not None and not has_bias:
        unscaled.add(i)
        layers[i] = dataclasses.replace(layer, bias=None)
      elif not has_weight:
        unscaled.add(i)
    if not any(self.layers[i].weight is not None for i in kept):
      raise ValueError(
        "Layers.restrict_to: `params` holds none of the traced layers' "
        f"weights ({list(self.names)}), so SWR would rescale nothing. Pass "
        "the params the optimizer trains, e.g. nnx.state(model, wrt)."
      )
    return self._edited(kept, unscaled_biases=unscaled, layers=layers)

  @functools.cached_property
  def projection(self) -> Projection | None:
    """The log-space maps to function-keeping factors; None for a chain.

    Computed once per value (a small float64 pseudo-inverse), from the
    equations and the layers that keep c = 1: a layer without a weight, and
    one whose coefficient is the constant 0 (one more equation each).
    """
    if self.graph is None:
      return None
    size = len(self.layers)
    fixed = [
      i
      for i, layer in enumerate(self.layers)
      if layer.weight is None or _is_zero_constant(layer.coef)
    ]
    constraints = np.concatenate([self.graph.constraints, np.eye(size)[fixed]])
    project = _homogeneity.projection(constraints, size)
    outputs = self.graph.output_forms([layer.norm for layer in self.layers])
    return Projection(
      project, outputs @ project, self.graph.input_forms @ project
    )

  def chain_rule(self) -> Layers:
    """These layers without their equations: the paper's per-layer rule.

    Each weight gets the paper's factor and each bias the product of the
    factors since the last normalization layer, as on a chain. On a network
    that is not a chain (residual merges, attention, GELU) this bounds every
    layer's norm, also the ones the equations pin, but it changes the
    function at every step, as the hyperball optimizers do; measure by how
    much with :func:`check_proportional`. On a chain it changes nothing.

    Returns:
      A new :class:`Layers` with ``chain_rule_only=True``.
    """
    return Layers(self.layers, None, chain_rule_only=True)

  def _select(self, name: Any, method: str) -> list[int]:
    matches = [
      i
      for i, layer in enumerate(self.layers)
      if name in (layer.name, "/".join(map(str, layer.path or ())), layer.path)
    ]
    if not matches:
      raise ValueError(
        f"Layers.{method}: no layer is named {name!r}; the layers are "
        f"{list(self.names)}."
      )
    return matches

  def _edited(
    self,
    kept: list[int],
    unscaled_biases: set[int],
    layers: Sequence[Layer] | None = None,
  ) -> Layers:
    """Keeps the layers ``kept`` (of ``layers``, by default these); the
    biases of ``unscaled_biases`` (kept or not) keep their scale. The
    equations follow, so that the function is kept."""
    norms = [layer.norm for layer in self.layers]
    biases = [layer.bias is not None for layer in self.layers]
    graph = self.graph
    if graph is None and not self.chain_rule_only:
      graph = _homogeneity.chain_graph(norms)._replace(names=self.names)
    if graph is not None:
      graph = graph.edited(kept, sorted(unscaled_biases), norms, biases)
    layers = self.layers if layers is None else tuple(layers)
    return Layers(tuple(layers[i] for i in kept), graph, self.chain_rule_only)


def assign_coefs(layers: Layers, coefs: Sequence[Any]) -> Layers:
  """``layers`` with the given coefficients, one per layer in order."""
  if len(coefs) != len(layers.layers):
    raise ValueError(
      f"assign_coefs: {len(coefs)} coefficients for {len(layers)} layers."
    )
  return dataclasses.replace(
    layers,
    layers=tuple(
      dataclasses.replace(layer, coef=coef)
      for layer, coef in zip(layers.layers, coefs)
    ),
  )


class Projection(NamedTuple):
  """Log-space maps from the paper's factors c* to function-keeping ones.

  Attributes:
    weights: ``log c = weights @ log c*``, the weights' factors.
    biases: ``log C = biases @ log c*``, the biases' factors.
    inputs: ``log s = inputs @ log c*``, the scales of the layers' inputs.
  """

  weights: np.ndarray
  biases: np.ndarray
  inputs: np.ndarray


def _is_zero_constant(coef: Any) -> bool:
  if coef is None or callable(coef):
    return False
  try:
    return float(coef) == 0.0
  except jax.errors.ConcretizationTypeError:
    return False  # Injected under jit: its value can change.


LayersArg = Sequence[LayerSpec] | Callable[[Any], Sequence[LayerSpec]] | None


def check_trace_kept(entries: Sequence[Any], caller: str) -> None:
  """Raises where a plain list of traced layers lost what their trace found.

  A list (a slice, a comprehension) of a :class:`Layers` value's layers
  carries neither its equations nor the layers it left out; either changes
  the function silently. The fix is a method of :class:`Layers`.
  """
  traces = {
    id(entry.traced_from): entry.traced_from
    for entry in entries
    if isinstance(entry, Layer) and entry.traced_from is not None
  }
  keys = tuple(entry_key(entry) for entry in entries)
  for trace in traces.values():
    fix = (
      "Pass the Layers value the tracer returned, edited with its methods, "
      "which keep the function: layers.with_coef({name: coef}) (0.0 leaves "
      "a layer's weight alone), layers.without(name), "
      "layers.restrict_to(params) for part of a model; or, to give up the "
      "function for the paper's per-layer rule on purpose, "
      "layers.chain_rule()."
    )
    if trace.has_equations:
      raise ValueError(
        f"{caller}: `layers` is a list of layers from {trace.caller}, "
        "which drops the equations (residual merges, attention, "
        "non-homogeneous operations) that keep this network's function: "
        f"SWR would then change it at every step. {fix}"
      )
    if keys != trace.keys:
      missing = [layer_key_name(k) for k in trace.keys if k not in keys]
      extra = [layer_key_name(k) for k in keys if k not in trace.keys]
      raise ValueError(
        f"{caller}: `layers` differs from the layers {trace.caller} traced "
        f"(missing: {missing}; not traced: {extra}; or in another order): "
        "a layer left out keeps its bias unscaled while the layers before "
        f"it are rescaled, which changes the function. {fix}"
      )


def layer_key_name(key: tuple[Path | None, tuple[int, ...]]) -> str:
  """The name (:attr:`Layer.name`) of the layer with this key."""
  path, index = key
  return "/".join(map(str, path or ())) + "".join(f"[{i}]" for i in index)


class ResolvedLayer(NamedTuple):
  """A :class:`Layer` resolved against one params tree.

  Attributes:
    layer: the layer.
    weight_index: index of the weight leaf in ``jax.tree.leaves(params)``, or
      ``None`` for a normalization layer without a scale.
    bias_index: index of the bias leaf, or ``None``.
  """

  layer: Layer
  weight_index: int | None
  bias_index: int | None

  @property
  def path(self) -> Path:
    assert self.layer.path is not None
    return self.layer.path

  @property
  def is_norm(self) -> bool:
    return self.layer.norm

  @property
  def stack_index(self) -> tuple[int, ...]:
    """The slice of a stack this layer is (``()``: the whole leaves)."""
    return self.layer.index


def _key_name(key: Any) -> Hashable:
  """The plain key of one entry of a JAX key path."""
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return getattr(key, attribute)
  return str(key)


def leaf_paths(tree: Any) -> list[Path]:
  """Paths of the leaves of ``tree``, in ``jax.tree.leaves`` order.

  Trailing ``.value`` attributes of ``nnx.Variable`` nodes are dropped, so an
  ``nnx.State`` of Variables and its pure-array form give the same paths.
  """
  paths = []
  for key_path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
    while (
      key_path
      and isinstance(key_path[-1], jax.tree_util.GetAttrKey)
      and key_path[-1].name in _VARIABLE_ATTRIBUTES
    ):
      key_path = key_path[:-1]
    paths.append(path_of(key_path))
  return paths


def path_of(key_path: Sequence[Any]) -> Path:
  """The plain path of a JAX key path: dict keys, attribute names, indices."""
  return tuple(_key_name(k) for k in key_path)


def normalize_layers_arg(
  layers: Any, name: str = "layers", caller: str = "swr"
) -> Layers | tuple[Layer | Path, ...] | Callable[[Any], Any] | None:
  """Validates a ``layers`` argument before any params are seen.

  Entries are :class:`Layer` values or paths of layer sub-trees (a string is
  a one-key path); a callable is kept, to be called with the params. Raises
  ValueError, naming the function ``caller`` and the argument ``name``, for
  an empty or malformed sequence and for duplicates.
  """
  if layers is None or callable(layers) and not isinstance(layers, Layer):
    return layers
  if isinstance(layers, Layers) and layers:
    _check_unique([layer.key for layer in layers], name, caller)
    return layers
  if isinstance(layers, (str, bytes, Layer)) or not isinstance(
    layers, Sequence
  ):
    raise ValueError(
      f"{caller}: `{name}` must be a sequence of layers in forward order "
      f"(optax_swr.Layer values or paths of layer sub-trees, e.g. "
      f"{name}=[('Dense_0',), ('Dense_1',)]), or a function of the params "
      f"that returns one; got {layers!r}."
    )
  if not layers:
    raise ValueError(
      f"{caller}: `{name}` is empty: pass at least one layer, or leave "
      f"`{name}` as None."
    )
  entries = tuple(_as_entry(entry, name, caller) for entry in layers)
  _check_unique([entry_key(e) for e in entries], name, caller)
  return entries


def _as_entry(entry: Any, name: str, caller: str) -> Layer | Path:
  if isinstance(entry, Layer):
    return entry
  if isinstance(entry, str):
    return (entry,)
  if isinstance(entry, (tuple, list)) and entry:
    return tuple(entry)
  raise ValueError(
    f"{caller}: every entry of `{name}` must be an optax_swr.Layer or a "
    "non-empty tuple of keys from the root of the params tree, e.g. "
    f"('encoder', 'conv1'); got {entry!r}."
  )


def entry_path(entry: Layer | Path) -> Path:
  return entry.path if isinstance(entry, Layer) else entry  # type: ignore[return-value]


def entry_key(entry: Layer | Path) -> Any:
  """A layer's path and slice index (``()`` for a plain path)."""
  return entry.key if isinstance(entry, Layer) else (entry, ())


def _check_unique(keys: Sequence[Any], name: str, caller: str) -> None:
  seen = set()
  for path, index in keys:
    if (path, index) in seen:
      where = f" (slice {index})" if index else ""
      raise ValueError(
        f"{caller}: `{name}` lists the layer {path!r}{where} more than once. "
        "Each layer must appear exactly once, in forward order."
      )
    seen.add((path, index))


def find_layers(params: Any, layers: LayersArg = None) -> tuple[Layer, ...]:
  """The layers :func:`optax_swr.swr` rescales in ``params``, in order.

  Turns any form of ``swr``'s ``layers`` argument into explicit
  :class:`Layer` values: use it to see what ``layers=None`` inferred, to name
  the entries of ``SWRState`` arrays (:func:`by_layer`), or to hand the
  layers to :func:`optax_swr.sync_batch_stats`.

  Args:
    params: the params tree.
    layers: as for :func:`optax_swr.swr`: ``None`` infers them from the
      leaf names, where the names settle the order.

  Returns:
    The layers, in forward order.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax_swr
    >>> params = {"linear": {"w": jnp.ones((2, 3)), "b": jnp.ones(3)},
    ...           "linear_1": {"w": jnp.ones((3, 1)), "b": jnp.ones(1)}}
    >>> for layer in optax_swr.find_layers(params):  # Haiku's names
    ...   print(layer.weight, layer.bias)
    ('linear', 'w') ('linear', 'b')
    ('linear_1', 'w') ('linear_1', 'b')
  """
  spec = normalize_layers_arg(layers, caller="find_layers")
  return tuple(r.layer for r in resolve(params, spec, caller="find_layers"))


def by_layer(values: Any, layers: Sequence[Layer]) -> dict[str, Any]:
  """Names the entries of a per-layer array, e.g. for logging.

  Args:
    values: an array whose first axis runs over the layers, in the order of
      ``layers`` (e.g. ``optax.tree.get(opt_state, "weight_norms")``).
    layers: the layers, as :func:`find_layers` or a tracer returns them.

  Returns:
    A dict from each layer's name to its entry.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_swr
    >>> params = {"Dense_0": {"kernel": jnp.full((2, 2), 2.0)},
    ...           "Dense_1": {"kernel": jnp.ones((2, 1))}}
    >>> state = optax_swr.swr(0.1).init(params)
    >>> norms = optax.tree.get(state, "weight_norms")
    >>> optax_swr.by_layer(norms, optax_swr.find_layers(params))
    {'Dense_0': Array(4., dtype=float32), 'Dense_1': Array(1.4142135, dtype=float32)}
  """
  layers = tuple(layers)
  if not all(isinstance(layer, Layer) for layer in layers):
    raise ValueError(
      "by_layer: `layers` must be optax_swr.Layer values; get them with "
      "optax_swr.find_layers(params, layers)."
    )
  if len(values) != len(layers):
    raise ValueError(
      f"by_layer: `values` has {len(values)} entries but there are "
      f"{len(layers)} layers; pass the layers the SWR state was built with."
    )
  return {layer.name: values[i] for i, layer in enumerate(layers)}


def resolve(
  params: Any, layers: Any, caller: str = "swr"
) -> tuple[ResolvedLayer, ...]:
  """Finds the given layers (or infers them) in ``params``.

  Args:
    params: the params tree.
    layers: the output of :func:`normalize_layers_arg`.
    caller: the public function named in errors.

  Returns:
    The resolved layers, in forward order; ``()`` for an empty tree.

  Raises:
    ValueError: if a layer is not in the tree, two layers share a leaf, a
      leaf is not floating point, or the order cannot be inferred.
  """
  paths = leaf_paths(params)
  if not paths:  # An empty tree (also optax.tree_map_params' placeholder).
    return ()
  leaves = jax.tree.leaves(params)
  if callable(layers):
    layers = call_layers_fn(layers, params, caller)
  _check_not_masked(params, layers, caller)
  if layers is None:
    found = _infer_layers(paths, leaves, caller)
  else:
    found = [_as_layer(entry, paths, leaves, caller) for entry in layers]
  index_of = {path: index for index, path in enumerate(paths)}
  resolved = tuple(
    ResolvedLayer(
      layer,
      None if layer.weight is None else index_of[layer.weight],
      None if layer.bias is None else index_of[layer.bias],
    )
    for layer in found
  )
  _check_no_shared_leaves(resolved, caller)
  _check_floating(leaves, resolved, caller)
  _check_indices(leaves, resolved, caller)
  return resolved


def _check_not_masked(params: Any, layers: Any, caller: str) -> None:
  """Raises where ``optax.masked`` hid a layer's weight or bias from swr.

  optax.masked hands its inner transformation an ``optax.MaskedNode`` in
  place of every leaf it masks out; a hidden bias keeps its scale while the
  layers before it are rescaled, which changes the function.
  """
  is_masked = lambda node: isinstance(node, optax.MaskedNode)
  flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_masked)[0]
  masked = [path_of(key) for key, node in flat if is_masked(node)]
  if not masked:
    return
  # A layer's leaf by its name, or by the layers given.
  roles = (*WEIGHT_NAMES, *BIAS_NAMES)
  owned = {
    getattr(entry, role)
    for entry in layers or ()
    if isinstance(entry, Layer)
    for role in ("weight", "bias")
  }
  under = [e for e in layers or () if isinstance(e, tuple)]
  hidden = [
    path
    for path in masked
    if (path and path[-1] in roles)
    or path in owned
    or any(path[: len(entry)] == entry for entry in under)
  ]
  if hidden:
    raise ValueError(
      f"{caller}: optax.masked hides {_describe(hidden)} from swr (they "
      "reach it as optax.MaskedNode). SWR scales each bias by the factors "
      "of the layers before it; a hidden bias, or a hidden layer among "
      "rescaled ones, keeps its scale while the rest is rescaled, and the "
      "network's function changes. To leave layers alone, give them coef "
      "0.0 (optax_swr.Layer(..., coef=0.0), or "
      "traced_layers.with_coef({name: 0.0})), or leave them out with "
      "traced_layers.without(name): both keep the function. To mask the "
      "base optimizer only: optax.chain(optax.masked(base, mask), "
      "optax_swr.swr(...))."
    )


def call_layers_fn(
  layers_fn: Callable[[Any], Any], params: Any, caller: str
) -> Any:
  """The layers a ``layers`` function returns for ``params``, validated."""
  returned = layers_fn(params)
  try:
    layers = normalize_layers_arg(returned, caller=caller)
  except ValueError as error:
    raise ValueError(
      f"{caller}: the `layers` function returned {returned!r}, which is not "
      "a sequence of optax_swr.Layer values or layer paths in forward "
      f"order: {error}"
    ) from None
  if isinstance(layers, tuple):
    check_trace_kept(layers, caller)
  return layers


def _infer_layers(
  paths: list[Path], leaves: list[Any], caller: str
) -> list[Layer]:
  groups = group_by_layer(paths)
  layers = {
    path: layer_from_group(path, group, leaves, caller)
    for path, group in groups.items()
  }
  if not layers:
    raise ValueError(
      f"{caller}: the params tree has no layer with a weight leaf named "
      f"{', '.join(WEIGHT_NAMES)}, so there is nothing to rescale. Pass "
      "`layers=` with optax_swr.Layer(weight=..., bias=...) values."
    )
  ordered = [layers[path] for path in infer_layer_order(list(layers), caller)]
  gap = disconnected(ordered, paths, leaves)
  if gap is not None:
    raise ValueError(
      f"{caller}(layers=None): the layers ordered by their names do not "
      f"form a chain: {gap}. Two heads on the same features (an actor and a "
      "critic, say) have numbered names too, and scaling them as a chain "
      "would change the network's function; optax_swr never guesses. Trace "
      "the model instead: optax_swr.layers_from_linen(module, variables, "
      "x), layers_from_nnx(model, x) or layers_from_equinox(model, x)."
    )
  return ordered


def disconnected(
  layers: Sequence[Layer], paths: list[Path], leaves: list[Any]
) -> str | None:
  """Where a layer's input size is not the previous layer's output size.

  Compared only where the weights' shapes say both without doubt: dense to
  dense (2-D weights, a norm's scale between), conv to conv, an embedding
  into a dense layer; a reshape between other kinds (conv to dense) is not
  checked. Returns a description of the first gap, or None.
  """
  index_of = {path: i for i, path in enumerate(paths)}
  previous = None
  for layer in layers:
    sizes = _io_sizes(layer, leaves, index_of)
    if sizes is None:
      continue
    kind, size_in, size_out = sizes
    if kind == "vector" and previous is not None:
      kind = previous[1]  # a norm's scale: the features of what it follows
    if previous is not None and size_in is not None:
      before, before_kind, before_out = previous
      if before_kind == kind or (before_kind, kind) == ("embed", "dense"):
        if size_in != before_out:
          return (
            f"{layer.name!r} takes {size_in} features but {before.name!r} "
            f"before it gives {before_out}"
          )
    previous = (layer, "dense" if kind == "embed" else kind, size_out)
  return None


def _io_sizes(
  layer: Layer, leaves: list[Any], index_of: dict[Path, int]
) -> tuple[str, int | None, int] | None:
  """(kind, input size or None, output size) from a layer's weight shape."""
  if layer.weight is None or layer.index:
    return None
  shape = jnp.shape(leaves[index_of[layer.weight]])
  name = layer.weight[-1]
  if len(shape) == 1:
    return "vector", shape[0], shape[0]
  if name in ("embedding", "embeddings") and len(shape) == 2:
    return "embed", None, shape[1]
  if name == "weight":  # PyTorch-style and Equinox: (out, in, *window)
    return ("dense" if len(shape) == 2 else "conv"), shape[1], shape[0]
  if len(shape) == 2:  # Flax kernel, Haiku w: (in, out)
    return "dense", shape[0], shape[1]
  if len(shape) in (3, 4, 5):  # a convolution's (*window, in, out)
    return "conv", shape[-2], shape[-1]
  return None


def group_by_layer(paths: list[Path]) -> dict[Path, dict[str, int]]:
  """Maps every sub-tree that directly holds a weight or bias to its leaves."""
  groups: dict[Path, dict[str, int]] = {}
  for index, path in enumerate(paths):
    if path and path[-1] in (*WEIGHT_NAMES, *BIAS_NAMES):
      groups.setdefault(path[:-1], {})[str(path[-1])] = index
  return groups


def layer_from_group(
  path: Path, group: dict[str, int], leaves: list[Any], caller: str
) -> Layer:
  weight_names = [name for name in WEIGHT_NAMES if name in group]
  bias_names = [name for name in BIAS_NAMES if name in group]
  if len(weight_names) > 1 or len(bias_names) > 1:
    raise ValueError(
      f"{caller}: the layer {path!r} has the leaves {sorted(group)}, more "
      "than one weight or bias by name, so which is which is unclear. Pass "
      "optax_swr.Layer(weight=..., bias=...) values in `layers`."
    )
  if not weight_names:
    raise ValueError(
      f"{caller}: the sub-tree {path!r} has a bias ({bias_names[0]!r}) but no "
      "weight. If it is a normalization layer without a scale (e.g. "
      "LayerNorm(use_scale=False)), trace the model with "
      "optax_swr.layers_from_linen / layers_from_nnx / layers_from_equinox, "
      f"or pass optax_swr.Layer(weight=None, bias={(*path, bias_names[0])!r},"
      " norm=True) in `layers`."
    )
  (weight_name,) = weight_names
  return Layer(
    weight=(*path, weight_name),
    bias=(*path, bias_names[0]) if bias_names else None,
    norm=is_norm_weight(weight_name, leaves[group[weight_name]]),
    path=path or None,  # A layer at the root is named after its weight.
  )


def is_norm_weight(name: str, leaf: Any) -> bool:
  """Whether the weight leaf ``name`` (in :data:`WEIGHT_NAMES`) is a
  normalization layer's scale, by the naming conventions."""
  is_norm = WEIGHT_NAMES[name]
  if is_norm is None:  # A vector `weight` is a normalization layer's scale.
    return jnp.ndim(leaf) == 1
  return is_norm


def _as_layer(
  entry: Layer | Path, paths: list[Path], leaves: list[Any], caller: str
) -> Layer:
  if isinstance(entry, Layer):
    for role in ("weight", "bias"):
      _check_leaf_path(entry, role, paths, caller)
    return entry
  groups = group_by_layer(paths)
  group = groups.get(entry, {})
  if group:
    return layer_from_group(entry, group, leaves, caller)
  if entry in paths:
    raise ValueError(
      f"{caller}: the path {entry!r} in `layers` points to a leaf, not to a "
      f"layer sub-tree. Say which leaf is the weight and which the bias: "
      f"optax_swr.Layer(weight={entry!r}, bias=<path of its bias or None>)."
    )
  below = [p[len(entry) :] for p in paths if p[: len(entry)] == entry]
  if not below:
    raise ValueError(
      f"{caller}: the path {entry!r} in `layers` is not in the params tree. "
      f"Layers found in the tree: {_describe(list(groups))}."
    )
  raise ValueError(
    f"{caller}: the layer {entry!r} in `layers` has no weight leaf named one "
    f"of {', '.join(WEIGHT_NAMES)}; its leaves are {_describe(below)}. "
    "Pass optax_swr.Layer(weight=..., bias=...) with the leaves' paths."
  )


def _check_leaf_path(
  layer: Layer, role: str, paths: list[Path], caller: str
) -> None:
  path = getattr(layer, role)
  if path is None or path in paths:
    return
  below = [p for p in paths if p[: len(path)] == path]
  hint = (
    f"it is a sub-tree with the leaves {_describe(below)}; give the path of "
    "one leaf"
    if below
    else f"the tree's leaves are {_describe(paths)}"
  )
  raise ValueError(
    f"{caller}: the {role} {path!r} of the layer {layer.name!r} is not a "
    f"leaf of the params: {hint}."
  )


def _check_no_shared_leaves(
  resolved: Sequence[ResolvedLayer], caller: str
) -> None:
  """Slices of one stacked leaf may be different layers; nothing else."""
  owners: dict[int, list[ResolvedLayer]] = {}
  for item in resolved:
    for leaf in (item.weight_index, item.bias_index):
      if leaf is None:
        continue
      for other in owners.setdefault(leaf, []):
        if not (other.stack_index and item.stack_index) or (
          other.stack_index == item.stack_index
        ):
          raise ValueError(
            f"{caller}: the layers {other.layer.name!r} and "
            f"{item.layer.name!r} share a leaf; each weight or bias (or "
            "each slice of a stacked one) must belong to one layer "
            "(rescaling it twice would square its factor)."
          )
      owners[leaf].append(item)


def _check_indices(
  leaves: list[Any], resolved: Sequence[ResolvedLayer], caller: str
) -> None:
  """A slice index must fit the leaf's leading axes, as deep as its peers."""
  depth: dict[int, int] = {}
  for item in resolved:
    for leaf in (item.weight_index, item.bias_index):
      if leaf is None or not item.stack_index:
        continue
      shape = jnp.shape(leaves[leaf])
      index = item.stack_index
      if len(index) >= len(shape) or any(i >= n for i, n in zip(index, shape)):
        raise ValueError(
          f"{caller}: the layer {item.layer.name!r} is slice {index} of a "
          f"stack, but its leaf has shape {shape}; the index must address "
          "leading (stacked) axes and leave the layer's own axes."
        )
      if depth.setdefault(leaf, len(index)) != len(index):
        raise ValueError(
          f"{caller}: the slices of one stacked leaf in layer "
          f"{item.layer.name!r} have indices of different lengths; give "
          "every slice of the stack an index of the same length."
        )


def _check_floating(
  leaves: list[Any], resolved: Sequence[ResolvedLayer], caller: str
) -> None:
  """Rescaling an integer or boolean leaf would silently truncate it."""
  for item in resolved:
    for index in (item.weight_index, item.bias_index):
      if index is None:
        continue
      dtype = jnp.result_type(leaves[index])
      if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
          f"{caller}: the layer {item.layer.name!r} has a {dtype} leaf; SWR "
          "rescales floating-point weights and biases only. Keep integer "
          "or boolean leaves out of the layers (e.g. under another key), or "
          "pass `layers=` without this layer."
        )


def _describe(paths: list[Path], limit: int = 8) -> str:
  shown = ", ".join(repr(p) for p in paths[:limit])
  more = f", ... ({len(paths) - limit} more)" if len(paths) > limit else ""
  return f"[{shown}{more}]" if paths else "none"


def infer_layer_order(
  layer_paths: list[Path], caller: str = "swr"
) -> tuple[Path, ...]:
  """Orders layer paths by the numbers in their names, where that is certain.

  At every level of the tree, sibling names must be one stem with distinct
  numbers (``Dense_0`` ... ``Dense_11``, ``layers_3``, or list indices); they
  are then ordered numerically. Haiku's convention, where the first module is
  ``linear`` and the next ``linear_1``, counts the bare name as 0. Anything
  else is ambiguous: JAX sorts dict keys alphabetically, which need not be
  the order the network runs.

  Raises:
    ValueError: if the order is ambiguous; the message tells how to pass it.
  """
  return tuple(_order_below((), layer_paths, caller))


def _order_below(
  prefix: Path, layer_paths: list[Path], caller: str
) -> list[Path]:
  depth = len(prefix)
  here = [p for p in layer_paths if len(p) == depth]
  deeper = [p for p in layer_paths if len(p) > depth]
  if here and deeper:
    _raise_ambiguous(
      layer_paths, f"{prefix!r} is a layer and also contains layers", caller
    )
  if here:
    return here
  children: dict[Hashable, list[Path]] = {}
  for path in deeper:
    children.setdefault(path[depth], []).append(path)
  ordered = _numeric_order(list(children), prefix, layer_paths, caller)
  return [
    path
    for child in ordered
    for path in _order_below((*prefix, child), children[child], caller)
  ]


def _numeric_order(
  names: list[Hashable], prefix: Path, layer_paths: list[Path], caller: str
) -> list[Hashable]:
  if len(names) == 1:
    return names
  parsed = [_parse_numbered(name) for name in names]
  numbered_stems = {stem for stem, number in parsed if number is not None}
  # Haiku: `linear`, `linear_1`, `linear_2`: the bare stem is the first.
  parsed = [
    (stem, 0 if number is None and stem in numbered_stems else number)
    for stem, number in parsed
  ]
  stems = {stem for stem, _ in parsed}
  numbers = [number for _, number in parsed]
  if None in numbers or len(stems) != 1 or len(set(numbers)) != len(numbers):
    where = f"under {prefix!r}" if prefix else "at the root"
    _raise_ambiguous(
      layer_paths,
      f"the names {sorted(map(str, names))} {where} are not one name with "
      "distinct numbers",
      caller,
    )
  return [name for _, name in sorted(zip(numbers, names))]


def _parse_numbered(name: Hashable) -> tuple[str, int | None]:
  if isinstance(name, int):
    return "", name
  match = _NUMBERED_NAME.match(str(name))
  if match is None:
    return str(name), None
  return match.group(1), int(match.group(2))


def _raise_ambiguous(layer_paths: list[Path], reason: str, caller: str) -> None:
  raise ValueError(
    f"{caller}(layers=None) cannot infer the forward order of the layers "
    f"from the params tree: {reason}. The tree's key order is not the order "
    "the network runs, and optax_swr never guesses. Pass the layers in "
    "forward order: optax_swr.layers_from_linen(module, variables, x), "
    "layers_from_nnx(model, x) or layers_from_equinox(model, x) trace them "
    "from your model; or write them out, e.g. layers=[('Conv_0',), "
    "('BatchNorm_0',), ('Dense_0',)] or [optax_swr.Layer('w1', 'b1'), ...]. "
    f"Layers found: {_describe(sorted(layer_paths, key=str), limit=12)}."
  )
