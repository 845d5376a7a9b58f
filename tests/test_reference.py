"""optax.adam + swr against the independent float64 reference, over steps."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_swr
from tests import helpers
from tests import reference

STEPS = 8
LR = 1e-2


def assert_matches_reference(history, ref_history, rtol=2e-5):
  """Every leaf of every step within rtol of the reference, scaled by the leaf."""
  for step, (params, ref_params) in enumerate(zip(history, ref_history)):
    flat = reference.flatten(params)
    assert flat.keys() == ref_params.keys()
    for key, value in flat.items():
      expected = ref_params[key]
      scale = np.max(np.abs(expected)) + 1e-12
      np.testing.assert_allclose(
        value / scale,
        expected / scale,
        rtol=0,
        atol=rtol,
        err_msg=f"step {step}, leaf {key}",
      )


def run_both(params, ref_layers, coefs_at, steps=STEPS, **swr_kwargs):
  reset_norms_at = swr_kwargs.get("reset_norms_at", ())
  tx = optax.chain(optax.adam(LR), optax_swr.swr(**swr_kwargs))
  target, noise = helpers.pulling_grads(params, steps)
  history, state = helpers.train(tx, params, target, noise)
  ref_history = reference.train(
    reference.flatten(params),
    ref_layers,
    helpers.reference_grad_fn(target, noise),
    steps,
    coefs_at,
    lr=LR,
    reset_norms_at=reset_norms_at,
  )
  return history, ref_history, state


def test_deep_mlp_with_inferred_numeric_order():
  # 12 layers: string order would put Dense_10 and Dense_11 before Dense_2.
  widths = [5, 7, 6, 8, 5, 9, 4, 6, 7, 5, 8, 6, 3]
  params = helpers.mlp_params(widths)
  names = [f"Dense_{i}" for i in range(12)]
  history, ref_history, state = run_both(
    params,
    reference.dense_layers(names),
    lambda step: [0.1] * 12,
    coef=0.1,
  )
  assert_matches_reference(history, ref_history)
  ref_norms = reference.weight_norms(
    ref_history[-1], reference.dense_layers(names)
  )
  np.testing.assert_allclose(state[1].weight_norms, ref_norms, rtol=2e-5)


def test_normalization_layer_in_the_middle_restarts_the_bias_scale():
  rng = np.random.default_rng(3)
  names = ["fc1", "fc2", "norm", "fc3", "head"]
  tree = {
    "fc1": helpers.dense(rng, 4, 6),
    "fc2": helpers.dense(rng, 6, 6),
    "norm": helpers.layer_norm(rng, 6),
    "fc3": helpers.dense(rng, 6, 5),
    "head": helpers.dense(rng, 5, 3),
  }
  params = helpers.to_jax(tree)
  history, ref_history, state = run_both(
    params,
    reference.dense_layers(names),
    lambda step: [0.3] * 5,
    coef=0.3,
    layers=[(n,) for n in names],
  )
  assert_matches_reference(history, ref_history)
  c = np.asarray(state[1].layer_scales)
  np.testing.assert_allclose(
    state[1].cumulative_scales,
    [c[0], c[0] * c[1], c[2], c[2] * c[3], c[2] * c[3] * c[4]],
    rtol=1e-6,
  )


@pytest.mark.parametrize(
  "classifier", [2, [("Dense_3",), ("Dense_4",)]], ids=["last_k", "paths"]
)
def test_feature_and_classifier_coefficients(classifier):
  params = helpers.mlp_params([6, 8, 8, 7, 5, 4])
  names = [f"Dense_{i}" for i in range(5)]
  history, ref_history, _ = run_both(
    params,
    reference.dense_layers(names),
    lambda step: [1e-2, 1e-2, 1e-2, 1.0, 1.0],
    coef=1e-2,
    classifier=classifier,
    classifier_coef=1.0,
  )
  assert_matches_reference(history, ref_history)


def test_schedules_are_evaluated_at_the_step_count():
  params = helpers.mlp_params([4, 6, 5, 3])
  coef = optax.linear_schedule(0.6, 0.0, transition_steps=STEPS)
  classifier_coef = optax.exponential_decay(1.0, 1, 0.5)
  feature = lambda step: 0.6 * (1.0 - step / STEPS)
  history, ref_history, _ = run_both(
    params,
    reference.dense_layers(["Dense_0", "Dense_1", "Dense_2"]),
    lambda step: [feature(step), feature(step), 0.5**step],
    coef=coef,
    classifier=1,
    classifier_coef=classifier_coef,
  )
  assert_matches_reference(history, ref_history)


def test_reset_norms_at_takes_the_norms_of_the_params_before_the_update():
  params = helpers.mlp_params([4, 6, 5, 3])
  names = ["Dense_0", "Dense_1", "Dense_2"]
  history, ref_history, state = run_both(
    params,
    reference.dense_layers(names),
    lambda step: [0.2] * 3,
    coef=0.2,
    reset_norms_at=(3, 6),
  )
  assert_matches_reference(history, ref_history)
  before_last_reset = reference.flatten(history[5])
  np.testing.assert_allclose(
    state[1].reference_norms,
    reference.weight_norms(before_last_reset, reference.dense_layers(names)),
    rtol=1e-6,
  )


class EmbedConvBatchNorm(nn.Module):
  """Tokens -> embedding -> conv -> BatchNorm -> conv -> dense."""

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    x = nn.Embed(11, 6)(tokens)
    x = nn.relu(nn.Conv(8, (3,))(x))
    x = nn.BatchNorm(use_running_average=False)(x)
    x = nn.relu(nn.Conv(5, (3,))(x))
    return nn.Dense(3)(x.mean(axis=1))


def test_embedding_conv_and_batch_norm_with_a_schedule_and_resets():
  """Linen's Embed, Conv and BatchNorm, traced, against the reference.

  The coefficient changes every step and the reference norms are reset at
  steps 3 and 6, so a schedule read one step late, a reset skipped, taken
  from p + u, or repeated after its step each change the params.
  """
  tokens = jnp.arange(14).reshape(2, 7) % 11
  module = EmbedConvBatchNorm()
  variables = module.init(jax.random.key(0), tokens)
  layers = optax_swr.layers_from_linen(module, variables, tokens)
  names = ["Embed_0", "Conv_0", "BatchNorm_0", "Conv_1", "Dense_0"]
  assert [layer.name for layer in layers] == names
  ref_layers = [reference.RefLayer(("Embed_0", "embedding"), None)] + [
    reference.RefLayer(
      (name, "scale" if name.startswith("Batch") else "kernel"),
      (name, "bias"),
      name.startswith("Batch"),
    )
    for name in names[1:]
  ]
  history, ref_history, state = run_both(
    variables["params"],
    ref_layers,
    lambda step: [0.5 - 0.4 * step / STEPS] * len(names),
    coef=optax.linear_schedule(0.5, 0.1, transition_steps=STEPS),
    layers=layers,
    reset_norms_at=(3, 6),
  )
  assert_matches_reference(history, ref_history)
  np.testing.assert_allclose(
    state[1].reference_norms,
    reference.weight_norms(reference.flatten(history[5]), ref_layers),
    rtol=1e-6,
  )


def test_zero_norm_layers_get_scale_one_and_zero_reference_shrinks():
  params = helpers.mlp_params([4, 5, 5, 3])
  params["Dense_1"]["kernel"] = jnp.zeros((5, 5))  # reference norm 0
  names = ["Dense_0", "Dense_1", "Dense_2"]
  history, ref_history, state = run_both(
    params,
    reference.dense_layers(names),
    lambda step: [0.5] * 3,
    coef=0.5,
  )
  assert_matches_reference(history, ref_history)
  # A weight with norm 0 now: the factor is exactly 1, no NaN.
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = optax_swr.swr(coef=0.5)
  updates, new_state = tx.update(zeros, tx.init(params), zeros)
  assert np.all(np.asarray(new_state.layer_scales) == 1.0)
  chex.assert_tree_all_finite(updates)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_adam_steps_match_the_float64_rule(dtype):
  """Adam + SWR on bf16/f16 params; each SWR step checked in float64.

  Low-precision trajectories drift apart from a float64 run by rounding, so
  the oracle checks every step's SWR output from that step's params and Adam
  updates.
  """
  params = helpers.mlp_params([6, 8, 8, 4], dtype=dtype)
  layers = reference.dense_layers(["Dense_0", "Dense_1", "Dense_2"])
  reference_norms = reference.weight_norms(reference.flatten(params), layers)
  adam, swr = optax.adam(0.05), optax_swr.swr(coef=0.3)
  adam_state, swr_state = adam.init(params), swr.init(params)
  target, noise = helpers.pulling_grads(params, STEPS)
  resolution = float(jnp.finfo(dtype).eps)
  for step in range(STEPS):
    grads = jax.tree.map(
      lambda p, t, n: (p - t + n).astype(dtype), params, target, noise[step]
    )
    base_updates, adam_state = adam.update(grads, adam_state, params)
    updates, swr_state = jax.jit(swr.update)(base_updates, swr_state, params)
    new_params = optax.apply_updates(params, updates)

    moved = {
      k: p + u
      for (k, p), u in zip(
        reference.flatten(params).items(),
        reference.flatten(base_updates).values(),
      )
    }
    expected, c, _ = reference.swr_step(
      moved, layers, reference_norms, [0.3] * 3
    )
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(new_params))
    assert swr_state.reference_norms.dtype == jnp.float32
    assert swr_state.layer_scales.dtype == jnp.float32
    np.testing.assert_allclose(swr_state.layer_scales, c, rtol=1e-6)
    for key, value in reference.flatten(new_params).items():
      np.testing.assert_allclose(
        value,
        expected[key],
        rtol=2 * resolution,
        atol=2 * resolution,
        err_msg=f"step {step}, leaf {key}",
      )
    params = new_params


def test_large_float16_weights_do_not_overflow_the_norm():
  # Sum of squares is ~6e6, far beyond float16's max of 65504.
  params = {"Dense_0": {"kernel": jnp.full((24, 24), 100.0, jnp.float16)}}
  tx = optax_swr.swr(coef=0.5)
  state = tx.init(params)
  np.testing.assert_allclose(state.reference_norms, [2400.0], rtol=1e-6)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, state = tx.update(grads, state, params)
  chex.assert_tree_all_finite(updates["Dense_0"]["kernel"])
  np.testing.assert_allclose(state.weight_norms, [2412.0], rtol=1e-6)


def bfloat16_spacing(x: np.ndarray) -> np.ndarray:
  """The gap between bfloat16 numbers around each entry (8-bit mantissa)."""
  magnitude = np.maximum(np.abs(x), np.finfo(np.float32).tiny)
  return 2.0 ** (np.floor(np.log2(magnitude)) - 7)


@pytest.mark.parametrize("deferred", [False, True], ids=["chain", "deferred"])
def test_float32_params_with_bfloat16_updates_round_once(deferred):
  """u' = c (p + u) - p is computed in float32 and rounded once.

  With float32 params and bfloat16 updates (grads cast to bf16), the chained
  update comes back in bfloat16: the float64 value rounded to the nearest
  bf16, up to float32 rounding of its terms. Computing (c - 1) p + c u in
  the update's dtype would round p and each term to bf16 first. The
  deferred step returns float32 params: c (p + u) to float32 precision.
  """
  rng = np.random.default_rng(5)
  params = helpers.mlp_params([6, 16, 16, 4])
  updates = jax.tree.map(
    lambda p: jnp.asarray(0.5 * rng.normal(size=p.shape), jnp.bfloat16),
    params,
  )
  layers = reference.dense_layers(["Dense_0", "Dense_1", "Dense_2"])
  flat_params, flat_updates = map(reference.flatten, (params, updates))
  expected, c, _ = reference.swr_step(
    {k: p + flat_updates[k] for k, p in flat_params.items()},
    layers,
    reference.weight_norms(flat_params, layers),
    [0.5] * 3,
  )
  tx = optax_swr.swr(coef=0.5, deferred=deferred)
  if deferred:
    unscaled, state = tx.update(updates, tx.init(params), params)
    new_params = optax.apply_updates(params, unscaled)
    new_params, state = optax_swr.rescale_params(new_params, state)
  else:
    scaled, state = tx.update(updates, tx.init(params), params)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(scaled))
  np.testing.assert_allclose(state.layer_scales, c, rtol=1e-6)
  for key, p in flat_params.items():
    exact = expected[key] - p
    float32_error = 1e-6 * (np.abs(p) + np.abs(flat_updates[key]))
    if deferred:  # p + u and c (p + u), each rounded to float32.
      value = reference.flatten(new_params)[key] - p
      bound = float32_error + 2**-23 * np.abs(expected[key])
    else:
      value = reference.flatten(scaled)[key]
      bound = 0.5 * bfloat16_spacing(exact) + float32_error
    error = np.abs(value - exact)
    assert np.all(error <= bound), (key, np.max(error / bound))
