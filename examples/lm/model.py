"""A small pre-LayerNorm GPT for characters, in Flax Linen.

Token and position embeddings (both ``nn.Embed``, so that SWR's trace sees
both as layers and ties their scales rather than pinning the token table),
``depth`` blocks ``x + attn(LN(x))``, ``x + MLP(LN(x))`` with causal
multi-head attention and a GELU MLP, a final LayerNorm and an untied linear
head. No dropout.

What the output is matters to exact SWR (``docs/faq.md``): Theorem 1 keeps
the *logits proportional*, and a positive factor on the logits changes the
cross-entropy (it is a softmax temperature). Two switches:

* ``log_probs=True``: the model returns ``log_softmax(logits)``. Its ``exp``
  is not homogeneous, so the traced equations ask the logits' scale to stay
  1: the loss itself is kept by every SWR step.
* ``temperature=True``: a learnable scalar multiplies the logits (the
  ``temperature`` layer, initialised to 1). With ``log_probs`` it gives the
  equations a free direction: the head's factor is absorbed by the
  temperature, so the head is rescaled and the loss is still kept.

Example::

  model = GPT(vocab_size=84, log_probs=True, temperature=True)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 128), jnp.int32))
  log_p = model.apply(variables, tokens)  # [batch, time, vocab]
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from examples.models import linen


class Temperature(nn.Module):
  """Multiplies its input by a learnable scalar ``kernel`` (initially 1)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.ones, (), x.dtype)
    return x * kernel


class GPT(nn.Module):
  """A character-level decoder: ids ``[B, T]`` to logits ``[B, T, vocab]``.

  Attributes:
    vocab_size: the number of distinct tokens.
    context: the longest sequence (the position table's size).
    dim: the residual stream's width.
    depth: the number of blocks.
    heads: attention heads; must divide ``dim``.
    mlp_dim: hidden units of each MLP (default ``4 * dim``).
    log_probs: return ``log_softmax(logits)`` instead of the logits.
    temperature: multiply the logits by a learnable scalar.
  """

  vocab_size: int
  context: int = 128
  dim: int = 160
  depth: int = 4
  heads: int = 4
  mlp_dim: int | None = None
  log_probs: bool = False
  temperature: bool = False

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    if ids.shape[-1] > self.context:
      raise ValueError(
        f"a sequence of {ids.shape[-1]} tokens is longer than the model's "
        f"context {self.context}"
      )
    positions = jnp.arange(ids.shape[-1])
    x = nn.Embed(self.vocab_size, self.dim, name="tokens")(ids)
    x = x + nn.Embed(self.context, self.dim, name="positions")(positions)
    mask = nn.make_causal_mask(ids)
    for index in range(self.depth):
      x = linen.EncoderBlock(
        self.heads, self.mlp_dim or 4 * self.dim, name=f"blocks_{index}"
      )(x, mask)
    x = nn.LayerNorm(name="norm")(x)
    logits = nn.Dense(self.vocab_size, name="head")(x)
    if self.temperature:
      logits = Temperature(name="temperature")(logits)
    return jax.nn.log_softmax(logits) if self.log_probs else logits


def param_count(params) -> int:
  """The number of scalars in ``params``."""
  return sum(leaf.size for leaf in jax.tree.leaves(params))
