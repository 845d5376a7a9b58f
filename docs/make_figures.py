"""Draws the documentation's figure: plasticity and weight norms, measured.

The numbers are the measured random-label report in ``examples/paper/results/``
(each method at the setting chosen on separate selection seeds; see
``examples/paper/RESULTS.md`` for the commands); nothing is trained here.

  python docs/make_figures.py  # writes docs/_static/weight_norms.png

Left: the training accuracy each method reaches at the end of each of 20
random-label tasks on Fashion-MNIST (MLP 784-100-100-10, Adam): vanilla Adam
loses the ability to fit new labels task after task. Right: the sum over
layers of the weight norms at the end of each task. Mean over the seeds, with
a band of one sample standard deviation.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import os

import matplotlib

matplotlib.use("Agg")  # files only, no screen
from matplotlib import ticker  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = "random_labels_report"
# (method, legend label), drawn in this order; the legend adds the setting.
CURVES = (
  ("vanilla", "vanilla Adam"),
  ("adamw", "AdamW"),
  ("l2_init", "L2 Init"),
  ("snp", "Shrink & Perturb"),
  ("cbp", "continual backprop"),
  ("swr", "SWR"),
  ("swr_ln", "SWR + LayerNorm"),
)
PANELS = (
  ("task_train_acc", "training accuracy at the end of the task"),
  ("weight_norms", "sum of layer weight norms"),
)


def per_task(entry: dict, key: str) -> np.ndarray:
  """[seeds, tasks] values of one metric; norms summed over layers."""
  values = np.array(entry[key], dtype=float)
  return values.sum(axis=-1) if key == "weight_norms" else values


def entry_of(results: dict, method: str) -> tuple[dict, str]:
  """The report's entry of ``method`` and its setting, as a legend shows it."""
  for entry in results["methods"].values():
    if entry["hparams"]["method"] == method:
      coefs = entry["hparams"]["coefs"]
      setting = ", ".join(f"{c:g}" for c in coefs)
      return entry, f" ({setting})" if coefs else ""
  raise ValueError(f"{RUN}.json has no entry of the method {method!r}.")


def draw(results_dir: str, out: str) -> str:
  """Draws both panels into one PNG at ``out``; returns ``out``."""
  with open(os.path.join(results_dir, RUN + ".json")) as file:
    results = json.load(file)
  figure, axes = plt.subplots(1, len(PANELS), figsize=(11, 3.6))
  for axis, (key, label) in zip(axes, PANELS):
    for name, legend in CURVES:
      entry, setting = entry_of(results, name)
      values = per_task(entry, key)
      tasks = np.arange(1, values.shape[1] + 1)
      mean, std = values.mean(0), values.std(0, ddof=1)
      style = "--" if name == "vanilla" else "-"
      axis.plot(tasks, mean, style, label=legend + setting, linewidth=1.4)
      axis.fill_between(tasks, mean - std, mean + std, alpha=0.15)
    axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axis.set_xlabel("task (fresh random labels)")
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  config = results["config"]
  figure.suptitle(
    f"random labels, {config['data']}, {config['num_examples']} images, "
    f"{config['steps_per_task']} steps per task, {config['seeds']} seeds",
    fontsize=9,
  )
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  figure.savefig(out, dpi=110)
  plt.close(figure)
  return out


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--results-dir", default=os.path.join(ROOT, "examples", "paper", "results")
  )
  parser.add_argument(
    "--out", default=os.path.join(ROOT, "docs", "_static", "weight_norms.png")
  )
  args = parser.parse_args(argv)
  print(draw(args.results_dir, args.out))


if __name__ == "__main__":
  main()
