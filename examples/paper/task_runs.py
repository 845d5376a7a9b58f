"""The task sequences' runs as the selection reads them, and ``--from-selection``.

``examples.paper.selection`` chooses from grids of scores and knows no JSON.
This module reads the runs of ``examples.paper.random_labels`` and
``examples.paper.permuted_inputs`` into them:

* :func:`grids`: each method's grid on the selection seeds, scored by the
  protocol (:data:`SCORE_KEYS`: the training accuracy of the last 5 tasks,
  or their online accuracy), a method with several coefficients tuned on
  its first, the others fixed; :func:`scores`: the chosen settings on the
  reporting seeds. Row ``r`` of a run stands for its seed ``first_seed +
  r`` (:func:`run_seeds`), and only the given seeds' rows are read.
* :func:`apply_selection`: the scripts' ``--from-selection``, which runs
  each method at its chosen setting on seeds apart from the selection's.

Example::

  # selection: --first-seed 0 --seeds 3; report: --first-seed 3 --seeds 10
  choices = selection.select(task_runs.grids([selection_run], range(3)))
  selection.require_interior(choices)  # else: extend the flags it names
  scores = task_runs.scores([report_run], choices, range(3, 13))
  print("\\n".join(selection.report(choices, scores).lines()))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import json
import math
import os
from typing import Any, TypeVar

import numpy as np

from examples import cli
from examples import methods as methods_lib
from examples.paper import selection
from examples.paper import task_sequence

SettingsT = TypeVar("SettingsT", bound=task_sequence.Settings)

# What a seed's score averages over the last tasks, by protocol: the
# training accuracy at each task's end (random labels), the online accuracy
# during each task (permuted inputs).
SCORE_KEYS = {
  "random_labels": "task_train_acc",
  "permuted_inputs": "task_online_acc",
}
RECENT = 5  # A score is the mean over the last RECENT tasks.


def protocol_of(result: Mapping[str, Any]) -> str:
  """Which task sequence wrote a run's JSON, from its configuration.

  Only ``examples.paper.permuted_inputs`` records ``examples_per_task``.

  Returns:
    ``"permuted_inputs"`` or ``"random_labels"`` (a key of
    :data:`SCORE_KEYS`).
  """
  config = result.get("config", {})
  return "permuted_inputs" if "examples_per_task" in config else "random_labels"


def run_seeds(result: Mapping[str, Any]) -> tuple[int, ...]:
  """The seeds a run's rows stand for: ``--first-seed`` and the next ones."""
  config = result["config"]
  first = config.get("first_seed", 0)  # Runs before --first-seed: 0.
  return tuple(range(first, first + config["seeds"]))


def grids(
  results: Sequence[Mapping[str, Any]],
  seeds: Iterable[int],
  recent: int = RECENT,
) -> list[selection.Grid]:
  """The grids of task-sequence runs, read on the selection seeds only.

  A seed's score is its mean over the last ``recent`` tasks of the
  protocol's :data:`SCORE_KEYS` value. The entries of every run are pooled
  by method (``hparams["method"]``) and keyed by their first coefficient;
  a method without one (vanilla, head reset) has nothing to tune. A
  method's later coefficients (Shrink & Perturb's noise scale, SWR + ReDo's
  tau) stay fixed over its grid (``Grid.fixed``). Row ``r`` of a run is the
  seed ``first_seed + r`` of its configuration, and only the given seeds'
  rows are read.

  Args:
    results: the JSON of one or more runs of one protocol (a sweep of the
      baselines in a file of its own joins the main run), all with the same
      tasks.
    seeds: the selection seeds.
    recent: how many last tasks a score averages.

  Returns:
    One ``selection.Grid`` per method, the flag named as on the command
    line (``--l2-init``), its bounds those ``examples.methods`` accepts.

  Raises:
    ValueError: for runs of different protocols or tasks, a setting given
      twice, a method whose entries differ in a later coefficient (naming
      its flag), or a seed that no run of a method holds.
  """
  seeds = tuple(seeds)
  by_method: dict[str, dict[selection.Setting, _Entry]] = {}
  for entry in _entries(results, "grids").values():
    by_method.setdefault(entry.method, {})[entry.setting] = entry
  found = []
  for method, entries in by_method.items():
    flags = _flags(method)
    fixed = _fixed(method, flags, entries.values())
    tuned = any(setting is not None for setting in entries)
    upper = methods_lib.REGISTRY[method].max_coef
    found.append(
      selection.Grid(
        method=method,
        flag=flags[0] if tuned else None,
        scores={
          setting: entry.scores(seeds, recent)
          for setting, entry in entries.items()
        },
        bounds=(0.0, math.inf if upper is None else upper),
        fixed=fixed,
      )
    )
  return found


def scores(
  results: Sequence[Mapping[str, Any]],
  choices: Mapping[str, selection.Choice],
  seeds: Iterable[int],
  recent: int = RECENT,
) -> dict[str, dict[int, float]]:
  """Each chosen setting's scores on the given (reporting) seeds.

  Args:
    results: the runs that hold the chosen settings on those seeds (a run
      of ``--from-selection``, or the runs given to :func:`grids`).
    choices: from ``selection.select``.
    seeds: the reporting seeds.
    recent: how many last tasks a score averages.

  Returns:
    ``{method: {seed: score}}`` for ``selection.report``.

  Raises:
    ValueError: for a chosen setting that no run holds.
  """
  entries = _entries(results, "scores")
  seeds = tuple(seeds)
  missing = [
    c.label for m, c in choices.items() if (m, c.setting) not in entries
  ]
  if missing:
    raise ValueError(
      f"scores: the runs hold no entry for {missing}; give the run of the "
      "chosen settings."
    )
  return {
    method: entries[method, choice.setting].scores(seeds, recent)
    for method, choice in choices.items()
  }


def check_protocol(
  results: Sequence[Mapping[str, Any]], protocol: str, caller: str
) -> None:
  """Raises unless every run is of ``protocol``, naming ``caller``."""
  others = sorted({protocol_of(r) for r in results} - {protocol})
  if others:
    raise ValueError(
      f"{caller}: reads {protocol} runs; got runs of {others} (use grids() "
      "and scores(), which read either)."
    )


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One method at one setting, in one run: its per-task values by seed."""

  run: str
  method: str
  setting: selection.Setting
  later: tuple[float, ...]  # the coefficients after the first
  rows: Sequence[Sequence[float]]  # [row][task]; row r is first_seed + r
  first_seed: int

  def scores(self, seeds: Sequence[int], recent: int) -> dict[int, float]:
    """Each seed's mean over its last ``recent`` tasks; reads only ``seeds``."""
    last = self.first_seed + len(self.rows) - 1
    missing = [s for s in seeds if not self.first_seed <= s <= last]
    if missing:
      raise ValueError(
        f"seeds {missing}: {self.run} has {self.method} at {self.setting} on "
        f"seeds {self.first_seed} to {last} only."
      )
    return {
      s: float(np.mean(self.rows[s - self.first_seed][-recent:])) for s in seeds
    }


def _entries(
  results: Sequence[Mapping[str, Any]], caller: str
) -> dict[tuple[str, selection.Setting], _Entry]:
  """``{(method, first coefficient or None): entry}`` over every run."""
  names = [str(r.get("name", f"run {i + 1}")) for i, r in enumerate(results)]
  protocols = {protocol_of(r) for r in results}
  if len(protocols) != 1:
    written = "; ".join(
      f"{name}: {protocol_of(r)}" for name, r in zip(names, results)
    )
    raise ValueError(
      f"{caller}: the runs come from different protocols ({written}); "
      "select within one protocol."
    )
  tasks = {result["config"]["tasks"] for result in results}
  if len(tasks) != 1:
    raise ValueError(
      f"{caller}: the runs have different --tasks {sorted(tasks)}; their "
      "scores are not comparable."
    )
  key = SCORE_KEYS[protocols.pop()]
  entries: dict[tuple[str, selection.Setting], _Entry] = {}
  for run, result in zip(names, results):
    for name, values in result["methods"].items():
      hparams = values["hparams"]
      coefs = [float(c) for c in hparams["coefs"]]
      entry = _Entry(
        run=run,
        method=hparams["method"],
        setting=coefs[0] if coefs else None,
        later=tuple(coefs[1:]),
        rows=values[key],
        first_seed=result["config"].get("first_seed", 0),
      )
      where = (entry.method, entry.setting)
      if where in entries:
        raise ValueError(
          f"{caller}: {name} ({where[0]} at {where[1]}) appears twice (in "
          f"{entries[where].run} and {run}); give each setting once."
        )
      entries[where] = entry
  return entries


def _flags(method: str) -> tuple[str, ...]:
  """The command-line flags of a method's coefficients, in order."""
  keys = task_sequence.COEF_FLAGS.get(method, (method,))
  return tuple(task_sequence.flag_name(key) for key in keys)


def _fixed(
  method: str, flags: Sequence[str], entries: Iterable[_Entry]
) -> tuple[tuple[str, float], ...]:
  """``((flag, value), ...)`` of a method's later coefficients, which every
  setting of its grid must share."""
  later = sorted({entry.later for entry in entries})
  if len(later) > 1:
    shortest = min(map(len, later))
    index = next(
      (i for i in range(shortest) if len({v[i] for v in later}) > 1), shortest
    )
    flag = flags[min(index + 1, len(flags) - 1)]
    values = ", ".join(
      f"{v:g}" for v in sorted({v[index] for v in later if index < len(v)})
    )
    raise ValueError(
      f"{method}'s entries differ in {flag} ({values}): a grid is over "
      f"{flags[0]} with the other coefficients fixed; give {flag} one value."
    )
  return tuple(zip(flags[1:], later[0])) if later else ()


# --from-selection.


def apply_selection(
  settings: SettingsT, files: str, given: Sequence[str] = ()
) -> SettingsT:
  """``settings`` that run each method at the setting chosen on the
  selection runs ``files`` (``--from-selection``).

  The selection seeds are the seeds of the selection runs (every run the
  same); each method's setting is the one with the best mean score on
  them (``examples.paper.selection.select``: its grids, by the protocol's
  score), and must lie inside its grid. The methods run are the
  selection's, on the seeds of ``settings``, which must be other seeds.

  Args:
    settings: the run's settings, from its flags.
    files: ``--from-selection``'s comma-separated JSON files.
    given: the flags given on the command line (keys, ``"swr"``) that the
      selection sets: an error, as the selection would override them.

  Returns:
    ``settings`` with the selection's methods, their chosen coefficients
    and the ``selection`` record: the files, the selection seeds and each
    method's choice (``examples.paper.selection.choice_record``).

  Raises:
    ValueError: naming the flag to change, for a flag the selection sets, a
      file of another script or another setting (``--tasks``, ...), runs on
      different seeds, seeds that overlap the selection seeds
      (``--first-seed``), a grid the selection refuses (too few values,
      a best value at its edge: the flag to extend), or no vanilla.
  """
  if given:
    flags = ", ".join(task_sequence.flag_name(key) for key in given)
    raise ValueError(
      f"{flags}: --from-selection runs the selection's methods at their "
      "chosen settings; leave these flags out."
    )
  paths = [path.strip() for path in files.split(",") if path.strip()]
  runs = [_selection_run(settings, path) for path in paths]
  seeds = _selection_seeds(runs, files)
  overlap = sorted(set(seeds) & set(settings.seed_ids))
  if overlap:
    first, last = settings.seed_ids[0], settings.seed_ids[-1]
    raise ValueError(
      f"--first-seed {settings.first_seed}: the run's seeds {first} to "
      f"{last} include {overlap}, which chose the settings (--from-selection "
      f"{files}, seeds {seeds[0]} to {seeds[-1]}); report on other seeds, "
      f"e.g. --first-seed {seeds[-1] + 1}."
    )
  try:
    choices = selection.select(grids(runs, seeds))
    selection.require_interior(choices)
  except ValueError as error:
    raise ValueError(f"--from-selection {files}: {error}") from None
  if "vanilla" not in choices:
    raise ValueError(
      f"--from-selection {files}: no vanilla run, the reference of the "
      "report; add vanilla to the selection runs' --methods."
    )
  coefs = dict(settings.coefs)
  for method, choice in choices.items():
    if choice.setting is None:  # Nothing to tune.
      continue
    values = [choice.setting, *(value for _, value in choice.fixed)]
    for key, value in zip(task_sequence.COEF_FLAGS[method], values):
      coefs[key] = (value,)
  record = {
    "files": [cli.recorded_path(path) for path in paths],
    "seeds": list(seeds),
    "choices": {
      method: selection.choice_record(choice)
      for method, choice in choices.items()
    },
  }
  return dataclasses.replace(
    settings, methods=tuple(choices), coefs=coefs, selection=record
  )


def _selection_run(
  settings: task_sequence.Settings, path: str
) -> dict[str, Any]:
  """One selection run's JSON, checked against the run's settings."""
  if not os.path.exists(path):
    raise ValueError(f"--from-selection: no file {path!r}.")
  with open(path) as file:
    run = json.load(file)
  run["name"] = os.path.basename(path)
  config = run.get("config", {})
  if "methods" not in run or "tasks" not in config:
    raise ValueError(
      f"--from-selection: {path} is not a run of a task sequence (a "
      "--calibrate run has no methods to choose from)."
    )
  if config.get("selection"):
    raise ValueError(
      f"--from-selection: {path} is a run of --from-selection itself; give "
      "the selection runs it was chosen from."
    )
  protocol = protocol_of(run)
  if protocol != settings.PROTOCOL:
    raise ValueError(
      f"--from-selection: {path} is a run of examples.paper.{protocol}, "
      f"not of examples.paper.{settings.PROTOCOL}; give its own runs."
    )
  for name in settings.SAME_AS_SELECTION:
    ours = getattr(settings, name)
    theirs = config.get(name, _default(type(settings), name))
    if theirs != ours:
      flag = task_sequence.flag_name(name)
      raise ValueError(
        f"{flag} {ours}: the selection run {path} has {flag} {theirs}; a "
        f"setting chosen there holds there, so give {flag} {theirs}."
      )
  return run


def _selection_seeds(runs: Sequence[dict[str, Any]], files: str) -> list[int]:
  """The seeds of the selection runs, which must all have the same."""
  seeds = {run["name"]: run_seeds(run) for run in runs}
  if len(set(seeds.values())) != 1:
    ranges = "; ".join(
      f"{name}: {s[0]} to {s[-1]}" for name, s in seeds.items()
    )
    raise ValueError(
      f"--from-selection {files}: the runs have different seeds ({ranges}); "
      "run every selection run with the same --first-seed and --seeds."
    )
  return list(next(iter(seeds.values())))


def _default(settings_class: type[task_sequence.Settings], name: str) -> Any:
  """A setting's default, for runs that predate its flag."""
  field = {f.name: f for f in dataclasses.fields(settings_class)}[name]
  return field.default
