"""Each method's setting chosen on selection seeds, reported on other seeds.

The best of several settings, scored on the seeds that report it, is biased
upwards (the largest of noisy scores), and the more so the more settings a
method had. So the choice and the report use disjoint seeds, in two steps
whose arguments keep them apart:

1. :func:`select` sees only :class:`Grid` values, each method's scores
   setting by setting on the *selection seeds*, and returns one
   :class:`Choice` per method: its setting, its grid and the selection
   seeds, nothing else. Every method gets the same number of settings, at
   least 3 (fewer is an error that names the flag). A best setting at an
   edge of its grid may hide a better one beyond it: :func:`edges` says so
   and :func:`require_interior` refuses it, naming the flag to extend.
2. :func:`report` takes the choices and the chosen settings' scores on the
   *reporting seeds*, which must be disjoint from the selection seeds, and
   compares every method with the reference and the best with the
   runner-up, corrected together by Holm's method
   (:func:`examples.paper.stats.holm`). The best and the runner-up are
   ranked by their selection scores, so which pair is compared is fixed
   before a reporting seed is read. :meth:`Report.lines` is a markdown
   table with a note that says how the settings were chosen.

Scores are higher-is-better (pass minus a loss). A method with nothing to
tune (vanilla, head reset) is a :class:`Grid` with ``flag=None`` and one
setting, None; a method with several coefficients is tuned on its first,
the others fixed (:attr:`Grid.fixed`). Nothing here knows a JSON layout:
``examples.paper.task_runs`` reads the task sequences' runs into grids and
scores, each row as the seed it stands for (``--first-seed``), and runs the
scripts' ``--from-selection``. :func:`random_label_grids` and
:func:`random_label_scores` are its readers of random-label runs.

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
import math
from typing import Any

import numpy as np

from examples.paper import stats

MIN_SETTINGS = 3
Setting = float | None  # None: the one setting of a method with no flag


@dataclasses.dataclass(frozen=True)
class Grid:
  """One method's scores on the selection seeds, setting by setting.

  Attributes:
    method: the method's name.
    flag: the command-line flag whose values the grid holds (``--swr``);
      None for a method with nothing to tune, whose one setting is None.
    scores: ``{setting: {seed: score}}``, every setting on the same seeds.
    bounds: the smallest and largest values the flag accepts. A best
      setting on a bound is not an edge to extend: nothing lies beyond it.
    fixed: ``((flag, value), ...)``: the method's other coefficients, the
      same at every setting (Shrink & Perturb's ``--snp-noise-scale``).
  """

  method: str
  flag: str | None
  scores: Mapping[Setting, Mapping[int, float]]
  bounds: tuple[float, float] = (0.0, math.inf)
  fixed: tuple[tuple[str, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Choice:
  """A method's best setting on the selection seeds.

  Attributes:
    method: the method's name.
    flag: the flag the setting is a value of (None: nothing to tune).
    setting: the chosen value (None: nothing to tune).
    grid: the values tried, ascending.
    means: each value's mean score over the selection seeds.
    seeds: the selection seeds, ascending.
    bounds: the values the flag accepts (:attr:`Grid.bounds`).
    fixed: the other coefficients, as set (:attr:`Grid.fixed`).
  """

  method: str
  flag: str | None
  setting: Setting
  grid: tuple[Setting, ...]
  means: tuple[float, ...]
  seeds: tuple[int, ...]
  bounds: tuple[float, float] = (0.0, math.inf)
  fixed: tuple[tuple[str, float], ...] = ()

  @property
  def score(self) -> float:
    """The chosen setting's mean score over the selection seeds."""
    return self.means[self.grid.index(self.setting)]

  @property
  def label(self) -> str:
    """``swr (--swr 0.01)``, ``snp_noise (--snp-noise-shrink 0.8,
    --snp-noise-scale 0.2)``, or the method's name with nothing to tune."""
    if self.flag is None:
      return self.method
    flags = [(self.flag, self.setting), *self.fixed]
    return f"{self.method} (" + ", ".join(f"{f} {v:g}" for f, v in flags) + ")"

  def edge(self) -> str | None:
    """Why the grid must be extended, or None when the best is inside it.

    A best setting at the smallest or largest value tried is an edge,
    unless it is the bound the flag accepts.
    """
    if self.flag is None or self.setting is None:
      return None
    values = ", ".join(f"{v:g}" for v in self.grid if v is not None)
    low, high = self.bounds
    if self.setting == self.grid[0] and self.setting > low:
      side, beyond, toward, bound = "smallest", "below", "down", low
    elif self.setting == self.grid[-1] and self.setting < high:
      side, beyond, toward, bound = "largest", "above", "up", high
    else:
      return None
    limit = "" if math.isinf(bound) else f" ({toward} to {bound:g})"
    return (
      f"{self.method}: the best {self.flag}, {self.setting:g}, is the "
      f"{side} value of its grid ({values}); extend {self.flag} {beyond} "
      f"{self.setting:g}{limit} and select again."
    )


def select(grids: Iterable[Grid]) -> dict[str, Choice]:
  """Each method's setting with the best mean score on the selection seeds.

  Ties go to the smaller setting.

  Args:
    grids: one per method, all on the same selection seeds.

  Returns:
    ``{method: Choice}`` in the order of ``grids``.

  Raises:
    ValueError: for a method named twice, settings on different seeds, a
      grid with a flag and fewer than :data:`MIN_SETTINGS` values (the
      message names the flag), grids of different sizes, or a grid without
      a flag that holds anything but the one setting None.
  """
  grids = list(grids)
  names = [grid.method for grid in grids]
  if not grids or len(set(names)) != len(names):
    raise ValueError(f"select: give one grid per method; got {names}.")
  seeds = _selection_seeds(grids)
  for grid in grids:
    _check_grid(grid)
  _check_same_size([g for g in grids if g.flag is not None])
  return {grid.method: _best(grid, seeds) for grid in grids}


def edges(choices: Mapping[str, Choice]) -> list[str]:
  """One message per method whose best setting is at an edge of its grid."""
  return [m for m in (c.edge() for c in choices.values()) if m is not None]


def require_interior(choices: Mapping[str, Choice]) -> None:
  """Raises unless every method's best setting is inside its grid.

  Raises:
    ValueError: naming each method at an edge and the flag to extend.
  """
  messages = edges(choices)
  if messages:
    raise ValueError(
      "The best setting must lie inside its grid, or a better one may lie "
      "beyond it:\n" + "\n".join(messages)
    )


@dataclasses.dataclass(frozen=True)
class Report:
  """The chosen settings compared on the reporting seeds.

  Attributes:
    choices: the choices, from :func:`select`.
    reference: the method every other one is compared with.
    seeds: the reporting seeds, ascending.
    scores: ``{method: (score per reporting seed, in seeds' order)}``.
    comparisons: ``{label: stats.Comparison}``, one family: each method
      against the reference, then the best against the runner-up.
  """

  choices: Mapping[str, Choice]
  reference: str
  seeds: tuple[int, ...]
  scores: Mapping[str, tuple[float, ...]]
  comparisons: Mapping[str, stats.Comparison]

  def note(self) -> str:
    """How the settings were chosen and how the comparisons are corrected."""
    tuned = [c for c in self.choices.values() if c.flag is not None]
    first = next(iter(self.comparisons.values()))
    grids = ""
    if tuned:
      grids = (
        f" from {len(tuned[0].grid)} values of its flag ("
        + "; ".join(
          f"{c.flag} " + ", ".join(f"{v:g}" for v in c.grid if v is not None)
          for c in tuned
        )
        + ")"
      )
    selection_seeds = next(iter(self.choices.values())).seeds
    return (
      f"Each method's setting is the one with the best mean score on "
      f"selection seeds {_seed_list(selection_seeds)}{grids}; the table "
      f"reports seeds {_seed_list(self.seeds)}, which played no part in "
      "the choice. A difference is the mean of per-seed differences; p is "
      "the paired t test's, Holm p is corrected by Holm's method over the "
      f"table's {first.family} comparisons, and each interval is at "
      f"{100 * first.interval_confidence:.4g}% (Bonferroni: "
      f"{100 * first.confidence:.4g}% for the {first.family} together)."
    )

  def lines(self) -> list[str]:
    """A markdown table of the comparisons, then :meth:`note`."""
    rows = [
      "| comparison | difference [interval]: what it rules out | p | Holm p |",
      "|---|---|---|---|",
    ]
    for label, comparison in self.comparisons.items():
      rows.append(
        f"| {label} | {comparison.difference.describe()} | "
        f"{comparison.p_value:.2g} | {comparison.holm_p:.2g} |"
      )
    return [*rows, "", self.note()]


def report(
  choices: Mapping[str, Choice],
  scores: Mapping[str, Mapping[int, float]],
  reference: str = "vanilla",
  confidence: float = stats.CONFIDENCE,
  questions: Sequence[tuple[str, str]] = (),
) -> Report:
  """The chosen settings, compared on the reporting seeds with Holm's method.

  Args:
    choices: from :func:`select`; the reference is one of them.
    scores: ``{method: {seed: score}}``, each method's chosen setting on the
      reporting seeds, every method on the same seeds.
    reference: the method the others are compared with.
    confidence: the family's confidence (:func:`stats.holm`).
    questions: pairs ``(a, b)`` of methods to compare as ``a - b`` too,
      fixed before the data are read (SWR against AdamW); a pair with a
      method not in ``choices`` is left out. They join the same family.

  Returns:
    A :class:`Report`.

  Raises:
    ValueError: when the reference has no choice, ``scores`` and
      ``choices`` name different methods, the methods have different
      seeds or fewer than 2, or a reporting seed is a selection seed.
  """
  if reference not in choices:
    raise ValueError(
      f"report: the reference {reference!r} is not among the choices "
      f"{list(choices)}; give select() its grid (flag=None)."
    )
  if set(scores) != set(choices):
    raise ValueError(
      f"report: scores name {sorted(scores)} but the choices are "
      f"{sorted(choices)}; give the chosen setting of every method."
    )
  seeds = _same_seeds(scores.items(), "report")
  if len(seeds) < 2:
    raise ValueError(f"report: needs at least 2 reporting seeds; got {seeds}.")
  selection_seeds = {s for choice in choices.values() for s in choice.seeds}
  reused = sorted(selection_seeds & set(seeds))
  if reused:
    raise ValueError(
      f"report: seeds {reused} chose the settings, so they cannot report "
      f"them; report on seeds disjoint from the selection seeds "
      f"{sorted(selection_seeds)}."
    )
  per_seed = {m: tuple(float(scores[m][s]) for s in seeds) for m in choices}
  pairs = {
    f"{choices[m].label} − {choices[reference].label}": (
      per_seed[m],
      per_seed[reference],
    )
    for m in choices
    if m != reference
  }
  ranked = sorted(
    (m for m in choices if m != reference), key=lambda m: -choices[m].score
  )
  if len(ranked) >= 2:
    best, runner_up = ranked[:2]
    label = (
      f"best − runner-up: {choices[best].label} − {choices[runner_up].label}"
    )
    pairs[label] = (per_seed[best], per_seed[runner_up])
  for first, second in questions:
    if first in choices and second in choices:
      label = f"{choices[first].label} − {choices[second].label}"
      pairs.setdefault(label, (per_seed[first], per_seed[second]))
  return Report(
    choices=dict(choices),
    reference=reference,
    seeds=seeds,
    scores=per_seed,
    comparisons=stats.holm(pairs, confidence),
  )


def choice_record(choice: Choice) -> dict[str, Any]:
  """A choice as JSON (an unbounded flag's upper bound is None)."""
  low, high = choice.bounds
  return {
    "flag": choice.flag,
    "setting": choice.setting,
    "fixed": [list(pair) for pair in choice.fixed],
    "grid": list(choice.grid),
    "means": list(choice.means),
    "seeds": list(choice.seeds),
    "bounds": [low, None if math.isinf(high) else high],
  }


# The JSON of examples.paper.random_labels, read by examples.paper.task_runs
# (which imports this module), kept here for their callers.


def random_label_grids(
  results: Sequence[Mapping[str, Any]],
  seeds: Iterable[int],
  recent: int = 5,
) -> list[Grid]:
  """``examples.paper.task_runs.grids`` of random-label runs only."""
  from examples.paper import task_runs  # It imports this module.

  task_runs.check_protocol(results, "random_labels", "random_label_grids")
  return task_runs.grids(results, seeds, recent)


def random_label_scores(
  results: Sequence[Mapping[str, Any]],
  choices: Mapping[str, Choice],
  seeds: Iterable[int],
  recent: int = 5,
) -> dict[str, dict[int, float]]:
  """``examples.paper.task_runs.scores`` of random-label runs only."""
  from examples.paper import task_runs  # It imports this module.

  task_runs.check_protocol(results, "random_labels", "random_label_scores")
  return task_runs.scores(results, choices, seeds, recent)


def _selection_seeds(grids: Sequence[Grid]) -> tuple[int, ...]:
  """The seeds every setting of every grid was scored on."""
  return _same_seeds(
    (f"{grid.method} at {setting}", per_seed)
    for grid in grids
    for setting, per_seed in grid.scores.items()
  )


def _same_seeds(
  named: Iterable[tuple[str, Mapping[int, float]]], caller: str = "select"
) -> tuple[int, ...]:
  """The seeds of every ``(name, {seed: score})``, which must be the same."""
  seeds: set[int] | None = None
  for name, per_seed in named:
    if seeds is None:
      seeds = set(per_seed)
    elif set(per_seed) != seeds:
      raise ValueError(
        f"{caller}: {name} has seeds {sorted(per_seed)}, others "
        f"{sorted(seeds)}; score every method and setting on the same seeds."
      )
  if not seeds:
    raise ValueError(f"{caller}: no scores given.")
  return tuple(sorted(seeds))


def _check_grid(grid: Grid) -> None:
  settings = list(grid.scores)
  if grid.flag is None:
    if settings != [None]:
      raise ValueError(
        f"select: {grid.method} has no flag, so its one setting is None; "
        f"got {settings}. Name the flag its values belong to."
      )
    return
  if None in settings:
    raise ValueError(
      f"select: {grid.method}'s grid of {grid.flag} holds the setting None."
    )
  if len(settings) < MIN_SETTINGS:
    values = ", ".join(f"{v:g}" for v in sorted(settings))
    raise ValueError(
      f"select: {grid.method} has {len(settings)} value(s) of {grid.flag} "
      f"({values}); give {grid.flag} at least {MIN_SETTINGS} comma-separated "
      "values, the expected best inside them."
    )


def _check_same_size(grids: Sequence[Grid]) -> None:
  sizes = {grid.method: len(grid.scores) for grid in grids}
  if len(set(sizes.values())) > 1:
    most = max(sizes.values())
    counts = ", ".join(
      f"{g.method} {sizes[g.method]} ({g.flag})" for g in grids
    )
    raise ValueError(
      f"select: every method gets the same number of settings; got {counts}. "
      f"Give every flag {most} values."
    )


def _best(grid: Grid, seeds: Sequence[int]) -> Choice:
  grid_values = sorted(grid.scores, key=lambda v: -math.inf if v is None else v)
  means = tuple(
    float(np.mean([grid.scores[v][s] for s in seeds])) for v in grid_values
  )
  best = int(np.argmax(means))  # The first of ties: the smaller setting.
  return Choice(
    method=grid.method,
    flag=grid.flag,
    setting=grid_values[best],
    grid=tuple(grid_values),
    means=means,
    seeds=tuple(seeds),
    bounds=grid.bounds,
    fixed=grid.fixed,
  )


def _seed_list(seeds: Sequence[int]) -> str:
  if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
    return f"{seeds[0]} to {seeds[-1]}"
  return ", ".join(str(s) for s in seeds)
