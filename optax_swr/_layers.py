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

"""What a layer is in a params tree, and in which order the layers run.

A layer is a sub-tree of the params that holds one weight leaf (named
``kernel``, ``scale`` or ``embedding``) and optionally a ``bias`` leaf. A layer
whose weight is ``scale`` is a normalization layer. Layers are addressed by
paths: tuples of keys from the root of the params tree, e.g. ``("Dense_0",)``.

This module only looks at tree structure, never at values, so everything here
runs once per trace in Python and costs nothing inside ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
import re
from typing import Any, NamedTuple

import jax

Path = tuple[Hashable, ...]

WEIGHT_NAMES = ("kernel", "scale", "embedding")
NORM_WEIGHT_NAME = "scale"
BIAS_NAME = "bias"
# nnx.Variable flattens to a node with a `value` attribute; the layer structure
# is the same with or without it.
_VARIABLE_ATTRIBUTES = ("value", "raw_value")
_NUMBERED_NAME = re.compile(r"^(.*?)_?(\d+)$")


class Layer(NamedTuple):
  """A layer resolved against one params tree.

  Attributes:
    path: the layer's path from the root of the params tree.
    weight_index: index of the weight leaf in ``jax.tree.leaves(params)``.
    bias_index: index of the bias leaf, or ``None`` if the layer has none.
    is_norm: whether the layer is a normalization layer (weight ``scale``).
  """

  path: Path
  weight_index: int
  bias_index: int | None
  is_norm: bool


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
    paths.append(tuple(_key_name(k) for k in key_path))
  return paths


def normalize_layers_arg(
  layers: Any, name: str = "layers", caller: str = "swr"
) -> tuple[Path, ...] | None:
  """Validates a sequence-of-paths argument and returns it as path tuples.

  A string is accepted as a one-key path. Raises ValueError, naming the
  function ``caller`` and the argument ``name``, for an empty or malformed
  sequence and for duplicates.
  """
  if layers is None:
    return None
  if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
    raise ValueError(
      f"{caller}: `{name}` must be a sequence of paths in forward order, e.g. "
      f"{name}=[('Dense_0',), ('Dense_1',)]; got {layers!r}."
    )
  if not layers:
    raise ValueError(
      f"{caller}: `{name}` is empty: pass at least one layer path, or leave "
      f"`{name}` as None."
    )
  paths = tuple(_as_path(path, name, caller) for path in layers)
  seen = set()
  for path in paths:
    if path in seen:
      raise ValueError(
        f"{caller}: `{name}` lists the path {path!r} more than once. Each layer "
        "must appear exactly once, in forward order."
      )
    seen.add(path)
  return paths


def _as_path(path: Any, name: str, caller: str) -> Path:
  if isinstance(path, str):
    return (path,)
  if isinstance(path, (tuple, list)) and path:
    return tuple(path)
  raise ValueError(
    f"{caller}: every entry of `{name}` must be a non-empty tuple of keys from "
    f"the root of the params tree, e.g. ('encoder', 'conv1'); got {path!r}."
  )


def group_by_layer(paths: list[Path]) -> dict[Path, dict[str, int]]:
  """Maps every sub-tree that directly holds a weight or bias to its leaves."""
  groups: dict[Path, dict[str, int]] = {}
  for index, path in enumerate(paths):
    if path and path[-1] in (*WEIGHT_NAMES, BIAS_NAME):
      groups.setdefault(path[:-1], {})[path[-1]] = index
  return groups


def _layer_from_group(path: Path, group: dict[str, int]) -> Layer:
  weight_names = [name for name in WEIGHT_NAMES if name in group]
  if len(weight_names) > 1:
    raise ValueError(
      f"swr: the layer {path!r} has more than one weight leaf "
      f"({', '.join(weight_names)}); a layer must have exactly one of "
      f"{', '.join(WEIGHT_NAMES)}. List its sub-layers in `layers` instead."
    )
  (weight_name,) = weight_names
  return Layer(
    path=path,
    weight_index=group[weight_name],
    bias_index=group.get(BIAS_NAME),
    is_norm=weight_name == NORM_WEIGHT_NAME,
  )


def resolve_layers(
  paths: list[Path], layers: tuple[Path, ...] | None
) -> tuple[Layer, ...]:
  """Finds the given layers (or infers them) in a tree with these leaf paths.

  Args:
    paths: the tree's leaf paths, as returned by :func:`leaf_paths`.
    layers: the layers in forward order, or ``None`` to infer the order.

  Returns:
    The resolved layers, in forward order.

  Raises:
    ValueError: if a path is not a layer of the tree, or the order cannot be
      inferred unambiguously.
  """
  groups = group_by_layer(paths)
  if layers is None:
    layer_paths = [p for p, g in groups.items() if set(g) & set(WEIGHT_NAMES)]
    if not layer_paths:
      raise ValueError(
        "swr: the params tree has no layer with a weight leaf named "
        f"{', '.join(WEIGHT_NAMES)}, so there is nothing to rescale. Pass "
        "`layers=` with the paths of the layers to rescale."
      )
    layers = infer_layer_order(layer_paths)
  return tuple(_find_layer(path, paths, groups) for path in layers)


def _find_layer(
  path: Path, paths: list[Path], groups: dict[Path, dict[str, int]]
) -> Layer:
  group = groups.get(path, {})
  if any(name in group for name in WEIGHT_NAMES):
    return _layer_from_group(path, group)
  if path in paths:
    raise ValueError(
      f"swr: the path {path!r} in `layers` points to a leaf, not to a layer. "
      f"Give the layer's sub-tree instead, e.g. {path[:-1]!r}."
    )
  below = [p[len(path) :] for p in paths if p[: len(path)] == path]
  if not below:
    raise ValueError(
      f"swr: the path {path!r} in `layers` is not in the params tree. "
      f"Layers found in the tree: {_describe(list(groups))}."
    )
  raise ValueError(
    f"swr: the layer {path!r} in `layers` has no weight leaf (one of "
    f"{', '.join(WEIGHT_NAMES)}); its leaves are {_describe(below)}. "
    "List only parameterized layers, or their sub-layers."
  )


def _describe(paths: list[Path], limit: int = 8) -> str:
  shown = ", ".join(repr(p) for p in paths[:limit])
  more = f", ... ({len(paths) - limit} more)" if len(paths) > limit else ""
  return f"[{shown}{more}]" if paths else "none"


def infer_layer_order(layer_paths: list[Path]) -> tuple[Path, ...]:
  """Orders layer paths by the numbers in their names, where that is certain.

  At every level of the tree, sibling names must be one stem with distinct
  numbers (``Dense_0`` ... ``Dense_11``, ``layers_3``, or list indices); they
  are then ordered numerically. Anything else is ambiguous: JAX sorts dict keys
  alphabetically, which need not be the order the network runs.

  Raises:
    ValueError: if the order is ambiguous; the message tells how to pass it.
  """
  return tuple(_order_below((), layer_paths))


def _order_below(prefix: Path, layer_paths: list[Path]) -> list[Path]:
  depth = len(prefix)
  here = [p for p in layer_paths if len(p) == depth]
  deeper = [p for p in layer_paths if len(p) > depth]
  if here and deeper:
    _raise_ambiguous(
      layer_paths,
      f"{prefix!r} is a layer and also contains layers",
    )
  if here:
    return here
  children: dict[Hashable, list[Path]] = {}
  for path in deeper:
    children.setdefault(path[depth], []).append(path)
  ordered_children = _numeric_order(list(children), prefix, layer_paths)
  return [
    path
    for child in ordered_children
    for path in _order_below((*prefix, child), children[child])
  ]


def _numeric_order(
  names: list[Hashable], prefix: Path, layer_paths: list[Path]
) -> list[Hashable]:
  if len(names) == 1:
    return names
  parsed = [_parse_numbered(name) for name in names]
  stems = {stem for stem, _ in parsed}
  numbers = [number for _, number in parsed]
  if None in numbers or len(stems) != 1 or len(set(numbers)) != len(numbers):
    where = f"under {prefix!r}" if prefix else "at the root"
    _raise_ambiguous(
      layer_paths,
      f"the names {sorted(map(str, names))} {where} are not one name with "
      "distinct numbers",
    )
  return [name for _, name in sorted(zip(numbers, names))]


def _parse_numbered(name: Hashable) -> tuple[str, int | None]:
  if isinstance(name, int):
    return "", name
  match = _NUMBERED_NAME.match(str(name))
  if match is None:
    return str(name), None
  return match.group(1), int(match.group(2))


def _raise_ambiguous(layer_paths: list[Path], reason: str) -> None:
  raise ValueError(
    "swr(layers=None) cannot infer the forward order of the layers from the "
    f"params tree: {reason}. The tree's key order is not the order the "
    "network runs, and swr never guesses. Pass the layers in forward order: "
    "optax_swr.layers_from_linen(module, variables, x) or "
    "optax_swr.layers_from_nnx(model, x) trace them from your model, or "
    "write them out, e.g. swr(layers=[('Conv_0',), ('BatchNorm_0',), "
    "('Dense_0',)]). "
    f"Layers found: {_describe(sorted(layer_paths, key=str), limit=12)}."
  )
