"""Settings chosen on selection seeds, reported on other seeds (issue 26).

One table per run of a task sequence's ``--from-selection``
(``config.selection``), read with the selection runs it names, which must
be among the files: each method at its chosen setting on the reporting
seeds, the grids' mean scores on the selection seeds, then
``examples.paper.selection.report``: every method against vanilla and the
best against the runner-up, corrected by Holm's method within the table.
The choices are made again from the selection runs, and must be those the
run recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import os
from typing import Any

import numpy as np

from examples.paper import selection
from examples.paper import task_runs
from examples.paper.tables import common
from examples.paper.tables import permuted
from examples.paper.tables import random_labels

TITLES = {
  "random_labels": "Random-label tasks",
  "permuted_inputs": "Permuted inputs",
}
SCORES = {
  "random_labels": "training accuracy",
  "permuted_inputs": "online accuracy",
}
# What a user choosing a method asks, fixed before any run: SWR against the
# regularizers it is an alternative to, and what SWR adds to ReDo and to a
# model with LayerNorms.
QUESTIONS = (
  ("swr", "adamw"),
  ("swr", "l2_init"),
  ("swr", "l2"),
  ("swr_redo", "redo"),
  ("swr_redo", "swr"),
  ("swr_ln", "ln"),
)
# A column of the chosen settings' table: its title, its values per seed.
Measure = tuple[str, Callable[[dict[str, Any]], Sequence[float] | np.ndarray]]


def section(results: Sequence[dict[str, Any]]) -> list[str]:
  """One report per run of ``--from-selection``."""
  runs = common.report_runs(results)
  if not runs:
    return []
  lines = ["### Settings chosen on selection seeds, reported on others", ""]
  for run in runs:
    lines += report_lines(run, results)
  return lines


def report_lines(
  run: dict[str, Any], results: Sequence[dict[str, Any]]
) -> list[str]:
  """The chosen settings' table, the grids, the comparisons, the settings."""
  protocol = task_runs.protocol_of(run)
  choices = recorded_choices(run, selection_runs(run, results))
  seeds = task_runs.run_seeds(run)
  report = selection.report(
    choices,
    task_runs.scores([run], choices, seeds),
    reference="vanilla",
    questions=QUESTIONS,
  )
  describe = {
    "random_labels": random_labels.random_label_settings,
    "permuted_inputs": permuted.permuted_settings,
  }[protocol]
  return [
    f"#### {TITLES[protocol]}: {run['name']}",
    "",
    *chosen_table(run, choices, protocol),
    "",
    f"Each method at its chosen setting on the reporting seeds {seeds[0]} "
    f"to {seeds[-1]}. "
    + common.STATS_NOTE
    + " "
    + common.PULL_NOTE
    + " "
    + common.NORM_RATIO_NOTE,
    "",
    *grid_table(choices, protocol, run["config"]["tasks"]),
    "",
    *report.lines(),
    "",
    describe(run),
    "",
  ]


def selection_runs(
  run: dict[str, Any], results: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
  """The selection runs ``run`` names, found among ``results`` by name.

  Raises:
    ValueError: naming the files that were not given.
  """
  files = run["config"]["selection"]["files"]
  by_name = {result["name"]: result for result in results}
  names = [os.path.basename(path) for path in files]
  missing = [name for name in names if name not in by_name]
  if missing:
    raise ValueError(
      f"{run['name']} was run with --from-selection {','.join(files)}; give "
      f"summarize_results {', '.join(missing)} too."
    )
  return [by_name[name] for name in names]


def recorded_choices(
  run: dict[str, Any], runs: Sequence[dict[str, Any]]
) -> dict[str, selection.Choice]:
  """The choices made again from the selection runs.

  Raises:
    ValueError: when they differ from those ``run`` recorded (a selection
      run replaced since).
  """
  record = run["config"]["selection"]
  choices = selection.select(task_runs.grids(runs, record["seeds"]))
  made = {method: choice.setting for method, choice in choices.items()}
  recorded = {m: c["setting"] for m, c in record["choices"].items()}
  if made != recorded:
    raise ValueError(
      f"{run['name']} ran the settings {recorded}, but its selection runs "
      f"now choose {made}; give the selection runs it was chosen from."
    )
  return choices


def measures(protocol: str, config: dict[str, Any]) -> list[Measure]:
  """The per-seed numbers of the chosen settings' table, by protocol."""
  if protocol == "permuted_inputs":
    tasks = permuted.window(config)
    return [
      (
        f"first {tasks} tasks (online)",
        lambda entry: permuted.online_windows(entry, config)[0],
      ),
      (
        f"last {tasks} tasks (online)",
        lambda entry: permuted.online_windows(entry, config)[1],
      ),
      ("task 1 test acc at the end", lambda e: e["first_task_test_acc"]),
    ]
  recent = min(task_runs.RECENT, config["tasks"])
  return [
    ("task 1", lambda e: np.asarray(e["task_train_acc"], float)[:, 0]),
    (
      f"last {recent} tasks",
      lambda e: random_labels.last_tasks_mean(e, recent),
    ),
  ]


def chosen_table(
  run: dict[str, Any], choices: Mapping[str, selection.Choice], protocol: str
) -> list[str]:
  """Each method's chosen setting: its numbers, λ × steps, ‖W‖/n."""
  methods = run["methods"]
  columns = measures(protocol, run["config"])
  header = [
    "setting",
    *(title for title, _ in columns),
    "λ × steps",
    "‖W‖/n at the end",
  ]
  rows = []
  for name in common.ordered(methods):
    entry = methods[name]
    rows.append(
      [
        choices[entry["hparams"]["method"]].label,
        *(common.mean_std_cell(values(entry)) for _, values in columns),
        common.pull_cell(entry),
        common.norm_ratio_cell(entry),
      ]
    )
  return common.markdown_table(header, rows)


def grid_table(
  choices: Mapping[str, selection.Choice], protocol: str, tasks: int
) -> list[str]:
  """Each method's grid: every value's mean score on the selection seeds."""
  seeds = next(iter(choices.values())).seeds
  recent = min(task_runs.RECENT, tasks)
  header = [
    "method",
    "flag",
    f"mean {SCORES[protocol]} of the last {recent} tasks on seeds "
    f"{seeds[0]} to {seeds[-1]}, per value (chosen in bold)",
  ]
  rows = []
  for method, choice in choices.items():
    flag = choice.flag or ""
    if choice.fixed:
      flag += " (" + ", ".join(f"{f} {v:g}" for f, v in choice.fixed) + ")"
    rows.append([method, flag, grid_cell(choice)])
  return common.markdown_table(header, rows)


def grid_cell(choice: selection.Choice) -> str:
  """``0.001: 0.412 · **0.01: 0.455** · 0.1: 0.401``; untuned: the mean."""
  if choice.flag is None:
    return f"{choice.score:.4f}"
  cells = []
  for value, mean in zip(choice.grid, choice.means):
    cell = f"{value:g}: {mean:.4f}"
    cells.append(f"**{cell}**" if value == choice.setting else cell)
  return " · ".join(cells)
