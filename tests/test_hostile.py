"""Odd and hostile inputs: each gets a clear error or a documented behaviour.

The layer-path errors (duplicates, missing paths, paths to leaves, layers
without a weight) are in test_layers.py; coefficient, structure and dtype
errors in test_swr.py. This file covers what is left of issue 7's list and
checks that nothing is corrupted on the way.
"""

from __future__ import annotations

import re
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_swr
from tests import helpers
from tests import reference

NAMES = ["Dense_0", "Dense_1", "Dense_2"]


def random_like(params, seed, scale=1.0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda p: jnp.asarray(scale * rng.normal(size=p.shape), p.dtype), params
  )


def test_init_with_params_none_names_the_argument():
  tx = optax.chain(optax.adam(1e-3), optax_swr.swr())
  with pytest.raises(
    ValueError, match=re.escape("`params` passed to init is None")
  ):
    tx.init(None)


@pytest.mark.parametrize("empty", [{}, [], ()])
def test_an_empty_tree_passes_updates_through(empty):
  tx = optax.chain(optax.adam(1e-3), optax_swr.swr(coef=0.5))
  state = tx.init(empty)
  assert state[1].reference_norms.shape == (0,)
  updates, state = jax.jit(tx.update)(empty, state, empty)
  assert updates == empty
  assert int(state[1].step_count) == 1


def test_a_tree_with_leaves_but_no_layer_still_raises():
  with pytest.raises(ValueError, match="nothing to rescale"):
    optax_swr.swr().init({"embeddings_table": jnp.ones((3, 2))})


def test_zero_size_layer_keeps_its_update_and_the_others_are_exact():
  params = helpers.mlp_params([4, 5, 3])
  params["Dense_0"]["kernel"] = jnp.zeros((0, 5))  # e.g. an empty feature set
  grads = random_like(params, 1)
  tx = optax_swr.swr(coef=0.5)
  updates, state = tx.update(grads, tx.init(params), params)

  np.testing.assert_array_equal(state.layer_scales[0], 1.0)
  chex.assert_shape(updates["Dense_0"]["kernel"], (0, 5))
  np.testing.assert_array_equal(
    updates["Dense_0"]["bias"], grads["Dense_0"]["bias"]
  )
  moved = reference.flatten(jax.tree.map(lambda p, g: p + g, params, grads))
  layers = reference.dense_layers(["Dense_1"])
  expected, c, _ = reference.swr_step(
    moved,
    layers,
    reference.weight_norms(reference.flatten(params), layers),
    [0.5],
  )
  new_params = reference.flatten(optax.apply_updates(params, updates))
  np.testing.assert_allclose(state.layer_scales[1], c[0], rtol=1e-6)
  for key in (("Dense_1", "kernel"), ("Dense_1", "bias")):
    np.testing.assert_allclose(new_params[key], expected[key], rtol=1e-6)


def test_all_zero_weights_stay_finite_and_unscaled_until_they_move():
  params = jax.tree.map(jnp.zeros_like, helpers.mlp_params([3, 4, 2]))
  tx = optax_swr.swr(coef=0.5)
  state = tx.init(params)
  zero_updates, state = tx.update(
    jax.tree.map(jnp.zeros_like, params), state, params
  )
  chex.assert_trees_all_equal(
    zero_updates, jax.tree.map(jnp.zeros_like, params)
  )
  # Once a weight moves it keeps the base update (c = 1), and the norm it
  # reached becomes its reference: it is not pulled back to 0.
  grads = random_like(params, 2)
  updates, state = tx.update(grads, state, params)
  np.testing.assert_allclose(state.layer_scales, [1.0, 1.0])
  helpers.assert_trees_close(updates, grads, rtol=0, atol=0)
  moved = optax.apply_updates(params, updates)
  np.testing.assert_allclose(
    state.reference_norms,
    [np.linalg.norm(moved[n]["kernel"]) for n in ("Dense_0", "Dense_1")],
    rtol=1e-6,
  )
  # From then on, the layers are rescaled toward those norms.
  grown = jax.tree.map(lambda p: 2.0 * p, moved)
  _, state = tx.update(jax.tree.map(jnp.zeros_like, grown), state, grown)
  np.testing.assert_allclose(state.layer_scales, [0.75, 0.75], rtol=1e-6)


def schedule_with_values(values):
  values = jnp.asarray(values, jnp.float32)
  return lambda count: values[jnp.minimum(count, len(values) - 1)]


@pytest.mark.parametrize("bad, clipped", [(1.7, 1.0), (-0.4, 0.0)])
def test_a_schedule_leaving_the_unit_interval_is_clipped(bad, clipped):
  params = helpers.mlp_params([4, 5, 5, 3])
  grads = random_like(params, 3, scale=2.0)
  step = jax.jit(optax_swr.swr(coef=schedule_with_values([0.3, bad])).update)
  exact = optax_swr.swr(coef=clipped)
  state = optax_swr.swr().init(params)
  _, state = step(grads, state, params)
  updates, state = step(grads, state, params)
  expected, _ = exact.update(grads, exact.init(params), params)

  assert np.all(np.asarray(state.layer_scales) > 0)
  chex.assert_trees_all_close(updates, expected, rtol=1e-6, atol=1e-7)


def test_a_nan_schedule_value_leaves_the_layers_unscaled():
  params = helpers.mlp_params([4, 5, 3])
  grads = random_like(params, 4)
  tx = optax_swr.swr(coef=lambda count: jnp.float32(jnp.nan))
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  np.testing.assert_array_equal(state.layer_scales, [1.0, 1.0])
  chex.assert_trees_all_equal(updates, grads)


def test_an_injected_coef_above_one_is_clipped_at_run_time():
  params = helpers.mlp_params([4, 5, 3])
  grads = random_like(params, 5, scale=2.0)
  tx = optax.inject_hyperparams(optax_swr.swr)(coef=0.2)
  state = tx.init(params)
  state.hyperparams["coef"] = jnp.float32(3.0)
  updates, state = jax.jit(tx.update)(grads, state, params)
  pinned = optax_swr.swr(coef=1.0)
  expected, _ = pinned.update(grads, pinned.init(params), params)
  chex.assert_trees_all_close(updates, expected, rtol=1e-6, atol=1e-7)


def test_large_bfloat16_weights_get_a_float32_norm():
  # 100 is exact in bf16; a bf16 accumulation of 576 squares would round
  # the sum to 8 significant bits (5.76e6 -> 5.75e6 or worse).
  params = {"Dense_0": {"kernel": jnp.full((24, 24), 100.0, jnp.bfloat16)}}
  state = optax_swr.swr(coef=0.5).init(params)
  np.testing.assert_allclose(state.reference_norms, [2400.0], rtol=1e-6)


def test_bfloat16_below_resolution_warns_once():
  # That such a step indeed does nothing is measured by
  # benchmarks/low_precision.py, whose numbers test_benchmarks.py checks.
  params = {"Dense_0": {"kernel": jnp.ones((4, 4), jnp.bfloat16)}}
  tx = optax_swr.swr(coef=1e-3)
  with pytest.warns(
    optax_swr.LowPrecisionWarning, match="float32 master params"
  ) as record:
    tx.init(params)
    tx.init(params)
  assert len(record) == 1


@pytest.mark.parametrize(
  "coef, dtype",
  [
    (1e-2, jnp.bfloat16),  # above bf16's resolution
    (1e-3, jnp.float16),  # above f16's (4.9e-4)
    (1e-5, jnp.float32),
    (0.0, jnp.bfloat16),  # a deliberate no-op
    (optax.constant_schedule(1e-3), jnp.bfloat16),  # later values unknown
  ],
)
def test_no_precision_warning_where_the_step_is_representable(coef, dtype):
  params = {"Dense_0": {"kernel": jnp.ones((4, 4), dtype)}}
  with warnings.catch_warnings():
    warnings.simplefilter("error", optax_swr.LowPrecisionWarning)
    optax_swr.swr(coef=coef).init(params)


def test_tree_map_params_works_for_models_without_normalization_layers():
  # optax.tree_map_params calls tx.init on placeholder params with no leaves;
  # swr gives it an empty state of the same structure.
  params = {
    "encoder": helpers.mlp_params([4, 5, 3]),
    "head": helpers.mlp_params([3, 2]),
  }
  layers = [("encoder", "Dense_0"), ("encoder", "Dense_1"), ("head", "Dense_0")]
  tx = optax.chain(optax.adam(1e-3), optax_swr.swr(layers=layers))
  specs = jax.tree.map(lambda p: f"rank {p.ndim}", params)
  mapped = optax.tree_map_params(
    tx,
    lambda _, spec: spec,
    tx.init(params),
    specs,
    transform_non_params=lambda _: "replicated",
  )
  assert mapped[0][0].mu == specs
  assert set(jax.tree.leaves(mapped[1])) == {"replicated"}


def test_an_injected_reset_norms_at_asks_for_static_args():
  params = helpers.mlp_params([3, 2])
  tx = optax.inject_hyperparams(optax_swr.swr)(coef=0.1, reset_norms_at=3)
  with pytest.raises(
    ValueError, match=re.escape("static_args=('reset_norms_at',)")
  ):
    jax.jit(tx.update)(params, tx.init(params), params)
  static = optax.inject_hyperparams(
    optax_swr.swr, static_args=("reset_norms_at",)
  )(coef=0.1, reset_norms_at=3)
  _, state = jax.jit(static.update)(params, static.init(params), params)
  assert int(state.inner_state.step_count) == 1
