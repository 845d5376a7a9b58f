"""check_proportional reports large errors where SWR cannot keep the function."""

from __future__ import annotations

import warnings

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
