"""The methods every experiment compares, by name: one registry.

A method is an optimizer and, optionally, an *intervention*: something done
to the params (and the optimizer state) between updates, e.g. at a change of
the data (Shrink & Perturb, head reset) or every K updates (ReDo). Each
entry of :data:`REGISTRY` builds a :class:`Method` from its coefficients and
a :class:`TrainingSetup` (the network's layers, the base optimizer); *when*
an intervention runs is the protocol's choice, except for a *step hook*
(:class:`StepHook`: continual backprop every step, ReDo every K steps), which
the experiment engine (``examples/paper/engine.py``) runs inside its training
loop on each batch's activations, with a state of its own.

A new method is one entry: a builder decorated with :func:`register`, as
``adamw``'s::

  @register("adamw", coefs=("weight_decay",))
  def _adamw(coefs, setup):
    \"\"\"AdamW: Adam with decoupled weight decay (optax.adamw).\"\"\"
    return Method(setup.adam(weight_decay=coefs[0]))

Every supervised protocol that takes ``--methods`` then accepts it, once
it has a flag for each coefficient (``examples/paper/protocols.py``,
``examples/paper/task_sequence.py``); the RL agent runs the methods its
``Config`` has flags for.

The supervised protocols (``examples/paper/``) build one per entry::

  setup = methods.TrainingSetup(layers, head=layers[-2:], lr=1e-3)
  method = methods.build("swr", (1e-3, 1e-2), setup)
  tx = method.tx
  engine = engine_lib.Engine(module, tx, layers, hook=method.step_hook)
  # at each change of the data, one lane at a time (vmapped):
  if method.at_task_switch is not None:
    state = engine_lib.intervene(method.at_task_switch, state, initial, fresh)

The RL agent (``examples/rl/agent.py``, ``make_method``) builds its
optimizer and intervention the same way, with PureJaxRL's Adam (``eps=1e-5``,
the gradient clipped first) and its output layer as the head; its ``Config``
maps its flags onto each method's ``coefs`` (``Config.coefs``)::

  setup = methods.TrainingSetup(
    layers, head=layers[-1:], lr=config.lr, eps=1e-5,
    max_grad_norm=config.max_grad_norm,
    redo_every=config.redo_every * config.steps_per_update,
  )
  method = methods.build(name, config.coefs(name), setup)
  # method.tx is the agent's optimizer. Every K updates
  # (config.intervene_every(name)), inside jax.lax.cond, with a fresh draw
  # of the params and, where methods.REGISTRY[name].needs_activations, the
  # torso's activations on a minibatch (examples/rl/train.py):
  params, opt_state = method.intervene(
    methods.InterventionInputs(
      params, opt_state, initial_params, fresh_params, activations
    )
  )

A method with a step hook and no intervention (``cbp``, ``swr_redo``) has
its hook run by the agent's minibatch loop, as by the engine: after each
optimizer step (``hook.every`` of them apart), on that minibatch's
activations (``examples.rl.agent.loop_hook``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
from typing import Any, NamedTuple

import optax

import optax_swr
from optax_swr import baselines

Layers = Sequence[Any]  # optax_swr.Layer values or paths, in forward order.


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
  """What a method is built for: the network's layers and the base optimizer.

  Attributes:
    layers: every layer, in forward order (``optax_swr.layers_from_linen``).
    head: the classifier layers, the end of ``layers`` (SWR's lambda_c, head
      reset).
    lr: Adam's learning rate or schedule.
    eps: Adam's epsilon.
    max_grad_norm: clip the gradient's global norm to this before Adam
      (None: no clipping).
    lr_boundaries: steps where the learning rate drops (``swr_reinit``
      resets its reference norms there).
    redo_every: the updates between two recyclings of the step hooks of
      ``redo`` and ``swr_redo`` (Sokar et al. use 1000 in supervised
      learning).
  """

  layers: Layers
  head: Layers
  lr: optax.ScalarOrSchedule
  eps: float = 1e-8
  max_grad_norm: float | None = None
  lr_boundaries: Sequence[int] = ()
  redo_every: int = 1000

  def adam(self, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """The base optimizer: Adam (AdamW with ``weight_decay``), clipped first."""
    if weight_decay:
      adam = optax.adamw(self.lr, eps=self.eps, weight_decay=weight_decay)
    else:
      adam = optax.adam(self.lr, eps=self.eps)
    if self.max_grad_norm is None:
      return adam
    return optax.chain(optax.clip_by_global_norm(self.max_grad_norm), adam)


class InterventionInputs(NamedTuple):
  """What an intervention may read.

  Attributes:
    params: the current params.
    opt_state: the optimizer's state for them.
    initial_params: the params the network started from (theta_0).
    fresh_params: a fresh initialisation of the same network (a new key at
      every intervention).
    activations: the output of every layer but the last, after its
      activation function, on a batch (``baselines.redo``'s argument); only
      read by methods with ``needs_activations``.

  A step hook gets ``initial_params=None`` (the engine does not carry them)
  and the activations of the batch of the step that just ran, computed with
  the params before its update.
  """

  params: Any
  opt_state: Any
  initial_params: Any
  fresh_params: Any
  activations: Any = None


Intervention = Callable[[InterventionInputs], tuple[Any, Any]]
HookApply = Callable[[InterventionInputs, Any], tuple[Any, Any, Any]]


@dataclasses.dataclass(frozen=True)
class StepHook:
  """What a method does inside the training loop, every ``every`` updates.

  The engine runs it after update ``k`` (counted over the whole run, from 1)
  wherever ``k % every == 0``, inside ``jax.lax.cond``, on one lane.

  Attributes:
    every: the updates between two calls (1: after every update).
    init: ``init(params) -> state``: the hook's own state (continual
      backprop's utilities and ages; ``()`` for none), carried from step to
      step by the engine.
    apply: ``apply(inputs, state) -> (params, opt_state, state)``; see
      :class:`InterventionInputs` for what a hook's inputs hold.
  """

  every: int
  init: Callable[[Any], Any]
  apply: HookApply


@dataclasses.dataclass(frozen=True)
class Method:
  """A method's optimizer and what it does between updates.

  Attributes:
    tx: the optimizer.
    intervene: ``intervene(inputs) -> (params, opt_state)``, run where the
      caller chooses (at a change of the data; the RL agent every K
      updates), or None. Whether it reads ``inputs.activations`` is its
      registry entry's ``needs_activations``.
    step_hook: run by the experiment engine inside its training loop, or
      None.
  """

  tx: optax.GradientTransformation
  intervene: Intervention | None = None
  step_hook: StepHook | None = None

  @property
  def at_task_switch(self) -> Intervention | None:
    """What a supervised protocol runs at each change of the data.

    ``intervene``, unless the method acts inside the training loop: ReDo's
    ``intervene`` is for callers without the engine's loop (the RL agent);
    in the engine its step hook recycles every ``redo_every`` steps instead.
    """
    return None if self.step_hook is not None else self.intervene


Builder = Callable[[Sequence[float], TrainingSetup], Method]


@dataclasses.dataclass(frozen=True)
class Entry:
  """One method of the registry.

  Attributes:
    build: ``build(coefs, setup) -> Method``.
    coefs: the names of its coefficients, in order; a trailing ``?`` marks
      one that may be left out (SWR's lambda_c defaults to lambda_f).
    max_coef: the largest coefficient it accepts (None: no bound).
    summary: one line, for ``--help`` and the docs.
    needs_activations: whether its intervention reads activations.
    layer_norm: whether it trains the model with a LayerNorm before each
      hidden activation (``models.linen.LayerNormMLP``) instead of the plain
      one: the protocols build the model the method names.
  """

  build: Builder
  coefs: tuple[str, ...]
  max_coef: float | None
  summary: str
  needs_activations: bool = False
  layer_norm: bool = False


REGISTRY: dict[str, Entry] = {}


def register(
  name: str,
  coefs: tuple[str, ...] = (),
  max_coef: float | None = None,
  needs_activations: bool = False,
  layer_norm: bool = False,
) -> Callable[[Builder], Builder]:
  """Adds the decorated builder to :data:`REGISTRY` as ``name``.

  Its docstring's first line becomes the entry's summary.
  """

  def add(build: Builder) -> Builder:
    if name in REGISTRY:
      raise ValueError(f"register: a method named {name!r} exists already.")
    summary = (build.__doc__ or name).strip().split("\n")[0]
    REGISTRY[name] = Entry(
      build, coefs, max_coef, summary, needs_activations, layer_norm
    )
    return build

  return add


def build(name: str, coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """The method ``name`` of :data:`REGISTRY`, with ``coefs``, for ``setup``.

  Raises:
    ValueError: for an unknown name, or coefficients that do not fit it
      (how many, or out of ``[0, max_coef]``).
  """
  check_names([name])
  entry = REGISTRY[name]
  required = [c for c in entry.coefs if not c.endswith("?")]
  upper = float("inf") if entry.max_coef is None else entry.max_coef
  if not len(required) <= len(coefs) <= len(entry.coefs) or not all(
    0 <= c <= upper for c in coefs
  ):
    raise ValueError(
      f"{name}: takes the coefficients ({', '.join(entry.coefs)}), each in "
      f"[0, {upper:g}]; got {tuple(coefs)}."
    )
  return entry.build(tuple(coefs), setup)


def names(
  needs_activations: bool = True, layer_norm: bool = False
) -> tuple[str, ...]:
  """Every method's name, in registry order.

  Args:
    needs_activations: False leaves out the methods whose intervention
      reads activations (for protocols that do not record them).
    layer_norm: True includes the methods that train their own model with
      LayerNorms (``Entry.layer_norm``): only protocols that build the model
      a method names may run them.
  """
  return tuple(
    name
    for name, entry in REGISTRY.items()
    if (needs_activations or not entry.needs_activations)
    and (layer_norm or not entry.layer_norm)
  )


def check_names(
  requested: Sequence[str],
  allowed: Sequence[str] | None = None,
  flag: str = "--methods",
) -> None:
  """Raises a ValueError naming ``flag`` for names not in ``allowed``.

  ``allowed`` defaults to every registered method.
  """
  allowed = tuple(REGISTRY) if allowed is None else tuple(allowed)
  unknown = [name for name in requested if name not in allowed]
  if unknown or not requested:
    raise ValueError(
      f"{flag}: unknown {unknown or 'empty list'}; choose from "
      f"{','.join(allowed)}."
    )


# --- The methods. -----------------------------------------------------------


@register("vanilla")
def _vanilla(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """Adam alone."""
  del coefs
  return Method(setup.adam())


@register("l2", coefs=("lambda",))
def _l2(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """Loss + lambda/2 ||theta||^2, its gradient added before Adam."""
  return Method(optax.chain(baselines.l2(coefs[0]), setup.adam()))


@register("l2_init", coefs=("lambda",))
def _l2_init(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """Loss + lambda ||theta - theta_0||^2, its gradient added before Adam."""
  return Method(optax.chain(baselines.l2_init(coefs[0]), setup.adam()))


@register("snp", coefs=("lambda",), max_coef=1.0)
def _snp(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """Shrink & Perturb toward theta_0: (1 - lambda) theta + lambda theta_0."""

  def intervene(inputs: InterventionInputs) -> tuple[Any, Any]:
    params = baselines.shrink_perturb(
      inputs.params, inputs.initial_params, coefs[0]
    )
    return params, inputs.opt_state

  return Method(setup.adam(), intervene)


@register("head_reset")
def _head_reset(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """A fresh draw of the classifier layers (the head)."""
  del coefs

  def intervene(inputs: InterventionInputs) -> tuple[Any, Any]:
    params = baselines.reset_layers(
      inputs.params, inputs.fresh_params, setup.head
    )
    return params, inputs.opt_state

  return Method(setup.adam(), intervene)


def _swr(
  coefs: Sequence[float], setup: TrainingSetup, reset_norms_at: Sequence[int]
) -> Method:
  # A traced Layers value keeps its equations; a tuple of it would drop them.
  layers = setup.layers
  if not isinstance(layers, optax_swr.Layers):
    layers = tuple(layers)
  rescale = optax_swr.swr(
    coefs[0],
    layers=layers,
    classifier=len(setup.head),
    classifier_coef=coefs[-1],
    reset_norms_at=tuple(reset_norms_at),
  )
  return Method(optax.chain(setup.adam(), rescale))


@register("swr", coefs=("lambda_f", "lambda_c?"), max_coef=1.0)
def _swr_plain(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """Adam, then SWR (lambda_f; the head's lambda_c defaults to lambda_f)."""
  return _swr(coefs, setup, reset_norms_at=())


@register("swr_reinit", coefs=("lambda_f", "lambda_c?"), max_coef=1.0)
def _swr_reinit(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """SWR whose reference norms reset where the learning rate drops."""
  return _swr(coefs, setup, reset_norms_at=setup.lr_boundaries)


def _redo_hook(
  tx: optax.GradientTransformation, tau: float, setup: TrainingSetup
) -> StepHook:
  """ReDo every ``setup.redo_every`` steps, on the batch's activations."""

  def apply(inputs: InterventionInputs, state: Any) -> tuple[Any, Any, Any]:
    params, opt_state, _ = baselines.redo(
      inputs.params,
      inputs.opt_state,
      inputs.activations,
      setup.layers,
      inputs.fresh_params,
      optimizer=tx,
      tau=tau,
    )
    return params, opt_state, state

  return StepHook(setup.redo_every, lambda params: (), apply)


@register("redo", coefs=("tau",), needs_activations=True)
def _redo(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """ReDo: recycles the units whose normalized activation is <= tau."""
  tx = setup.adam()
  hook = _redo_hook(tx, coefs[0], setup)

  def intervene(inputs: InterventionInputs) -> tuple[Any, Any]:
    params, opt_state, _ = hook.apply(inputs, ())
    return params, opt_state

  return Method(tx, intervene, hook)


@register("adamw", coefs=("weight_decay",))
def _adamw(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """AdamW: Adam with decoupled weight decay (optax.adamw)."""
  return Method(setup.adam(weight_decay=coefs[0]))


@register("snp_noise", coefs=("shrink", "noise_scale"), max_coef=1.0)
def _snp_noise(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """Ash & Adams' Shrink & Perturb: shrink theta + noise_scale theta_fresh."""
  shrink, noise_scale = coefs

  def intervene(inputs: InterventionInputs) -> tuple[Any, Any]:
    params = baselines.shrink_and_perturb(
      inputs.params,
      inputs.fresh_params,
      shrink=shrink,
      noise_scale=noise_scale,
    )
    return params, inputs.opt_state

  return Method(setup.adam(), intervene)


@register("full_reset")
def _full_reset(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """A fresh network and optimizer state at each change (the reference)."""
  del coefs
  tx = setup.adam()

  def intervene(inputs: InterventionInputs) -> tuple[Any, Any]:
    return inputs.fresh_params, tx.init(inputs.fresh_params)

  return Method(tx, intervene)


# Continual backprop's utility decay and maturity (Dohare et al., 2024).
CBP_DECAY_RATE = 0.99
CBP_MATURITY = 100


@register(
  "cbp", coefs=("replacement_rate",), max_coef=1.0, needs_activations=True
)
def _cbp(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """Continual backprop: every step, fresh units for the least useful ones."""
  tx = setup.adam()

  def init(params: Any) -> Any:
    return baselines.continual_backprop_init(params, setup.layers)

  def apply(inputs: InterventionInputs, state: Any) -> tuple[Any, Any, Any]:
    params, opt_state, state, _ = baselines.continual_backprop(
      inputs.params,
      inputs.opt_state,
      state,
      inputs.activations,
      setup.layers,
      inputs.fresh_params,
      optimizer=tx,
      replacement_rate=coefs[0],
      decay_rate=CBP_DECAY_RATE,
      maturity_threshold=CBP_MATURITY,
    )
    return params, opt_state, state

  return Method(tx, step_hook=StepHook(1, init, apply))


@register(
  "swr_redo",
  coefs=("lambda", "tau", "lambda_c?"),
  max_coef=1.0,
  needs_activations=True,
)
def _swr_redo(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """SWR (lambda) plus ReDo's recycling (tau) every redo_every steps."""
  # A positive rescale keeps every pre-activation's sign: SWR alone cannot
  # revive a dead unit. The head's lambda_c defaults to lambda, as swr's.
  swr_coefs = (coefs[0], *coefs[2:])
  tx = _swr(swr_coefs, setup, reset_norms_at=()).tx
  return Method(tx, step_hook=_redo_hook(tx, coefs[1], setup))


@register("ln", layer_norm=True)
def _ln(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """Adam alone, on the model with a LayerNorm before each activation."""
  del coefs
  return Method(setup.adam())


@register("swr_ln", coefs=("lambda",), max_coef=1.0, layer_norm=True)
def _swr_ln(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """SWR on the model with LayerNorms (lambda 1: normalize-and-project)."""
  # Lyle et al. (2024) project each weight back to its initial norm after
  # every step; SWR at lambda = 1 does that and keeps the function.
  return _swr(coefs[:1], setup, reset_norms_at=())
