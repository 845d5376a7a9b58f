"""The paper's Figure 1: scaling weights with and without their biases.

Trains a network briefly (Adam, lr 1e-3, batch 256), then multiplies every
layer's kernel by one factor c and measures test accuracy two ways:

* proportional: the bias of layer l (l = 1..L) is multiplied by the cumulative
  factor C_l = c^l (PAPER.md, Theorem 1). The logits become exactly C_L times
  the original ones, so the accuracy does not move;
* weights only: the biases stay as they are, which changes the function: for
  small c the biases drown the inputs' contribution and accuracy falls.

Every factor is evaluated by one jitted, vmapped function. The JSON holds both
accuracy curves and, per factor, ``max |f_c(x) - C_L f(x)| / max |C_L f(x)|``
over the test set for proportional scaling (about 1e-6 in float32).

  python -m examples.paper.figure1 --out-json fig1.json --out-png fig1.png
  python -m examples.paper.figure1 --data digits --model cnn --factors 0.1,1,10
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import math
import time
from typing import Any

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import cli
from examples import data
from examples.models import linen as models_linen
from examples.paper import engine as engine_lib
import optax_swr

MODELS = ("mlp", "cnn")  # Chains without normalization: Theorem 1 is exact.
BATCH_SIZE = 256
LR = 1e-3
EVAL_BATCH = 1000
# 25 geometric factors from 1/20 to 20; the middle one is exactly 1.
NUM_FACTORS = 25
MAX_FACTOR = 20.0

Params = dict[str, Any]
Path = tuple[str, ...]


def default_factors(
  num: int = NUM_FACTORS, largest: float = MAX_FACTOR
) -> tuple[float, ...]:
  """``num`` geometric factors from ``1 / largest`` to ``largest``, with 1."""
  exponents = np.linspace(-1.0, 1.0, num)
  factors = {float(largest**e) for e in exponents if e != 0.0} | {1.0}
  return tuple(sorted(factors))


def parse_factors(text: str) -> tuple[float, ...]:
  """Parses ``--factors`` ("0.1,1,10") into sorted, distinct positive floats."""
  try:
    factors = [float(item) for item in text.split(",") if item.strip()]
  except ValueError as error:
    raise ValueError(
      f"--factors: {text!r} is not a comma-separated list of numbers; "
      "write e.g. --factors 0.1,1,10."
    ) from error
  bad = [f for f in factors if not (math.isfinite(f) and f > 0)]
  if not factors or bad:
    raise ValueError(
      f"--factors: every factor must be a finite number > 0 (got {text!r}); "
      "scaling by zero or a negative number is not a rescaling. Write e.g. "
      "--factors 0.1,1,10."
    )
  return tuple(sorted(set(factors)))


def parse_flags(argv: Sequence[str] | None) -> argparse.Namespace:
  """Parses and checks the command line."""
  parser = cli.parser(__doc__)
  cli.add_data_flag(parser, "fashion_mnist")
  parser.add_argument("--model", default="mlp", choices=MODELS)
  parser.add_argument("--epochs", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--factors",
    default=None,
    help="comma-separated scaling factors > 0 (default: 25 from 0.05 to 20)",
  )
  parser.add_argument("--out-json", default=None, help="write the results")
  parser.add_argument("--out-png", default=None, help="draw the figure")
  flags = parser.parse_args(argv)
  if flags.epochs < 1:
    raise ValueError(
      f"--epochs: got {flags.epochs}; train for at least 1 epoch "
      "(the figure needs a trained network), e.g. --epochs 5."
    )
  cli.check_out_path(flags.out_json, "--out-json")
  cli.check_out_path(flags.out_png, "--out-png")
  flags.factors = (
    default_factors() if flags.factors is None else parse_factors(flags.factors)
  )
  return flags


def train(
  model: Any, variables: Params, dataset: data.Dataset, epochs: int, seed: int
) -> tuple[Params, float]:
  """Adam (lr 1e-3, batch 256) for ``epochs`` epochs with the protocols'
  engine; returns the params and their test accuracy."""
  engine = engine_lib.Engine(model, optax.adam(LR))
  state = engine.init([variables])
  x = jnp.asarray(np.concatenate([dataset.x_train, dataset.x_test]))
  y = jnp.asarray(np.concatenate([dataset.y_train, dataset.y_test]))[None]
  num_train = len(dataset.x_train)
  batch_size = min(BATCH_SIZE, num_train)
  steps = epochs * -(-num_train // batch_size)
  order = engine_lib.epoch_order(
    np.random.default_rng(seed), num_train, batch_size, steps
  )
  state, _ = engine.train(state, x, y, order[None])
  test = np.arange(num_train, len(x))[None]
  accuracy = float(engine.accuracy(state, x, y, test)[0])
  return engine_lib.lane(state, 0).params, accuracy


def scale_params(
  params: Params, layers: Sequence[Path], factor: jax.Array, proportional: bool
) -> Params:
  """Multiplies every kernel by ``factor``; biases by ``factor**l`` or not.

  Args:
    params: the network's params.
    layers: the layer paths in forward order (``optax_swr.layers_from_linen``).
    factor: the scaling factor c > 0 of every layer.
    proportional: True multiplies the bias of the l-th layer (from 1) by the
      cumulative factor ``c**l`` (Theorem 1); False leaves biases alone.

  Returns:
    The scaled params; leaves outside ``layers`` are kept.
  """
  depth = {tuple(path): l for l, path in enumerate(layers, start=1)}
  scaled = {}
  for key, leaf in traverse_util.flatten_dict(params).items():
    layer, name = key[:-1], key[-1]
    if layer in depth and name == "kernel":
      leaf = leaf * factor
    elif layer in depth and name == "bias" and proportional:
      leaf = leaf * factor ** depth[layer]
    scaled[key] = leaf
  return traverse_util.unflatten_dict(scaled)


def make_evaluate(model: Any, layers: Sequence[Path]) -> Callable[..., Any]:
  """A jitted ``evaluate(params, factors, x, y)`` over a batch of factors.

  It returns, per factor: correct predictions with proportional scaling and
  with weights-only scaling, ``max |f_c - C_L f|`` and ``max |C_L f|`` (of
  the proportional logits ``f_c``), all over the batch ``x, y``.
  """
  apply = lambda params, x: model.apply({"params": params}, x)

  def one_factor(params, factor, x, y, logits):
    output_scale = factor ** len(layers)  # C_L
    prop = apply(scale_params(params, layers, factor, True), x)
    weights_only = apply(scale_params(params, layers, factor, False), x)
    correct = lambda out: jnp.sum(jnp.argmax(out, -1) == y)
    return (
      correct(prop),
      correct(weights_only),
      jnp.max(jnp.abs(prop - output_scale * logits)),
      jnp.max(jnp.abs(output_scale * logits)),
    )

  @jax.jit
  def evaluate(params, factors, x, y):
    logits = apply(params, x)
    per_factor = jax.vmap(one_factor, in_axes=(None, 0, None, None, None))
    return per_factor(params, factors, x, y, logits)

  return evaluate


def scaling_curves(
  model: Any,
  params: Params,
  layers: Sequence[Path],
  dataset: data.Dataset,
  factors: Sequence[float],
) -> dict[str, list[float]]:
  """Test accuracy of both scalings, and the logits error, per factor."""
  evaluate = make_evaluate(model, layers)
  factor_array = jnp.asarray(factors, jnp.float32)
  totals = np.zeros((4, len(factors)))
  for start in range(0, len(dataset.x_test), EVAL_BATCH):
    stop = start + EVAL_BATCH
    x, y = dataset.x_test[start:stop], dataset.y_test[start:stop]
    prop, weights_only, error, scale = evaluate(params, factor_array, x, y)
    totals[:2] += np.stack([prop, weights_only])
    totals[2:] = np.maximum(totals[2:], np.stack([error, scale]))
  num_test = len(dataset.x_test)
  return {
    "proportional_test_acc": (totals[0] / num_test).tolist(),
    "weights_only_test_acc": (totals[1] / num_test).tolist(),
    "proportional_max_rel_error": (totals[2] / totals[3]).tolist(),
  }


def plot(results: dict[str, Any], path: str) -> None:
  """Draws both accuracy curves against the factor (log axis) into ``path``."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ValueError(
      "--out-png needs matplotlib; install the [plots] extra "
      "(`pip install optax-swr[plots]`) or drop --out-png."
    ) from error
  config, factors = results["config"], results["factors"]
  figure, axis = plt.subplots(figsize=(5.5, 3.8))
  axis.plot(
    factors, results["proportional_test_acc"], "o-", label="proportional"
  )
  axis.plot(
    factors, results["weights_only_test_acc"], "s-", label="weights only"
  )
  axis.axhline(
    results["base_test_acc"], color="grey", linestyle="--", label="unscaled"
  )
  axis.set_xscale("log")
  axis.set_xlabel("scaling factor c of every layer's weight")
  axis.set_ylabel("test accuracy")
  axis.set_ylim(0.0, 1.0)
  axis.grid(alpha=0.3)
  axis.legend(fontsize=8)
  axis.set_title(
    f"{config['data']} | {config['model']} | {config['epochs']} epochs",
    fontsize=9,
  )
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Trains, scales, evaluates; writes the JSON and the PNG if asked."""
  flags = parse_flags(argv)
  start = time.perf_counter()
  dataset = data.load(flags.data)
  model, variables = models_linen.create(
    flags.model,
    dataset.num_classes,
    dataset.x_train.shape[1:],
    seed=flags.seed,
  )
  params, base_accuracy = train(
    model, variables, dataset, flags.epochs, flags.seed
  )
  layers = [
    layer.path
    for layer in optax_swr.layers_from_linen(
      model, {"params": params}, dataset.x_train[:1]
    )
  ]
  results = {
    "config": {
      "data": flags.data,
      "model": flags.model,
      "epochs": flags.epochs,
      "seed": flags.seed,
      "batch_size": BATCH_SIZE,
      "lr": LR,
      "layers": ["/".join(path) for path in layers],
      "num_train": len(dataset.x_train),
      "num_test": len(dataset.x_test),
    },
    "versions": cli.versions(),
    "factors": list(flags.factors),
    "base_test_acc": base_accuracy,
    **scaling_curves(model, params, layers, dataset, flags.factors),
  }
  results["wall_time_s"] = time.perf_counter() - start
  report(results)
  if flags.out_json:
    cli.write_json(flags.out_json, results)
  if flags.out_png:
    plot(results, flags.out_png)
  return results


def report(results: dict[str, Any]) -> None:
  """Prints one line per factor."""
  print(f"unscaled test accuracy {results['base_test_acc']:.4f}")
  print(f"{'factor':>9s} {'proportional':>13s} {'weights only':>13s}", end="")
  print(f" {'rel err':>9s}")
  rows = zip(
    results["factors"],
    results["proportional_test_acc"],
    results["weights_only_test_acc"],
    results["proportional_max_rel_error"],
  )
  for factor, prop, weights_only, error in rows:
    print(f"{factor:9.4g} {prop:13.4f} {weights_only:13.4f} {error:9.1e}")
  print(f"wall time {results['wall_time_s']:.1f} s")


if __name__ == "__main__":
  main()
