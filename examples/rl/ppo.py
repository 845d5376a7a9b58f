"""PPO on any gymnax environment, one jitted function, with SWR and baselines.

A compact PPO in the style of PureJaxRL (Lu et al., 2022): the rollout of
vmapped environments, GAE and the epochs of minibatch updates are one update,
``lax.scan`` runs the updates, and the seeds are vmapped, so a whole run is
one XLA program. The methods that fight the loss of plasticity plug in as
optimizer transforms or as actions on the params every few updates:

* ``vanilla``: clip the gradient's global norm, then Adam.
* ``swr``: the same, then ``optax_swr.swr(--swr-coef)`` on the layers traced
  by ``optax_swr.layers_from_linen``.
* ``l2`` / ``l2_init``: ``optax_swr.baselines.l2`` / ``l2_init`` before the
  clipping, as terms of the loss.
* ``snp``: Shrink & Perturb toward the initial params,
  ``baselines.shrink_perturb(--snp-coef)``, after every ``--snp-every``-th
  update.
* ``redo``: ReDo (Sokar et al., 2023), ``baselines.redo`` with the torso's
  activations on a minibatch and a fresh initialisation, after every
  ``--redo-every``-th update.

The network is a shared torso (two ReLU Dense layers of ``--width`` units on
the flattened observation; for image observations, MinAtar's, a 16-channel
3x3 conv and a 128-unit Dense layer) and one output Dense layer whose first
``num_actions`` units are the actor's logits and whose last is the critic's
value. The two heads are initialised separately (orthogonal, scale 0.01 and
1, as PureJaxRL) but share that layer so that the network is a chain, which
is what ReDo's incoming/outgoing weights and SWR's proportional rescaling
are defined on. SWR multiplies the logits by one positive factor per step,
so it keeps the greedy action but sharpens or flattens the policy; ReLU
replaces PureJaxRL's tanh, which is not positively homogeneous.

The learning rate is constant, so that ``train`` can continue a run, on the
same or another environment with the same observation and action shapes
(see :func:`make_train` and :func:`without_envs`). From the repository root::

  python -m examples.rl.ppo --env CartPole-v1 --total-steps 200000 \\
      --seeds 3 --methods vanilla,swr --out /tmp/cartpole.json
  python -m examples.rl.ppo --env SpaceInvaders-MinAtar --num-envs 64
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import dataclasses
import functools
import importlib.metadata
import math
import time
from typing import Any, NamedTuple

from flax import struct
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import cli
from examples.paper import protocols
import optax_swr
from optax_swr import baselines
from optax_swr import metrics

try:
  import gymnax
except ImportError:  # The [rl] extra; make_env says how to install it.
  gymnax = None

METHODS = ("vanilla", "swr", "l2", "l2_init", "snp", "redo")
NETWORKS = ("auto", "mlp", "cnn")


def _flag(default: Any, help_text: str) -> Any:
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run needs besides the environment and the method.

  Every field is a flag of the script (``num_envs`` is ``--num-envs``).
  """

  total_steps: int = _flag(200_000, "environment steps per seed")
  num_envs: int = _flag(8, "environments run in parallel per seed")
  num_steps: int = _flag(32, "rollout length per environment and update")
  update_epochs: int = _flag(4, "passes over each rollout")
  num_minibatches: int = _flag(4, "minibatches per pass")
  lr: float = _flag(1e-3, "Adam's learning rate (constant)")
  gamma: float = _flag(0.99, "discount")
  gae_lambda: float = _flag(0.95, "GAE's lambda")
  clip_eps: float = _flag(0.2, "PPO's clipping of the ratio and the value")
  ent_coef: float = _flag(0.01, "weight of the entropy bonus")
  vf_coef: float = _flag(0.5, "weight of the value loss")
  max_grad_norm: float = _flag(0.5, "clip of the gradient's global norm")
  network: str = _flag(
    "auto", "mlp, cnn, or auto: cnn for [height, width, channels] inputs"
  )
  width: int = _flag(64, "units of each of the MLP's two hidden layers")
  swr_coef: float = _flag(1e-4, "swr: lambda")
  swr_head_coef: float | None = _flag(
    None, "swr: lambda of the output layer (default: --swr-coef)"
  )
  l2_coef: float = _flag(1e-4, "l2: coef / 2 ||theta||^2 in the loss")
  l2_init_coef: float = _flag(1e-4, "l2_init: coef ||theta - theta_0||^2")
  snp_coef: float = _flag(0.2, "snp: weight of theta_0 in the interpolation")
  snp_every: int = _flag(50, "snp: act after every this many updates")
  redo_tau: float = _flag(0.1, "redo: dormancy threshold")
  redo_every: int = _flag(50, "redo: act after every this many updates")
  dormant_tau: float = _flag(0.1, "threshold of the dormant-fraction metric")

  def __post_init__(self):
    if self.network not in NETWORKS:
      raise ValueError(
        f"Config: network={self.network!r}; choose one of {NETWORKS}."
      )
    if self.batch_size % self.num_minibatches:
      raise ValueError(
        f"Config: num_envs * num_steps = {self.batch_size} transitions per "
        f"update do not split into num_minibatches={self.num_minibatches} "
        "equal minibatches; change one of them."
      )
    for name in ("snp_every", "redo_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"Config: {name} must be >= 1.")

  @property
  def batch_size(self) -> int:
    """Transitions per update, over all environments."""
    return self.num_envs * self.num_steps

  @property
  def minibatch_size(self) -> int:
    return self.batch_size // self.num_minibatches

  @property
  def num_updates(self) -> int:
    """Updates that ``total_steps`` environment steps make (at least 1)."""
    return max(1, self.total_steps // self.batch_size)


# --- Environments. ----------------------------------------------------------


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


# --- The network. -----------------------------------------------------------


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


# --- The agent: network, optimizer, state. ---------------------------------


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
) -> tuple[ActorCritic, optax.GradientTransformation, optax_swr.Layers]:
  """The network, the optimizer of ``method`` and the network's layers.

  Args:
    config: the run's configuration.
    env: a gymnax environment, or a wrapper with ``reset``, ``step`` and
      ``action_space``.
    env_params: its parameters.
    method: one of :data:`METHODS`.

  Returns:
    ``(network, tx, layers)``; ``layers`` are in forward order, as
    ``optax_swr.layers_from_linen`` traced them.
  """
  check_method(method)
  shape = observation_shape(env, env_params)
  kind = config.network
  if kind == "auto":
    kind = "cnn" if len(shape) == 3 else "mlp"
  network = ActorCritic(num_actions(env, env_params), kind, config.width)
  obs = jnp.zeros((1, *shape))
  variables = network.init(jax.random.key(0), obs)
  layers = optax_swr.layers_from_linen(network, variables, obs)
  return network, make_optimizer(config, method, layers), layers


def make_optimizer(
  config: Config, method: str, layers: optax_swr.Layers
) -> optax.GradientTransformation:
  """Clipping and Adam (``eps=1e-5``, PureJaxRL's), with ``method``'s parts."""
  adam = [
    optax.clip_by_global_norm(config.max_grad_norm),
    optax.adam(config.lr, eps=1e-5),
  ]
  if method == "swr":
    if config.swr_head_coef is None:
      return optax.chain(*adam, optax_swr.swr(config.swr_coef, layers=layers))
    head = optax_swr.swr(
      config.swr_coef,
      layers=layers,
      classifier=1,
      classifier_coef=config.swr_head_coef,
    )
    return optax.chain(*adam, head)
  if method == "l2":  # Loss terms: their gradient is clipped with the loss's.
    return optax.chain(baselines.l2(config.l2_coef), *adam)
  if method == "l2_init":
    return optax.chain(baselines.l2_init(config.l2_init_coef), *adam)
  return optax.chain(*adam)


def check_method(method: str) -> None:
  """A clear error for an unknown method or one this optax_swr lacks."""
  if method not in METHODS:
    raise ValueError(
      f"--methods: unknown method {method!r}; choose from: "
      f"{', '.join(METHODS)}."
    )
  if method == "redo" and not hasattr(baselines, "redo"):
    raise ValueError(
      "redo needs optax_swr.baselines.redo, which this version of optax_swr "
      "does not have; run the other methods, or update optax_swr."
    )


# --- Training. --------------------------------------------------------------


class Transition(NamedTuple):
  obs: jax.Array
  action: jax.Array
  log_prob: jax.Array
  value: jax.Array
  reward: jax.Array
  done: jax.Array


class Metrics(NamedTuple):
  """Measured once per update (``train`` returns them stacked per update).

  Attributes:
    returns: the mean return of the episodes that ended during the update's
      rollout; NaN if none did.
    episodes: how many ended.
    weight_norms: the sum of the layers' weight norms.
    layer_norms: each layer's weight norm, ``[num_layers]``.
    dormant_fraction: tau-dormant units of the torso on a minibatch.
    effective_rank: srank of the last hidden layer's features on it.
    entropy: the policy's mean entropy on it.
  """

  returns: jax.Array
  episodes: jax.Array
  weight_norms: jax.Array
  layer_norms: jax.Array
  dormant_fraction: jax.Array
  effective_rank: jax.Array
  entropy: jax.Array


Train = Callable[[Any, int], tuple[RunnerState, Metrics]]


def make_train(config: Config, env: Any, env_params: Any, method: str) -> Train:
  """PPO with ``method`` on ``env``: the function that trains, not jitted.

  ``train(start, num_updates) -> (runner_state, metrics)``: ``start`` is a
  PRNG key (a new agent on new environments) or a :class:`RunnerState` (go
  on from it; with :func:`without_envs`, on new environments).
  ``num_updates`` is static. Jit it, and vmap it over keys for seeds::

    train = make_train(config, env, env_params, "swr")
    run = jax.jit(jax.vmap(functools.partial(train, num_updates=100)))
    runner_state, metrics = run(jax.random.split(jax.random.key(0), 3))

  Args:
    config: the run's configuration.
    env: a gymnax environment or a wrapper of one: ``reset(key, params)``,
      ``step(key, state, action, params)`` (which resets ended episodes, as
      gymnax's do) and ``action_space(params)``.
    env_params: its parameters.
    method: one of :data:`METHODS`.

  Returns:
    ``train``; its metrics are a :class:`Metrics` of ``[num_updates]``
    arrays.
  """
  network, tx, layers = make_agent(config, env, env_params, method)
  obs_shape = observation_shape(env, env_params)
  reset_envs = jax.vmap(env.reset, in_axes=(0, None))
  step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))

  def with_new_envs(runner_state: RunnerState) -> RunnerState:
    key, reset_key = jax.random.split(runner_state.key)
    obs, env_state = reset_envs(
      jax.random.split(reset_key, config.num_envs), env_params
    )
    return runner_state._replace(
      env_state=env_state,
      obs=obs,
      episode_returns=jnp.zeros(config.num_envs),
      key=key,
    )

  def env_step(runner_state: RunnerState, _):
    params = runner_state.train_state.params
    key, action_key, step_key = jax.random.split(runner_state.key, 3)
    logits, value = network.apply({"params": params}, runner_state.obs)
    action = jax.random.categorical(action_key, logits)
    log_prob = _log_prob(logits, action)
    obs, env_state, reward, done = _step_outputs(
      step_envs(
        jax.random.split(step_key, config.num_envs),
        runner_state.env_state,
        action,
        env_params,
      )
    )
    episode_returns = runner_state.episode_returns + reward
    ended = (jnp.sum(jnp.where(done, episode_returns, 0.0)), jnp.sum(done))
    transition = Transition(
      runner_state.obs, action, log_prob, value, reward, done
    )
    runner_state = runner_state._replace(
      env_state=env_state,
      obs=obs,
      episode_returns=jnp.where(done, 0.0, episode_returns),
      key=key,
    )
    return runner_state, (transition, ended)

  def loss_fn(params, batch: Transition, advantages, targets):
    logits, value = network.apply({"params": params}, batch.obs)
    log_prob = _log_prob(logits, batch.action)
    value_clipped = batch.value + jnp.clip(
      value - batch.value, -config.clip_eps, config.clip_eps
    )
    value_loss = 0.5 * jnp.mean(
      jnp.maximum((value - targets) ** 2, (value_clipped - targets) ** 2)
    )
    ratio = jnp.exp(log_prob - batch.log_prob)
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    actor_loss = -jnp.mean(
      jnp.minimum(
        ratio * advantages,
        jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps) * advantages,
      )
    )
    entropy = jnp.mean(_entropy(logits))
    return actor_loss + config.vf_coef * value_loss - config.ent_coef * entropy

  def minibatch_step(train_state: TrainState, minibatch):
    batch, advantages, targets = minibatch
    grads = jax.grad(loss_fn)(train_state.params, batch, advantages, targets)
    updates, opt_state = tx.update(
      grads, train_state.opt_state, train_state.params
    )
    params = optax.apply_updates(train_state.params, updates)
    return train_state.replace(params=params, opt_state=opt_state), None

  def run_epochs(train_state: TrainState, key, batch) -> TrainState:
    """``update_epochs`` passes over the rollout in random minibatches."""

    def epoch(carry, _):
      train_state, key = carry
      key, permute_key = jax.random.split(key)
      order = jax.random.permutation(permute_key, config.batch_size)
      minibatches = jax.tree.map(
        lambda x: x[order].reshape(
          config.num_minibatches, config.minibatch_size, *x.shape[1:]
        ),
        batch,
      )
      train_state, _ = jax.lax.scan(minibatch_step, train_state, minibatches)
      return (train_state, key), None

    (train_state, _), _ = jax.lax.scan(
      epoch, (train_state, key), None, config.update_epochs
    )
    return train_state

  def between_updates(train_state: TrainState, key, obs) -> TrainState:
    """Shrink & Perturb or ReDo after every ``*_every``-th update."""
    if method == "snp":
      return jax.lax.cond(
        train_state.updates % config.snp_every == 0,
        lambda s: s.replace(
          params=baselines.shrink_perturb(
            s.params, s.initial_params, config.snp_coef
          )
        ),
        lambda s: s,
        train_state,
      )
    if method == "redo":

      def redo(s: TrainState) -> TrainState:
        fresh = network.init(key, obs[:1])["params"]
        _, activations = apply_with_activations(network, s.params, obs)
        params, opt_state, _ = baselines.redo(
          s.params,
          s.opt_state,
          activations,
          layers,
          fresh,
          optimizer=tx,
          tau=config.redo_tau,
        )
        return s.replace(params=params, opt_state=opt_state)

      return jax.lax.cond(
        train_state.updates % config.redo_every == 0,
        redo,
        lambda s: s,
        train_state,
      )
    return train_state

  def update(runner_state: RunnerState, _):
    runner_state, (rollout, ended) = jax.lax.scan(
      env_step, runner_state, None, config.num_steps
    )
    train_state = runner_state.train_state
    _, last_value = network.apply(
      {"params": train_state.params}, runner_state.obs
    )
    advantages, targets = _gae(rollout, last_value, config)
    flat = jax.tree.map(
      lambda x: x.reshape(config.batch_size, *x.shape[2:]),
      (rollout, advantages, targets),
    )
    key, epoch_key, hook_key = jax.random.split(runner_state.key, 3)
    train_state = run_epochs(train_state, epoch_key, flat)
    probe = flat[0].obs[: config.minibatch_size]
    train_state = train_state.replace(updates=train_state.updates + 1)
    train_state = between_updates(train_state, hook_key, probe)
    measured = _measure(
      network, train_state.params, layers, probe, config.dormant_tau, ended
    )
    runner_state = runner_state._replace(train_state=train_state, key=key)
    return runner_state, measured

  def train(start: Any, num_updates: int) -> tuple[RunnerState, Metrics]:
    if isinstance(start, RunnerState):
      runner_state = start
    else:
      runner_state = new_agent(network, tx, obs_shape, start)
    if runner_state.env_state is None:
      runner_state = with_new_envs(runner_state)
    return jax.lax.scan(update, runner_state, None, num_updates)

  return train


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


def _step_outputs(outputs: tuple[Any, ...]) -> tuple[Any, Any, Any, Any]:
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


def _log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
  log_probs = jax.nn.log_softmax(logits)
  return jnp.take_along_axis(log_probs, action[:, None], axis=1)[:, 0]


def _entropy(logits: jax.Array) -> jax.Array:
  log_probs = jax.nn.log_softmax(logits)
  return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def _gae(
  rollout: Transition, last_value: jax.Array, config: Config
) -> tuple[jax.Array, jax.Array]:
  """Generalized advantage estimates and value targets, ``[steps, envs]``."""

  def backward(carry, transition: Transition):
    advantage, next_value = carry
    not_done = 1.0 - transition.done
    delta = (
      transition.reward
      + config.gamma * next_value * not_done
      - transition.value
    )
    advantage = delta + config.gamma * config.gae_lambda * not_done * advantage
    return (advantage, transition.value), advantage

  _, advantages = jax.lax.scan(
    backward,
    (jnp.zeros_like(last_value), last_value),
    rollout,
    reverse=True,
  )
  return advantages, advantages + rollout.value


def _measure(
  network: ActorCritic,
  params: Any,
  layers: optax_swr.Layers,
  obs: jax.Array,
  dormant_tau: float,
  ended: tuple[jax.Array, jax.Array],
) -> Metrics:
  """The metrics of one update.

  ``ended`` holds, per rollout step, the summed return and the number of the
  episodes that ended; the plasticity metrics are measured on ``obs``, a
  minibatch of the rollout's observations, with the params after the update.
  """
  ended_sum, ended_count = jax.tree.map(jnp.sum, ended)
  (logits, _), activations = apply_with_activations(network, params, obs)
  features = activations[-1].reshape(len(obs), -1)
  norms = metrics.layer_norms(params, layers)
  return Metrics(
    returns=jnp.where(
      ended_count > 0, ended_sum / jnp.maximum(ended_count, 1), jnp.nan
    ),
    episodes=ended_count,
    weight_norms=jnp.sum(norms),
    layer_norms=norms,
    dormant_fraction=metrics.dormant_fraction(activations, tau=dormant_tau),
    effective_rank=metrics.effective_rank(features),
    entropy=jnp.mean(_entropy(logits)),
  )


# --- The script. ------------------------------------------------------------


def run_method(
  config: Config,
  env: Any,
  env_params: Any,
  method: str,
  keys: jax.Array,
) -> tuple[Metrics, dict[str, float]]:
  """Trains one method on every seed at once (the keys), in one program.

  Returns:
    The metrics, ``[seed, update, ...]``, and the timings: ``compile_s``,
    ``run_s`` (the compiled program alone) and ``env_steps_per_s`` (all
    seeds' environment steps over ``run_s``).
  """
  train = make_train(config, env, env_params, method)
  run = jax.jit(
    jax.vmap(functools.partial(train, num_updates=config.num_updates))
  )
  start = time.perf_counter()
  compiled = run.lower(keys).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  _, measured = jax.block_until_ready(compiled(keys))
  run_s = time.perf_counter() - start
  env_steps = len(keys) * config.num_updates * config.batch_size
  return measured, {
    "compile_s": compile_s,
    "run_s": run_s,
    "env_steps_per_s": env_steps / run_s,
  }


def versions() -> dict[str, str]:
  """Versions of what produced the results, for the JSON."""
  return {
    **protocols.versions(),
    "gymnax": importlib.metadata.version("gymnax"),
  }


def json_ready(values: Any) -> list[Any]:
  """Nested lists of floats, NaN as None (JSON has no NaN)."""
  array = np.asarray(values, dtype=float)
  return np.where(np.isnan(array), None, array).tolist()


def recent_return(measured: Metrics, fraction: float = 0.1) -> np.ndarray:
  """Per seed, the mean return of the episodes of the last updates.

  Args:
    measured: metrics of ``[seed, update]``.
    fraction: of the updates, counted from the end (at least one update).
  """
  updates = max(1, round(np.shape(measured.returns)[-1] * fraction))
  returns = np.asarray(measured.returns, float)[..., -updates:]
  episodes = np.asarray(measured.episodes, float)[..., -updates:]
  total = np.sum(np.where(episodes > 0, returns * episodes, 0.0), axis=-1)
  count = np.sum(episodes, axis=-1)
  return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def add_config_flags(
  parser: argparse.ArgumentParser, exclude: Sequence[str] = ()
) -> None:
  """A flag per :class:`Config` field (``num_envs``: ``--num-envs``)."""
  for field in dataclasses.fields(Config):
    if field.name in exclude:
      continue
    parser.add_argument(
      "--" + field.name.replace("_", "-"),
      type=float if field.default is None else type(field.default),
      default=field.default,
      help=field.metadata["help"],
    )


def config_from_flags(args: argparse.Namespace, **fixed: Any) -> Config:
  """The :class:`Config` of parsed flags; ``fixed`` fields have no flag."""
  return Config(
    **{
      field.name: getattr(args, field.name)
      for field in dataclasses.fields(Config)
      if field.name not in fixed
    },
    **fixed,
  )


def parse_methods(methods: str) -> list[str]:
  """``"vanilla,swr"`` as a list, each checked with :func:`check_method`."""
  names = [name.strip() for name in methods.split(",") if name.strip()]
  if not names:
    raise ValueError(
      f"--methods: no method given; choose from: {', '.join(METHODS)}."
    )
  for name in names:
    check_method(name)
  return names


def parse_flags(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = cli.parser(__doc__)
  parser.add_argument("--env", default="CartPole-v1", help="gymnax name")
  parser.add_argument(
    "--methods",
    default="vanilla,swr",
    help=f"comma-separated, from {', '.join(METHODS)}",
  )
  parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
  parser.add_argument("--seed", type=int, default=0, help="the first key")
  parser.add_argument("--out", help="write the results to this JSON file")
  add_config_flags(parser)
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error("--seeds must be at least 1")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_flags(argv)
  protocols.check_out_path(args.out)
  config = config_from_flags(args)
  methods = parse_methods(args.methods)
  env, env_params = make_env(args.env)
  keys = jax.random.split(jax.random.key(args.seed), args.seeds)
  _, _, layers = make_agent(config, env, env_params, methods[0])
  results: dict[str, Any] = {
    "config": {
      **dataclasses.asdict(config),
      "env": args.env,
      "seeds": args.seeds,
      "seed": args.seed,
      "num_updates": config.num_updates,
      "layers": [layer.name for layer in layers],
    },
    "versions": versions(),
    "methods": {},
  }
  start = time.perf_counter()
  for method in methods:
    measured, timing = run_method(config, env, env_params, method, keys)
    results["methods"][method] = {
      **{name: json_ready(value) for name, value in measured._asdict().items()},
      **timing,
    }
    final = recent_return(measured)
    print(
      f"{args.env} {method:8s} return (last 10% of updates) "
      f"{np.nanmean(final):7.1f}, seeds {np.round(final, 1).tolist()}; "
      f"{timing['env_steps_per_s']:,.0f} env steps/s (all seeds), "
      f"compiled in {timing['compile_s']:.1f} s",
      flush=True,
    )
  results["wall_time_s"] = time.perf_counter() - start
  if args.out:
    protocols.write_json(args.out, results)
  return results


if __name__ == "__main__":
  main()
