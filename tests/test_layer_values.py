"""Layers as data: explicit Layer values, naming conventions, plain pytrees."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_swr
from tests import reference


def error(text):
  return pytest.raises(ValueError, match=re.escape(text))


def random_params(tree, seed=0):
  """Random values (biases too, so a wrong bias factor shows)."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
    treedef,
    [jax.random.normal(k, jnp.shape(x)) for k, x in zip(keys, leaves)],
  )


def plain_mlp(p, x):
  h = jax.nn.relu(x @ p["w1"] + p["b1"])
  return h @ p["w2"] + p["b2"]


PLAIN = random_params(
  {
    "w1": jnp.ones((4, 8)),
    "b1": jnp.ones(8),
    "w2": jnp.ones((8, 3)),
    "b2": jnp.ones(3),
  }
)
X = jax.random.normal(jax.random.key(9), (16, 4))


def one_step(tx, params, factors=(0.5, 2.0)):
  """One SWR step with zero updates from reference norms times `factors`."""
  state = tx.init(params)
  state = state._replace(
    reference_norms=state.reference_norms * jnp.asarray(factors)
  )
  updates, state = tx.update(
    jax.tree.map(jnp.zeros_like, params), state, params
  )
  return optax.apply_updates(params, updates), state


def test_plain_dict_with_layer_values_matches_the_float64_reference():
  layers = [optax_swr.Layer("w1", "b1"), optax_swr.Layer("w2", "b2")]
  new, state = one_step(optax_swr.swr(0.3, layers=layers), PLAIN)
  norms = [np.linalg.norm(np.float64(PLAIN[k])) for k in ("w1", "w2")]
  targets = np.array(norms) * [0.5, 2.0]
  c = (0.3 * targets + 0.7 * np.array(norms)) / np.array(norms)
  np.testing.assert_allclose(state.layer_scales, c, rtol=1e-6)
  np.testing.assert_allclose(new["w1"], c[0] * PLAIN["w1"], rtol=1e-6)
  np.testing.assert_allclose(new["b1"], c[0] * PLAIN["b1"], rtol=1e-6)
  np.testing.assert_allclose(new["w2"], c[1] * PLAIN["w2"], rtol=1e-6)
  np.testing.assert_allclose(new["b2"], c[0] * c[1] * PLAIN["b2"], rtol=1e-6)
  before, after = plain_mlp(PLAIN, X), plain_mlp(new, X)
  np.testing.assert_allclose(after, c[0] * c[1] * before, rtol=2e-5, atol=1e-6)


def test_a_list_of_weight_bias_tuples():
  params = [(PLAIN["w1"], PLAIN["b1"]), (PLAIN["w2"], PLAIN["b2"])]
  layers = [optax_swr.Layer((0, 0), (0, 1)), optax_swr.Layer((1, 0), (1, 1))]
  report = optax_swr.check_proportional(
    lambda p, x: plain_mlp(
      {"w1": p[0][0], "b1": p[0][1], "w2": p[1][0], "b2": p[1][1]}, x
    ),
    params,
    layers,
    X,
  )
  assert report.relative_error < 1e-5
  assert [layer.name for layer in layers] == ["0", "1"]


def test_a_leaf_path_in_layers_tells_how_to_name_weight_and_bias():
  with error(
    "the path ('w1',) in `layers` points to a leaf, not to a layer sub-tree. "
    "Say which leaf is the weight and which the bias: "
    "optax_swr.Layer(weight=('w1',), bias=<path of its bias or None>)"
  ):
    optax_swr.swr(layers=["w1", "w2"]).init(PLAIN)


HAIKU = {
  "linear": {"w": jnp.ones((4, 8)), "b": jnp.ones(8)},
  "layer_norm": {"scale": jnp.ones(8), "offset": jnp.ones(8)},
  "linear_1": {"w": jnp.ones((8, 8)), "b": jnp.ones(8)},
  "linear_2": {"w": jnp.ones((8, 3)), "b": jnp.ones(3)},
}


def test_haiku_names_linear_then_linear_1_are_ordered():
  params = {k: v for k, v in HAIKU.items() if k != "layer_norm"}
  layers = optax_swr.find_layers(params)
  assert [layer.name for layer in layers] == ["linear", "linear_1", "linear_2"]
  assert layers[0] == optax_swr.Layer(("linear", "w"), ("linear", "b"))


def test_haiku_scale_offset_is_a_norm_layer_but_its_place_is_not_guessed():
  layer = optax_swr.find_layers(HAIKU, ["layer_norm"])[0]
  assert layer == optax_swr.Layer(
    ("layer_norm", "scale"), ("layer_norm", "offset"), norm=True
  )
  with error("are not one name with distinct numbers"):
    optax_swr.find_layers(HAIKU)


def test_haiku_flat_module_names():
  params = {
    f"mlp/~/linear_{i}": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    for i in range(11)
  }
  names = [layer.name for layer in optax_swr.find_layers(params)]
  assert names == [f"mlp/~/linear_{i}" for i in range(11)]


def test_equinox_and_pytorch_style_weight_bias():
  params = {
    "layers": [
      {"weight": jnp.ones((8, 4)), "bias": jnp.ones(8)},
      {"weight": jnp.ones(8), "bias": jnp.ones(8)},  # a LayerNorm
      {"weight": jnp.ones((3, 8)), "bias": jnp.ones(3)},
    ]
  }
  layers = optax_swr.find_layers(params)
  assert [layer.norm for layer in layers] == [False, True, False]
  assert layers[1].weight == ("layers", 1, "weight")


def test_callable_layers_give_the_same_step_as_the_list():
  layers = [optax_swr.Layer("w1", "b1"), optax_swr.Layer("w2", "b2")]
  by_list, _ = one_step(optax_swr.swr(0.3, layers=layers), PLAIN)
  by_fn, _ = one_step(optax_swr.swr(0.3, layers=lambda p: layers), PLAIN)
  jax.tree.map(np.testing.assert_array_equal, by_list, by_fn)


def test_a_callable_returning_the_wrong_thing_is_named():
  tx = optax_swr.swr(layers=lambda p: p["w1"])
  with error("swr: the `layers` function returned"):
    tx.init(PLAIN)
  with error("is not a sequence of optax_swr.Layer values or layer paths"):
    optax_swr.swr(layers=lambda p: "w1").init(PLAIN)


def test_bad_layer_values_name_the_layer_and_the_fix():
  with error(
    "the weight ('w9',) of the layer 'w9' is not a leaf of the params"
  ):
    optax_swr.swr(layers=[optax_swr.Layer("w9")]).init(PLAIN)
  nested = {"a": {"kernel": jnp.ones((2, 2))}, "b": jnp.ones(2)}
  with error(
    "the weight ('a',) of the layer 'a' is not a leaf of the params: "
    "it is a sub-tree with the leaves [('a', 'kernel')]"
  ):
    optax_swr.swr(layers=[optax_swr.Layer("a")]).init(nested)
  with error("the layers 'w1' and 'shared' share a leaf"):
    optax_swr.swr(
      layers=[
        optax_swr.Layer("w1", "b1"),
        optax_swr.Layer("w2", "b1", path="shared"),
      ]
    ).init(PLAIN)
  ints = {**PLAIN, "w1": jnp.ones((4, 8), jnp.int32)}
  with error("the layer 'w1' has a int32 leaf; SWR rescales floating-point"):
    optax_swr.swr(layers=[optax_swr.Layer("w1", "b1")]).init(ints)
  with error("only a normalization layer (norm=True) may have no weight"):
    optax_swr.Layer(None, "b1")
  with error("needs `path`, the path of the module"):
    optax_swr.Layer(None, norm=True)
  with error("a path must be a non-empty tuple of keys"):
    optax_swr.Layer(())
  with error("`Layer('w1').coef` must be in [0, 1]"):
    optax_swr.swr(layers=[optax_swr.Layer("w1", coef=2.0)])


def test_a_norm_layer_without_weight_restarts_the_cumulative_factor():
  params = {**PLAIN, "ln_bias": jax.random.normal(jax.random.key(3), (8,))}

  def apply(p, x):
    h = x @ p["w1"] + p["b1"]
    h = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True))
    return jax.nn.relu(h + p["ln_bias"]) @ p["w2"] + p["b2"]

  layers = [
    optax_swr.Layer("w1", "b1"),
    optax_swr.Layer(None, "ln_bias", norm=True, path="ln"),
    optax_swr.Layer("w2", "b2"),
  ]
  new, state = one_step(
    optax_swr.swr(0.5, layers=layers), params, (0.5, 1.0, 2.0)
  )
  c = np.asarray(state.layer_scales)
  assert c[1] == 1.0  # nothing to rescale
  np.testing.assert_allclose(state.cumulative_scales, [c[0], 1.0, c[2]])
  np.testing.assert_allclose(state.input_scales, [1.0, c[0], 1.0])
  np.testing.assert_array_equal(new["ln_bias"], params["ln_bias"])
  after, before = apply(new, X), apply(params, X)
  np.testing.assert_allclose(after, c[2] * before, rtol=1e-4, atol=1e-5)


def test_layer_coef_zero_excludes_a_layer_and_keeps_the_function():
  layers = [optax_swr.Layer("w1", "b1"), optax_swr.Layer("w2", "b2", coef=0.0)]
  new, state = one_step(optax_swr.swr(0.5, layers=layers), PLAIN)
  c = np.asarray(state.layer_scales)
  assert c[1] == 1.0 and c[0] != 1.0
  np.testing.assert_array_equal(new["w2"], PLAIN["w2"])
  np.testing.assert_allclose(new["b2"], c[0] * PLAIN["b2"], rtol=1e-6)
  before, after = plain_mlp(PLAIN, X), plain_mlp(new, X)
  np.testing.assert_allclose(after, c[0] * before, rtol=2e-5, atol=1e-6)


def test_optax_masked_hiding_a_bias_raises_where_layer_coef_keeps_the_function():
  """What the docs say about masking: a masked bias would lose its factor."""
  layers = [optax_swr.Layer("w1", "b1"), optax_swr.Layer("w2", "b2")]
  mask = {"w1": True, "b1": True, "w2": True, "b2": False}
  masked = optax.masked(optax_swr.swr(0.5, layers=layers), mask)
  with error("optax.masked hides [('b2',)] from swr"):
    optax_swr.check_proportional(plain_mlp, PLAIN, masked, X)
  layers[1] = optax_swr.Layer("w2", "b2", coef=0.0)
  report = optax_swr.check_proportional(plain_mlp, PLAIN, layers, X)
  assert report.relative_error < 1e-5


def test_per_layer_coef_takes_precedence_and_can_be_a_schedule():
  schedule = optax.linear_schedule(0.0, 1.0, 10)
  layers = [
    optax_swr.Layer("w1", "b1", coef=schedule),
    optax_swr.Layer("w2", "b2"),
  ]
  tx = optax_swr.swr(0.5, layers=layers, classifier=1, classifier_coef=0.25)
  state = tx.init(PLAIN)
  state = state._replace(
    step_count=jnp.asarray(4, jnp.int32),
    reference_norms=2 * state.reference_norms,
  )
  _, state = tx.update(jax.tree.map(jnp.zeros_like, PLAIN), state, PLAIN)
  np.testing.assert_allclose(state.layer_scales, [1 + 0.4, 1 + 0.25], rtol=1e-6)


def test_by_layer_names_the_state_arrays():
  layers = optax_swr.find_layers(HAIKU, ["linear", "layer_norm", "linear_1"])
  params = {k: v for k, v in HAIKU.items() if k != "linear_2"}
  state = optax_swr.swr(layers=layers).init(params)
  named = optax_swr.by_layer(state.reference_norms, layers)
  assert list(named) == ["linear", "layer_norm", "linear_1"]
  np.testing.assert_allclose(named["linear_1"], 8.0)
  with error("`values` has 3 entries but there are 2 layers"):
    optax_swr.by_layer(state.reference_norms, layers[:2])
  with error("`layers` must be optax_swr.Layer values"):
    optax_swr.by_layer(state.reference_norms, ["linear", "a", "b"])


def test_negative_reset_step_is_an_error():
  with error("`reset_norms_at` lists a negative step count (-1)"):
    optax_swr.swr(reset_norms_at=-1)


def test_haiku_chain_matches_the_float64_reference():
  """Haiku names (w/b, scale/offset) against tests/reference.py's oracle."""
  params = random_params(HAIKU, seed=4)
  order = ["linear", "layer_norm", "linear_1", "linear_2"]
  ref_layers = [
    reference.RefLayer((name, "w"), (name, "b"))
    if name.startswith("linear")
    else reference.RefLayer((name, "scale"), (name, "offset"), True)
    for name in order
  ]
  factors = np.array([0.5, 1.5, 2.0, 0.7])
  new, state = one_step(optax_swr.swr(0.3, layers=order), params, factors)
  flat = reference.flatten(params)
  expected, c, big_c = reference.swr_step(
    flat,
    ref_layers,
    np.array(reference.weight_norms(flat, ref_layers)) * factors,
    [0.3] * 4,
  )
  np.testing.assert_allclose(state.layer_scales, c, rtol=1e-6)
  np.testing.assert_allclose(state.cumulative_scales, big_c, rtol=1e-6)
  for path, value in reference.flatten(new).items():
    np.testing.assert_allclose(value, expected[path], rtol=1e-6, atol=1e-7)


def test_tree_map_params_with_a_classifier_and_layer_values():
  """optax's placeholder params have no layers; the classifier must not care."""
  layers = [optax_swr.Layer("w1", "b1"), optax_swr.Layer("w2", "b2")]
  tx = optax.chain(
    optax.adam(1e-3),
    optax_swr.swr(0.1, layers=layers, classifier=1, classifier_coef=0.2),
  )
  state = tx.init(PLAIN)
  mapped = optax.tree_map_params(tx, lambda p: p.astype(jnp.bfloat16), state)
  assert jax.tree.structure(mapped) == jax.tree.structure(state)
  assert optax.tree.get(mapped, "mu")["w1"].dtype == jnp.bfloat16
  assert optax.tree.get(mapped, "reference_norms").dtype == jnp.float32
