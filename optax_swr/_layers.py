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

from collections.abc import Callable, Hashable, Sequence
import dataclasses
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

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


class Layers(tuple):
  """Layers in forward order, as a tracer returns them.

  A tuple of :class:`Layer` values that also carries what the trace found
  about the network (``graph``: the log-scale equations that keep its
  function, see ``_homogeneity``), so that ``swr(layers=...)`` keeps residual
  nets and transformers exact. ``graph`` is ``None`` for a plain chain.
  """

  graph: Any

  def __new__(cls, layers: Sequence[Any] = (), graph: Any = None):
    instance = super().__new__(cls, layers)
    instance.graph = graph
    return instance


LayerSpec = Layer | Path | str
LayersArg = Sequence[LayerSpec] | Callable[[Any], Sequence[LayerSpec]] | None


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
) -> tuple[Layer | Path, ...] | Callable[[Any], Any] | None:
  """Validates a ``layers`` argument before any params are seen.

  Entries are :class:`Layer` values or paths of layer sub-trees (a string is
  a one-key path); a callable is kept, to be called with the params. Raises
  ValueError, naming the function ``caller`` and the argument ``name``, for
  an empty or malformed sequence and for duplicates.
  """
  if layers is None or callable(layers) and not isinstance(layers, Layer):
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
  graph = getattr(layers, "graph", None)
  return entries if graph is None else Layers(entries, graph)


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
    layers = _call_layers_fn(layers, params, caller)
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


def _call_layers_fn(
  layers_fn: Callable[[Any], Any], params: Any, caller: str
) -> Any:
  returned = layers_fn(params)
  try:
    return normalize_layers_arg(returned, caller=caller)
  except ValueError as error:
    raise ValueError(
      f"{caller}: the `layers` function returned {returned!r}, which is not "
      "a sequence of optax_swr.Layer values or layer paths in forward "
      f"order: {error}"
    ) from None


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
  return [layers[path] for path in infer_layer_order(list(layers), caller)]


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
  is_norm = WEIGHT_NAMES[weight_name]
  if is_norm is None:  # A vector `weight` is a normalization layer's scale.
    is_norm = jnp.ndim(leaves[group[weight_name]]) == 1
  return Layer(
    weight=(*path, weight_name),
    bias=(*path, bias_names[0]) if bias_names else None,
    norm=is_norm,
    path=path or None,  # A layer at the root is named after its weight.
  )


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
