"""optax_swr.update_and_apply: the optimizer step with SWR's scaling fused in."""

from __future__ import annotations

import collections
import functools
import re

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

# A step that falls back to the chained one where it should be fused fails.
pytestmark = pytest.mark.filterwarnings("error::optax_swr.NotFusedWarning")

STEPS = 8
LR = 1e-2


def test_matches_the_float64_reference_with_classifier_and_resets():
  params = helpers.mlp_params([6, 8, 8, 7, 5, 4])
  names = [f"Dense_{i}" for i in range(5)]
  tx = optax.chain(
    optax.adam(LR),
    optax_swr.swr(
      coef=1e-2, classifier=2, classifier_coef=1.0, reset_norms_at=(3, 6)
    ),
  )
  target, noise = helpers.pulling_grads(params, STEPS)
  history, _ = helpers.train(tx, params, target, noise, fused=True)
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


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_a_non_finite_update_leaves_its_layer_unscaled(bad):
  """The non-finite guard through the fused step (test_swr.py: the chain).

  A layer whose p + u holds inf or NaN keeps it (factor 1); the layers on
  either side get the float64 reference's factors as if it were not there,
  and its bias the factor of the layers before it.
  """
  params = helpers.mlp_params([4, 6, 5, 3])
  updates = helpers.random_like(params, 3, scale=2.0)
  kernel = updates["Dense_1"]["kernel"]
  updates["Dense_1"]["kernel"] = kernel.at[0, 0].set(bad)
  tx = optax_swr.swr(coef=0.5)
  new_params, state = optax_swr.update_and_apply(
    tx, updates, tx.init(params), params
  )
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
  """The guard on the factors themselves (test_hostile.py: a NaN schedule).

  A NaN coefficient, injected at run time, makes every c NaN; the layers
  then keep p + u exactly, and no bias is scaled.
  """
  params = helpers.mlp_params([4, 6, 3])
  updates = helpers.random_like(params, 5)
  tx = optax.inject_hyperparams(optax_swr.swr)(coef=0.5)
  state = tx.init(params)
  state.hyperparams["coef"] = jnp.asarray(jnp.nan, jnp.float32)
  new_params, state = jax.jit(
    lambda u, s, p: optax_swr.update_and_apply(tx, u, s, p)
  )(updates, state, params)
  np.testing.assert_array_equal(state.inner_state.layer_scales, [1.0, 1.0])
  np.testing.assert_array_equal(state.inner_state.cumulative_scales, [1.0, 1.0])
  expected = optax.apply_updates(params, updates)
  for got, want in zip(jax.tree.leaves(new_params), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(got, want)


def fused_and_unfused(tx, params, steps=STEPS, seed=1):
  """The params after ``steps`` of each path, from the same gradients."""
  target, noise = helpers.pulling_grads(params, steps, seed)
  fused, fused_state = helpers.train(tx, params, target, noise, fused=True)
  plain, plain_state = helpers.train(tx, params, target, noise)
  return fused[-1], plain[-1], fused_state, plain_state


def test_equals_tx_update_then_apply_updates_up_to_rounding():
  params = helpers.mlp_params([5, 7, 6, 3])
  tx = optax.chain(optax.adam(LR), optax_swr.swr(coef=0.3))
  fused, plain, fused_state, plain_state = fused_and_unfused(tx, params)
  helpers.assert_trees_close(fused, plain, rtol=1e-5, atol=1e-6)
  helpers.assert_trees_close(fused_state, plain_state, rtol=1e-5, atol=1e-6)
  # Not vacuous: SWR moved the weights away from plain Adam's.
  adam_only, *_ = fused_and_unfused(optax.adam(LR), params)
  gap = jax.tree.map(
    lambda a, b: float(jnp.max(jnp.abs(a - b))), fused, adam_only
  )
  assert max(jax.tree.leaves(gap)) > 1e-2


def test_without_swr_it_is_exactly_apply_updates():
  params = helpers.mlp_params([5, 7, 3])
  fused, plain, *_ = fused_and_unfused(optax.adam(LR), params)
  jax.tree.map(np.testing.assert_array_equal, fused, plain)


@pytest.mark.parametrize("name", ["linen", "nnx"])
def test_traced_scanned_stack_with_equations(name):
  params, apply_fn, layers, x = test_scanned_stacks.traced(name)
  tx = optax.chain(optax.adam(LR), optax_swr.swr(0.5, layers=layers))
  fused, plain, *_ = fused_and_unfused(tx, params, steps=4)
  helpers.assert_trees_close(fused, plain, rtol=1e-5, atol=1e-6)
  # The fused path keeps the function, as the plain one does.
  pushed = helpers.pushed_off(params, layers)
  state = tx.init(params)
  zeros = jax.tree.map(jnp.zeros_like, pushed)
  moved, _ = jax.jit(optax_swr.update_and_apply, static_argnums=0)(
    tx, zeros, state, pushed
  )
  before, after = apply_fn(pushed, x), apply_fn(moved, x)
  scale = jnp.sum(before * after) / jnp.sum(before * before)
  error = jnp.max(jnp.abs(after - scale * before)) / jnp.max(jnp.abs(after))
  assert error < 1e-5
  assert float(jnp.abs(scale - 1.0)) > 1e-3  # It did rescale.


def test_float32_params_with_bfloat16_updates():
  params = helpers.mlp_params([4, 6, 3])
  grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.25, jnp.bfloat16), params)
  tx = optax.chain(optax.sgd(1.0), optax_swr.swr(0.5))
  state = tx.init(params)
  new, _ = optax_swr.update_and_apply(tx, grads, state, params)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new))
  # c (p + u) is computed and rounded in float32. (tx.update returns the
  # rescaled update in the update's dtype, bf16, and so rounds it coarser.)
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


def test_one_update_object_in_two_leaves_gets_two_factors():
  params = {
    "Dense_0": {"kernel": jnp.ones((2, 2))},
    "Dense_1": {"kernel": 3 * jnp.ones((2, 2))},
  }
  shared = jnp.full((2, 2), 0.5)
  same_object = optax.GradientTransformation(
    lambda p: optax.EmptyState(),
    lambda u, s, p=None: (
      {"Dense_0": {"kernel": shared}, "Dense_1": {"kernel": shared}},
      s,
    ),
  )
  tx = optax.chain(same_object, optax_swr.swr(0.5))
  state = tx.init(params)
  new, _ = optax_swr.update_and_apply(tx, params, state, params)
  updates, _ = tx.update(params, state, params)
  helpers.assert_trees_close(new, optax.apply_updates(params, updates))
  assert not np.allclose(new["Dense_0"]["kernel"], 1.5 * (2 / 3) * 1.0)


def test_inject_hyperparams_and_extra_args_pass_through():
  params = helpers.mlp_params([4, 5, 3])
  tx = optax.inject_hyperparams(
    lambda coef: optax.chain(optax.adam(LR), optax_swr.swr(coef))
  )(coef=0.4)
  fused, plain, *_ = fused_and_unfused(tx, params, steps=3)
  helpers.assert_trees_close(fused, plain, rtol=1e-5, atol=1e-6)


CHANGED = "a transformation in `tx` changed the updates that swr returned"
IN_COND = "swr ran inside a lax.cond"
UNDER_VMAP = (
  r"swr ran under jax.vmap inside `tx` \(e.g. a per-member ensemble\).*"
  r"jax.vmap\(functools.partial\(optax_swr.update_and_apply, tx\)\)"
)


@pytest.mark.parametrize(
  ("make_tx", "cause"),
  [
    (
      lambda: optax.chain(optax.adam(LR), optax_swr.swr(0.1), optax.scale(0.5)),
      CHANGED + ".*one chained after swr",
    ),
    (
      lambda: optax.MultiSteps(
        optax.chain(optax.adam(LR), optax_swr.swr(0.1)), every_k_schedule=2
      ),
      IN_COND + ".*optax.MultiSteps",
    ),
    (
      lambda: optax.apply_if_finite(
        optax.chain(optax.adam(LR), optax_swr.swr(0.1)), 2
      ),
      IN_COND + ".*optax.apply_if_finite",
    ),
    (  # The FAQ's recipe: z += swr's update, the step is y_new - y.
      lambda: optax.contrib.schedule_free(
        optax.chain(optax.adam(LR), optax_swr.swr(0.1)), learning_rate=1.0
      ),
      CHANGED + ".*schedule_free",
    ),
  ],
  ids=["transform_after_swr", "multi_steps", "apply_if_finite", "sched_free"],
)
def test_updates_changed_after_swr_give_the_chained_step_and_say_why(
  make_tx, cause
):
  params = helpers.mlp_params([4, 5, 3])
  with pytest.warns(optax_swr.NotFusedWarning, match=cause):
    fused, plain, fused_state, plain_state = fused_and_unfused(
      make_tx(), params, steps=4
    )
  # The state too: what tx computed from the unscaled u is recomputed.
  helpers.assert_trees_close(fused, plain, rtol=1e-5, atol=1e-6)
  helpers.assert_trees_close(fused_state, plain_state, rtol=1e-5, atol=1e-6)


def test_the_faq_per_member_ensemble_gives_the_chained_step_and_names_vmap():
  stacked = jax.tree.map(
    lambda p: jnp.stack([p, 2 * p, 3 * p]), helpers.mlp_params([4, 5, 3])
  )
  tx = test_recipes.per_member(optax.chain(optax.adam(LR), optax_swr.swr(0.5)))
  with pytest.warns(optax_swr.NotFusedWarning, match=UNDER_VMAP):
    fused, plain, fused_state, plain_state = fused_and_unfused(
      tx, stacked, steps=3
    )
  helpers.assert_trees_close(fused, plain, rtol=1e-5, atol=1e-6)
  helpers.assert_trees_close(fused_state, plain_state, rtol=1e-5, atol=1e-6)


def test_vmapped_update_and_apply_is_the_fused_per_member_step():
  """The fix the warning gives: vmap update_and_apply, not tx."""
  stacked = jax.tree.map(
    lambda p: jnp.stack([p, 2 * p, 3 * p]), helpers.mlp_params([4, 5, 3])
  )
  tx = optax.chain(optax.adam(LR), optax_swr.swr(0.5))
  per_member = test_recipes.per_member(tx)
  target, noise = helpers.pulling_grads(stacked, 3)
  plain, plain_state = helpers.train(per_member, stacked, target, noise)
  step = jax.jit(jax.vmap(functools.partial(optax_swr.update_and_apply, tx)))
  fused, state = stacked, per_member.init(stacked)
  for noise_t in noise:  # pytestmark: a NotFusedWarning fails the test.
    grads = jax.tree.map(lambda p, t, n: p - t + n, fused, target, noise_t)
    fused, state = step(grads, state, fused)
  helpers.assert_trees_close(fused, plain[-1], rtol=1e-5, atol=1e-6)
  helpers.assert_trees_close(state, plain_state, rtol=1e-5, atol=1e-6)
  # Fused: no param-sized temporary, where the per-member chain keeps one.
  params = jax.eval_shape(
    lambda: jax.tree.map(
      lambda p: jnp.stack([p] * 3), helpers.mlp_params([64, 64, 64])
    )
  )
  smallest = min(leaf.size for leaf in jax.tree.leaves(params)) * 4
  largest = max(leaf.size for leaf in jax.tree.leaves(params)) * 4
  fused = donated_step(tx, params, fused=True, members=True)
  plain = donated_step(tx, params, fused=False, members=True)
  assert fused.memory_analysis().temp_size_in_bytes < smallest
  assert plain.memory_analysis().temp_size_in_bytes >= largest


def donated_step(tx, params, fused, members=False):
  """The compiled donated ``(params, state, grads)`` step.

  With ``members``, the step of each member of an ensemble stacked on the
  first axis (vmapped).
  """

  def step(params, state, grads):
    if fused:
      return optax_swr.update_and_apply(tx, grads, state, params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  init = tx.init
  if members:
    step, init = jax.vmap(step), jax.vmap(tx.init)
  state = jax.eval_shape(init, params)
  return (
    jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
  )


def test_the_donated_fused_step_allocates_no_param_sized_temporary():
  params = jax.eval_shape(lambda: helpers.mlp_params([256, 256, 256, 256]))
  smallest = min(leaf.size for leaf in jax.tree.leaves(params)) * 4
  largest = max(leaf.size for leaf in jax.tree.leaves(params)) * 4
  tx = optax.chain(optax.adam(1e-3), optax_swr.swr(1e-3))
  fused = donated_step(tx, params, fused=True).memory_analysis()
  adam = donated_step(optax.adam(1e-3), params, fused=False).memory_analysis()
  assert fused.temp_size_in_bytes < smallest
  assert fused.temp_size_in_bytes <= adam.temp_size_in_bytes + 4096
  # The params and Adam's moments are updated in place, as with Adam alone.
  assert fused.alias_size_in_bytes >= adam.alias_size_in_bytes
  # The check can fail: tx.update + apply_updates keeps Adam's update alive.
  plain = donated_step(tx, params, fused=False).memory_analysis()
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


def kernel_counts(tx, fused):
  """Distinct kernels of the donated step at 6 and at 12 dense layers."""
  counts = []
  for depth in (6, 12):
    params = jax.eval_shape(lambda d=depth: helpers.mlp_params([8] * (d + 1)))
    counts.append(distinct_kernels(donated_step(tx, params, fused)))
  return counts


@pytest.mark.parametrize("fused", [False, True], ids=["chain", "fused"])
def test_same_shaped_layers_share_their_kernels(fused):
  # One compiled kernel per layer makes compile time grow by ~10 ms a layer
  # on XLA:CPU; shared kernels keep the count flat in the depth.
  tx = optax.chain(optax.adam(1e-3), optax_swr.swr(1e-3))
  shallow, deep = kernel_counts(tx, fused)
  assert deep <= shallow
  # The count can grow: slicing a vector per layer does make one per layer.
  shallow, deep = kernel_counts(
    optax.chain(optax.adam(1e-3), sliced_factors()), False
  )
  assert deep >= shallow + 12


def test_linen_train_state_apply_gradients():
  from flax import linen as nn
  from flax.training import train_state

  model = nn.Sequential([nn.Dense(6), nn.relu, nn.Dense(3)])
  params = model.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
  tx = optax.chain(optax.adam(0.1), optax_swr.swr(0.5))
  plain = train_state.TrainState.create(
    apply_fn=model.apply, params=params, tx=tx
  )
  fused = jax.tree.map(jnp.copy, plain)  # its buffers get donated
  step = jax.jit(optax_swr.apply_gradients, donate_argnums=0)
  for seed in range(3):
    grads = helpers.random_like(params, seed)
    fused = step(fused, grads=grads)
    plain = plain.apply_gradients(grads=grads)
  assert int(fused.step) == 3
  helpers.assert_trees_close(fused.params, plain.params, rtol=1e-5, atol=1e-6)
  helpers.assert_trees_close(fused.opt_state, plain.opt_state, rtol=1e-5)


def test_nnx_optimizer_update():
  from flax import nnx

  def make():
    model = nnx.Sequential(
      nnx.Linear(4, 6, rngs=nnx.Rngs(0)),
      nnx.relu,
      nnx.Linear(6, 3, rngs=nnx.Rngs(1)),
    )
    tx = optax.chain(optax.adam(0.1), optax_swr.swr(0.5))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

  fused_model, fused_opt = make()
  plain_model, plain_opt = make()

  @nnx.jit
  def fused_step(model, optimizer, grads):
    optax_swr.update_nnx(optimizer, model, grads)

  for seed in range(3):
    grads = helpers.random_like(nnx.state(plain_model, nnx.Param), seed)
    fused_step(fused_model, fused_opt, grads)
    plain_opt.update(plain_model, grads)
  assert int(fused_opt.step[...]) == 3
  helpers.assert_trees_close(
    nnx.state(fused_model, nnx.Param),
    nnx.state(plain_model, nnx.Param),
    rtol=1e-5,
    atol=1e-6,
  )
  norms = optax.tree.get(fused_opt.opt_state, "weight_norms")
  np.testing.assert_allclose(
    norms[...],
    optax.tree.get(plain_opt.opt_state, "weight_norms")[...],
    rtol=1e-5,
  )


def nnx_ensemble():
  """Three members of the recipes' NNX MLP, stacked by nnx.vmap."""
  from flax import nnx

  @nnx.split_rngs(splits=3)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def create(rngs):
    return test_recipes.NnxMLP(rngs)

  return create(nnx.Rngs(0))


def assert_same_members(fused_model, fused_opt, plain_model, plain_opt):
  from flax import nnx

  helpers.assert_trees_close(
    nnx.state(fused_model, nnx.Param),
    nnx.state(plain_model, nnx.Param),
    rtol=1e-5,
    atol=1e-6,
  )
  norms = optax.tree.get(fused_opt.opt_state, "weight_norms")[...]
  assert norms.shape == (3, 2)  # One norm per member and layer.
  np.testing.assert_allclose(
    norms,
    optax.tree.get(plain_opt.opt_state, "weight_norms")[...],
    rtol=1e-5,
  )


@pytest.mark.parametrize("vmapped", [False, True], ids=["faq", "nnx_vmap"])
def test_update_nnx_on_a_per_member_ensemble(vmapped):
  """The FAQ's per_member optimizer warns; nnx.vmap of update_nnx is fused."""
  from flax import nnx

  tx = optax.chain(optax.adam(0.1), optax_swr.swr(0.5))
  per_member = test_recipes.per_member(tx)
  plain_model, fused_model = nnx_ensemble(), nnx_ensemble()
  plain_opt = nnx.Optimizer(plain_model, per_member, wrt=nnx.Param)
  if vmapped:  # One nnx.Optimizer per member, as for one model.
    fused_opt = nnx.vmap(lambda m: nnx.Optimizer(m, tx, wrt=nnx.Param))(
      fused_model
    )
    step = nnx.jit(nnx.vmap(optax_swr.update_nnx))
  else:
    fused_opt = nnx.Optimizer(fused_model, per_member, wrt=nnx.Param)
    step = nnx.jit(optax_swr.update_nnx)
  grads = [
    helpers.random_like(nnx.state(plain_model, nnx.Param), seed)
    for seed in range(2)
  ]
  plain_step = nnx.jit(lambda opt, model, g: opt.update(model, g))
  for g in grads:
    plain_step(plain_opt, plain_model, g)
  if vmapped:  # pytestmark: a NotFusedWarning fails the test.
    for g in grads:
      step(fused_opt, fused_model, g)
  else:
    with pytest.warns(optax_swr.NotFusedWarning, match=UNDER_VMAP):
      for g in grads:
        step(fused_opt, fused_model, g)
  assert_same_members(fused_model, fused_opt, plain_model, plain_opt)
