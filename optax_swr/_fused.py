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

"""The optimizer step with SWR's rescaling fused into applying the update."""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import contextvars
from typing import Any, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import optax

from optax_swr import _norms
from optax_swr import _warnings


class NotFusedWarning(UserWarning):
  """:func:`update_and_apply` could not fuse SWR's scaling into this step.

  The updates that ``swr`` returned did not come out of ``tx`` unchanged:
  ``swr`` ran under ``jax.vmap`` inside ``tx`` (a per-member ensemble), inside
  a ``lax.cond`` (``optax.MultiSteps``, ``optax.apply_if_finite``), or a
  transformation after it changed them (one chained after ``swr``,
  ``optax.contrib.schedule_free``). The step is then computed as
  ``tx.update`` followed by ``optax.apply_updates``, with the same result;
  the message names the cause and the fix. It is raised when the step is
  traced (once per compilation under ``jit``); silence it with
  ``warnings.simplefilter("ignore", optax_swr.NotFusedWarning)``.

  Example:
    >>> import warnings
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_swr
    >>> params = {"Dense_0": {"kernel": jnp.ones((2, 2))}}
    >>> tx = optax.chain(optax_swr.swr(0.5), optax.scale(0.5))
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter("always")
    ...   _ = optax_swr.update_and_apply(tx, grads, tx.init(params), params)
    >>> caught[0].category.__name__
    'NotFusedWarning'
  """


class _Rescaling(NamedTuple):
  """One leaf that ``swr`` left unscaled for :func:`update_and_apply`."""

  update: Any  # The very object swr returned: found again by identity.
  factor: jax.Array  # A scalar, or one per slice of a stacked leaf.
  trace: Any  # Where swr ran: only to say why a leaf did not come back.


class _Recorder:
  """The leaves ``swr`` hands over to :func:`update_and_apply`, by ``id``."""

  def __init__(self) -> None:
    self.rescalings: dict[int, _Rescaling] = {}

  def record(self, update: Any, factor: jax.Array) -> Any:
    """Keeps ``factor`` for ``update`` and returns the leaf to pass on."""
    if id(update) in self.rescalings:
      # One object in two leaves (possible outside jit): tell them apart.
      update = jnp.array(update, copy=True)
    self.rescalings[id(update)] = _Rescaling(update, factor, _trace_state())
    return update


def _trace_state() -> Any:
  """The JAX trace that values made now belong to (vmap's, a cond's...)."""
  return jax.extend.core.get_opaque_trace_state(convention="optax_swr")


_RECORDER: contextvars.ContextVar[_Recorder | None] = contextvars.ContextVar(
  "optax_swr_recorder", default=None
)


def active_recorder() -> _Recorder | None:
  """The recorder of the enclosing :func:`update_and_apply`, if any."""
  return _RECORDER.get()


@contextlib.contextmanager
def _recording() -> Iterator[_Recorder]:
  recorder = _Recorder()
  token = _RECORDER.set(recorder)
  try:
    yield recorder
  finally:
    _RECORDER.reset(token)


def update_and_apply(
  tx: optax.GradientTransformation,
  grads: Any,
  opt_state: Any,
  params: Any,
  **extra_args: Any,
) -> tuple[Any, Any]:
  r"""``tx.update`` then ``optax.apply_updates``, with SWR's scaling fused in.

  With :func:`swr` at the end of ``tx``, ``tx.update`` returns
  :math:`u' = (c - 1) p + c u` so that ``optax.apply_updates`` gives
  :math:`c (p + u)`. The step then reads the base update :math:`u` twice
  (for the norm of :math:`p + u`, and for :math:`u'`), and XLA keeps it in a
  param-sized temporary: on a CPU, in a step whose params and state are
  donated, allocating that buffer at every call costs more than Adam itself.
  Here ``swr`` hands over :math:`u` and its factors instead, and the new
  params are computed as :math:`c (p + u)`, so XLA writes :math:`p + u` in
  place of the donated params and scales it there: no temporary, one more
  read and write of the weights than Adam.

  The result equals ``tx.update`` followed by ``optax.apply_updates`` up to
  float rounding (the same :math:`c (p + u)`, rounded once instead of
  twice). Transformations without ``swr`` give exactly the same result.
  Where the updates ``swr`` returned do not come out of ``tx`` unchanged,
  this step is computed as ``tx.update`` and ``optax.apply_updates``, with a
  :class:`NotFusedWarning` that says why (a second trace of ``tx``; under
  ``jit`` XLA removes the first).

  For an ensemble stacked on the first axis, vmap this function rather than
  ``tx``: ``jax.vmap(functools.partial(update_and_apply, tx))(grads,
  opt_state, params)`` gives each member its own norms and is fused, where
  ``update_and_apply(optax.GradientTransformation(jax.vmap(tx.init),
  jax.vmap(tx.update)), ...)`` is not.

  Args:
    tx: the optimizer, e.g. ``optax.chain(optax.adam(1e-3), optax_swr.swr())``.
      For the fused step every ``swr`` in it comes after the transformations
      that change its updates (it usually is the last one), and outside any
      ``jax.vmap``, ``lax.cond`` or wrapper that changes its updates.
    grads: the gradients, with the structure of ``params``.
    opt_state: the state of ``tx``.
    params: the current params.
    **extra_args: passed on to ``tx.update`` (``GradientTransformationExtraArgs``).

  Returns:
    ``(new_params, new_opt_state)``.

  Warns:
    NotFusedWarning: if ``swr`` ran under ``jax.vmap`` inside ``tx``, inside a
      ``lax.cond`` (``optax.MultiSteps``, ``optax.apply_if_finite``), or a
      transformation after it changed its updates (one chained after ``swr``,
      ``optax.contrib.schedule_free``); the step is then the chained one.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_swr
    >>> params = {"Dense_0": {"kernel": jnp.ones((2, 2))}}
    >>> tx = optax.chain(optax.sgd(0.1), optax_swr.swr(coef=0.5))
    >>> opt_state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> step = jax.jit(optax_swr.update_and_apply, static_argnums=0,
    ...                donate_argnums=(2, 3))
    >>> params, opt_state = step(tx, grads, opt_state, params)
    >>> print(params["Dense_0"]["kernel"])
    [[0.95 0.95]
     [0.95 0.95]]
  """
  own_trace = _trace_state()
  with _recording() as recorder:
    updates, new_opt_state = tx.update(grads, opt_state, params, **extra_args)
  found = set()

  def apply(param: Any, update: Any) -> Any:
    rescaling = recorder.rescalings.get(id(update))
    if param is None or rescaling is None or rescaling.update is not update:
      return optax.apply_updates(param, update)
    found.add(id(update))
    return _scaled_sum(param, update, rescaling.factor)

  new_params = jax.tree.map(
    apply, params, updates, is_leaf=lambda leaf: leaf is None
  )
  if len(found) == len(recorder.rescalings):
    return new_params, new_opt_state
  lost = [
    rescaling
    for key, rescaling in recorder.rescalings.items()
    if key not in found
  ]
  _warnings.warn(
    _why_not_fused(lost, own_trace, len(recorder.rescalings)),
    NotFusedWarning,
  )
  # What tx computed from the unscaled updates (e.g. schedule_free's z, a
  # MultiSteps' emitted step) is wrong too: run it again without the
  # recorder. Under jit the first trace is dead code, which XLA removes.
  updates, new_opt_state = tx.update(grads, opt_state, params, **extra_args)
  return optax.apply_updates(params, updates), new_opt_state


_CHAINED = (
  "the fused step cannot see through it, so this step is computed as "
  "tx.update + optax.apply_updates (the same result)"
)


def _why_not_fused(lost: list[_Rescaling], own_trace: Any, total: int) -> str:
  """The warning for ``swr`` updates that did not reach ``tx``'s output."""
  count = f"{len(lost)} of the {total} leaves that swr rescaled"
  if any(_is_batched(rescaling.update) for rescaling in lost):
    return (
      "update_and_apply: swr ran under jax.vmap inside `tx` (e.g. a "
      f"per-member ensemble) for {count}: {_CHAINED}. For the fused step, "
      "vmap update_and_apply itself, with the unbatched `tx`: "
      "jax.vmap(functools.partial(optax_swr.update_and_apply, tx))(grads, "
      "opt_state, params); with NNX, nnx.vmap(optax_swr.update_nnx) over "
      "an nnx.Optimizer(model, tx) made under nnx.vmap."
    )
  if any(rescaling.trace != own_trace for rescaling in lost):
    return (
      "update_and_apply: swr ran inside a lax.cond or another JAX "
      "transformation in `tx` (e.g. optax.MultiSteps or "
      "optax.apply_if_finite, which replace its updates conditionally) for "
      f"{count}: {_CHAINED}. Call tx.update and optax.apply_updates there "
      "to skip the fused attempt."
    )
  return (
    "update_and_apply: a transformation in `tx` changed the updates that "
    f"swr returned for {count}: one chained after swr, or a wrapper that "
    "computes its own updates from them (e.g. optax.contrib.schedule_free, "
    f"which adds them to its sequence z): {_CHAINED}. For the fused step "
    "put swr last in `tx`; with such a wrapper, call tx.update and "
    "optax.apply_updates to skip the fused attempt."
  )


def _is_batched(value: Any) -> bool:
  """Whether ``value`` is a tracer of ``jax.vmap``."""
  # jax no longer exports BatchTracer (jax.interpreters.batching, 0.10); its
  # own unsafe_am_i_under_a_vmap reads the class names of the traces too.
  return any(cls.__name__ == "BatchTracer" for cls in type(value).__mro__)


def _scaled_sum(param: jax.Array, update: jax.Array, factor: jax.Array):
  """factor * (p + u); p + u is the value swr took the norm of."""
  return (factor * _norms.moved(param, update)).astype(param.dtype)
