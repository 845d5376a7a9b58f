"""The experiment engine: its loop trains exactly as the step-by-step loop."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from examples import methods
from examples.models import linen as models_linen
from examples.paper import engine as engine_lib
import optax_swr
from optax_swr import baselines

LANES, STEPS, BATCH = 2, 6, 8


def setup(model: str, in_shape=(8, 8, 1), num=40):
  module, variables = models_linen.create(model, 4, in_shape, width=4)
  layers = optax_swr.layers_from_linen(
    module, variables, jnp.zeros((1, *in_shape)), train=True
  )
  tx = optax.chain(optax.adam(1e-2), optax_swr.swr(0.1, layers=layers))
  rng = np.random.default_rng(0)
  x = rng.random((num, *in_shape)).astype(np.float32)
  y = rng.integers(0, 4, (LANES, num)).astype(np.int32)
  variables = [
    models_linen.create(model, 4, in_shape, width=4, seed=s)[1]
    for s in range(LANES)
  ]
  order = np.stack(
    [
      engine_lib.epoch_order(np.random.default_rng(s), num, BATCH, STEPS)
      for s in range(LANES)
    ]
  )
  return engine_lib.Engine(module, tx, layers), variables, x, y, order


@pytest.mark.parametrize("model", ["mlp", "cnn_bn"])
def test_one_loop_equals_the_step_by_step_loop(model):
  engine, variables, x, y, order = setup(model)
  state, online = engine.train(engine.init(variables), jnp.asarray(x), y, order)
  for lane in range(LANES):
    single = engine_lib.lane(engine.init(variables), lane)
    accuracies = []
    for index in order[lane]:
      single, accuracy = engine.step(single, x[index], y[lane][index])
      accuracies.append(float(accuracy))
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      engine_lib.lane(state, lane),
      single,
    )
    np.testing.assert_allclose(online[lane], np.mean(accuracies), atol=1e-6)
  if model == "cnn_bn":  # BatchNorm statistics moved and stayed in sync
    stats = jax.tree.leaves(state.batch_stats)
    assert stats and all(np.all(np.isfinite(s)) for s in stats)


def _hand_activations(params, x):
  """The MLP's post-ReLU hidden outputs, written out."""
  first = jax.nn.relu(
    x.reshape(len(x), -1) @ params["hidden_0"]["kernel"]
    + params["hidden_0"]["bias"]
  )
  second = jax.nn.relu(
    first @ params["hidden_1"]["kernel"] + params["hidden_1"]["bias"]
  )
  return [first, second]


def _cbp_hook(tx, layers):
  """Continual backprop that replaces units from the first steps on."""

  def apply(inputs, state):
    params, opt_state, state, _ = baselines.continual_backprop(
      inputs.params,
      inputs.opt_state,
      state,
      inputs.activations,
      layers,
      inputs.fresh_params,
      optimizer=tx,
      replacement_rate=0.5,
      maturity_threshold=1,
    )
    return params, opt_state, state

  return methods.StepHook(
    1, lambda p: baselines.continual_backprop_init(p, layers), apply
  )


@pytest.mark.parametrize("name", ["cbp", "swr_redo"])
def test_a_step_hook_in_the_loop_equals_calling_it_by_hand(name):
  plain, variables, x, y, order = setup("mlp")
  module = plain.module
  layers = optax_swr.layers_from_linen(module, variables[0], x[:1])
  training = methods.TrainingSetup(
    layers, head=layers[-1:], lr=1e-2, redo_every=2
  )
  if name == "cbp":
    tx = optax.adam(1e-2)
    hook = _cbp_hook(tx, layers)
  else:  # every 2 steps, tau 0.5: units are recycled
    method = methods.build("swr_redo", (0.1, 0.5), training)
    tx, hook = method.tx, method.step_hook
  engine = engine_lib.Engine(module, tx, hook=hook)
  state, online = engine.train(
    engine.init(variables, hook_seeds=[7, 8]), jnp.asarray(x), y, order
  )
  replaced = False
  init, apply = jax.jit(module.init), jax.jit(hook.apply)
  activations = jax.jit(_hand_activations)
  for lane, seed in enumerate([7, 8]):
    single = engine_lib.lane(engine.init(variables, hook_seeds=[7, 8]), lane)
    accuracies = []
    for k, index in enumerate(order[lane], start=1):
      before = single.params
      single, accuracy = engine.step(single, x[index], y[lane][index])
      accuracies.append(float(accuracy))
      carry = single.hook._replace(step=jnp.int32(k))
      if k % hook.every == 0:
        fresh = init(jax.random.fold_in(jax.random.key(seed), k), x[:1])
        inputs = methods.InterventionInputs(
          single.params,
          single.opt_state,
          None,
          fresh["params"],
          activations(before, x[index]),
        )
        params, opt_state, hook_state = apply(inputs, carry.state)
        changed = jax.tree.leaves(
          jax.tree.map(lambda a, b: bool((a != b).any()), params, single.params)
        )
        replaced |= any(changed)
        single = single._replace(params=params, opt_state=opt_state)
        carry = carry._replace(state=hook_state)
      single = single._replace(hook=carry)
    got = engine_lib.lane(state, lane)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      (got._replace(hook=None), got.hook.state),
      (single._replace(hook=None), single.hook.state),
    )
    assert int(got.hook.step) == STEPS
    np.testing.assert_allclose(online[lane], np.mean(accuracies), atol=1e-6)
  assert replaced  # the hook did act


def test_the_hook_activations_are_the_steps_post_relu_outputs():
  engine, variables, x, _, _ = setup("mlp")
  params = variables[0]["params"]
  got = engine_lib.hook_activations(engine.module, {"params": params}, x[:5])
  want = _hand_activations(params, x[:5])
  for a, b in zip(got, want, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_a_lane_with_zero_steps_is_left_as_it_is():
  engine, variables, x, y, order = setup("mlp")
  before = engine.init(variables)
  expected = jax.tree.map(np.array, engine_lib.lane(before, 1))
  short = np.array([STEPS, 0])
  state, online = engine.train(before, jnp.asarray(x), y, order, short)
  jax.tree.map(
    np.testing.assert_array_equal, engine_lib.lane(state, 1), expected
  )
  assert online[1] == 0.0 and online[0] > 0.0
  # Fewer steps than rows: the same as a loop over the first rows only.
  three = engine.train(
    engine.init(variables), jnp.asarray(x), y, order, np.array([3, 3])
  )[0]
  cut = engine.train(engine.init(variables), jnp.asarray(x), y, order[:, :3])[0]
  jax.tree.map(np.testing.assert_array_equal, three, cut)


def test_accuracy_pads_chunks_without_counting_the_padding(monkeypatch):
  monkeypatch.setattr(engine_lib, "EVAL_CHUNK", 16)
  engine, variables, x, y, _ = setup("mlp", num=40)
  state = engine.init(variables)
  index = np.stack([np.arange(37), np.arange(3, 40)])  # 37: not a multiple
  accuracy = engine.accuracy(state, jnp.asarray(x), y, index)
  for lane in range(LANES):
    params = engine_lib.lane(state, lane).params
    logits = engine.module.apply({"params": params}, x[index[lane]])
    expected = np.mean(np.argmax(logits, -1) == y[lane][index[lane]])
    np.testing.assert_allclose(accuracy[lane], expected, atol=1e-7)


def test_features_are_the_post_relu_inputs_of_the_later_layers():
  engine, variables, x, y, _ = setup("mlp")
  state = engine.init(variables)
  index = np.stack([np.arange(10)] * LANES)
  hidden = engine.features(state, jnp.asarray(x), index)
  assert [h.shape for h in hidden] == [(LANES, 10, 4), (LANES, 10, 4)]
  params = variables[1]["params"]
  first = jax.nn.relu(
    x[:10].reshape(10, -1) @ params["hidden_0"]["kernel"]
    + params["hidden_0"]["bias"]
  )
  np.testing.assert_allclose(hidden[0][1], first, rtol=1e-5, atol=1e-6)


def test_epoch_order_sees_every_example_once_per_pass():
  order = engine_lib.epoch_order(np.random.default_rng(0), 10, 4, 5)
  assert order.shape == (5, 4)
  flat = order.ravel()
  assert sorted(flat[:10]) == list(range(10))  # first pass
  assert sorted(flat[10:20]) == list(range(10))  # second pass


def test_shrink_perturb_moves_toward_the_networks_own_initial_params():
  layers = (("hidden_0",), ("head",))
  setup = methods.TrainingSetup(layers, head=layers[-1:], lr=1e-3)
  method = methods.build("snp", (0.25,), setup)
  params = {"w": jnp.array([4.0])}
  initial = {"w": jnp.array([0.0])}
  fresh = {"w": jnp.array([100.0])}
  opt_state = object()  # Kept as it is.
  moved, kept = method.intervene(
    methods.InterventionInputs(params, opt_state, initial, fresh)
  )
  np.testing.assert_allclose(moved["w"], [3.0])  # 0.75 * 4 + 0.25 * 0
  assert kept is opt_state
  reset = methods.build("head_reset", (), setup)
  tree = {"hidden_0": {"kernel": jnp.ones(1)}, "head": {"kernel": jnp.ones(1)}}
  new = {"hidden_0": {"kernel": jnp.zeros(1)}, "head": {"kernel": jnp.zeros(1)}}
  out, _ = reset.intervene(methods.InterventionInputs(tree, None, tree, new))
  assert out["head"]["kernel"][0] == 0.0 and out["hidden_0"]["kernel"][0] == 1


def test_jobs_in_worker_processes_come_back_in_order():
  assert engine_lib.run_jobs(pow, [(2, 10), (3, 2), (5, 0)], workers=2) == [
    1024,
    9,
    1,
  ]
  done = []
  results = engine_lib.run_jobs(pow, [(2, 3)], on_done=lambda: done.append(1))
  assert results == [8] and done == [1]


def test_default_workers_are_one_per_core_and_at_most_one_per_job():
  assert engine_lib.default_workers(1) == 1
  cores = len(os.sched_getaffinity(0))
  assert engine_lib.default_workers(100) == cores  # the tests run on a CPU
