"""Every zoo model, Linen and NNX: traced layers, proportionality, bounds."""

from __future__ import annotations

import warnings

from flax import nnx
import jax
import jax.numpy as jnp
import optax
import pytest

from examples.models import linen as models_linen
from examples.models import nnx as models_nnx
import optax_swr

IN_SHAPE = (8, 8, 1)
NUM_CLASSES = 5
WIDTH = {
  "mlp": 16,
  "cnn": 4,
  "cnn_bn": 4,
  "vgg16": 4,
  "vgg_bn": 4,
  "resnet18": 4,
  "transformer": 16,
}
X = jax.random.normal(jax.random.key(0), (16, *IN_SHAPE))
Y = jax.random.randint(jax.random.key(1), (16,), 0, NUM_CLASSES)
NON_CHAIN_MODELS = tuple(
  m for m in models_linen.ALL_MODELS if m not in models_linen.CHAIN_MODELS
)


def linen_model(name):
  module, variables = models_linen.create(
    name, NUM_CLASSES, IN_SHAPE, width=WIDTH[name]
  )

  def apply_fn(params, x, stats=None):
    """Training-mode logits: BatchNorm uses the batch's statistics."""
    stats = variables.get("batch_stats", {}) if stats is None else stats
    logits, _ = module.apply(
      {"params": params, "batch_stats": stats},
      x,
      train=True,
      mutable=["batch_stats"],
    )
    return logits

  trace = lambda: optax_swr.layers_from_linen(module, variables, X, train=True)
  return variables["params"], apply_fn, trace


def nnx_model(name):
  model = models_nnx.create(name, NUM_CLASSES, IN_SHAPE, width=WIDTH[name])
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def apply_fn(params, x):
    return nnx.merge(graphdef, params, rest)(x)

  trace = lambda: optax_swr.layers_from_nnx(model, X)
  return params, apply_fn, trace


BUILDERS = {"linen": linen_model, "nnx": nnx_model}


@pytest.mark.parametrize("api", BUILDERS)
@pytest.mark.parametrize("name", models_linen.CHAIN_MODELS)
def test_chain_models_trace_without_warning_and_stay_proportional(api, name):
  params, apply_fn, trace = BUILDERS[api](name)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    layers = trace()
  report = optax_swr.check_proportional(apply_fn, params, layers, X, coef=0.5)
  assert report.relative_error <= 1e-4, report
  assert report.argmax_agreement == 1.0
  assert abs(report.fitted_scale / report.predicted_scale - 1) <= 1e-4


def test_swr_rescales_every_layer_of_the_layer_norm_mlp_and_keeps_its_logits():
  """Dense -> LayerNorm -> ReLU: a chain with normalization layers. SWR
  rescales all five layers (the LayerNorms' scales too), pins none, and the
  logits scale by the factors of the last LayerNorm and the head."""
  module = models_linen.LayerNormMLP(hidden=(16, 16), num_classes=NUM_CLASSES)
  variables = module.init(jax.random.key(0), X)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    layers = optax_swr.layers_from_linen(module, variables, X)
  assert layers.names == ("hidden_0", "norms_0", "hidden_1", "norms_1", "head")
  assert [layer.norm for layer in layers] == [False, True, False, True, False]
  assert layers.graph is None  # a chain: no equations to keep
  params = variables["params"]
  tx = optax.chain(optax.adam(1e-3), optax_swr.swr(0.5, layers=layers))
  apply_fn = lambda p, x: module.apply({"params": p}, x)
  report = optax_swr.check_proportional(apply_fn, params, tx, X)
  assert report.relative_error <= 1e-5, report
  assert report.argmax_agreement == 1.0
  assert abs(report.fitted_scale / report.predicted_scale - 1) <= 1e-5
  assert report.pinned_layers == report.constrained_layers == ()
  grads = jax.tree.map(jnp.ones_like, params)
  _, state = tx.update(grads, tx.init(params), params)
  assert bool(jnp.all(optax.tree.get(state, "layer_scales") != 1.0))


@pytest.mark.parametrize("api", BUILDERS)
@pytest.mark.parametrize("name", NON_CHAIN_MODELS)
def test_residual_and_attention_models_keep_their_function(api, name):
  """ResNet-18 (BatchNorm, projection shortcuts) and the ViT (pre-LN, GELU)."""
  params, apply_fn, trace = BUILDERS[api](name)
  with warnings.catch_warnings():
    warnings.simplefilter("error", optax_swr.NotAChainWarning)
    warnings.simplefilter("ignore", optax_swr.ConstrainedLayersWarning)
    layers = trace()
  assert layers.graph is not None and len(layers.graph.constraints)
  x = jax.random.normal(jax.random.key(2), (64, *IN_SHAPE))
  report = optax_swr.check_proportional(apply_fn, params, layers, x, coef=0.5)
  assert report.relative_error <= 1e-4, report
  assert abs(report.fitted_scale / report.predicted_scale - 1) <= 1e-4
  # The chain rule alone (the layers without their equations) is not exact.
  plain = optax_swr.check_proportional(apply_fn, params, layers.chain_rule(), x)
  assert plain.relative_error > 1e-3, plain


def _train_norms(apply_fn, params, layers, coef, steps):
  """Adam + SWR on one batch; the state's norms before and after each SWR."""
  adam, swr = optax.adam(1e-2), optax_swr.swr(coef, layers=layers)

  def loss(params):
    logits = apply_fn(params, X)
    return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

  def step(carry, _):
    params, adam_state, swr_state = carry
    updates, adam_state = adam.update(
      jax.grad(loss)(params), adam_state, params
    )
    updates, new_swr_state = swr.update(updates, swr_state, params)
    before_rescale = new_swr_state.weight_norms / new_swr_state.layer_scales
    norms = (swr_state.weight_norms, before_rescale, new_swr_state.weight_norms)
    return (
      optax.apply_updates(params, updates),
      adam_state,
      new_swr_state,
    ), norms

  carry = (params, adam.init(params), swr.init(params))
  _, norms = jax.lax.scan(step, carry, length=steps)
  return swr.init(params).reference_norms, norms


@pytest.mark.parametrize("name", NON_CHAIN_MODELS)
def test_non_chain_models_obey_the_theorem_2_bound_over_200_steps(name):
  params, apply_fn, trace = linen_model(name)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optax_swr.NotAChainWarning)
    layers = trace()
  coef = 0.1
  initial, (norm_t, moved, rescaled) = jax.jit(
    _train_norms, static_argnums=(0, 2, 3, 4)
  )(apply_fn, params, layers, coef, 200)
  # B: the largest change of ||W||^2 that one optimizer step made, per layer.
  budget = jnp.max(jnp.abs(moved**2 - norm_t**2), axis=0)
  bound = jnp.sqrt(budget) / coef + initial
  assert bool(jnp.all(rescaled <= bound * (1 + 1e-5)))
  # The bound is not vacuous: the weights did move.
  assert float(jnp.max(jnp.abs(rescaled[-1] / initial - 1))) > 1e-3


@pytest.mark.parametrize("api", BUILDERS)
@pytest.mark.parametrize("name", models_linen.ALL_MODELS)
def test_tree_map_params_maps_the_optimizer_state_of_every_model(api, name):
  """optax's standard way to derive state shardings and dtypes."""
  params, _, trace = BUILDERS[api](name)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optax_swr.NotAChainWarning)
    layers = trace()
  tx = optax.chain(optax.adam(1e-3), optax_swr.swr(1e-2, layers=layers))
  state = tx.init(params)
  mesh = jax.sharding.Mesh(jax.devices()[:1], ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  shardings = optax.tree_map_params(
    tx,
    lambda p: replicated,
    state,
    transform_non_params=lambda _: replicated,
  )
  assert jax.tree.structure(shardings) == jax.tree.structure(state)
  as_bf16 = optax.tree_map_params(tx, lambda p: p.astype(jnp.bfloat16), state)
  mu = optax.tree.get(as_bf16, "mu")
  assert {x.dtype for x in jax.tree.leaves(mu)} == {jnp.dtype(jnp.bfloat16)}
  swr_state = as_bf16[1]
  assert swr_state.reference_norms.dtype == jnp.float32  # not a param
  assert swr_state.reference_norms.shape == (len(layers),)
