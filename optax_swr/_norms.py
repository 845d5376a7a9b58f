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


def frobenius_norm(
  weight: jax.Array, scale: jax.Array | None = None
) -> jax.Array:
  """The float32 Frobenius norm of one weight, right for any float32 entries.

  The entries are multiplied by a power of two before they are squared, so
  that weights whose squares would leave float32's range (entries below
  about 1e-19 or above 1.8e19) still get their norm; a power of two keeps the
  scaling exact, so in range the result is the plain sqrt(sum(w**2)).

  Args:
    weight: the weight, of any shape and float dtype.
    scale: that power of two, from :func:`power_of_two_scale` of a value near
      the norm (SWR uses the reference norm): one pass over the weight.
      ``None`` takes it from max |w|, a second pass.

  Returns:
    The norm as a float32 scalar.
  """
  # sqrt(sum(w**2)) with no ravel: a ravel of a kernel sharded on any axis but
  # the first makes XLA all-gather it, where a plain sum only all-reduces.
  weight = weight.astype(compute_dtype(weight))
  if scale is None:
    scale = power_of_two_scale(jnp.max(jnp.abs(weight), initial=0.0))
  scale = scale.astype(weight.dtype)
  norm = jnp.sqrt(jnp.sum(jnp.square(weight * scale))) / scale
  return norm.astype(jnp.float32)


def power_of_two_scale(magnitude: jax.Array) -> jax.Array:
  """The float32 powers of two that bring ``magnitude`` into [1, 2).

  1 where ``magnitude`` is 0, subnormal, inf or NaN; at most 2**126, so the
  scale stays a normal float32. Read from the exponent bits: a few integer
  ops, where ``jnp.frexp`` and ``jnp.ldexp`` take about twenty each.
  """
  bits = jax.lax.bitcast_convert_type(
    jnp.asarray(magnitude, jnp.float32), jnp.int32
  )
  exponent = (bits >> 23) & 0xFF  # Biased: 2**(exponent - 127).
  usable = (exponent > 0) & (exponent < 0xFF)
  exponent = jnp.where(usable, exponent, 127)
  scale_exponent = jnp.clip(254 - exponent, 1, 254)
  return jax.lax.bitcast_convert_type(scale_exponent << 23, jnp.float32)


def weight_norms(
  leaves: Sequence[jax.Array] | Mapping[int, jax.Array],
  found: Sequence[ResolvedLayer],
  near: jax.Array | None = None,
) -> jax.Array:
  """Float32 Frobenius norm of every layer's weight, in layer order."""
  return stack(layer_norms(leaves, found, near))


def layer_norms(
  leaves: Sequence[jax.Array] | Mapping[int, jax.Array],
  found: Sequence[ResolvedLayer],
  near: jax.Array | None = None,
) -> list[jax.Array]:
  """The float32 norm of each layer's weight, a scalar per layer.

  A layer without a weight (a normalization layer without a scale) has norm 0,
  which :func:`swr` leaves unscaled. The slices of a stacked weight get their
  norms from one reduction over the leaf's trailing axes.

  Args:
    leaves: the params' leaves (or the weights, by leaf index).
    found: the layers.
    near: per layer, a value near its norm (SWR's reference norms): the
      weights are then scaled by a power of two near its inverse before
      squaring, one pass over each weight (see :func:`frobenius_norm`);
      ``None`` takes the scale from max |w|, a second pass.
  """
  scales = None if near is None else unstack(power_of_two_scale(near))
  per_slice: dict[int, tuple[list[jax.Array], tuple[int, ...]]] = {}
  norms = []
  for index, layer in enumerate(found):
    if layer.weight_index is None:
      norms.append(jnp.zeros([], jnp.float32))
    elif not layer.stack_index:
      scale = None if scales is None else scales[index]
      norms.append(frobenius_norm(leaves[layer.weight_index], scale))
    else:
      if layer.weight_index not in per_slice:
        weight = leaves[layer.weight_index]
        depth = len(layer.stack_index)
        slice_scales = None
        if scales is not None:
          slice_scales = _slice_scales(
            found, scales, layer.weight_index, weight.shape[:depth]
          )
        per_slice[layer.weight_index] = (
          unstack(slice_norms(weight, depth, slice_scales).reshape(-1)),
          weight.shape[:depth],
        )
      slices, shape = per_slice[layer.weight_index]
      norms.append(slices[np.ravel_multi_index(layer.stack_index, shape)])
  return norms


def _slice_scales(
  found: Sequence[ResolvedLayer],
  scales: Sequence[jax.Array],
  weight_index: int,
  shape: tuple[int, ...],
) -> jax.Array:
  """The scales of a stacked weight's slices, in the stack's shape."""
  by_slice = {
    layer.stack_index: scale
    for layer, scale in zip(found, scales)
    if layer.weight_index == weight_index
  }
  one = jnp.ones([], jnp.float32)  # A slice that is no layer.
  return jnp.stack(
    [by_slice.get(index, one) for index in np.ndindex(*shape)]
  ).reshape(shape)


def stack(values: Sequence[jax.Array]) -> jax.Array:
  """Per-layer scalars as one float32 vector (empty for no layers)."""
  if not values:
    return jnp.zeros([0], jnp.float32)
  return jnp.stack(values)


def unstack(vector: jax.Array, chunk: int = 64) -> list[jax.Array]:
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
    result.extend(jax.lax.reduce(pairs, lowest, _pairwise_max, (0,)))
  return result


def _pairwise_max(
  a: tuple[jax.Array, ...], b: tuple[jax.Array, ...]
) -> tuple[jax.Array, ...]:
  # One function object for every call: jax caches the reducer's trace by it,
  # and op-by-op (jax.disable_jit) calls would otherwise compile it each time.
  return tuple(map(jnp.maximum, a, b))


def slice_norms(
  weight: jax.Array, depth: int, scales: jax.Array | None = None
) -> jax.Array:
  """Float32 norms of the slices of a weight stacked on ``depth`` axes.

  ``scales`` (of the stack's shape) as in :func:`frobenius_norm`.
  """
  weight = weight.astype(compute_dtype(weight))
  own_axes = tuple(range(depth, weight.ndim))
  if scales is None:
    scales = power_of_two_scale(
      jnp.max(jnp.abs(weight), axis=own_axes, initial=0.0)
    )
  scales = scales.astype(weight.dtype)
  broadcast = scales.reshape(scales.shape + (1,) * len(own_axes))
  norms = jnp.sqrt(jnp.sum(jnp.square(weight * broadcast), axis=own_axes))
  return (norms / scales).astype(jnp.float32)
