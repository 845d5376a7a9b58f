"""Property tests of the paper's three theorems, with hypothesis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_swr
from tests import helpers

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True)
coefs = st.floats(0.0, 1.0)


def scaled_copy(params, rng: np.random.Generator):
  """The same net with every weight and bias scaled by its own random factor."""
  return jax.tree.map(lambda p: p * rng.uniform(0.3, 3.0), params)


@SETTINGS
@given(
  depth=st.integers(2, 6),
  width=st.sampled_from([4, 8]),
  coef=coefs,
  classifier_coef=coefs,
  seed=st.integers(0, 2**16),
)
def test_theorem_1_zero_update_scales_relu_logits_by_one_constant(
  depth, width, coef, classifier_coef, seed
):
  rng = np.random.default_rng(seed)
  names = [f"Dense_{i}" for i in range(depth)]
  initial = helpers.mlp_params([6] + [width] * (depth - 1) + [5], seed=seed)
  params = scaled_copy(initial, rng)  # norms far from the reference norms
  x = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)

  tx = optax_swr.swr(coef=coef, classifier=1, classifier_coef=classifier_coef)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, state = tx.update(zeros, tx.init(initial), params)
  rescaled = optax.apply_updates(params, updates)

  before = helpers.relu_mlp_apply(params, names, x)
  after = helpers.relu_mlp_apply(rescaled, names, x)
  output_scale = state.cumulative_scales[-1]
  np.testing.assert_allclose(
    after,
    output_scale * before,
    rtol=1e-4,
    atol=1e-5 * float(jnp.abs(output_scale * before).max()),
  )
  margin = jnp.sort(before, axis=-1)
  clear = (margin[:, -1] - margin[:, -2]) > 1e-4 * jnp.abs(margin[:, -1])
  assert (jnp.argmax(after, -1) == jnp.argmax(before, -1))[clear].all()


@SETTINGS
@given(coef=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_theorem_1_with_a_normalization_layer_in_the_middle(coef, seed):
  rng = np.random.default_rng(seed)
  names = ["fc1", "norm", "fc2", "fc3"]
  initial = helpers.to_jax(
    {
      "fc1": helpers.dense(rng, 6, 8),
      "norm": helpers.layer_norm(rng, 8),
      "fc2": helpers.dense(rng, 8, 8),
      "fc3": helpers.dense(rng, 8, 4),
    }
  )
  params = scaled_copy(initial, rng)
  x = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
  tx = optax_swr.swr(coef=coef, layers=names)
  updates, state = tx.update(
    jax.tree.map(jnp.zeros_like, params), tx.init(initial), params
  )
  rescaled = optax.apply_updates(params, updates)

  before = helpers.relu_mlp_apply(params, names, x)
  after = helpers.relu_mlp_apply(rescaled, names, x)
  # Only the layers from the norm layer on decide the output scale.
  c = np.asarray(state.layer_scales)
  np.testing.assert_allclose(
    state.cumulative_scales[-1], c[1] * c[2] * c[3], rtol=1e-6
  )
  np.testing.assert_allclose(
    after,
    state.cumulative_scales[-1] * before,
    rtol=1e-4,
    atol=1e-5 * float(jnp.abs(after).max()),
  )


def largest_norm(coef, budget, steps, adversarial, key):
  """max_t ||W_t|| over `steps` updates that each add `budget` to ||W||^2.

  Each update is the longest step along its direction (W itself, or a random
  one) with ||W + u||^2 - ||W||^2 = budget, so that without SWR (coef 0)
  ||W_t|| = sqrt(||W_0||^2 + t * budget) exactly.
  """
  params = {"Dense_0": {"kernel": jnp.ones((4, 4)) / 4.0}}
  tx = optax_swr.swr(coef=coef)

  def step(index, carry):
    params, state, largest = carry
    w = params["Dense_0"]["kernel"]
    norm = jnp.linalg.norm(w)
    direction = jnp.where(
      adversarial,
      w / norm,
      jax.random.normal(jax.random.fold_in(key, index), w.shape),
    )
    direction = direction / jnp.linalg.norm(direction)
    along = jnp.vdot(w, direction)
    length = -along + jnp.sqrt(along**2 + budget)
    updates = {"Dense_0": {"kernel": length * direction}}
    updates, state = tx.update(updates, state, params)
    params = optax.apply_updates(params, updates)
    new_norm = jnp.linalg.norm(params["Dense_0"]["kernel"])
    return params, state, jnp.maximum(largest, new_norm)

  carry = (params, tx.init(params), jnp.ones([], jnp.float32))
  return jax.lax.fori_loop(0, steps, step, carry)[2]


# One compilation for every drawn example: the step count is a traced bound.
_largest_norm = jax.jit(largest_norm)


@pytest.mark.filterwarnings("ignore::optax_swr.LowPrecisionWarning")
@SETTINGS
@given(
  coef=st.floats(0.01, 1.0),
  budget=st.floats(1e-3, 10.0),
  adversarial=st.booleans(),
  seed=st.integers(0, 2**16),
)
def test_theorem_2_norms_stay_under_the_bound(coef, budget, adversarial, seed):
  """SWR stays under sqrt(B) / lam + ||W_0|| where the plain run exceeds it.

  The run is long enough for the bound to bind: without SWR the norm reaches
  sqrt(1 + T B), past the bound after T = ((sqrt(B) / lam + 1)^2 - 1) / B
  steps; every example runs until the plain run is 10% past the bound (and
  at least 300 steps).
  """
  bound = np.sqrt(budget) / coef + 1.0  # ||W_0|| = 1
  steps = max(300, int(((1.1 * bound) ** 2 - 1) / budget) + 1)
  key = jax.random.key(seed)
  with_swr = _largest_norm(coef, budget, steps, adversarial, key)
  without_swr = _largest_norm(0.0, budget, steps, adversarial, key)
  assert float(with_swr) <= bound * (1 + 1e-5)
  assert float(without_swr) > bound * 1.05
  np.testing.assert_allclose(without_swr, np.sqrt(1 + steps * budget), 1e-3)


# One compiled update for every drawn coef: it is read from the state.
_injected_swr = optax.inject_hyperparams(optax_swr.swr)(coef=0.0)
_injected_update = jax.jit(_injected_swr.update)


@pytest.mark.filterwarnings(
  "ignore::optax_swr.LowPrecisionWarning"
)  # tiny coefs
@SETTINGS
@given(
  coef=st.floats(0.0, 1.0),
  scale=st.floats(0.01, 3.0),
  seed=st.integers(0, 2**16),
)
def test_theorem_3_norm_ratio_moves_toward_its_initial_value(coef, scale, seed):
  rng = np.random.default_rng(seed)
  params = helpers.mlp_params([5, 6, 4], seed=seed)
  kernels = lambda p: [p["Dense_0"]["kernel"], p["Dense_1"]["kernel"]]
  ratio = lambda p: float(
    jnp.linalg.norm(kernels(p)[1]) / jnp.linalg.norm(kernels(p)[0])
  )
  initial_ratio = ratio(params)
  state = _injected_swr.init(params)
  state.hyperparams["coef"] = jnp.asarray(coef, jnp.float32)
  for _ in range(5):
    raw = jax.tree.map(
      lambda p: jnp.asarray(scale * rng.normal(size=p.shape), p.dtype), params
    )
    ratio_before = ratio(optax.apply_updates(params, raw))
    updates, state = _injected_update(raw, state, params)
    params = optax.apply_updates(params, updates)
    ratio_after = ratio(params)
    low, high = sorted([initial_ratio, ratio_before])
    tolerance = 1e-5 * high
    assert low - tolerance <= ratio_after <= high + tolerance
    assert (
      abs(ratio_after - initial_ratio)
      <= abs(ratio_before - initial_ratio) + tolerance
    )
