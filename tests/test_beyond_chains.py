"""Residual nets, transformers, U-Nets: SWR keeps their function exactly.

The tracers read the log-scale equations of each model; these tests check,
in Linen and in NNX, from weights pushed off their initial norms and with
non-zero biases, that every one of 30 SWR steps (zero base updates) keeps the
logits proportional, and that the norms move at least half as far toward
their references as the best function-preserving rescaling could. That bound
is computed independently of the tracer: from the null space of the Jacobian
of the normalized output with respect to per-leaf log-scales, in float64.
"""

from __future__ import annotations

import warnings

from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.models import blocks
from examples.models import linen as models_linen
from examples.models import nnx as models_nnx
import optax_swr
from tests import helpers

STEPS = 30
IMAGES = (8, 8, 1)

# name: (Linen module, NNX model (built after the test's monkeypatch, as NNX
# reads BN_EPSILON when it builds BatchNorm), input shape).
MODELS = {
  "pre_ln_relu": (
    blocks.PreLNReLU,
    lambda: blocks.PreLNReLUNnx(6, rngs=nnx.Rngs(0)),
    (24, 4, 6),
  ),
  "unet_like": (
    blocks.UNetLike,
    lambda: blocks.UNetLikeNnx(1, rngs=nnx.Rngs(0)),
    (16, *IMAGES),
  ),
  "swiglu": (
    blocks.SwiGLU,
    lambda: blocks.SwiGLUNnx(6, rngs=nnx.Rngs(0)),
    (32, 6),
  ),
  "resnet18": (
    lambda: zoo_linen("resnet18", 4),
    lambda: models_nnx.create("resnet18", 3, IMAGES, width=4),
    (16, *IMAGES),
  ),
  "vit": (
    lambda: zoo_linen("transformer", 16),
    lambda: models_nnx.create("transformer", 3, IMAGES, width=16),
    (32, *IMAGES),
  ),
}


def zoo_linen(name, width):
  """The module of ``models_linen.create``, without its initialisation."""
  kwargs = models_linen.model_kwargs(name, IMAGES, width)
  return models_linen.MODELS[name](num_classes=3, **kwargs)


def setup_linen(name, x):
  module = MODELS[name][0]()
  kwargs = {"train": True} if name in ("resnet18", "vit") else {}
  variables = module.init(jax.random.key(1), x, **kwargs)
  stats = variables.get("batch_stats", {})

  def apply_fn(params, x):
    out = module.apply(
      {"params": params, "batch_stats": stats},
      x,
      mutable=["batch_stats"],
      **kwargs,
    )
    return out[0]

  def trace():
    return optax_swr.layers_from_linen(module, variables, x, **kwargs)

  return variables["params"], apply_fn, trace


def setup_nnx(name, x):
  model = MODELS[name][1]()
  model.train()  # BatchNorm normalizes with the batch's statistics
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def apply_fn(params, x):
    # Fresh BatchStat variables each call (merge would reuse those of
    # `rest`), in the input's dtype (float64 in best_reachable): their
    # updated running averages are discarded.
    stats = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), rest)
    return nnx.merge(graphdef, params, stats)(x)

  return params, apply_fn, lambda: optax_swr.layers_from_nnx(model, x)


def setup(framework, name):
  x = jax.random.normal(jax.random.key(0), MODELS[name][2])
  make = setup_linen if framework == "linen" else setup_nnx
  params, apply_fn, trace = make(name, x)
  with warnings.catch_warnings():
    warnings.simplefilter("error", optax_swr.NotAChainWarning)
    warnings.simplefilter("ignore", optax_swr.ConstrainedLayersWarning)
    layers = trace()
  return params, apply_fn, layers, x


def log_distance(params, layers, references):
  norms = np.asarray(optax_swr.metrics.layer_norms(params, list(layers)))
  weighted = np.array([layer.weight is not None for layer in layers])
  return np.log(norms[weighted] / references[weighted])


def best_reachable(apply_fn, params, layers, x, d):
  """min ||d + Δ||² over function-preserving changes Δ of the log-norms.

  The per-leaf log-scales u that keep the normalized output (to first
  order; exactly, for positively homogeneous pieces) form the null space of
  the Jacobian J of the normalized output at u = 0, in float64. J is built
  column by column from one compiled JVP (cheaper to compile than jacfwd's
  batched convolutions).
  """
  paths = optax_swr._layers.leaf_paths(params)  # noqa: SLF001
  index = {path: i for i, path in enumerate(paths)}
  coords = sorted(
    {index[p] for l in layers for p in (l.weight, l.bias) if p is not None}
  )
  weight_rows = [
    coords.index(index[l.weight]) for l in layers if l.weight is not None
  ]
  with jax.enable_x64(True):
    leaves, treedef = jax.tree.flatten(
      jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    )
    x64 = jnp.asarray(x, jnp.float64)

    def normalized(u):
      scaled = list(leaves)
      for k, i in enumerate(coords):
        scaled[i] = scaled[i] * jnp.exp(u[k])
      out = apply_fn(jax.tree.unflatten(treedef, scaled), x64).ravel()
      return out / jnp.linalg.norm(out)

    origin = jnp.zeros(len(coords))
    column = jax.jit(lambda e: jax.jvp(normalized, (origin,), (e,))[1])
    jacobian = np.stack(
      [np.asarray(column(e)) for e in np.eye(len(coords))], axis=1
    )
  _, singular, vt = np.linalg.svd(jacobian)
  rank = int(np.sum(singular > 1e-6 * singular[0]))
  null = vt[rank:].T[weight_rows]  # weight coordinates of the null space
  z, *_ = np.linalg.lstsq(null, -d, rcond=None)
  return float(np.sum((d + null @ z) ** 2))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("framework", ["linen", "nnx"])
def test_30_steps_keep_the_function_and_reach_half_the_best_rescaling(
  framework, name, monkeypatch
):
  # BatchNorm's epsilon alone changes the output under a rescaling by about
  # eps / var (3e-4 to 3e-3 here at the default 1e-5: not SWR's error, and
  # eps = 1e-12 brings it to 3e-6), so ResNet-18 runs with a tiny epsilon.
  monkeypatch.setattr(models_linen, "BN_EPSILON", 1e-12)
  monkeypatch.setattr(models_nnx, "BN_EPSILON", 1e-12)
  initial, apply_fn, layers, x = setup(framework, name)
  tx = optax_swr.swr(0.5, layers=layers)
  state = tx.init(initial)
  references = np.asarray(state.reference_norms)
  start = helpers.pushed_off(initial, layers)
  d0 = log_distance(start, layers, references)
  params, logits = helpers.swr_steps(tx, apply_fn, start, state, x, STEPS)
  logits = np.asarray(logits, np.float64).reshape(STEPS + 1, -1)
  for t, (before, after) in enumerate(zip(logits[:-1], logits[1:])):
    scale = after @ before / (before @ before)
    error = np.abs(after - scale * before).max() / np.abs(scale * before).max()
    assert error <= 1e-4, (framework, name, t, error)
  d30 = log_distance(params, layers, references)
  best = best_reachable(apply_fn, start, layers, x, d0)
  reachable = np.sum(d0**2) - best
  assert reachable > 1e-3, (framework, name, reachable)  # not vacuous
  assert np.sum(d0**2) - np.sum(d30**2) >= 0.5 * reachable, (
    framework,
    name,
    np.sum(d0**2),
    np.sum(d30**2),
    best,
  )


def test_beyond_chains_script_pins_free_layers_at_coef_one(tmp_path):
  """A quick run of ``python -m examples.paper.beyond_chains``: JSON and figure."""
  from examples.paper import beyond_chains  # pylint: disable=g-import-not-at-top

  out, figure = tmp_path / "b.json", tmp_path / "b.png"
  results = beyond_chains.main(
    [
      "--steps=4",
      "--coef=1",
      "--models=swiglu",
      f"--out={out}",
      f"--figure={figure}",
    ]
  )
  assert out.exists() and figure.stat().st_size > 0
  for model in results["models"].values():
    classes = np.array(model["classes"])
    assert set(classes) <= {"free", "constrained", "pinned"}
    swr = np.array(model["variants"]["swr"]["final_ratio"])
    chain_rule = np.array(model["variants"]["swr_chain_rule"]["final_ratio"])
    np.testing.assert_allclose(chain_rule, 1.0, rtol=1e-4)  # coef 1 pins all
    np.testing.assert_allclose(swr[classes == "free"], 1.0, rtol=1e-4)
    # Absorbing: every layer but the absorbing ones keeps the paper's factor.
    absorb = np.array(model["variants"]["swr_absorb"]["final_ratio"])
    kept = ~np.isin(model["layers"], model["absorbing_layers"])
    assert 0 < kept.sum() < len(kept)
    np.testing.assert_allclose(absorb[kept], 1.0, rtol=1e-4)
    for variant in ("swr", "swr_absorb"):  # both keep the function
      assert model["variants"][variant]["one_step_error"] < 1e-5
    assert len(model["variants"]["adam"]["distance"]) == 4


class RematChain(nn.Module):
  @nn.compact
  def __call__(self, x):
    dense = nn.remat(nn.Dense)
    return dense(3)(nn.relu(dense(16)(nn.relu(dense(16)(x)))))


class TiedLinen(nn.Module):
  @nn.compact
  def __call__(self, tokens):
    embed = nn.Embed(11, 8)
    h = nn.relu(nn.Dense(8)(embed(tokens)))
    return embed.attend(h)


class TiedNnx(nnx.Module):
  def __init__(self, rngs):
    self.embed = nnx.Embed(11, 8, rngs=rngs)
    self.dense = nnx.Linear(8, 8, rngs=rngs)

  def __call__(self, tokens):
    return self.embed.attend(nnx.relu(self.dense(self.embed(tokens))))


def exact_report(layers, apply_fn, params, x):
  report = optax_swr.check_proportional(apply_fn, params, layers, x)
  assert report.relative_error < 1e-5, report
  assert abs(report.fitted_scale / report.predicted_scale - 1) < 1e-5, report
  return report


def test_remat_layers_are_a_chain():
  module, x = RematChain(), jax.random.normal(jax.random.key(0), (8, 4))
  variables = module.init(jax.random.key(1), x)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    layers = optax_swr.layers_from_linen(module, variables, x)
  assert layers.graph is None and len(layers) == 3
  exact_report(
    layers, lambda p, x: module.apply({"params": p}, x), variables["params"], x
  )


def test_tied_embedding_attend_is_traced_in_linen_and_nnx():
  tokens = jax.random.randint(jax.random.key(0), (6, 5), 0, 11)
  module = TiedLinen()
  variables = module.init(jax.random.key(1), tokens)
  layers = optax_swr.layers_from_linen(module, variables, tokens)
  exact_report(
    layers,
    lambda p, t: module.apply({"params": p}, t),
    variables["params"],
    tokens,
  )
  model = TiedNnx(nnx.Rngs(0))
  layers = optax_swr.layers_from_nnx(model, tokens)
  assert [layer.name for layer in layers] == ["embed", "dense"]
  graphdef, params = nnx.split(model, nnx.Param)
  exact_report(layers, lambda p, t: nnx.merge(graphdef, p)(t), params, tokens)


def test_eval_mode_batch_norm_is_checked_with_synced_statistics():
  module = zoo_linen("cnn_bn", 4)  # create's module, without its own init
  x = jax.random.normal(jax.random.key(0), (32, 8, 8, 1))
  variables = module.init(jax.random.key(1), x, train=False)
  _, mutated = module.apply(variables, x, train=True, mutable=["batch_stats"])
  stats = mutated["batch_stats"]  # away from their (0, 1) initial values
  layers = optax_swr.layers_from_linen(module, variables, x, train=True)
  apply_fn = lambda p, s, x: module.apply(
    {"params": p, "batch_stats": s}, x, train=False
  )
  report = optax_swr.check_proportional(
    apply_fn, variables["params"], layers, x, batch_stats=stats
  )
  assert report.relative_error < 1e-4, report
  stale = optax_swr.check_proportional(
    lambda p, x: apply_fn(p, stats, x), variables["params"], layers, x
  )
  assert stale.relative_error > 1e-2, stale
  with pytest.raises(ValueError, match="`batch_stats` needs the layers"):
    optax_swr.check_proportional(
      apply_fn, variables["params"], optax_swr.swr(0.5), x, batch_stats=stats
    )
