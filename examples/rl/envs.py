"""The gymnax environments the PPO agent plays, and what it reads from them.

The agent needs ``reset(key, params)``, ``step(key, state, action, params)``
(which resets ended episodes, as gymnax's do) and ``action_space(params)``;
a wrapper with those three (``examples.rl.continual.PaddedMinAtar``,
:class:`ShiftedObservation`) plays as well as a gymnax environment. Needs the
[rl] extra (gymnax).
"""

from __future__ import annotations

from typing import Any

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

try:
  import gymnax
except ImportError:  # The [rl] extra; make_env says how to install it.
  gymnax = None


def make_env(name: str) -> tuple[Any, Any]:
  """``gymnax.make(name)``, with the valid names in the error."""
  if gymnax is None:
    raise ImportError("examples.rl needs gymnax: pip install 'optax-swr[rl]'.")
  if name not in gymnax.registered_envs:
    raise ValueError(
      f"--env: unknown gymnax environment {name!r}; choose one of: "
      f"{', '.join(gymnax.registered_envs)}."
    )
  return gymnax.make(name)


def observation_shape(env: Any, env_params: Any) -> tuple[int, ...]:
  """The shape of one observation, read from an abstract ``reset``.

  Read from what ``reset`` returns rather than from ``observation_space``,
  so a wrapper that changes the observations needs to change nothing else.
  """
  obs, _ = jax.eval_shape(env.reset, jax.random.key(0), env_params)
  return tuple(obs.shape)


def num_actions(env: Any, env_params: Any) -> int:
  """The number of discrete actions; a clear error for other spaces."""
  space = env.action_space(env_params)
  if not hasattr(space, "n"):
    raise ValueError(
      f"This PPO samples discrete actions, but the environment's action "
      f"space is {type(space).__name__}. Use an environment with a "
      "Discrete action space (CartPole-v1, Acrobot-v1, the MinAtar games)."
    )
  return int(space.n)


def step_outputs(outputs: tuple[Any, ...]) -> tuple[Any, Any, Any, Any]:
  """``(obs, state, reward, done)`` of a gymnax ``step``.

  gymnax 1.0 returns ``terminated`` and ``truncated``, earlier versions (and
  wrappers written for them) one ``done``. A truncated episode counts as
  ended, without bootstrapping from its last observation, as in PureJaxRL.
  """
  if len(outputs) == 6:
    obs, state, reward, terminated, truncated, _ = outputs
    return obs, state, reward, jnp.logical_or(terminated, truncated)
  obs, state, reward, done, _ = outputs
  return obs, state, reward, done


@struct.dataclass
class ShiftParams:
  """The params of a :class:`ShiftedObservation`.

  Attributes:
    env: the wrapped environment's params.
    perm: int32 ``[obs_dim]``: the shifted observation is ``obs[perm] * sign``.
    sign: float32 ``[obs_dim]`` of +1 and -1.
  """

  env: Any
  perm: jax.Array
  sign: jax.Array


class ShiftedObservation:
  """A vector-observation environment seen through a permutation and sign flips.

  The change lives in the params (:class:`ShiftParams`), not in the
  environment, so that one compiled ``train`` plays every phase and seed: a
  phase's params are an argument of ``train``, vmapped over seeds.

  Args:
    env: a gymnax environment with vector observations.
  """

  def __init__(self, env: Any):
    self.env = env

  def reset(self, key: jax.Array, params: ShiftParams):
    obs, state = self.env.reset(key, params.env)
    return _shifted(obs, params), state

  def step(self, key: jax.Array, state: Any, action: Any, params: ShiftParams):
    outputs = self.env.step(key, state, action, params.env)
    return (_shifted(outputs[0], params), *outputs[1:])

  def action_space(self, params: ShiftParams):
    return self.env.action_space(params.env)


def _shifted(obs: jax.Array, params: ShiftParams) -> jax.Array:
  return obs[..., params.perm] * params.sign


def observation_shift(
  env: Any, env_params: Any, seed: int, phase: int
) -> ShiftParams:
  """Phase ``phase``'s shift for ``seed``: the identity at phase 0.

  Drawn from ``(seed, phase)`` alone, so every method sees the same shift.

  Raises:
    ValueError: naming ``--env`` for an environment whose observation is not
      a vector (a permutation of image channels and pixels is not this shift).
  """
  shape = observation_shape(env, env_params)
  if len(shape) != 1:
    raise ValueError(
      f"--env: the observation shift permutes a vector, but this environment's "
      f"observation has shape {shape}; use one with vector observations "
      "(CartPole-v1, Acrobot-v1)."
    )
  size = shape[0]
  if phase == 0:
    perm, sign = np.arange(size), np.ones(size)
  else:
    rng = np.random.default_rng([seed, phase])
    perm, sign = rng.permutation(size), rng.choice([-1.0, 1.0], size)
  return ShiftParams(
    env_params, jnp.asarray(perm, jnp.int32), jnp.asarray(sign, jnp.float32)
  )
