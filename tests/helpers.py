"""Small param trees and training loops shared by the tests."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_swr
from tests import reference


def dense(rng: np.random.Generator, fan_in: int, fan_out: int, scale=1.0):
  return {
    "kernel": scale * rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in),
    "bias": 0.1 * rng.normal(size=(fan_out,)),
  }


def layer_norm(rng: np.random.Generator, width: int):
  return {
    "scale": 1.0 + 0.1 * rng.normal(size=(width,)),
    "bias": 0.1 * rng.normal(size=(width,)),
  }


def mlp_params(widths, seed=0, names=None, dtype=jnp.float32) -> dict:
  """Dense layers named Dense_0, Dense_1, ... (or `names`) as a dict tree."""
  rng = np.random.default_rng(seed)
  names = names or [f"Dense_{i}" for i in range(len(widths) - 1)]
  tree = {
    name: dense(rng, fan_in, fan_out)
    for name, fan_in, fan_out in zip(names, widths[:-1], widths[1:])
  }
  return to_jax(tree, dtype)


def to_jax(tree, dtype=jnp.float32):
  return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)


def pulling_grads(params, steps: int, seed: int = 1):
  """Targets and per-step noise for grads g_t = p - target + noise_t.

  The targets are larger than the init, so plain Adam grows the weights and
  SWR has something to pull back.
  """
  rng = np.random.default_rng(seed)
  target = jax.tree.map(lambda p: 3.0 * rng.normal(size=p.shape), params)
  noise = [
    jax.tree.map(lambda p: 0.5 * rng.normal(size=p.shape), params)
    for _ in range(steps)
  ]
  return target, noise


def train(
  tx: optax.GradientTransformation,
  params,
  target,
  noise,
  state=None,
  deferred=False,
):
  """Runs tx on g_t = p - target + noise_t; returns every step's params.

  With ``deferred``, each step ends with ``optax_swr.rescale_params`` (build
  ``tx`` with ``swr(..., deferred=True)``).
  """
  state = tx.init(params) if state is None else state

  @jax.jit
  def step(params, state, noise_t):
    grads = jax.tree.map(
      lambda p, t, n: p - t.astype(p.dtype) + n.astype(p.dtype),
      params,
      target,
      noise_t,
    )
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    if deferred:
      return optax_swr.rescale_params(params, state)
    return params, state

  history = []
  for noise_t in noise:
    params, state = step(params, state, noise_t)
    history.append(params)
  return history, state


def reference_grad_fn(target, noise):
  """The numpy float64 twin of the grads used by `train`."""
  flat_target = reference.flatten(target)
  flat_noise = [reference.flatten(n) for n in noise]
  return lambda p, t: {k: p[k] - flat_target[k] + flat_noise[t][k] for k in p}


def relu_mlp_apply(params, names, x, eps=1e-12):
  """A ReLU MLP over dict params; layers with a `scale` are LayerNorms."""
  for i, name in enumerate(names):
    layer = params[name]
    if "scale" in layer:
      mean = x.mean(-1, keepdims=True)
      var = ((x - mean) ** 2).mean(-1, keepdims=True)
      x = (x - mean) / jnp.sqrt(var + eps) * layer["scale"] + layer["bias"]
      continue
    x = x @ layer["kernel"] + layer["bias"]
    if i < len(names) - 1:
      x = jax.nn.relu(x)
  return x


def random_like(params, seed, scale=1.0):
  """Normal noise shaped and typed like `params` (e.g. gradients)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda p: jnp.asarray(scale * rng.normal(size=p.shape), p.dtype), params
  )


def assert_trees_close(a, b, rtol=1e-6, atol=1e-6):
  """Same tree structure and leafwise close values, compared in float32."""
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(
      np.asarray(x, np.float32), np.asarray(y, np.float32), rtol=rtol, atol=atol
    ),
    a,
    b,
  )


def swr_steps(tx, apply_fn, params, state, x, steps=30):
  """``steps`` SWR steps with zero base updates, in one compiled scan.

  Returns the final params and the logits before and after each step,
  ``[steps + 1, *logits.shape]``.
  """

  def step(carry, _):
    params, state = carry
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, state = tx.update(zeros, state, params)
    params = optax.apply_updates(params, updates)
    return (params, state), apply_fn(params, x)

  @jax.jit
  def run(params, state):
    first = apply_fn(params, x)
    (params, _), logits = jax.lax.scan(step, (params, state), length=steps)
    return params, jnp.concatenate([first[None], logits])

  return run(params, state)


def pushed_off(params, layers, seed=0):
  """Each layer's weight (or slice of a stacked one) times a random factor
  in [1/3, 3], its bias replaced by random values: weights off their
  initial norms, biases non-zero."""
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree.flatten(params)
  paths = optax_swr._layers.leaf_paths(params)  # noqa: SLF001
  index = {path: i for i, path in enumerate(paths)}
  for layer in layers:
    if layer.weight is not None:
      i = index[layer.weight]
      factor = np.exp(rng.uniform(np.log(1 / 3), np.log(3)))
      leaves[i] = leaves[i].at[layer.index].multiply(factor)
    if layer.bias is not None:
      i = index[layer.bias]
      noise = rng.normal(0, 0.5, leaves[i][layer.index].shape)
      leaves[i] = leaves[i].at[layer.index].set(noise)
  return jax.tree.unflatten(treedef, leaves)


@functools.cache
def normalized_model(name: str) -> tuple[dict, optax_swr.Layers]:
  """The params and traced layers of a small zoo model with normalization.

  ``"layer_norm_mlp"``: Dense -> LayerNorm -> ReLU twice, then a Dense head
  (``hidden_0``, ``norms_0``, ``hidden_1``, ``norms_1``, ``head``);
  ``"cnn_bn"``: conv -> BatchNorm -> ReLU twice, then ``fc1`` and ``head``.
  """
  # pylint: disable-next=g-import-not-at-top
  from examples.models import linen as models_linen

  if name == "layer_norm_mlp":
    module = models_linen.LayerNormMLP(hidden=(4, 4), num_classes=2)
    x = jnp.ones((2, 3))
    variables = module.init(jax.random.key(0), x)
  else:
    module, variables = models_linen.create(name, 2, (8, 8, 1), width=2)
    x = jnp.ones((1, 8, 8, 1))
  layers = optax_swr.layers_from_linen(module, variables, x, train=True)
  return variables["params"], layers
