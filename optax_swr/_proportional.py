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

"""A check users run on their own model: does one SWR step keep its function?"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_swr import _batch_stats
from optax_swr import _layers
from optax_swr import _swr

Path = _layers.Path


class ProportionalityReport(NamedTuple):
  """How far one SWR step is from scaling the outputs by one constant.

  Attributes:
    relative_error: ``max |after - s * before| / max |s * before|`` over all
      outputs, with ``s`` the least-squares common scale. About 1e-6 for a
      chain in float32; BatchNorm's epsilon adds up to about 1e-5.
    fitted_scale: that least-squares common scale ``s``.
    predicted_scale: the output scale SWR predicts: for a chain, the
      cumulative scale C of the last layer (Theorem 1); for traced layers,
      exp of the output's log-scale form.
    argmax_agreement: the fraction of rows (of the first output, along its
      last axis) whose argmax did not change.
    constrained_layers: the layers whose factor the traced equations tie to
      others' (residual merges, attention, non-homogeneous operations).
    pinned_layers: those whose factor they fix completely: SWR leaves them
      unscaled.
  """

  relative_error: float
  fitted_scale: float
  predicted_scale: float
  argmax_agreement: float
  constrained_layers: tuple[str, ...] = ()
  pinned_layers: tuple[str, ...] = ()


def check_proportional(
  apply_fn: Callable[..., Any],
  params: Any,
  tx_or_layers: optax.GradientTransformation | _layers.LayersArg,
  *inputs: Any,
  coef: float = 0.5,
  seed: int = 0,
  bias_noise: float = 0.5,
  batch_stats: Any = None,
) -> ProportionalityReport:
  """Applies one SWR step with zero updates and measures the output change.

  So that the step does something, the reference norms are first set to the
  current norms times random factors in [0.5, 2]. So that a wrong factor on
  a bias shows (Flax initialises biases at zero), every bias first gets
  Gaussian noise of standard deviation ``bias_noise``. Then the params are
  rescaled with zero updates and ``apply_fn`` is run before and after.

  Args:
    apply_fn: ``apply_fn(params, *inputs)`` returns the outputs (any tree of
      arrays), e.g. ``lambda p, x: model.apply({"params": p}, x)``.
    params: the params to rescale.
    tx_or_layers: an ``optax_swr.swr(...)`` transformation (used as
      configured; avoid chains whose base optimizer moves params on zero
      gradients, like weight decay), or the ``layers`` to build
      ``swr(coef, layers=...)`` with (``None`` to infer them). With a
      transformation, the biases are the leaves named ``bias``, ``b`` or
      ``offset``; with layers, the layers' biases.
    *inputs: the inputs passed to ``apply_fn``.
    coef: the coefficient used when ``tx_or_layers`` are layers.
    seed: seed of the random reference-norm factors and bias noise.
    bias_noise: standard deviation of the noise added to every bias; 0
      checks the params as they are.
    batch_stats: BatchNorm running statistics, to check a model in eval
      mode: ``apply_fn(params, batch_stats, *inputs)`` is then called, after
      the step with the statistics synced by :func:`sync_batch_stats`
      (needs ``tx_or_layers`` to be layers).

  Returns:
    A :class:`ProportionalityReport`.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax_swr
    >>> params = {
    ...     "Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
    ...     "Dense_1": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)},
    ... }
    >>> def mlp(p, x):
    ...   h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    ...   return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    >>> report = optax_swr.check_proportional(mlp, params, None, jnp.ones((5, 3)))
    >>> report.relative_error < 1e-6
    True
  """
  is_tx = isinstance(tx_or_layers, optax.GradientTransformation)
  if batch_stats is not None and is_tx:
    raise ValueError(
      "check_proportional: `batch_stats` needs the layers, to sync the "
      "statistics; pass `tx_or_layers` as the layers, not a transformation."
    )
  graph = getattr(tx_or_layers, "graph", None)
  if isinstance(tx_or_layers, optax.GradientTransformation):
    tx = tx_or_layers
    biases = _bias_leaves_by_name(params)
  else:
    tx = _swr.swr(coef=coef, layers=tx_or_layers)
    spec = _layers.normalize_layers_arg(
      tx_or_layers, caller="check_proportional"
    )
    found = _layers.resolve(params, spec, caller="check_proportional")
    biases = {r.bias_index for r in found if r.bias_index is not None}
  params = _with_bias_noise(params, biases, bias_noise, seed)
  state = _with_random_reference_norms(tx.init(params), seed)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, state = tx.update(zeros, state, params)
  rescaled = optax.apply_updates(params, updates)

  if batch_stats is None:
    before = jax.tree.leaves(apply_fn(params, *inputs))
    after = jax.tree.leaves(apply_fn(rescaled, *inputs))
  else:
    synced = _batch_stats.sync_batch_stats(
      batch_stats, state, [item.layer for item in found]
    )
    before = jax.tree.leaves(apply_fn(params, batch_stats, *inputs))
    after = jax.tree.leaves(apply_fn(rescaled, synced, *inputs))
  flat_before = np.concatenate([np.ravel(x).astype(np.float64) for x in before])
  flat_after = np.concatenate([np.ravel(x).astype(np.float64) for x in after])
  scale = flat_after @ flat_before / max(flat_before @ flat_before, 1e-300)
  error = np.abs(flat_after - scale * flat_before).max()
  predicted = float(optax.tree.get(state, "cumulative_scales")[-1])
  constrained: tuple[str, ...] = ()
  pinned: tuple[str, ...] = ()
  if graph is not None:
    log_c = np.log(np.asarray(optax.tree.get(state, "layer_scales")))
    predicted = float(np.exp(graph.output_form @ log_c))
    names = [item.layer.name for item in found]
    classes = graph.classes()
    constrained = tuple(n for n, c in zip(names, classes) if c != "free")
    pinned = tuple(n for n, c in zip(names, classes) if c == "pinned")
  return ProportionalityReport(
    relative_error=float(
      error / max(np.abs(scale * flat_before).max(), 1e-300)
    ),
    fitted_scale=float(scale),
    predicted_scale=predicted,
    argmax_agreement=float(
      np.mean(np.argmax(before[0], -1) == np.argmax(after[0], -1))
    ),
    constrained_layers=constrained,
    pinned_layers=pinned,
  )


def _with_random_reference_norms(opt_state: Any, seed: int) -> Any:
  rng = np.random.default_rng(seed)
  is_swr_state = lambda node: isinstance(node, _swr.SWRState)

  def perturb(node):
    if not is_swr_state(node):
      return node
    factors = rng.uniform(0.5, 2.0, size=node.reference_norms.shape)
    scaled = node.reference_norms * factors
    return node._replace(
      reference_norms=scaled.astype(node.reference_norms.dtype)
    )

  return jax.tree.map(perturb, opt_state, is_leaf=is_swr_state)


def _bias_leaves_by_name(params: Any) -> set[int]:
  return {
    index
    for index, path in enumerate(_layers.leaf_paths(params))
    if path and path[-1] in _layers.BIAS_NAMES
  }


def _with_bias_noise(
  params: Any, biases: set[int], std: float, seed: int
) -> Any:
  if not std or not biases:
    return params
  rng = np.random.default_rng([seed, 1])
  leaves, treedef = jax.tree.flatten(params)
  for index in biases:
    leaf = leaves[index]
    noise = rng.normal(0.0, std, size=np.shape(leaf))
    leaves[index] = (leaf + noise).astype(leaf.dtype)
  return jax.tree.unflatten(treedef, leaves)
