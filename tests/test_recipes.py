"""What a new user tries: NNX resets, schedule-free, ensembles, the checker."""

from __future__ import annotations

import chex
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_swr
from tests import helpers

X = jax.random.normal(jax.random.key(0), (32, 6))


class NnxMLP(nnx.Module):
  def __init__(self, rngs):
    self.fc1 = nnx.Linear(6, 16, rngs=rngs)
    self.fc2 = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x):
    return self.fc2(nnx.relu(self.fc1(x)))


def test_reset_reference_norms_accepts_the_nnx_optimizer_state():
  model = NnxMLP(nnx.Rngs(0))
  tx = optax.chain(optax.adam(1e-3), optax_swr.swr(0.1))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  bigger = jax.tree.map(lambda p: 3 * p, nnx.state(model, nnx.Param))
  new_state = optax_swr.reset_reference_norms(
    optimizer.tx, optimizer.opt_state, bigger
  )
  old = optax.tree.get(optimizer.opt_state, "reference_norms")[...]
  new = optax.tree.get(new_state, "reference_norms")[...]
  np.testing.assert_allclose(new, 3 * old, rtol=1e-6)
  # The state keeps nnx.Optimizer's structure, so it can be put back.
  chex.assert_trees_all_equal_structs(new_state, optimizer.opt_state)
  optimizer.opt_state = new_state
  optimizer.update(
    model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
  )
  np.testing.assert_allclose(
    optax.tree.get(optimizer.opt_state, "reference_norms")[...], new
  )


def _eval_norm_growth(tx, sf_state_of, steps=60):
  """Norms of schedule-free's evaluation params over their initial norms."""
  params = helpers.mlp_params([6, 16, 3])
  target, noise = helpers.pulling_grads(params, steps)
  history, state = helpers.train(tx, params, target, noise)
  x = optax.contrib.schedule_free_eval_params(sf_state_of(state), history[-1])
  initial = optax_swr.metrics.layer_norms(params)
  return np.asarray(optax_swr.metrics.layer_norms(x) / initial)


def test_schedule_free_needs_swr_inside_for_its_evaluation_params():
  """schedule_free(chain(adam, swr)) bounds the params it evaluates."""
  inside = optax.contrib.schedule_free(
    optax.chain(optax.adam(0.3), optax_swr.swr(1.0)), learning_rate=1.0
  )
  outside = optax.chain(
    optax.contrib.schedule_free_adamw(0.3), optax_swr.swr(1.0)
  )
  # coef = 1 pins the norm of y + u, the training point plus the base step,
  # whose rescaled update lands on z; the evaluated average x of the z's
  # stays within the initial norms (measured, not a theorem).
  assert _eval_norm_growth(inside, lambda s: s).max() <= 1 + 1e-4
  assert _eval_norm_growth(outside, lambda s: s[0]).max() > 1.5


def per_member(tx):
  """The docs' recipe: one SWR state per member of a stacked ensemble."""
  return optax.GradientTransformation(jax.vmap(tx.init), jax.vmap(tx.update))


def test_an_nnx_vmap_ensemble_gets_per_member_norms_with_the_recipe():
  @nnx.split_rngs(splits=3)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def create(rngs):
    return NnxMLP(rngs)

  ensemble = create(nnx.Rngs(0))
  params = nnx.state(ensemble, nnx.Param)
  tx = optax.chain(optax.adam(1e-2), optax_swr.swr(0.5))
  pooled = nnx.Optimizer(ensemble, tx, wrt=nnx.Param)
  # One norm per layer over all members: what the recipe avoids.
  chex.assert_shape(
    optax.tree.get(pooled.opt_state, "reference_norms")[...], (2,)
  )
  optimizer = nnx.Optimizer(ensemble, per_member(tx), wrt=nnx.Param)
  norms = optax.tree.get(optimizer.opt_state, "reference_norms")[...]
  chex.assert_shape(norms, (3, 2))
  for member in range(3):
    one = jax.tree.map(lambda p, m=member: p[m], params)
    np.testing.assert_allclose(
      norms[member], optax_swr.metrics.layer_norms(one), rtol=1e-6
    )

  def loss(model):
    logits = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(model, X)
    return jnp.mean(logits**2)

  grads = nnx.grad(loss)(ensemble)
  optimizer.update(ensemble, grads)
  after = optax.tree.get(optimizer.opt_state, "weight_norms")[...]
  np.testing.assert_allclose(
    after,
    jax.vmap(optax_swr.metrics.layer_norms)(nnx.state(ensemble, nnx.Param)),
    rtol=1e-5,
  )
