"""The PPO agent's network: a shared ReLU torso and one output layer.

The torso is two ReLU Dense layers of ``width`` units on the flattened
observation, or, for image observations (MinAtar's), a 16-channel 3x3 conv
and a 128-unit Dense layer. One output Dense layer carries the actor's
logits in its first ``num_actions`` units and the critic's value in its
last: the two heads are initialised separately (orthogonal, scale 0.01 and
1, as PureJaxRL) but share that layer so that the network is a chain, which
is what ReDo's incoming/outgoing weights and SWR's proportional rescaling
are defined on. ReLU replaces PureJaxRL's tanh, which is not positively
homogeneous.

SWR keeps a chain's function up to one positive factor on its output, the
product of every layer's factor (Theorem 1): enough for a classifier's
argmax, not for an actor-critic. A factor below 1 on the logits flattens
the policy (its entropy rises; above 1, sharpens it) and scales the value,
at every step; with the output layer's norm held near its initial ~1, the
critic cannot reach values of order 100 (SWR 1e-3 stalled CartPole near
60). Separate policy and value output layers would not help: both read the
torso, whose factors scale them alike. So by default (``--swr-head-coef
0``) the output layer is left out of SWR's pull and absorbs the torso's
factors instead (``examples.rl.agent.keep_outputs``): the torso's norms are
bounded as the paper's, and the logits and the value are exactly those of
the optimizer's step. ``--swr-head-coef`` > 0 restores the paper's rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _head_init(num_actions: int) -> Callable[..., jax.Array]:
  """The actor's columns at scale 0.01, the critic's at 1 (PureJaxRL)."""

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32):
    actor_key, critic_key = jax.random.split(key)
    fan_in = shape[0]
    actor = nn.initializers.orthogonal(0.01)(
      actor_key, (fan_in, num_actions), dtype
    )
    critic = nn.initializers.orthogonal(1.0)(critic_key, (fan_in, 1), dtype)
    return jnp.concatenate([actor, critic], axis=1)

  return init


class ActorCritic(nn.Module):
  """A shared ReLU torso and one output layer: the logits, then the value.

  Each hidden layer's ReLU output is sown into the ``"activations"``
  collection (apply with ``mutable="activations"`` to read them), in forward
  order: what the dormant-unit metric and ReDo look at.

  Attributes:
    num_actions: the number of discrete actions.
    network: ``"mlp"`` (flattened input) or ``"cnn"`` (``[h, w, c]`` input).
    width: the MLP's hidden units.
  """

  num_actions: int
  network: str = "mlp"
  width: int = 64

  @nn.compact
  def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    hidden_init = nn.initializers.orthogonal(math.sqrt(2.0))
    x = obs.astype(jnp.float32)
    if self.network == "cnn":
      conv = nn.Dense(16, kernel_init=hidden_init, name="conv")
      x = self._hidden(conv(_patches_3x3(x)))
      x = self._hidden(
        nn.Dense(128, kernel_init=hidden_init)(x.reshape(x.shape[0], -1))
      )
    else:
      x = x.reshape(x.shape[0], -1)
      for _ in range(2):
        x = self._hidden(nn.Dense(self.width, kernel_init=hidden_init)(x))
    out = nn.Dense(
      self.num_actions + 1,
      kernel_init=_head_init(self.num_actions),
      name="head",
    )(x)
    return out[:, :-1], out[:, -1]

  def _hidden(self, x: jax.Array) -> jax.Array:
    x = nn.relu(x)
    self.sow("activations", "hidden", x)
    return x


def _patches_3x3(x: jax.Array) -> jax.Array:
  """``[b, h, w, c] -> [b, h, w, 9 c]``: each pixel's 3x3 neighbourhood.

  A Dense layer on these is a 3x3 "SAME" convolution. Written so because
  XLA:CPU computes an ``nn.Conv``'s weight gradient about 6 times slower
  inside a loop (and every step here runs inside ``lax.scan``) than outside
  one, measured with jax 0.10; as a matmul it is fast everywhere.
  """
  height, width = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate(
    [
      padded[:, i : i + height, j : j + width]
      for i in range(3)
      for j in range(3)
    ],
    axis=-1,
  )


def apply_with_activations(
  network: ActorCritic, params: Any, obs: jax.Array
) -> tuple[tuple[jax.Array, jax.Array], list[jax.Array]]:
  """``(logits, value)`` on ``obs`` and the hidden layers' ReLU outputs.

  The activations are in forward order, one ``[batch, ..., units]`` array
  per hidden layer (all layers but the output layer).
  """
  outputs, state = network.apply({"params": params}, obs, mutable="activations")
  return outputs, list(state["activations"]["hidden"])
