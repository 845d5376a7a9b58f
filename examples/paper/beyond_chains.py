"""SWR on residual nets and transformers: what stays bounded, what cannot.

For ResNet-18, the zoo's ViT, a pre-LN transformer with a ReLU MLP, a
U-Net-like net and a SwiGLU block (``examples/models/``), trains with Adam on
a fixed batch of random images and labels (a task that makes weights grow)
for ``--steps`` steps, four ways:

* ``adam``: no rescaling;
* ``swr``: ``swr(coef, layers=layers_from_linen(...))``, the projected
  factors that keep the function exactly: log c = (I - M+ M) log c*, the
  solution of the traced equations M log c = 0 nearest to the paper's c*;
* ``swr_absorb``: another exact choice (``absorb_map``): one layer per
  independent equation absorbs it, every other layer gets the paper's c*;
* ``swr_chain_rule``: the same layers without their equations (the paper's
  chain rule), which bounds every norm but changes the function each step.

It records, per layer, whether the traced equations leave its factor free,
tie it to others (constrained) or fix it (pinned); per step the loss, the
distance ``sum_l log(||W_l|| / n_l)^2`` (all layers, and without the pinned
ones), the largest ``|log(||W_l|| / n_l)|`` of a free or constrained layer
and every layer's norm ratio; and, at the last params, how far one step of
each SWR variant is from scaling the logits by one constant
(``check_proportional``). One figure row per model: the fraction of
parameters in free, constrained and pinned layers, the distance and the
largest layer deviation over steps. (The committed JSON keeps every 9th
step: ``examples.paper.compact_results``, which lists them in ``steps``.)

  python -m examples.paper.beyond_chains --out examples/paper/results/beyond_chains.json \\
      --figure examples/paper/figures/beyond_chains.png
"""

from __future__ import annotations

from collections.abc import Sequence
import time
from typing import Any
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import cli
from examples.models import blocks
from examples.models import linen as models_linen
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


def absorb_map(constraints: np.ndarray, size: int) -> tuple[np.ndarray, list]:
  """log c = P log c*, with one absorbing layer per independent equation.

  The equations' rows are reduced to an independent set (in order); for each
  row, the absorbing layer is the last one in forward order with a non-zero
  coefficient that keeps the absorbing columns M_A of full rank (any layer
  that does, if none of the row's does). Every other layer keeps its paper's
  factor, a_F = a*_F, and the absorbing ones solve M_A a_A = -M_F a*_F
  exactly. Returns P (float64) and the absorbing layers' indices.
  """
  m = np.asarray(constraints, np.float64).reshape(-1, size)
  rank = np.linalg.matrix_rank
  rows: list[int] = []
  for i in range(len(m)):
    if rank(m[rows + [i]]) > len(rows):
      rows.append(i)
  m = m[rows]
  absorbing: list[int] = []
  for row in m:
    candidates = [*np.flatnonzero(row)[::-1], *range(size - 1, -1, -1)]
    absorbing.append(
      next(
        int(l)
        for l in candidates
        if l not in absorbing and rank(m[:, absorbing + [l]]) > len(absorbing)
      )
    )
  kept = [l for l in range(size) if l not in absorbing]
  p = np.eye(size)
  p[absorbing] = 0.0
  p[np.ix_(absorbing, kept)] = -np.linalg.solve(m[:, absorbing], m[:, kept])
  return p, absorbing


def swr_absorb(coef: float, layers: optax_swr.Layers):
  """``swr`` with ``absorb_map``'s factors instead of the projection's.

  The chain-rule ``swr`` (the layers without their equations) computes the
  paper's factors c* into its state; this transformation replaces them by
  exp(P log c*) for the weights, and by the output forms' map for the biases
  (as ``swr`` does with its projection), and keeps ``SWRState`` so that
  ``check_proportional`` can test it.
  """
  paper = optax_swr.swr(coef, layers=layers.chain_rule())
  graph = layers.graph
  p, _ = absorb_map(graph.constraints, len(layers))
  outputs = graph.output_forms([layer.norm for layer in layers])
  maps = [
    jnp.asarray(m @ p, jnp.float32)
    for m in (np.eye(len(layers)), outputs, graph.input_forms)
  ]

  def update_fn(updates, state, params):
    _, state = paper.update(updates, state, params)
    log_star = jnp.log(state.layer_scales)
    weights, biases, input_scales = (jnp.exp(m @ log_star) for m in maps)
    factors = {}
    for layer, weight, bias in zip(layers, weights, biases):
      factors[layer.weight] = weight
      factors[layer.bias] = bias

    def rescale(keypath, update, param):
      # The update u' with param + u' = f (param + update), as swr writes it.
      f = factors.get(tuple(key.key for key in keypath))
      return update if f is None else (f - 1) * param + f * update

    state = state._replace(
      layer_scales=weights,
      cumulative_scales=biases,
      weight_norms=state.weight_norms / state.layer_scales * weights,
      input_scales=input_scales,
    )
    return jax.tree_util.tree_map_with_path(rescale, updates, params), state

  return optax.GradientTransformation(paper.init, update_fn)


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

  def logits(p, x):
    out, _ = module.apply(
      {"params": p, "batch_stats": stats}, x, mutable=["batch_stats"], **kwargs
    )
    return out

  def loss(p):
    return optax.softmax_cross_entropy_with_integer_labels(
      logits(p, x), y
    ).mean()

  rescalers = {
    "swr": optax_swr.swr(coef, layers=layers),
    "swr_absorb": swr_absorb(coef, layers),
    "swr_chain_rule": optax_swr.swr(coef, layers=layers.chain_rule()),
  }
  variants = {"adam": optax.adam(lr)}
  variants.update(
    {k: optax.chain(optax.adam(lr), v) for k, v in rescalers.items()}
  )
  has_weight = np.array([layer.weight is not None for layer in layers])
  classes = [c for c, w in zip(layer_classes(layers), has_weight) if w]
  unpinned = np.array([c != "pinned" for c in classes])
  results = {}
  for variant, tx in variants.items():
    run = jax.jit(lambda p, tx=tx: train(tx, loss, p, layers, steps))
    start = time.perf_counter()
    final, norms, losses = run(params)
    log_ratios = np.log(np.asarray(norms) / np.asarray(references))
    log_ratios = log_ratios[:, has_weight]
    ratios = np.exp(log_ratios)
    results[variant] = {
      "distance": np.sum(log_ratios**2, axis=1).tolist(),
      "distance_unpinned": np.sum(log_ratios[:, unpinned] ** 2, 1).tolist(),
      "max_log_ratio": np.abs(log_ratios[:, unpinned]).max(1).tolist(),
      "loss": np.asarray(losses).tolist(),
      "final_loss": float(loss(final)),
      "accuracy": float(np.mean(np.argmax(logits(final, x), -1) == y)),
      "max_ratio": ratios.max(0).tolist(),
      "final_ratio": ratios[-1].tolist(),
      "seconds": time.perf_counter() - start,
    }
    if variant in rescalers:  # one step at the last params: function kept?
      report = optax_swr.check_proportional(
        logits, final, rescalers[variant], x
      )
      results[variant]["one_step_error"] = report.relative_error
  sizes = [
    int(np.size(_leaf(params, layer.weight)))
    for layer in layers
    if layer.weight is not None
  ]
  _, absorbing = absorb_map(layers.graph.constraints, len(layers))
  return {
    "layers": [layer.name for layer in layers if layer.weight is not None],
    "classes": classes,
    "weight_sizes": sizes,
    "absorbing_layers": [layers[l].name for l in absorbing],
    "constraint_notes": sorted(set(layers.graph.notes)) if layers.graph else [],
    "variants": results,
  }


def train(tx, loss, params, layers, steps):
  """``steps`` updates of ``tx`` (one lax.scan).

  Returns the last params, and per step the layer norms and the loss.
  """

  def step(carry, _):
    params, state = carry
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    return (params, state), (metrics.layer_norms(params, list(layers)), value)

  (params, _), (norms, losses) = jax.lax.scan(
    step, (params, tx.init(params)), length=steps
  )
  return params, norms, losses


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
    len(names), 3, figsize=(14, 2.6 * len(names)), squeeze=False
  )
  labels = {
    "adam": "Adam",
    "swr": "Adam + SWR, projected (function kept)",
    "swr_absorb": "Adam + SWR, absorbed (function kept)",
    "swr_chain_rule": "Adam + SWR, chain rule only",
  }
  for row, name in zip(axes, names):
    model = results["models"][name]
    sizes = np.array(model["weight_sizes"], float)
    for i, cls in enumerate(("free", "constrained", "pinned")):
      share = sizes[[c == cls for c in model["classes"]]].sum() / sizes.sum()
      row[0].barh([cls], [share], color=f"C{i}")
    row[0].set_xlim(0, 1)
    row[0].set_title(f"{name}: share of weight parameters", fontsize=9)
    traces = model["variants"]["adam"]["distance"]
    # All steps, or those examples.paper.compact_results kept.
    steps = model.get("steps", range(1, len(traces) + 1))
    for variant, label in labels.items():
      traces = model["variants"][variant]
      row[1].plot(steps, traces["distance"], label=label)
      row[2].plot(steps, traces["max_log_ratio"], label=label)
    row[1].set_yscale("log")
    row[1].set_title(r"$\sum_l \log(\|W_l\| / n_l)^2$, all layers", fontsize=9)
    row[2].set_title(
      r"$\max_l |\log(\|W_l\| / n_l)|$, free and constrained layers",
      fontsize=9,
    )
    for ax in row[1:]:
      ax.set_xlabel("step")
  axes[0][1].legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = cli.parser(__doc__)
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
  cli.check_positive("--steps", flags.steps)
  cli.check_out_path(flags.out)
  cli.check_out_path(flags.figure, "--figure")
  chosen = flags.models.split(",")
  unknown = sorted(set(chosen) - set(models()))
  if unknown:
    parser.error(f"--models: unknown {unknown}; choose from {list(models())}")
  start = time.perf_counter()
  results: dict[str, Any] = {
    "config": vars(flags),
    "versions": cli.versions(),
    "models": {},
  }
  for name in chosen:
    model = run_model(name, flags.steps, flags.coef, flags.lr, flags.seed)
    results["models"][name] = model
    print_summary(name, model)
  results["wall_time_s"] = time.perf_counter() - start
  if flags.out:
    cli.write_json(flags.out, results)
  if flags.figure:
    plot(results, flags.figure)
  return results


def print_summary(name: str, model: dict[str, Any]) -> None:
  print(f"{name}: {len(model['layers'])} weighted layers")
  for cls in ("free", "constrained", "pinned"):
    chosen = [c == cls for c in model["classes"]]
    row = f"  {cls:11s} {sum(chosen):3d} layers"
    for variant in ("adam", "swr", "swr_absorb", "swr_chain_rule"):
      ratios = np.array(model["variants"][variant]["max_ratio"])[chosen]
      worst = f"{ratios.max():.2f}" if len(ratios) else "-"
      row += f"  {variant} {worst:>5s}"
    print(row)
  print(
    "  at the end: distance (unpinned), max |log ratio|, loss, 1-step error"
  )
  for variant, v in model["variants"].items():
    print(
      f"  {variant:15s} {v['distance_unpinned'][-1]:9.4f}"
      f" {v['max_log_ratio'][-1]:7.3f} {v['final_loss']:8.4f}"
      f" {v.get('one_step_error', float('nan')):9.1e}"
    )


if __name__ == "__main__":
  main()
