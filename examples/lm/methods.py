"""The language-model methods, by name: each an optax chain built per run.

A method's learning rate and coefficient are arrays, not Python floats, so
that one compiled step trains every (learning rate, coefficient, seed) of a
grid at once under ``jax.vmap`` (:mod:`examples.lm.training`).

* ``adam``: Adam, nothing else.
* ``adamw``: AdamW (``optax.adamw``); the coefficient is the decoupled
  weight decay, on matrices only (nanoGPT's convention: no decay on biases,
  LayerNorm gains or the temperature).
* ``swr``: Adam + exact SWR: the layers traced from the model that returns
  log-probabilities, so the traced equations keep the loss itself (the
  temperature remedy, ``examples/lm/model.py``).
* ``swr_logits``: Adam + exact SWR traced from the logits: Theorem 1's
  proportional logits, which changes the loss through the logits' scale.
* ``swr_chain_rule``: Adam + SWR with the paper's chain-rule factors on the
  same layers, without their equations: every norm is pulled back, and the
  function changes at each step (like the hyperball).
* ``adamh``: Adam + :func:`optax_swr.baselines.hyperball`: every matrix
  projected back onto the sphere of its initial norm after each update.
* ``swr_adamw``: AdamW (decay ``swr_adamw_decay``) + exact SWR (``swr``'s).
* ``l2_init``: :func:`optax_swr.baselines.l2_init` before Adam.
* ``snp``: Adam; at each new task the params move toward their initial
  values, ``theta <- (1 - coef) theta + coef theta_0`` (the continual
  protocol applies it, :mod:`examples.lm.permuted_vocab`).

Every SWR variant uses the fast form (``swr(..., deferred=True)``, then
:func:`optax_swr.rescale_params` after the update); ``coef`` is then both
``lambda_f`` and ``lambda_c``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax

import optax_swr
from optax_swr import baselines


@dataclasses.dataclass(frozen=True)
class Spec:
  """What a method's coefficient is, for flags and tables.

  Attributes:
    flag: the flag that lists its coefficient's values; None for a method
      with only a learning rate.
    default: the default values of that flag.
    swr: which traced layers its SWR uses: "exact", "logits", "chain_rule",
      or None for no SWR.
  """

  flag: str | None
  default: tuple[float, ...] = ()
  swr: str | None = None


METHODS: dict[str, Spec] = {
  "adam": Spec(None),
  "adamw": Spec("--adamw", (0.01, 0.1, 1.0)),
  "swr": Spec("--swr", (1e-3, 1e-2, 1e-1), "exact"),
  "swr_logits": Spec("--swr", (1e-3, 1e-2, 1e-1), "logits"),
  "swr_chain_rule": Spec("--swr", (1e-3, 1e-2, 1e-1), "chain_rule"),
  "adamh": Spec(None),
  "swr_adamw": Spec("--swr", (1e-3, 1e-2, 1e-1), "exact"),
  "l2_init": Spec("--l2-init", (1e-4, 1e-3, 1e-2)),
  "snp": Spec("--snp", (0.1, 0.3, 0.6)),
}


@dataclasses.dataclass(frozen=True)
class Traced:
  """The model's layers as ``swr`` takes them, traced once.

  Attributes:
    exact: traced from the log-probability output (keeps the loss).
    logits: traced from the logits (keeps them proportional).
  """

  exact: optax_swr.Layers
  logits: optax_swr.Layers

  def for_method(self, name: str) -> optax_swr.Layers | None:
    """The layers a method's SWR uses, or None for a method without SWR."""
    kind = METHODS[name].swr
    if kind is None:
      return None
    if kind == "logits":
      return self.logits
    return self.exact.chain_rule() if kind == "chain_rule" else self.exact


def matrices(params: Any) -> Any:
  """True for every leaf with at least two dimensions."""
  return jax.tree.map(lambda leaf: leaf.ndim >= 2, params)


def build(
  name: str,
  lr: Any,
  coef: Any,
  traced: Traced,
  swr_adamw_decay: float = 0.1,
) -> optax.GradientTransformation:
  """The optimizer of method ``name`` at learning rate ``lr``.

  Args:
    name: a key of :data:`METHODS`.
    lr: the learning rate, a float or a traced scalar.
    coef: the method's coefficient (see :data:`METHODS`); ignored by
      methods without one.
    traced: the model's layers (:class:`Traced`).
    swr_adamw_decay: ``swr_adamw``'s weight decay.

  Returns:
    The optax transformation; SWR variants are deferred (apply
    :func:`optax_swr.rescale_params` after ``optax.apply_updates``).
  """
  if name not in METHODS:
    raise ValueError(
      f"--methods: unknown method {name!r}; choose from {', '.join(METHODS)}"
    )
  if name == "adamw":
    return optax.adamw(lr, weight_decay=coef, mask=matrices)
  if name == "adamh":
    return optax.chain(optax.adam(lr), baselines.hyperball())
  if name == "l2_init":
    return optax.chain(baselines.l2_init(coef), optax.adam(lr))
  layers = traced.for_method(name)
  if layers is None:
    return optax.adam(lr)
  base = (
    optax.adamw(lr, weight_decay=swr_adamw_decay, mask=matrices)
    if name == "swr_adamw"
    else optax.adam(lr)
  )
  return optax.chain(base, optax_swr.swr(coef, layers=layers, deferred=True))


def uses_swr(name: str) -> bool:
  """Whether the method's state holds a deferred SWR to apply."""
  return METHODS[name].swr is not None
