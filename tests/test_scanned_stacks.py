"""Scanned stacks: every slice of an ``nn.scan`` / ``nnx.scan`` stack is a layer.

Large models are written as one block scanned over stacked params. SWR must
rescale each block on its own (its norm, its factor, its biases' cumulative
factor) and keep the function through the scan; these tests check it from
weights pushed off their initial norms, against the best function-preserving
rescaling (computed from the Jacobian, independently of the tracer), and show
that treating the stack as one layer breaks the function.
"""

from __future__ import annotations

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

eqx = pytest.importorskip("equinox")  # installed by `make test`

STEPS = 30
DEPTH = 3


class LinenBlock(nn.Module):
  """Pre-LN residual block: x + W2 relu(W1 LN(x))."""

  @nn.compact
  def __call__(self, x, _):
    h = nn.relu(nn.Dense(16)(nn.LayerNorm()(x)))
    return x + nn.Dense(8)(h), None


class LinenChainBlock(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return nn.relu(nn.Dense(8)(x)), None


class LinenStack(nn.Module):
  block: type = LinenBlock

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(8)(x)
    stack = nn.scan(
      self.block,
      variable_axes={"params": 0},
      split_rngs={"params": True},
      length=DEPTH,
    )
    x, _ = stack(name="stack")(x, None)
    return nn.Dense(4)(nn.relu(x))


class NnxBlock(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(8, rngs=rngs)
    self.up = nnx.Linear(8, 16, rngs=rngs)
    self.down = nnx.Linear(16, 8, rngs=rngs)

  def __call__(self, x):
    return x + self.down(nnx.relu(self.up(self.norm(x))))


class NnxStack(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.embed = nnx.Linear(5, 8, rngs=rngs)

    @nnx.split_rngs(splits=DEPTH)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make_blocks(rngs):
      return NnxBlock(rngs)

    self.blocks = make_blocks(rngs)
    self.head = nnx.Linear(8, 4, rngs=rngs)

  def __call__(self, x):
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def run(x, block):
      return block(x)

    return self.head(nnx.relu(run(self.embed(x), self.blocks)))


class EqxBlock(eqx.Module):
  norm: eqx.nn.LayerNorm
  up: eqx.nn.Linear
  down: eqx.nn.Linear

  def __init__(self, key):
    up, down = jax.random.split(key)
    self.norm = eqx.nn.LayerNorm(8)
    self.up = eqx.nn.Linear(8, 16, key=up)
    self.down = eqx.nn.Linear(16, 8, key=down)

  def __call__(self, x):
    return x + self.down(jax.nn.relu(self.up(self.norm(x))))


class EqxStack(eqx.Module):
  """The Equinox way: blocks built by filter_vmap, run by lax.scan."""

  embed: eqx.nn.Linear
  blocks: EqxBlock
  head: eqx.nn.Linear

  def __init__(self, key):
    embed, blocks, head = jax.random.split(key, 3)
    self.embed = eqx.nn.Linear(5, 8, key=embed)
    self.blocks = eqx.filter_vmap(EqxBlock)(jax.random.split(blocks, DEPTH))
    self.head = eqx.nn.Linear(8, 4, key=head)

  def __call__(self, x):
    dynamic, static = eqx.partition(self.blocks, eqx.is_array)

    def run(h, block_params):
      return eqx.combine(block_params, static)(h), None

    h, _ = jax.lax.scan(run, self.embed(x), dynamic)
    return self.head(jax.nn.relu(h))


def traced(name):
  """(params, apply_fn, layers, x) of a scanned model, traced quietly."""
  x = jax.random.normal(jax.random.key(0), (12, 5))
  with warnings.catch_warnings():
    warnings.simplefilter("error", optax_swr.NotAChainWarning)
    if name == "equinox":
      model = EqxStack(jax.random.key(1))
      batched = lambda m, x: jax.vmap(m)(x)
      layers = optax_swr.layers_from_equinox(model, x, apply=batched)
      params, static = eqx.partition(model, eqx.is_inexact_array)
      return params, lambda p, x: batched(eqx.combine(p, static), x), layers, x
    if name == "nnx":
      model = NnxStack(nnx.Rngs(1))
      layers = optax_swr.layers_from_nnx(model, x)
      graphdef, params = nnx.split(model, nnx.Param)
      return params, lambda p, x: nnx.merge(graphdef, p)(x), layers, x
    module = LinenStack(
      LinenChainBlock if name == "linen_chain" else LinenBlock
    )
    variables = module.init(jax.random.key(1), x)
    layers = optax_swr.layers_from_linen(module, variables, x)
  apply_fn = lambda p, x: module.apply({"params": p}, x)
  return variables["params"], apply_fn, layers, x


def coordinates(params, layers):
  """Every (leaf, slice) a layer's weight or bias occupies, in a fixed order."""
  paths = optax_swr._layers.leaf_paths(params)  # noqa: SLF001
  index = {path: i for i, path in enumerate(paths)}
  return [
    (index[path], layer.index)
    for layer in layers
    for path in (layer.weight, layer.bias)
    if path is not None
  ]


def scaled(leaves, coords, log_factors):
  """The leaves with slice ``coords[k]`` multiplied by exp(log_factors[k])."""
  leaves = list(leaves)
  for (i, index), u in zip(coords, log_factors):
    leaves[i] = leaves[i].at[index].multiply(jnp.exp(u))
  return leaves


def log_distance(params, layers, references):
  norms = np.asarray(optax_swr.metrics.layer_norms(params, list(layers)))
  return np.log(norms / references)


def best_reachable(apply_fn, params, layers, x, d):
  """min ||d + Δ||² over function-preserving changes Δ of the log-norms.

  The per-slice log-scales that keep the normalized output form the null
  space of its Jacobian at 0 (float64); their weight coordinates are the
  reachable changes of the layers' log-norms.
  """
  coords = coordinates(params, layers)
  paths = optax_swr._layers.leaf_paths(params)  # noqa: SLF001
  weight_rows = [
    coords.index((paths.index(layer.weight), layer.index)) for layer in layers
  ]
  with jax.enable_x64(True):
    leaves, treedef = jax.tree.flatten(
      jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    )
    x64 = jnp.asarray(x, jnp.float64)

    def normalized(u):
      new = jax.tree.unflatten(treedef, scaled(leaves, coords, u))
      out = apply_fn(new, x64).ravel()
      return out / jnp.linalg.norm(out)

    jacobian = np.asarray(jax.jacfwd(normalized)(jnp.zeros(len(coords))))
  _, singular, vt = np.linalg.svd(jacobian)
  rank = int(np.sum(singular > 1e-6 * singular[0]))
  null = vt[rank:].T[weight_rows]
  z, *_ = np.linalg.lstsq(null, -d, rcond=None)
  return float(np.sum((d + null @ z) ** 2))


def max_relative_error(before, after):
  scale = after @ before / (before @ before)
  return np.abs(after - scale * before).max() / np.abs(scale * before).max()


FRAMEWORKS = ["linen", "nnx", "equinox"]


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_each_slice_is_a_layer_in_forward_order(name):
  _, _, layers, _ = traced(name)
  blocks = [layer for layer in layers if layer.index]
  assert [layer.index for layer in blocks[:: len(blocks) // DEPTH]] == [
    (i,) for i in range(DEPTH)
  ]
  first, last = ("Dense_0", "Dense_1") if name == "linen" else ("embed", "head")
  assert layers[0].name == first and layers[-1].name == last
  suffixes = [layer.name[-3:] for layer in blocks]
  assert suffixes == [f"[{i}]" for i in range(DEPTH) for _ in range(3)]
  assert layers.graph is not None  # the residual merges tie the slices


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_30_steps_keep_the_function_and_reach_half_the_best_rescaling(name):
  initial, apply_fn, layers, x = traced(name)
  tx = optax_swr.swr(0.5, layers=layers)
  state = tx.init(initial)
  references = np.asarray(state.reference_norms)
  params = helpers.pushed_off(initial, layers)
  d0 = log_distance(params, layers, references)
  params, logits = helpers.swr_steps(tx, apply_fn, params, state, x, STEPS)
  logits = np.asarray(logits, np.float64).reshape(STEPS + 1, -1)
  for t in range(STEPS):
    assert max_relative_error(logits[t], logits[t + 1]) <= 1e-4, (name, t)
  d30 = log_distance(params, layers, references)
  best = best_reachable(
    apply_fn, helpers.pushed_off(initial, layers), layers, x, d0
  )
  reachable = np.sum(d0**2) - best
  assert reachable > 1e-2, reachable  # the bound is not vacuous
  assert np.sum(d0**2) - np.sum(d30**2) >= 0.5 * reachable, (d0, d30, best)
  # The slices moved apart: one norm for the whole stack could not do that.
  ratios = np.exp(d30 - d0)
  assert np.ptp(ratios[[bool(l.index) for l in layers]]) > 1e-2


def test_the_stack_as_one_layer_changes_the_function():
  """What the tracer fixes: the whole stack rescaled by one factor."""
  params, apply_fn, layers, x = traced("linen")
  whole = [
    optax_swr.Layer(l.weight, l.bias, l.norm, l.path)
    for l in dict.fromkeys(
      optax_swr.Layer(l.weight, l.bias, l.norm, l.path) for l in layers
    )
  ]
  pushed = helpers.pushed_off(params, layers)
  exact = optax_swr.check_proportional(apply_fn, pushed, layers, x)
  assert exact.relative_error < 1e-5, exact
  broken = optax_swr.check_proportional(apply_fn, pushed, whole, x)
  assert broken.relative_error > 1e-2, broken


def test_a_scanned_chain_matches_the_same_layers_unrolled():
  """No equations; the slices' factors equal those of separate layers."""
  params, apply_fn, layers, x = traced("linen_chain")
  assert layers.graph is None and len(layers) == DEPTH + 2
  stack = params["stack"]["Dense_0"]
  unrolled = {
    "Dense_0": params["Dense_0"],
    **{
      f"Dense_{i + 1}": jax.tree.map(lambda p, i=i: p[i], stack)
      for i in range(DEPTH)
    },
    f"Dense_{DEPTH + 1}": params["Dense_1"],
  }
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  unrolled_grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), unrolled)
  tx = optax.chain(optax.sgd(1.0), optax_swr.swr(0.4, layers=layers))
  updates, state = tx.update(grads, tx.init(params), params)
  reference = optax.chain(optax.sgd(1.0), optax_swr.swr(0.4))
  expected, expected_state = reference.update(
    unrolled_grads, reference.init(unrolled), unrolled
  )
  for name in ("layer_scales", "cumulative_scales", "weight_norms"):
    np.testing.assert_allclose(
      optax.tree.get(state, name),
      optax.tree.get(expected_state, name),
      rtol=1e-6,
    )
  for i in range(DEPTH):
    for leaf in ("kernel", "bias"):
      np.testing.assert_allclose(
        updates["stack"]["Dense_0"][leaf][i],
        expected[f"Dense_{i + 1}"][leaf],
        rtol=1e-5,
        atol=1e-7,
      )


class LinenBatchNormBlock(nn.Module):
  train: bool = True

  @nn.compact
  def __call__(self, x, _):
    h = nn.Dense(8)(x)
    h = nn.BatchNorm(use_running_average=not self.train)(h)
    return nn.relu(h), None


class LinenBatchNormStack(nn.Module):
  train: bool = True

  @nn.compact
  def __call__(self, x):
    stack = nn.scan(
      LinenBatchNormBlock,
      variable_axes={"params": 0, "batch_stats": 0},
      split_rngs={"params": True},
      length=DEPTH,
    )
    x, _ = stack(self.train, name="stack")(nn.Dense(8)(x), None)
    return nn.Dense(4)(x)


def test_stacked_batch_norm_statistics_are_synced_per_slice():
  x = jax.random.normal(jax.random.key(0), (32, 5))
  train, evaluate = LinenBatchNormStack(True), LinenBatchNormStack(False)
  variables = train.init(jax.random.key(1), x)
  _, mutated = train.apply(variables, x, mutable=["batch_stats"])
  stats = mutated["batch_stats"]
  layers = optax_swr.layers_from_linen(train, variables, x)
  norms = [layer for layer in layers if layer.norm]
  assert [layer.index for layer in norms] == [(i,) for i in range(DEPTH)]
  apply_fn = lambda p, s, x: evaluate.apply({"params": p, "batch_stats": s}, x)
  pushed = helpers.pushed_off(variables["params"], layers)
  report = optax_swr.check_proportional(
    apply_fn, pushed, layers, x, batch_stats=stats
  )
  assert report.relative_error < 1e-4, report
  stale = optax_swr.check_proportional(
    lambda p, x: apply_fn(p, stats, x), pushed, layers, x
  )
  assert stale.relative_error > 1e-2, stale
  # Each slice's statistics get that slice's input scale.
  tx = optax_swr.swr(0.5, layers=layers)
  _, state = tx.update(
    jax.tree.map(jnp.zeros_like, pushed), tx.init(pushed), pushed
  )
  synced = optax_swr.sync_batch_stats(stats, state, layers)
  position = [layers.index(layer) for layer in norms]
  inputs = np.asarray(state.input_scales)[position]
  for i in range(DEPTH):
    np.testing.assert_allclose(
      synced["stack"]["BatchNorm_0"]["mean"][i],
      stats["stack"]["BatchNorm_0"]["mean"][i] * inputs[i],
      rtol=1e-6,
    )
    np.testing.assert_allclose(
      synced["stack"]["BatchNorm_0"]["var"][i],
      stats["stack"]["BatchNorm_0"]["var"][i] * inputs[i] ** 2,
      rtol=1e-6,
    )


def test_reset_layers_resets_one_slice_only():
  params, _, layers, _ = traced("linen_chain")
  fresh = jax.tree.map(jnp.zeros_like, params)
  second = [layer for layer in layers if layer.index == (1,)]
  new = optax_swr.baselines.reset_layers(params, fresh, second)
  kernel = new["stack"]["Dense_0"]["kernel"]
  assert not np.any(kernel[1]) and not np.any(
    new["stack"]["Dense_0"]["bias"][1]
  )
  np.testing.assert_array_equal(
    kernel[0], params["stack"]["Dense_0"]["kernel"][0]
  )
  np.testing.assert_array_equal(
    kernel[2], params["stack"]["Dense_0"]["kernel"][2]
  )


def test_by_layer_names_the_slices():
  params, _, layers, _ = traced("linen_chain")
  state = optax_swr.swr(0.1, layers=layers).init(params)
  named = optax_swr.by_layer(state.reference_norms, layers)
  stack = params["stack"]["Dense_0"]["kernel"]
  for i in range(DEPTH):
    np.testing.assert_allclose(
      named[f"stack/Dense_0[{i}]"], np.linalg.norm(stack[i]), rtol=1e-6
    )


@pytest.mark.parametrize(
  ("index", "match"),
  [
    ((-1,), "tuple of non-negative ints"),
    ("0", "tuple of non-negative ints"),
    ((3,), r"slice \(3,\) of a stack, but its leaf has shape \(3, 8, 8\)"),
    ((0, 0, 0), "leave the layer's own axes"),
  ],
)
def test_bad_slice_indices_are_errors(index, match):
  params, *_ = traced("linen_chain")
  kernel, bias = ("stack", "Dense_0", "kernel"), ("stack", "Dense_0", "bias")
  with pytest.raises(ValueError, match=match):
    optax_swr.find_layers(params, [optax_swr.Layer(kernel, bias, index=index)])


def test_a_slice_and_its_whole_stack_cannot_both_be_layers():
  params, *_ = traced("linen_chain")
  kernel = ("stack", "Dense_0", "kernel")
  with pytest.raises(ValueError, match="share a leaf"):
    optax_swr.find_layers(
      params, [optax_swr.Layer(kernel, index=0), optax_swr.Layer(kernel)]
    )
  with pytest.raises(ValueError, match=r"more than once"):
    optax_swr.find_layers(
      params,
      [optax_swr.Layer(kernel, index=0), optax_swr.Layer(kernel, index=0)],
    )
