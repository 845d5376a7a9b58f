"""The methods every experiment compares, by name: one registry.

A method is an optimizer and, optionally, an *intervention*: something done
to the params (and the optimizer state) between updates, e.g. at a change of
the data (Shrink & Perturb, head reset) or every K updates (ReDo). Each
entry of :data:`REGISTRY` builds a :class:`Method` from its coefficients and
a :class:`TrainingSetup` (the network's layers, the base optimizer); *when*
an intervention runs is the protocol's choice.

A new method is one entry: a builder decorated with :func:`register`::

  @register("adamw", coefs=("weight_decay",))
  def _adamw(coefs, setup):
    \"\"\"Adam with decoupled weight decay.\"\"\"
    return Method(setup.adam(weight_decay=coefs[0]))

Every protocol that takes ``--methods`` then accepts it (those without
activations skip methods with ``needs_activations``).

The supervised protocols (``examples/paper/``) build one per entry::

  setup = methods.TrainingSetup(layers, head=layers[-2:], lr=1e-3)
  method = methods.build("swr", (1e-3, 1e-2), setup)
  tx = method.tx
  # at each change of the data, on the lane-stacked state:
  params, opt_state = method.intervene(
    methods.InterventionInputs(params, opt_state, initial, fresh)
  )

The RL agent (``examples/rl/agent.py``, ``make_method``) builds its
optimizer and intervention the same way, with PureJaxRL's Adam (``eps=1e-5``,
the gradient clipped first) and its output layer as the head; its ``Config``
maps its flags onto each method's ``coefs`` (``Config.coefs``)::

  setup = methods.TrainingSetup(
    layers, head=layers[-1:], lr=config.lr, eps=1e-5,
    max_grad_norm=config.max_grad_norm,
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
  """

  layers: Layers
  head: Layers
  lr: optax.ScalarOrSchedule
  eps: float = 1e-8
  max_grad_norm: float | None = None
  lr_boundaries: Sequence[int] = ()

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
  """

  params: Any
  opt_state: Any
  initial_params: Any
  fresh_params: Any
  activations: Any = None


Intervention = Callable[[InterventionInputs], tuple[Any, Any]]


@dataclasses.dataclass(frozen=True)
class Method:
  """A method's optimizer and its intervention between updates.

  Attributes:
    tx: the optimizer.
    intervene: ``intervene(inputs) -> (params, opt_state)``, or None for a
      method that only optimizes. Whether it reads ``inputs.activations``
      is its registry entry's ``needs_activations``.
  """

  tx: optax.GradientTransformation
  intervene: Intervention | None = None


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
  """

  build: Builder
  coefs: tuple[str, ...]
  max_coef: float | None
  summary: str
  needs_activations: bool = False


REGISTRY: dict[str, Entry] = {}


def register(
  name: str,
  coefs: tuple[str, ...] = (),
  max_coef: float | None = None,
  needs_activations: bool = False,
) -> Callable[[Builder], Builder]:
  """Adds the decorated builder to :data:`REGISTRY` as ``name``.

  Its docstring's first line becomes the entry's summary.
  """

  def add(build: Builder) -> Builder:
    if name in REGISTRY:
      raise ValueError(f"register: a method named {name!r} exists already.")
    summary = (build.__doc__ or name).strip().split("\n")[0]
    REGISTRY[name] = Entry(build, coefs, max_coef, summary, needs_activations)
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


def names(needs_activations: bool = True) -> tuple[str, ...]:
  """Every method's name, in registry order.

  Args:
    needs_activations: False leaves out the methods whose intervention
      reads activations (for protocols that do not record them).
  """
  return tuple(
    name
    for name, entry in REGISTRY.items()
    if needs_activations or not entry.needs_activations
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


@register("redo", coefs=("tau",), needs_activations=True)
def _redo(coefs: Sequence[float], setup: TrainingSetup) -> Method:
  """ReDo: recycles the units whose normalized activation is <= tau."""
  tx = setup.adam()

  def intervene(inputs: InterventionInputs) -> tuple[Any, Any]:
    params, opt_state, _ = baselines.redo(
      inputs.params,
      inputs.opt_state,
      inputs.activations,
      setup.layers,
      inputs.fresh_params,
      optimizer=tx,
      tau=coefs[0],
    )
    return params, opt_state

  return Method(tx, intervene)
