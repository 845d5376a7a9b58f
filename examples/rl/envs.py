"""The gymnax environments the PPO agent plays, and what it reads from them.

The agent needs ``reset(key, params)``, ``step(key, state, action, params)``
(which resets ended episodes, as gymnax's do) and ``action_space(params)``;
a wrapper with those three (``examples.rl.continual.PaddedMinAtar``) plays
as well as a gymnax environment. Needs the [rl] extra (gymnax).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

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
