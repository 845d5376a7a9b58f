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

if TYPE_CHECKING:
  from optax_swr._layers import ResolvedLayer


def compute_dtype(leaf: jax.Array) -> jnp.dtype:
  """At least float32, so bf16/f16 norms neither overflow nor lose bits."""
  return jnp.promote_types(leaf.dtype, jnp.float32)


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
  """Float32 Frobenius norm of every layer's weight, in layer order.

  A layer without a weight (a normalization layer without a scale) has norm 0,
  which :func:`swr` leaves unscaled.
  """
  if not found:
    return jnp.zeros([0], jnp.float32)
  return jnp.stack(
    [
      jnp.zeros([], jnp.float32)
      if layer.weight_index is None
      else frobenius_norm(leaves[layer.weight_index])
      for layer in found
    ]
  )
