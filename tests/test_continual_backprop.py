"""Continual backprop (baselines.continual_backprop) against hand-computed steps."""

from __future__ import annotations

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optax_swr import baselines
from tests import helpers

LAYERS = ["Dense_0", "Dense_1", "Dense_2"]

# Dense_0: 2 -> 3, Dense_1: 3 -> 2, Dense_2: 2 -> 2, written out by hand.
PARAMS = {
  "Dense_0": {
    "kernel": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
    "bias": [0.1, 0.2, 0.3],
  },
  "Dense_1": {
    "kernel": [[1.0, -2.0], [0.5, 0.5], [-3.0, 1.0]],
    "bias": [0.4, 0.5],
  },
  "Dense_2": {
    "kernel": [[2.0, -1.0], [1.0, 1.0]],
    "bias": [0.7, 0.8],
  },
}

# Dense_0's units: mean |h| = (2, 0.25, 0.2); the rows of |Dense_1| sum to
# (3, 1, 4); contributions (6, 0.25, 0.8).
HIDDEN_0 = [[1.0, 0.0, 0.2], [3.0, 0.5, -0.2]]
# Dense_1's units: mean |h| = (1, 3); the rows of |Dense_2| sum to (3, 2);
# contributions (3, 6).
HIDDEN_1 = [[1.0, 2.0], [1.0, 4.0]]

# Before the call. Layer 0: units 0 and 1 are mature after this call (age 6
# > 3), unit 2 is not (age 3); 0.25 of a unit is carried over. Layer 1: only
# unit 0 is mature.
STATE = baselines.ContinualBackpropState(
  utility=(jnp.array([1.0, 4.0, 0.0]), jnp.array([2.0, 2.0])),
  age=(jnp.array([5, 5, 2], jnp.int32), jnp.array([10, 0], jnp.int32)),
  to_replace=(jnp.float32(0.25), jnp.float32(0.0)),
)
HYPERPARAMS = {"replacement_rate": 0.5, "decay_rate": 0.5}
MATURITY = 3


def arrays(tree):
  """A tree of nested lists (one leaf per list) as float32 arrays."""
  return jax.tree.map(
    lambda x: jnp.asarray(x, jnp.float32),
    tree,
    is_leaf=lambda x: isinstance(x, list),
  )


def fresh_of(params):
  """A 'fresh init' that differs from params at every entry: -params."""
  return jax.tree.map(lambda p: -np.asarray(p), params)


def relu_mlp(params, x):
  """The ReLU MLP of LAYERS in numpy: its output and hidden activations."""
  hidden = []
  for name in LAYERS:
    layer = jax.tree.map(np.asarray, params[name])
    x = x @ layer["kernel"] + layer["bias"]
    if name != LAYERS[-1]:
      x = np.maximum(x, 0.0)
      hidden.append(x)
  return x, hidden


def adam_state(params, tx):
  """Adam's state with mu = 0.5 and nu = 0.25 everywhere, count 7."""
  return (
    tx.init(params)[0]._replace(
      count=jnp.int32(7),
      mu=jax.tree.map(lambda p: np.full(p.shape, 0.5, p.dtype), params),
      nu=jax.tree.map(lambda p: np.full(p.shape, 0.25, p.dtype), params),
    ),
    optax.EmptyState(),
  )


def contribution(h, next_kernel):
  """mean |h_i| * sum |W[r, k]| over rows r reading unit i, in float64."""
  h = np.abs(np.asarray(h, np.float64))
  kernel = np.abs(np.asarray(next_kernel, np.float64))
  units = h.shape[-1]
  mean_abs = h.reshape(-1, units).mean(axis=0)
  if kernel.ndim == 2:  # row r of a dense kernel reads unit r % units
    rows = np.arange(kernel.shape[0]) % units
    outgoing = np.array([kernel[rows == i].sum() for i in range(units)])
  else:  # a conv kernel [..., units, out]
    outgoing = np.array([kernel[..., i, :].sum() for i in range(units)])
  return mean_abs * outgoing


@pytest.fixture
def mlp():
  params = arrays(PARAMS)
  tx = optax.adam(1e-3)
  activations = [jnp.asarray(HIDDEN_0), jnp.asarray(HIDDEN_1)]
  return params, tx, adam_state(params, tx), activations


def jitted(**static):
  """``continual_backprop`` under ``jax.jit``; arguments not bound are traced.

  Pass ``fresh_params`` by name: ``layers``, before it, is bound. (Eager
  calls run the same code, one compiled op at a time: slower to test.)
  """
  return jax.jit(functools.partial(baselines.continual_backprop, **static))


def test_a_hand_computed_step_of_utilities_ages_counts_and_resets(mlp):
  params, tx, opt_state, activations = mlp
  step = jitted(layers=LAYERS, optimizer=tx, maturity_threshold=MATURITY)
  new, new_opt_state, state, replaced = step(
    params,
    opt_state,
    STATE,
    activations,
    fresh_params=fresh_of(params),
    **HYPERPARAMS,  # traced
  )
  # u <- 0.5 u + 0.5 c: layer 0 (3.5, 2.125, 0.4), layer 1 (2.5, 4).
  eta = HYPERPARAMS["decay_rate"]
  utility_0 = eta * np.array([1.0, 4.0, 0.0]) + (1 - eta) * contribution(
    HIDDEN_0, PARAMS["Dense_1"]["kernel"]
  )
  utility_1 = eta * np.array([2.0, 2.0]) + (1 - eta) * contribution(
    HIDDEN_1, PARAMS["Dense_2"]["kernel"]
  )
  np.testing.assert_allclose(utility_0, [3.5, 2.125, 0.4])
  np.testing.assert_allclose(utility_1, [2.5, 4.0])
  # Layer 0: 0.25 + 0.5 * 2 mature = 1.25: one unit, of the mature 0 and 1
  # the lower (unit 1); unit 2 has the lowest utility but is immature.
  # Layer 1: 0 + 0.5 * 1 mature = 0.5: none.
  np.testing.assert_array_equal(replaced[0], [False, True, False])
  np.testing.assert_array_equal(replaced[1], [False, False])
  np.testing.assert_allclose(state.utility[0], [3.5, 0.0, 0.4], rtol=1e-6)
  np.testing.assert_allclose(state.utility[1], utility_1, rtol=1e-6)
  np.testing.assert_array_equal(state.age[0], [6, 0, 3])
  np.testing.assert_array_equal(state.age[1], [11, 1])
  np.testing.assert_array_equal(state.to_replace, [0.25, 0.5])
  assert state.utility[0].dtype == jnp.float32
  assert state.age[0].dtype == jnp.int32
  assert state.to_replace[0].dtype == jnp.float32
  expected = {
    "Dense_0": {  # column 1 (into unit 1) and bias 1 fresh
      "kernel": [[1.0, -2.0, 3.0], [4.0, -5.0, 6.0]],
      "bias": [0.1, -0.2, 0.3],
    },
    "Dense_1": {  # row 1 (out of unit 1) zero
      "kernel": [[1.0, -2.0], [0.0, 0.0], [-3.0, 1.0]],
      "bias": [0.4, 0.5],
    },
    "Dense_2": PARAMS["Dense_2"],
  }
  chex.assert_trees_all_equal(new, arrays(expected))
  reset = {  # every entry that changed above, in or out
    "Dense_0": {"kernel": [[0, 1, 0], [0, 1, 0]], "bias": [0, 1, 0]},
    "Dense_1": {"kernel": [[0, 0], [1, 1], [0, 0]], "bias": [0, 0]},
    "Dense_2": {"kernel": [[0, 0], [0, 0]], "bias": [0, 0]},
  }
  adam, _ = new_opt_state
  for moment, value in ((adam.mu, 0.5), (adam.nu, 0.25)):
    expected_moment = jax.tree.map(
      lambda r, v=value: v * (1 - r), arrays(reset)
    )
    chex.assert_trees_all_equal(moment, expected_moment)
  assert int(adam.count) == 7


def test_no_unit_is_replaced_before_maturity_then_rate_one_replaces_all():
  params = helpers.mlp_params([3, 4, 3, 2])
  tx = optax.sgd(0.1)
  activations = [jnp.ones((2, 4)), jnp.ones((2, 3))]
  step = jax.jit(
    functools.partial(
      baselines.continual_backprop,
      layers=LAYERS,
      optimizer=tx,
      replacement_rate=1.0,
      maturity_threshold=5,
    )
  )
  state = baselines.continual_backprop_init(params, LAYERS)
  opt_state = tx.init(params)
  for calls in range(1, 7):
    params, opt_state, state, replaced = step(
      params, opt_state, state, activations, fresh_params=fresh_of(params)
    )
    expected = calls == 6  # ages 1 ... 5 are not > 5
    for mask in replaced:
      np.testing.assert_array_equal(mask, expected)
  np.testing.assert_array_equal(state.age[0], 0)
  np.testing.assert_array_equal(state.utility[1], 0.0)
  np.testing.assert_array_equal(state.to_replace, 0.0)


def test_equal_utilities_replace_the_lowest_indices_first():
  params = {
    "Dense_0": {"kernel": jnp.ones((2, 4)), "bias": jnp.zeros(4)},
    "Dense_1": {"kernel": jnp.ones((4, 1)), "bias": jnp.zeros(1)},
  }
  tx = optax.sgd(0.1)
  layers = ["Dense_0", "Dense_1"]
  step = jitted(layers=layers, optimizer=tx, maturity_threshold=0)
  *_, (replaced,) = step(
    params,
    tx.init(params),
    baselines.continual_backprop_init(params, layers),
    jnp.ones((3, 4)),
    fresh_params=fresh_of(params),
    replacement_rate=0.5,  # 2 of 4 mature units
  )
  np.testing.assert_array_equal(replaced, [True, True, False, False])


def test_one_unit_in_100_calls_at_rate_1e_4_with_100_units():
  params = helpers.mlp_params([2, 100, 1])
  tx = optax.sgd(0.1)
  layers = ["Dense_0", "Dense_1"]
  hidden = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 100)))
  fresh = fresh_of(params)

  def body(carry, _):
    params, state = carry
    params, _, state, (replaced,) = baselines.continual_backprop(
      params,
      tx.init(params),
      state,
      hidden,
      layers,
      fresh,
      optimizer=tx,
      replacement_rate=1e-4,
      maturity_threshold=0,
    )
    return (params, state), replaced.sum()

  state = baselines.continual_backprop_init(params, layers)
  _, counts = jax.jit(lambda c: jax.lax.scan(body, c, length=250))(
    (params, state)
  )
  (calls,) = np.nonzero(np.asarray(counts))
  # 0.01 of a unit per call: the count reaches 1 at about calls 100 and 200
  # (float32 sums of 0.01 land a call either side).
  assert np.asarray(counts).sum() == 2
  assert abs(calls[0] + 1 - 100) <= 1 and abs(calls[1] + 1 - 200) <= 2


def test_the_function_on_the_batch_is_kept_when_a_dead_unit_is_replaced():
  params = jax.tree.map(np.array, helpers.mlp_params([3, 5, 4, 2]))
  params["Dense_0"]["bias"][1] = -100.0  # unit 1 is 0 on every input
  x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
  output, hidden = relu_mlp(params, x)
  fresh = helpers.mlp_params([3, 5, 4, 2], seed=1)
  tx = optax.adam(1e-3)
  step = jitted(layers=LAYERS, optimizer=tx, maturity_threshold=0)
  new, _, _, replaced = step(
    params,
    tx.init(params),
    baselines.continual_backprop_init(params, LAYERS),
    hidden,
    fresh_params=fresh,
    replacement_rate=0.2,  # 1 of Dense_0's 5 units, 0.8 of Dense_1's 4
  )
  np.testing.assert_array_equal(replaced[0], [False, True, False, False, False])
  np.testing.assert_array_equal(replaced[1], False)
  assert float(new["Dense_0"]["bias"][1]) == float(fresh["Dense_0"]["bias"][1])
  np.testing.assert_allclose(relu_mlp(new, x)[0], output, rtol=1e-6)


def test_vmap_over_seeds_under_jit_gives_each_seed_its_own_step():
  tx = optax.adam(1e-3)
  rng = np.random.default_rng(0)

  def lane(seed):
    params = helpers.mlp_params([3, 5, 4, 2], seed=seed)
    hidden = [np.abs(rng.normal(size=(6, width))) for width in (5, 4)]
    fresh = helpers.mlp_params([3, 5, 4, 2], seed=10 + seed)
    return params, adam_state(params, tx), hidden, fresh

  lanes = [lane(seed) for seed in range(3)]
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *lanes)
  step = functools.partial(
    baselines.continual_backprop,
    layers=LAYERS,
    optimizer=tx,
    replacement_rate=0.25,
    decay_rate=0.9,
    maturity_threshold=0,
  )
  init = functools.partial(baselines.continual_backprop_init, layers=LAYERS)
  states = jax.jit(jax.vmap(init))(stacked[0])
  params, opt_state, activations, fresh = stacked
  batched = jax.jit(jax.vmap(step))(
    params, opt_state, states, activations, fresh_params=fresh
  )
  replaced_units = set()
  one_seed = jax.jit(step)
  for seed, (params, opt_state, activations, fresh) in enumerate(lanes):
    alone = one_seed(
      params, opt_state, init(params), activations, fresh_params=fresh
    )
    chex.assert_trees_all_close(
      jax.tree.map(lambda x, i=seed: np.asarray(x)[i], batched),
      alone,
      rtol=1e-6,
    )
    replaced_units.add(tuple(np.flatnonzero(alone[3][0])))
  assert len(replaced_units) > 1  # the seeds replace different units


def conv_params(rng, next_shape):
  return helpers.to_jax(
    {
      "Conv_0": {
        "kernel": rng.normal(size=(3, 3, 2, 4)),
        "bias": rng.normal(size=4),
      },
      "Next_0": {
        "kernel": rng.normal(size=next_shape),
        "bias": rng.normal(size=next_shape[-1]),
      },
    }
  )


def test_a_conv_layer_sums_over_pixels_and_the_next_kernel_taps():
  rng = np.random.default_rng(0)
  params = conv_params(rng, (3, 3, 4, 5))
  layers = ["Conv_0", "Next_0"]
  hidden = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
  tx = optax.adam(1e-3)
  step = jitted(layers=layers, optimizer=tx, maturity_threshold=0)
  new, new_opt_state, state, (replaced,) = step(
    params,
    adam_state(params, tx),
    baselines.continual_backprop_init(params, layers),
    jnp.asarray(hidden),
    fresh_params=fresh_of(params),
    replacement_rate=0.25,  # one of 4 channels
    decay_rate=0.0,  # the utility is this batch's contribution
  )
  utility = contribution(hidden, params["Next_0"]["kernel"])
  unit = int(np.argmin(utility))
  np.testing.assert_array_equal(replaced, np.arange(4) == unit)
  kept = np.arange(4) != unit
  np.testing.assert_allclose(state.utility[0][kept], utility[kept], rtol=1e-5)
  assert float(state.utility[0][unit]) == 0.0
  kernel_0 = np.array(params["Conv_0"]["kernel"])
  kernel_0[..., unit] *= -1
  bias_0 = np.array(params["Conv_0"]["bias"])
  bias_0[unit] *= -1
  kernel_1 = np.array(params["Next_0"]["kernel"])
  kernel_1[:, :, unit, :] = 0.0
  np.testing.assert_array_equal(new["Conv_0"]["kernel"], kernel_0)
  np.testing.assert_array_equal(new["Conv_0"]["bias"], bias_0)
  np.testing.assert_array_equal(new["Next_0"]["kernel"], kernel_1)
  np.testing.assert_array_equal(new["Next_0"]["bias"], params["Next_0"]["bias"])
  mu = new_opt_state[0].mu
  np.testing.assert_array_equal(mu["Conv_0"]["kernel"][..., unit], 0.0)
  np.testing.assert_array_equal(mu["Conv_0"]["kernel"][..., kept], 0.5)
  np.testing.assert_array_equal(mu["Next_0"]["kernel"][:, :, unit], 0.0)
  np.testing.assert_array_equal(mu["Next_0"]["kernel"][:, :, kept], 0.5)
  np.testing.assert_array_equal(mu["Next_0"]["bias"], 0.5)


def test_a_dense_layer_after_a_flattened_conv_sums_the_rows_of_each_channel():
  rng = np.random.default_rng(1)
  params = conv_params(rng, (2 * 2 * 4, 3))
  layers = ["Conv_0", "Next_0"]
  hidden = rng.normal(size=(5, 2, 2, 4)).astype(np.float32)
  tx = optax.sgd(0.1)
  step = jitted(layers=layers, optimizer=tx, maturity_threshold=0)
  new, _, state, (replaced,) = step(
    params,
    tx.init(params),
    baselines.continual_backprop_init(params, layers),
    jnp.asarray(hidden),
    fresh_params=fresh_of(params),
    replacement_rate=0.0,  # tracks utilities and ages, replaces nothing
    decay_rate=0.0,
  )
  np.testing.assert_array_equal(replaced, False)
  np.testing.assert_allclose(
    state.utility[0],
    contribution(hidden, params["Next_0"]["kernel"]),
    rtol=1e-5,
  )
  np.testing.assert_array_equal(state.age[0], 1)
  chex.assert_trees_all_equal(new, params)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (
      {"replacement_rate": -0.1},
      "continual_backprop: `replacement_rate` must be in [0, 1]; got -0.1",
    ),
    (
      {"replacement_rate": 1.5},
      "continual_backprop: `replacement_rate` must be in [0, 1]; got 1.5",
    ),
    (
      {"decay_rate": 1.0},
      "continual_backprop: `decay_rate` must be in [0, 1); got 1.0",
    ),
    (
      {"decay_rate": -0.5},
      "continual_backprop: `decay_rate` must be >= 0; got -0.5",
    ),
    (
      {"maturity_threshold": -1},
      "continual_backprop: `maturity_threshold` must be an int >= 0",
    ),
    (
      {"maturity_threshold": 2.5},
      "continual_backprop: `maturity_threshold` must be an int >= 0",
    ),
    (
      {"maturity_threshold": True},
      "continual_backprop: `maturity_threshold` must be an int >= 0",
    ),
    (
      {"state": (STATE.utility, STATE.age, STATE.to_replace)},
      "continual_backprop: `state` is a tuple, not a ContinualBackpropState; "
      "make it with `continual_backprop_init(params, layers)`",
    ),
    (
      {"state": STATE._replace(age=STATE.age[:1])},
      "continual_backprop: `state.age` has 1 entries but `layers` has 2 "
      "layers before the last",
    ),
    (
      {"state": STATE._replace(utility=(jnp.zeros(4), jnp.zeros(2)))},
      "continual_backprop: `state.utility` has shape (4,) for the layer "
      "('Dense_0',), which has 3 units: expected (3,)",
    ),
    (
      {"state": STATE._replace(to_replace=(jnp.zeros(1), jnp.float32(0)))},
      "continual_backprop: `state.to_replace` has shape (1,)",
    ),
    (
      {"activations": [jnp.asarray(HIDDEN_0)]},
      "continual_backprop: `activations` has 1 array(s) but `layers` has 3",
    ),
    (
      {"fresh_params": {"Dense_0": PARAMS["Dense_0"]}},
      "continual_backprop: `params` and `fresh_params` have different tree "
      "structures",
    ),
  ],
)
def test_bad_arguments_are_refused_by_name(mlp, kwargs, message):
  params, tx, opt_state, activations = mlp
  arguments = {
    "params": params,
    "opt_state": opt_state,
    "state": STATE,
    "activations": activations,
    "layers": LAYERS,
    "fresh_params": fresh_of(params),
    "optimizer": tx,
    **HYPERPARAMS,
    **kwargs,
  }
  with pytest.raises(ValueError, match=re.escape(message)):
    baselines.continual_backprop(**arguments)


def test_init_needs_two_or_more_dense_or_conv_layers(mlp):
  params, *_ = mlp
  with pytest.raises(
    ValueError,
    match=re.escape("continual_backprop_init: `layers` gives 1 layer(s)"),
  ):
    baselines.continual_backprop_init(params, ["Dense_0"])
  state = baselines.continual_backprop_init(params, LAYERS)
  assert [u.shape for u in state.utility] == [(3,), (2,)]


@pytest.mark.parametrize(
  "model, layer, norm",
  [("layer_norm_mlp", "hidden_0", "norms_0"), ("cnn_bn", "conv1", "bn1")],
)
def test_a_normalization_after_a_replaced_layer_is_refused_by_name(
  model, layer, norm
):
  params, layers = helpers.normalized_model(model)
  tx = optax.adam(1e-3)
  refused = (
    f"the layer {layer!r} in `layers` is followed by the normalization "
    f"layer {norm!r}"
  )
  with pytest.raises(
    ValueError, match=re.escape(f"continual_backprop_init: {refused}")
  ):
    baselines.continual_backprop_init(params, layers)
  with pytest.raises(
    ValueError, match=re.escape(f"continual_backprop: {refused}")
  ):
    baselines.continual_backprop(
      params, tx.init(params), STATE, [], layers, params, optimizer=tx
    )
