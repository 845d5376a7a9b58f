"""Zero-initialised layers: left alone until they move, then rescaled.

A layer whose weight is 0 at ``init`` (a zero-init head, a residual branch's
last layer, a BatchNorm scale set to 0 as Flax's ResNet does, LoRA's B matrix)
has reference norm 0, and the paper's rule would pull it to 0 at every step
(with coef 1: wipe it). The rule optax_swr follows: such a layer gets c = 1,
so the factors of the layers after it are unchanged, until its norm first
becomes non-zero; that norm becomes its reference norm.
"""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_swr
from tests import helpers
from tests import reference


def _zero_head_params():
  params = helpers.mlp_params([4, 8, 6, 2], seed=3)
  params["Dense_2"] = {"kernel": jnp.zeros((6, 2)), "bias": jnp.zeros(2)}
  return params


def test_issue_example_head_is_not_wiped():
  """The issue's case: coef 1 used to zero the head and its bias each step."""
  params = {
    "Dense_0": {"kernel": jnp.ones((4, 8))},
    "Dense_1": {"kernel": jnp.zeros((8, 2)), "bias": jnp.zeros(2)},
  }
  tx = optax.chain(optax.sgd(0.1), optax_swr.swr(coef=1.0))
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, state = tx.update(grads, state, params)
  params = optax.apply_updates(params, updates)
  # The head moved to -0.1 everywhere (norm 0.4); c = 1 for it at this step.
  np.testing.assert_allclose(optax.tree.get(state, "layer_scales")[1], 1.0)
  np.testing.assert_allclose(
    optax.tree.get(state, "reference_norms"), [np.sqrt(32), 0.4], rtol=1e-6
  )
  np.testing.assert_allclose(params["Dense_1"]["kernel"], -0.1, rtol=1e-6)
  c0 = (np.sqrt(32) / np.linalg.norm(np.full((4, 8), 0.9))).item()
  np.testing.assert_allclose(params["Dense_1"]["bias"], -0.1 * c0, rtol=1e-6)
  # From now on the head is held at 0.4 (coef 1), not wiped.
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(
      jnp.linalg.norm(params["Dense_1"]["kernel"]), 0.4, rtol=1e-5
    )


@pytest.mark.parametrize("deferred", [False, True], ids=["chain", "deferred"])
@pytest.mark.parametrize("coef", [1.0, 0.1])
def test_zero_head_follows_the_float64_reference(coef, deferred):
  """Adam + SWR with a zero-initialised head, step by step against float64."""
  params = _zero_head_params()
  names = list(params)
  layers = [reference.RefLayer((n, "kernel"), (n, "bias")) for n in names]
  swr = optax_swr.swr(coef=coef, deferred=deferred)
  tx = optax.chain(optax.adam(1e-2), swr)
  target, noise = helpers.pulling_grads(params, steps=6)
  history, state = helpers.train(tx, params, target, noise, deferred=deferred)
  ref_history = reference.train(
    reference.flatten(params),
    layers,
    helpers.reference_grad_fn(target, noise),
    steps=6,
    coefs_at=lambda _: [coef] * len(layers),
  )
  for step, (ours, expected) in enumerate(zip(history, ref_history)):
    for key, value in reference.flatten(ours).items():
      np.testing.assert_allclose(
        value, expected[key], rtol=2e-5, atol=2e-6, err_msg=f"{step} {key}"
      )
  # The head's reference norm is its norm after the first step, not 0.
  head_after_first = np.linalg.norm(
    reference.flatten(history[0])[("Dense_2", "kernel")]
  )
  np.testing.assert_allclose(
    optax.tree.get(state, "reference_norms")[2], head_after_first, rtol=1e-5
  )


def test_zero_layer_that_never_moves_stays_unscaled():
  """c = 1 for it, so its bias and every later bias keep the chain's C."""
  params = _zero_head_params()
  params["Dense_3"] = {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}
  tx = optax_swr.swr(coef=0.5)
  state = tx.init(params)
  grown = jax.tree.map(lambda p: 2.0 * p, params)
  updates, state = tx.update(jax.tree.map(jnp.zeros_like, grown), state, grown)
  c = np.asarray(optax.tree.get(state, "layer_scales"))
  np.testing.assert_allclose(c, [0.75, 0.75, 1.0, 0.75], rtol=1e-6)
  np.testing.assert_allclose(
    optax.tree.get(state, "cumulative_scales"),
    np.cumprod(c),
    rtol=1e-6,
  )
  assert optax.tree.get(state, "reference_norms")[2] == 0.0


class ZeroInitResidual(nn.Module):
  """A residual block whose BatchNorm scale starts at 0 (Flax's ResNet), one
  whose branch output layer starts at 0 (GPT-2, ReZero), a zero-init head."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(16, name="embed")(x)
    h = nn.relu(nn.Dense(32, name="up_0")(x))
    h = nn.Dense(16, name="down_0")(h)
    zero_scale = nn.initializers.zeros
    bn = nn.BatchNorm(use_running_average=False, scale_init=zero_scale)
    x = x + bn(h)
    h = nn.relu(nn.Dense(32, name="up_1")(x))
    x = x + nn.Dense(16, name="down_1", kernel_init=nn.initializers.zeros)(h)
    return nn.Dense(
      3, name="head", kernel_init=nn.initializers.zeros, use_bias=False
    )(nn.relu(x))


@pytest.mark.parametrize("deferred", [False, True], ids=["chain", "deferred"])
@pytest.mark.parametrize("coef", [1.0, 0.1])
def test_traced_residual_net_with_zero_init_branches_stays_finite(
  coef, deferred
):
  """It turned every parameter into NaN at the first step (log 0 in the
  projection). Now the loss and params stay finite, and each SWR step keeps
  the function (checked with zero base updates at the end)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(32, 8)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, size=32))
  model = ZeroInitResidual()
  variables = model.init(jax.random.key(0), x)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optax_swr.ConstrainedLayersWarning)
    layers = optax_swr.layers_from_linen(model, variables, x)
  assert layers.graph is not None  # the residual merges are equations
  swr = optax_swr.swr(coef=coef, layers=layers, deferred=deferred)
  tx = optax.chain(optax.adam(1e-2), swr)
  stats = variables["batch_stats"]

  def apply_fn(params, x):
    out, _ = model.apply(
      {"params": params, "batch_stats": stats}, x, mutable=["batch_stats"]
    )
    return out

  def loss_fn(params):
    logits = apply_fn(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    if deferred:
      params, state = optax_swr.rescale_params(params, state)
    return params, state, loss

  params, state = variables["params"], tx.init(variables["params"])
  losses = []
  for _ in range(5):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses)), losses
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))
  assert np.all(np.isfinite(optax.tree.get(state, "reference_norms")))
  assert losses[-1] < losses[0]
  # Every layer moved off 0, so every reference norm is now positive.
  assert np.all(optax.tree.get(state, "reference_norms") > 0)

  # Exactness from here: SWR steps with zero updates keep the logits
  # proportional (BatchNorm in training mode: up to its epsilon).
  swr_only = optax_swr.swr(coef=coef, layers=layers)
  pushed = helpers.pushed_off(params, layers)
  _, logits = helpers.swr_steps(
    swr_only, apply_fn, pushed, swr_only.init(params), x, steps=5
  )
  first = np.asarray(logits[0], np.float64).ravel()
  for later in np.asarray(logits[1:], np.float64):
    later = later.ravel()
    scale = later @ first / (first @ first)
    error = np.abs(later - scale * first).max() / np.abs(scale * first).max()
    assert error < 1e-4, error
