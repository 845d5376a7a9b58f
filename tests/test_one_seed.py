"""One seed has no standard deviation and no interval (issue 24, item 10).

The reports used to print ``± 0.0000`` and a zero-width interval for one
seed; they now say that the spread is undefined. Two seeds print as before.
"""

from __future__ import annotations

import json
import math
import types

import numpy as np
from scipy import stats as scipy_stats

from examples import digits_demo
from examples.paper import protocols
from examples.paper import random_labels
from examples.paper import stats
from examples.paper.tables import common as tables_common
from examples.rl import continual as rl_continual
from examples.rl import continual_report


def test_one_value_has_no_std_two_values_have_the_sample_std():
  mean, std = stats.mean_std([0.8123])
  assert mean == 0.8123 and math.isnan(std)
  assert stats.mean_std_text([0.8123]) == "0.8123 (1 seed, no std)"
  mean, std = stats.mean_std([0.80, 0.84])
  assert std == np.std([0.80, 0.84], ddof=1)
  assert stats.mean_std_text([0.80, 0.84]) == f"0.8200 ± {std:.4f}"
  assert stats.mean_std_text([0.80, 0.84], "+-") == f"0.8200 +- {std:.4f}"


def test_one_pair_has_no_interval_two_pairs_have_the_t_interval():
  one = stats.paired([0.9], [0.8])
  assert math.isnan(one.low) and math.isnan(one.high)
  assert str(one) == "+0.1000 (1 seed, no interval)"
  assert one.verdict == "tie"  # one seed shows no difference
  two = stats.paired([1.0, 0.75], [0.5, 0.5])  # differences 0.5, 0.25
  half_width = scipy_stats.t.ppf(0.975, 1) * 0.125  # std / sqrt(2) = 0.125
  np.testing.assert_allclose(
    [two.low, two.high], 0.375 + np.array([-1, 1]) * half_width
  )
  assert str(two) == "+0.3750 [-1.2133, +1.9633]"


def test_summary_cell_of_one_seed():
  assert tables_common.mean_std_cell([0.8123]) == "0.8123 (1 seed, no std)"
  assert tables_common.mean_std_cell([0.80, 0.82, 0.84]) == ("0.8200 ± 0.0200")


def random_label_results(seeds: int) -> dict:
  acc = {"vanilla": [[0.9, 0.5]] * seeds, "swr": [[0.9, 0.7]] * seeds}
  return {
    "config": {
      "data": "digits",
      "num_examples": 100,
      "tasks": 2,
      "steps_per_task": 10,
      "seeds": seeds,
    },
    "methods": {m: {"task_train_acc": a} for m, a in acc.items()},
    "wall_time_s": 1.0,
  }


def test_random_label_summary_of_one_seed(capsys):
  random_labels.print_summary(random_label_results(1))
  out = capsys.readouterr().out
  assert "0.0000" not in out
  assert "0.5000 (1 seed, no std)" in out
  assert "+0.2000 (1 seed, no interval)" in out
  random_labels.print_summary(random_label_results(2))
  out = capsys.readouterr().out
  assert "0.5000 +- 0.0000" in out  # two equal seeds: a std of 0
  assert "+0.2000 [+0.2000, +0.2000]" in out


def test_digits_demo_table_of_one_seed(capsys):
  result = digits_demo.RunResult(0.8123, np.ones(3), 1.0)
  digits_demo.print_table([("swr", "warm start", [result])])
  out = capsys.readouterr().out
  assert "0.8123 (1 seed, no std)" in out and "+-" not in out


def test_protocol_summary_of_one_seed(capsys):
  settings = types.SimpleNamespace(
    out=None, protocol="warm_start", data="digits", model="mlp", epochs=1,
    seeds=1,
  )  # fmt: skip
  results = {
    "methods": {"swr": {"final_test_acc": [0.8123], "weight_norms": [[[1]]]}}
  }
  protocols.finish(results, settings)
  out = capsys.readouterr().out
  assert "0.8123 (1 seed, no std)" in out and "+- 0.0000" not in out


def rl_results(scores: list[float]) -> dict:
  fresh = [s - 1.0 for s in scores]
  return {
    "methods": {
      "swr": {
        "visits": [{"game": "Breakout", "cycle": 0, "score": scores}],
        "fresh": {"Breakout": {"score": fresh}},
      }
    }
  }


def test_rl_gap_of_one_seed_has_no_interval_in_json_or_table():
  summary = rl_continual.summarize(rl_results([3.0]))
  (row,) = summary["swr"]
  assert row["gap_mean"] == 1.0 and row["gap_ci95"] is None
  json.dumps(summary, allow_nan=False)  # valid JSON: no NaN token
  table = continual_report.table({"summary": summary})
  assert "+1.00 (under 2 seeds, no CI)" in table and "nan" not in table
  two = rl_continual.summarize(rl_results([3.0, 5.0]))["swr"][0]
  assert two["gap_ci95"] == 0.0  # both gaps are 1: a defined width of 0
  assert "+1.00 ± 0.00" in continual_report.table({"summary": {"swr": [two]}})
