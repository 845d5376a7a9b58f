"""Question 2: SWR's overhead on a full training step of the zoo's models.

Times one jitted training step, the one the examples train with
(``make_train_step`` of ``examples/train/linen.py``: forward, backward, Adam
update, BatchNorm statistics; with SWR also the BatchNorm sync), for the Linen
zoo's CNN, CNN-BN, VGG-16 and ResNet-18 (and, with ``--models``, the ViT) at
batch 256 on random 32x32x3 images with 10 classes: adam, adam + swr through
``tx.update`` and ``optax.apply_updates``, and adam + swr through
``swr(..., deferred=True)`` + ``optax_swr.rescale_params`` ("deferred"), side by side, with the params,
statistics and optimizer state donated; "paired %" is the median over rounds of
each round's SWR / Adam ratio (swr / deferred), steadier on a busy machine than the
lowest medians. SWR's layers are traced with
``optax_swr.layers_from_linen``; for ResNet-18 and the ViT, which are not
chains, ``--projection`` adds a loop that applies SWR without the traced
equations, so that the cost of their projection shows apart ("projection %",
of Adam's step). Prints the overhead in percent last and writes JSON. From the
repository root::

  python -m benchmarks.train_step --out benchmarks/results/train_step_cpu.json
  python -m benchmarks.train_step --quick    # width 8, batch 16: seconds
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import warnings

import flax.linen as nn
import jax
import optax

from benchmarks import _timing
from examples.models import linen as models_linen
from examples.train import linen as train_linen
import optax_swr

# The default set; any zoo model runs with --models (e.g. transformer, a ViT).
MODELS = ("cnn", "cnn_bn", "vgg16", "resnet18")
IN_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
QUICK_WIDTH, QUICK_BATCH = 8, 16


def train_loop(
  module: nn.Module,
  variables: dict,
  tx: optax.GradientTransformation,
  x: jax.Array,
  y: jax.Array,
  layers: Sequence[optax_swr.Layer] | None = None,
  deferred: bool = False,
) -> _timing.Loop:
  """A loop of training steps on a copy of ``variables``, on one batch.

  The step is the examples' Linen step (``examples/train/linen.py``'s
  ``make_train_step``), which syncs the BatchNorm statistics when ``tx``
  holds SWR and the model has BatchNorm; its metrics are not returned, so
  ``jit`` drops what only they need.

  Args:
    module: the Linen model.
    variables: its ``params`` (and ``batch_stats``).
    tx: the optimizer.
    x: the images.
    y: the labels.
    layers: the layers ``tx``'s SWR rescales.
    deferred: ``tx``'s SWR is deferred; end the step with
      ``optax_swr.rescale_params``.
  """
  train_step = train_linen.make_train_step(module.apply, tx, layers, deferred)
  step = lambda *args: train_step(*args)[:3]
  params = _timing.fresh_copy(variables["params"])
  batch_stats = _timing.fresh_copy(variables.get("batch_stats", {}))
  return _timing.Loop(
    jax.jit(step, donate_argnums=(0, 1, 2)),
    (params, batch_stats, tx.init(params)),
    (x, y),
  )


def model_loops(
  name: str, width: int | None, batch: int, projection: bool = False
) -> tuple[dict[str, _timing.Loop], int]:
  """The adam and adam + swr loops of one zoo model, and its param count."""
  module, variables = models_linen.create(
    name, NUM_CLASSES, IN_SHAPE, width=width
  )
  x_key, y_key = jax.random.split(jax.random.key(0))
  x = jax.random.normal(x_key, (batch, *IN_SHAPE))
  y = jax.random.randint(y_key, (batch,), 0, NUM_CLASSES)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optax_swr.ConstrainedLayersWarning)
    layers = optax_swr.layers_from_linen(module, variables, x[:1], train=True)
  swr = optax.chain(optax.adam(1e-3), optax_swr.swr(1e-3, layers=layers))
  fast = optax.chain(
    optax.adam(1e-3), optax_swr.swr(1e-3, layers=layers, deferred=True)
  )
  loops = {
    "adam": train_loop(module, variables, optax.adam(1e-3), x, y),
    "adam+swr": train_loop(module, variables, swr, x, y, layers),
    "adam+swr deferred": train_loop(
      module, variables, fast, x, y, layers, deferred=True
    ),
  }
  if projection and layers.graph is not None:  # the equations' projection
    chain_rule = optax.chain(
      optax.adam(1e-3), optax_swr.swr(1e-3, layers=layers.chain_rule())
    )
    loops["adam+swr chain rule"] = train_loop(
      module, variables, chain_rule, x, y, layers
    )
  return loops, _timing.num_params(variables["params"])


def is_attention_key_bias(path: str) -> bool:
  """Whether a leaf is an attention key projection's bias (or its state).

  Its gradient is zero in exact arithmetic (the softmax over keys is blind to
  adding one query's constant ``q . b`` to every logit), so Adam's first step
  is rounding noise over epsilon: two programs that round differently move it
  differently, by up to the learning rate, with the same network function.
  """
  return "['key']['bias']" in path


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}"
  )
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument(
    "--width",
    type=int,
    default=None,
    help="models_linen.create's width; default: the paper's",
  )
  parser.add_argument(
    "--projection",
    action="store_true",
    help="also time SWR without the traced equations of non-chain models",
  )
  _timing.add_flags(parser, repeats=10, rounds=3)
  args = parser.parse_args(argv)
  _timing.quick_counts(args)
  if args.quick:
    args.width, args.batch = QUICK_WIDTH, QUICK_BATCH
  rows = []
  for name in args.models.split(","):
    loops, size = model_loops(name, args.width, args.batch, args.projection)
    difference, noise = _timing.first_step_difference(
      loops["adam+swr"], loops["adam+swr deferred"], is_attention_key_bias
    )
    timings = _timing.compare(loops, args.repeats, args.rounds)
    seconds = {variant: t["seconds"] for variant, t in timings.items()}
    rows.append(
      {
        "model": name,
        "params": size,
        "seconds": seconds,
        "round_medians": {v: t["round_medians"] for v, t in timings.items()},
        # The chained and deferred steps time one rule: equal params after a
        # step, up to float rounding; the attention key biases apart.
        "deferred_vs_chain_max_abs": difference,
        "deferred_vs_chain_key_bias_max_abs": noise,
        "overhead_percent": 100 * (seconds["adam+swr"] / seconds["adam"] - 1),
        "deferred_overhead_percent": 100
        * (seconds["adam+swr deferred"] / seconds["adam"] - 1),
        # Each round's medians compared within the round: steadier on a
        # loaded machine than the lowest medians above.
        "paired_percent": {
          variant: _timing.paired_percent(timings[variant], timings["adam"])
          for variant in timings
          if variant != "adam"
        },
        # What the projection (residual nets, attention) adds, in % of Adam.
        "projection_percent": 100
        * (seconds["adam+swr"] - seconds["adam+swr chain rule"])
        / seconds["adam"]
        if "adam+swr chain rule" in seconds
        else None,
      }
    )
    del loops
  _timing.report(
    {
      "batch": args.batch,
      "width": args.width,
      "in_shape": IN_SHAPE,
      "repeats": args.repeats,
      "rounds": args.rounds,
      "rows": rows,
    },
    args.out,
    [
      ("model", "s"),
      ("params", "d"),
      ("adam ms", ".2f"),
      ("adam+swr ms", ".2f"),
      ("deferred ms", ".2f"),
      ("overhead %", "+.1f"),
      ("deferred %", "+.1f"),
      ("paired %", "s"),
      ("projection %", "s"),
    ],
    [
      [
        r["model"],
        r["params"],
        1e3 * r["seconds"]["adam"],
        1e3 * r["seconds"]["adam+swr"],
        1e3 * r["seconds"]["adam+swr deferred"],
        r["overhead_percent"],
        r["deferred_overhead_percent"],
        "{:+.1f} / {:+.1f}".format(
          r["paired_percent"]["adam+swr"],
          r["paired_percent"]["adam+swr deferred"],
        ),
        "-"
        if r["projection_percent"] is None
        else f"{r['projection_percent']:+.1f}",
      ]
      for r in rows
    ],
    title=f"batch {args.batch}, width {args.width or 'paper'}",
  )


if __name__ == "__main__":
  main()
