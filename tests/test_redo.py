"""ReDo (baselines.redo) against hand-computed resets of params and moments."""

from __future__ import annotations

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_swr
from optax_swr import baselines
from optax_swr import metrics
from tests import helpers

LAYERS = ["Dense_0", "Dense_1", "Dense_2"]

# Dense_0: 2 -> 3, Dense_1: 3 -> 3, Dense_2: 3 -> 2, written out by hand.
PARAMS = {
  "Dense_0": {
    "kernel": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
    "bias": [0.1, 0.2, 0.3],
  },
  "Dense_1": {
    "kernel": [[10.0, 11.0, 12.0], [13.0, 14.0, 15.0], [16.0, 17.0, 18.0]],
    "bias": [0.4, 0.5, 0.6],
  },
  "Dense_2": {
    "kernel": [[20.0, 21.0], [22.0, 23.0], [24.0, 25.0]],
    "bias": [0.7, 0.8],
  },
}

# Dense_0's unit 0 is always 0: s = 0 / (4 / 3) = 0, dormant for any tau.
# Dense_1's unit 0 is small: mean |h| = (0.1, 3, 3), s_0 = 0.1 / (6.1 / 3)
# = 0.049, dormant for tau = 0.1 but not for tau = 0.
HIDDEN_0 = [[0.0, 1.0, 2.0], [0.0, 3.0, 2.0]]
HIDDEN_1 = [[0.1, 4.0, 2.0], [0.1, 2.0, 4.0]]


def arrays(tree):
  """A tree of nested lists (one leaf per list) as float32 arrays."""
  return jax.tree.map(
    lambda x: jnp.asarray(x, jnp.float32),
    tree,
    is_leaf=lambda x: isinstance(x, list),
  )


def fresh_of(params):
  """A 'fresh init' that differs from params at every entry: -params."""
  return jax.tree.map(jnp.negative, params)


def adam_state(params, tx):
  """Adam's state with mu = 0.5 and nu = 0.25 everywhere, count 7."""
  (adam, rest) = tx.init(params)
  adam = adam._replace(
    count=jnp.int32(7),
    mu=jax.tree.map(lambda p: jnp.full_like(p, 0.5), params),
    nu=jax.tree.map(lambda p: jnp.full_like(p, 0.25), params),
  )
  return (adam, rest)


@pytest.fixture
def mlp():
  params = arrays(PARAMS)
  tx = optax.adam(1e-3)
  activations = [jnp.asarray(HIDDEN_0), jnp.asarray(HIDDEN_1)]
  return params, tx, adam_state(params, tx), activations


def test_a_hand_computed_mlp_reset_of_params_and_adam_moments(mlp):
  params, tx, opt_state, activations = mlp
  new, new_state, dormant = baselines.redo(
    params, opt_state, activations, LAYERS, fresh_of(params), optimizer=tx
  )
  np.testing.assert_array_equal(dormant[0], [True, False, False])
  np.testing.assert_array_equal(dormant[1], [True, False, False])
  expected = {
    "Dense_0": {  # column 0 (into unit 0) and bias 0 fresh
      "kernel": [[-1.0, 2.0, 3.0], [-4.0, 5.0, 6.0]],
      "bias": [-0.1, 0.2, 0.3],
    },
    "Dense_1": {  # row 0 (out of Dense_0's unit 0) zero, column 0 fresh
      "kernel": [[0.0, 0.0, 0.0], [-13.0, 14.0, 15.0], [-16.0, 17.0, 18.0]],
      "bias": [-0.4, 0.5, 0.6],
    },
    "Dense_2": {  # row 0 (out of Dense_1's unit 0) zero
      "kernel": [[0.0, 0.0], [22.0, 23.0], [24.0, 25.0]],
      "bias": [0.7, 0.8],
    },
  }
  # Exact: reset entries are copies or zeros, the others untouched.
  chex.assert_trees_all_equal(new, arrays(expected))
  reset = {  # every entry that changed above, in or out
    "Dense_0": {
      "kernel": [[1, 0, 0], [1, 0, 0]],
      "bias": [1, 0, 0],
    },
    "Dense_1": {
      "kernel": [[1, 1, 1], [1, 0, 0], [1, 0, 0]],
      "bias": [1, 0, 0],
    },
    "Dense_2": {"kernel": [[1, 1], [0, 0], [0, 0]], "bias": [0, 0]},
  }
  adam, _ = new_state
  for moment, value in ((adam.mu, 0.5), (adam.nu, 0.25)):
    expected_moment = jax.tree.map(
      lambda r, v=value: v * (1 - r), arrays(reset)
    )
    chex.assert_trees_all_equal(moment, expected_moment)
  assert int(adam.count) == 7


def test_leaves_no_unit_reads_or_feeds_are_passed_through(mlp):
  params, tx, opt_state, activations = mlp
  new, new_state, _ = baselines.redo(
    params, opt_state, activations, LAYERS, fresh_of(params), optimizer=tx
  )
  # The last layer's bias: its units are the outputs, never reset.
  assert new["Dense_2"]["bias"] is params["Dense_2"]["bias"]
  assert (
    new_state[0].nu["Dense_2"]["bias"] is opt_state[0].nu["Dense_2"]["bias"]
  )


def test_tau_zero_resets_only_units_that_are_exactly_zero(mlp):
  params, tx, opt_state, activations = mlp
  new, new_state, dormant = baselines.redo(
    params,
    opt_state,
    activations,
    LAYERS,
    fresh_of(params),
    optimizer=tx,
    tau=0.0,
  )
  np.testing.assert_array_equal(dormant[0], [True, False, False])
  np.testing.assert_array_equal(dormant[1], [False, False, False])
  kernel = np.array(PARAMS["Dense_1"]["kernel"])
  kernel[0] = 0.0  # only the rows out of Dense_0's unit 0
  np.testing.assert_array_equal(new["Dense_1"]["kernel"], kernel)
  np.testing.assert_array_equal(
    new["Dense_1"]["bias"], np.float32([0.4, 0.5, 0.6])
  )
  np.testing.assert_array_equal(
    new["Dense_2"]["kernel"], PARAMS["Dense_2"]["kernel"]
  )
  np.testing.assert_array_equal(new_state[0].mu["Dense_2"]["kernel"], 0.5)


def test_a_score_equal_to_tau_is_dormant_as_in_the_paper(mlp):
  params, tx, opt_state, _ = mlp
  # mean |h| = (0.5, 1.5, 1): the layer mean is 1, so s_0 = 0.5 exactly.
  hidden = jnp.array([[0.5, 1.5, 1.0], [-0.5, 1.5, 1.0]])
  for tau, expected in ((0.5, True), (0.49, False)):
    *_, dormant = baselines.redo(
      params,
      opt_state,
      [hidden, hidden],
      LAYERS,
      fresh_of(params),
      optimizer=tx,
      tau=tau,
    )
    np.testing.assert_array_equal(dormant[0], [expected, False, False])
    # The metric counts the same units.
    assert metrics.dormant_fraction(hidden, tau) == np.float32(expected / 3)


def test_the_function_on_the_batch_is_kept_when_dead_units_reset():
  params = helpers.mlp_params([3, 5, 4, 2])
  params["Dense_0"]["bias"] = params["Dense_0"]["bias"].at[1].set(-100.0)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)), jnp.float32)
  h0 = jax.nn.relu(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
  h1 = jax.nn.relu(h0 @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"])
  fresh = helpers.mlp_params([3, 5, 4, 2], seed=1)
  tx = optax.adam(1e-3)
  new, _, dormant = baselines.redo(
    params, tx.init(params), [h0, h1], LAYERS, fresh, optimizer=tx, tau=0.0
  )
  assert bool(dormant[0][1])
  assert float(new["Dense_0"]["bias"][1]) == float(fresh["Dense_0"]["bias"][1])
  np.testing.assert_allclose(
    helpers.relu_mlp_apply(new, LAYERS, x),
    helpers.relu_mlp_apply(params, LAYERS, x),
    rtol=1e-6,
  )


def test_jit_with_a_traced_tau_and_a_sown_dict_gives_the_same_result(mlp):
  params, tx, opt_state, activations = mlp
  fresh = fresh_of(params)
  eager = baselines.redo(
    params, opt_state, activations, LAYERS, fresh, optimizer=tx
  )
  # As `self.sow("intermediates", f"relu_{i}", h)` leaves them, inserted out
  # of order: the numbers in the names give the order.
  sown = {"relu_1": (activations[1],), "relu_0": (activations[0],)}
  step = jax.jit(
    lambda p, s, a, fr, tau: baselines.redo(
      p, s, a, LAYERS, fr, optimizer=tx, tau=tau
    )
  )
  jitted = step(params, opt_state, sown, fresh, 0.1)
  chex.assert_trees_all_equal(jitted, eager)


def test_conv_then_conv_resets_output_channels_and_input_channels():
  rng = np.random.default_rng(0)
  params = helpers.to_jax(
    {
      "Conv_0": {
        "kernel": rng.normal(size=(3, 3, 2, 4)),
        "bias": rng.normal(size=4),
      },
      "Conv_1": {
        "kernel": rng.normal(size=(3, 3, 4, 5)),
        "bias": rng.normal(size=5),
      },
    }
  )
  fresh = fresh_of(params)
  hidden = np.abs(rng.normal(size=(2, 5, 5, 4))).astype(np.float32)
  hidden[..., 2] = 0.0  # channel 2 is dead on every pixel of the batch
  tx = optax.adam(1e-3)
  new, new_state, (dormant,) = baselines.redo(
    params,
    adam_state(params, tx),
    jnp.asarray(hidden),
    ["Conv_0", "Conv_1"],
    fresh,
    optimizer=tx,
    tau=0.0,
  )
  np.testing.assert_array_equal(dormant, [False, False, True, False])
  kernel_0 = np.array(params["Conv_0"]["kernel"])
  kernel_0[..., 2] = fresh["Conv_0"]["kernel"][..., 2]
  bias_0 = np.array(params["Conv_0"]["bias"])
  bias_0[2] = fresh["Conv_0"]["bias"][2]
  kernel_1 = np.array(params["Conv_1"]["kernel"])
  kernel_1[:, :, 2, :] = 0.0
  np.testing.assert_array_equal(new["Conv_0"]["kernel"], kernel_0)
  np.testing.assert_array_equal(new["Conv_0"]["bias"], bias_0)
  np.testing.assert_array_equal(new["Conv_1"]["kernel"], kernel_1)
  np.testing.assert_array_equal(new["Conv_1"]["bias"], params["Conv_1"]["bias"])
  mu = new_state[0].mu
  np.testing.assert_array_equal(mu["Conv_0"]["kernel"][..., 2], 0.0)
  np.testing.assert_array_equal(mu["Conv_0"]["kernel"][..., [0, 1, 3]], 0.5)
  np.testing.assert_array_equal(mu["Conv_1"]["kernel"][:, :, 2], 0.0)
  np.testing.assert_array_equal(mu["Conv_1"]["kernel"][:, :, [0, 1, 3]], 0.5)
  np.testing.assert_array_equal(mu["Conv_1"]["bias"], 0.5)


def test_conv_then_flattened_dense_zeroes_the_rows_of_the_dead_channel():
  rng = np.random.default_rng(1)
  params = helpers.to_jax(
    {
      "Conv_0": {
        "kernel": rng.normal(size=(3, 3, 1, 3)),
        "bias": rng.normal(size=3),
      },
      "Dense_0": {
        "kernel": rng.normal(size=(2 * 2 * 3, 4)),
        "bias": rng.normal(size=4),
      },
    }
  )
  hidden = np.abs(rng.normal(size=(5, 2, 2, 3))).astype(np.float32)
  hidden[..., 1] = 0.0
  tx = optax.sgd(0.1)
  new, _, (dormant,) = baselines.redo(
    params,
    tx.init(params),
    jnp.asarray(hidden),
    ["Conv_0", "Dense_0"],
    fresh_of(params),
    optimizer=tx,
    tau=0.0,
  )
  np.testing.assert_array_equal(dormant, [False, True, False])
  kernel = np.array(params["Dense_0"]["kernel"])
  kernel[[1, 4, 7, 10]] = 0.0  # NHWC flattening: row r reads channel r % 3
  np.testing.assert_array_equal(new["Dense_0"]["kernel"], kernel)
  # Those are the rows that read channel 1: whatever it becomes, the dense
  # layer's output does not move.
  revived = hidden.copy()
  revived[..., 1] = rng.normal(size=(5, 2, 2))
  np.testing.assert_allclose(
    revived.reshape(5, -1) @ new["Dense_0"]["kernel"],
    hidden.reshape(5, -1) @ new["Dense_0"]["kernel"],
    rtol=1e-6,
  )


def test_an_swr_state_in_the_chain_is_kept(mlp):
  params, _, _, activations = mlp
  tx = optax.chain(optax.adam(1e-3), optax_swr.swr(0.1, layers=LAYERS))
  ones = jax.tree.map(jnp.ones_like, params)
  opt_state = optax.tree.set(tx.init(params), mu=ones)
  _, new_state, _ = baselines.redo(
    params, opt_state, activations, LAYERS, fresh_of(params), optimizer=tx
  )
  assert isinstance(new_state[1], optax_swr.SWRState)
  for before, after in zip(
    jax.tree.leaves(opt_state[1]), jax.tree.leaves(new_state[1])
  ):
    assert after is before
  mu = optax.tree.get(new_state, "mu")["Dense_2"]["kernel"]
  np.testing.assert_array_equal(mu, [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])


def test_wrong_number_of_activations_is_refused(mlp):
  params, tx, opt_state, activations = mlp
  with pytest.raises(
    ValueError, match=r"redo: `activations` has 1 array.*3 layers"
  ):
    baselines.redo(
      params, opt_state, activations[:1], LAYERS, fresh_of(params), optimizer=tx
    )


def test_activations_that_do_not_fit_their_layer_are_refused(mlp):
  params, tx, opt_state, activations = mlp
  wide = jnp.ones((2, 4))
  with pytest.raises(ValueError, match=r"layer \('Dense_1',\) have 4 units"):
    baselines.redo(
      params,
      opt_state,
      [activations[0], wide],
      LAYERS,
      fresh_of(params),
      optimizer=tx,
    )
  with pytest.raises(ValueError, match=r"`activations\[0\]` has shape \(3,\)"):
    baselines.redo(
      params,
      opt_state,
      [jnp.ones(3), activations[1]],
      LAYERS,
      fresh_of(params),
      optimizer=tx,
    )


def test_a_next_layer_that_cannot_read_the_units_is_refused():
  params = helpers.to_jax(
    {
      "Dense_0": {"kernel": np.ones((2, 3))},
      "Dense_1": {"kernel": np.ones((4, 2))},
      "Conv_0": {"kernel": np.ones((3, 3, 2, 2))},
    }
  )
  tx = optax.sgd(0.1)
  for layers in (["Dense_0", "Dense_1"], ["Dense_0", "Conv_0"]):
    with pytest.raises(ValueError, match="cannot read the 3 units"):
      baselines.redo(
        params,
        tx.init(params),
        jnp.ones((2, 3)),
        layers,
        params,
        optimizer=tx,
      )


def test_unordered_dict_names_are_refused(mlp):
  params, tx, opt_state, activations = mlp
  named = {"features": activations[0], "penultimate": activations[1]}
  with pytest.raises(ValueError, match="Pass a list in forward order"):
    baselines.redo(
      params, opt_state, named, LAYERS, fresh_of(params), optimizer=tx
    )


def test_layers_redo_cannot_reset_are_refused(mlp):
  params, tx, opt_state, activations = mlp
  with pytest.raises(ValueError, match="two or more consecutive"):
    baselines.redo(
      params, opt_state, [], ["Dense_0"], fresh_of(params), optimizer=tx
    )
  norm = optax_swr.Layer(("Dense_1", "kernel"), norm=True)
  with pytest.raises(
    ValueError,
    match="'Dense_0' in `layers` is followed by the normalization layer "
    "'Dense_1'",
  ):
    baselines.redo(
      params,
      opt_state,
      activations,
      ["Dense_0", norm, "Dense_2"],
      fresh_of(params),
      optimizer=tx,
    )
  stacked = {"blocks": {"kernel": jnp.ones((2, 3, 3))}}
  slices = [optax_swr.Layer(("blocks", "kernel"), index=(i,)) for i in (0, 1)]
  with pytest.raises(ValueError, match="slice of a stacked leaf"):
    baselines.redo(
      stacked,
      optax.sgd(0.1).init(stacked),
      jnp.ones((2, 3)),
      slices,
      stacked,
      optimizer=optax.sgd(0.1),
    )


def test_bad_tau_fresh_params_and_optimizer_state_are_refused(mlp):
  params, tx, opt_state, activations = mlp
  call = functools.partial(
    baselines.redo, params, opt_state, activations, LAYERS
  )
  with pytest.raises(ValueError, match=r"redo: `tau` must be >= 0"):
    call(fresh_of(params), optimizer=tx, tau=-0.1)
  with pytest.raises(ValueError, match="different tree structures"):
    call({"Dense_0": params["Dense_0"]}, optimizer=tx)
  small = jax.tree.map(lambda p: p[..., :1], params)
  with pytest.raises(ValueError, match="`fresh_params` has a leaf of shape"):
    call(small, optimizer=tx)
  factored = optax.adafactor(1e-3, min_dim_size_to_factor=2)
  with pytest.raises(ValueError, match="`opt_state` has a leaf of shape"):
    baselines.redo(
      params,
      factored.init(params),
      activations,
      LAYERS,
      fresh_of(params),
      optimizer=factored,
    )


# What follows the refused layer: the layers left to recycle, if any.
NORMALIZED = {
  "layer_norm_mlp": ("hidden_0", "norms_0", "no layers are left to recycle"),
  "cnn_bn": ("conv1", "bn1", "recycle only the layers ['fc1', 'head']"),
}


def _as_given(layers, form):
  """The traced layers as a user may pass them."""
  if form == "traced":
    return layers
  if form == "list_without_norms":  # the trace still knows where they sit
    return [layer for layer in layers if not layer.norm]
  return [layer.path for layer in layers]  # paths, norms listed in order


@pytest.mark.parametrize("form", ["traced", "list_without_norms", "paths"])
@pytest.mark.parametrize("model", NORMALIZED)
def test_a_normalization_after_a_recycled_layer_is_refused_by_name(model, form):
  params, layers = helpers.normalized_model(model)
  layer, norm, instead = NORMALIZED[model]
  tx = optax.adam(1e-3)
  with pytest.raises(ValueError) as error:
    baselines.redo(
      params, tx.init(params), [], _as_given(layers, form), params, optimizer=tx
    )
  message = str(error.value)
  assert message.startswith(
    f"redo: the layer {layer!r} in `layers` is followed by the "
    f"normalization layer {norm!r}, so redo cannot recycle its units"
  ), message
  assert "Use swr instead" in message and instead in message, message


def test_paths_that_leave_the_normalization_layers_out_are_refused():
  params, _ = helpers.normalized_model("layer_norm_mlp")
  tx = optax.adam(1e-3)
  message = (
    "redo: the params hold the normalization layer(s) ['norms_0', "
    "'norms_1'], which `layers` does not list"
  )
  with pytest.raises(ValueError, match=re.escape(message)):
    baselines.redo(
      params,
      tx.init(params),
      [],
      ["hidden_0", "hidden_1", "head"],
      params,
      optimizer=tx,
    )


def test_the_layers_the_refusal_names_can_be_recycled():
  """fc1 and head of the CNN-BN: no normalization after fc1; BatchNorm layers
  before the first recycled layer are fine."""
  params, layers = helpers.normalized_model("cnn_bn")
  tx = optax.adam(1e-3)
  hidden = [jnp.zeros((4, params["fc1"]["kernel"].shape[-1]))]
  for given in (
    [layer for layer in layers if layer.name in ["fc1", "head"]],
    [("bn1",), ("bn2",), ("fc1",), ("head",)],
  ):
    _, _, dormant = baselines.redo(
      params, tx.init(params), hidden, given, params, optimizer=tx
    )
    assert bool(dormant[0].all())  # all-zero units are dormant
