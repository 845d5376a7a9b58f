"""The baselines against hand-computed values and autodiff of their losses."""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optax_swr import baselines
from tests import helpers


def loss(params, x):
  return jnp.sum(helpers.relu_mlp_apply(params, ["Dense_0", "Dense_1"], x) ** 2)


@pytest.fixture
def setup():
  params = helpers.mlp_params([3, 4, 2])
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
  return params, x


def test_l2_before_sgd_is_gradient_descent_on_the_regularized_loss(setup):
  params, x = setup
  lam = 0.3
  tx = optax.chain(baselines.l2(lam), optax.sgd(0.1))
  updates, _ = tx.update(jax.grad(loss)(params, x), tx.init(params), params)
  regularized = lambda p: (
    loss(p, x) + lam / 2 * optax.tree.norm(p, squared=True)
  )
  expected = jax.tree.map(lambda g: -0.1 * g, jax.grad(regularized)(params))
  chex.assert_trees_all_close(updates, expected, rtol=1e-5)


def test_l2_init_pulls_toward_the_initial_params(setup):
  params, x = setup
  lam = 0.2
  tx = optax.chain(baselines.l2_init(lam), optax.sgd(0.1))
  state = tx.init(params)
  moved = jax.tree.map(lambda p: p + 0.5, params)
  updates, state = jax.jit(tx.update)(jax.grad(loss)(moved, x), state, moved)
  regularized = lambda p: (
    loss(p, x)
    + lam * optax.tree.norm(jax.tree.map(jnp.subtract, p, params), squared=True)
  )
  expected = jax.tree.map(lambda g: -0.1 * g, jax.grad(regularized)(moved))
  chex.assert_trees_all_close(updates, expected, rtol=1e-5)
  # At the initial params the pull is zero.
  zeros = jax.tree.map(jnp.zeros_like, params)
  at_init, _ = baselines.l2_init(lam).update(
    zeros, baselines.l2_init(lam).init(params), params
  )
  chex.assert_trees_all_equal(at_init, zeros)


def test_l2_init_keeps_dtype_and_needs_params():
  params = {"w": jnp.ones(3, jnp.bfloat16)}
  tx = baselines.l2_init(0.1)
  updates, _ = tx.update(params, tx.init(params), params)
  assert updates["w"].dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="l2_init needs the current params"):
    tx.update(params, tx.init(params))


def test_shrink_perturb_interpolates_leafwise():
  params = {"a": jnp.array([4.0, -2.0]), "b": jnp.array([1.0], jnp.bfloat16)}
  initial = {"a": jnp.array([0.0, 2.0]), "b": jnp.array([3.0], jnp.bfloat16)}
  out = baselines.shrink_perturb(params, initial, 0.25)
  np.testing.assert_allclose(out["a"], [3.0, -1.0])
  assert out["b"].dtype == jnp.bfloat16 and float(out["b"][0]) == 1.5
  assert baselines.shrink_perturb(params, initial, 0.0)["a"].tolist() == [
    4.0,
    -2.0,
  ]
  assert baselines.shrink_perturb(params, initial, 1.0)["a"].tolist() == [
    0.0,
    2.0,
  ]


def test_shrink_and_perturb_shrinks_toward_zero_and_adds_the_fresh_draw():
  params = {"a": jnp.array([4.0, -2.0]), "b": jnp.array([1.0], jnp.bfloat16)}
  fresh = {"a": jnp.array([1.0, 3.0]), "b": jnp.array([2.0], jnp.bfloat16)}
  out = baselines.shrink_and_perturb(
    params, fresh, shrink=0.5, noise_scale=0.25
  )
  # 0.5 * 4 + 0.25 * 1, 0.5 * -2 + 0.25 * 3, 0.5 * 1 + 0.25 * 2
  np.testing.assert_allclose(out["a"], [2.25, -0.25])
  assert out["b"].dtype == jnp.bfloat16 and float(out["b"][0]) == 1.0
  chex.assert_trees_all_equal(
    baselines.shrink_and_perturb(params, fresh, 1.0, 0.0), params
  )
  # With theta_0 as the draw and weights 1 - coef and coef: shrink_perturb.
  chex.assert_trees_all_close(
    baselines.shrink_and_perturb(params, fresh, 0.75, 0.25),
    baselines.shrink_perturb(params, fresh, 0.25),
  )
  jitted = jax.jit(baselines.shrink_and_perturb)(params, fresh, 0.5, 0.25)
  chex.assert_trees_all_close(jitted, out)


def test_reset_layers_replaces_only_the_listed_layers(setup):
  params, _ = setup
  fresh = helpers.mlp_params([3, 4, 2], seed=5)
  out = baselines.reset_layers(params, fresh, [("Dense_1",)])
  chex.assert_trees_all_equal(
    out, {"Dense_0": params["Dense_0"], "Dense_1": fresh["Dense_1"]}
  )


@pytest.mark.parametrize(
  "call, message",
  [
    (lambda: baselines.l2(-1.0), "l2: `coef` must be >= 0; got -1.0"),
    (lambda: baselines.l2("x"), "l2: `coef` must be a float; got 'x'"),
    (
      lambda: baselines.l2_init(float("nan")),
      "l2_init: `coef` must be >= 0; got nan",
    ),
    (
      lambda: baselines.shrink_perturb({}, {}, 1.5),
      "shrink_perturb: `coef` must be in [0, 1]; got 1.5",
    ),
    (
      lambda: baselines.shrink_perturb({"a": 1.0}, {"b": 1.0}, 0.5),
      "shrink_perturb: `params` and `initial_params` have different tree "
      "structures",
    ),
    (
      lambda: baselines.shrink_and_perturb({}, {}, 1.5, 0.1),
      "shrink_and_perturb: `shrink` must be in [0, 1]; got 1.5",
    ),
    (
      lambda: baselines.shrink_and_perturb({}, {}, 0.5, -1e-3),
      "shrink_and_perturb: `noise_scale` must be >= 0; got -0.001",
    ),
    (
      lambda: baselines.shrink_and_perturb({"a": 1.0}, {"b": 1.0}, 0.5, 0.1),
      "shrink_and_perturb: `params` and `fresh_params` have different tree "
      "structures",
    ),
    (
      lambda: baselines.shrink_and_perturb(
        {"a": jnp.ones(3)}, {"a": jnp.ones(2)}, 0.5, 0.1
      ),
      "shrink_and_perturb: `fresh_params` has a leaf of shape (2,) where "
      "`params` has (3,)",
    ),
    (
      lambda: baselines.reset_layers(
        {"a": {"kernel": 1.0}}, {"a": {"kernel": 2.0}}, ["b"]
      ),
      "reset_layers: the path ('b',) in `layers` matches no leaf",
    ),
    (
      lambda: baselines.reset_layers({"a": 1.0}, {"a": 2.0}, None),
      "reset_layers: `layers` is None",
    ),
    (
      lambda: baselines.reset_layers({"a": 1.0}, {"a": 2.0}, ["a", "a"]),
      "reset_layers: `layers` lists the layer ('a',) more than once",
    ),
  ],
)
def test_errors_name_the_function_and_argument(call, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    call()
