"""PPO's training function: rollout, GAE, the clipped loss, the updates.

A compact PPO in the style of PureJaxRL (Lu et al., 2022): the rollout of
vmapped environments, GAE and the epochs of minibatch updates are one update,
``lax.scan`` runs the updates, and the seeds are vmapped, so a whole run is
one XLA program. The methods that fight the loss of plasticity plug in as
optimizer transforms, as interventions on the params every few updates
(Shrink & Perturb, ReDo), or as step hooks run after optimizer steps on
their minibatch's activations (continual backprop, SWR + ReDo), all from
the registry of ``examples.methods`` (see ``examples.rl.agent.make_method``).

The learning rate is constant, so that ``train`` can continue a run, on the
same or another environment with the same observation and action shapes
(see :func:`make_train` and :func:`examples.rl.agent.without_envs`).
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from examples import methods
from examples.rl import envs
from examples.rl.agent import RunnerState
from examples.rl.agent import TrainState
from examples.rl.agent import loop_hook
from examples.rl.agent import make_agent
from examples.rl.agent import new_agent
from examples.rl.config import Config
from examples.rl.models import ActorCritic
from examples.rl.models import apply_with_activations
import optax_swr
from optax_swr import metrics


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
    value_error: the mean squared error of the critic's value against the
      rollout's GAE return targets on it (the value of the params after the
      update, the targets of the values before it).
  """

  returns: jax.Array
  episodes: jax.Array
  weight_norms: jax.Array
  layer_norms: jax.Array
  dormant_fraction: jax.Array
  effective_rank: jax.Array
  entropy: jax.Array
  value_error: jax.Array


Train = Callable[..., tuple[RunnerState, Metrics]]


def make_train(config: Config, env: Any, env_params: Any, method: str) -> Train:
  """PPO with ``method`` on ``env``: the function that trains, not jitted.

  ``train(start, num_updates, env_params=None) -> (runner_state, metrics)``:
  ``start`` is a PRNG key (a new agent on new environments) or a
  :class:`RunnerState` (go on from it, its own output included; with
  ``agent.without_envs``, on new environments). ``num_updates`` is static.
  ``env_params`` replaces the ``env_params`` given here, with the same
  structure: an argument, so that it can differ per seed under ``vmap`` (a
  per-seed change of the environment) and change between calls without a
  new compile. Jit it, and vmap it over keys for seeds::

    train = make_train(config, env, env_params, "swr")
    run = jax.jit(jax.vmap(functools.partial(train, num_updates=100)))
    runner_state, metrics = run(jax.random.split(jax.random.key(0), 3))

  Args:
    config: the run's configuration.
    env: a gymnax environment or a wrapper of one: ``reset(key, params)``,
      ``step(key, state, action, params)`` (which resets ended episodes, as
      gymnax's do) and ``action_space(params)``.
    env_params: its parameters.
    method: one of :data:`examples.rl.config.METHODS`.

  Returns:
    ``train``; its metrics are a :class:`Metrics` of ``[num_updates]``
    arrays.
  """
  network, built, layers = make_agent(config, env, env_params, method)
  default_env_params = env_params
  tx, intervene, hook = built.tx, built.intervene, loop_hook(built)
  obs_shape = envs.observation_shape(env, env_params)
  reset_envs = jax.vmap(env.reset, in_axes=(0, None))
  step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))

  def env_functions(env_params: Any):
    """``with_new_envs`` and ``env_step`` on environments with ``env_params``."""

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
      obs, env_state, reward, done = envs.step_outputs(
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

    return with_new_envs, env_step

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

  def minibatch_step(fresh, train_state: TrainState, minibatch):
    """One optimizer step, then the method's step hook where it is due."""
    (batch, advantages, targets), step = minibatch
    grads = jax.grad(loss_fn)(train_state.params, batch, advantages, targets)
    updates, opt_state = tx.update(
      grads, train_state.opt_state, train_state.params
    )
    params = optax.apply_updates(train_state.params, updates)
    after = train_state.replace(params=params, opt_state=opt_state)
    if hook is not None:
      after = after_step(train_state, after, batch.obs, fresh, step)
    return after, None

  def after_step(before, after, obs, fresh, step) -> TrainState:
    """The hook after the ``step``-th (from 0) optimizer step of an update.

    On ``obs``' activations under ``before``'s params (the step's own
    forward pass) and the update's fresh draw of the params, ``fresh``,
    where the steps of the whole run, counted from 1, are a multiple of
    ``hook.every``. One draw per update, not per step, made continual
    backprop twice as fast on CartPole (51,000 -> 103,000 steps/s, 8
    seeds; the orthogonal initialisers are QR decompositions). Each
    replaced unit takes its own entries of the draw, and a unit is replaced
    at most once an update while its maturity (100 steps) exceeds the steps
    of an update (16 by default). On a CPU shared with other jobs, set
    ``OPENBLAS_NUM_THREADS=1``: OpenBLAS's threads made one QR of the
    MinAtar torso's 1600 x 128 kernel take 2 s instead of 5 ms, and
    continual backprop there 18 times slower than vanilla instead of 1.4.
    """

    def run(after: TrainState) -> TrainState:
      _, activations = apply_with_activations(network, before.params, obs)
      inputs = methods.InterventionInputs(
        params=after.params,
        opt_state=after.opt_state,
        initial_params=None,
        fresh_params=fresh,
        activations=activations,
      )
      params, opt_state, hook_state = hook.apply(inputs, after.hook_state)
      return after.replace(
        params=params, opt_state=opt_state, hook_state=hook_state
      )

    if hook.every == 1:
      return run(after)
    done = after.updates * config.steps_per_update + step + 1
    return jax.lax.cond(done % hook.every == 0, run, lambda s: s, after)

  def run_epochs(train_state: TrainState, key, fresh, batch) -> TrainState:
    """``update_epochs`` passes over the rollout in random minibatches.

    ``fresh``: a fresh draw of the params for the step hook, or None.
    """
    step = functools.partial(minibatch_step, fresh)
    # Each minibatch's optimizer step within the update, from 0.
    steps = jnp.arange(config.steps_per_update).reshape(
      config.update_epochs, config.num_minibatches
    )

    def epoch(carry, epoch_steps):
      train_state, key = carry
      key, permute_key = jax.random.split(key)
      order = jax.random.permutation(permute_key, config.batch_size)
      minibatches = jax.tree.map(
        lambda x: x[order].reshape(
          config.num_minibatches, config.minibatch_size, *x.shape[1:]
        ),
        batch,
      )
      train_state, _ = jax.lax.scan(
        step, train_state, (minibatches, epoch_steps)
      )
      return (train_state, key), None

    (train_state, _), _ = jax.lax.scan(epoch, (train_state, key), steps)
    return train_state

  def between_updates(train_state: TrainState, key, obs) -> TrainState:
    """The method's intervention, if any, every few updates (see Config)."""
    if intervene is None:
      return train_state

    def apply_intervention(s: TrainState) -> TrainState:
      activations = None
      if methods.REGISTRY[method].needs_activations:
        _, activations = apply_with_activations(network, s.params, obs)
      params, opt_state = intervene(
        methods.InterventionInputs(
          params=s.params,
          opt_state=s.opt_state,
          initial_params=s.initial_params,
          fresh_params=network.init(key, obs[:1])["params"],
          activations=activations,
        )
      )
      return s.replace(params=params, opt_state=opt_state)

    return jax.lax.cond(
      train_state.updates % config.intervene_every(method) == 0,
      apply_intervention,
      lambda s: s,
      train_state,
    )

  def update(env_step, runner_state: RunnerState, _):
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
    probe = flat[0].obs[: config.minibatch_size]
    fresh = None
    if hook is not None:
      fresh = network.init(hook_key, probe[:1])["params"]
    train_state = run_epochs(train_state, epoch_key, fresh, flat)
    train_state = train_state.replace(updates=train_state.updates + 1)
    train_state = between_updates(train_state, hook_key, probe)
    measured = _measure(
      network,
      train_state.params,
      layers,
      (probe, flat[2][: config.minibatch_size]),
      config.dormant_tau,
      ended,
    )
    runner_state = runner_state._replace(train_state=train_state, key=key)
    return runner_state, measured

  def train(
    start: Any, num_updates: int, env_params: Any = None
  ) -> tuple[RunnerState, Metrics]:
    with_new_envs, env_step = env_functions(
      default_env_params if env_params is None else env_params
    )
    if isinstance(start, RunnerState):
      runner_state = start
    else:
      runner_state = new_agent(network, tx, obs_shape, start, hook)
    if runner_state.env_state is None:
      runner_state = with_new_envs(runner_state)
    train_state = runner_state.train_state
    if hook is not None and train_state.hook_state is None:
      train_state = train_state.replace(
        hook_state=hook.init(train_state.params)
      )
      runner_state = runner_state._replace(train_state=train_state)
    step = functools.partial(update, env_step)
    return jax.lax.scan(step, runner_state, None, num_updates)

  return train


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
  probe: tuple[jax.Array, jax.Array],
  dormant_tau: float,
  ended: tuple[jax.Array, jax.Array],
) -> Metrics:
  """The metrics of one update.

  ``ended`` holds, per rollout step, the summed return and the number of the
  episodes that ended; the plasticity metrics, the entropy and the value
  error are measured on ``probe``: a minibatch of the rollout's observations
  and their GAE return targets, with the params after the update.
  """
  obs, targets = probe
  ended_sum, ended_count = jax.tree.map(jnp.sum, ended)
  (logits, value), activations = apply_with_activations(network, params, obs)
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
    value_error=jnp.mean((value - targets) ** 2),
  )
