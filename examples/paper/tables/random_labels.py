"""The random-label tables: one per run of ``examples.paper.random_labels``,
then the calibration pilots (its ``--calibrate``). The runs of
``--from-selection`` and their selection runs are reported by
``selected.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from examples.paper.tables import common


def section(results: Sequence[dict[str, Any]]) -> list[str]:
  """One table per random-label run, then the calibration pilots."""
  runs = common.plain_runs(results, "random_labels")
  calibrations = common.of_kind(results, "calibration")
  if not runs and not calibrations:
    return []
  lines = ["### Random-label tasks", ""]
  for result in runs:
    lines += random_label_table(result)
  for result in calibrations:
    lines += calibration_table(result)
  return lines


def random_label_table(result: dict[str, Any]) -> list[str]:
  """Training accuracy by task, its last tasks against vanilla, diagnostics."""
  methods = result["methods"]
  tasks = result["config"]["tasks"]
  shown = sorted({0, (tasks - 1) // 2, tasks - 1})
  recent = min(5, tasks)
  header = [
    "entry",
    *(f"task {t + 1}" for t in shown),
    f"last {recent} tasks",
    f"last {recent} − vanilla",
    "λ × steps",
    "Σ‖W‖ at the end",
    "dormant",
    "eff. rank",
  ]
  baseline = None
  if "vanilla" in methods:
    baseline = last_tasks_mean(methods["vanilla"], recent)
  rows = [
    random_label_row(name, methods[name], shown, recent, baseline)
    for name in common.ordered(methods)
  ]
  return [
    f"#### {result['name']}",
    "",
    *common.markdown_table(header, rows),
    "",
    "Training accuracy on all the examples at the end of each task; "
    f"last {recent} tasks: the mean over them per seed. The last three "
    "columns are means over seeds at the last task: the layers' summed "
    "weight norm, the fraction of dormant hidden units, the effective rank "
    "of the last hidden layer. " + common.STATS_NOTE + " " + common.PULL_NOTE,
    "",
    random_label_settings(result),
    "",
  ]


def last_tasks_mean(entry: dict[str, Any], recent: int) -> np.ndarray:
  """Each seed's mean training accuracy over the last ``recent`` tasks."""
  return np.asarray(entry["task_train_acc"], float)[:, -recent:].mean(axis=1)


def random_label_row(
  name: str,
  entry: dict[str, Any],
  shown: Sequence[int],
  recent: int,
  baseline: np.ndarray | None,
) -> list[str]:
  accuracy = np.asarray(entry["task_train_acc"], float)
  last = last_tasks_mean(entry, recent)
  compare = name != "vanilla" and baseline is not None
  norms = np.asarray(entry["weight_norms"], float)[:, -1].sum(axis=-1)
  return [
    name,
    *(common.mean_std_cell(accuracy[:, t]) for t in shown),
    common.mean_std_cell(last),
    common.difference_cell(last, baseline) if compare else "",
    common.pull_cell(entry),
    f"{norms.mean():.1f}",
    f"{np.mean(np.asarray(entry['dormant_fraction'])[:, -1]):.3f}",
    f"{np.mean(np.asarray(entry['effective_rank'])[:, -1]):.1f}",
  ]


def random_label_settings(result: dict[str, Any]) -> str:
  config = result["config"]
  return (
    f"Settings: {common.data_name(config)}, {config['num_examples']} examples, "
    f"{config['tasks']} tasks × {config['steps_per_task']} steps, "
    f"{common.seeds_text(config)}, batch {config['batch_size']}, Adam lr "
    f"{config['lr']:g}, coefficients {common.coefficients_text(config)}; "
    f"{common.minutes(result):.1f} min."
  )


def calibration_table(result: dict[str, Any]) -> list[str]:
  """Vanilla's task-1 training accuracy at each checkpoint of the pilot."""
  config, calibration = result["config"], result["calibration"]
  accuracy = np.asarray(calibration["train_acc"], float)  # [seed, checkpoint]
  rows = [
    [str(step), f"{accuracy[:, i].mean():.4f}", f"{accuracy[:, i].min():.4f}"]
    for i, step in enumerate(calibration["steps"])
  ]
  return [
    f"#### Calibration: {result['name']}",
    "",
    *common.markdown_table(["steps", "mean", "min over seeds"], rows),
    "",
    f"Vanilla Adam's training accuracy on task 1 ({common.data_name(config)}, "
    f"{config['num_examples']} examples, {config['seeds']} seeds, batch "
    f"{config['batch_size']}). Calibrated steps per task, the first "
    f"checkpoint where every seed reaches {calibration['target']:g}: "
    f"{calibration['calibrated_steps']}; {common.minutes(result):.1f} min.",
    "",
  ]
