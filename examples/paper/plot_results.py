"""Draws the figures of the experiments' JSON files.

* A protocol run (warm start, continual, generalization): test accuracy per
  epoch, the layers' summed weight norms, and balancedness where it is
  defined. The mean over seeds with a band of one sample standard deviation
  (``ddof=1``); when the seeds trained for different numbers of epochs
  (``--until-train-acc``), every seed's curve, thin. ``from_scratch`` is
  dashed and ends where the longest run ends.
* A random-label run: per task, the training accuracy, the summed weight
  norm, the fraction of dormant units and the effective rank; the mean over
  seeds with its 95% t interval.
* A calibration pilot: vanilla's task-1 training accuracy per checkpoint.
* A permuted-input run: per task, the online accuracy and the summed
  weight norm; its calibration pilot: vanilla's online accuracy per task.
* A Figure-1 file, a beyond-chains file: the figure their scripts draw
  (``examples.paper.figure1``, ``examples.paper.beyond_chains``).

Each PNG goes to ``--out-dir`` under its JSON file's name. Needs matplotlib
(the [plots] extra).

  python -m examples.paper.plot_results examples/paper/results/*.json \\
      --out-dir examples/paper/figures
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import os
from typing import Any

import numpy as np

from examples import cli
from examples.paper import beyond_chains
from examples.paper import figure1
from examples.paper import stats
from examples.paper.tables import common

PROTOCOL_PANELS = (
  ("test_acc", "test accuracy"),
  ("weight_norms", "sum of layer weight norms"),
  ("balancedness", "balancedness (l2 path norm / its minimum)"),
)
RANDOM_LABEL_PANELS = (
  ("task_train_acc", "training accuracy at the end of the task"),
  ("weight_norms", "sum of layer weight norms"),
  ("dormant_fraction", "fraction of dormant units"),
  ("effective_rank", "effective rank (last hidden layer)"),
)
PERMUTED_PANELS = (
  ("task_online_acc", "online accuracy during the task"),
  ("weight_norms", "sum of layer weight norms"),
)


def pyplot() -> Any:
  """matplotlib's pyplot, drawing to files only."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(
      "examples.paper.plot_results needs matplotlib: "
      "pip install 'optax-swr[plots]'."
    ) from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def plot_file(path: str, out_dir: str) -> str:
  """Draws one JSON file into ``out_dir``; returns the PNG's path."""
  with open(path) as file:
    results = json.load(file)
  os.makedirs(out_dir, exist_ok=True)
  name = os.path.splitext(os.path.basename(path))[0]
  out = os.path.join(out_dir, f"{name}.png")
  kind = common.kind_of(results, path)
  if kind in ("figure1", "beyond_chains"):  # Their scripts draw them.
    (figure1 if kind == "figure1" else beyond_chains).plot(results, out)
    return out
  draw = {
    "protocol": plot_protocol,
    "random_labels": plot_random_labels,
    "calibration": plot_calibration,
    "permuted_inputs": plot_permuted,
    "permuted_calibration": plot_permuted_calibration,
  }[kind]
  plt = pyplot()
  figure = draw(plt, results)
  figure.tight_layout()
  figure.savefig(out, dpi=110)
  plt.close(figure)
  return out


# Protocol runs.


def curves(entry: dict[str, Any], key: str) -> list[np.ndarray] | None:
  """Each seed's values of one metric per epoch; norms summed over layers."""
  values = entry.get(key)
  if values is None or any(v is None for seed in values for v in seed):
    return None
  arrays = [np.asarray(seed, dtype=float) for seed in values]
  return [a.sum(axis=-1) for a in arrays] if key == "weight_norms" else arrays


def padded(seeds: Sequence[np.ndarray]) -> np.ndarray:
  """``[seeds, longest]``, NaN after a seed's last epoch."""
  out = np.full((len(seeds), max(len(s) for s in seeds)), np.nan)
  for row, seed in zip(out, seeds):
    row[: len(seed)] = seed
  return out


def trace_epochs(entry: dict[str, Any]) -> list[np.ndarray]:
  """Each seed's epoch numbers of its traces: all of them, or those that
  ``examples.paper.compact_results`` kept (``trace_epochs``)."""
  kept = entry.get("trace_epochs")
  if kept is not None:
    return [np.asarray(seed) for seed in kept]
  return [np.arange(1, len(seed) + 1) for seed in entry["test_acc"]]


def plot_protocol(plt: Any, results: dict[str, Any]) -> Any:
  """Test accuracy, weight norms and balancedness per epoch."""
  methods = results["methods"]
  panels = [
    p for p in PROTOCOL_PANELS if any(curves(e, p[0]) for e in methods.values())
  ]
  figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
  epochs = {name: trace_epochs(entry) for name, entry in methods.items()}
  total = max(int(seed[-1]) for seeds in epochs.values() for seed in seeds)
  ragged = any(len({int(s[-1]) for s in e}) > 1 for e in epochs.values())
  for axis, (key, label) in zip(np.atleast_1d(axes), panels):
    for index, name in enumerate(common.ordered(methods)):
      seeds = curves(methods[name], key)
      if seeds is not None:
        color = f"C{index % 10}"
        draw_epochs(axis, name, seeds, epochs[name], color, total, ragged)
    axis.set_xlabel("epoch")
    axis.set_ylabel(label)
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3)
  np.atleast_1d(axes)[0].legend(fontsize=7)
  figure.suptitle(protocol_title(results, ragged), fontsize=9)
  return figure


def draw_epochs(
  axis: Any,
  name: str,
  seeds: Sequence[np.ndarray],
  epochs: Sequence[np.ndarray],
  color: str,
  total: int,
  ragged: bool,
) -> None:
  """One method's curves at their ``epochs`` (per seed); ``from_scratch``
  ends at epoch ``total``."""
  style = "--" if name == "from_scratch" else "-"
  if name == "from_scratch":  # Its longest seed ends with the others.
    shift = total - max(int(seed[-1]) for seed in epochs)
    epochs = [seed + shift for seed in epochs]
  if ragged:
    for number, (x, seed) in enumerate(zip(epochs, seeds)):
      label = name if number == 0 else None
      axis.plot(x, seed, style, color=color, label=label, linewidth=0.7)
    return
  values = padded(seeds)
  epochs = max(epochs, key=len)
  mean = np.nanmean(values, axis=0)
  std = np.nanstd(values, axis=0, ddof=1) if len(values) > 1 else 0 * mean
  axis.plot(epochs, mean, style, color=color, label=name, linewidth=1.2)
  axis.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.15)


def protocol_title(results: dict[str, Any], ragged: bool) -> str:
  config = results["config"]
  budget = f"{config['epochs']} epochs per phase"
  if config.get("until_train_acc") is not None:
    budget = (
      f"until train acc {config['until_train_acc']:g} "
      f"(at most {config['epochs']} epochs per phase)"
    )
  spread = "each seed" if ragged else "mean ± sample std"
  return (
    f"{config['protocol']} | {common.data_name(config)} | "
    f"{config['model']} | {budget} | {config['seeds']} seeds, {spread}"
  )


# Random-label runs and their calibration.


def plot_random_labels(plt: Any, results: dict[str, Any]) -> Any:
  """Four panels per task: accuracy, norms, dormant units, effective rank."""
  config = results["config"]
  return plot_tasks(
    plt,
    results,
    RANDOM_LABEL_PANELS,
    f"random labels | {common.data_name(config)} | "
    f"{config['num_examples']} examples | {config['tasks']} tasks x "
    f"{config['steps_per_task']} steps | {config['seeds']} seeds, "
    "mean and 95% t interval",
  )


def plot_permuted(plt: Any, results: dict[str, Any]) -> Any:
  """Two panels per task: online accuracy and norms."""
  config = results["config"]
  return plot_tasks(
    plt,
    results,
    PERMUTED_PANELS,
    f"permuted inputs | {common.data_name(config)} | "
    f"{config['tasks']} tasks x {config['examples_per_task']} examples | "
    f"{config['seeds']} seeds, mean and 95% t interval",
  )


def plot_tasks(
  plt: Any,
  results: dict[str, Any],
  panels: Sequence[tuple[str, str]],
  title: str,
) -> Any:
  """One panel per ``(key, label)``: every method's values per task."""
  methods = results["methods"]
  figure, axes = plt.subplots(1, len(panels), figsize=(5.25 * len(panels), 4.2))
  for axis, (key, label) in zip(axes, panels):
    for index, name in enumerate(common.ordered(methods)):
      values = np.asarray(methods[name][key], dtype=float)
      if key == "weight_norms":
        values = values.sum(axis=-1)
      draw_tasks(axis, name, values, f"C{index % 10}")
    axis.set_xlabel("task")
    axis.set_ylabel(label)
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3)
  axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  figure.suptitle(title, fontsize=9)
  return figure


def draw_tasks(axis: Any, name: str, values: np.ndarray, color: str) -> None:
  """The mean over seeds (``values``: [seed, task]) with its 95% interval."""
  # The interval of a mean is the paired interval of the values against 0.
  intervals = [stats.paired(task, np.zeros_like(task)) for task in values.T]
  tasks = np.arange(1, values.shape[1] + 1)
  mean = [i.mean for i in intervals]
  axis.plot(tasks, mean, color=color, label=name, linewidth=1.2)
  axis.fill_between(
    tasks,
    [i.low for i in intervals],
    [i.high for i in intervals],
    color=color,
    alpha=0.15,
  )


def plot_calibration(plt: Any, results: dict[str, Any]) -> Any:
  """Vanilla's task-1 training accuracy per seed, the target, the choice."""
  calibration = results["calibration"]
  steps = calibration["steps"]
  figure, axis = plt.subplots(figsize=(6, 4))
  for number, seed in enumerate(calibration["train_acc"]):
    label = "each seed" if number == 0 else None
    axis.plot(steps, seed, color="C0", linewidth=0.7, label=label)
  target = calibration["target"]
  axis.axhline(target, color="grey", linestyle="--", label=f"target {target}")
  if calibration["calibrated_steps"] is not None:
    axis.axvline(calibration["calibrated_steps"], color="C3", linestyle=":")
  axis.set_xlabel("steps on task 1")
  axis.set_ylabel("vanilla training accuracy")
  axis.grid(alpha=0.3)
  axis.legend(fontsize=8)
  config = results["config"]
  axis.set_title(
    f"calibration | {common.data_name(config)} | "
    f"{config['num_examples']} examples | calibrated steps "
    f"{calibration['calibrated_steps']}",
    fontsize=9,
  )
  return figure


def plot_permuted_calibration(plt: Any, results: dict[str, Any]) -> Any:
  """Vanilla's online accuracy per task, and the calibrated task count."""
  calibration = results["calibration"]
  figure, axis = plt.subplots(figsize=(6, 4))
  online = np.asarray(calibration["online_acc"], dtype=float)
  draw_tasks(axis, "vanilla", online, "C0")
  if calibration["calibrated_tasks"] is not None:
    axis.axvline(calibration["calibrated_tasks"], color="C3", linestyle=":")
  axis.set_xlabel("task")
  axis.set_ylabel("vanilla online accuracy")
  axis.grid(alpha=0.3)
  config = results["config"]
  axis.set_title(
    f"calibration | permuted {common.data_name(config)} | "
    f"{config['examples_per_task']} examples per task | calibrated tasks "
    f"{calibration['calibrated_tasks']}",
    fontsize=9,
  )
  return figure


def main(argv: Sequence[str] | None = None) -> None:
  parser = cli.parser(__doc__)
  parser.add_argument("files", nargs="+", help="the experiments' JSON files")
  parser.add_argument("--out-dir", default="examples/paper/figures")
  args = parser.parse_args(argv)
  for path in args.files:
    print(plot_file(path, args.out_dir))


if __name__ == "__main__":
  main()
