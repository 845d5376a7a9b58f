"""The fast step: swr(..., deferred=True), then optax_swr.rescale_params."""

from __future__ import annotations

import collections
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_swr
from tests import helpers
from tests import reference
from tests import test_recipes
from tests import test_reference
from tests import test_scanned_stacks

STEPS = 8
LR = 1e-2


def deferred_and_chained(make_tx, params, steps=STEPS, seed=1):
  """The params and states after ``steps`` of each door, same gradients.

  ``make_tx(deferred)`` builds the optimizer with ``swr(deferred=...)``.
  """
  target, noise = helpers.pulling_grads(params, steps, seed)
  fast, fast_state = helpers.train(
    make_tx(True), params, target, noise, deferred=True
  )
  plain, plain_state = helpers.train(make_tx(False), params, target, noise)
  return fast[-1], plain[-1], fast_state, plain_state


def assert_same_states(fast_state, plain_state):
  """Every SWR field agrees; only deferred_factors differ (1 or absent)."""
  for name in ("layer_scales", "cumulative_scales", "weight_norms"):
    np.testing.assert_allclose(
      optax.tree.get(fast_state, name),
      optax.tree.get(plain_state, name),
      rtol=1e-5,
      err_msg=name,
    )
  np.testing.assert_allclose(
    optax.tree.get(fast_state, "reference_norms"),
    optax.tree.get(plain_state, "reference_norms"),
    rtol=1e-5,
  )


def test_matches_the_float64_reference_with_classifier_and_resets():
  params = helpers.mlp_params([6, 8, 8, 7, 5, 4])
  names = [f"Dense_{i}" for i in range(5)]
  swr = optax_swr.swr(
    coef=1e-2,
    classifier=2,
    classifier_coef=1.0,
    reset_norms_at=(3, 6),
    deferred=True,
  )
  tx = optax.chain(optax.adam(LR), swr)
  target, noise = helpers.pulling_grads(params, STEPS)
  history, _ = helpers.train(tx, params, target, noise, deferred=True)
  ref_history = reference.train(
    reference.flatten(params),
    reference.dense_layers(names),
    helpers.reference_grad_fn(target, noise),
    STEPS,
    lambda step: [1e-2, 1e-2, 1e-2, 1.0, 1.0],
    lr=LR,
    reset_norms_at=(3, 6),
  )
  test_reference.assert_matches_reference(history, ref_history)


def one_deferred_step(tx, updates, params):
  state = tx.init(params)
  unscaled, state = tx.update(updates, state, params)
  return optax_swr.rescale_params(optax.apply_updates(params, unscaled), state)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_a_non_finite_update_leaves_its_layer_unscaled(bad):
  """The non-finite guard through the deferred step (test_swr.py: chain).

  A layer whose p + u holds inf or NaN keeps it (factor 1); the layers on
  either side get the float64 reference's factors as if it were not there,
  and its bias the factor of the layers before it.
  """
  params = helpers.mlp_params([4, 6, 5, 3])
  updates = helpers.random_like(params, 3, scale=2.0)
  kernel = updates["Dense_1"]["kernel"]
  updates["Dense_1"]["kernel"] = kernel.at[0, 0].set(bad)
  tx = optax_swr.swr(coef=0.5, deferred=True)
  new_params, state = one_deferred_step(tx, updates, params)
  flat, flat_updates = map(reference.flatten, (params, updates))
  moved = {k: flat[k] + flat_updates[k] for k in flat}
  finite = reference.dense_layers(["Dense_0", "Dense_2"])
  expected, c, _ = reference.swr_step(
    moved, finite, reference.weight_norms(flat, finite), [0.5, 0.5]
  )
  expected[("Dense_1", "bias")] = c[0] * moved[("Dense_1", "bias")]
  np.testing.assert_allclose(state.layer_scales, [c[0], 1.0, c[1]], rtol=1e-6)
  for key, value in reference.flatten(new_params).items():
    np.testing.assert_allclose(value, expected[key], rtol=1e-5, err_msg=key)


def test_an_injected_nan_coef_leaves_every_layer_unscaled():
  """A NaN coefficient, injected at run time, makes every c NaN; the layers
  then keep p + u exactly, and no bias is scaled."""
  params = helpers.mlp_params([4, 6, 3])
  updates = helpers.random_like(params, 5)
  tx = optax.inject_hyperparams(optax_swr.swr)(coef=0.5, deferred=True)
  state = tx.init(params)
  state.hyperparams["coef"] = jnp.asarray(jnp.nan, jnp.float32)

  @jax.jit
  def step(updates, state, params):
    unscaled, state = tx.update(updates, state, params)
    params = optax.apply_updates(params, unscaled)
    return optax_swr.rescale_params(params, state)

  new_params, state = step(updates, state, params)
  np.testing.assert_array_equal(state.inner_state.layer_scales, [1.0, 1.0])
  np.testing.assert_array_equal(state.inner_state.cumulative_scales, [1.0, 1.0])
  expected = optax.apply_updates(params, updates)
  chex.assert_trees_all_equal(new_params, expected)


def test_equals_the_chain_up_to_rounding():
  params = helpers.mlp_params([5, 7, 6, 3])
  fast, plain, fast_state, plain_state = deferred_and_chained(
    lambda deferred: optax.chain(
      optax.adam(LR), optax_swr.swr(coef=0.3, deferred=deferred)
    ),
    params,
  )
  helpers.assert_trees_close(fast, plain, rtol=1e-5, atol=1e-6)
  assert_same_states(fast_state, plain_state)
  # Not vacuous: SWR moved the weights away from plain Adam's.
  target, noise = helpers.pulling_grads(params, STEPS, 1)
  adam_only, _ = helpers.train(optax.adam(LR), params, target, noise)
  gap = jax.tree.map(
    lambda a, b: float(jnp.max(jnp.abs(a - b))), fast, adam_only[-1]
  )
  assert max(jax.tree.leaves(gap)) > 1e-2


@pytest.mark.parametrize("name", ["linen", "nnx"])
def test_traced_scanned_stack_with_equations(name):
  params, apply_fn, layers, x = test_scanned_stacks.traced(name)
  fast, plain, *_ = deferred_and_chained(
    lambda deferred: optax.chain(
      optax.adam(LR), optax_swr.swr(0.5, layers=layers, deferred=deferred)
    ),
    params,
    steps=4,
  )
  helpers.assert_trees_close(fast, plain, rtol=1e-5, atol=1e-6)
  # The deferred step keeps the function, as the chain does.
  pushed = helpers.pushed_off(params, layers)
  tx = optax_swr.swr(0.5, layers=layers, deferred=True)
  zeros = jax.tree.map(jnp.zeros_like, pushed)

  @jax.jit
  def step(state, params):  # The reference norms are those of `params`.
    unscaled, state = tx.update(zeros, state, params)
    params = optax.apply_updates(params, unscaled)
    return optax_swr.rescale_params(params, state)

  moved, _ = step(tx.init(params), pushed)
  before, after = apply_fn(pushed, x), apply_fn(moved, x)
  scale = jnp.sum(before * after) / jnp.sum(before * before)
  error = jnp.max(jnp.abs(after - scale * before)) / jnp.max(jnp.abs(after))
  assert error < 1e-5
  assert float(jnp.abs(scale - 1.0)) > 1e-3  # It did rescale.


def test_float32_params_with_bfloat16_updates():
  params = helpers.mlp_params([4, 6, 3])
  grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.25, jnp.bfloat16), params)
  tx = optax.chain(optax.sgd(1.0), optax_swr.swr(0.5, deferred=True))
  new, _ = one_deferred_step(tx, grads, params)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new))
  # c (p + u) in float32. (The chain returns the rescaled update in the
  # update's dtype, bf16, and so rounds it coarser.)
  moved = jax.tree.map(lambda p, g: p - g.astype(jnp.float32), params, grads)
  norms = np.array(
    [np.linalg.norm(moved[f"Dense_{i}"]["kernel"]) for i in range(2)]
  )
  references = np.array(
    [np.linalg.norm(params[f"Dense_{i}"]["kernel"]) for i in range(2)]
  )
  expected = 0.5 * references / norms + 0.5
  for i in range(2):
    np.testing.assert_allclose(
      new[f"Dense_{i}"]["kernel"],
      expected[i] * moved[f"Dense_{i}"]["kernel"],
      rtol=1e-6,
    )


def test_inject_hyperparams_and_extra_args_pass_through():
  params = helpers.mlp_params([4, 5, 3])
  fast, plain, fast_state, plain_state = deferred_and_chained(
    lambda deferred: optax.inject_hyperparams(
      lambda coef: optax.chain(
        optax.adam(LR), optax_swr.swr(coef, deferred=deferred)
      )
    )(coef=0.4),
    params,
    steps=3,
  )
  helpers.assert_trees_close(fast, plain, rtol=1e-5, atol=1e-6)
  assert_same_states(fast_state, plain_state)


@pytest.mark.parametrize(
  "wrap",
  [
    lambda tx: optax.MultiSteps(tx, every_k_schedule=2),
    lambda tx: optax.apply_if_finite(tx, 2),
    test_recipes.per_member,
  ],
  ids=["multi_steps", "apply_if_finite", "vmapped_tx"],
)
def test_wrappers_that_run_swr_conditionally_or_vmapped(wrap):
  """swr inside a lax.cond or a jax.vmap: its factors reach rescale_params
  through the state, so the step equals the chain's. Between two emitted
  steps of MultiSteps swr does not run, and nothing is rescaled."""
  params = helpers.mlp_params([4, 5, 3])
  if wrap is test_recipes.per_member:
    params = jax.tree.map(lambda p: jnp.stack([p, 2 * p, 3 * p]), params)
  fast, plain, fast_state, plain_state = deferred_and_chained(
    lambda deferred: wrap(
      optax.chain(optax.adam(LR), optax_swr.swr(0.1, deferred=deferred))
    ),
    params,
    steps=5,
  )
  helpers.assert_trees_close(fast, plain, rtol=1e-5, atol=1e-6)
  assert_same_states(fast_state, plain_state)


def test_a_vmapped_step_rescales_each_member():
  stacked = jax.tree.map(
    lambda p: jnp.stack([p, 2 * p, 3 * p]), helpers.mlp_params([4, 5, 3])
  )
  plain_tx = optax.chain(optax.adam(LR), optax_swr.swr(0.5))
  per_member = test_recipes.per_member(plain_tx)
  target, noise = helpers.pulling_grads(stacked, 3)
  plain, plain_state = helpers.train(per_member, stacked, target, noise)
  tx = optax.chain(optax.adam(LR), optax_swr.swr(0.5, deferred=True))

  def step(grads, state, params):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    return optax_swr.rescale_params(params, state)

  step = jax.jit(jax.vmap(step))
  fast, state = stacked, jax.vmap(tx.init)(stacked)
  for noise_t in noise:
    grads = jax.tree.map(lambda p, t, n: p - t + n, fast, target, noise_t)
    fast, state = step(grads, state, fast)
  helpers.assert_trees_close(fast, plain[-1], rtol=1e-5, atol=1e-6)
  assert_same_states(state, plain_state)


def test_a_transformation_after_swr_still_keeps_the_function():
  """optax.scale after a deferred swr changes p + u, not the factors' rule:
  every layer still gets c and every bias C, so the function is kept."""
  params = helpers.mlp_params([4, 6, 5, 3])
  tx = optax.chain(
    optax.sgd(0.1), optax_swr.swr(0.5, deferred=True), optax.scale(0.0)
  )
  new, state = one_deferred_step(tx, helpers.random_like(params, 2), params)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
  names = list(params)
  before = helpers.relu_mlp_apply(params, names, x)
  after = helpers.relu_mlp_apply(new, names, x)
  total = float(jnp.prod(optax.tree.get(state, "layer_scales")))
  np.testing.assert_allclose(after, total * before, rtol=1e-5, atol=1e-6)
  assert abs(total - 1.0) > 1e-2


def test_factors_are_applied_once():
  params = helpers.mlp_params([4, 5, 3])
  tx = optax.chain(optax.sgd(0.1), optax_swr.swr(0.5, deferred=True))
  state = tx.init(params)
  updates, state = tx.update(helpers.random_like(params, 1), state, params)
  once, state = optax_swr.rescale_params(
    optax.apply_updates(params, updates), state
  )
  twice, state = optax_swr.rescale_params(once, state)
  chex.assert_trees_all_equal(once, twice)
  assert all(
    float(f) == 1.0
    for f in jax.tree.leaves(optax.tree.get(state, "deferred_factors"))
  )


def test_rescale_params_refuses_what_it_cannot_rescale():
  params = helpers.mlp_params([4, 5, 3])
  chained = optax.chain(optax.adam(LR), optax_swr.swr(0.1))
  with pytest.raises(ValueError, match="holds no SWRState"):
    optax_swr.rescale_params(params, optax.adam(LR).init(params))
  with pytest.raises(ValueError, match=r"deferred=False\), so the params"):
    optax_swr.rescale_params(params, chained.init(params))
  deferred = optax_swr.swr(0.1, deferred=True)
  with pytest.raises(ValueError, match="factors for 4 params leaves but"):
    optax_swr.rescale_params(
      {**params, "x": jnp.ones(2)}, deferred.init(params)
    )
  with pytest.raises(ValueError, match="factors for 4 params leaves but"):
    optax_swr.rescale_params(params["Dense_0"], deferred.init(params))
  with pytest.raises(ValueError, match="does not fit a params leaf"):
    optax_swr.rescale_params(
      jax.tree.map(lambda p: p[None], params),
      jax.vmap(deferred.init)(
        jax.tree.map(lambda p: jnp.stack([p] * 3), params)
      ),
    )
  free = optax.contrib.schedule_free(
    optax.chain(optax.adam(LR), optax_swr.swr(0.1, deferred=True)), 1.0
  )
  with pytest.raises(ValueError, match="inside optax.contrib.schedule_free"):
    optax_swr.rescale_params(params, free.init(params))
  with pytest.raises(ValueError, match="`deferred` must be True or False"):
    optax_swr.swr(0.1, deferred=jnp.asarray(True))


def donated_step(tx, params, deferred):
  """The compiled donated ``(params, state, grads)`` step."""

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    if deferred:
      return optax_swr.rescale_params(params, state)
    return params, state

  state = jax.eval_shape(tx.init, params)
  return (
    jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
  )


def test_the_donated_deferred_step_allocates_no_param_sized_temporary():
  params = jax.eval_shape(lambda: helpers.mlp_params([256, 256, 256, 256]))
  smallest = min(leaf.size for leaf in jax.tree.leaves(params)) * 4
  largest = max(leaf.size for leaf in jax.tree.leaves(params)) * 4
  fast_tx = optax.chain(optax.adam(1e-3), optax_swr.swr(1e-3, deferred=True))
  fast = donated_step(fast_tx, params, True).memory_analysis()
  adam = donated_step(optax.adam(1e-3), params, False).memory_analysis()
  assert fast.temp_size_in_bytes < smallest
  assert fast.temp_size_in_bytes <= adam.temp_size_in_bytes + 4096
  # The params and Adam's moments are updated in place, as with Adam alone.
  assert fast.alias_size_in_bytes >= adam.alias_size_in_bytes
  # The check can fail: the chain keeps Adam's update alive.
  tx = optax.chain(optax.adam(1e-3), optax_swr.swr(1e-3))
  plain = donated_step(tx, params, False).memory_analysis()
  assert plain.temp_size_in_bytes >= largest


def distinct_kernels(compiled) -> int:
  """The number of different fused computations in an optimized HLO."""
  text = re.sub(r", metadata=\{[^}]*\}", "", compiled.as_text())
  bodies = collections.Counter()
  for header, body in re.findall(
    r"\n(%fused_computation\S* \(.*?\) -> .*?) \{\n(.*?)\n\}", text, re.S
  ):
    signature = re.sub(r"param_\d+\.\d+|%\S+", "x", header.split(" ", 1)[1])
    bodies[signature + re.sub(r"%[\w.\-]+|param_\d+\.\d+", "x", body)] += 1
  return len(bodies)


def sliced_factors() -> optax.GradientTransformation:
  """Scales layer i by entry i of a state vector: one kernel per layer."""

  def update(updates, state, params=None):
    del params
    leaves, treedef = jax.tree.flatten(updates)
    factors = state + jnp.arange(len(leaves), dtype=jnp.float32)
    scaled = [factors[i] * leaf for i, leaf in enumerate(leaves)]
    return jax.tree.unflatten(treedef, scaled), state

  return optax.GradientTransformation(lambda p: jnp.ones([]), update)


def kernel_counts(tx, deferred):
  """Distinct kernels of the donated step at 6 and at 12 dense layers."""
  counts = []
  for depth in (6, 12):
    params = jax.eval_shape(lambda d=depth: helpers.mlp_params([8] * (d + 1)))
    counts.append(distinct_kernels(donated_step(tx, params, deferred)))
  return counts


@pytest.mark.parametrize("deferred", [False, True], ids=["chain", "deferred"])
def test_same_shaped_layers_share_their_kernels(deferred):
  # One compiled kernel per layer makes compile time grow by ~10 ms a layer
  # on XLA:CPU; shared kernels keep the count flat in the depth.
  swr = optax_swr.swr(1e-3, deferred=deferred)
  shallow, deep = kernel_counts(optax.chain(optax.adam(1e-3), swr), deferred)
  assert deep <= shallow
  # The count can grow: slicing a vector per layer does make one per layer.
  shallow, deep = kernel_counts(
    optax.chain(optax.adam(1e-3), sliced_factors()), False
  )
  assert deep >= shallow + 12


def test_linen_train_state():
  from flax import linen as nn
  from flax.training import train_state

  model = nn.Sequential([nn.Dense(6), nn.relu, nn.Dense(3)])
  params = model.init(jax.random.key(0), jnp.ones((1, 4)))["params"]

  def make(deferred):
    tx = optax.chain(optax.adam(0.1), optax_swr.swr(0.5, deferred=deferred))
    return train_state.TrainState.create(
      apply_fn=model.apply, params=params, tx=tx
    )

  @jax.jit
  def fast_step(state, grads):
    return optax_swr.rescale_train_state(state.apply_gradients(grads=grads))

  fast, plain = make(True), make(False)
  for seed in range(3):
    grads = helpers.random_like(params, seed)
    fast = fast_step(fast, grads)
    plain = plain.apply_gradients(grads=grads)
  assert int(fast.step) == 3
  helpers.assert_trees_close(fast.params, plain.params, rtol=1e-5, atol=1e-6)
  assert_same_states(fast.opt_state, plain.opt_state)


def make_nnx(deferred):
  from flax import nnx

  model = nnx.Sequential(
    nnx.Linear(4, 6, rngs=nnx.Rngs(0)),
    nnx.relu,
    nnx.Linear(6, 3, rngs=nnx.Rngs(1)),
  )
  tx = optax.chain(optax.adam(0.1), optax_swr.swr(0.5, deferred=deferred))
  return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def assert_same_nnx(fast_model, fast_opt, plain_model, plain_opt):
  from flax import nnx

  helpers.assert_trees_close(
    nnx.state(fast_model, nnx.Param),
    nnx.state(plain_model, nnx.Param),
    rtol=1e-5,
    atol=1e-6,
  )
  np.testing.assert_allclose(
    optax.tree.get(fast_opt.opt_state, "weight_norms")[...],
    optax.tree.get(plain_opt.opt_state, "weight_norms")[...],
    rtol=1e-5,
  )


def test_nnx_optimizer():
  from flax import nnx

  fast_model, fast_opt = make_nnx(True)
  plain_model, plain_opt = make_nnx(False)

  @nnx.jit
  def fast_step(model, optimizer, grads):
    optimizer.update(model, grads)
    optax_swr.rescale_nnx(optimizer, model)

  for seed in range(3):
    grads = helpers.random_like(nnx.state(plain_model, nnx.Param), seed)
    fast_step(fast_model, fast_opt, grads)
    plain_opt.update(plain_model, grads)
  assert int(fast_opt.step[...]) == 3
  assert_same_nnx(fast_model, fast_opt, plain_model, plain_opt)


def test_nnx_vmapped_ensemble():
  """One nnx.Optimizer per member made under nnx.vmap, the step vmapped."""
  from flax import nnx

  @nnx.split_rngs(splits=3)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def create(rngs):
    return test_recipes.NnxMLP(rngs)

  def optimizers(model, deferred):
    swr = optax_swr.swr(0.5, deferred=deferred)
    tx = optax.chain(optax.adam(0.1), swr)
    return nnx.vmap(lambda m: nnx.Optimizer(m, tx, wrt=nnx.Param))(model)

  fast_model, plain_model = create(nnx.Rngs(0)), create(nnx.Rngs(0))
  fast_opt = optimizers(fast_model, True)
  plain_opt = optimizers(plain_model, False)

  def fast(optimizer, model, grads):
    optimizer.update(model, grads)
    optax_swr.rescale_nnx(optimizer, model)

  fast_step = nnx.jit(nnx.vmap(fast))
  plain_step = nnx.jit(nnx.vmap(lambda opt, model, g: opt.update(model, g)))
  for seed in range(2):
    grads = helpers.random_like(nnx.state(plain_model, nnx.Param), seed)
    fast_step(fast_opt, fast_model, grads)
    plain_step(plain_opt, plain_model, grads)
  norms = optax.tree.get(fast_opt.opt_state, "weight_norms")[...]
  assert norms.shape == (3, 2)  # One norm per member and layer.
  assert_same_nnx(fast_model, fast_opt, plain_model, plain_opt)


@pytest.mark.parametrize("deferred", [False, True], ids=["chain", "deferred"])
def test_the_deprecated_wrappers_warn_and_equal_the_chain(deferred):
  from flax import nnx
  from flax.training import train_state

  params = helpers.mlp_params([4, 5, 3])
  grads = helpers.random_like(params, 4)
  tx = optax.chain(optax.adam(0.1), optax_swr.swr(0.5, deferred=deferred))
  plain_tx = optax.chain(optax.adam(0.1), optax_swr.swr(0.5))
  updates, _ = plain_tx.update(grads, plain_tx.init(params), params)
  expected = optax.apply_updates(params, updates)
  with pytest.warns(DeprecationWarning, match="update_and_apply is deprec"):
    got, _ = optax_swr.update_and_apply(tx, grads, tx.init(params), params)
  helpers.assert_trees_close(got, expected, rtol=1e-6, atol=1e-7)
  state = train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
  with pytest.warns(DeprecationWarning, match="apply_gradients is deprec"):
    state = optax_swr.apply_gradients(state, grads=grads)
  helpers.assert_trees_close(state.params, expected, rtol=1e-6, atol=1e-7)
  model, optimizer = make_nnx(deferred)
  plain_model, plain_opt = make_nnx(False)
  nnx_grads = helpers.random_like(nnx.state(model, nnx.Param), 4)
  with pytest.warns(DeprecationWarning, match="update_nnx is deprecated"):
    optax_swr.update_nnx(optimizer, model, nnx_grads)
  plain_opt.update(plain_model, nnx_grads)
  assert_same_nnx(model, optimizer, plain_model, plain_opt)
