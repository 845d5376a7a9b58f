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

One acts on the params and the optimizer state every few updates:

* :func:`redo`: ReDo (Sokar et al., 2023): the units whose activations are
  near zero get fresh incoming weights, zero outgoing weights and zero
  optimizer moments.

Example:
  >>> import jax.numpy as jnp
  >>> import optax
  >>> from optax_swr import baselines
  >>> tx = optax.chain(baselines.l2(1e-2), optax.adam(1e-3))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_swr import _config
from optax_swr import _dormant
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
      infer them from numbered names. No normalization layers or slices of
      stacks.
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
      layers, an activation's units do not match its layer's width, a layer
      is not dense/conv, or the next kernel cannot read the layer's units.

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
  _check_same_structure("redo", params, fresh_params)
  leaves, treedef = jax.tree.flatten(params)
  found = _redo_layers(params, layers)
  hidden = _redo_activations(activations, len(found) - 1)
  _check_redo_shapes(leaves, found, hidden)
  dormant = tuple(_dormant.dormant_units(h, tau) for h in hidden)
  fresh_masks, zero_masks = _redo_masks(leaves, found, dormant)
  fresh_leaves = jax.tree.leaves(fresh_params)
  new_leaves = [
    _recycled(leaf, fresh, fresh_masks.get(k), zero_masks.get(k))
    for k, (leaf, fresh) in enumerate(zip(leaves, fresh_leaves))
  ]
  reset_masks = {
    k: _union(fresh_masks.get(k), zero_masks.get(k))
    for k in {*fresh_masks, *zero_masks}
  }
  opt_state = optax.tree_map_params(
    optimizer,
    lambda moment, k: _zero_at(moment, reset_masks.get(k)),
    opt_state,
    jax.tree.unflatten(treedef, range(len(leaves))),
  )
  return jax.tree.unflatten(treedef, new_leaves), opt_state, dormant


def _redo_layers(
  params: Any, layers: _layers.LayersArg
) -> tuple[_layers.ResolvedLayer, ...]:
  """The layers, checked to be two or more whole dense/conv layers."""
  spec = _layers.normalize_layers_arg(layers, caller="redo")
  found = _layers.resolve(params, spec, caller="redo")
  if len(found) < 2:
    raise ValueError(
      f"redo: `layers` gives {len(found)} layer(s); ReDo resets the units "
      "of a layer and the weights of the next one that read them, so list "
      "two or more consecutive dense/conv layers in forward order."
    )
  for layer in found:
    if layer.is_norm or layer.weight_index is None:
      raise ValueError(
        f"redo: the layer {layer.path!r} in `layers` is a normalization "
        "layer; ReDo resets the units of dense/conv layers. Leave "
        "normalization layers out of `layers`."
      )
    if layer.stack_index:
      raise ValueError(
        f"redo: the layer {layer.layer.name!r} in `layers` is a slice of a "
        "stacked leaf (Layer.index), which redo does not support; list "
        "layers with leaves of their own."
      )
  return found


def _redo_activations(activations: Any, expected: int) -> list[jax.Array]:
  """The activations as a list in forward order, one per hidden layer."""
  if isinstance(activations, Mapping):
    hidden = _ordered_by_name(activations)
  elif isinstance(activations, (list, tuple)):
    hidden = list(activations)
  else:
    hidden = [activations]
  if len(hidden) != expected:
    raise ValueError(
      f"redo: `activations` has {len(hidden)} array(s) but `layers` has "
      f"{expected + 1} layers; pass the output (after its activation "
      "function) of every layer but the last, in forward order. The last "
      "layer's outputs are the network's and are never reset."
    )
  _dormant.check_activation_ranks(hidden, "redo")
  return hidden


def _ordered_by_name(activations: Mapping[Any, Any]) -> list[jax.Array]:
  """The arrays of a dict, ordered by the numbers in their names."""
  paths = _layers.leaf_paths(activations)
  by_path = dict(zip(paths, jax.tree.leaves(activations)))
  try:
    order = _layers.infer_layer_order(paths, caller="redo")
  except ValueError:
    raise ValueError(
      "redo: the names in the `activations` dict do not tell the forward "
      f"order: its arrays are at {sorted(map(str, paths))}, not one name "
      "with distinct numbers at each level (relu_0, relu_1, ...). Pass a "
      "list in forward order instead, e.g. [intermediates['relu_0'][0], "
      "...]."
    ) from None
  return [by_path[path] for path in order]


def _check_redo_shapes(
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
        f"redo: the activations of layer {layer.path!r} have {units} units "
        f"(shape {jnp.shape(h)}), but its kernel has shape {kernel} and its "
        f"bias {bias}; a dense/conv layer with {units} units has a kernel "
        f"[..., {units}] and a bias [{units}]. Pass each layer's own "
        "activations, in the order of `layers`."
      )
    next_kernel = _kernel_shape(leaves, after)
    if not _reads_units(next_kernel, units):
      raise ValueError(
        f"redo: the layer {after.path!r} (kernel shape {next_kernel}) "
        f"cannot read the {units} units of {layer.path!r}: a conv kernel "
        f"must be [..., {units}, out] and a dense one [k * {units}, out] "
        "(k = 1, or the spatial size of a flattened channels-last conv "
        "output). List consecutive dense/conv layers in forward order."
      )


def _kernel_shape(
  leaves: list[Any], layer: _layers.ResolvedLayer
) -> tuple[int, ...]:
  assert layer.weight_index is not None  # _redo_layers rejects norm layers.
  return jnp.shape(leaves[layer.weight_index])


def _reads_units(kernel: tuple[int, ...], units: int) -> bool:
  """Whether a dense/conv kernel reads ``units`` channels-last features."""
  if len(kernel) == 2:  # Dense; a multiple of units after flattening a conv.
    return kernel[0] % units == 0
  return len(kernel) > 2 and kernel[-2] == units


def _redo_masks(
  leaves: list[Any],
  found: tuple[_layers.ResolvedLayer, ...],
  dormant: tuple[jax.Array, ...],
) -> tuple[dict[int, jax.Array], dict[int, jax.Array]]:
  """By leaf index: the entries that take fresh values, and those zeroed."""
  fresh: dict[int, jax.Array] = {}
  zero: dict[int, jax.Array] = {}
  for layer, after, is_dormant in zip(found, found[1:], dormant):
    assert layer.weight_index is not None and after.weight_index is not None
    kernel = _kernel_shape(leaves, layer)
    fresh[layer.weight_index] = jnp.broadcast_to(is_dormant, kernel)
    if layer.bias_index is not None:
      fresh[layer.bias_index] = is_dormant
    next_kernel = _kernel_shape(leaves, after)
    # Row r of the next kernel reads unit r % units: the identity for a conv
    # or dense layer, and channels-last flattening for a dense after a conv.
    rows = is_dormant[np.arange(next_kernel[-2]) % is_dormant.size]
    zero[after.weight_index] = jnp.broadcast_to(rows[:, None], next_kernel)
  return fresh, zero


def _recycled(leaf: Any, fresh: Any, fresh_mask: Any, zero_mask: Any) -> Any:
  if fresh_mask is not None and jnp.shape(fresh) != jnp.shape(leaf):
    raise ValueError(
      f"redo: `fresh_params` has a leaf of shape {jnp.shape(fresh)} where "
      f"`params` has {jnp.shape(leaf)}; pass a fresh initialisation of the "
      "same model."
    )
  if fresh_mask is not None:
    leaf = jnp.where(fresh_mask, fresh, leaf).astype(leaf.dtype)
  if zero_mask is not None:
    leaf = jnp.where(zero_mask, jnp.zeros((), leaf.dtype), leaf)
  return leaf


def _union(a: jax.Array | None, b: jax.Array | None) -> jax.Array | None:
  if a is None:
    return b
  return a if b is None else a | b


def _zero_at(moment: Any, mask: jax.Array | None) -> Any:
  """Zeroes an optimizer-state leaf at the reset entries of its param."""
  if mask is None:
    return moment
  if jnp.shape(moment) != mask.shape:
    raise ValueError(
      f"redo: `opt_state` has a leaf of shape {jnp.shape(moment)} where "
      f"`optimizer` keeps a copy of a param of shape {mask.shape}; redo "
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
