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
import jax.numpy as jnp
import optax

from optax_swr import _norms


class _Rescaling(NamedTuple):
  """One leaf that ``swr`` left unscaled for :func:`update_and_apply`."""

  update: Any  # The very object swr returned: found again by identity.
  factor: jax.Array  # A scalar, or one per slice of a stacked leaf.


class _Recorder:
  """The leaves ``swr`` hands over to :func:`update_and_apply`, by ``id``."""

  def __init__(self) -> None:
    self.rescalings: dict[int, _Rescaling] = {}

  def record(self, update: Any, factor: jax.Array) -> Any:
    """Keeps ``factor`` for ``update`` and returns the leaf to pass on."""
    if id(update) in self.rescalings:
      # One object in two leaves (possible outside jit): tell them apart.
      update = jnp.array(update, copy=True)
    self.rescalings[id(update)] = _Rescaling(update, factor)
    return update


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

  Args:
    tx: the optimizer, e.g. ``optax.chain(optax.adam(1e-3), optax_swr.swr())``.
      Every ``swr`` in it must come after the transformations that change its
      updates (it usually is the last one).
    grads: the gradients, with the structure of ``params``.
    opt_state: the state of ``tx``.
    params: the current params.
    **extra_args: passed on to ``tx.update`` (``GradientTransformationExtraArgs``).

  Returns:
    ``(new_params, new_opt_state)``.

  Raises:
    ValueError: if a transformation after ``swr``, or a wrapper that computes
      its updates inside a ``lax.cond`` (``optax.MultiSteps``,
      ``optax.apply_if_finite``), changed the updates ``swr`` returned; use
      ``tx.update`` and ``optax.apply_updates`` there.

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
  if len(found) != len(recorder.rescalings):
    raise ValueError(
      "update_and_apply: the updates that swr returned did not reach the "
      f"output of `tx` ({len(recorder.rescalings) - len(found)} of "
      f"{len(recorder.rescalings)} leaves were replaced). A transformation "
      "after swr in the chain, or a wrapper that runs swr inside lax.cond "
      "(optax.MultiSteps, optax.apply_if_finite), changed them. Put swr "
      "last, or call tx.update and optax.apply_updates instead."
    )
  return new_params, new_opt_state


def _scaled_sum(param: jax.Array, update: jax.Array, factor: jax.Array):
  """factor * (p + u); p + u is the value swr took the norm of."""
  return (factor * _norms.moved(param, update)).astype(param.dtype)
