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

"""The paper's baselines, built as carefully as SWR, for fair comparisons.

Two are gradient transformations that go *before* the optimizer, because they
are loss terms (their gradient is added to the loss gradient):

* :func:`l2`: the loss term ``coef / 2 * ||theta||^2`` (gradient
  ``coef * theta``); the same as ``optax.add_decayed_weights`` placed before
  the optimizer, which is what it returns.
* :func:`l2_init`: the loss term ``coef * ||theta - theta_0||^2`` (gradient
  ``2 * coef * (theta - theta_0)``), pulling toward the initial params
  (Kumar et al., 2023).

Two act on the params once, at each change of the data:

* :func:`shrink_perturb`: ``theta <- (1 - coef) * theta + coef * theta_0``
  with ``theta_0`` the network's own initial params (the paper's simplified
  Shrink & Perturb of Ash & Adams, 2020, as the authors' code runs it).
* :func:`reset_layers`: the listed layers (the classifier head) take their
  fresh initialisation; everything else, optimizer state included, is kept.

Example:
  >>> import jax.numpy as jnp
  >>> import optax
  >>> from optax_swr import baselines
  >>> tx = optax.chain(baselines.l2(1e-2), optax.adam(1e-3))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_swr import _layers

Path = _layers.Path


def l2(
  coef: float, mask: Any | Callable[[Any], Any] | None = None
) -> optax.GradientTransformation:
  """L2 regularization: adds the gradient of ``coef / 2 * ||theta||^2``.

  Place it before the optimizer, ``optax.chain(l2(coef), optax.adam(lr))``,
  so that the optimizer sees the regularized gradient, exactly as if the
  term were in the loss. (After Adam it would be decoupled weight decay,
  a different method.)

  Args:
    coef: the regularization strength, ``>= 0`` (the paper sweeps 1e-5 to
      1e-1).
    mask: as in ``optax.add_decayed_weights``: a tree of booleans, or a
      function of the params returning one, selecting the leaves to
      regularize.

  Returns:
    ``optax.add_decayed_weights(coef, mask)``.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from optax_swr import baselines
    >>> tx = optax.chain(baselines.l2(0.1), optax.sgd(1.0))
    >>> params = jnp.array([2.0])
    >>> updates, _ = tx.update(jnp.array([0.5]), tx.init(params), params)
    >>> print(updates)
    [-0.7]
  """
  _check_coef("l2", "coef", coef, upper=None)
  return optax.add_decayed_weights(coef, mask)


class L2InitState(NamedTuple):
  """State of :func:`l2_init`.

  Attributes:
    initial_params: the params given to ``init``: the point to pull toward.
  """

  initial_params: Any


def l2_init(coef: float) -> optax.GradientTransformation:
  """L2 Init: adds the gradient of ``coef * ||theta - theta_0||^2``.

  ``theta_0`` are the params given to ``init``. Place it before the
  optimizer: ``optax.chain(l2_init(coef), optax.adam(lr))``. Its state holds
  a copy of the initial params (as much memory as the params).

  Args:
    coef: the regularization strength, ``>= 0``.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`L2InitState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from optax_swr import baselines
    >>> tx = optax.chain(baselines.l2_init(0.1), optax.sgd(1.0))
    >>> state = tx.init(jnp.array([1.0]))
    >>> moved = jnp.array([3.0])
    >>> updates, _ = tx.update(jnp.array([0.0]), state, moved)
    >>> print(updates)  # -(2 * 0.1 * (3 - 1))
    [-0.4]
  """
  _check_coef("l2_init", "coef", coef, upper=None)

  def init_fn(params: Any) -> L2InitState:
    return L2InitState(initial_params=jax.tree.map(jnp.array, params))

  def update_fn(
    updates: Any, state: L2InitState, params: Any = None
  ) -> tuple[Any, L2InitState]:
    if params is None:
      raise ValueError(
        "l2_init needs the current params: call `tx.update(updates, "
        "opt_state, params)`."
      )
    updates = jax.tree.map(
      lambda u, p, p0: (u + 2 * coef * (p - p0)).astype(u.dtype),
      updates,
      params,
      state.initial_params,
    )
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def shrink_perturb(params: Any, initial_params: Any, coef: float) -> Any:
  """Shrink & Perturb, simplified: ``(1 - coef) * params + coef * theta_0``.

  Call it once at each change of the training data. The SWR paper (and its
  authors' code) moves the params toward the network's *own* initial params
  ``theta_0``, which shrinks them toward the initial norms and restores the
  initial scale of every unit. Ash & Adams' original adds noise instead:
  pass a fresh initialisation as ``initial_params`` for that variant.

  Args:
    params: the current params.
    initial_params: the params the network started from (``theta_0``), with
      the same tree structure.
    coef: the weight of ``theta_0``, in [0, 1] (the paper sweeps 0.2 to 0.8).

  Returns:
    The interpolated params, each leaf in its own dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_swr import baselines
    >>> print(baselines.shrink_perturb(jnp.array([4.0]), jnp.array([0.0]), 0.25))
    [3.]
  """
  _check_coef("shrink_perturb", "coef", coef, upper=1.0)
  _check_same_structure(
    "shrink_perturb", params, initial_params, "initial_params"
  )
  return jax.tree.map(
    lambda p, p0: ((1 - coef) * p + coef * p0).astype(p.dtype),
    params,
    initial_params,
  )


def reset_layers(
  params: Any,
  fresh_params: Any,
  layers: Sequence[_layers.Layer | Path | str],
) -> Any:
  """Head reset: the given layers take their fresh initialisation.

  Every leaf under each listed layer path (weight, bias, anything else), or
  the weight and bias of each :class:`optax_swr.Layer`, is replaced; all
  other leaves are kept.

  Args:
    params: the current params.
    fresh_params: a fresh initialisation of the same model.
    layers: the layers to reset: paths of sub-trees, e.g. ``[("head",)]``
      (the paper resets the fully connected layers; for the MLP only the
      last), or :class:`optax_swr.Layer` values.

  Returns:
    The params with those layers reset.

  Raises:
    ValueError: if a path matches no leaf, or the trees differ.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_swr import baselines
    >>> params = {"body": {"kernel": jnp.ones(2)}, "head": {"kernel": jnp.ones(2)}}
    >>> fresh = {"body": {"kernel": jnp.zeros(2)}, "head": {"kernel": jnp.zeros(2)}}
    >>> new = baselines.reset_layers(params, fresh, ["head"])
    >>> print(new["body"]["kernel"], new["head"]["kernel"])
    [1. 1.] [0. 0.]
  """
  _check_same_structure("reset_layers", params, fresh_params)
  paths = _layers.leaf_paths(params)
  entries = _layers.normalize_layers_arg(layers, caller="reset_layers")
  if not isinstance(entries, tuple):
    raise ValueError(
      f"reset_layers: `layers` is {layers!r}; list the layers to reset, "
      "e.g. [('head',)]."
    )
  targets = [  # (path, slice of a stack: () for the whole leaves)
    (path, entry.index if isinstance(entry, _layers.Layer) else ())
    for entry in entries
    for path in (
      [p for p in (entry.weight, entry.bias) if p is not None]
      if isinstance(entry, _layers.Layer)
      else [entry]
    )
  ]
  for target, _ in targets:
    if not any(path[: len(target)] == target for path in paths):
      raise ValueError(
        f"reset_layers: the path {target!r} in `layers` matches no leaf of "
        "the params."
      )
  leaves, treedef = jax.tree.flatten(params)
  fresh_leaves = jax.tree.leaves(fresh_params)
  return jax.tree.unflatten(
    treedef,
    [
      _reset_leaf(leaf, fresh, [i for t, i in targets if path[: len(t)] == t])
      for path, leaf, fresh in zip(paths, leaves, fresh_leaves)
    ],
  )


def _reset_leaf(leaf: Any, fresh: Any, indices: list[tuple[int, ...]]) -> Any:
  """``fresh`` where a layer covers the whole leaf, else its slices."""
  if not indices:
    return leaf
  if () in indices:
    return fresh
  for index in indices:
    leaf = leaf.at[index].set(fresh[index])
  return leaf


def _check_coef(
  function: str, name: str, value: Any, upper: float | None
) -> None:
  is_scalar_array = isinstance(value, (jax.Array, np.ndarray, np.generic)) and (
    np.ndim(value) == 0
  )
  if isinstance(value, bool) or not (
    isinstance(value, numbers.Real) or is_scalar_array
  ):
    raise ValueError(f"{function}: `{name}` must be a float; got {value!r}.")
  try:
    number = float(value)
  except jax.errors.ConcretizationTypeError:
    return  # A traced value (inject_hyperparams under jit) can't be checked.
  if not (number >= 0 and (upper is None or number <= upper)):
    bounds = f"in [0, {upper:g}]" if upper is not None else ">= 0"
    raise ValueError(f"{function}: `{name}` must be {bounds}; got {value}.")


def _check_same_structure(
  function: str, params: Any, other: Any, name: str = "fresh_params"
) -> None:
  # Any: jaxlib ships no stub for PyTreeDef, so mypy can't see its __eq__.
  structure: Any = jax.tree.structure(params)
  if structure != jax.tree.structure(other):
    raise ValueError(
      f"{function}: `params` and `{name}` have different tree "
      "structures; pass params of the same model."
    )
