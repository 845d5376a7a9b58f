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
COEFS.update(swr_reinit=COEFS["swr"], redo=(0.1,), adamw=(1e-2,))
COEFS.update(snp_noise=(0.5, 0.1), cbp=(0.5,), swr_redo=(0.1, 0.1))


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
  activations = [jnp.zeros((5, 4)).at[:, 0].set(1.0)]  # units 1-3 dormant
  inputs = methods.InterventionInputs(
    params,
    opt_state,
    mlp_params(jax.random.key(1)),
    mlp_params(jax.random.key(2)),
    activations if methods.REGISTRY[name].needs_activations else None,
  )
  outputs = []
  if method.intervene is not None:
    outputs.append(jax.jit(method.intervene)(inputs))
  if method.step_hook is not None:  # runs in the engine without theta_0
    hook_state = method.step_hook.init(params)
    apply = jax.jit(method.step_hook.apply)
    *output, hook_state = apply(
      inputs._replace(initial_params=None), hook_state
    )
    assert jax.tree.structure(hook_state) == jax.tree.structure(
      method.step_hook.init(params)
    )
    outputs.append(output)
  assert outputs or methods.REGISTRY[name].coefs or name == "vanilla", name
  for new_params, new_state in outputs:
    assert jax.tree.structure(new_params) == jax.tree.structure(params)
    assert jax.tree.structure(new_state) == jax.tree.structure(opt_state)
    changed = jax.tree.leaves(
      jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new_params, params)
    )
    # Continual backprop replaces only mature units: none after one step.
    assert any(changed) or name == "cbp", name


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


def test_adamw_is_optax_adamw():
  setup = methods.TrainingSetup(LAYERS, head=LAYERS[-1:], lr=0.1)
  tx = methods.build("adamw", (0.3,), setup).tx
  expected = optax.adamw(0.1, weight_decay=0.3)
  params = mlp_params(jax.random.key(0))
  grads = jax.tree.map(lambda p: 2 * p + 1, params)
  state, want_state = tx.init(params), expected.init(params)
  for _ in range(3):
    got, state = tx.update(grads, state, params)
    want, want_state = expected.update(grads, want_state, params)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    params = optax.apply_updates(params, got)


def test_full_reset_gives_a_fresh_network_and_optimizer_state():
  setup = methods.TrainingSetup(LAYERS, head=LAYERS[-1:], lr=0.1)
  method = methods.build("full_reset", (), setup)
  params = mlp_params(jax.random.key(0))
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = method.tx.update(grads, method.tx.init(params), params)
  fresh = mlp_params(jax.random.key(5))
  new_params, new_state = method.intervene(
    methods.InterventionInputs(params, opt_state, params, fresh)
  )
  jax.tree.map(np.testing.assert_array_equal, new_params, fresh)
  jax.tree.map(np.testing.assert_array_equal, new_state, method.tx.init(fresh))
  assert method.at_task_switch is method.intervene


def test_snp_noise_shrinks_and_adds_the_scaled_fresh_draw():
  setup = methods.TrainingSetup(LAYERS, head=LAYERS[-1:], lr=0.1)
  method = methods.build("snp_noise", (0.8, 0.25), setup)
  params = {"w": jnp.array([4.0, -2.0])}
  fresh = {"w": jnp.array([1.0, 8.0])}
  opt_state = object()  # Kept as it is.
  moved, kept = method.intervene(
    methods.InterventionInputs(params, opt_state, {"w": jnp.zeros(2)}, fresh)
  )
  np.testing.assert_allclose(moved["w"], [3.45, 0.4])  # 0.8 p + 0.25 fresh
  assert kept is opt_state
  with pytest.raises(ValueError, match=r"in \[0, 1\]; got \(2.0, 0.1\)"):
    methods.build("snp_noise", (2.0, 0.1), setup)


def test_the_loop_methods_act_in_the_loop_not_at_a_task_switch():
  setup = methods.TrainingSetup(LAYERS, head=LAYERS[-1:], lr=0.1, redo_every=7)
  for name in ("redo", "swr_redo", "cbp"):
    method = methods.build(name, COEFS[name], setup)
    assert method.at_task_switch is None, name
    assert method.step_hook.every == (1 if name == "cbp" else 7), name
  swr = methods.build("swr", (0.1,), setup).tx
  swr_redo = methods.build("swr_redo", (0.1, 0.1), setup).tx
  params = mlp_params(jax.random.key(0))
  grads = jax.tree.map(jnp.ones_like, params)
  jax.tree.map(
    np.testing.assert_array_equal,
    swr.update(grads, swr.init(params), params)[0],
    swr_redo.update(grads, swr_redo.init(params), params)[0],
  )
  for name in ("snp", "snp_noise", "head_reset", "full_reset"):
    assert methods.build(name, COEFS.get(name, ()), setup).at_task_switch
