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

"""Weight norms, computed the same way by :func:`swr` and the metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
  from optax_swr._layers import ResolvedLayer


def compute_dtype(leaf: jax.Array) -> jnp.dtype:
  """At least float32, so bf16/f16 norms neither overflow nor lose bits."""
  return jnp.promote_types(leaf.dtype, jnp.float32)


def pair_dtype(param: jax.Array, update: jax.Array) -> jnp.dtype:
  """The dtype SWR computes a param and its update in: at least float32."""
  return jnp.promote_types(compute_dtype(param), compute_dtype(update))


def moved(param: jax.Array, update: jax.Array) -> jax.Array:
  """p + u in :func:`pair_dtype`: the weight whose norm SWR takes."""
  dtype = pair_dtype(param, update)
  return param.astype(dtype) + update.astype(dtype)


def frobenius_norm(weight: jax.Array) -> jax.Array:
  """The float32 Frobenius norm of one weight."""
  # sqrt(sum(w**2)) with no ravel: a ravel of a kernel sharded on any axis but
  # the first makes XLA all-gather it, where a plain sum only all-reduces.
  weight = weight.astype(compute_dtype(weight))
  return jnp.sqrt(jnp.sum(jnp.square(weight))).astype(jnp.float32)


def weight_norms(
  leaves: Sequence[jax.Array] | Mapping[int, jax.Array],
  found: Sequence[ResolvedLayer],
) -> jax.Array:
  """Float32 Frobenius norm of every layer's weight, in layer order."""
  return stack(layer_norms(leaves, found))


def layer_norms(
  leaves: Sequence[jax.Array] | Mapping[int, jax.Array],
  found: Sequence[ResolvedLayer],
) -> list[jax.Array]:
  """The float32 norm of each layer's weight, a scalar per layer.

  A layer without a weight (a normalization layer without a scale) has norm 0,
  which :func:`swr` leaves unscaled. The slices of a stacked weight get their
  norms from one reduction over the leaf's trailing axes.
  """
  per_slice: dict[int, tuple[list[jax.Array], tuple[int, ...]]] = {}
  norms = []
  for layer in found:
    if layer.weight_index is None:
      norms.append(jnp.zeros([], jnp.float32))
    elif not layer.stack_index:
      norms.append(frobenius_norm(leaves[layer.weight_index]))
    else:
      if layer.weight_index not in per_slice:
        weight = leaves[layer.weight_index]
        depth = len(layer.stack_index)
        per_slice[layer.weight_index] = (
          scalars(slice_norms(weight, depth).reshape(-1)),
          weight.shape[:depth],
        )
      slices, shape = per_slice[layer.weight_index]
      norms.append(slices[np.ravel_multi_index(layer.stack_index, shape)])
  return norms


def stack(values: Sequence[jax.Array]) -> jax.Array:
  """Per-layer scalars as one float32 vector (empty for no layers)."""
  if not values:
    return jnp.zeros([0], jnp.float32)
  return jnp.stack(values)


def scalars(vector: jax.Array, chunk: int = 64) -> list[jax.Array]:
  """The entries of a per-layer vector as scalars, from a few kernels.

  ``vector[i]`` would put the offset ``i`` into the kernel that rescales
  layer i, so XLA compiles one kernel per layer (about 10 ms each on
  XLA:CPU: 40 s at 1,000 layers) where same-shaped layers could share one.
  A variadic reduce returns ``chunk`` scalars from one kernel, and the
  rescaling kernels then differ only in their operands. Exact: the reduce
  takes the max of each entry and itself.
  """
  result: list[jax.Array] = []
  for start in range(0, vector.shape[0], chunk):
    pairs = tuple(
      jnp.stack([entry, entry]) for entry in vector[start : start + chunk]
    )
    lowest = tuple(jnp.array(-jnp.inf, vector.dtype) for _ in pairs)
    result.extend(
      jax.lax.reduce(
        pairs, lowest, lambda a, b: tuple(map(jnp.maximum, a, b)), (0,)
      )
    )
  return result


def slice_norms(weight: jax.Array, depth: int) -> jax.Array:
  """Float32 norms of the slices of a weight stacked on ``depth`` axes."""
  weight = weight.astype(compute_dtype(weight))
  own_axes = tuple(range(depth, weight.ndim))
  return jnp.sqrt(jnp.sum(jnp.square(weight), axis=own_axes)).astype(
    jnp.float32
  )
