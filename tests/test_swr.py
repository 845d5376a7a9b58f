"""swr inside JAX and optax machinery, and the errors for bad arguments.

The optax battery that every public transform passes (jit, extra args,
inject_hyperparams, MultiSteps, masked, dtypes, state stability,
tree_map_params) is in test_optax_battery.py; this file keeps what is
particular to swr: vmap over an ensemble, what injected coefficients of 0
and 1 do, masking a layer, the dtypes of its state, nnx, and its errors.
"""

from __future__ import annotations

import re
import subprocess
import sys

import chex
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_swr
from tests import helpers
from tests import reference

WIDTHS = [5, 7, 6, 3]
NAMES = ["Dense_0", "Dense_1", "Dense_2"]


@pytest.fixture
def params():
  return helpers.mlp_params(WIDTHS)


def test_vmap_over_an_ensemble_equals_one_member_at_a_time():
  members = [helpers.mlp_params(WIDTHS, seed=s) for s in range(3)]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
  grads = [helpers.random_like(m, 10 + i) for i, m in enumerate(members)]
  stacked_grads = jax.tree.map(lambda *xs: jnp.stack(xs), *grads)
  tx = optax.chain(optax.adam(0.1), optax_swr.swr(coef=0.2))

  state = jax.vmap(tx.init)(stacked)
  updates, state = jax.jit(jax.vmap(tx.update))(stacked_grads, state, stacked)

  for i, member in enumerate(members):
    single, single_state = tx.update(grads[i], tx.init(member), member)
    helpers.assert_trees_close(
      jax.tree.map(lambda x, i=i: x[i], updates), single
    )
    np.testing.assert_allclose(
      state[1].layer_scales[i], single_state[1].layer_scales, rtol=1e-6
    )


def test_an_injected_coef_of_0_passes_through_and_1_pins_the_norms(params):
  grads = helpers.random_like(params, 2, scale=3.0)
  injected = optax.inject_hyperparams(optax_swr.swr)(coef=0.1)
  state = injected.init(params)
  update = jax.jit(injected.update)

  state.hyperparams["coef"] = jnp.asarray(0.0)
  updates, _ = update(grads, state, params)
  helpers.assert_trees_close(updates, grads, rtol=0, atol=0)
  # coef = 1: every weight lands back on its reference norm.
  state.hyperparams["coef"] = jnp.asarray(1.0)
  _, new_state = update(grads, state, params)
  np.testing.assert_allclose(
    new_state.inner_state.weight_norms,
    state.inner_state.reference_norms,
    rtol=1e-6,
  )


def test_inject_hyperparams_with_classifier_needs_static_args(params):
  injected = optax.inject_hyperparams(optax_swr.swr)(
    coef=0.1, classifier=1, classifier_coef=1.0
  )
  with pytest.raises(
    ValueError, match=re.escape("static_args=('classifier',)")
  ):
    jax.jit(injected.init)(params)


@pytest.mark.parametrize(
  "hidden, expected",
  [
    (
      "kernels_only",
      "('Dense_0', 'bias'), ('Dense_1', 'bias'), ('head', 'bias')",
    ),
    ("head", "('head', 'bias'), ('head', 'kernel')"),
  ],
)
def test_optax_masked_hiding_a_layer_leaf_raises_with_the_fix(hidden, expected):
  """optax.masked(swr, kernels_only), the first thing a weight-decay user
  writes, changed the output by 11% silently: the hidden biases kept their
  scale. A whole hidden head does the same to its bias."""
  params = helpers.mlp_params([4, 5, 3], names=["Dense_0", "Dense_1"])
  params["head"] = helpers.mlp_params([3, 2])["Dense_0"]
  if hidden == "kernels_only":
    mask = jax.tree.map(lambda p: p.ndim == 2, params)
  else:
    mask = {
      name: jax.tree.map(lambda _, name=name: name != "head", params[name])
      for name in params
    }
  tx = optax.masked(
    optax_swr.swr(coef=1.0, layers=["Dense_0", "Dense_1"]), mask
  )
  with pytest.raises(
    ValueError,
    match=re.escape(f"swr: optax.masked hides [{expected}] from swr")
    + r".*coef 0.0.*optax.chain\(optax.masked\(base, mask\)",
  ):
    tx.init(params)


def test_optax_masked_may_hide_leaves_that_are_no_layers_leaves():
  params = helpers.mlp_params([4, 5, 3])
  params["pos_embedding"] = jnp.ones((5,))
  mask = jax.tree.map(lambda p: p.ndim != 1 or p.shape != (5,), params)
  mask["Dense_0"]["bias"] = True
  tx = optax.masked(optax_swr.swr(coef=0.5), mask)
  grads = helpers.random_like(params, 4, scale=2.0)
  updates, state = tx.update(grads, tx.init(params), params)
  assert updates["pos_embedding"] is grads["pos_embedding"]
  assert state.inner_state.reference_norms.shape == (2,)


class NnxMLP(nnx.Module):
  """Layers in an nnx.List: their State keys are 0, 1, 2."""

  def __init__(self, rngs: nnx.Rngs):
    node_list = getattr(nnx, "List", list)  # flax < 0.12 takes plain lists
    self.layers = node_list(
      [nnx.Linear(a, b, rngs=rngs) for a, b in zip(WIDTHS[:-1], WIDTHS[1:])]
    )

  def __call__(self, x):
    for layer in self.layers[:-1]:
      x = jax.nn.relu(layer(x))
    return self.layers[-1](x)


def test_nnx_optimizer_with_state_params_matches_plain_dict_params():
  model = NnxMLP(nnx.Rngs(0))
  as_dict = nnx.to_pure_dict(
    nnx.state(model, nnx.Param)
  )  # {"layers": {0: ...}}
  tx = optax.chain(optax.adam(0.1), optax_swr.swr(coef=0.2))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  x = jnp.ones((4, WIDTHS[0]))
  grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
  optimizer.update(model, grads)

  dict_grads = nnx.to_pure_dict(grads)
  updates, _ = tx.update(dict_grads, tx.init(as_dict), as_dict)
  expected = optax.apply_updates(as_dict, updates)
  helpers.assert_trees_close(
    nnx.to_pure_dict(nnx.state(model, nnx.Param)), expected, rtol=1e-5
  )
  scales = optax.tree.get(optimizer.opt_state, "layer_scales")
  assert scales.shape == (3,) and not np.allclose(scales, 1.0)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_params_get_updates_of_their_dtype_and_a_float32_state(
  dtype,
):
  params = helpers.mlp_params(WIDTHS, dtype=dtype)
  tx = optax.chain(
    optax.adam(1e-2),
    optax_swr.swr(
      coef=optax.linear_schedule(0.5, 0.0, 4),
      classifier=1,
      classifier_coef=0.9,
    ),
  )
  initial = tx.init(params)
  updates, state = jax.jit(tx.update)(
    helpers.random_like(params, 5), initial, params
  )
  chex.assert_trees_all_equal_dtypes(updates, params)
  chex.assert_trees_all_equal_shapes_and_dtypes(state, initial)
  for name in [
    "reference_norms",
    "layer_scales",
    "cumulative_scales",
    "weight_norms",
    "input_scales",
  ]:
    assert optax.tree.get(state, name).dtype == jnp.float32
  assert optax.tree.get(state, "step_count").dtype == jnp.int32


def test_reset_reference_norms_on_demand_inside_nested_states(params):
  tx = optax.MultiSteps(
    optax.chain(
      optax.adam(0.1), optax.inject_hyperparams(optax_swr.swr)(coef=0.1)
    ),
    every_k_schedule=1,
  )
  state = tx.init(params)
  bigger = jax.tree.map(lambda p: 2 * p, params)
  state = optax_swr.reset_reference_norms(tx, state, bigger)
  expected = reference.weight_norms(
    reference.flatten(bigger), reference.dense_layers(NAMES)
  )
  np.testing.assert_allclose(
    optax.tree.get(state, "reference_norms"), expected, rtol=1e-6
  )
  assert optax.tree.get(state, "step_count") == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_update_does_not_spread_to_other_layers(params, bad):
  grads = helpers.random_like(params, 7, scale=3.0)
  grads["Dense_1"]["kernel"] = grads["Dense_1"]["kernel"].at[0, 0].set(bad)
  tx = optax_swr.swr(coef=0.5)
  reference_state = tx.init(jax.tree.map(lambda p: 2 * p, params))
  updates, state = tx.update(grads, reference_state, params)
  assert float(state.layer_scales[1]) == 1.0
  for name in ("Dense_0", "Dense_2"):
    chex.assert_tree_all_finite(updates[name])
  # Dense_2's bias factor skips the broken layer's: C_2 = c_0 * 1 * c_2.
  c = np.asarray(state.layer_scales)
  np.testing.assert_allclose(state.cumulative_scales[2], c[0] * c[2], rtol=1e-6)
  chex.assert_tree_all_finite(updates["Dense_1"]["bias"])


def test_lam_zero_is_an_exact_no_op(params):
  grads = helpers.random_like(params, 6)
  updates, _ = optax_swr.swr(coef=0.0).update(
    grads, optax_swr.swr(coef=0.0).init(params), params
  )
  helpers.assert_trees_close(updates, grads, rtol=0, atol=0)


def error(text):
  return pytest.raises(ValueError, match=re.escape(text))


def test_update_without_params_follows_optax_wording_and_hints(params):
  from optax._src import base  # the reference wording only

  tx = optax.chain(optax.adam(1e-3), optax_swr.swr())
  with pytest.raises(ValueError) as info:
    tx.update(params, tx.init(params))
  assert str(info.value).startswith(base.NO_PARAMS_MSG)
  assert "swr needs the current params" in str(info.value)
  assert "tx.update(grads, opt_state)" in str(info.value)


def test_updates_and_params_with_different_structure(params):
  tx = optax_swr.swr()
  with error("`updates` and `params` have different tree structures"):
    tx.update({"Dense_0": params["Dense_0"]}, tx.init(params), params)


@pytest.mark.parametrize("name", ["coef", "classifier_coef"])
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), np.float32(2.0)])
def test_coefficient_out_of_range(name, value):
  kwargs = (
    {name: value, "classifier": 1}
    if name == "classifier_coef"
    else {name: value}
  )
  with error(f"`{name}` must be in [0, 1]"):
    optax_swr.swr(**kwargs)


@pytest.mark.parametrize("value", ["0.1", True, None])
def test_coefficient_of_the_wrong_type(value):
  with error("`coef` must be a float in [0, 1] or an optax schedule"):
    optax_swr.swr(coef=value)


def test_coefficient_must_be_a_scalar():
  with error("`coef` must be a scalar; got an array of shape (2,)"):
    optax_swr.swr(coef=jnp.array([0.1, 0.2]))


def test_classifier_errors(params):
  with error("`classifier_coef` is set but `classifier` is not"):
    optax_swr.swr(classifier_coef=0.1)
  with error("`classifier` is set but `classifier_coef` is not"):
    optax_swr.swr(classifier=1)  # would silently use `coef` for the head
  with error("`classifier` must be >= 0"):
    optax_swr.swr(classifier=-1, classifier_coef=0.1)
  with error("`classifier` must be an int k (the last k layers) or a sequence"):
    optax_swr.swr(classifier=1.5, classifier_coef=0.1)
  with error("`classifier=4` asks for more layers than the network has (3)"):
    optax_swr.swr(classifier=4, classifier_coef=0.1).init(params)
  with error(
    "the `classifier` path ('head',) is not one of the rescaled layers"
  ):
    optax_swr.swr(classifier=["head"], classifier_coef=0.1).init(params)
  with error("`classifier` lists the layer ('Dense_2',) more than once"):
    optax_swr.swr(classifier=["Dense_2", ("Dense_2",)], classifier_coef=0.1)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_or_boolean_layer_leaves_are_rejected(dtype):
  params = {
    "Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2, dtype)},
    "step": jnp.zeros((), jnp.int32),
  }  # outside any layer: fine
  with error("swr: the layer 'Dense_0' has a"):
    optax_swr.swr().init(params)
  params["Dense_0"]["bias"] = jnp.ones(2)
  assert optax_swr.swr().init(params).reference_norms.shape == (1,)


def test_reset_norms_at_must_be_integers():
  with error(
    "`reset_norms_at` must be a step count or a sequence of step counts"
  ):
    optax_swr.swr(reset_norms_at=[1.5])


def test_reset_reference_norms_without_swr_state(params):
  tx = optax.adam(1e-3)
  with error("`opt_state` holds no SWRState"):
    optax_swr.reset_reference_norms(tx, tx.init(params), params)


def test_building_swr_does_not_start_a_jax_backend():
  # jax.distributed.initialize must run before any backend starts, and users
  # often build their optimizer first.
  code = (
    "import optax_swr\n"
    "from jax._src import xla_bridge\n"
    "optax_swr.swr(coef=0.1, classifier=1, classifier_coef=0.5,"
    " reset_norms_at=[3, 5], layers=['a', 'b'])\n"
    "assert not xla_bridge.backends_are_initialized()\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True)
