"""BatchNorm running statistics follow the SWR step (Linen and NNX)."""

from __future__ import annotations

import re

import chex
from flax import linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_swr

X = jax.random.normal(jax.random.key(1), (16, 8, 8, 1))


class LinenCNNBN(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    for channels in (4, 8):
      x = nn.Conv(channels, (3, 3), use_bias=False)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
    x = nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))
    return nn.Dense(5)(x)


def relative_spread(after, before):
  """max |after - s before| / max |s before| for the least-squares s."""
  after, before = np.ravel(after), np.ravel(before)
  s = after @ before / (before @ before)
  return np.abs(after - s * before).max() / np.abs(s * before).max()


def one_swr_step(tx, params, seed=0):
  """An SWR step with zero updates and reference norms far from the norms."""
  state = tx.init(params)
  factors = np.random.default_rng(seed).uniform(
    0.5, 2.0, state.reference_norms.shape
  )
  state = state._replace(reference_norms=state.reference_norms * factors)
  updates, state = tx.update(
    jax.tree.map(jnp.zeros_like, params), state, params
  )
  return optax.apply_updates(params, updates), state


def test_linen_eval_logits_stay_proportional_once_stats_are_synced():
  model = LinenCNNBN()
  variables = model.init(jax.random.key(0), X)
  for _ in range(5):  # running statistics away from their (0, 1) init
    _, updates = model.apply(variables, X, train=True, mutable=["batch_stats"])
    variables = {**variables, **updates}
  layers = optax_swr.layers_from_linen(model, variables, X)
  params, stats = variables["params"], variables["batch_stats"]
  new_params, state = one_swr_step(optax_swr.swr(0.7, layers=layers), params)

  logits = lambda p, s: model.apply({"params": p, "batch_stats": s}, X)
  before = logits(params, stats)
  synced = logits(new_params, optax_swr.sync_batch_stats(stats, state, layers))
  stale = logits(new_params, stats)
  assert relative_spread(synced, before) <= 1e-4
  assert relative_spread(stale, before) > 1e-2
  assert (np.argmax(synced, -1) == np.argmax(before, -1)).all()


def test_linen_sync_scales_mean_by_s_and_var_by_s_squared():
  model = LinenCNNBN()
  variables = model.init(jax.random.key(0), X)
  layers = optax_swr.layers_from_linen(model, variables, X)
  _, state = one_swr_step(
    optax_swr.swr(0.7, layers=layers), variables["params"]
  )
  scales = optax_swr.by_layer(state.input_scales, layers)
  assert [layer.name for layer in layers if layer.norm] == [
    "BatchNorm_0",
    "BatchNorm_1",
  ]
  # Order: Conv_0, BatchNorm_0, Conv_1, BatchNorm_1, Dense_0, Dense_1. The
  # input of BatchNorm_1 is scaled by c(BatchNorm_0) * c(Conv_1).
  c = np.asarray(state.layer_scales)
  np.testing.assert_allclose(scales["BatchNorm_0"], c[0], rtol=1e-6)
  np.testing.assert_allclose(scales["BatchNorm_1"], c[1] * c[2], rtol=1e-6)
  stats = jax.tree.map(lambda x: x + 1.0, variables["batch_stats"])
  synced = optax_swr.sync_batch_stats(stats, state, layers)
  expected = {}
  for name in ("BatchNorm_0", "BatchNorm_1"):
    s = float(scales[name])
    expected[name] = {
      "mean": s * stats[name]["mean"],
      "var": s**2 * stats[name]["var"],
    }
  chex.assert_trees_all_close(synced, expected, rtol=1e-6)


class NnxCNNBN(nnx.Module):
  def __init__(self, rngs):
    self.conv1 = nnx.Conv(1, 4, (3, 3), use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(4, momentum=0.9, rngs=rngs)
    self.conv2 = nnx.Conv(4, 8, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(8, momentum=0.9, rngs=rngs)
    self.fc = nnx.Linear(128, 5, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn1(self.conv1(x)))
    x = nnx.max_pool(x, (2, 2), (2, 2))
    x = nnx.relu(self.bn2(self.conv2(x)))
    return self.fc(x.reshape(x.shape[0], -1))


def test_nnx_eval_logits_stay_proportional_once_stats_are_synced():
  model = NnxCNNBN(nnx.Rngs(0))
  for _ in range(5):
    model(X)  # training mode: updates the running statistics
  layers = optax_swr.layers_from_nnx(model, X)
  tx = optax_swr.swr(0.7, layers=layers)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  factors = np.random.default_rng(0).uniform(0.5, 2.0, (len(layers),))
  state = optimizer.opt_state
  state.reference_norms[...] = state.reference_norms[...] * factors
  model.eval()
  before = model(X)
  stale_stats = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))

  optimizer.update(
    model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
  )
  stale = model(X)
  optax_swr.sync_nnx_batch_stats(model, optimizer.opt_state, layers)
  synced = model(X)
  assert relative_spread(synced, before) <= 1e-4
  assert relative_spread(stale, before) > 1e-2
  input_scales = optax.tree.get(optimizer.opt_state, "input_scales")
  s = float(optax_swr.by_layer(input_scales[...], layers)["bn2"])
  np.testing.assert_allclose(
    model.bn2.var[...], s**2 * stale_stats["bn2"]["var"], rtol=1e-6
  )


SMALL_PARAMS = {
  "conv": {"kernel": jnp.ones((2, 2))},
  "bn": {"scale": jnp.ones(2)},
}
SMALL_LAYERS = ["conv", "bn"]


def swr_state():
  return optax_swr.swr(layers=SMALL_LAYERS).init(SMALL_PARAMS)


def sync_error(text):
  return pytest.raises(ValueError, match=re.escape(f"sync_batch_stats: {text}"))


def test_stats_of_an_unknown_layer_are_an_error():
  stats = {"BatchNorm_7": {"mean": jnp.zeros(2), "var": jnp.ones(2)}}
  with sync_error(
    "the statistic ('BatchNorm_7', 'mean') belongs to ('BatchNorm_7',), "
    "which is not a normalization layer of `layers` ([('conv',), ('bn',)])"
  ):
    optax_swr.sync_batch_stats(stats, swr_state(), SMALL_LAYERS)


def test_stats_of_a_layer_that_is_not_a_norm_layer_are_an_error():
  layers = optax_swr.find_layers(SMALL_PARAMS, SMALL_LAYERS)
  stats = {"conv": {"mean": jnp.zeros(2), "var": jnp.ones(2)}}
  with sync_error(
    "the statistic ('conv', 'mean') belongs to ('conv',), which is not a "
    "normalization layer"
  ):
    optax_swr.sync_batch_stats(stats, swr_state(), layers)


def test_layers_must_be_a_sequence_matching_the_state():
  stats = {"bn": {"mean": jnp.zeros(2), "var": jnp.ones(2)}}
  with sync_error("`layers` must be the sequence of layers swr rescales"):
    optax_swr.sync_batch_stats(stats, swr_state(), None)
  with sync_error("`layers` must be the sequence of layers swr rescales"):
    optax_swr.sync_batch_stats(stats, swr_state(), lambda p: SMALL_LAYERS)
  with sync_error("`layers` has 1 layers but the SWR state has 2"):
    optax_swr.sync_batch_stats(stats, swr_state(), ["bn"])


def test_unknown_statistic_is_an_error():
  with sync_error("unknown statistic ('bn', 'count')"):
    optax_swr.sync_batch_stats(
      {"bn": {"count": jnp.zeros(())}}, swr_state(), SMALL_LAYERS
    )


def test_sync_needs_exactly_one_swr_state():
  stats = {"bn": {"mean": jnp.zeros(2)}}
  with sync_error("`opt_state` holds no SWRState"):
    optax_swr.sync_batch_stats(stats, optax.adam(1.0).init(stats), ["bn"])
  with sync_error("`opt_state` holds several SWR states"):
    optax_swr.sync_batch_stats(stats, (swr_state(), swr_state()), ["bn"])
