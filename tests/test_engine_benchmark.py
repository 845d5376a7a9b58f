"""benchmarks/experiment_engine.py runs (--quick) and its check holds.

Timings are never asserted (benchmarks/RESULTS.md has them); the engine's
params after the same batches must equal the step-by-step loop's.
"""

from __future__ import annotations

import json

from benchmarks import experiment_engine


def test_experiment_engine_quick_matches_step_by_step(tmp_path):
  out = tmp_path / "engine.json"
  experiment_engine.main(["--quick", "--out", str(out)])
  result = json.loads(out.read_text())
  rows = result["rows"]
  assert [r["optimizer"] for r in rows] == ["adam", "adam+swr"]
  assert result["flax"] and result["command"]
  for row in rows:
    rates = row["steps_per_second"]
    assert set(rates) == {"step-by-step", "engine 1 lane", "engine lanes"}
    # Smoke checks of the timings; the real check is the line after.
    assert all(rate > 0 for rate in rates.values())
    assert row["engine lanes/step-by-step"] > 0
    assert row["max_abs_param_difference"] < 1e-5
  # Whole protocol runs, old loop against run_protocol (a smoke check: the
  # script runs both; the times are the report's, not the test's).
  protocol_rows = result["protocol_rows"]
  assert [r["optimizer"] for r in protocol_rows] == ["adam", "adam+swr"]
  assert all(r["steps"] == 2 * 38 for r in protocol_rows)  # 2 seeds x 1 ep
