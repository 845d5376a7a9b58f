"""A traced network is a value: editing it keeps its equations, losing them
raises.

``Layers`` used to be a tuple carrying the equations in an attribute: a
``list()``, a slice or a comprehension (the FAQ's own recipe for a per-layer
coefficient) silently returned plain layers, and on the FAQ's ResidualMLP the
output then changed by 0.30.
"""

from __future__ import annotations

import dataclasses
import re
import warnings

from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_swr
from tests import helpers


class ResidualMLP(nn.Module):
  """The FAQ's residual net."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(32, name="embed")(x)
    x = x + nn.Dense(32, name="block")(nn.relu(x))
    x = x + nn.Dense(32, name="out")(nn.relu(nn.Dense(64, name="mlp")(x)))
    return nn.Dense(10, name="head")(nn.relu(x))


class Chain(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(16, name="first")(x))
    return nn.Dense(4, name="head")(nn.relu(nn.Dense(16, name="second")(x)))


X = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)


def traced(module):
  variables = module.init(jax.random.key(0), X)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optax_swr.ConstrainedLayersWarning)
    layers = optax_swr.layers_from_linen(module, variables, X)
  apply_fn = jax.jit(lambda p, x: module.apply({"params": p}, x))
  return layers, variables["params"], apply_fn


def one_step(tx, params, layers):
  """From ``params`` with every layer's norm pushed off (references: the
  norms of ``params``) and random biases, one update with zero gradients:
  only SWR moves the params. Returns the params before and after it."""
  state = tx.init(params)
  pushed = helpers.pushed_off(params, layers)
  zeros = jax.tree.map(jnp.zeros_like, pushed)
  updates, _ = tx.update(zeros, state, pushed)
  return pushed, optax.apply_updates(pushed, updates)


def proportional_error(apply_fn, before, after):
  first = np.asarray(apply_fn(before, X), np.float64).ravel()
  later = np.asarray(apply_fn(after, X), np.float64).ravel()
  scale = later @ first / (first @ first)
  return np.abs(later - scale * first).max() / np.abs(scale * first).max()


EDITS = {
  "list": list,
  "slice": lambda layers: layers[:-1],
  "comprehension": lambda layers: [
    dataclasses.replace(layer, coef=0.0) if layer.name == "head" else layer
    for layer in layers
  ],
}


@pytest.mark.parametrize("edit", EDITS)
def test_plain_lists_of_a_non_chain_raise_with_the_fix(edit):
  layers, _, _ = traced(ResidualMLP())
  assert layers.graph is not None
  with pytest.raises(
    ValueError,
    match=re.escape("`layers` is a list of layers from layers_from_linen")
    + ".*layers.with_coef.*layers.without.*layers.restrict_to.*"
    "layers.chain_rule",
  ):
    optax_swr.swr(0.1, layers=EDITS[edit](layers))


def test_a_function_returning_a_plain_list_raises_and_one_returning_layers_works():
  layers, params, apply_fn = traced(ResidualMLP())
  with pytest.raises(ValueError, match="drops the equations"):
    optax_swr.swr(0.5, layers=lambda _: list(layers)).init(params)
  tx = optax_swr.swr(0.5, layers=lambda _: layers)
  before, after = one_step(tx, params, layers)
  assert proportional_error(apply_fn, before, after) < 1e-5


def test_with_coef_keeps_the_equations_and_leaves_a_zero_coef_weight_alone():
  layers, params, apply_fn = traced(ResidualMLP())
  edited = layers.with_coef({"head": 0.0, "block": 0.2})
  assert edited.graph is layers.graph
  assert [layer.coef for layer in edited] == [None, 0.2, None, None, 0.0]
  before, after = one_step(optax_swr.swr(0.5, layers=edited), params, layers)
  assert proportional_error(apply_fn, before, after) < 1e-5
  np.testing.assert_array_equal(
    after["head"]["kernel"], before["head"]["kernel"]
  )
  assert not np.allclose(after["mlp"]["kernel"], before["mlp"]["kernel"])
  # The old behaviour: the same coefficients as a plain list, chain rule.
  chain_rule = optax_swr.swr(0.5, layers=edited.chain_rule())
  before, wrong = one_step(chain_rule, params, layers)
  assert proportional_error(apply_fn, before, wrong) > 0.05


@pytest.mark.parametrize("module", [ResidualMLP, Chain])
def test_without_leaves_the_layer_untouched_and_keeps_the_function(module):
  layers, params, apply_fn = traced(module())
  edited = layers.without("head")
  assert "head" not in edited.names and len(edited) == len(layers) - 1
  before, after = one_step(optax_swr.swr(0.5, layers=edited), params, layers)
  for leaf in ("kernel", "bias"):
    np.testing.assert_array_equal(after["head"][leaf], before["head"][leaf])
  assert proportional_error(apply_fn, before, after) < 1e-5
  # Some layer still moves: leaving the head out constrains, not freezes.
  moved = [
    name
    for name in edited.names
    if not np.allclose(after[name]["kernel"], before[name]["kernel"])
  ]
  assert moved, "SWR rescaled nothing"


def test_a_chain_list_is_fine_whole_and_raises_when_a_layer_is_missing():
  layers, params, apply_fn = traced(Chain())
  assert layers.graph is None
  tx = optax_swr.swr(0.5, layers=list(layers))
  before, after = one_step(tx, params, layers)
  assert proportional_error(apply_fn, before, after) < 1e-5
  with pytest.raises(ValueError, match=r"missing: \['head'\]"):
    optax_swr.swr(0.5, layers=list(layers)[:-1])


def test_chain_rule_is_the_explicit_opt_in():
  layers, params, apply_fn = traced(ResidualMLP())
  chain_rule = layers.chain_rule()
  assert chain_rule.graph is None and chain_rule.chain_rule_only
  assert repr(chain_rule).endswith("chain_rule_only=True)")
  tx = optax_swr.swr(0.5, layers=chain_rule)
  before, after = one_step(tx, params, layers)
  assert proportional_error(apply_fn, before, after) > 0.05


def test_repr_shows_the_names_and_the_equations():
  layers, _, _ = traced(ResidualMLP())
  assert repr(layers) == (
    "Layers(['embed', 'block', 'mlp', 'out', 'head'], equations="
    f"{len(layers.graph.constraints)})"
  )
  assert repr(traced(Chain())[0]) == "Layers(['first', 'second', 'head'])"


def test_unknown_names_list_the_layers():
  layers, _, _ = traced(Chain())
  with pytest.raises(ValueError, match=r"no layer is named 'nope'.*'first'"):
    layers.without("nope")


class NnxResidual(nnx.Module):
  def __init__(self, rngs):
    self.embed = nnx.Linear(16, 32, rngs=rngs)
    self.mlp = nnx.Linear(32, 64, rngs=rngs)
    self.out = nnx.Linear(64, 32, rngs=rngs)
    self.head = nnx.Linear(32, 10, rngs=rngs)

  def __call__(self, x):
    x = self.embed(x)
    x = x + self.out(nnx.relu(self.mlp(x)))
    return self.head(nnx.relu(x))


def test_restrict_to_the_params_an_nnx_optimizer_trains():
  """wrt= leaves the MLP's second layer out: it keeps its weight and bias,
  and the others are rescaled so that the function is kept."""
  model = NnxResidual(nnx.Rngs(0))
  layers = optax_swr.layers_from_nnx(model, X)
  graphdef, params = nnx.split(model, nnx.Param)
  wrt = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("out")))
  trained = nnx.state(model, wrt)
  restricted = layers.restrict_to(trained)
  assert restricted.names == ("embed", "mlp", "head")
  tx = optax_swr.swr(0.5, layers=restricted)
  optimizer = nnx.Optimizer(model, tx, wrt=wrt)
  nnx.update(model, helpers.pushed_off(nnx.to_pure_dict(params), layers))
  apply_fn = lambda p, x: nnx.merge(graphdef, p)(x)
  before = nnx.state(model, nnx.Param)
  out_before = jax.tree.map(jnp.array, nnx.to_pure_dict(before)["out"])
  optimizer.update(model, jax.tree.map(jnp.zeros_like, trained))
  after = nnx.state(model, nnx.Param)
  out_after = nnx.to_pure_dict(after)["out"]
  jax.tree.map(np.testing.assert_array_equal, out_after, out_before)
  assert proportional_error(apply_fn, before, after) < 1e-5
  # Without restricting, swr cannot even find the layers in the params.
  with pytest.raises(ValueError, match="not a leaf of the params"):
    nnx.Optimizer(model, optax_swr.swr(0.5, layers=layers), wrt=wrt)


def test_restrict_to_params_without_any_layer_raises():
  model = NnxResidual(nnx.Rngs(0))
  layers = optax_swr.layers_from_nnx(model, X)
  with pytest.raises(ValueError, match="holds none of the traced layers"):
    layers.restrict_to({"something": {"else": jnp.ones(2)}})


def test_an_empty_layers_value_is_an_error_not_a_no_op():
  with pytest.raises(ValueError, match="`layers` is empty"):
    optax_swr.swr(0.1, layers=optax_swr.Layers(()))


def test_the_projection_is_computed_once_not_at_every_trace(monkeypatch):
  """The pseudo-inverse belongs to the traced network: neither a second
  trace of update (another jit, another shape of batch) nor an eager call
  computes it again."""
  from optax_swr import _homogeneity

  layers, params, _ = traced(ResidualMLP())
  calls = []
  pinv = _homogeneity.projection
  monkeypatch.setattr(
    _homogeneity, "projection", lambda *args: calls.append(1) or pinv(*args)
  )
  tx = optax.chain(
    optax.sgd(0.1),
    optax_swr.swr(0.1, layers=layers, classifier=1, classifier_coef=0.0),
  )
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  for update in (tx.update, jax.jit(tx.update), jax.jit(tx.update)):
    updates, _ = update(grads, state, params)
  assert len(calls) == 1
  # The head's coefficient 0 is in that one projection: its weight is kept.
  head = optax.apply_updates(params, updates)["head"]["kernel"]
  np.testing.assert_allclose(head, params["head"]["kernel"] - 0.1, rtol=1e-6)
