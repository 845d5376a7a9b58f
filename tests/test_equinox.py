"""Equinox models: traced layers, proportionality, bounds, a training loop.

The Equinox counterpart of test_zoo.py and test_tracing.py. The params are
``eqx.filter(model, eqx.is_inexact_array)``; updates go through
``eqx.apply_updates``. Equinox layers take one example, so the forward pass
over a batch is ``jax.vmap(model)``.
"""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_swr
from optax_swr import metrics

eqx = pytest.importorskip("equinox")

# Few distinct weight shapes: each compiles its own random initializer.
IN_SIZE = HIDDEN = 8
NUM_CLASSES = 4
_rng = np.random.default_rng(0)
X_FLAT = jnp.asarray(_rng.normal(size=(32, IN_SIZE)), jnp.float32)
Y = jnp.asarray(_rng.integers(0, NUM_CLASSES, 32), jnp.int32)
X_IMAGES = jnp.asarray(_rng.normal(size=(8, 1, 8, 8)), jnp.float32)


@pytest.fixture
def no_chain_warning():
  with warnings.catch_warnings():
    warnings.simplefilter("error", optax_swr.NotAChainWarning)
    yield


def mlp(activation=jax.nn.relu, seed=0):
  return eqx.nn.MLP(
    IN_SIZE,
    NUM_CLASSES,
    HIDDEN,
    depth=2,
    activation=activation,
    key=jax.random.key(seed),
  )


class Net(eqx.Module):
  """Fields declared head first; the call order is body ... head.

  The LayerNorm has no weight (only a bias), and the RMSNorm's weight is not
  a vector: name inference can tell neither is a normalization layer, the
  tracer tells by type.
  """

  head: eqx.nn.Linear
  rms: eqx.nn.RMSNorm
  group_norm: eqx.nn.GroupNorm
  conv: eqx.nn.Conv2d
  layer_norm: eqx.nn.LayerNorm
  body: eqx.nn.Conv2d
  pool: eqx.nn.MaxPool2d

  def __init__(self, key):
    head_key, body_key, conv_key = jax.random.split(key, 3)
    self.body = eqx.nn.Conv2d(1, 4, 3, padding=1, key=body_key)
    self.layer_norm = eqx.nn.LayerNorm((4, 8, 8), use_weight=False)
    self.conv = eqx.nn.Conv2d(4, 4, 3, padding=1, key=conv_key)
    self.group_norm = eqx.nn.GroupNorm(2, 4)
    self.pool = eqx.nn.MaxPool2d(2, 2)
    self.rms = eqx.nn.RMSNorm((4, 4, 4))
    self.head = eqx.nn.Linear(4 * 4 * 4, NUM_CLASSES, key=head_key)

  def __call__(self, x):
    x = jax.nn.relu(self.layer_norm(self.body(x)))
    x = jax.nn.relu(self.group_norm(self.conv(x)))
    x = self.rms(self.pool(x))
    return self.head(x.reshape(-1))


def batched(static):
  """``apply(params, x)``: the model rebuilt from its params, over a batch."""
  return lambda params, x: jax.vmap(eqx.combine(params, static))(x)


def summary(layers):
  return tuple((x.path, x.weight, x.bias, x.norm) for x in layers)


def test_mlp_traced_order_is_the_name_order_and_gives_the_same_steps(
  no_chain_warning,
):
  model = mlp()
  linear_call = eqx.nn.Linear.__dict__["__call__"]
  traced = optax_swr.layers_from_equinox(model, X_FLAT[0])
  assert eqx.nn.Linear.__dict__["__call__"] is linear_call  # Restored.
  params, static = eqx.partition(model, eqx.is_inexact_array)
  assert summary(traced) == tuple(
    (("layers", i), ("layers", i, "weight"), ("layers", i, "bias"), False)
    for i in range(3)
  )
  assert optax_swr.find_layers(params) == tuple(traced)

  def train(tx, steps=3):
    def loss(params):
      logits = batched(static)(params, X_FLAT)
      return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

    def step(carry, _):
      params, state = carry
      updates, state = tx.update(jax.grad(loss)(params), state, params)
      return (eqx.apply_updates(params, updates), state), None

    return jax.lax.scan(step, (params, tx.init(params)), length=steps)[0]

  adam = optax.adam(1e-2)
  by_trace = train(optax.chain(adam, optax_swr.swr(0.1, layers=traced)))
  by_name = train(optax.chain(adam, optax_swr.swr(0.1)))
  jax.tree.map(np.testing.assert_array_equal, by_trace, by_name)
  # The steps did rescale: the SWR factors are not all 1.
  layer_scales = optax.tree.get(by_trace[1], "layer_scales")
  assert np.abs(layer_scales - 1).max() > 1e-4


def test_custom_module_order_is_the_call_order_and_norms_go_by_type(
  no_chain_warning,
):
  model = Net(jax.random.key(0))
  layers = optax_swr.layers_from_equinox(model, X_IMAGES[0])
  assert summary(layers) == (
    (("body",), ("body", "weight"), ("body", "bias"), False),
    (("layer_norm",), None, ("layer_norm", "bias"), True),
    (("conv",), ("conv", "weight"), ("conv", "bias"), False),
    (("group_norm",), ("group_norm", "weight"), ("group_norm", "bias"), True),
    (("rms",), ("rms", "weight"), ("rms", "bias"), True),
    (("head",), ("head", "weight"), ("head", "bias"), False),
  )
  # By names alone, the bias-only LayerNorm is not a layer, and the RMSNorm,
  # whose weight is not a vector, would not be a normalization layer.
  params = eqx.filter(model, eqx.is_inexact_array)
  with pytest.raises(ValueError, match=r"\('layer_norm',\) has a bias"):
    optax_swr.find_layers(params)
  (rms_by_name,) = optax_swr.find_layers(params, [("rms",)])
  assert rms_by_name.weight == ("rms", "weight") and not rms_by_name.norm


def pushed_off(params, layers, seed):
  """Each weight times a factor in [1/3, 3] (log-uniform); random biases."""
  rng = np.random.default_rng(seed)
  for layer in layers:
    if layer.weight is not None:
      get = leaf_getter(layer.weight)
      factor = np.exp(rng.uniform(np.log(1 / 3), np.log(3)))
      params = eqx.tree_at(get, params, get(params) * factor)
    if layer.bias is not None:
      get = leaf_getter(layer.bias)
      bias = rng.normal(0.0, 0.5, get(params).shape).astype(np.float32)
      params = eqx.tree_at(get, params, jnp.asarray(bias))
  return params


def leaf_getter(path):
  """The function that picks the leaf at ``path`` (a Layer's weight or bias)."""

  def get(tree):
    for key in path:
      tree = tree[key] if isinstance(key, int) else getattr(tree, key)
    return tree

  return get


MODELS = {
  "mlp": (lambda: mlp(), X_FLAT),
  "custom": (lambda: Net(jax.random.key(0)), X_IMAGES),
}


@pytest.mark.parametrize("name", MODELS)
def test_ten_swr_steps_keep_the_logits_proportional(name, no_chain_warning):
  make, x = MODELS[name]
  model = make()
  layers = optax_swr.layers_from_equinox(model, x[0])
  initial, static = eqx.partition(model, eqx.is_inexact_array)
  apply = jax.jit(batched(static))
  tx = optax_swr.swr(0.5, layers=layers)
  state = tx.init(initial)  # The reference norms: the initial ones.
  params = pushed_off(initial, layers, seed=0)
  zeros = jax.tree.map(jnp.zeros_like, params)
  update = jax.jit(tx.update)
  scales = []
  for _ in range(10):
    updates, state = update(zeros, state, params)
    rescaled = eqx.apply_updates(params, updates)
    before = np.asarray(apply(params, x), np.float64).ravel()
    after = np.asarray(apply(rescaled, x), np.float64).ravel()
    scale = after @ before / (before @ before)
    error = np.abs(after - scale * before).max() / np.abs(after).max()
    assert error <= 1e-4, (len(scales), error)
    predicted = float(state.cumulative_scales[-1])
    assert scale == pytest.approx(predicted, rel=1e-4), len(scales)
    scales.append(scale)
    params = rescaled
  # Not vacuous: the first step changed the output scale noticeably. Each
  # step halves the gap between a weight norm and its reference (coef 0.5).
  assert abs(scales[0] - 1) > 1e-2, scales
  layer_norms = jax.jit(metrics.layer_norms, static_argnums=1)
  pushed = layer_norms(pushed_off(initial, layers, seed=0), layers)
  reference = state.reference_norms
  np.testing.assert_allclose(
    layer_norms(params, layers) - reference,
    (pushed - reference) / 2**10,
    rtol=1e-2,
    atol=1e-5,
  )


def test_adam_and_swr_obey_the_theorem_2_bound_and_plain_adam_outgrows_it(
  no_chain_warning,
):
  model = mlp()
  layers = optax_swr.layers_from_equinox(model, X_FLAT[0])
  params, static = eqx.partition(model, eqx.is_inexact_array)
  coef, steps = 0.1, 200

  def loss(params):
    logits = batched(static)(params, X_FLAT)
    return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

  @jax.jit
  def train():
    adam, swr = optax.adam(1e-2), optax_swr.swr(coef, layers=layers)

    def step(carry, _):
      params, adam_state, swr_state, plain, plain_state = carry
      updates, adam_state = adam.update(
        jax.grad(loss)(params), adam_state, params
      )
      updates, new_swr_state = swr.update(updates, swr_state, params)
      moved = new_swr_state.weight_norms / new_swr_state.layer_scales
      plain_updates, plain_state = adam.update(
        jax.grad(loss)(plain), plain_state, plain
      )
      plain = eqx.apply_updates(plain, plain_updates)
      norms = (
        swr_state.weight_norms,
        moved,
        new_swr_state.weight_norms,
        metrics.layer_norms(plain, layers),
      )
      params = eqx.apply_updates(params, updates)
      return (params, adam_state, new_swr_state, plain, plain_state), norms

    init = (params, adam.init(params), swr.init(params))
    carry = (*init, params, adam.init(params))
    return jax.lax.scan(step, carry, length=steps)[1]

  norm_t, moved, rescaled, plain = train()
  initial = metrics.layer_norms(params, layers)
  # B: the largest change of ||W||^2 one optimizer step made, per layer.
  budget = jnp.max(jnp.abs(moved**2 - norm_t**2), axis=0)
  bound = jnp.sqrt(budget) / coef + initial
  assert bool(jnp.all(rescaled <= bound * (1 + 1e-5)))
  # Plain Adam's norms end beyond the largest that SWR ever allowed.
  assert bool(jnp.all(plain[-1] > rescaled.max(axis=0))), (plain[-1], rescaled)
  assert bool(jnp.all(plain[-1] > 1.5 * initial))


class Shared(eqx.Module):
  first: eqx.nn.Linear
  second: eqx.nn.Linear

  def __init__(self, key):
    first_key, second_key = jax.random.split(key)
    self.first = eqx.nn.Linear(IN_SIZE, IN_SIZE, key=first_key)
    self.second = eqx.nn.Linear(IN_SIZE, IN_SIZE, key=second_key)

  def __call__(self, x):
    return self.second(jax.nn.relu(self.first(jax.nn.relu(self.first(x)))))


class Residual(Shared):
  def __call__(self, x):
    h = self.first(x)
    return self.second(jax.nn.relu(h)) + h


@pytest.mark.parametrize(
  "module", [Shared, Residual], ids=["shared", "residual"]
)
def test_shared_and_residual_modules_keep_their_function(module):
  model = module(jax.random.key(0))
  with warnings.catch_warnings():
    warnings.simplefilter("error", optax_swr.NotAChainWarning)
    warnings.simplefilter("ignore", optax_swr.ConstrainedLayersWarning)
    layers = optax_swr.layers_from_equinox(model, X_FLAT[0])
  params, static = eqx.partition(model, eqx.is_inexact_array)
  report = optax_swr.check_proportional(batched(static), params, layers, X_FLAT)
  assert report.relative_error <= 1e-5, report
  chain_rule = optax_swr.check_proportional(
    batched(static), params, layers.chain_rule(), X_FLAT
  )
  assert chain_rule.relative_error > 1e-3, chain_rule


def test_tanh_mlp_pins_the_layers_before_each_tanh_and_stays_exact():
  model = mlp(activation=jax.nn.tanh)
  with pytest.warns(
    optax_swr.ConstrainedLayersWarning, match=re.escape("`tanh`")
  ) as caught:
    layers = optax_swr.layers_from_equinox(model, X_FLAT[0])
  assert "['layers/0', 'layers/1']" in str(caught[0].message)
  params, static = eqx.partition(model, eqx.is_inexact_array)
  report = optax_swr.check_proportional(batched(static), params, layers, X_FLAT)
  assert report.relative_error <= 1e-5, report
  chain_rule = optax_swr.check_proportional(
    batched(static), params, layers.chain_rule(), X_FLAT
  )
  assert chain_rule.relative_error > 1e-2, chain_rule


class ConvBN(eqx.Module):
  conv: eqx.nn.Conv2d
  bn: eqx.nn.BatchNorm
  pool: eqx.nn.MaxPool2d
  head: eqx.nn.Linear

  def __init__(self, key):
    conv_key, head_key = jax.random.split(key)
    self.conv = eqx.nn.Conv2d(1, 4, 3, padding=1, use_bias=False, key=conv_key)
    self.bn = eqx.nn.BatchNorm(4, axis_name="batch", mode="batch")
    self.pool = eqx.nn.MaxPool2d(2, 2)
    self.head = eqx.nn.Linear(4 * 4 * 4, NUM_CLASSES, key=head_key)

  def __call__(self, x, state):
    x, state = self.bn(self.conv(x), state)
    return self.head(self.pool(jax.nn.relu(x)).reshape(-1)), state


def batch_norm_apply(model, x, state):
  """Training mode: BatchNorm reduces over the vmapped axis "batch"."""
  return jax.vmap(
    model, axis_name="batch", in_axes=(0, None), out_axes=(0, None)
  )(x, state)


def test_batch_norm_with_state_is_traced_as_a_norm_layer():
  model, state = eqx.nn.make_with_state(ConvBN)(jax.random.key(0))
  with warnings.catch_warnings():
    warnings.simplefilter("error", optax_swr.NotAChainWarning)
    layers = optax_swr.layers_from_equinox(
      model, X_IMAGES, state, apply=batch_norm_apply
    )
  assert summary(layers) == (
    (("conv",), ("conv", "weight"), None, False),
    (("bn",), ("bn", "weight"), ("bn", "bias"), True),
    (("head",), ("head", "weight"), ("head", "bias"), False),
  )
  params, static = eqx.partition(model, eqx.is_inexact_array)
  apply = lambda p, x: batch_norm_apply(eqx.combine(p, static), x, state)[0]
  report = optax_swr.check_proportional(apply, params, layers, X_IMAGES)
  assert report.relative_error <= 1e-4, report
  assert report.fitted_scale == pytest.approx(report.predicted_scale, 1e-4)


class HandWrittenRelu(Shared):
  def __call__(self, x):
    h = self.first(x)
    return self.second(jnp.where(h > 0, h, 0.0))


def sequential():
  first_key, second_key = jax.random.split(jax.random.key(0))
  return eqx.nn.Sequential(
    [
      eqx.nn.Linear(IN_SIZE, HIDDEN, key=first_key),
      eqx.nn.Lambda(jax.nn.relu),
      eqx.nn.Linear(HIDDEN, NUM_CLASSES, key=second_key),
    ]
  )


def trace_batch_norm_with_state():
  model, state = eqx.nn.make_with_state(ConvBN)(jax.random.key(0))
  optax_swr.layers_from_equinox(model, X_IMAGES, state, apply=batch_norm_apply)


# Chains the tracer once mistook for non-chains (their proportionality checks
# pass): these must trace without a warning.
@pytest.mark.parametrize(
  "trace",
  [
    # A layer's first floating-point argument is its activation; the
    # eqx.nn.State of a BatchNorm ...
    trace_batch_norm_with_state,
    # ... and the PRNG key that eqx.nn.Sequential hands each layer are not.
    lambda: optax_swr.layers_from_equinox(
      sequential(), X_FLAT[0], key=jax.random.key(1)
    ),
    # jnp.where(h > 0, h, 0.0) (and eqx.nn.Dropout in training) passes the
    # 0 into a nested jit, where it must still be known to be zero.
    lambda: optax_swr.layers_from_equinox(
      HandWrittenRelu(jax.random.key(0)), X_FLAT[0]
    ),
  ],
  ids=["batch_norm_state", "prng_key_argument", "where_zero"],
)
def test_chains_with_extra_arguments_or_nested_zeros_trace_cleanly(
  trace, no_chain_warning
):
  trace()


class SkipLinear(eqx.Module):
  """A layer with a second activation argument."""

  weight: jax.Array

  def __call__(self, x, skip):
    return self.weight @ x + skip.sum()


class TwoInputLayer(eqx.Module):
  a: eqx.nn.Linear
  b: eqx.nn.Linear
  c: SkipLinear

  def __init__(self, key):
    k1, k2, k3 = jax.random.split(key, 3)
    self.a = eqx.nn.Linear(X_FLAT.shape[-1], 8, key=k1)
    self.b = eqx.nn.Linear(8, 8, key=k2)
    self.c = SkipLinear(jax.random.normal(k3, (2, 8)))

  def __call__(self, x):
    h = jax.nn.relu(self.a(x))
    return self.c(jax.nn.relu(self.b(h)), skip=h)


def test_a_layer_with_a_second_scaled_argument_is_walked_inside():
  """The trace sees what SkipLinear does with `skip` (adds its sum to its
  output): b and c are tied, nothing is pinned, and the function is kept."""
  model = TwoInputLayer(jax.random.key(0))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    layers = optax_swr.layers_from_equinox(model, X_FLAT[0])
  assert any(
    note.startswith("a residual merge of [a, b, c] and [a]")
    for note in layers.graph.notes
  ), layers.graph.notes
  params, static = eqx.partition(model, eqx.is_inexact_array)
  report = optax_swr.check_proportional(batched(static), params, layers, X_FLAT)
  assert report.relative_error <= 1e-5, report
  assert report.constrained_layers == ("b", "c") and not report.pinned_layers


def test_filter_jit_training_compiles_once_and_learns(no_chain_warning):
  model = mlp()
  layers = optax_swr.layers_from_equinox(model, X_FLAT[0])
  tx = optax.chain(optax.adam(1e-2), optax_swr.swr(1e-2, layers=layers))
  opt_state = tx.init(eqx.filter(model, eqx.is_inexact_array))
  traces = []

  def loss_fn(model, x, y):
    logits = jax.vmap(model)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @eqx.filter_jit
  def step(model, opt_state, x, y):
    traces.append(None)  # Runs once per trace, not per call.
    loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x, y)
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = tx.update(grads, opt_state, params)
    return eqx.apply_updates(model, updates), opt_state, loss

  losses = []
  for _ in range(60):
    model, opt_state, loss = step(model, opt_state, X_FLAT, Y)
    losses.append(float(loss))
  assert len(traces) == 1
  assert losses[-1] < 0.7 * losses[0], losses
  assert int(optax.tree.get(opt_state, "step_count")) == 60


def test_the_example_learns_digits_in_one_epoch(capsys):
  pytest.importorskip(
    "sklearn", reason="the examples need the [examples] extra"
  )
  from examples.train import equinox as example

  history = example.main(["--epochs", "1", "--seed", "0"])
  # Chance is 0.1; over seeds 0..3, with and without SWR, one epoch gave
  # 0.59 to 0.82.
  assert history["test_accuracy"][-1] > 0.4, history
  assert list(history["weight_norms"][-1]) == [
    "conv1",
    "conv2",
    "dense",
    "head",
  ]
  printed = capsys.readouterr().out
  assert "layers in forward order: conv1, conv2, dense, head" in printed
  assert re.search(r"epoch +1 .*norms conv1 \d", printed), printed


def conv_bn(mode):
  """ConvBN and its state, with a BatchNorm of the given mode."""

  def make(key):
    batch_norm = eqx.nn.BatchNorm(4, axis_name="batch", mode=mode)
    return eqx.tree_at(lambda m: m.bn, ConvBN(key), batch_norm)

  return eqx.nn.make_with_state(make)(jax.random.key(0))


def running_stats(model, state):
  """(mean, var) of the BatchNorm, in the mode's state field."""
  bn = model.bn
  index = bn.batch_state_index if bn.mode == "batch" else bn.ema_state_index
  return tuple(np.asarray(x, np.float64) for x in state.get(index))


def eval_mode_logits(params, static, state, x=X_FLAT):
  """The logits with the running statistics (BatchNorm in inference mode)."""
  model = eqx.nn.inference_mode(eqx.combine(params, static))
  logits = jax.vmap(model, in_axes=(0, None))(x, state)[0]
  return np.asarray(logits, np.float64)


def relative_error(output, expected):
  return np.linalg.norm(output - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("mode", ["batch", "ema"])
def test_synced_batch_norm_statistics_keep_the_eval_logits_proportional(
  mode,
):
  model, state = conv_bn(mode)
  layers = optax_swr.layers_from_equinox(
    model, X_IMAGES, state, apply=batch_norm_apply
  )
  adam = optax.adam(1e-2)
  tx = optax.chain(adam, optax_swr.swr(0.5, layers=layers))
  params, static = eqx.partition(model, eqx.is_inexact_array)
  opt_state = tx.init(params)  # The reference norms: the initial ones.
  # Weights away from them, so that SWR rescales; BatchNorm and head biases
  # away from 0, so that stale statistics change the function.
  params = pushed_off(params, layers, seed=4)  # The conv times 2.6.

  def loss_fn(params, state):
    logits, state = batch_norm_apply(
      eqx.combine(params, static), X_IMAGES, state
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, Y[:8])
    return loss.mean(), state

  @eqx.filter_jit
  def train_step(params, state, opt_state):
    grads, state = jax.grad(loss_fn, has_aux=True)(params, state)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = eqx.apply_updates(params, updates)
    state = optax_swr.sync_equinox_batch_stats(static, state, opt_state, layers)
    return params, state, opt_state

  def eval_logits(params, state):
    return eval_mode_logits(params, static, state, X_IMAGES)

  for _ in range(2):
    params, state, opt_state = train_step(params, state, opt_state)
  # The checked step, eagerly: Adam's step alone is the reference that SWR
  # must only scale.
  grads, state = jax.grad(loss_fn, has_aux=True)(params, state)
  adam_updates, _ = adam.update(grads, opt_state[0], params)
  updates, opt_state = tx.update(grads, opt_state, params)
  adam_params = eqx.apply_updates(params, adam_updates)
  params = eqx.apply_updates(params, updates)

  def scale_of(field, layer):
    return np.float64(
      optax_swr.by_layer(optax.tree.get(opt_state, field), layers)[layer]
    )

  s = scale_of("input_scales", "bn")
  assert abs(s - 1) > 5e-2, s  # coef 0.5 moved the conv's scale this step
  mean, var = running_stats(model, state)
  # Theorem 1: SWR multiplied the logits of Adam's step by the head's C.
  expected = scale_of("cumulative_scales", "head") * eval_logits(
    adam_params, state
  )
  stale = eval_logits(params, state)

  synced = optax_swr.sync_equinox_batch_stats(model, state, opt_state, layers)

  synced_mean, synced_var = running_stats(model, synced)
  np.testing.assert_allclose(synced_mean, mean * s, rtol=1e-6)
  np.testing.assert_allclose(synced_var, var * s**2, rtol=1e-6)
  # Up to float32 rounding and BatchNorm's eps: var s^2 + eps is not
  # (var + eps) s^2.
  assert relative_error(eval_logits(params, synced), expected) < 1e-4
  assert relative_error(stale, expected) > 1e-2


def test_syncing_a_batch_norm_missing_from_layers_names_it():
  model, state = conv_bn("batch")
  traced = optax_swr.layers_from_equinox(
    model, X_IMAGES, state, apply=batch_norm_apply
  )
  layers = traced.without("bn")
  tx = optax_swr.swr(0.5, layers=layers)
  opt_state = tx.init(eqx.filter(model, eqx.is_inexact_array))
  with pytest.raises(
    ValueError,
    match=re.escape(
      "sync_equinox_batch_stats: the eqx.nn.BatchNorm at ('bn',) is not a "
      "normalization layer of `layers`"
    ),
  ):
    optax_swr.sync_equinox_batch_stats(model, state, opt_state, layers)


def test_sync_batch_stats_points_an_equinox_state_to_the_equinox_function():
  model, state = conv_bn("batch")
  layers = optax_swr.layers_from_equinox(
    model, X_IMAGES, state, apply=batch_norm_apply
  )
  tx = optax_swr.swr(0.5, layers=layers)
  opt_state = tx.init(eqx.filter(model, eqx.is_inexact_array))
  with pytest.raises(
    ValueError,
    match=re.escape(
      "sync_batch_stats: `batch_stats` is an eqx.nn.State, which is keyed by "
      "StateIndex, not like the params. Use "
      "optax_swr.sync_equinox_batch_stats(model, state, opt_state, layers)"
    ),
  ):
    optax_swr.sync_batch_stats(state, opt_state, layers)


class LinearBN(eqx.Module):
  fc: eqx.nn.Linear
  bn: eqx.nn.BatchNorm

  def __init__(self, key):
    self.fc = eqx.nn.Linear(HIDDEN, HIDDEN, use_bias=False, key=key)
    self.bn = eqx.nn.BatchNorm(HIDDEN, axis_name="batch", mode="batch")

  def __call__(self, x, state):
    x, state = self.bn(self.fc(x), state)
    return jax.nn.relu(x), state


class StackedBN(eqx.Module):
  """Three LinearBN blocks built by filter_vmap, run by lax.scan."""

  blocks: LinearBN
  head: eqx.nn.Linear

  def __init__(self, key):
    blocks_key, head_key = jax.random.split(key)
    self.blocks = eqx.filter_vmap(LinearBN)(jax.random.split(blocks_key, 3))
    self.head = eqx.nn.Linear(HIDDEN, NUM_CLASSES, key=head_key)

  def __call__(self, x, state):
    dynamic, static = eqx.partition(self.blocks, eqx.is_array)

    def run(h, block):  # The state's leaves are stacked like the blocks'.
      block_params, block_state = block
      return eqx.combine(block_params, static)(h, block_state)

    h, state = jax.lax.scan(run, x, (dynamic, state))
    return self.head(h), state


def test_a_stacked_batch_norm_gets_one_input_scale_per_slice():
  model, state = eqx.nn.make_with_state(StackedBN)(jax.random.key(0))
  _, state = batch_norm_apply(model, X_FLAT, state)  # Running stats.
  layers = optax_swr.layers_from_equinox(
    model, X_FLAT, state, apply=batch_norm_apply
  )
  initial, static = eqx.partition(model, eqx.is_inexact_array)
  tx = optax_swr.swr(0.5, layers=layers)
  opt_state = tx.init(initial)
  # Each slice's weight away from its reference norm by its own factor.
  get = lambda p: p.blocks.fc.weight
  factors = jnp.array([3.0, 0.5, 1.5])[:, None, None]
  params = eqx.tree_at(get, initial, get(initial) * factors)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, opt_state = tx.update(zeros, opt_state, params)
  rescaled = eqx.apply_updates(params, updates)
  index = model.blocks.bn.batch_state_index
  mean, var = (np.asarray(x, np.float64) for x in state.get(index))
  before = eval_mode_logits(params, static, state)

  synced = optax_swr.sync_equinox_batch_stats(model, state, opt_state, layers)

  s = np.ones(3)
  for layer, scale in zip(layers, np.asarray(opt_state.input_scales)):
    if layer.path == ("blocks", "bn"):
      (k,) = layer.index
      s[k] = scale
  assert np.diff(np.sort(s)).min() > 1e-2, s  # The slices' scales differ.
  synced_mean, synced_var = synced.get(index)
  np.testing.assert_allclose(synced_mean, mean * s[:, None], rtol=1e-6)
  np.testing.assert_allclose(synced_var, var * s[:, None] ** 2, rtol=1e-6)
  after = eval_mode_logits(rescaled, static, synced)
  expected = float(opt_state.cumulative_scales[-1]) * before
  assert relative_error(after, expected) < 1e-4
