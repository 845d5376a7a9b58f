"""Layer resolution: paths, order inference and the errors for bad layers."""

from __future__ import annotations

import re

import flax
import jax.numpy as jnp
import pytest

import optax_swr


def leaf(*shape):
  return jnp.ones(shape)


def inferred_paths(params):
  return [layer.path for layer in optax_swr.find_layers(params)]


def test_numbered_names_are_ordered_numerically_not_alphabetically():
  params = {
    f"Dense_{i}": {"kernel": leaf(2, 2), "bias": leaf(2)} for i in range(12)
  }
  assert inferred_paths(params) == [(f"Dense_{i}",) for i in range(12)]


def test_nested_and_list_layers_are_ordered_at_every_level():
  params = {
    "backbone": {
      "blocks": [{"conv": {"kernel": leaf(3, 3)}} for _ in range(11)]
    }
  }
  assert inferred_paths(params) == [
    ("backbone", "blocks", i, "conv") for i in range(11)
  ]


def test_frozen_dict_and_names_without_underscore():
  params = flax.core.freeze(
    {"layer10": {"kernel": leaf(2, 2)}, "layer2": {"kernel": leaf(2, 2)}}
  )
  assert inferred_paths(params) == [("layer2",), ("layer10",)]


def test_resolved_layer_records_weight_bias_and_norm():
  params = {
    "a": {"kernel": leaf(2, 2), "bias": leaf(2)},
    "b": {"scale": leaf(2), "bias": leaf(2)},
    "c": {"embedding": leaf(4, 2)},
  }
  a, b, c = optax_swr.find_layers(params, ["a", "b", "c"])
  assert a == optax_swr.Layer(("a", "kernel"), ("a", "bias"), path=("a",))
  assert b == optax_swr.Layer(("b", "scale"), ("b", "bias"), norm=True)
  assert c == optax_swr.Layer(("c", "embedding"))
  assert (c.path, c.bias, c.norm) == (("c",), None, False)


def test_leaves_outside_the_layers_are_left_alone():
  params = {
    "Dense_0": {"kernel": leaf(2, 2), "bias": leaf(2)},
    "Dense_1": {"kernel": leaf(2, 2)},
    "temperature": jnp.array(2.0),
  }
  tx = optax_swr.swr(coef=1.0, layers=["Dense_1"])
  state = tx.init(params)
  grads = {
    "Dense_0": {"kernel": leaf(2, 2), "bias": leaf(2)},
    "Dense_1": {"kernel": leaf(2, 2)},
    "temperature": jnp.array(0.5),
  }
  updates, _ = tx.update(grads, state, params)
  assert (updates["Dense_0"]["kernel"] == 1).all()
  assert (updates["Dense_0"]["bias"] == 1).all()
  assert updates["temperature"] == 0.5
  # coef=1 pins Dense_1 at its reference norm: p + u' = p.
  assert jnp.allclose(updates["Dense_1"]["kernel"], 0.0, atol=1e-6)


def error(match_text):
  return pytest.raises(ValueError, match=re.escape(match_text))


LINEN_LIKE = {
  "Conv_0": {"kernel": leaf(3, 3, 1, 2)},
  "BatchNorm_0": {"scale": leaf(2), "bias": leaf(2)},
  "Dense_0": {"kernel": leaf(2, 2), "bias": leaf(2)},
}


def test_ambiguous_layer_types_raise_and_tell_how_to_pass_layers():
  with error("cannot infer the forward order") as info:
    optax_swr.swr().init(LINEN_LIKE)
  message = str(info.value)
  assert "['BatchNorm_0', 'Conv_0', 'Dense_0'] at the root" in message
  assert "layers=[('Conv_0',)" in message
  assert "optax_swr.layers_from_linen(module, variables, x)" in message
  assert "layers_from_nnx(model, x)" in message
  assert "layers_from_equinox(model, x)" in message
  assert "('BatchNorm_0',)" in message  # the layers found are listed


def test_explicit_layers_resolve_the_ambiguity():
  layers = [("Conv_0",), ("BatchNorm_0",), ("Dense_0",)]
  state = optax_swr.swr(layers=layers).init(LINEN_LIKE)
  assert state.reference_norms.shape == (3,)


def test_a_layer_that_contains_layers_is_ambiguous():
  params = {"block": {"kernel": leaf(2, 2), "inner": {"kernel": leaf(2, 2)}}}
  with error("('block',) is a layer and also contains layers"):
    optax_swr.swr().init(params)


def test_repeated_numbers_are_ambiguous():
  params = {"dense1": {"kernel": leaf(2, 2)}, "dense_1": {"kernel": leaf(2, 2)}}
  with error("are not one name with distinct numbers"):
    optax_swr.swr().init(params)


def test_a_tree_without_layers_raises():
  with error("has no layer with a weight leaf named kernel, embedding, w"):
    optax_swr.swr().init({"x": leaf(2, 2), "y": {"z": leaf(2)}})


def test_path_not_in_tree_names_the_path_and_lists_layers():
  with error(
    "the path ('Dense_9',) in `layers` is not in the params tree"
  ) as e:
    optax_swr.swr(layers=[("Dense_9",)]).init(LINEN_LIKE)
  assert "('Conv_0',)" in str(e.value)


def test_path_to_a_leaf_is_rejected():
  with error(
    "('Dense_0', 'kernel') in `layers` points to a leaf, not to a layer"
  ):
    optax_swr.swr(layers=[("Dense_0", "kernel")]).init(LINEN_LIKE)


def test_layer_without_weight_is_rejected():
  params = {"Dense_0": {"kernel": leaf(2, 2)}, "head": {"bias": leaf(2)}}
  with error("the sub-tree ('head',) has a bias ('bias') but no weight"):
    optax_swr.swr(layers=["Dense_0", "head"]).init(params)


def test_layer_with_two_weights_is_rejected():
  params = {"odd": {"kernel": leaf(2, 2), "scale": leaf(2)}}
  with error(
    "the layer ('odd',) has the leaves ['kernel', 'scale'], more than one"
  ):
    optax_swr.swr(layers=["odd"]).init(params)


@pytest.mark.parametrize(
  "layers, message",
  [
    ("Dense_0", "`layers` must be a sequence of layers in forward order"),
    ([], "`layers` is empty"),
    ([()], "must be an optax_swr.Layer or a non-empty tuple of keys"),
    ([3], "must be an optax_swr.Layer or a non-empty tuple of keys"),
    ([("a",), ["a"]], "lists the layer ('a',) more than once"),
  ],
)
def test_malformed_layers_argument(layers, message):
  with error(message):
    optax_swr.swr(layers=layers)


def actor_critic_params():
  """Two hidden layers, then a policy head (Dense_2) and a value head
  (Dense_3) on the same features: numbered like a chain, but not one."""
  return {
    "Dense_0": {"kernel": leaf(4, 64), "bias": leaf(64)},
    "Dense_1": {"kernel": leaf(64, 64), "bias": leaf(64)},
    "Dense_2": {"kernel": leaf(64, 2), "bias": leaf(2)},
    "Dense_3": {"kernel": leaf(64, 1), "bias": leaf(1)},
  }


def test_name_inference_refuses_two_heads_whose_shapes_do_not_connect():
  """They were scaled as a chain: 3.5% error, no warning."""
  expected = re.escape(
    "do not form a chain: 'Dense_3' takes 64 features but 'Dense_2' before "
    "it gives 2"
  )
  with pytest.raises(ValueError, match=expected + ".*Trace the model"):
    optax_swr.find_layers(actor_critic_params())
  with pytest.raises(ValueError, match=expected):
    optax_swr.swr(1e-3).init(actor_critic_params())


def test_a_hand_list_of_two_heads_warns_by_name():
  layers = [("Dense_0",), ("Dense_1",), ("Dense_2",), ("Dense_3",)]
  with pytest.warns(
    optax_swr.NotAChainWarning,
    match=re.escape("'Dense_3' takes 64 features but 'Dense_2'"),
  ) as caught:
    optax_swr.swr(1e-3, layers=layers).init(actor_critic_params())
  assert caught[0].filename == __file__


def test_shapes_that_connect_pass_conv_to_dense_is_not_checked():
  params = {
    "Conv_0": {"kernel": leaf(3, 3, 1, 8), "bias": leaf(8)},
    "Conv_1": {"kernel": leaf(3, 3, 8, 16), "bias": leaf(16)},
    "Dense_0": {"kernel": leaf(16 * 25, 32), "bias": leaf(32)},
    "Dense_1": {"kernel": leaf(32, 10), "bias": leaf(10)},
  }
  params = {"layers": [params[k] for k in params]}  # numbered by the list
  assert len(optax_swr.find_layers(params)) == 4
  params["layers"][1]["kernel"] = leaf(3, 3, 4, 16)
  with pytest.raises(ValueError, match="'layers/1' takes 4 features"):
    optax_swr.find_layers(params)


def test_a_norm_scale_between_dense_layers_carries_their_width():
  params = {
    "layers_0": {"kernel": leaf(4, 8), "bias": leaf(8)},
    "layers_1": {"scale": leaf(8), "bias": leaf(8)},
    "layers_2": {"kernel": leaf(8, 3), "bias": leaf(3)},
  }
  assert len(optax_swr.find_layers(params)) == 3
  params["layers_2"]["kernel"] = leaf(5, 3)
  with pytest.raises(ValueError, match="'layers_2' takes 5 features"):
    optax_swr.find_layers(params)
