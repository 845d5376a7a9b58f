"""The registry of methods every experiment builds from (examples/methods.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from examples import methods

LAYERS = (("hidden_0",), ("head",))
COEFS = {"l2": (1e-2,), "l2_init": (1e-2,), "snp": (0.5,), "swr": (0.1, 1.0)}
COEFS.update(swr_reinit=COEFS["swr"], redo=(0.1,))


def mlp_params(key):
  first, second = jax.random.split(key)
  return {
    "hidden_0": {
      "kernel": jax.random.normal(first, (3, 4)),
      "bias": jnp.zeros(4),
    },
    "head": {"kernel": jax.random.normal(second, (4, 2)), "bias": jnp.zeros(2)},
  }


@pytest.mark.parametrize("name", methods.names())
def test_every_method_steps_and_intervenes(name):
  setup = methods.TrainingSetup(LAYERS, head=LAYERS[-1:], lr=1e-2)
  method = methods.build(name, COEFS.get(name, ()), setup)
  params = mlp_params(jax.random.key(0))
  opt_state = method.tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, opt_state = method.tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  if method.intervene is None:
    return
  activations = [jnp.zeros((5, 4)).at[:, 0].set(1.0)]  # units 1-3 dormant
  inputs = methods.InterventionInputs(
    params,
    opt_state,
    mlp_params(jax.random.key(1)),
    mlp_params(jax.random.key(2)),
    activations if methods.REGISTRY[name].needs_activations else None,
  )
  new_params, new_state = jax.jit(method.intervene)(inputs)
  assert jax.tree.structure(new_params) == jax.tree.structure(params)
  assert jax.tree.structure(new_state) == jax.tree.structure(opt_state)
  changed = jax.tree.leaves(
    jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new_params, params)
  )
  assert any(changed), name


def test_the_rl_setup_clips_before_adam():
  setup = methods.TrainingSetup(
    LAYERS, head=LAYERS[-1:], lr=1.0, eps=1e-5, max_grad_norm=0.5
  )
  tx = methods.build("vanilla", (), setup).tx
  expected = optax.chain(
    optax.clip_by_global_norm(0.5), optax.adam(1.0, eps=1e-5)
  )
  params = mlp_params(jax.random.key(0))
  grads = jax.tree.map(lambda p: 3 * p, params)
  got, _ = tx.update(grads, tx.init(params), params)
  want, _ = expected.update(grads, expected.init(params), params)
  jax.tree.map(np.testing.assert_allclose, got, want)


def test_unknown_methods_and_bad_coefficients_name_the_problem():
  setup = methods.TrainingSetup(LAYERS, head=LAYERS[-1:], lr=1e-3)
  with pytest.raises(ValueError, match=r"--methods: unknown \['adamx'\]"):
    methods.build("adamx", (), setup)
  with pytest.raises(
    ValueError, match=r"snp: takes the coefficients \(lambda\)"
  ):
    methods.build("snp", (), setup)
  with pytest.raises(ValueError, match=r"in \[0, 1\]; got \(2.0,\)"):
    methods.build("swr", (2.0,), setup)
  with pytest.raises(ValueError, match="--methods: unknown empty list"):
    methods.check_names([])


def test_a_new_method_is_one_registered_builder():
  @methods.register("adamw_for_the_test", coefs=("weight_decay",))
  def _adamw(coefs, setup):
    """Adam with decoupled weight decay."""
    return methods.Method(setup.adam(weight_decay=coefs[0]))

  try:
    assert "adamw_for_the_test" in methods.names(needs_activations=False)
    entry = methods.REGISTRY["adamw_for_the_test"]
    assert entry.summary == "Adam with decoupled weight decay."
    setup = methods.TrainingSetup(LAYERS, head=LAYERS[-1:], lr=1.0)
    tx = methods.build("adamw_for_the_test", (0.5,), setup).tx
    params = {"w": jnp.array([2.0])}
    updates, _ = tx.update({"w": jnp.zeros(1)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-1.0])  # -lr * 0.5 * 2
    with pytest.raises(ValueError, match="exists already"):
      methods.register("adamw_for_the_test")(_adamw)
  finally:
    del methods.REGISTRY["adamw_for_the_test"]
  assert "redo" not in methods.names(needs_activations=False)
