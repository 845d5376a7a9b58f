"""The PPO agent: its network, its optimizer, and the state it trains.

:func:`make_agent` builds the network, and a method (its optimizer and its
intervention between updates) from the registry of ``examples.methods``;
:func:`new_agent` draws a fresh agent from a key; :class:`RunnerState` is
what ``examples.rl.train``'s ``train`` carries from one update to the next,
and :func:`without_envs` takes an agent off its environments so that it can
go on with other ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from flax import struct
import jax
import jax.numpy as jnp
import optax

from examples import methods
from examples.rl import envs
from examples.rl.config import Config
from examples.rl.config import check_method
from examples.rl.models import ActorCritic
import optax_swr


class TrainState(struct.PyTreeNode):
  """What the agent learns and keeps; arrays only, so orbax saves it as is.

  Attributes:
    params: the network's params.
    opt_state: the optimizer's state (``SWRState`` included for ``swr``).
    initial_params: the params at initialisation (Shrink & Perturb's target).
    updates: PPO updates done so far (int32 scalar).
  """

  params: Any
  opt_state: Any
  initial_params: Any
  updates: jax.Array


class RunnerState(NamedTuple):
  """What ``train`` carries from one update to the next.

  Attributes:
    train_state: the agent.
    env_state: the vmapped environments' states (``None``: reset them at the
      start of ``train``, see :func:`without_envs`).
    obs: their current observations, ``[num_envs, ...]``.
    episode_returns: the return so far of each environment's episode.
    key: the PRNG key of what follows.
  """

  train_state: TrainState
  env_state: Any
  obs: jax.Array | None
  episode_returns: jax.Array | None
  key: jax.Array


def without_envs(runner_state: RunnerState) -> RunnerState:
  """The agent without its environments, to continue on another one.

  ``train`` resets the environments of the runner state it gets when they are
  missing, so ``make_train(config, other_env, ...)(without_envs(state), n)``
  continues the same agent (params, optimizer state, counters) on
  ``other_env``, which must have the same observation shape and actions.
  """
  return runner_state._replace(env_state=None, obs=None, episode_returns=None)


def make_agent(
  config: Config, env: Any, env_params: Any, method: str
) -> tuple[ActorCritic, methods.Method, optax_swr.Layers]:
  """The network, ``method``'s optimizer and intervention, and the layers.

  Args:
    config: the run's configuration.
    env: a gymnax environment, or a wrapper with ``reset``, ``step`` and
      ``action_space``.
    env_params: its parameters.
    method: one of :data:`examples.rl.config.METHODS`.

  Returns:
    ``(network, method, layers)``: ``method`` is the registry's
    ``examples.methods.Method`` (``method.tx``, the optimizer, and
    ``method.intervene``); ``layers`` are in forward order, as
    ``optax_swr.layers_from_linen`` traced them.
  """
  check_method(method)
  shape = envs.observation_shape(env, env_params)
  kind = config.network
  if kind == "auto":
    kind = "cnn" if len(shape) == 3 else "mlp"
  network = ActorCritic(envs.num_actions(env, env_params), kind, config.width)
  obs = jnp.zeros((1, *shape))
  variables = network.init(jax.random.key(0), obs)
  layers = optax_swr.layers_from_linen(network, variables, obs)
  return network, make_method(config, method, layers), layers


def make_method(
  config: Config, method: str, layers: optax_swr.Layers
) -> methods.Method:
  """``method`` from ``examples.methods``' registry, built for this agent.

  On PureJaxRL's Adam (``eps=1e-5``, the gradient's global norm clipped to
  ``config.max_grad_norm`` first), with the output layer as the head (SWR's
  ``--swr-head-coef``) and the coefficients of ``config.coefs(method)``.
  """
  setup = methods.TrainingSetup(
    layers,
    head=layers[-1:],
    lr=config.lr,
    eps=1e-5,
    max_grad_norm=config.max_grad_norm,
  )
  return methods.build(method, config.coefs(method), setup)


def new_agent(
  network: ActorCritic,
  tx: optax.GradientTransformation,
  obs_shape: Sequence[int],
  key: jax.Array,
) -> RunnerState:
  """A new agent without environments (``train`` resets them), from ``key``.

  ``train(key, n)`` starts from ``new_agent(..., key)``; passing the runner
  state instead lets every call of a jitted ``train`` take the same input
  structure (one compilation).
  """
  agent_key, key = jax.random.split(key)
  params = network.init(agent_key, jnp.zeros((1, *obs_shape)))["params"]
  train_state = TrainState(
    params=params,
    opt_state=tx.init(params),
    initial_params=params,
    updates=jnp.zeros((), jnp.int32),
  )
  return RunnerState(train_state, None, None, None, key)
