"""SWR on residual nets and transformers: what stays bounded, what cannot.

For ResNet-18, the zoo's ViT, a pre-LN transformer with a ReLU MLP, a
U-Net-like net and a SwiGLU block (``examples/models/``), trains with Adam on
a fixed batch of random images and labels (a task that makes weights grow)
for ``--steps`` steps, three ways:

* ``adam``: no rescaling;
* ``swr``: ``swr(coef, layers=layers_from_linen(...))``, the projected
  factors that keep the function exactly;
* ``swr_chain_rule``: the same layers without their equations (the paper's
  chain rule), which bounds every norm but changes the function each step.

It records, per layer, whether the traced equations leave its factor free,
tie it to others (constrained) or fix it (pinned), and per step the distance
``sum_l log(||W_l|| / n_l)^2`` and every layer's norm ratio; one figure row
per model: the fraction of parameters in free, constrained and pinned
layers, and the distance over steps.

  python -m examples.beyond_chains --out examples/paper/results/beyond_chains.json \\
      --figure examples/paper/figures/beyond_chains.png
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import time
from typing import Any
import warnings

import jax
import numpy as np
import optax

from examples.models import blocks
from examples.models import linen as models_linen
from examples.paper import protocols
import optax_swr
from optax_swr import metrics

NUM_CLASSES = 3


def models() -> dict[str, tuple[Any, tuple[int, ...], bool]]:
  """name -> (module, input shape of a batch, whether it takes ``train=``)."""
  zoo = lambda name, width: models_linen.create(
    name, NUM_CLASSES, (8, 8, 1), width=width
  )[0]
  return {
    "resnet18": (zoo("resnet18", 4), (32, 8, 8, 1), True),
    "vit": (zoo("transformer", 16), (32, 8, 8, 1), True),
    "pre_ln_relu": (blocks.PreLNReLU(), (32, 4, 6), False),
    "unet_like": (blocks.UNetLike(), (32, 8, 8, 1), False),
    "swiglu": (blocks.SwiGLU(), (32, 6), False),
  }


def layer_classes(layers: optax_swr.Layers) -> list[str]:
  """free, constrained or pinned: how the traced equations tie each layer."""
  if layers.graph is None:
    return ["free"] * len(layers)
  return layers.graph.classes()


def run_model(name: str, steps: int, coef: float, lr: float, seed: int):
  module, shape, takes_train = models()[name]
  kwargs = {"train": True} if takes_train else {}
  x = jax.random.normal(jax.random.key(seed), shape)
  y = jax.random.randint(jax.random.key(seed + 1), shape[:1], 0, NUM_CLASSES)
  variables = module.init(jax.random.key(seed + 2), x, **kwargs)
  stats = variables.get("batch_stats", {})
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optax_swr.ConstrainedLayersWarning)
    layers = optax_swr.layers_from_linen(module, variables, x, **kwargs)
  params = variables["params"]
  references = metrics.layer_norms(params, list(layers))

  def loss(p):
    logits, _ = module.apply(
      {"params": p, "batch_stats": stats}, x, mutable=["batch_stats"], **kwargs
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  variants = {
    "adam": optax.adam(lr),
    "swr": optax.chain(optax.adam(lr), optax_swr.swr(coef, layers=layers)),
    "swr_chain_rule": optax.chain(
      optax.adam(lr), optax_swr.swr(coef, layers=tuple(layers))
    ),
  }
  has_weight = np.array([layer.weight is not None for layer in layers])
  results = {}
  for variant, tx in variants.items():
    run = jax.jit(lambda p, tx=tx: train(tx, loss, p, layers, steps))
    start = time.perf_counter()
    ratios = np.asarray(run(params)) / np.asarray(references)
    ratios = ratios[:, has_weight]
    results[variant] = {
      "distance": np.sum(np.log(ratios) ** 2, axis=1).tolist(),
      "max_ratio": ratios.max(0).tolist(),
      "final_ratio": ratios[-1].tolist(),
      "seconds": time.perf_counter() - start,
    }
  classes = [c for c, w in zip(layer_classes(layers), has_weight) if w]
  sizes = [
    int(np.size(_leaf(params, layer.weight)))
    for layer in layers
    if layer.weight is not None
  ]
  return {
    "layers": [layer.name for layer in layers if layer.weight is not None],
    "classes": classes,
    "weight_sizes": sizes,
    "constraint_notes": sorted(set(layers.graph.notes)) if layers.graph else [],
    "variants": results,
  }


def train(tx, loss, params, layers, steps):
  """Per-step layer norms of ``steps`` updates of ``tx`` (one lax.scan)."""

  def step(carry, _):
    params, state = carry
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
    return (params, state), metrics.layer_norms(params, list(layers))

  _, norms = jax.lax.scan(step, (params, tx.init(params)), length=steps)
  return norms


def _leaf(tree: Any, path: tuple) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def plot(results: dict[str, Any], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = list(results["models"])
  figure, axes = plt.subplots(
    len(names), 2, figsize=(10, 2.6 * len(names)), squeeze=False
  )
  for row, name in zip(axes, names):
    model = results["models"][name]
    sizes = np.array(model["weight_sizes"], float)
    for i, cls in enumerate(("free", "constrained", "pinned")):
      share = sizes[[c == cls for c in model["classes"]]].sum() / sizes.sum()
      row[0].barh([cls], [share], color=f"C{i}")
    row[0].set_xlim(0, 1)
    row[0].set_title(f"{name}: share of weight parameters", fontsize=9)
    for variant, label in (
      ("adam", "Adam"),
      ("swr", "Adam + SWR (function kept)"),
      ("swr_chain_rule", "Adam + SWR, chain rule only"),
    ):
      row[1].plot(model["variants"][variant]["distance"], label=label)
    row[1].set_yscale("log")
    row[1].set_title(r"$\sum_l \log(\|W_l\| / n_l)^2$", fontsize=9)
    row[1].set_xlabel("step")
  axes[0][1].legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=500)
  parser.add_argument("--coef", type=float, default=0.1)
  parser.add_argument("--lr", type=float, default=1e-2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--models", default=",".join(models()), help="comma-separated"
  )
  parser.add_argument("--out", default=None, help="JSON file to write")
  parser.add_argument("--figure", default=None, help="PNG file to write")
  flags = parser.parse_args(argv)
  protocols.check_positive("--steps", flags.steps)
  chosen = flags.models.split(",")
  unknown = sorted(set(chosen) - set(models()))
  if unknown:
    parser.error(f"--models: unknown {unknown}; choose from {list(models())}")
  start = time.perf_counter()
  results: dict[str, Any] = {
    "config": vars(flags),
    "versions": protocols.versions(),
    "models": {},
  }
  for name in chosen:
    model = run_model(name, flags.steps, flags.coef, flags.lr, flags.seed)
    results["models"][name] = model
    print_summary(name, model)
  results["wall_time_s"] = time.perf_counter() - start
  if flags.out:
    protocols.write_json(flags.out, results)
  if flags.figure:
    plot(results, flags.figure)
  return results


def print_summary(name: str, model: dict[str, Any]) -> None:
  print(f"{name}: {len(model['layers'])} weighted layers")
  for cls in ("free", "constrained", "pinned"):
    chosen = [c == cls for c in model["classes"]]
    row = f"  {cls:11s} {sum(chosen):3d} layers"
    for variant in ("adam", "swr", "swr_chain_rule"):
      ratios = np.array(model["variants"][variant]["max_ratio"])[chosen]
      worst = f"{ratios.max():.2f}" if len(ratios) else "-"
      row += f"  {variant} max ||W||/n {worst:>6s}"
    print(row)


if __name__ == "__main__":
  main()
