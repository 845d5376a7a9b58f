"""Settings chosen on selection seeds, reported on others (issue 26, part 3).

The test that matters most: the reporting seeds hold numbers that would
change every choice if selection read them, and the choice is still the one
the selection seeds make; a second run replaces the reporting seeds' rows by
objects that fail on any access.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from examples.paper import selection
from examples.paper import stats
from examples.paper import task_runs
from tests import selection_runs

SELECTION, REPORTING = (0, 1, 2), (3, 4, 5, 6)
TASKS = 6
# Mean score of each (method, coefficient) on the selection and the
# reporting seeds: read together, the reporting seeds would pick swr 0.001
# and l2 1e-05 (both at an edge) instead of swr 0.01 and l2 0.0001.
MEANS = {
  ("vanilla", None): (0.20, 0.20),
  ("swr", 0.001): (0.50, 0.99),
  ("swr", 0.01): (0.60, 0.40),
  ("swr", 0.1): (0.40, 0.30),
  ("l2", 1e-05): (0.30, 0.95),
  ("l2", 0.0001): (0.35, 0.30),
  ("l2", 0.001): (0.32, 0.25),
}


def score(method, coef, seed):
  on_selection, on_reporting = MEANS[method, coef]
  mean = on_selection if seed in SELECTION else on_reporting
  return mean + 0.01 * ((seed * 7 + len(method)) % 5 - 2)  # a little spread


def random_label_run(seeds=SELECTION + REPORTING):
  """A run's JSON: ``methods[entry]["task_train_acc"][seed][task]``."""
  methods = {}
  for (method, coef), _ in MEANS.items():
    name = method if coef is None else f"{method}_{coef:g}"
    methods[name] = {
      "task_train_acc": [[score(method, coef, s)] * TASKS for s in seeds],
      "hparams": {"method": method, "coefs": [] if coef is None else [coef]},
    }
  return {"config": {"tasks": TASKS}, "methods": methods}


class Unread:
  """A reporting seed's row during selection: any access fails the test."""

  def _fail(self, *args, **kwargs):
    raise AssertionError("selection read a reporting seed")

  __getitem__ = __iter__ = __len__ = __array__ = __float__ = _fail


def grid(method, flag, values, seeds=SELECTION, bounds=(0.0, np.inf)):
  """A grid whose setting v scores v on every seed (higher is better)."""
  return selection.Grid(
    method, flag, {v: {s: float(v) for s in seeds} for v in values}, bounds
  )


def untuned(method, value, seeds=SELECTION):
  return selection.Grid(method, None, {None: {s: value for s in seeds}})


def test_selection_never_reads_the_reporting_seeds():
  run = random_label_run()
  grids = selection.random_label_grids([run], SELECTION)
  choices = selection.select(grids)
  assert choices["swr"].setting == 0.01
  assert choices["l2"].setting == 0.0001
  assert choices["vanilla"].setting is None
  assert choices["swr"].seeds == SELECTION
  selection.require_interior(choices)  # both bests are inside their grids
  # Read on every seed, the reporting seeds would have changed both choices.
  everything = selection.select(
    selection.random_label_grids([run], SELECTION + REPORTING)
  )
  assert (
    everything["swr"].setting == 0.001 and everything["l2"].setting == 1e-05
  )

  # The same choices when the reporting seeds' rows cannot be read at all.
  poisoned = random_label_run()
  for entry in poisoned["methods"].values():
    for seed in REPORTING:
      entry["task_train_acc"][seed] = Unread()
  assert (
    selection.select(selection.random_label_grids([poisoned], SELECTION))
    == choices
  )

  # And by construction: select takes the grids and nothing else.
  assert list(inspect.signature(selection.select).parameters) == ["grids"]


def test_report_reads_the_reporting_seeds_of_the_chosen_settings():
  run = random_label_run()
  choices = selection.select(selection.random_label_grids([run], SELECTION))
  scores = selection.random_label_scores([run], choices, REPORTING)
  assert scores["swr"] == pytest.approx(
    {s: score("swr", 0.01, s) for s in REPORTING}
  )
  result = selection.report(choices, scores)
  assert result.seeds == REPORTING
  swr = [score("swr", 0.01, s) for s in REPORTING]
  l2 = [score("l2", 0.0001, s) for s in REPORTING]
  vanilla = [score("vanilla", None, s) for s in REPORTING]
  # swr and l2 against vanilla, then the best on the selection seeds (swr,
  # 0.60) against the runner-up (l2, 0.35): one family of 3.
  expected = stats.holm(
    {
      "swr (--swr 0.01) − vanilla": (swr, vanilla),
      "l2 (--l2 0.0001) − vanilla": (l2, vanilla),
      "best − runner-up: swr (--swr 0.01) − l2 (--l2 0.0001)": (swr, l2),
    }
  )
  assert list(result.comparisons) == list(expected)
  for label, comparison in expected.items():
    got = result.comparisons[label]
    assert got.difference.mean == pytest.approx(comparison.difference.mean)
    assert got.holm_p == pytest.approx(comparison.holm_p)
    assert got.family == 3
  text = "\n".join(result.lines())
  assert "selection seeds 0 to 2" in text and "reports seeds 3 to 6" in text
  assert "Holm" in text and "tie" not in text


def test_questions_join_the_family_and_skip_absent_methods():
  run = random_label_run()
  choices = selection.select(selection.random_label_grids([run], SELECTION))
  scores = selection.random_label_scores([run], choices, REPORTING)
  result = selection.report(
    choices, scores, questions=[("l2", "swr"), ("swr", "adamw")]
  )
  swr = [score("swr", 0.01, s) for s in REPORTING]
  l2 = [score("l2", 0.0001, s) for s in REPORTING]
  question = result.comparisons["l2 (--l2 0.0001) − swr (--swr 0.01)"]
  assert question.difference.mean == pytest.approx(
    np.mean(np.subtract(l2, swr))
  )
  # adamw has no choice: 2 against vanilla, best - runner-up, 1 question.
  assert question.family == 4 and len(result.comparisons) == 4


def test_report_refuses_reporting_seeds_that_chose_the_settings():
  run = random_label_run()
  choices = selection.select(selection.random_label_grids([run], SELECTION))
  overlapping = selection.random_label_scores([run], choices, (2, 3, 4))
  with pytest.raises(ValueError, match=r"seeds \[2\] chose the settings"):
    selection.report(choices, overlapping)


def test_report_needs_every_method_and_the_reference():
  choices = selection.select(
    [grid("swr", "--swr", (1, 2, 3)), untuned("vanilla", 0.5)]
  )
  scores = {"swr": {3: 1.0, 4: 2.0}}
  with pytest.raises(ValueError, match="give the chosen setting"):
    selection.report(choices, scores)
  with pytest.raises(ValueError, match="reference 'l2'"):
    selection.report(choices, scores, reference="l2")


def test_a_grid_of_one_value_is_an_error_naming_its_flag():
  with pytest.raises(ValueError, match="1 value.* of --l2-init.*at least 3"):
    selection.select([grid("l2_init", "--l2-init", (1e-3,))])


def test_every_method_gets_the_same_number_of_settings():
  with pytest.raises(ValueError, match="same number of settings"):
    selection.select(
      [grid("swr", "--swr", (1, 2, 3, 4)), grid("l2", "--l2", (1, 2, 3))]
    )


def test_settings_on_different_seeds_are_an_error():
  uneven = selection.Grid("l2", "--l2", {1: {0: 1.0}, 2: {1: 1.0}, 3: {0: 0.0}})
  with pytest.raises(ValueError, match="same seeds"):
    selection.select([uneven])


def test_best_at_an_edge_names_the_method_and_the_flag_to_extend():
  choices = selection.select(
    [
      grid("swr", "--swr", (0.001, 0.01, 0.1)),  # best: 0.1, the top
      selection.Grid(  # best: the bottom of the grid
        "l2",
        "--l2",
        {v: {s: -v for s in SELECTION} for v in (1e-4, 1e-3, 1e-2)},
      ),
      grid("snp", "--snp", (0.2, 0.5, 1.0), bounds=(0.0, 1.0)),  # a bound
    ]
  )
  messages = selection.edges(choices)
  assert messages == [
    "swr: the best --swr, 0.1, is the largest value of its grid (0.001, "
    "0.01, 0.1); extend --swr above 0.1 and select again.",
    "l2: the best --l2, 0.0001, is the smallest value of its grid (0.0001, "
    "0.001, 0.01); extend --l2 below 0.0001 (down to 0) and select again.",
  ]
  assert choices["snp"].setting == 1.0 and choices["snp"].edge() is None
  with pytest.raises(ValueError, match="extend --swr above 0.1"):
    selection.require_interior(choices)


def test_ties_go_to_the_smaller_setting():
  flat = selection.Grid("swr", "--swr", {v: {0: 0.5} for v in (3.0, 1.0, 2.0)})
  choice = selection.select([flat])["swr"]
  assert choice.setting == 1.0 and choice.grid == (1.0, 2.0, 3.0)


def means_on(which, chosen_only=False):
  """MEANS on the selection (0) or reporting (1) seeds, keyed as
  ``selection_runs.run`` takes them; ``chosen_only``: the settings the
  selection seeds choose, as a run of ``--from-selection`` holds them."""
  return {
    (method, () if coef is None else (coef,)): pair[which]
    for (method, coef), pair in MEANS.items()
    if not chosen_only or coef in (None, 0.01, 0.0001)
  }


@pytest.mark.parametrize("protocol", ["random_labels", "permuted_inputs"])
def test_rows_are_read_as_the_seeds_they_stand_for(protocol):
  """A selection run on seeds 0 to 2 and a report run on seeds 3 to 12, as
  ``--first-seed 0 --seeds 3`` and ``--first-seed 3 --seeds 10`` write
  them: each numbers its rows from 0."""
  selection_run = selection_runs.run(protocol, means_on(0), seeds=3)
  report_run = selection_runs.run(
    protocol, means_on(1, chosen_only=True), first_seed=3, seeds=10
  )
  choices = selection.select(task_runs.grids([selection_run], range(3)))
  assert choices["swr"].setting == 0.01 and choices["l2"].setting == 0.0001
  scores = task_runs.scores([report_run], choices, range(3, 13))
  # Row r of the report run is seed 3 + r: seed 12 is its last row.
  assert task_runs.run_seeds(report_run) == tuple(range(3, 13))
  for seed in (3, 12):
    expected = selection_runs.value(("swr", (0.01,)), 0.40, seed, 0)
    assert scores["swr"][seed] == pytest.approx(expected)
  assert selection.report(choices, scores).seeds == tuple(range(3, 13))
  # Neither run holds the other's seeds.
  with pytest.raises(ValueError, match=r"seeds \[0, 1, 2\]: .* 3 to 12 only"):
    task_runs.grids([report_run], range(3))
  with pytest.raises(ValueError, match=r"seeds \[3, 4\]: .* 0 to 2 only"):
    task_runs.scores([selection_run], choices, (3, 4))


def test_selection_on_seeds_past_the_first_reads_their_rows_only():
  """Seeds 2 to 6 in one run (``--first-seed 2 --seeds 5``): selection on
  seeds 2 to 4 reads rows 0 to 2; reading rows 2 to 4 (row = seed) would
  touch the reporting seeds 5 and 6, which fail on any access."""
  run = selection_runs.run("random_labels", means_on(0), first_seed=2, seeds=5)
  for entry in run["methods"].values():
    for row in (3, 4):
      entry["task_train_acc"][row] = Unread()
  choices = selection.select(selection.random_label_grids([run], (2, 3, 4)))
  assert choices["swr"].setting == 0.01 and choices["l2"].setting == 0.0001
  assert choices["swr"].seeds == (2, 3, 4)


def test_permuted_inputs_are_scored_by_the_online_accuracy_of_the_last_tasks():
  # 8 tasks: swr 0.001 leads on the first 3 but not on the last 5.
  early_then_low = [0.9, 0.9, 0.9] + [0.3] * 5
  means = {
    ("vanilla", ()): 0.2,
    ("swr", (0.001,)): early_then_low,
    ("swr", (0.01,)): 0.5,
    ("swr", (0.1,)): 0.4,
  }
  run = selection_runs.run("permuted_inputs", means, tasks=8)
  assert task_runs.protocol_of(run) == "permuted_inputs"
  choices = selection.select(task_runs.grids([run], range(3)))
  assert choices["swr"].setting == 0.01
  assert choices["swr"].means[0] == pytest.approx(0.3, abs=0.02)
  with pytest.raises(ValueError, match="reads random_labels runs"):
    selection.random_label_grids([run], range(3))
  mixed = selection_runs.run("random_labels", {("l2", (0.1,)): 0.3}, tasks=8)
  with pytest.raises(ValueError, match="different protocols"):
    task_runs.grids([run, mixed], range(3))


def test_a_grid_is_over_the_first_coefficient_with_the_others_fixed():
  means = {
    ("vanilla", ()): 0.2,
    ("snp_noise", (0.5, 0.2)): 0.3,
    ("snp_noise", (0.8, 0.2)): 0.5,
    ("snp_noise", (0.9, 0.2)): 0.4,
  }
  run = selection_runs.run("random_labels", means)
  choice = selection.select(task_runs.grids([run], range(3)))["snp_noise"]
  assert choice.flag == "--snp-noise-shrink" and choice.setting == 0.8
  assert choice.fixed == (("--snp-noise-scale", 0.2),)
  assert choice.label == (
    "snp_noise (--snp-noise-shrink 0.8, --snp-noise-scale 0.2)"
  )
  assert selection.choice_record(choice)["fixed"] == [
    ["--snp-noise-scale", 0.2]
  ]

  means[("snp_noise", (0.9, 0.1))] = means.pop(("snp_noise", (0.9, 0.2)))
  run = selection_runs.run("random_labels", means)
  with pytest.raises(
    ValueError,
    match=r"snp_noise's entries differ in --snp-noise-scale \(0.1, 0.2\): a "
    r"grid is over --snp-noise-shrink",
  ):
    task_runs.grids([run], range(3))
  taus = {("swr_redo", (c, t)): 0.5 for c, t in [(0.01, 0.1), (0.1, 0.2)]}
  with pytest.raises(ValueError, match="differ in --swr-redo-tau"):
    task_runs.grids([selection_runs.run("permuted_inputs", taus)], range(3))
