"""Draws the documentation's figure of weight norms, vanilla Adam against SWR.

The numbers are the measured runs in ``examples/results/`` (see
``examples/RESULTS.md`` for the commands); nothing is trained here.

  python docs/make_figures.py  # writes docs/_static/weight_norms.png

Left: the digits CNN warm start with 100 epochs per phase, vanilla against
SWR at the paper's lambda = 1e-3. Right: the Fashion-MNIST MLP warm start,
vanilla against SWR at lambda = 1e-4 (the paper's value) and the sweep's
1e-3, 1e-2, 1e-1. Each curve is the sum over layers of the Frobenius norm of
the layer's weight after each epoch, mean over 3 seeds, with a band of one
standard deviation.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import os

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (JSON file, method in it, legend label) per curve, one list per panel.
PANELS = (
  (
    "digits CNN, warm start, 100 epochs per phase",
    (
      ("warm_start_long_digits_cnn", "vanilla", "vanilla Adam"),
      ("warm_start_long_digits_cnn", "swr", "SWR, λ = 1e-3"),
    ),
  ),
  (
    "Fashion-MNIST MLP, warm start, 5 epochs per phase",
    (
      ("warm_start_fashion_mnist_mlp", "vanilla", "vanilla Adam"),
      ("warm_start_fashion_mnist_mlp", "swr", "SWR, λ = 1e-4"),
      ("sweep_warm_start_fashion_mnist_mlp_1e-3", "swr", "SWR, λ = 1e-3"),
      ("sweep_warm_start_fashion_mnist_mlp_1e-2", "swr", "SWR, λ = 1e-2"),
      ("sweep_warm_start_fashion_mnist_mlp_1e-1", "swr", "SWR, λ = 1e-1"),
    ),
  ),
)


def summed_norms(results_dir: str, name: str, method: str) -> np.ndarray:
  """[seeds, epochs]: the sum over layers of the weight norms after each epoch."""
  with open(os.path.join(results_dir, name + ".json")) as file:
    results = json.load(file)
  return np.array(results["methods"][method]["weight_norms"]).sum(axis=-1)


def draw(results_dir: str, out: str) -> str:
  """Draws both panels into one PNG at ``out``; returns ``out``."""
  figure, axes = plt.subplots(1, len(PANELS), figsize=(11, 3.6))
  for axis, (title, curves) in zip(axes, PANELS):
    for name, method, label in curves:
      norms = summed_norms(results_dir, name, method)
      epochs = np.arange(1, norms.shape[1] + 1)
      mean, std = norms.mean(0), norms.std(0)
      style = "--" if method == "vanilla" else "-"
      axis.plot(epochs, mean, style, label=label, linewidth=1.4)
      axis.fill_between(epochs, mean - std, mean + std, alpha=0.15)
    # The halfway point, where the warm start switches to all the data.
    axis.axvline(norms.shape[1] / 2, color="gray", linewidth=0.8, alpha=0.6)
    axis.set_title(title, fontsize=9)
    axis.set_xlabel("epoch")
    axis.set_ylabel("sum of layer weight norms")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  figure.savefig(out, dpi=110)
  plt.close(figure)
  return out


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--results-dir", default=os.path.join(ROOT, "examples", "results")
  )
  parser.add_argument(
    "--out", default=os.path.join(ROOT, "docs", "_static", "weight_norms.png")
  )
  args = parser.parse_args(argv)
  print(draw(args.results_dir, args.out))


if __name__ == "__main__":
  main()
