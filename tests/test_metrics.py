"""Plasticity metrics against hand-worked values and numpy references."""

from __future__ import annotations

import functools
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_swr import metrics


def to_jax(tree):
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def random_mlp(widths, seed=0, spread=0.0) -> dict:
  """A numpy ReLU MLP ``Dense_0, Dense_1, ...``; ``spread`` unbalances it."""
  rng = np.random.default_rng(seed)
  params = {}
  for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
    unit_scales = np.exp(spread * rng.normal(size=fan_out))
    kernel = rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in)
    params[f"Dense_{index}"] = {
      "kernel": kernel * unit_scales,
      "bias": 0.1 * rng.normal(size=fan_out),
    }
  return params


def mlp_logits(params, x):
  for index in range(len(params)):
    if index:
      x = np.maximum(x, 0.0)
    layer = params[f"Dense_{index}"]
    x = x @ layer["kernel"] + layer["bias"]
  return x


def rescale_hidden_units(params, factors):
  """Hidden unit i of layer l: incoming weights and bias * a, outgoing / a."""
  params = {name: dict(layer) for name, layer in params.items()}
  for index, a in enumerate(factors):
    this, after = params[f"Dense_{index}"], params[f"Dense_{index + 1}"]
    this["kernel"] = this["kernel"] * a
    this["bias"] = this["bias"] * a
    after["kernel"] = after["kernel"] / a[:, None]
  return params


def minimal_norm(params, **kwargs):
  """The norm after the best rescaling: the current norm over the ratio."""
  norm_kwargs = {k: v for k, v in kwargs.items() if k != "iterations"}
  return metrics.lpq_norm(params, **norm_kwargs) / metrics.balancedness(
    params, **kwargs
  )


def reference_l22_rebalancing(edges, sweeps=300):
  """Minimizes sqrt(sum w^2) over per-unit rescalings, one unit at a time.

  ``edges[l][i][o]`` holds the weights from unit i of layer l (layer 0: the
  inputs, never rescaled) to unit o of layer l + 1. With A and B the incoming
  and outgoing sums of squares of one hidden unit, its best factor given the
  others is (B / A) ** (1 / 4); sweeping the units one by one (Gauss-Seidel,
  unlike the parallel updates under test) converges to the global minimum,
  the problem being convex in the log-scales.

  Returns:
    The minimal norm and the log-scales of the hidden layers.
  """
  squares = [
    np.array([[np.sum(np.square(w)) for w in row] for row in layer])
    for layer in edges
  ]
  log_scales = [np.zeros(len(layer)) for layer in edges]
  log_scales.append(np.zeros(squares[-1].shape[1]))

  def scaled(l):
    shift = log_scales[l + 1][None, :] - log_scales[l][:, None]
    return squares[l] * np.exp(2 * shift)

  for _ in range(sweeps):
    for l in range(1, len(squares)):
      for i in range(len(log_scales[l])):
        incoming, outgoing = scaled(l - 1)[:, i].sum(), scaled(l)[i, :].sum()
        log_scales[l][i] += 0.25 * np.log(outgoing / incoming)
  norm = np.sqrt(sum(scaled(l).sum() for l in range(len(squares))))
  return norm, log_scales[1:-1]


def mlp_edges(params):
  kernels = [params[f"Dense_{l}"]["kernel"] for l in range(len(params))]
  return [[[np.atleast_1d(w) for w in row] for row in k] for k in kernels]


# --- layer_norms -------------------------------------------------------------


def test_layer_norms_are_frobenius_norms_in_forward_order():
  rng = np.random.default_rng(0)
  params = {
    "layers_0": {"kernel": rng.normal(size=(3, 3, 2, 4))},
    "layers_1": {"scale": rng.normal(size=4), "bias": rng.normal(size=4)},
    "layers_2": {"kernel": rng.normal(size=(4, 5)), "bias": np.ones(5)},
  }
  weights = [
    params["layers_0"]["kernel"],
    params["layers_1"]["scale"],
    params["layers_2"]["kernel"],
  ]
  norms = jax.jit(metrics.layer_norms)(to_jax(params))
  assert norms.dtype == jnp.float32
  np.testing.assert_allclose(
    norms, [np.sqrt(np.sum(w**2)) for w in weights], rtol=1e-6
  )


def test_layer_norms_follow_the_given_layers_not_key_order():
  params = to_jax(
    {
      "b": {"kernel": np.full((2, 2), 1.0)},
      "a": {"kernel": np.full((2, 2), 3.0)},
    }
  )
  norms = metrics.layer_norms(params, layers=["b", "a"])
  np.testing.assert_allclose(norms, [2.0, 6.0])


def test_layer_norms_refuse_to_guess_the_order_like_swr():
  params = to_jax(
    {
      "encoder": {"kernel": np.ones((2, 2))},
      "head": {"kernel": np.ones((2, 2))},
    }
  )
  with pytest.raises(ValueError, match="cannot infer the forward order"):
    metrics.layer_norms(params)


# --- balancedness ------------------------------------------------------------


@pytest.mark.parametrize("p, q", [(2.0, 2.0), (1.0, 2.0), (2.0, 1.0), (1, 1)])
def test_balancedness_is_one_for_a_balanced_network(p, q):
  # Square layers of +-c entries: every unit's incoming and outgoing weights
  # have the same norms, so no rescaling can lower the norm.
  rng = np.random.default_rng(1)
  params = {
    f"Dense_{i}": {"kernel": 0.7 * rng.choice([-1.0, 1.0], size=(5, 5))}
    for i in range(4)
  }
  balance = jax.jit(functools.partial(metrics.balancedness, p=p, q=q))
  ratio = balance(to_jax(params))
  np.testing.assert_allclose(ratio, 1.0, rtol=1e-6)
  assert ratio >= 1.0


def test_minimal_norm_matches_a_numpy_rebalancing_which_is_balanced():
  params = random_mlp((4, 6, 5, 3), seed=2, spread=1.0)
  reference, log_scales = reference_l22_rebalancing(mlp_edges(params))
  ratio = metrics.balancedness(to_jax(params))
  np.testing.assert_allclose(
    metrics.lpq_norm(to_jax(params)) / ratio, reference, rtol=1e-5
  )
  assert ratio > 1.2  # spread=1.0 made it clearly unbalanced.
  balanced = rescale_hidden_units(params, [np.exp(s) for s in log_scales])
  np.testing.assert_allclose(
    metrics.balancedness(to_jax(balanced)), 1.0, rtol=1e-6
  )


@pytest.mark.parametrize("p, q", [(2.0, 2.0), (1.0, 2.0), (2.0, 1.0)])
def test_balancedness_is_invariant_under_function_preserving_rescalings(p, q):
  rng = np.random.default_rng(3)
  params = random_mlp((6, 8, 7, 3), seed=3)
  factors = [np.exp(1.5 * rng.normal(size=n)) for n in (8, 7)]
  rescaled = rescale_hidden_units(params, factors)
  x = rng.normal(size=(16, 6))
  np.testing.assert_allclose(
    mlp_logits(rescaled, x), mlp_logits(params, x), rtol=1e-10, atol=1e-12
  )

  balance = jax.jit(functools.partial(metrics.balancedness, p=p, q=q))
  assert balance(to_jax(rescaled)) > balance(to_jax(params)) + 0.5
  np.testing.assert_allclose(
    minimal_norm(to_jax(rescaled), p=p, q=q),
    minimal_norm(to_jax(params), p=p, q=q),
    rtol=1e-5,
  )


@pytest.mark.parametrize(
  "p, q", [(2.0, 2.0), (1.0, 1.0), (1.0, 2.0), (2.0, 1.0), (3.0, 1.5)]
)
def test_balancedness_of_one_hidden_unit_has_a_closed_form(p, q):
  # The incoming part of ||W(a)||^q is A a^q, the outgoing part B a^-q, and
  # the minimum over a of A a^q + B a^-q is 2 sqrt(A B).
  w_in = np.array([[0.5], [-2.0], [1.5]])
  w_out = np.array([[3.0, -0.2, 1.0, 0.7]])
  a_term = np.sum(np.abs(w_in) ** p) ** (q / p)
  b_term = np.sum(np.abs(w_out) ** q)
  params = to_jax(
    {
      "Dense_0": {"kernel": w_in, "bias": np.ones(1)},
      "Dense_1": {"kernel": w_out},
    }
  )
  np.testing.assert_allclose(
    metrics.lpq_norm(params, p=p, q=q),
    (a_term + b_term) ** (1 / q),
    rtol=1e-6,
  )
  expected = (a_term + b_term) / (2 * np.sqrt(a_term * b_term))
  np.testing.assert_allclose(
    metrics.balancedness(params, p=p, q=q), expected ** (1 / q), rtol=1e-6
  )


LAYERS = ["Conv_0", "Conv_1", "Dense_0", "Dense_1"]


def test_balancedness_of_conv_then_flattened_dense_matches_numpy():
  rng = np.random.default_rng(4)
  conv0 = rng.normal(size=(3, 3, 2, 4))
  conv1 = rng.normal(size=(2, 2, 4, 3)) * np.exp(rng.normal(size=3))
  dense0 = rng.normal(size=(2 * 2 * 3, 5))  # flattened [2, 2, 3] NHWC maps
  dense1 = rng.normal(size=(5, 2))
  params = to_jax(
    {
      "Conv_0": {"kernel": conv0, "bias": rng.normal(size=4)},
      "Conv_1": {"kernel": conv1},
      "Dense_0": {"kernel": dense0, "bias": rng.normal(size=5)},
      "Dense_1": {"kernel": dense1},
    }
  )
  channel_of_row = np.arange(12) % 3
  edges = [
    [[conv0[..., o] for o in range(4)]],  # all inputs act as one unit
    [[conv1[:, :, i, o] for o in range(3)] for i in range(4)],
    [[dense0[channel_of_row == i, o] for o in range(5)] for i in range(3)],
    [[dense1[i, o] for o in range(2)] for i in range(5)],
  ]
  reference, _ = reference_l22_rebalancing(edges)
  current = np.sqrt(sum(np.sum(w**2) for w in (conv0, conv1, dense0, dense1)))
  balance = jax.jit(functools.partial(metrics.balancedness, layers=LAYERS))
  ratio = balance(params)
  np.testing.assert_allclose(ratio, current / reference, rtol=1e-5)
  assert ratio > 1.1


class ConvThenDense(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(x))
    x = nn.relu(nn.Conv(3, (2, 2), padding="VALID", use_bias=False)(x))
    x = x.reshape(x.shape[0], -1)  # NHWC: feature (h * W + w) * C + c
    x = nn.relu(nn.Dense(5)(x))
    return nn.Dense(2, use_bias=False)(x)


def test_dense_rows_c_mod_channels_are_what_rescaling_channel_c_moves():
  rng = np.random.default_rng(12)
  params = {
    "Conv_0": {"kernel": rng.normal(size=(3, 3, 2, 4)), "bias": np.ones(4)},
    "Conv_1": {"kernel": rng.normal(size=(2, 2, 4, 3))},
    "Dense_0": {"kernel": rng.normal(size=(12, 5)), "bias": np.ones(5)},
    "Dense_1": {"kernel": rng.normal(size=(5, 2))},
  }
  model, x = ConvThenDense(), rng.normal(size=(3, 5, 5, 2))
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  chex.assert_trees_all_equal_shapes(params, shapes)
  factors = np.array([0.1, 5.0, 2.0])
  rescaled = jax.tree.map(np.copy, params)
  rescaled["Conv_1"]["kernel"] = params["Conv_1"]["kernel"] * factors
  rows = np.tile(factors, 4)[:, None]  # row r belongs to channel r % 3
  rescaled["Dense_0"]["kernel"] = params["Dense_0"]["kernel"] / rows
  np.testing.assert_allclose(
    model.apply({"params": rescaled}, x),
    model.apply({"params": params}, x),
    rtol=1e-4,
    atol=1e-6,
  )
  np.testing.assert_allclose(
    minimal_norm(to_jax(rescaled), layers=LAYERS),
    minimal_norm(to_jax(params), layers=LAYERS),
    rtol=1e-5,
  )


def test_balancedness_converges_monotonically_and_stops_changing():
  widths = (20, 16, 16, 16, 16, 16, 3)
  params = to_jax(random_mlp(widths, seed=5, spread=1.0))
  balance = metrics.balancedness  # jitted inside, for any iterations
  ratios = np.array(
    [balance(params, iterations=k) for k in (1, 3, 10, 30, 100, 300)]
  )
  # The ratio only rises (the norm only falls), and by a lot.
  assert np.all(np.diff(ratios) >= -1e-6 * ratios[1:])
  assert ratios[-1] > 1.1 * ratios[0]
  default = balance(params, iterations=metrics.DEFAULT_ITERATIONS)
  longer = balance(params, iterations=4 * metrics.DEFAULT_ITERATIONS)
  np.testing.assert_allclose(default, longer, rtol=1e-6)


def test_units_without_incoming_or_outgoing_weights_scale_away():
  params = random_mlp((4, 5, 5, 2), seed=6, spread=0.5)
  params["Dense_0"]["kernel"][:, 1] = 0.0  # hidden unit (0, 1): no inputs
  params["Dense_1"]["kernel"][:, 3] = 0.0  # hidden unit (1, 3): no inputs
  params["Dense_2"]["kernel"][0, :] = 0.0  # hidden unit (1, 0): no outputs
  assert np.isfinite(metrics.balancedness(to_jax(params)))
  # The infimum is the minimum of the network without those units' weights.
  pruned = rescale_hidden_units(params, [np.ones(5), np.ones(5)])
  pruned["Dense_1"]["kernel"] = params["Dense_1"]["kernel"].copy()
  pruned["Dense_1"]["kernel"][1, :] = 0.0
  pruned["Dense_1"]["kernel"][:, 0] = 0.0
  pruned["Dense_2"]["kernel"] = params["Dense_2"]["kernel"].copy()
  pruned["Dense_2"]["kernel"][3, :] = 0.0
  np.testing.assert_allclose(
    minimal_norm(to_jax(params)), minimal_norm(to_jax(pruned)), rtol=1e-5
  )


def test_balancedness_of_degenerate_networks():
  zero = to_jax(
    {
      "Dense_0": {"kernel": np.zeros((2, 3))},
      "Dense_1": {"kernel": np.zeros((3, 2))},
    }
  )
  assert metrics.balancedness(zero) == 1.0
  cut = to_jax(
    {
      "Dense_0": {"kernel": np.zeros((2, 3))},
      "Dense_1": {"kernel": np.ones((3, 2))},
    }
  )
  assert metrics.balancedness(cut) == np.inf  # no path: the infimum is 0


def test_balancedness_refuses_normalization_layers():
  params = to_jax(
    {
      "layers_0": {"kernel": np.ones((2, 3))},
      "layers_1": {"scale": np.ones(3), "bias": np.zeros(3)},
      "layers_2": {"kernel": np.ones((3, 1))},
    }
  )
  message = (
    re.escape("the layer ('layers_1',) is a normalization layer")
    + ".* defined for chains of dense/conv layers without normalization "
    "layers"
  )
  for function in (metrics.balancedness, metrics.lpq_norm):
    with pytest.raises(ValueError, match=function.__name__ + ": " + message):
      function(params)


def test_balancedness_refuses_layers_that_do_not_chain():
  params = to_jax(
    {
      "Dense_0": {"kernel": np.ones((2, 4))},
      "Dense_1": {"kernel": np.ones((5, 1))},
    }
  )
  message = (
    "balancedness: the layer ('Dense_1',) (kernel shape (5, 1)) cannot "
    "read the 4 outputs of ('Dense_0',): its 5 inputs are not a multiple"
  )
  with pytest.raises(ValueError, match=re.escape(message)):
    metrics.balancedness(params, layers=["Dense_0", "Dense_1"])
  with pytest.raises(ValueError, match="do not form a chain"):
    metrics.balancedness(params)  # name inference refuses them first
  vector = to_jax({"Dense_0": {"kernel": np.ones(3)}})
  message = "has shape (3,), but a dense or conv kernel has shape [..., in,"
  with pytest.raises(ValueError, match=re.escape(message)):
    metrics.balancedness(vector)


@pytest.mark.parametrize(
  "name, value", [("p", 0.0), ("q", -1.0), ("p", np.inf), ("q", True)]
)
def test_balancedness_refuses_bad_exponents(name, value):
  params = to_jax(random_mlp((2, 2, 1)))
  for function in (metrics.balancedness, metrics.lpq_norm):
    message = f"{function.__name__}: `{name}` must be a positive finite number"
    with pytest.raises(ValueError, match=message):
      function(params, **{name: value})


@pytest.mark.parametrize("iterations", [0, 2.5, True])
def test_balancedness_refuses_bad_iterations(iterations):
  with pytest.raises(ValueError, match="`iterations` must be an int >= 1"):
    metrics.balancedness(to_jax(random_mlp((2, 2, 1))), iterations=iterations)


def test_balancedness_asks_for_static_exponents_under_jit():
  params = to_jax(random_mlp((2, 2, 1)))
  message = re.escape(
    "balancedness: `q` must be a Python number, but it is traced. Under "
    "jax.jit, mark it static: jax.jit(balancedness, static_argnames=('q',))"
  )
  with pytest.raises(ValueError, match=message):
    jax.jit(metrics.balancedness)(params, q=2.0)
  with pytest.raises(ValueError, match="`iterations` must be a Python number"):
    jax.jit(metrics.balancedness)(params, iterations=10)
  static = jax.jit(metrics.balancedness, static_argnames=("q", "iterations"))
  assert static(params, q=1.0, iterations=10) >= 1.0


# --- dormant_fraction --------------------------------------------------------


def test_one_always_zero_unit_of_four_is_a_quarter_dormant():
  h = jnp.array([[0.0, 1.0, 2.0, 0.5], [0.0, 3.0, 0.0, 0.5]])
  assert jax.jit(metrics.dormant_fraction)(h) == 0.25


def test_tau_compares_with_the_layer_average_of_mean_absolute_activations():
  # Mean |h| per unit: 1, 2, 3, 0.2; layer average 1.55; scores 0.645,
  # 1.290, 1.935, 0.129. Negative activations count by their size.
  h = jnp.array([[-1.0, 2.0, 3.0, 0.1], [1.0, 2.0, 3.0, -0.3]])
  fraction = jax.jit(metrics.dormant_fraction)
  fractions = [float(fraction(h, tau)) for tau in (0.0, 0.2, 0.7, 1.3, 2.0)]
  assert fractions == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_dormant_fraction_pools_spatial_axes_and_counts_all_layers():
  conv = np.zeros((2, 3, 3, 3))
  conv[1, 2, 0, 0] = 5.0  # channel 0 fires once: not dormant at tau = 0
  conv[..., 1] = 1.0  # channel 2 never fires
  dense = np.array([[1.0, 0.0, 2.0, 0.0, 3.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
  assert metrics.dormant_fraction([conv, dense]) == 3 / 8  # (1 + 2) / (3 + 5)
  assert metrics.dormant_fraction((np.zeros((4, 2)),)) == 1.0  # all dead


def test_dormant_fraction_matches_numpy_on_random_activations():
  rng = np.random.default_rng(7)
  layers = [
    np.maximum(rng.normal(size=(8, 4, 4, 6)) - 1.0, 0.0),
    np.maximum(rng.normal(size=(8, 10)) * rng.uniform(0, 2, 10), 0.0),
  ]
  dormant = 0
  for h in layers:
    score = np.abs(h).reshape(-1, h.shape[-1]).mean(0)
    dormant += np.sum(score / score.mean() <= 0.5)
  np.testing.assert_allclose(
    jax.jit(metrics.dormant_fraction)(layers, 0.5), dormant / 16, rtol=1e-6
  )


def test_dormant_fraction_errors():
  with pytest.raises(ValueError, match="dormant_fraction: `activations` is e"):
    metrics.dormant_fraction([])
  message = (
    "dormant_fraction: `activations[1]` has shape (4,); each layer's "
    "activations must be [batch, ..., units]"
  )
  with pytest.raises(ValueError, match=re.escape(message)):
    metrics.dormant_fraction([np.ones((4, 2)), np.ones(4)])
  with pytest.raises(ValueError, match="dormant_fraction: `tau` must be >= 0"):
    metrics.dormant_fraction(np.ones((4, 2)), tau=-0.1)


# --- effective ranks ---------------------------------------------------------


@pytest.mark.parametrize(
  "delta, expected", [(0.01, 3), (0.0, 3), (0.2, 2), (0.6, 1)]
)
def test_srank_of_known_singular_values(delta, expected):
  # Singular values 3, 2, 1, 0: cumulative mass 0.5, 0.833, 1, 1.
  values = np.array([3.0, 2.0, 1.0, 0.0])
  rng = np.random.default_rng(8)
  left, _ = np.linalg.qr(rng.normal(size=(6, 4)))
  right, _ = np.linalg.qr(rng.normal(size=(4, 4)))
  rotated = jnp.asarray(left @ np.diag(values) @ right.T, jnp.float32)
  assert jax.jit(metrics.effective_rank)(rotated, delta) == expected
  assert metrics.effective_rank(jnp.diag(values), delta) == expected


def test_srank_of_rank_one_and_zero_features():
  rng = np.random.default_rng(9)
  rank_one = np.outer(rng.normal(size=32), rng.normal(size=8))
  assert metrics.effective_rank(jnp.asarray(rank_one, jnp.float32)) == 1
  assert metrics.effective_rank(jnp.zeros((5, 3))) == 0


def test_srank_matches_numpy():
  rng = np.random.default_rng(10)
  features = rng.normal(size=(64, 16)) * np.exp(-0.4 * np.arange(16))
  s = np.linalg.svd(features, compute_uv=False)
  expected = 1 + np.argmax(np.cumsum(s) / s.sum() >= 0.99)
  assert 1 < expected < 16
  srank = metrics.effective_rank(jnp.asarray(features, jnp.float32))
  assert srank.dtype == jnp.int32 and srank == expected


@pytest.mark.parametrize("k", [1, 3, 7])
def test_entropy_rank_of_k_orthonormal_columns_is_k(k):
  columns, _ = np.linalg.qr(np.random.default_rng(k).normal(size=(10, k)))
  features = jnp.asarray(columns, jnp.float32)
  rank = jax.jit(metrics.entropy_effective_rank)(features)
  np.testing.assert_allclose(rank, k, rtol=1e-5)


def test_entropy_rank_matches_numpy_and_is_zero_for_zero_features():
  rng = np.random.default_rng(11)
  features = rng.normal(size=(20, 6)) * np.arange(1, 7)
  s = np.linalg.svd(features, compute_uv=False)
  probabilities = s / s.sum()
  expected = np.exp(-np.sum(probabilities * np.log(probabilities)))
  rank = metrics.entropy_effective_rank(jnp.asarray(features, jnp.float32))
  np.testing.assert_allclose(rank, expected, rtol=1e-5)
  assert metrics.entropy_effective_rank(jnp.zeros((4, 3))) == 0.0


def test_effective_rank_errors():
  for function in (metrics.effective_rank, metrics.entropy_effective_rank):
    message = (
      f"{function.__name__}: `features` must be a [batch, dim] matrix; "
      "got shape (2, 3, 4)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
      function(jnp.ones((2, 3, 4)))
  for delta in (1.0, -0.1):
    message = "effective_rank: `delta` must be in [0, 1)"
    with pytest.raises(ValueError, match=re.escape(message)):
      metrics.effective_rank(jnp.ones((2, 3)), delta)
