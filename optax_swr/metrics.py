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

"""Plasticity metrics: weight norms, balancedness, dormant units, feature rank.

Every metric is a pure function of arrays that runs under ``jax.jit``: the
layer structure is read from the params tree once per trace, and nothing
branches on values. Import them as ``from optax_swr import metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_swr import _dormant
from optax_swr import _layers
from optax_swr import _norms

Path = _layers.Path

__all__ = (
  "balancedness",
  "dormant_fraction",
  "effective_rank",
  "entropy_effective_rank",
  "layer_norms",
  "lpq_norm",
)

DEFAULT_ITERATIONS = 1000


def layer_norms(params: Any, layers: _layers.LayersArg = None) -> jax.Array:
  """Frobenius norm of every layer's weight, in forward order.

  The layers are the ones :func:`optax_swr.swr` rescales, found the same way
  (normalization layers, whose weight is ``scale``, included).

  Args:
    params: the params tree.
    layers: the layers in forward order, as for :func:`optax_swr.swr`;
      ``None`` infers the order from numbered names (``Dense_0``, ...).

  Returns:
    A float32 array of shape ``[num_layers]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_swr import metrics
    >>> params = {
    ...     "Dense_0": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.ones(2)},
    ...     "Dense_1": {"kernel": jnp.full((2, 1), 3.0)},
    ... }
    >>> print(metrics.layer_norms(params))
    [4.        4.2426405]
  """
  found = _resolve(params, layers, "layer_norms")
  # The same norms as swr's state, from the same code.
  return _norms.weight_norms(jax.tree.leaves(params), found)


def lpq_norm(
  params: Any,
  layers: _layers.LayersArg = None,
  *,
  p: float = 2.0,
  q: float = 2.0,
) -> jax.Array:
  r"""The entry-wise :math:`\ell_{p,q}` norm of a chain of dense/conv layers.

  .. math::
    \|W\|_{p,q} = \Big(\sum_i \Big(\sum_j |W_{ij}|^p\Big)^{q/p}\Big)^{1/q},

  where :math:`i` runs over the units of every layer (the output units of
  dense layers, the output channels of conv layers) and :math:`j` over the
  weights into unit :math:`i` (for a conv, all of its kernel entries for that
  output channel). Biases are not part of the norm. See :func:`balancedness`.

  Args:
    params: the params tree.
    layers: the dense/conv layers in forward order; ``None`` infers them as
      :func:`optax_swr.swr` does.
    p: the exponent inside each unit, > 0.
    q: the exponent across units, > 0.

  Returns:
    A scalar (float32, or float64 for float64 params under x64).

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_swr import metrics
    >>> params = {
    ...     "Dense_0": {"kernel": jnp.array([[3.0], [4.0]])},
    ...     "Dense_1": {"kernel": jnp.array([[12.0]])},
    ... }
    >>> print(metrics.lpq_norm(params, p=2.0, q=2.0))  # sqrt(9 + 16 + 144)
    13.0
  """
  _check_exponents("lpq_norm", p, q)
  return _lpq_norm(_chain_weights(params, layers, "lpq_norm"), p, q)


@functools.partial(jax.jit, static_argnames=("p", "q"))
def _lpq_norm(weights: list[jax.Array], p: float, q: float) -> jax.Array:
  blocks = _unit_blocks(weights, p)
  return _objective(blocks, _unit_scales(blocks), p, q) ** (1.0 / q)


def balancedness(
  params: Any,
  layers: _layers.LayersArg = None,
  *,
  p: float = 2.0,
  q: float = 2.0,
  iterations: int = DEFAULT_ITERATIONS,
) -> jax.Array:
  r"""How far a ReLU network is from its best-balanced rescaling (>= 1).

  A hidden unit's incoming weights and bias may be multiplied by any
  :math:`a > 0` and its outgoing weights by :math:`1/a` without changing what
  a network with positively homogeneous activations (ReLU, leaky ReLU, max /
  average pooling) computes. Balancedness is

  .. math::
    \frac{\|W\|_{p,q}}{\inf_{a > 0} \|W(a)\|_{p,q}}, \qquad
    \|W\|_{p,q} = \Big(\sum_i \Big(\sum_j |W_{ij}|^p\Big)^{q/p}\Big)^{1/q},

  the entry-wise norm of Neyshabur et al. (2015) that the SWR paper uses
  (Appendix C): :math:`i` runs over the units of every layer (hidden and
  output), :math:`j` over the weights into unit :math:`i`, and
  :math:`W(a)_{ij} = a_i W_{ij} / a_j` with :math:`a = 1` at the inputs and
  outputs. Biases do not enter the norm. 1 means perfectly balanced. The
  minimum is found with multiplicative updates in the manner of Saul (2023,
  Algorithm 1): no learning rate, all hidden units in parallel,

  .. math::
    a_i \leftarrow a_i \Big(\frac{\sum_k \rho_k^{q/p - 1} |W_{ki}(a)|^p}
    {\rho_i^{q/p}}\Big)^{p/(p + q)^2}, \qquad
    \rho_i = \sum_j |W_{ij}(a)|^p,

  the weight of what leaves unit :math:`i` over what enters it (equal at the
  minimum). We chose the exponent :math:`p/(p+q)^2` because with it no
  update increases the norm, for any
  :math:`p, q > 0` (an auxiliary-function argument from Young's and
  Jensen's inequalities), and the norm is convex in :math:`\log a`, so the
  updates approach the global minimum. Tolerance: running 10 times longer
  than the default ``iterations`` changed the ratio by less than 1e-6
  relative on 16-layer conv/dense chains with per-unit scales spread by up
  to :math:`e^{\pm 2}`; deeper or worse-scaled networks may need more.

  A unit whose incoming or outgoing weights are all zero (or that is cut
  off from the input or output by such units) can be scaled until its
  weights vanish, so they count as zero in the minimum (an infimum, not
  attained).

  A layer is a dense layer (kernel ``[in, out]``) or a conv layer (kernel
  ``[..., in, out]``, NHWC); a unit is an output channel. A dense layer after
  a conv may read the flattened NHWC features: the rows of channel ``c`` of
  ``C`` channels are then rows ``c::C``. Layers must run in a chain, one after
  the other. Normalization layers undo the rescaling of their input, so there
  is no such symmetry and no balancedness for networks that have them.

  Args:
    params: the params tree.
    layers: the dense/conv layers in forward order; ``None`` infers them as
      :func:`optax_swr.swr` does.
    p: the exponent inside each unit, > 0.
    q: the exponent across units, > 0.
    iterations: the number of multiplicative updates, >= 1. ``p``, ``q`` and
      ``iterations`` are Python numbers (static under ``jax.jit``).

  Returns:
    A scalar >= 1 (float32, or float64 for float64 params under x64);
    ``inf`` if the infimum is 0 (no input-to-output path has nonzero
    weights).

  Raises:
    ValueError: for a normalization layer, layers that do not form a chain,
      or ``p``, ``q``, ``iterations`` out of range.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from optax_swr import metrics
    >>> params = {  # one hidden unit: min of 4 a^2 + 1 / a^2 is 2 sqrt(4)
    ...     "Dense_0": {"kernel": jnp.array([[2.0]])},
    ...     "Dense_1": {"kernel": jnp.array([[1.0]])},
    ... }
    >>> print(jax.jit(metrics.balancedness)(params).round(4))  # sqrt(5 / 4)
    1.118

  References:
    Saul, `Weight-balancing fixes and flows for deep learning
    <https://openreview.net/forum?id=uaHyXxyp2r>`_, TMLR 2023.

    Neyshabur, Tomioka and Srebro, `Norm-based capacity control in neural
    networks <https://arxiv.org/abs/1503.00036>`_, COLT 2015.
  """
  _check_exponents("balancedness", p, q)
  _check_iterations(iterations)
  weights = _chain_weights(params, layers, "balancedness")
  return _balancedness(weights, p, q, jnp.int32(iterations))


# Jitted so that eager calls (logging in a Python loop) compile once, for any
# number of iterations.
@functools.partial(jax.jit, static_argnames=("p", "q"))
def _balancedness(
  weights: list[jax.Array], p: float, q: float, iterations: jax.Array
) -> jax.Array:
  blocks = _unit_blocks(weights, p)
  initial = _objective(blocks, _unit_scales(blocks), p, q)
  live_blocks = _without_dead_units(blocks)

  def update(_, scales):
    return _rebalanced(live_blocks, scales, p, q)

  scales = jax.lax.fori_loop(0, iterations, update, _unit_scales(blocks))
  minimum = jnp.minimum(_objective(live_blocks, scales, p, q), initial)
  return jnp.where(initial > 0, (initial / minimum) ** (1.0 / q), 1.0)


def _check_exponents(function: str, p: Any, q: Any) -> None:
  for name, value in (("p", p), ("q", q)):
    _check_static(function, name, value)
    if (
      isinstance(value, bool)
      or not isinstance(value, numbers.Real)
      or not 0 < float(value) < np.inf
    ):
      raise ValueError(
        f"{function}: `{name}` must be a positive finite number, e.g. 2.0 "
        f"(p = q = 2 is the Frobenius norm of all weights); got {value!r}."
      )


def _check_iterations(iterations: Any) -> None:
  _check_static("balancedness", "iterations", iterations)
  if (
    isinstance(iterations, bool)
    or not isinstance(iterations, (int, np.integer))
    or iterations < 1
  ):
    raise ValueError(
      "balancedness: `iterations` must be an int >= 1 (the number of "
      f"multiplicative updates); got {iterations!r}."
    )


def _check_static(function: str, name: str, value: Any) -> None:
  if isinstance(value, jax.core.Tracer):
    raise ValueError(
      f"{function}: `{name}` must be a Python number, but it is traced. "
      f"Under jax.jit, mark it static: jax.jit({function}, "
      f"static_argnames=('{name}',)), or bind it with functools.partial."
    )


def _resolve(
  params: Any, layers: _layers.LayersArg, function: str
) -> tuple[_layers.ResolvedLayer, ...]:
  spec = _layers.normalize_layers_arg(layers, caller=function)
  return _layers.resolve(params, spec, caller=function)


def _chain_weights(
  params: Any, layers: _layers.LayersArg, function: str
) -> list[jax.Array]:
  """The kernels of the layers, in forward order, checked to form a chain."""
  found = _resolve(params, layers, function)
  for layer in found:
    if layer.is_norm:
      raise ValueError(
        f"{function}: the layer {layer.path!r} is a normalization layer. "
        "Normalization undoes any rescaling of its input, so balancedness "
        "is defined for chains of dense/conv layers without normalization "
        "layers. Measure such a network with metrics.layer_norms instead."
      )
  leaves = jax.tree.leaves(params)
  weights = [
    jnp.asarray(leaves[layer.weight_index])[layer.stack_index]  # type: ignore[index]
    for layer in found
  ]
  _check_chain(found, weights, function)
  return weights


def _unit_blocks(weights: list[jax.Array], p: float) -> list[jax.Array]:
  """S_l[i, o] = sum of |w|^p over the weights from unit i to unit o of l.

  The first block has one row: the network's inputs never rescale, so they
  act as one unit.
  """
  dtype = jnp.result_type(jnp.float32, *weights)
  powers = [jnp.abs(w.astype(dtype)) ** p for w in weights]
  blocks = [powers[0].reshape(-1, weights[0].shape[-1]).sum(0, keepdims=True)]
  for before, power in zip(weights, powers[1:]):
    blocks.append(power.reshape(-1, before.shape[-1], power.shape[-1]).sum(0))
  return blocks


def _check_chain(
  found: tuple[_layers.ResolvedLayer, ...],
  weights: list[jax.Array],
  function: str,
) -> None:
  for layer, weight in zip(found, weights):
    if weight.ndim < 2:
      raise ValueError(
        f"{function}: the weight of layer {layer.path!r} has shape "
        f"{weight.shape}, but a dense or conv kernel has shape [..., in, "
        "out]. List only dense/conv layers in `layers`."
      )
  for before, after, weight, previous in zip(
    found, found[1:], weights[1:], weights
  ):
    units, fan_in = previous.shape[-1], int(np.prod(weight.shape[:-1]))
    if fan_in % units:
      raise ValueError(
        f"{function}: the layer {after.path!r} (kernel shape "
        f"{weight.shape}) cannot read the {units} outputs of "
        f"{before.path!r}: its {fan_in} inputs are not a multiple of "
        f"{units}. Pass `layers=` with the dense/conv layers in the order "
        "the network runs them."
      )


def _unit_scales(blocks: list[jax.Array]) -> list[jax.Array]:
  """a^p for every hidden unit: ones, the unrescaled network."""
  return [jnp.ones(block.shape[1], block.dtype) for block in blocks[:-1]]


def _all_scales(
  blocks: list[jax.Array], scales: list[jax.Array]
) -> list[jax.Array]:
  """a^p of the inputs, the hidden units and the outputs (fixed at 1)."""
  dtype = blocks[0].dtype
  inputs, outputs = jnp.ones(1, dtype), jnp.ones(blocks[-1].shape[1], dtype)
  return [inputs, *scales, outputs]


def _incoming(
  blocks: list[jax.Array], scales: list[jax.Array]
) -> list[jax.Array]:
  """rho: the sum of |w|^p into every unit of every layer, after rescaling."""
  full = _all_scales(blocks, scales)
  return [
    after * ((1.0 / before) @ block)
    for block, before, after in zip(blocks, full, full[1:])
  ]


def _safe_power(x: jax.Array, exponent: float) -> jax.Array:
  """x ** exponent, and 0 where x == 0 (also for negative exponents)."""
  positive = x > 0
  return jnp.where(positive, jnp.where(positive, x, 1.0) ** exponent, 0.0)


def _objective(
  blocks: list[jax.Array], scales: list[jax.Array], p: float, q: float
) -> jax.Array:
  """||W(a)||_{p,q} ** q."""
  rhos = _incoming(blocks, scales)
  return jnp.asarray(sum(jnp.sum(_safe_power(rho, q / p)) for rho in rhos))


def _rebalanced(
  blocks: list[jax.Array], scales: list[jax.Array], p: float, q: float
) -> list[jax.Array]:
  """One multiplicative update of Saul (2023) at every hidden unit at once."""
  full = _all_scales(blocks, scales)
  rhos = _incoming(blocks, scales)
  new_scales = []
  for index, scale in enumerate(scales):
    weights_out = _safe_power(rhos[index + 1], q / p - 1.0) * full[index + 2]
    outgoing = (blocks[index + 1] @ weights_out) / scale
    incoming = _safe_power(rhos[index], q / p)
    live = (outgoing > 0) & (incoming > 0)
    ratio = jnp.where(live, outgoing, 1.0) / jnp.where(live, incoming, 1.0)
    new_scales.append(scale * ratio ** (p * p / (p + q) ** 2))
  return new_scales


def _without_dead_units(blocks: list[jax.Array]) -> list[jax.Array]:
  """Zeroes the weights of units that rescaling can make vanish.

  A unit with no nonzero path from the input (or to the output) can be scaled
  up (down) without bound, which sends all of its weights to 0.
  """
  from_input = [jnp.ones(1, bool)]
  for block in blocks:
    from_input.append((from_input[-1].astype(block.dtype) @ block) > 0)
  to_output = [jnp.ones(blocks[-1].shape[1], bool)]
  for block in reversed(blocks):
    to_output.insert(0, (block @ to_output[0].astype(block.dtype)) > 0)
  live = [a & b for a, b in zip(from_input, to_output)]
  live[0] = jnp.ones(1, bool)
  live[-1] = jnp.ones(blocks[-1].shape[1], bool)
  return [
    jnp.where(before[:, None] & after[None, :], block, 0.0)
    for block, before, after in zip(blocks, live, live[1:])
  ]


def dormant_fraction(
  activations: jax.Array | Sequence[jax.Array], tau: float = 0.0
) -> jax.Array:
  r"""The fraction of tau-dormant units (Sokar et al., 2023).

  Unit :math:`i` of a layer with :math:`H` units is dormant when

  .. math::
    s_i = \frac{\mathbb{E}_x |h_i(x)|}{\frac{1}{H} \sum_k \mathbb{E}_x
    |h_k(x)|} \le \tau,

  the expectation being the mean over the batch and over every axis between
  the batch and the units (e.g. the spatial axes of a conv layer). A layer
  whose activations are all zero has every unit dormant.

  Args:
    activations: one array ``[batch, ..., units]`` or a sequence of them, one
      per layer.
    tau: the threshold, >= 0. With 0, a unit is dormant when it is exactly 0
      on the whole batch.

  Returns:
    A float32 scalar: dormant units over all units of all given layers.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_swr import metrics
    >>> h = jnp.array([[0.0, 1.0, 2.0, 0.1], [0.0, 3.0, 2.0, 0.1]])
    >>> print(metrics.dormant_fraction(h))  # the first unit is always 0
    0.25
    >>> print(metrics.dormant_fraction(h, tau=0.1))  # 0.1 / 1.025 <= 0.1
    0.5

  References:
    Sokar, Agarwal, Castro and Evci, `The dormant neuron phenomenon in deep
    reinforcement learning <https://arxiv.org/abs/2302.12902>`_, ICML 2023.
  """
  layers = _as_layer_list(activations)
  _check_tau(tau)
  dormant = [_dormant.dormant_units(h, tau) for h in layers]
  total = sum(d.size for d in dormant)
  return jnp.asarray(sum(jnp.sum(d) for d in dormant) / total, jnp.float32)


def _as_layer_list(activations: Any) -> list[jax.Array]:
  layers = (
    list(activations)
    if isinstance(activations, (list, tuple))
    else [activations]
  )
  if not layers:
    raise ValueError(
      "dormant_fraction: `activations` is empty; pass one array [batch, "
      "..., units] or a list of them, one per layer."
    )
  _dormant.check_activation_ranks(layers, "dormant_fraction")
  return layers


def _check_tau(tau: Any) -> None:
  try:
    value = float(tau)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return  # A traced threshold can't be checked.
  if not value >= 0:
    raise ValueError(
      f"dormant_fraction: `tau` must be >= 0 (Sokar et al. use 0 to 0.1); "
      f"got {tau!r}."
    )


def effective_rank(features: jax.Array, delta: float = 0.01) -> jax.Array:
  r"""The srank of Kumar et al. (2021): singular values for 1 - delta mass.

  With :math:`\sigma_1 \ge \sigma_2 \ge \dots` the singular values of the
  feature matrix,

  .. math::
    \mathrm{srank}_\delta = \min\Big\{k : \frac{\sum_{i \le k} \sigma_i}
    {\sum_i \sigma_i} \ge 1 - \delta\Big\},

  and 0 for an all-zero matrix.

  Args:
    features: ``[batch, dim]``, e.g. the penultimate layer's activations.
    delta: the fraction of singular-value mass to ignore, in [0, 1).

  Returns:
    An int32 scalar.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_swr import metrics
    >>> print(metrics.effective_rank(jnp.diag(jnp.array([3.0, 2.0, 1.0, 0.0]))))
    3
    >>> print(metrics.effective_rank(jnp.diag(jnp.array([100.0, 0.5]))))
    1

  References:
    Kumar, Agarwal, Ghosh and Levine, `Implicit under-parameterization
    inhibits data-efficient deep reinforcement learning
    <https://arxiv.org/abs/2010.14498>`_, ICLR 2021.
  """
  _check_delta(delta)
  singular_values = _singular_values(features, "effective_rank")
  total = jnp.sum(singular_values)
  mass = jnp.cumsum(singular_values) / jnp.where(total > 0, total, 1.0)
  rank = jnp.minimum(jnp.sum(mass < 1.0 - delta) + 1, singular_values.size)
  return jnp.where(total > 0, rank, 0).astype(jnp.int32)


def entropy_effective_rank(features: jax.Array) -> jax.Array:
  r"""The effective rank of Roy and Vetterli (2007).

  :math:`\exp(-\sum_i p_i \log p_i)` with :math:`p_i = \sigma_i / \sum_k
  \sigma_k` the normalized singular values of the feature matrix; 0 for an
  all-zero matrix. ``k`` orthonormal columns have effective rank ``k``.

  Args:
    features: ``[batch, dim]``.

  Returns:
    A float scalar (float32 for float32 features).

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_swr import metrics
    >>> print(metrics.entropy_effective_rank(jnp.eye(4)[:, :3]).round(4))
    3.0

  References:
    Roy and Vetterli, `The effective rank: a measure of effective
    dimensionality <https://ieeexplore.ieee.org/document/7098875>`_, EUSIPCO
    2007.
  """
  singular_values = _singular_values(features, "entropy_effective_rank")
  total = jnp.sum(singular_values)
  probabilities = singular_values / jnp.where(total > 0, total, 1.0)
  entropy = jnp.sum(jax.scipy.special.entr(probabilities))
  return jnp.where(total > 0, jnp.exp(entropy), 0.0)


def _singular_values(features: jax.Array, name: str) -> jax.Array:
  if jnp.ndim(features) != 2:
    raise ValueError(
      f"{name}: `features` must be a [batch, dim] matrix; got shape "
      f"{jnp.shape(features)}. Flatten other axes first, e.g. "
      "features.reshape(len(features), -1)."
    )
  features = jnp.asarray(features)
  dtype = jnp.promote_types(features.dtype, jnp.float32)
  return jnp.linalg.svd(features.astype(dtype), compute_uv=False)


def _check_delta(delta: Any) -> None:
  try:
    value = float(delta)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return  # A traced delta can't be checked.
  if not 0.0 <= value < 1.0:
    raise ValueError(
      "effective_rank: `delta` must be in [0, 1) (Kumar et al. use 0.01); "
      f"got {delta!r}."
    )
