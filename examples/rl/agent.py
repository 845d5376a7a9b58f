"""The PPO agent: its network, its optimizer, and the state it trains.

:func:`make_agent` builds the network, and a method (its optimizer, its
intervention between updates, its step hook) from the registry of
``examples.methods``; :func:`new_agent` draws a fresh agent from a key;
:class:`RunnerState` is what ``examples.rl.train``'s ``train`` carries from
one update to the next, and :func:`without_envs` takes an agent off its
environments so that it can go on with other ones.

SWR's methods (``swr``, ``swr_redo``) keep the network's outputs exactly
with the output layer's coefficient at 0 (``--swr-head-coef``, the
default): see :func:`keep_outputs`.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
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
    hook_state: the state of the method's step hook (:func:`loop_hook`;
      continual backprop's utilities and ages), ``None`` without one or
      before ``train`` made it (from the params it gets).
  """

  params: Any
  opt_state: Any
  initial_params: Any
  updates: jax.Array
  hook_state: Any = None


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
  ``--swr-head-coef``; at 0, :func:`keep_outputs`), the coefficients of
  ``config.coefs(method)``, and step hooks that recycle every
  ``--redo-every`` updates (counted in optimizer steps).
  """
  setup = methods.TrainingSetup(
    layers,
    head=layers[-1:],
    lr=config.lr,
    eps=1e-5,
    max_grad_norm=config.max_grad_norm,
    redo_every=config.redo_every * config.steps_per_update,
  )
  built = methods.build(method, config.coefs(method), setup)
  if config.keeps_outputs(method):
    built = dataclasses.replace(built, tx=keep_outputs(built.tx, layers))
  return built


def loop_hook(method: methods.Method) -> methods.StepHook | None:
  """The step hook ``train`` runs after each optimizer step, if any.

  A method's own (``cbp`` every step; ``swr_redo`` every ``--redo-every``
  updates, at the last minibatch step of the update), unless it has an
  intervention: ``train`` runs that between updates instead (``redo``,
  whose hook and intervention are the same recycling).
  """
  return None if method.intervene is not None else method.step_hook


def keep_outputs(
  tx: optax.GradientTransformation, layers: optax_swr.Layers
) -> optax.GradientTransformation:
  """``tx`` (ending in SWR, the output layer's lambda 0) keeping the outputs.

  SWR multiplies a chain's output by ``C``, the product of its layers'
  factors (Theorem 1 keeps the argmax, not the scale). With one output
  layer for the actor's logits and the critic's value, that flattens or
  sharpens the policy and scales the value at every step, also with the
  output layer's own lambda at 0: its weight then keeps the base update,
  but its input is still the torso's output, scaled by the torso's
  factors. Here the output layer's weight and bias are divided by ``C``
  after SWR's step: the torso keeps SWR's factors (its norms bounded, as
  the paper's), the output layer takes their inverse (it grows as the
  torso shrinks; SWR does not bound it), and the logits and the value are
  those of the base update, up to float rounding. The SWR state records
  the factors applied (the output layer's ``1 / C``).

  Args:
    tx: ``optax.chain(..., optax_swr.swr(...))`` over ``layers``, the last
      of them (the output layer) with lambda 0.
    layers: the network's layers, in forward order.

  Returns:
    The transformation; its state is ``tx``'s.
  """
  head = layers[-1]

  def update(updates: Any, state: Any, params: Any = None):
    updates, state = tx.update(updates, state, params)
    scale = optax.tree.get(state, "cumulative_scales")[-1]

    def undo(path: Any, update: Any, param: Any) -> Any:
      if _path(path) not in (head.weight, head.bias):
        return update
      # p + u' becomes (p + u') / scale.
      return (update + (1 - scale) * param) / scale

    updates = jax.tree_util.tree_map_with_path(undo, updates, params)
    return updates, _with_output_factor(state, 1 / scale)

  return optax.GradientTransformation(tx.init, update)


def _path(key_path: Any) -> tuple[Any, ...]:
  return tuple(getattr(key, "key", key) for key in key_path)


def _with_output_factor(state: Any, factor: jax.Array) -> Any:
  """``state`` whose SWRState records ``factor`` more on the output layer."""

  def record(node: Any) -> Any:
    if not isinstance(node, optax_swr.SWRState):
      return node
    last = lambda x: x.at[-1].multiply(factor)
    return node._replace(
      layer_scales=last(node.layer_scales),
      cumulative_scales=last(node.cumulative_scales),
      weight_norms=last(node.weight_norms),
    )

  is_swr = lambda node: isinstance(node, optax_swr.SWRState)
  return jax.tree.map(record, state, is_leaf=is_swr)


def new_agent(
  network: ActorCritic,
  tx: optax.GradientTransformation,
  obs_shape: Sequence[int],
  key: jax.Array,
  hook: methods.StepHook | None = None,
) -> RunnerState:
  """A new agent without environments (``train`` resets them), from ``key``.

  ``train(key, n)`` starts from ``new_agent(..., key, hook)``; passing the
  runner state instead lets every call of a jitted ``train`` take the same
  input structure (one compilation). ``hook`` is the method's
  :func:`loop_hook`: without it, ``train`` makes the hook's state itself
  (the same), but its output then differs in structure from its input.
  """
  agent_key, key = jax.random.split(key)
  params = network.init(agent_key, jnp.zeros((1, *obs_shape)))["params"]
  train_state = TrainState(
    params=params,
    opt_state=tx.init(params),
    initial_params=params,
    updates=jnp.zeros((), jnp.int32),
    hook_state=None if hook is None else hook.init(params),
  )
  return RunnerState(train_state, None, None, None, key)
