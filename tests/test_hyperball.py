"""The hyperball projection against a float64 numpy AdamH, jit, masks, errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optax_swr import baselines

# Dyadic rates: Adam's bias corrections 1 - b**t are then exact in float32
# (with 0.999, 1 - b2**t alone is off by ~1e-5 relative), so the comparison
# with float64 measures the projection, not float32 Adam.
LR = 0.0625
B1, B2, EPS = 0.875, 0.9375, 1e-8
STEPS = 5
SHAPES = {"w": (4, 3), "b": (3,), "k": (2, 3, 4)}


def initial_params() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {
    name: rng.normal(size=shape).astype(np.float32)
    for name, shape in SHAPES.items()
  }


def gradients() -> list[dict[str, np.ndarray]]:
  """Fixed gradients, one tree a step, so that both sides see the same ones."""
  rng = np.random.default_rng(1)
  return [
    {
      name: rng.normal(size=shape).astype(np.float32)
      for name, shape in SHAPES.items()
    }
    for _ in range(STEPS)
  ]


def reference_adamh(params, grads, selected):
  """AdamH in float64 numpy, written from the definitions (no optax)."""
  params = {name: p.astype(np.float64) for name, p in params.items()}
  radii = {name: np.linalg.norm(params[name]) for name in selected}
  mu = {name: np.zeros_like(p) for name, p in params.items()}
  nu = {name: np.zeros_like(p) for name, p in params.items()}
  for t, step_grads in enumerate(grads, start=1):
    for name, p in params.items():
      g = step_grads[name].astype(np.float64)
      mu[name] = B1 * mu[name] + (1 - B1) * g
      nu[name] = B2 * nu[name] + (1 - B2) * g**2
      mu_hat = mu[name] / (1 - B1**t)
      nu_hat = nu[name] / (1 - B2**t)
      moved = p - LR * mu_hat / (np.sqrt(nu_hat) + EPS)
      if name in selected:
        moved = moved * radii[name] / np.linalg.norm(moved)
      params[name] = moved
  return params


def run(tx, params, grads, jit=False):
  init, update = (jax.jit(tx.init), jax.jit(tx.update)) if jit else tx[:2]
  params = jax.tree.map(jnp.asarray, params)
  state = init(params)
  for step_grads in grads:
    updates, state = update(
      jax.tree.map(jnp.asarray, step_grads), state, params
    )
    params = optax.apply_updates(params, updates)
  return params


def relative_error(actual, expected):
  return np.linalg.norm(np.asarray(actual, np.float64) - expected) / (
    np.linalg.norm(expected)
  )


def test_adamh_matches_a_float64_reference_and_keeps_the_norms():
  params, grads = initial_params(), gradients()
  adamh = optax.chain(optax.adam(LR, B1, B2, EPS), baselines.hyperball())
  result = run(adamh, params, grads)
  expected = reference_adamh(params, grads, selected={"w", "k"})
  for name in ("w", "k"):  # ndim >= 2: selected by default
    assert relative_error(result[name], expected[name]) < 1e-6, name
    np.testing.assert_allclose(
      np.linalg.norm(np.asarray(result[name], np.float64)),
      np.linalg.norm(params[name].astype(np.float64)),
      rtol=1e-6,
    )
  # The bias is left to Adam, to the last bit.
  plain = run(optax.adam(LR, B1, B2, EPS), params, grads)
  chex.assert_trees_all_equal(result["b"], plain["b"])


def test_init_and_update_run_under_jit():
  params, grads = initial_params(), gradients()
  adamh = optax.chain(optax.adam(LR, B1, B2, EPS), baselines.hyperball())
  jitted = run(adamh, params, grads, jit=True)
  eager = run(adamh, params, grads)
  chex.assert_trees_all_close(jitted, eager, rtol=1e-6, atol=1e-7)
  state = jax.jit(baselines.hyperball().init)(jax.tree.map(jnp.asarray, params))
  assert state.target_norms["b"] is None
  np.testing.assert_allclose(
    state.target_norms["w"], np.linalg.norm(params["w"]), rtol=1e-6
  )


@pytest.mark.parametrize(
  "mask",
  [
    {"w": False, "b": True, "k": False},
    lambda params: jax.tree.map(lambda p: p.ndim == 1, params),
  ],
  ids=["tree", "callable"],
)
def test_mask_selects_the_leaves(mask):
  params, grads = initial_params(), gradients()
  tx = optax.chain(optax.adam(LR, B1, B2, EPS), baselines.hyperball(mask))
  result = run(tx, params, grads)
  expected = reference_adamh(params, grads, selected={"b"})
  for name in SHAPES:
    assert relative_error(result[name], expected[name]) < 1e-6, name
  np.testing.assert_allclose(
    np.linalg.norm(result["b"]), np.linalg.norm(params["b"]), rtol=1e-6
  )


def test_mask_may_be_a_prefix_and_integer_leaves_are_never_selected():
  params = {
    "dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
    "steps": jnp.ones((2, 2), jnp.int32),
  }
  state = baselines.hyperball({"dense": True, "steps": True}).init(params)
  np.testing.assert_allclose(state.target_norms["dense"]["bias"], np.sqrt(2))
  np.testing.assert_allclose(state.target_norms["dense"]["kernel"], 2.0)
  assert state.target_norms["steps"] is None


def test_a_mask_of_another_structure_is_refused():
  with pytest.raises(ValueError, match=r"`mask` must be a tree of booleans"):
    baselines.hyperball({"w": True}).init(initial_params())


def test_a_zero_initialised_leaf_is_refused_with_its_path():
  params = {"head": {"kernel": jnp.zeros((3, 2))}, "w": jnp.ones((2, 2))}
  with pytest.raises(ValueError) as raised:
    baselines.hyperball().init(params)
  message = str(raised.value)
  assert "['head']['kernel']" in message
  assert "non-zero" in message and "mask" in message
  # Leaving it out is the fix.
  baselines.hyperball({"head": False, "w": True}).init(params)


def test_a_traced_zero_leaf_and_a_step_to_zero_give_no_nan():
  tx = baselines.hyperball()
  zero = {"w": jnp.zeros((2, 2))}
  with pytest.warns(UserWarning, match="all zeros at init"):
    state = jax.jit(tx.init)(zero)  # traced: a warning, and no NaN after
    jax.effects_barrier()
  updates, _ = jax.jit(tx.update)({"w": jnp.ones((2, 2))}, state, zero)
  chex.assert_tree_all_finite(updates)
  chex.assert_trees_all_equal(optax.apply_updates(zero, updates), zero)
  # A step that lands on zero keeps its update.
  params = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
  to_zero = jax.tree.map(jnp.negative, params)
  updates, _ = tx.update(to_zero, tx.init(params), params)
  chex.assert_trees_all_equal(updates, to_zero)


def test_update_without_params_says_to_pass_them():
  tx = baselines.hyperball()
  params = {"w": jnp.ones((2, 2))}
  with pytest.raises(ValueError, match=r"params.*tx\.update\(updates, "):
    tx.update(params, tx.init(params))


def test_default_mask_leaves_multi_dimensional_biases_and_scales_out():
  # flax's attention has [heads, head_dim] biases that start at zero.
  params = {
    "query": {"kernel": jnp.ones((4, 2, 2)), "bias": jnp.zeros((2, 2))},
    "norm": {"scale": jnp.ones((2, 2))},
  }
  state = baselines.hyperball().init(params)
  assert state.target_norms["query"]["bias"] is None
  assert state.target_norms["norm"]["scale"] is None
  np.testing.assert_allclose(state.target_norms["query"]["kernel"], 4.0)


def test_a_zero_leaf_traced_under_jit_warns_when_init_runs():
  params = {"w": jnp.zeros((2, 2)), "v": jnp.ones((2, 2))}
  with pytest.warns(UserWarning, match=r"\['w'\] are all zeros at init"):
    jax.block_until_ready(jax.jit(baselines.hyperball().init)(params))
    jax.effects_barrier()
