"""Small Linen networks that are not chains: the shapes SWR meets in practice.

A pre-LN transformer with a ReLU MLP, a U-Net-like net that joins a skip by
concatenation, and a SwiGLU MLP block in a residual stream. Tests and
``python -m examples.beyond_chains`` use them next to the zoo's ResNet-18 and
ViT (``examples/models/linen.py``).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class PreLNReLU(nn.Module):
  """A pre-LN transformer whose MLP uses ReLU."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(16)(x)
    for _ in range(2):
      h = h + nn.MultiHeadDotProductAttention(num_heads=2)(nn.LayerNorm()(h))
      h = h + nn.Dense(16)(nn.relu(nn.Dense(32)(nn.LayerNorm()(h))))
    return nn.Dense(3)(nn.LayerNorm()(h).mean(1))


class UNetLike(nn.Module):
  """Down, up, and a skip joined by concatenation."""

  @nn.compact
  def __call__(self, x):
    skip = nn.relu(nn.Conv(4, (3, 3))(x))
    down = nn.avg_pool(skip, (2, 2), (2, 2))
    down = nn.relu(nn.Conv(8, (3, 3))(down))
    up = jnp.repeat(jnp.repeat(down, 2, axis=1), 2, axis=2)
    up = nn.relu(nn.Conv(4, (3, 3))(up))
    joined = jnp.concatenate([up, skip], axis=-1)
    out = nn.relu(nn.Conv(4, (3, 3))(joined))
    return nn.Dense(3)(out.mean((1, 2)))


class SwiGLU(nn.Module):
  """A SwiGLU MLP block in a residual stream."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(16)(x)
    y = nn.LayerNorm()(h)
    gate = nn.silu(nn.Dense(32, use_bias=False)(y))
    h = h + nn.Dense(16)(gate * nn.Dense(32, use_bias=False)(y))
    return nn.Dense(3)(nn.relu(h))
