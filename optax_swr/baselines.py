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

Three act on the params once, at each change of the data:

* :func:`shrink_perturb`: ``theta <- (1 - coef) * theta + coef * theta_0``
  with ``theta_0`` the network's own initial params (the paper's simplified
  Shrink & Perturb of Ash & Adams, 2020, as the authors' code runs it).
* :func:`shrink_and_perturb`: Ash & Adams' own two-parameter form,
  ``theta <- shrink * theta + noise_scale * theta_fresh``, with a new fresh
  initialisation ``theta_fresh`` at every call.
* :func:`reset_layers`: the listed layers (the classifier head) take their
  fresh initialisation; everything else, optimizer state included, is kept.

Two act on the params and the optimizer state, unit by unit:

* :func:`redo`: ReDo (Sokar et al., 2023), every few updates: the units
  whose activations are near zero get fresh incoming weights, zero outgoing
  weights and zero optimizer moments.
* :func:`continual_backprop`: continual backprop (Dohare et al., 2024),
  after every update: a small fraction of the mature units with the lowest
  running contribution utility get the same fresh start; its state, a
  :class:`ContinualBackpropState`, comes from :func:`continual_backprop_init`.

One keeps norms fixed after each update:

* :func:`hyperball`: chained after the optimizer, it keeps each selected
  leaf (by default every matrix) on the sphere of its initial Frobenius
  norm; ``optax.chain(optax.adam(lr), hyperball())`` is AdamH
  (modded-nanogpt; ``scale_by_adamh`` in levanter / marin).

Example:
  >>> import jax.numpy as jnp
  >>> import optax
  >>> from optax_swr import baselines
  >>> tx = optax.chain(baselines.l2(1e-2), optax.adam(1e-3))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_swr import _config
from optax_swr import _dormant
from optax_swr import _layers

# Re-exported (the `as` marks it for linters and type checkers).
from optax_swr._hyperball import HyperballState as HyperballState
from optax_swr._hyperball import hyperball as hyperball

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
  initial scale of every unit. Ash & Adams' original shrinks toward zero and
  adds a new random draw at every call: :func:`shrink_and_perturb`.

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


def shrink_and_perturb(
  params: Any, fresh_params: Any, shrink: float, noise_scale: float
) -> Any:
  r"""Ash & Adams' Shrink & Perturb: ``shrink * params + noise_scale * fresh``.

  Call it once at each change of the training data, with a new fresh
  initialisation each time:

  .. math::
    \theta \leftarrow \lambda\, \theta + \sigma\, \theta_{\text{fresh}},

  with :math:`\lambda` = ``shrink`` and :math:`\sigma` = ``noise_scale``.
  Shrinking scales the learned weights down toward zero (a ReLU network
  without biases keeps its ranking of the outputs); the perturbation is a
  new random draw at every call, scaled per leaf as your initialiser scales
  it (Ash & Adams write it as noise :math:`\mathcal{N}(0, \sigma^2)`; a
  scaled fresh initialisation gives every layer noise at its own initial
  scale).

  :func:`shrink_perturb`, the SWR paper's variant, instead interpolates
  toward the network's *own* initial params, ``(1 - coef) * theta + coef *
  theta_0``: the same point at every call, with weights that sum to 1. Here
  the two coefficients are free (``shrink + noise_scale`` need not be 1) and
  the added point is new each time; ``shrink_and_perturb(p, theta_0, 1 -
  coef, coef)`` is ``shrink_perturb(p, theta_0, coef)``.

  Args:
    params: the current params.
    fresh_params: a fresh initialisation of the same model, e.g.
      ``model.init(new_key, x)["params"]``; draw a new key at every call.
    shrink: :math:`\lambda`, the factor on the current params, in [0, 1]
      (1 keeps them, 0 is a fresh start scaled by ``noise_scale``).
    noise_scale: :math:`\sigma`, the factor on ``fresh_params``, ``>= 0``.

  Returns:
    The new params, each leaf in its own dtype.

  Raises:
    ValueError: if ``shrink`` or ``noise_scale`` is out of range, or
      ``fresh_params`` is not shaped like ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_swr import baselines
    >>> print(baselines.shrink_and_perturb(
    ...     jnp.array([4.0]), jnp.array([2.0]), shrink=0.5, noise_scale=0.1))
    [2.2]

  References:
    Ash and Adams, `On warm-starting neural network training
    <https://arxiv.org/abs/1910.08475>`_, NeurIPS 2020.
  """
  caller = "shrink_and_perturb"
  _check_coef(caller, "shrink", shrink, upper=1.0)
  _check_coef(caller, "noise_scale", noise_scale, upper=None)
  _check_same_structure(caller, params, fresh_params)
  for leaf, fresh in zip(
    jax.tree.leaves(params), jax.tree.leaves(fresh_params)
  ):
    _check_fresh_shape(caller, leaf, fresh)
  return jax.tree.map(
    lambda p, fresh: (shrink * p + noise_scale * fresh).astype(p.dtype),
    params,
    fresh_params,
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


def redo(
  params: Any,
  opt_state: Any,
  activations: Any,
  layers: _layers.LayersArg,
  fresh_params: Any,
  *,
  optimizer: optax.GradientTransformation | Callable[[Any], Any],
  tau: float = 0.1,
) -> tuple[Any, Any, tuple[jax.Array, ...]]:
  r"""ReDo: recycles the dormant units of a chain of layers.

  Call it every ``K`` updates (Sokar et al., 2023). A unit :math:`i` of a
  layer with :math:`H` units is dormant when its normalized activation

  .. math::
    s_i = \frac{\mathbb{E}_x |h_i(x)|}{\frac{1}{H} \sum_k \mathbb{E}_x
    |h_k(x)|} \le \tau,

  the same definition (and code) as :func:`optax_swr.metrics.dormant_fraction`,
  the mean running over the batch and every axis before the units. Each
  dormant unit then gets

  * its incoming weights ``W_l[..., i]`` and bias ``b_l[i]`` from
    ``fresh_params`` (the authors' code sets the bias to 0, Flax's default
    initial bias);
  * zero outgoing weights: the rows of the next kernel it feeds, ``W[i, :]``
    of a dense layer, ``W[..., i, :]`` of a conv, and rows ``r`` with
    ``r % H == i`` of a dense layer that reads the flattened channels-last
    output of a conv. A weight from one dormant unit into another is zeroed,
    as in the authors' code;
  * zero optimizer state at all of those entries, in every tree of
    ``opt_state`` shaped like the params (Adam's ``mu`` and ``nu``, ...);
    counts and other leaves, SWR's state included, are kept.

  Zero outgoing weights keep the network's function at the reset; the fresh
  incoming weights give the units gradients again. Units of the last layer
  (the network's outputs) are never reset. Shapes decide what to reset and
  ``jnp.where`` does it, so ``redo`` runs under ``jax.jit`` and inside
  ``jax.lax.cond(step % K == 0, ...)``.

  Recycling takes a unit to live in its incoming and outgoing weights alone.
  That fails where a normalization layer follows the layer: a fresh unit
  moves the mean and variance that LayerNorm, RMSNorm and GroupNorm divide
  every unit by, and BatchNorm's running statistics, scale and offset for it
  are the old unit's. So ``redo`` refuses a normalization layer after a layer whose units
  it recycles (one before the first layer or after the last is fine), and
  names the layers it may recycle instead. It sees them in ``layers``, in the
  trace that traced layers come from (also where a list of those left the
  normalization layers out) and, for layers given by paths, in the params:
  a ``scale`` leaf or a vector ``weight`` must be listed. A normalization
  layer without params is seen only by a trace.

  The activations come from the model, e.g. Flax Linen's
  ``capture_intermediates`` (for modules that end with their activation
  function) or ``self.sow("intermediates", "relu_0", x)`` after each
  activation, collected with ``mutable="intermediates"`` on a batch.

  Args:
    params: the current params.
    opt_state: the optimizer's state for ``params``.
    activations: the output of every layer but the last, after its
      activation function: arrays ``[batch, ..., units]`` as a list in
      forward order (one array for two layers), or a dict, e.g. Flax's
      ``intermediates`` collection, whose arrays are put in forward order by
      the numbers in their names (``relu_0``, ``relu_1``, ... or
      ``Block_0/__call__``, ...), as :func:`optax_swr.find_layers` orders
      layers. If your names do not follow the forward order, pass a list.
    layers: the dense/conv layers, consecutive and in forward order, as
      :func:`optax_swr.find_layers` accepts them: :class:`optax_swr.Layer`
      values, paths such as ``[("Dense_0",), ("Dense_1",)]``, or ``None`` to
      infer them from numbered names; the :class:`optax_swr.Layers` of a
      tracer as it is. Normalization layers only before the first and after
      the last dense/conv layer; no slices of stacks.
    fresh_params: a fresh initialisation of the same model, e.g.
      ``model.init(new_key, x)["params"]``; draw a new key at every call.
    optimizer: the optimizer that made ``opt_state`` (or its ``init``), used
      by ``optax.tree_map_params`` to find its param-shaped trees.
    tau: the threshold, ``>= 0``. Sokar et al. use 0 to 0.1; with 0, only
      units that are exactly 0 on the whole batch are reset.

  Returns:
    ``(params, opt_state, dormant)``: the params and optimizer state with the
    dormant units reset, and a tuple of boolean masks ``[units]``, one per
    layer but the last, of the units that were reset (e.g. log
    ``sum(d.sum() for d in dormant)``).

  Raises:
    ValueError: if the number of activations is not one fewer than the
      layers, an activation's units do not match its layer's width, the next
      kernel cannot read the layer's units, a normalization layer follows a
      layer to recycle (use ``optax_swr.swr``, or recycle the layers the
      message names), or the params hold a normalization layer that
      ``layers`` (as paths) does not list.

  Example:
    >>> import flax.linen as nn
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from optax_swr import baselines
    >>> class Block(nn.Module):  # a dense layer and its activation
    ...   width: int
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     return nn.relu(nn.Dense(self.width)(x))
    >>> class MLP(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = Block(8)(x)
    ...     x = Block(8)(x)
    ...     return nn.Dense(2)(x)
    >>> model, x = MLP(), jnp.ones((16, 3))
    >>> params = model.init(jax.random.key(0), x)["params"]
    >>> tx = optax.adam(1e-3)
    >>> opt_state = tx.init(params)
    >>> _, state = model.apply(
    ...     {"params": params}, x, mutable="intermediates",
    ...     capture_intermediates=lambda module, _: isinstance(module, Block))
    >>> layers = [("Block_0", "Dense_0"), ("Block_1", "Dense_0"), ("Dense_0",)]
    >>> fresh = model.init(jax.random.key(1), x)["params"]
    >>> params, opt_state, dormant = baselines.redo(
    ...     params, opt_state, state["intermediates"], layers, fresh,
    ...     optimizer=tx, tau=0.1)
    >>> [mask.shape for mask in dormant]
    [(8,), (8,)]

  References:
    Sokar, Agarwal, Castro and Evci, `The dormant neuron phenomenon in deep
    reinforcement learning <https://arxiv.org/abs/2302.12902>`_, ICML 2023.
  """
  _check_coef("redo", "tau", tau, upper=None)
  found, hidden = _hidden_layers(
    "redo", params, activations, layers, fresh_params
  )
  dormant = tuple(_dormant.dormant_units(h, tau) for h in hidden)
  params, opt_state = _recycle_units(
    "redo", params, opt_state, found, dormant, fresh_params, optimizer
  )
  return params, opt_state, dormant


class ContinualBackpropState(NamedTuple):
  """State of :func:`continual_backprop`, from :func:`continual_backprop_init`.

  Each field holds one array per layer but the last, in the order of
  ``layers``.

  Attributes:
    utility: each unit's running contribution utility, ``[units]`` float32.
    age: the calls since each unit was (re)initialised, ``[units]`` int32.
    to_replace: the units due for replacement and not yet replaced, a float32
      scalar (a fraction, in [0, 1) between calls).
  """

  utility: tuple[jax.Array, ...]
  age: tuple[jax.Array, ...]
  to_replace: tuple[jax.Array, ...]


def continual_backprop_init(
  params: Any, layers: _layers.LayersArg
) -> ContinualBackpropState:
  """The state :func:`continual_backprop` starts from: zero everywhere.

  Args:
    params: the params (only their shapes are read).
    layers: the dense/conv layers, as :func:`continual_backprop` takes them.

  Returns:
    A :class:`ContinualBackpropState` with utility 0, age 0 and nothing due,
    for every unit of every layer but the last.

  Raises:
    ValueError: if ``layers`` does not give two or more dense/conv layers of
      ``params``, or a normalization layer follows one of them but the last
      (as :func:`redo` refuses it).

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_swr import baselines
    >>> params = {"hidden": {"kernel": jnp.ones((2, 3))},
    ...           "out": {"kernel": jnp.ones((3, 1))}}
    >>> state = baselines.continual_backprop_init(
    ...     params, [("hidden",), ("out",)])
    >>> print(state.utility[0], state.age[0], state.to_replace[0])
    [0. 0. 0.] [0 0 0] 0.0
  """
  found = _unit_layers("continual_backprop_init", params, layers)
  leaves = jax.tree.leaves(params)
  widths = [_kernel_shape(leaves, layer)[-1] for layer in found[:-1]]
  return ContinualBackpropState(
    utility=tuple(jnp.zeros(width, jnp.float32) for width in widths),
    age=tuple(jnp.zeros(width, jnp.int32) for width in widths),
    to_replace=tuple(jnp.zeros((), jnp.float32) for _ in widths),
  )


def continual_backprop(
  params: Any,
  opt_state: Any,
  state: ContinualBackpropState,
  activations: Any,
  layers: _layers.LayersArg,
  fresh_params: Any,
  *,
  optimizer: optax.GradientTransformation | Callable[[Any], Any],
  replacement_rate: float = 1e-4,
  decay_rate: float = 0.99,
  maturity_threshold: int = 100,
) -> tuple[Any, Any, ContinualBackpropState, tuple[jax.Array, ...]]:
  r"""Continual backprop: reinitialises the mature units of lowest utility.

  Call it after every update, with the activations of that update's batch
  (Dohare et al., 2024). In every layer but the last, each unit :math:`i`
  keeps a running *contribution utility*, the size of its activation times
  the size of the weights that carry it on,

  .. math::
    u_i \leftarrow \eta\, u_i + (1 - \eta)\, \mathbb{E}_x |h_i(x)|
    \sum_k |W_{l+1}[i, k]|,

  with :math:`\eta` = ``decay_rate``, the mean over the batch and every axis
  before the units (:func:`redo`'s activations), and the sum over every
  entry of the next kernel that reads unit :math:`i` (the rows that
  :func:`redo` zeroes: ``W[i, :]`` of a dense layer, ``W[..., i, :]`` of a
  conv, rows ``r % H == i`` of a dense layer reading a flattened conv
  output). Every unit's age grows by one. A unit is *mature* once its age
  exceeds ``maturity_threshold``; each layer adds ``replacement_rate`` times
  its number of mature units to a running count :math:`c` and replaces its
  :math:`\lfloor c \rfloor` mature units of lowest utility (ties: the lowest
  index first), keeping :math:`c - \lfloor c \rfloor` for the next call. With
  rate 1e-4 and 100 mature units, one unit is replaced about every 100 calls.

  A replaced unit gets what :func:`redo` gives a dormant one, with the same
  code: incoming weights and bias from ``fresh_params``, zero outgoing
  weights, and zero optimizer state at all of those entries (counts and
  other leaves kept); its utility and age restart at 0. Zero outgoing
  weights remove the unit's old contribution from the next layer (the
  smallest by its utility; nothing for a unit that is 0 on the batch) and
  make the new unit's output count for nothing until training moves them.

  Masks from ranks do the replacing, so the count may be traced: it runs
  under ``jax.jit``, ``jax.lax.scan`` and ``jax.vmap`` (e.g. over seeds).

  Left out from the authors' code (``lop/algos/gnt.py``, ``cbp_linear.py``):
  ``gnt.py`` ranks units by the bias-corrected utility
  :math:`u_i / (1 - \eta^{\text{age}_i})` (here: :math:`u_i` itself) and
  offers other utilities (e.g. a mean-corrected contribution, with each
  activation's running mean subtracted), and it adds a replaced unit's mean
  contribution to the next layer's bias; only the plain contribution
  utility and zeroed outgoing weights are here, as in ``cbp_linear.py``.
  Their outgoing size is a mean where this is a sum (a constant factor per
  layer: the same ranking). Without ``accumulate``, ``gnt.py`` replaces one
  unit with probability :math:`\rho \cdot` (mature units) when that is below
  1; here the count is always carried over. New incoming weights come from
  your initialiser (theirs: a uniform Kaiming draw, bias 0). Their Adam
  restarts the step count of a replaced entry; optax's Adam keeps one count
  for all entries, which is kept, so a replaced entry's moments restart at
  zero without a fresh start's bias correction. A normalization layer after
  a layer whose units it replaces is refused, as by :func:`redo`
  (``cbp_linear.py`` resets a replaced unit's BatchNorm statistics too;
  here the layers must not be followed by one).

  Args:
    params: the current params.
    opt_state: the optimizer's state for ``params``.
    state: the :class:`ContinualBackpropState` of the previous call, or
      :func:`continual_backprop_init`'s at the first.
    activations: the output of every layer but the last, after its
      activation function, on the update's batch, as :func:`redo` takes
      them: arrays ``[batch, ..., units]``, a list in forward order or a dict
      with numbered names.
    layers: the dense/conv layers, consecutive and in forward order, as
      :func:`redo` takes them.
    fresh_params: a fresh initialisation of the same model, e.g.
      ``model.init(new_key, x)["params"]``; draw a new key at every call.
    optimizer: the optimizer that made ``opt_state`` (or its ``init``), used
      by ``optax.tree_map_params`` to find its param-shaped trees.
    replacement_rate: :math:`\rho`, the fraction of the mature units replaced
      per call, in [0, 1]; 1e-4 is the authors' code's default (0 replaces
      nothing and only tracks utilities and ages).
    decay_rate: :math:`\eta`, the utility's decay, in [0, 1); 0.99 is
      ``gnt.py``'s default.
    maturity_threshold: the calls a new unit is protected for, an ``int >=
      0``; 100 is ``cbp_linear.py``'s default (``gnt.py``'s: 20).

  Returns:
    ``(params, opt_state, state, replaced)``: the params and optimizer state
    with the replaced units reset, the new :class:`ContinualBackpropState`,
    and a tuple of boolean masks ``[units]``, one per layer but the last, of
    the units replaced at this call.

  Raises:
    ValueError: if a hyperparameter is out of range, ``state`` does not fit
      ``layers`` (make it with :func:`continual_backprop_init`), or for
      anything :func:`redo` refuses (activations that do not fit the layers,
      layers that are not consecutive dense/conv layers, a normalization
      layer after a layer to recycle, ``fresh_params`` or ``opt_state`` that
      do not fit the params).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from optax_swr import baselines
    >>> def init(key):  # a ReLU MLP 2 -> 8 -> 1
    ...   k0, k1 = jax.random.split(key)
    ...   return {
    ...       "hidden": {"kernel": jax.random.normal(k0, (2, 8)),
    ...                  "bias": jnp.zeros(8)},
    ...       "out": {"kernel": jax.random.normal(k1, (8, 1)),
    ...               "bias": jnp.zeros(1)}}
    >>> layers = [("hidden",), ("out",)]
    >>> params, tx = init(jax.random.key(0)), optax.adam(1e-3)
    >>> opt_state = tx.init(params)
    >>> cbp_state = baselines.continual_backprop_init(params, layers)
    >>> x = jax.random.normal(jax.random.key(1), (16, 2))
    >>> h = jax.nn.relu(x @ params["hidden"]["kernel"])
    >>> params, opt_state, cbp_state, replaced = baselines.continual_backprop(
    ...     params, opt_state, cbp_state, [h], layers,
    ...     init(jax.random.key(2)), optimizer=tx,
    ...     replacement_rate=0.125, maturity_threshold=0)
    >>> print(int(replaced[0].sum()), cbp_state.to_replace[0])  # 8 / 8 units
    1 0.0

  References:
    Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood and Sutton, `Loss of
    plasticity in deep continual learning
    <https://doi.org/10.1038/s41586-024-07711-7>`_, Nature 632, 2024.
  """
  caller = "continual_backprop"
  _check_coef(caller, "replacement_rate", replacement_rate, upper=1.0)
  _check_decay_rate(caller, decay_rate)
  _check_maturity_threshold(caller, maturity_threshold)
  found, hidden = _hidden_layers(
    caller, params, activations, layers, fresh_params
  )
  _check_continual_backprop_state(state, found, hidden)
  leaves = jax.tree.leaves(params)
  steps = [
    _generate_and_test(
      _dormant.mean_abs(h) * _outgoing_size(_kernel(leaves, after), h),
      utility,
      age,
      to_replace,
      replacement_rate=replacement_rate,
      decay_rate=decay_rate,
      maturity_threshold=maturity_threshold,
    )
    for h, after, utility, age, to_replace in zip(
      hidden, found[1:], state.utility, state.age, state.to_replace
    )
  ]
  utilities, ages, counts, replaced = (tuple(field) for field in zip(*steps))
  params, opt_state = _recycle_units(
    caller, params, opt_state, found, replaced, fresh_params, optimizer
  )
  return (
    params,
    opt_state,
    ContinualBackpropState(utilities, ages, counts),
    replaced,
  )


def _generate_and_test(
  contribution: jax.Array,
  utility: jax.Array,
  age: jax.Array,
  to_replace: jax.Array,
  *,
  replacement_rate: float,
  decay_rate: float,
  maturity_threshold: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One layer's utility, age and count after a call, and the units replaced."""
  utility = decay_rate * utility + (1 - decay_rate) * contribution
  utility = utility.astype(jnp.float32)
  age = age + 1
  mature = age > maturity_threshold
  to_replace = to_replace + replacement_rate * jnp.sum(mature)
  count = jnp.floor(to_replace)
  # Immature units rank last; a stable sort ranks equal utilities by index.
  order = jnp.argsort(jnp.where(mature, utility, jnp.inf), stable=True)
  replaced = mature & (jnp.argsort(order) < count)
  return (
    jnp.where(replaced, 0.0, utility),
    jnp.where(replaced, 0, age),
    (to_replace - count).astype(jnp.float32),
    replaced,
  )


def _outgoing_size(next_kernel: jax.Array, h: jax.Array) -> jax.Array:
  """``sum_k |W[i, k]|`` over every entry of the next kernel that reads i."""
  units = jnp.shape(h)[-1]
  dtype = jnp.promote_types(next_kernel.dtype, jnp.float32)
  # [..., units, out] of a conv and [k * units, out] of a dense layer (row r
  # reads unit r % units) both fold to [k, units, out].
  size = jnp.abs(next_kernel.astype(dtype))
  return jnp.sum(size.reshape(-1, units, next_kernel.shape[-1]), axis=(0, 2))


def _hidden_layers(
  caller: str,
  params: Any,
  activations: Any,
  layers: _layers.LayersArg,
  fresh_params: Any,
) -> tuple[tuple[_layers.ResolvedLayer, ...], list[jax.Array]]:
  """The layers, and the activations of every layer but the last, checked."""
  _check_same_structure(caller, params, fresh_params)
  found = _unit_layers(caller, params, layers)
  hidden = _hidden_activations(caller, activations, len(found) - 1)
  _check_unit_shapes(caller, jax.tree.leaves(params), found, hidden)
  return found, hidden


def _recycle_units(
  caller: str,
  params: Any,
  opt_state: Any,
  found: tuple[_layers.ResolvedLayer, ...],
  units: tuple[jax.Array, ...],
  fresh_params: Any,
  optimizer: optax.GradientTransformation | Callable[[Any], Any],
) -> tuple[Any, Any]:
  """Gives the masked ``units`` of each layer but the last a fresh start.

  Fresh incoming weights and bias, zero outgoing weights, and zero optimizer
  state at all of those entries.
  """
  leaves, treedef = jax.tree.flatten(params)
  fresh_masks, zero_masks = _unit_masks(leaves, found, units)
  fresh_leaves = jax.tree.leaves(fresh_params)
  new_leaves = [
    _recycled(caller, leaf, fresh, fresh_masks.get(k), zero_masks.get(k))
    for k, (leaf, fresh) in enumerate(zip(leaves, fresh_leaves))
  ]
  reset_masks = {
    k: _union(fresh_masks.get(k), zero_masks.get(k))
    for k in {*fresh_masks, *zero_masks}
  }
  opt_state = optax.tree_map_params(
    optimizer,
    lambda moment, k: _zero_at(caller, moment, reset_masks.get(k)),
    opt_state,
    jax.tree.unflatten(treedef, range(len(leaves))),
  )
  return jax.tree.unflatten(treedef, new_leaves), opt_state


def _unit_layers(
  caller: str, params: Any, layers: _layers.LayersArg
) -> tuple[_layers.ResolvedLayer, ...]:
  """The dense/conv layers of ``layers``, checked: two or more whole layers,
  no normalization after one whose units are recycled."""
  spec = _layers.normalize_layers_arg(layers, caller=caller)
  resolved = _layers.resolve(params, spec, caller=caller)
  found = tuple(layer for layer in resolved if not layer.is_norm)
  if len(found) < 2:
    raise ValueError(
      f"{caller}: `layers` gives {len(found)} layer(s); {caller} resets the "
      "units of a layer and the weights of the next one that read them, so "
      "list two or more consecutive dense/conv layers in forward order."
    )
  _check_no_normalization_after(caller, params, resolved, found)
  for layer in found:
    if layer.stack_index:
      raise ValueError(
        f"{caller}: the layer {layer.layer.name!r} in `layers` is a slice of "
        f"a stacked leaf (Layer.index), which {caller} does not support; "
        "list layers with leaves of their own."
      )
  return found


# A layer's key (path, slice index) and whether it normalizes.
_OrderEntry = tuple[tuple[_layers.Path | None, tuple[int, ...]], bool]


def _check_no_normalization_after(
  caller: str,
  params: Any,
  resolved: tuple[_layers.ResolvedLayer, ...],
  found: tuple[_layers.ResolvedLayer, ...],
) -> None:
  """Raises where a normalization layer follows a layer to be recycled.

  Where it sits comes from the trace of traced layers, which also knows the
  normalization layers a list of them left out, and from ``layers`` itself.
  Without a trace, every normalization layer of the params must be listed.
  """
  recycled = {layer.layer.key for layer in found[:-1]}
  for order, traced in _forward_orders(caller, params, resolved):
    previous = None
    for key, is_norm in order:
      if is_norm and previous in recycled:
        raise ValueError(
          _normalization_error(caller, (previous, key), order, traced)
        )
      if not is_norm:
        previous = key


def _forward_orders(
  caller: str, params: Any, resolved: tuple[_layers.ResolvedLayer, ...]
) -> list[tuple[list[_OrderEntry], bool]]:
  """The order of the trace ``layers`` come from (if any), then their own;
  each with whether it is a trace's."""
  listed = [(layer.layer.key, layer.is_norm) for layer in resolved]
  traces = [r.layer.traced_from for r in resolved]
  trace = next((t for t in traces if t is not None), None)
  if trace is None:
    _check_normalization_listed(caller, params, resolved)
    return [(listed, False)]
  traced = [(key, key in trace.norm_keys) for key in trace.keys]
  return [(traced, True), (listed, False)]


def _check_normalization_listed(
  caller: str, params: Any, resolved: tuple[_layers.ResolvedLayer, ...]
) -> None:
  """Raises where the params hold a normalization layer (a ``scale`` leaf, or
  a vector ``weight``) that ``layers`` does not place."""
  listed = {layer.path for layer in resolved}
  leaves = jax.tree.leaves(params)
  groups = _layers.group_by_layer(_layers.leaf_paths(params))
  unlisted = [
    "/".join(map(str, path))
    for path, group in groups.items()
    if path not in listed
    and any(
      _layers.is_norm_weight(name, leaves[index])
      for name, index in group.items()
      if name in _layers.WEIGHT_NAMES
    )
  ]
  if unlisted:
    raise ValueError(
      f"{caller}: the params hold the normalization layer(s) {unlisted}, "
      "which `layers` does not list, so whether one follows a layer whose "
      f"units {caller} would recycle is unknown (it must not). Pass "
      "`layers` as optax_swr.layers_from_linen / layers_from_nnx / "
      "layers_from_equinox trace them, or list every layer in forward "
      "order, the normalization layers among them."
    )


def _normalization_error(
  caller: str,
  pair: tuple[Any, Any],
  order: list[_OrderEntry],
  traced: bool,
) -> str:
  """What to say where a normalization follows a layer: ``pair`` holds
  their keys; ``order`` is the forward order they were found in."""
  name, norm = (_layers.layer_key_name(key) for key in pair)
  return (
    f"{caller}: the layer {name!r} in `layers` is followed by the "
    f"normalization layer {norm!r}, so {caller} cannot recycle its units: "
    "a unit's fresh incoming weights move the mean and variance that a "
    "LayerNorm, RMSNorm or GroupNorm divides every unit by, and a "
    "BatchNorm's running statistics, scale and offset for the unit are the "
    "old unit's, so the network's function would change. Use swr instead "
    "(optax_swr.swr keeps the function of networks with normalization "
    f"layers){_recyclable(order, traced)}."
  )


def _recyclable(order: list[_OrderEntry], traced: bool) -> str:
  """The end of :func:`_normalization_error`: the layers left to recycle."""
  runs = _runs_without_normalization(order)
  if not runs:
    return (
      ": here a normalization follows every layer but the last, so no "
      "layers are left to recycle"
    )
  run = max(runs, key=len)
  names = [_layers.layer_key_name(key) for key in run]
  if traced:
    how = (
      "pass only those traced layers, e.g. `layers=[l for l in layers if "
      f"l.name in {names}]`"
    )
  else:  # Listed normalization layers may stay before and after the run.
    paths = [key[0] for key, is_norm in order if is_norm or key in run]
    how = f"pass `layers={paths!r}`"
  return (
    f"; or recycle only the layers {names}, which no normalization follows "
    f"(but the last): {how} and only their activations"
  )


def _runs_without_normalization(order: list[_OrderEntry]) -> list[list[Any]]:
  """The runs of two or more consecutive layers without a normalization
  between them, as lists of keys."""
  runs: list[list[Any]] = [[]]
  for key, is_norm in order:
    if is_norm:
      runs.append([])
    else:
      runs[-1].append(key)
  return [run for run in runs if len(run) > 1]


def _hidden_activations(
  caller: str, activations: Any, expected: int
) -> list[jax.Array]:
  """The activations as a list in forward order, one per hidden layer."""
  if isinstance(activations, Mapping):
    hidden = _ordered_by_name(caller, activations)
  elif isinstance(activations, (list, tuple)):
    hidden = list(activations)
  else:
    hidden = [activations]
  if len(hidden) != expected:
    raise ValueError(
      f"{caller}: `activations` has {len(hidden)} array(s) but `layers` has "
      f"{expected + 1} layers; pass the output (after its activation "
      "function) of every layer but the last, in forward order. The last "
      "layer's outputs are the network's and are never reset."
    )
  _dormant.check_activation_ranks(hidden, caller)
  return hidden


def _ordered_by_name(
  caller: str, activations: Mapping[Any, Any]
) -> list[jax.Array]:
  """The arrays of a dict, ordered by the numbers in their names."""
  paths = _layers.leaf_paths(activations)
  by_path = dict(zip(paths, jax.tree.leaves(activations)))
  try:
    order = _layers.infer_layer_order(paths, caller=caller)
  except ValueError:
    raise ValueError(
      f"{caller}: the names in the `activations` dict do not tell the "
      f"forward order: its arrays are at {sorted(map(str, paths))}, not one "
      "name with distinct numbers at each level (relu_0, relu_1, ...). Pass "
      "a list in forward order instead, e.g. [intermediates['relu_0'][0], "
      "...]."
    ) from None
  return [by_path[path] for path in order]


def _check_unit_shapes(
  caller: str,
  leaves: list[Any],
  found: tuple[_layers.ResolvedLayer, ...],
  hidden: list[jax.Array],
) -> None:
  """Each activation fits its layer, and the next layer reads its units."""
  for layer, after, h in zip(found, found[1:], hidden):
    units = jnp.shape(h)[-1]
    kernel = _kernel_shape(leaves, layer)
    bias = (
      None if layer.bias_index is None else jnp.shape(leaves[layer.bias_index])
    )
    if len(kernel) < 2 or kernel[-1] != units or bias not in (None, (units,)):
      raise ValueError(
        f"{caller}: the activations of layer {layer.path!r} have {units} "
        f"units (shape {jnp.shape(h)}), but its kernel has shape {kernel} "
        f"and its bias {bias}; a dense/conv layer with {units} units has a "
        f"kernel [..., {units}] and a bias [{units}]. Pass each layer's own "
        "activations, in the order of `layers`."
      )
    next_kernel = _kernel_shape(leaves, after)
    if not _reads_units(next_kernel, units):
      raise ValueError(
        f"{caller}: the layer {after.path!r} (kernel shape {next_kernel}) "
        f"cannot read the {units} units of {layer.path!r}: a conv kernel "
        f"must be [..., {units}, out] and a dense one [k * {units}, out] "
        "(k = 1, or the spatial size of a flattened channels-last conv "
        "output). List consecutive dense/conv layers in forward order."
      )


def _check_continual_backprop_state(
  state: Any,
  found: tuple[_layers.ResolvedLayer, ...],
  hidden: list[jax.Array],
) -> None:
  """``state`` has one utility, age and count per hidden layer, shaped so."""
  fix = (
    "make it with `continual_backprop_init(params, layers)` for the same "
    "params and `layers`, and pass each call's returned state to the next."
  )
  if not isinstance(state, ContinualBackpropState):
    raise ValueError(
      f"continual_backprop: `state` is a {type(state).__name__}, not a "
      f"ContinualBackpropState; {fix}"
    )
  for name, arrays in state._asdict().items():
    if len(arrays) != len(hidden):
      raise ValueError(
        f"continual_backprop: `state.{name}` has {len(arrays)} entries but "
        f"`layers` has {len(hidden)} layers before the last; {fix}"
      )
    for layer, h, array in zip(found, hidden, arrays):
      expected = () if name == "to_replace" else (jnp.shape(h)[-1],)
      if jnp.shape(array) != expected:
        raise ValueError(
          f"continual_backprop: `state.{name}` has shape {jnp.shape(array)} "
          f"for the layer {layer.path!r}, which has {jnp.shape(h)[-1]} "
          f"units: expected {expected}; {fix}"
        )


def _check_decay_rate(caller: str, value: Any) -> None:
  _check_coef(caller, "decay_rate", value, upper=None)
  try:
    number = float(value)
  except jax.errors.ConcretizationTypeError:
    return
  if number >= 1:
    raise ValueError(
      f"{caller}: `decay_rate` must be in [0, 1); got {value}. At 1 the "
      "utilities never leave 0; the authors' code uses 0.99."
    )


def _check_maturity_threshold(caller: str, value: Any) -> None:
  if (
    isinstance(value, bool)
    or not isinstance(value, numbers.Integral)
    or value < 0
  ):
    raise ValueError(
      f"{caller}: `maturity_threshold` must be an int >= 0, the number of "
      f"calls a new unit is protected for; got {value!r}. The authors' code "
      "uses 100."
    )


def _kernel(leaves: list[Any], layer: _layers.ResolvedLayer) -> jax.Array:
  assert layer.weight_index is not None  # _unit_layers rejects norm layers.
  return leaves[layer.weight_index]


def _kernel_shape(
  leaves: list[Any], layer: _layers.ResolvedLayer
) -> tuple[int, ...]:
  return jnp.shape(_kernel(leaves, layer))


def _reads_units(kernel: tuple[int, ...], units: int) -> bool:
  """Whether a dense/conv kernel reads ``units`` channels-last features."""
  if len(kernel) == 2:  # Dense; a multiple of units after flattening a conv.
    return kernel[0] % units == 0
  return len(kernel) > 2 and kernel[-2] == units


def _unit_masks(
  leaves: list[Any],
  found: tuple[_layers.ResolvedLayer, ...],
  units: tuple[jax.Array, ...],
) -> tuple[dict[int, jax.Array], dict[int, jax.Array]]:
  """By leaf index: the entries that take fresh values, and those zeroed."""
  fresh: dict[int, jax.Array] = {}
  zero: dict[int, jax.Array] = {}
  for layer, after, is_reset in zip(found, found[1:], units):
    assert layer.weight_index is not None and after.weight_index is not None
    kernel = _kernel_shape(leaves, layer)
    fresh[layer.weight_index] = jnp.broadcast_to(is_reset, kernel)
    if layer.bias_index is not None:
      fresh[layer.bias_index] = is_reset
    next_kernel = _kernel_shape(leaves, after)
    # Row r of the next kernel reads unit r % units: the identity for a conv
    # or dense layer, and channels-last flattening for a dense after a conv.
    rows = is_reset[np.arange(next_kernel[-2]) % is_reset.size]
    zero[after.weight_index] = jnp.broadcast_to(rows[:, None], next_kernel)
  return fresh, zero


def _recycled(
  caller: str, leaf: Any, fresh: Any, fresh_mask: Any, zero_mask: Any
) -> Any:
  if fresh_mask is not None:
    _check_fresh_shape(caller, leaf, fresh)
    leaf = jnp.where(fresh_mask, fresh, leaf).astype(leaf.dtype)
  if zero_mask is not None:
    leaf = jnp.where(zero_mask, jnp.zeros((), leaf.dtype), leaf)
  return leaf


def _check_fresh_shape(caller: str, leaf: Any, fresh: Any) -> None:
  if jnp.shape(fresh) != jnp.shape(leaf):
    raise ValueError(
      f"{caller}: `fresh_params` has a leaf of shape {jnp.shape(fresh)} "
      f"where `params` has {jnp.shape(leaf)}; pass a fresh initialisation "
      "of the same model."
    )


def _union(a: jax.Array | None, b: jax.Array | None) -> jax.Array | None:
  if a is None:
    return b
  return a if b is None else a | b


def _zero_at(caller: str, moment: Any, mask: jax.Array | None) -> Any:
  """Zeroes an optimizer-state leaf at the reset entries of its param."""
  if mask is None:
    return moment
  if jnp.shape(moment) != mask.shape:
    raise ValueError(
      f"{caller}: `opt_state` has a leaf of shape {jnp.shape(moment)} where "
      f"`optimizer` keeps a copy of a param of shape {mask.shape}; {caller} "
      "resets optimizer state entry by entry, so it needs an optimizer "
      "whose state has the params' shapes (e.g. Adam, not Adafactor)."
    )
  return jnp.where(mask, jnp.zeros((), moment.dtype), moment)


def _check_coef(
  function: str, name: str, value: Any, upper: float | None
) -> None:
  _config.check_coef(function, name, value, upper=upper, schedule=False)


def _check_same_structure(
  function: str, params: Any, other: Any, name: str = "fresh_params"
) -> None:
  _config.check_same_structure(
    function, ("params", name), params, other, "pass params of the same model."
  )
