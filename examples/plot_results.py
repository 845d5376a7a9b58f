"""Draws the paper's figures from the JSON files of the protocol scripts.

For every JSON file: test accuracy per epoch (mean over seeds, a band of one
standard deviation, the ``from_scratch`` reference dashed), the total weight
norm over time, and balancedness over time where it is defined. PNGs go to
``--out-dir`` under the JSON file's name.

  python examples/plot_results.py examples/results/*.json --out-dir examples/figures
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

PANELS = (
  ("test_acc", "test accuracy"),
  ("weight_norms", "sum of layer weight norms"),
  ("balancedness", "balancedness (l2 path norm / its minimum)"),
)


def series(entry: dict, key: str) -> np.ndarray | None:
  """[seeds, epochs] values of one metric; norms summed over layers."""
  values = entry.get(key)
  if values is None or any(v is None for v in values):
    return None
  array = np.array(values, dtype=float)
  return array.sum(axis=-1) if key == "weight_norms" else array


def plot_file(path: str, out_dir: str) -> str:
  """Draws one JSON file's three panels into one PNG; returns its path."""
  with open(path) as file:
    results = json.load(file)
  config = results["config"]
  panels = [
    p
    for p in PANELS
    if any(series(e, p[0]) is not None for e in results["methods"].values())
  ]
  figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
  for axis, (key, label) in zip(np.atleast_1d(axes), panels):
    for name, entry in results["methods"].items():
      values = series(entry, key)
      if values is None:
        continue
      # Runs shorter than the others (from_scratch) end with them.
      total = max(len(e["test_acc"][0]) for e in results["methods"].values())
      epochs = np.arange(1, values.shape[1] + 1) + total - values.shape[1]
      style = "--" if name == "from_scratch" else "-"
      mean, std = values.mean(0), values.std(0)
      axis.plot(epochs, mean, style, label=name, linewidth=1.2)
      axis.fill_between(epochs, mean - std, mean + std, alpha=0.15)
    axis.set_xlabel("epoch")
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)
  np.atleast_1d(axes)[0].legend(fontsize=7)
  title = (
    f"{config['protocol']} | {config['data']} | {config['model']} | "
    f"{config['epochs']} epochs per phase | {config['seeds']} seeds"
  )
  figure.suptitle(title, fontsize=9)
  figure.tight_layout()
  os.makedirs(out_dir, exist_ok=True)
  out = os.path.join(out_dir, os.path.basename(path).replace(".json", ".png"))
  figure.savefig(out, dpi=110)
  plt.close(figure)
  return out


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("files", nargs="+", help="JSON files of the protocols")
  parser.add_argument("--out-dir", default="examples/figures")
  args = parser.parse_args(argv)
  for path in args.files:
    print(plot_file(path, args.out_dir))


if __name__ == "__main__":
  main()
