"""Small networks that are not chains: the shapes SWR meets in practice.

A pre-LN transformer with a ReLU MLP, a U-Net-like net that joins a skip by
concatenation, and a SwiGLU MLP block in a residual stream, each in Flax Linen
(``PreLNReLU``, ``UNetLike``, ``SwiGLU``) and in Flax NNX (``PreLNReLUNnx``,
``UNetLikeNnx``, ``SwiGLUNnx``: the same layers, sizes and initialisers).
Tests and ``python -m examples.paper.beyond_chains`` use them next to the zoos'
ResNet-18 and ViT (``examples/models/linen.py``, ``examples/models/nnx.py``).

NNX builds parameters eagerly, so the NNX constructors take the size of the
input's last axis and ``rngs``::

  model = blocks.SwiGLUNnx(6, rngs=nnx.Rngs(0))
  logits = model(x)  # x: [batch, 6]
"""

from __future__ import annotations

from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp

from examples.models.nnx import List

# Linen.


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


# NNX.


class PreLNReLUBlockNnx(nnx.Module):
  """h + MHA(LN(h)), then h + Linear(ReLU(Linear(LN(h)))): one block."""

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
      heads, dim, decode=False, deterministic=True, rngs=rngs
    )
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.mlp_in = nnx.Linear(dim, mlp_dim, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_dim, dim, rngs=rngs)

  def __call__(self, h: jax.Array) -> jax.Array:
    h = h + self.attn(self.norm1(h))
    return h + self.mlp_out(nnx.relu(self.mlp_in(self.norm2(h))))


class PreLNReLUNnx(nnx.Module):
  """``PreLNReLU`` in NNX: ``embed``, ``blocks[0]``, ``blocks[1]``, ``norm``,
  ``head``; takes ``[batch, tokens, in_features]``."""

  def __init__(self, in_features: int, *, rngs: nnx.Rngs):
    self.embed = nnx.Linear(in_features, 16, rngs=rngs)
    self.blocks = List([PreLNReLUBlockNnx(16, 2, 32, rngs=rngs) for _ in "ab"])
    self.norm = nnx.LayerNorm(16, rngs=rngs)
    self.head = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.embed(x)
    for block in self.blocks:
      h = block(h)
    return self.head(self.norm(h).mean(1))


class UNetLikeNnx(nnx.Module):
  """``UNetLike`` in NNX: ``skip``, ``down``, ``up``, ``out`` (3x3 convs,
  padding SAME), ``head``; takes NHWC images with ``in_channels``."""

  def __init__(self, in_channels: int, *, rngs: nnx.Rngs):
    self.skip = nnx.Conv(in_channels, 4, (3, 3), rngs=rngs)
    self.down = nnx.Conv(4, 8, (3, 3), rngs=rngs)
    self.up = nnx.Conv(8, 4, (3, 3), rngs=rngs)
    self.out = nnx.Conv(8, 4, (3, 3), rngs=rngs)  # up and skip, concatenated
    self.head = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    skip = nnx.relu(self.skip(x))
    down = nnx.avg_pool(skip, (2, 2), (2, 2))
    down = nnx.relu(self.down(down))
    up = jnp.repeat(jnp.repeat(down, 2, axis=1), 2, axis=2)
    up = nnx.relu(self.up(up))
    joined = jnp.concatenate([up, skip], axis=-1)
    out = nnx.relu(self.out(joined))
    return self.head(out.mean((1, 2)))


class SwiGLUNnx(nnx.Module):
  """``SwiGLU`` in NNX: ``embed``, ``norm``, ``gate``, ``value`` (no biases),
  ``proj``, ``head``; takes ``[batch, in_features]``."""

  def __init__(self, in_features: int, *, rngs: nnx.Rngs):
    self.embed = nnx.Linear(in_features, 16, rngs=rngs)
    self.norm = nnx.LayerNorm(16, rngs=rngs)
    self.gate = nnx.Linear(16, 32, use_bias=False, rngs=rngs)
    self.value = nnx.Linear(16, 32, use_bias=False, rngs=rngs)
    self.proj = nnx.Linear(32, 16, rngs=rngs)
    self.head = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.embed(x)
    y = self.norm(h)
    h = h + self.proj(nnx.silu(self.gate(y)) * self.value(y))
    return self.head(nnx.relu(h))
