"""check_proportional reports large errors where SWR cannot keep the function."""

from __future__ import annotations

from collections.abc import Callable
import warnings

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import optax_swr
from tests import helpers

X = jax.random.normal(jax.random.key(0), (64, 8))
NAMES = ["Dense_0", "Dense_1", "Dense_2"]
PARAMS = helpers.mlp_params([8, 16, 16, 4])


def chain(params, x):
  return helpers.relu_mlp_apply(params, NAMES, x)


def residual(params, x):
  h = jax.nn.relu(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
  h = h + jax.nn.relu(
    h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
  )
  return h @ params["Dense_2"]["kernel"] + params["Dense_2"]["bias"]


def tanh_mlp(params, x):
  for i, name in enumerate(NAMES):
    x = x @ params[name]["kernel"] + params[name]["bias"]
    x = jnp.tanh(x) if i < len(NAMES) - 1 else x
  return x


def test_a_chain_is_reported_proportional():
  report = optax_swr.check_proportional(chain, PARAMS, None, X)
  assert report.relative_error < 1e-5
  assert report.argmax_agreement == 1.0
  assert abs(report.fitted_scale / report.predicted_scale - 1) < 1e-5
  assert report.error_without_epsilon is None  # no normalization layer


@pytest.mark.parametrize("apply_fn", [residual, tanh_mlp])
def test_residual_and_tanh_networks_are_reported_far_from_proportional(
  apply_fn,
):
  report = optax_swr.check_proportional(apply_fn, PARAMS, None, X)
  assert report.relative_error > 1e-2, report


def test_the_check_makes_zero_biases_non_zero_so_a_wrong_bias_shows():
  """A LayerNorm without scale that the layers leave out: wrong bias factor."""

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.Dense(16)(x)
      x = nn.LayerNorm(use_scale=False)(x)
      return nn.Dense(4)(nn.relu(x))

  module = Net()
  variables = module.init(jax.random.key(1), X)  # zero biases
  apply_fn = lambda p, x: module.apply({"params": p}, x)
  params = variables["params"]
  forgotten = [("Dense_0",), ("Dense_1",)]  # what name inference saw before
  clean = optax_swr.check_proportional(
    apply_fn, params, forgotten, X, bias_noise=0.0
  )
  noisy = optax_swr.check_proportional(apply_fn, params, forgotten, X)
  assert clean.relative_error < 1e-5  # zero biases hide the mistake
  assert noisy.relative_error > 1e-2
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    traced = optax_swr.layers_from_linen(module, variables, X)
  assert [layer.norm for layer in traced] == [False, True, False]
  report = optax_swr.check_proportional(apply_fn, params, traced, X)
  assert report.relative_error < 1e-4


class NormedNet(nn.Module):
  """Dense, activation, RMSNorm, Dense: the product restarts at the norm."""

  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x):
    x = self.activation(nn.Dense(16)(x))
    # After a ReLU some rows have a mean square not far above 1e-2.
    x = nn.RMSNorm(epsilon=1e-2)(x)
    return nn.Dense(4)(x)


def traced_normed_net(activation):
  module = NormedNet(activation)
  variables = module.init(jax.random.key(1), X)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optax_swr.ConstrainedLayersWarning)
    layers = optax_swr.layers_from_linen(module, variables, X)
  apply_fn = lambda p, x: module.apply({"params": p}, x)
  return apply_fn, variables["params"], layers


def inside_scan(apply_fn):
  def scanned(params, x):
    step = lambda carry, _: (carry, apply_fn(params, x))
    return jax.lax.scan(step, 0.0, None, length=1)[1][0]

  return scanned


@pytest.mark.parametrize(
  "wrap",
  [lambda f: f, jax.jit, jax.checkpoint, inside_scan],
  ids=["plain", "jit", "checkpoint", "scan"],
)
def test_the_epsilon_share_of_the_error_is_reported_apart(wrap):
  apply_fn, params, layers = traced_normed_net(nn.relu)
  report = optax_swr.check_proportional(wrap(apply_fn), params, layers, X)
  assert report.relative_error > 1e-3, report  # all of it the epsilon
  assert report.error_without_epsilon < 1e-5, report


def test_without_epsilon_the_error_of_a_wrong_layer_order_stays():
  """The chain rule across a tanh: SWR's own error, not the epsilon's."""
  apply_fn, params, layers = traced_normed_net(nn.tanh)
  exact = optax_swr.check_proportional(apply_fn, params, layers, X)
  assert exact.error_without_epsilon < 1e-5, exact
  chain_rule = optax_swr.check_proportional(
    apply_fn, params, layers.chain_rule(), X
  )
  assert chain_rule.error_without_epsilon > 1e-2, chain_rule


class EquinoxNormedNet(eqx.Module):
  first: eqx.nn.Linear
  norm: eqx.nn.LayerNorm
  last: eqx.nn.Linear

  def __init__(self, key):
    first_key, last_key = jax.random.split(key)
    self.first = eqx.nn.Linear(8, 16, key=first_key)
    self.norm = eqx.nn.LayerNorm(16, eps=1e-2)
    self.last = eqx.nn.Linear(16, 4, key=last_key)

  def __call__(self, x):
    return self.last(self.norm(jax.nn.relu(self.first(x))))


def test_equinox_layer_norm_epsilon_is_reported_apart():
  model = EquinoxNormedNet(jax.random.key(2))
  layers = optax_swr.layers_from_equinox(model, X[0])
  params, static = eqx.partition(model, eqx.is_inexact_array)
  apply_fn = lambda p, x: jax.vmap(eqx.combine(p, static))(x)
  report = optax_swr.check_proportional(apply_fn, params, layers, X)
  assert report.relative_error > 1e-3, report
  assert report.error_without_epsilon < 1e-5, report


def test_an_apply_fn_that_cannot_be_traced_gets_no_error_without_epsilon():
  def branching(params, x):
    if float(jnp.abs(x).max()) > 0:  # Python control flow on a value
      x = x * jax.lax.rsqrt(jnp.mean(x**2) + 1e-2)
    return chain(params, x)

  report = optax_swr.check_proportional(branching, PARAMS, None, X)
  assert report.relative_error < 1e-5
  assert report.error_without_epsilon is None
