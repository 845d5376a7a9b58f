"""Question 4: how an optimizer step's time grows with params and with layers.

Two sweeps of ``optimizer_step.py``'s models (square dense layers with
biases), adam against adam + swr side by side: against the parameter count at
a fixed depth (growing width), and against the layer count at a fixed total
of parameters (growing depth, shrinking width). Writes JSON, a two-panel plot
(time per step on the left axis, adam+swr / adam on the right) and prints the
table last. From the repository root::

  python -m benchmarks.scaling --out benchmarks/results/scaling_cpu.json \\
      --plot benchmarks/results/scaling_cpu.png
  python -m benchmarks.scaling --quick --plot /tmp/scaling.png   # seconds
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import math
from typing import Any

from benchmarks import _timing
from benchmarks import optimizer_step

OPTIMIZERS = ("adam", "adam+swr")
# (depth, widths): the params sweep; (total params, depths): the layers sweep.
PARAMS_SWEEP = (8, (256, 512, 1024, 2048, 3072))  # 0.5M to 75M params
LAYERS_SWEEP = (2**24, (2, 4, 8, 16, 32, 64, 128, 256))  # 16.8M params
QUICK_PARAMS_SWEEP = (4, (64, 128))
QUICK_LAYERS_SWEEP = (2**14, (2, 8))


def sweep_shapes(
  params_sweep: tuple[int, Sequence[int]],
  layers_sweep: tuple[int, Sequence[int]],
) -> list[tuple[str, int, int]]:
  """``(sweep, layers, width)`` of every model of both sweeps."""
  depth, widths = params_sweep
  total, depths = layers_sweep
  return [("params", depth, width) for width in widths] + [
    ("layers", layers, round(math.sqrt(total / layers))) for layers in depths
  ]


def plot(rows: Sequence[dict[str, Any]], path: str) -> None:
  """Two panels: time per step against params, and against layers."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  figure, axes = plt.subplots(1, 2, figsize=(11, 4))
  for axis, sweep, label in (
    (axes[0], "params", "parameters"),
    (axes[1], "layers", "layers"),
  ):
    chosen = [r for r in rows if r["sweep"] == sweep]
    x = [r[sweep] for r in chosen]
    for optimizer in OPTIMIZERS:
      axis.plot(
        x,
        [1e3 * r["seconds"][optimizer] for r in chosen],
        "o-",
        label=optimizer,
      )
    ratio_axis = axis.twinx()
    ratio_axis.plot(
      x, [r["adam+swr/adam"] for r in chosen], "k--", label="adam+swr / adam"
    )
    ratio_axis.set_ylabel("adam+swr / adam")
    axis.set(
      xscale="log",
      yscale="log",
      xlabel=label,
      ylabel="ms per step",
      title=_title(chosen, sweep),
    )
    handles = [
      *axis.get_legend_handles_labels()[0],
      *ratio_axis.get_legend_handles_labels()[0],
    ]
    axis.legend(handles=handles, loc="upper left")
  figure.tight_layout()
  _timing.make_parent(path)
  figure.savefig(path, dpi=120)


def _title(rows: Sequence[dict[str, Any]], sweep: str) -> str:
  if sweep == "params":
    return f"{rows[0]['layers']} layers, growing width"
  return f"about {rows[0]['params']:.2g} params, growing depth"


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--plot", default=None, help="write the figure here")
  _timing.add_flags(parser, repeats=20, rounds=3)
  args = parser.parse_args(argv)
  _timing.quick_counts(args)
  shapes = (
    sweep_shapes(QUICK_PARAMS_SWEEP, QUICK_LAYERS_SWEEP)
    if args.quick
    else sweep_shapes(PARAMS_SWEEP, LAYERS_SWEEP)
  )
  rows = []
  for sweep, layers, width in shapes:
    params = optimizer_step.make_params(layers, width)
    seconds, _ = optimizer_step.time_optimizers(
      params, OPTIMIZERS, args.repeats, args.rounds
    )
    rows.append(
      {
        "sweep": sweep,
        "layers": layers,
        "width": width,
        "params": _timing.num_params(params),
        "seconds": seconds,
        "adam+swr/adam": seconds["adam+swr"] / seconds["adam"],
      }
    )
    del params
  if args.plot:
    plot(rows, args.plot)
  _timing.report(
    {"repeats": args.repeats, "rounds": args.rounds, "rows": rows},
    args.out,
    [
      ("sweep", "s"),
      ("layers", "d"),
      ("width", "d"),
      ("params", "d"),
      ("adam ms", ".3f"),
      ("adam+swr ms", ".3f"),
      ("swr/adam", ".3f"),
    ],
    [
      [
        r["sweep"],
        r["layers"],
        r["width"],
        r["params"],
        1e3 * r["seconds"]["adam"],
        1e3 * r["seconds"]["adam+swr"],
        r["adam+swr/adam"],
      ]
      for r in rows
    ],
  )


if __name__ == "__main__":
  main()
