# Copyright 2026 The optax_swr Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""The fast step: SWR's factors applied to the params after the update."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_swr import _norms
from optax_swr import _swr
from optax_swr import _warnings


def rescale_params(params: Any, opt_state: Any) -> tuple[Any, Any]:
  r"""Applies the factors of ``swr(..., deferred=True)`` to the new params.

  The fast form of SWR's step, applied after ``optax.apply_updates`` as
  ``optax.projections`` are. With ``deferred=True``, ``swr`` passes the base
  optimizer's update :math:`u` through and keeps each layer's factors in its
  state; this function multiplies each new param :math:`p + u` by its factor,
  so the params become :math:`c (p + u)`: the chain's result up to float
  rounding. Under one ``jit``, XLA writes :math:`c (p + u)` in place of
  donated params in one pass, where the chain's rescaled update
  :math:`(c - 1) p + c u` needs a param-sized temporary (on a CPU, in a step
  whose params and state are donated, that costs more than Adam itself).

  The factors are then set to 1 in the returned state, so a step in which
  ``swr`` did not run (``optax.MultiSteps`` between two emitted steps, a
  step ``optax.apply_if_finite`` skipped) rescales nothing.

  Args:
    params: the params after ``optax.apply_updates``, with the structure of
      the params ``swr`` was given.
    opt_state: the optimizer state that ``tx.update`` returned for this
      step, containing the state of an ``swr(..., deferred=True)``.

  Returns:
    ``(params, opt_state)``: the rescaled params, and the state with the
    applied factors set to 1.

  Raises:
    ValueError: if ``opt_state`` holds no ``swr`` state, or only ones that
      rescale the updates themselves (``deferred=False``), or factors for
      another params tree.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_swr
    >>> params = {"Dense_0": {"kernel": jnp.ones((2, 2))}}
    >>> tx = optax.chain(optax.sgd(0.1), optax_swr.swr(0.5, deferred=True))
    >>> opt_state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> @jax.jit
    ... def step(params, opt_state, grads):
    ...   updates, opt_state = tx.update(grads, opt_state, params)
    ...   params = optax.apply_updates(params, updates)
    ...   return optax_swr.rescale_params(params, opt_state)
    >>> params, opt_state = step(params, opt_state, grads)
    >>> print(params["Dense_0"]["kernel"])
    [[0.95 0.95]
     [0.95 0.95]]
  """
  states = _swr_states(opt_state)
  if not states:
    raise ValueError(
      "rescale_params: `opt_state` holds no SWRState. Pass the state that "
      "tx.update returned, for a tx that contains "
      "optax_swr.swr(..., deferred=True)."
    )
  _check_not_in_schedule_free(opt_state)
  leaves, treedef = jax.tree.flatten(params)
  pending = [
    state.deferred_factors for state in states if state.deferred_factors
  ]
  if not pending:
    if not leaves:
      return params, opt_state
    raise ValueError(
      "rescale_params: the swr in `opt_state` rescales the updates itself "
      "(deferred=False), so the params are already rescaled. For the fast "
      "step build it with optax_swr.swr(..., deferred=True); otherwise drop "
      "this call."
    )
  for factors in pending:
    _check_factors(factors, leaves)
    leaves = [
      leaf if factor is None else _scaled(leaf, factor)
      for leaf, factor in zip(leaves, factors)
    ]
  return jax.tree.unflatten(treedef, leaves), _factors_applied(opt_state)


def has_deferred_swr(opt_state: Any) -> bool:
  """Whether ``opt_state`` holds the state of an ``swr(deferred=True)``."""
  return any(state.deferred_factors for state in _swr_states(opt_state))


def _is_swr_state(node: Any) -> bool:
  return isinstance(node, _swr.SWRState)


def _swr_states(opt_state: Any) -> list[_swr.SWRState]:
  nodes = jax.tree.leaves(opt_state, is_leaf=_is_swr_state)
  return [node for node in nodes if _is_swr_state(node)]


def _check_not_in_schedule_free(opt_state: Any) -> None:
  """Raises where a deferred swr sits inside ``optax.contrib.schedule_free``.

  Its factors would rescale the evaluated params but not schedule-free's
  sequence z, from which the next params are built: the norms then grow
  unchecked (about 3x and 6x in 20 steps in the FAQ's example).
  """
  from optax import contrib  # pylint: disable=g-import-not-at-top

  is_wrapper = lambda node: isinstance(node, contrib.ScheduleFreeState)
  for node in jax.tree.leaves(opt_state, is_leaf=is_wrapper):
    if is_wrapper(node) and has_deferred_swr(node.base_optimizer_state):
      raise ValueError(
        "rescale_params: the deferred swr runs inside "
        "optax.contrib.schedule_free, whose sequence z its factors cannot "
        "reach, so the weight norms would grow unchecked. Use "
        "swr(..., deferred=False) there (see the FAQ on schedule-free)."
      )


def _factors_applied(opt_state: Any) -> Any:
  """``opt_state`` with every deferred factor set to 1."""

  def reset(node: Any) -> Any:
    if not _is_swr_state(node) or not node.deferred_factors:
      return node
    ones = jax.tree.map(jnp.ones_like, node.deferred_factors)
    return node._replace(deferred_factors=ones)

  return jax.tree.map(reset, opt_state, is_leaf=_is_swr_state)


def _check_factors(factors: tuple[Any, ...], leaves: list[Any]) -> None:
  """Raises where the factors were made for another params tree."""
  fix = (
    "pass the params that tx.update was given, after optax.apply_updates "
    "(swr inside optax.masked or optax.multi_transform sees part of them: "
    "use swr(deferred=False) there)."
  )
  if len(factors) != len(leaves):
    raise ValueError(
      f"rescale_params: `opt_state` holds factors for {len(factors)} "
      f"params leaves but `params` has {len(leaves)}; {fix}"
    )
  for leaf, factor in zip(leaves, factors):
    if factor is None:
      continue
    leading = jnp.shape(leaf)[: jnp.ndim(factor)]
    if jnp.ndim(factor) > jnp.ndim(leaf) or any(
      f not in (1, d) for f, d in zip(jnp.shape(factor), leading)
    ):
      raise ValueError(
        f"rescale_params: a factor of shape {jnp.shape(factor)} does not "
        f"fit a params leaf of shape {jnp.shape(leaf)}; {fix}"
      )


def _scaled(leaf: jax.Array, factor: jax.Array) -> jax.Array:
  """``factor * leaf`` in at least float32, in the leaf's dtype.

  The factor's axes are the leaf's leading ones: a stack's slices, or the
  members of an ensemble whose ``tx.update`` was vmapped.
  """
  factor = jnp.reshape(
    factor, jnp.shape(factor) + (1,) * (jnp.ndim(leaf) - jnp.ndim(factor))
  )
  dtype = _norms.compute_dtype(leaf)
  return (factor.astype(dtype) * leaf.astype(dtype)).astype(leaf.dtype)


class NotFusedWarning(UserWarning):
  """Deprecated: no longer raised.

  The fused step that raised it is replaced by ``swr(..., deferred=True)``
  and :func:`rescale_params`, which need no fusion. Kept for one release so
  that filters naming it keep working.
  """


def update_and_apply(
  tx: optax.GradientTransformation,
  grads: Any,
  opt_state: Any,
  params: Any,
  **extra_args: Any,
) -> tuple[Any, Any]:
  """Deprecated: ``tx.update``, ``optax.apply_updates``, then
  :func:`rescale_params` where ``tx`` has a deferred ``swr``.

  The result equals the chain's up to float rounding, with either form of
  ``swr``; only ``swr(..., deferred=True)`` makes it the fast step.

  Args:
    tx: the optimizer.
    grads: the gradients, with the structure of ``params``.
    opt_state: the state of ``tx``.
    params: the current params.
    **extra_args: passed on to ``tx.update``.

  Returns:
    ``(new_params, new_opt_state)``.
  """
  _warnings.deprecated(
    "update_and_apply",
    "tx.update + optax.apply_updates (+ rescale_params)",
    "call optax_swr.rescale_params(params, opt_state) after "
    "optax.apply_updates",
  )
  updates, opt_state = tx.update(grads, opt_state, params, **extra_args)
  params = optax.apply_updates(params, updates)
  if has_deferred_swr(opt_state):
    params, opt_state = rescale_params(params, opt_state)
  return params, opt_state
