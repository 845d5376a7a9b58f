"""The permuted-input tables: one per run of
``examples.paper.permuted_inputs``, then its calibration pilots
(``--calibrate``). The runs of ``--from-selection`` and their selection runs
are reported by ``selected.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from examples.paper import permuted_inputs
from examples.paper import stats
from examples.paper.tables import common


def section(results: Sequence[dict[str, Any]]) -> list[str]:
  """One table per permuted-input run, then the calibration pilots."""
  runs = common.plain_runs(results, "permuted_inputs")
  calibrations = common.of_kind(results, "permuted_calibration")
  if not runs and not calibrations:
    return []
  lines = ["### Permuted inputs", ""]
  for result in runs:
    lines += permuted_table(result)
  for result in calibrations:
    lines += calibration_table(result)
  return lines


def window(config: dict[str, Any]) -> int:
  """How many first and last tasks the online accuracy averages."""
  return min(permuted_inputs.WINDOW, config["tasks"])


def online_windows(
  entry: dict[str, Any], config: dict[str, Any]
) -> tuple[np.ndarray, ...]:
  """Per seed, the mean online accuracy of the first and the last tasks."""
  online = np.asarray(entry["task_online_acc"], float)
  return permuted_inputs.window_scores(online, config["tasks"])


def permuted_table(result: dict[str, Any]) -> list[str]:
  """Online accuracy of the first and last tasks, what was kept of task 1."""
  methods, config = result["methods"], result["config"]
  tasks = window(config)
  header = [
    "entry",
    f"first {tasks} tasks",
    f"last {tasks} tasks",
    f"last {tasks} − vanilla",
    "task 1 test acc at the end",
    "λ × steps",
    "‖W‖/n at the end",
  ]
  baseline = None
  if "vanilla" in methods:
    baseline = online_windows(methods["vanilla"], config)[1]
  rows = []
  for name in common.ordered(methods):
    entry = methods[name]
    first, last = online_windows(entry, config)
    compare = name != "vanilla" and baseline is not None
    rows.append(
      [
        name,
        common.mean_std_cell(first),
        common.mean_std_cell(last),
        common.difference_cell(last, baseline) if compare else "",
        common.mean_std_cell(entry["first_task_test_acc"]),
        common.pull_cell(entry),
        common.norm_ratio_cell(entry),
      ]
    )
  return [
    f"#### {result['name']}",
    "",
    *common.markdown_table(header, rows),
    "",
    ONLINE_NOTE.format(tasks=tasks)
    + " "
    + common.STATS_NOTE
    + " "
    + common.PULL_NOTE
    + " "
    + common.NORM_RATIO_NOTE,
    "",
    permuted_settings(result),
    "",
  ]


ONLINE_NOTE = (
  "Online accuracy: each batch scored before its update, the mean over the "
  "first and the last {tasks} tasks per seed. Task 1 test acc: the test set "
  "under task 1's permutation, after the last task."
)


def permuted_settings(result: dict[str, Any]) -> str:
  """Data, tasks, examples, seeds, batch, coefficients and wall time."""
  config = result["config"]
  return (
    f"Settings: {common.data_name(config)}, {config['tasks']} tasks × "
    f"{config['examples_per_task']} examples seen once "
    f"({config['steps_per_task']} steps), {common.seeds_text(config)}, batch "
    f"{config['batch_size']}, Adam lr {config['lr']:g}, coefficients "
    f"{common.coefficients_text(config)}; {common.minutes(result):.1f} min."
  )


def calibration_table(result: dict[str, Any]) -> list[str]:
  """Vanilla's online accuracy, last tasks against first, per task count."""
  config, calibration = result["config"], result["calibration"]
  tasks = calibration["window"]
  rows = [
    [
      str(row["tasks"]),
      common.mean_std_cell(row["first"]),
      common.mean_std_cell(row["last"]),
      str(stats.paired(row["last"], row["first"])),
    ]
    for row in calibration["table"]
  ]
  header = ["tasks", f"first {tasks}", f"last {tasks}", "last − first"]
  return [
    f"#### Calibration: {result['name']}",
    "",
    *common.markdown_table(header, rows),
    "",
    f"Vanilla Adam's online accuracy over the first and the last {tasks} "
    f"of the first n tasks ({common.data_name(config)}, "
    f"{config['examples_per_task']} examples per task, "
    f"{common.seeds_text(config)}, batch {config['batch_size']}). "
    + common.STATS_NOTE
    + " The first task count whose interval lies below 0: "
    f"{calibration['calibrated_tasks']}; {common.minutes(result):.1f} min.",
    "",
  ]
