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

"""The hyperball projection: each selected leaf keeps its initial norm.

Chained after an optimizer, it turns the optimizer's update ``u`` of a leaf
``p`` into the one that lands ``p + u`` back on the sphere of the leaf's
initial Frobenius norm (modded-nanogpt's AdamH, levanter / marin's
``scale_by_adamh``). Public as :func:`optax_swr.baselines.hyperball`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
from typing import Any, NamedTuple
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax


class HyperballState(NamedTuple):
  """State of :func:`hyperball`.

  Attributes:
    target_norms: a tree of the params' structure: for each selected leaf,
      its Frobenius norm at ``init`` (a scalar, in float32 or the leaf's
      dtype if wider); ``None`` for every other leaf.
  """

  target_norms: Any


def hyperball(
  mask: Any | Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
  r"""Keeps each selected leaf on the sphere of its initial Frobenius norm.

  Chain it *after* the optimizer: ``optax.chain(optax.adam(lr), hyperball())``
  is AdamH (modded-nanogpt; ``scale_by_adamh`` in levanter / marin). With
  ``r`` a leaf's norm at ``init``, ``p`` its current value and ``u`` the
  optimizer's update, the update becomes

  .. math::

     u' = (p + u) \, \frac{r}{\|p + u\|} - p,

  so that ``optax.apply_updates`` gives ``p + u'``, of norm ``r`` up to
  rounding: the update moves only the leaf's direction. Unselected leaves
  keep ``u``. Where ``||p + u||`` is 0, the update is ``u`` (there is no
  direction to rescale); a leaf whose initial norm is 0 goes to zero, never
  to NaN. The norms are computed in at least float32; each update keeps its
  dtype. The state holds one scalar per selected leaf.

  Args:
    mask: which leaves to keep on their sphere. ``None`` (the default): every
      floating leaf with ``ndim >= 2`` whose name (its last key) is not
      ``bias`` or ``scale``: kernels, conv kernels, embeddings, but not
      biases or normalization scales, even multi-dimensional ones (an
      attention's ``[heads, head_dim]`` biases, which start at zero).
      Otherwise, as in ``optax.masked``:
      a tree of booleans with the params' structure (or a prefix of it), or a
      function of the params returning one. A leaf that is not floating is
      never selected.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`HyperballState`.
    Its ``update`` needs the params: ``tx.update(updates, state, params)``.
    ``init`` raises a ``ValueError`` if a selected leaf is all zeros: its
    sphere would be a single point. Under ``jit`` the values are not known
    when ``init`` is traced, so it warns (``UserWarning``) when it runs
    instead, naming the leaves.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from optax_swr import baselines
    >>> tx = optax.chain(optax.adam(0.1), baselines.hyperball())
    >>> params = {"w": jnp.array([[3.0, 0.0], [0.0, 4.0]]), "b": jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.array([[1.0, -1.0], [2.0, 0.5]]), "b": jnp.ones(2)}
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> print(f"{optax.tree.norm(params['w']):.4f}")  # as at init
    5.0000
    >>> print(f"{params['b'][0]:.4f}")  # a bias: left to Adam (-lr)
    -0.1000
  """

  def init_fn(params: Any) -> HyperballState:
    selected = _selected(params, mask)
    target_norms = jax.tree.map(
      lambda leaf, chosen: _norm(leaf) if chosen else None, params, selected
    )
    _check_nonzero(target_norms)
    return HyperballState(target_norms=target_norms)

  def update_fn(
    updates: Any, state: HyperballState, params: Any = None
  ) -> tuple[Any, HyperballState]:
    if params is None:
      raise ValueError(
        "hyperball needs the current params to project onto the sphere: "
        "pass them, `tx.update(updates, opt_state, params)`, and chain "
        "hyperball after the optimizer."
      )
    updates = jax.tree.map(
      _project,
      state.target_norms,
      updates,
      params,
      is_leaf=lambda node: node is None,
    )
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def _selected(params: Any, mask: Any) -> Any:
  """A tree of bools with the params' structure: the leaves to project."""
  if mask is None:
    flags = jax.tree_util.tree_map_with_path(_default_flag, params)
  else:
    tree = mask(params) if callable(mask) else mask
    try:
      # A prefix of the params: a flag stands for every leaf below it.
      flags = jax.tree.map(
        lambda flag, subtree: jax.tree.map(lambda _: flag, subtree),
        tree,
        params,
      )
    except ValueError as error:
      raise ValueError(
        "hyperball: `mask` must be a tree of booleans with the params' "
        "structure (or a prefix of it), or a function of the params "
        f"returning one; it does not match the params: {error}"
      ) from error
  return jax.tree.map(
    lambda flag, leaf: _check_flag(flag) and _is_floating(leaf), flags, params
  )


# Leaves the default mask leaves out whatever their shape (flax's names).
_NOT_MATRICES = ("bias", "scale")


def _default_flag(path: Any, leaf: Any) -> bool:
  name = (
    getattr(path[-1], "key", getattr(path[-1], "name", None)) if path else None
  )
  return jnp.ndim(leaf) >= 2 and name not in _NOT_MATRICES


def _check_flag(flag: Any) -> bool:
  if isinstance(flag, jax.core.Tracer):
    raise ValueError(
      "hyperball: `mask` holds a traced value; its flags must be Python "
      "booleans (a callable `mask` may read the params' shapes and dtypes, "
      "not their values)."
    )
  return bool(flag)


def _is_floating(leaf: Any) -> bool:
  return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def _compute_dtype(leaf: Any) -> Any:
  """At least float32, so that the sum of squares neither rounds nor overflows."""
  return jnp.promote_types(jnp.result_type(leaf), jnp.float32)


def _norm(leaf: Any) -> jax.Array:
  return jnp.linalg.norm(jnp.ravel(jnp.asarray(leaf, _compute_dtype(leaf))))


def _check_nonzero(target_norms: Any) -> None:
  """Raises where a concrete selected leaf has norm 0 (a sphere of one point)."""
  flat = jax.tree_util.tree_flatten_with_path(target_norms)[0]
  traced = [(p, n) for p, n in flat if isinstance(n, jax.core.Tracer)]
  zero = [
    jax.tree_util.keystr(path)
    for path, norm in flat
    if not isinstance(norm, jax.core.Tracer) and float(norm) == 0.0
  ]
  if zero:
    raise ValueError(_zero_message(zero))
  if traced:
    paths = [jax.tree_util.keystr(path) for path, _ in traced]
    jax.debug.callback(
      functools.partial(_warn_zero, paths), [norm for _, norm in traced]
    )


def _zero_message(paths: Sequence[str]) -> str:
  return (
    f"hyperball: the params at {', '.join(paths)} are all zeros at init, "
    "so their sphere is a single point and they could never move. "
    "Initialise them non-zero, or leave them out: `hyperball(mask=...)` "
    "with False at those paths."
  )


def _warn_zero(paths: Sequence[str], norms: Sequence[Any]) -> None:
  """At run time under jit: the warning ``init`` could not raise when traced."""
  zero = [p for p, n in zip(paths, norms) if np.any(np.asarray(n) == 0)]
  if zero:
    warnings.warn(_zero_message(zero), UserWarning, stacklevel=2)


def _project(target_norm: Any, update: Any, param: Any) -> Any:
  if target_norm is None:
    return update
  dtype = _compute_dtype(param)
  param = jnp.asarray(param, dtype)
  moved = param + jnp.asarray(update, dtype)
  norm = jnp.linalg.norm(jnp.ravel(moved))
  # Where the step lands on zero there is no direction to rescale: keep the
  # update as it is (the safe divisor keeps NaN out of the unused branch).
  positive = norm > 0
  projected = moved * (target_norm / jnp.where(positive, norm, 1)) - param
  return jnp.where(positive, projected, update).astype(jnp.result_type(update))
