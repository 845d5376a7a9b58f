"""Thinning the committed results keeps every table and the figures' x values."""

from __future__ import annotations

import copy
import json

import pytest

from examples.paper import compact_results
from examples.paper import plot_results
from tests import test_report


def test_kept_indices_start_at_the_first_and_end_at_the_last():
  assert compact_results.kept_indices(10, 4) == [0, 4, 8, 9]
  assert compact_results.kept_indices(9, 4) == [0, 4, 8]
  assert compact_results.kept_indices(3, 1) == [0, 1, 2]
  assert compact_results.stride_for(600, 60) == 11  # 56 points (10: 61)
  assert len(compact_results.kept_indices(600, 11)) <= 60
  assert compact_results.stride_for(40, 60) == 1


def long_protocol_json():
  """Ragged seeds of 40 to 60 epochs, values that tell the epochs apart."""
  result = test_report.protocol_json(
    until=0.99, epochs=((30, 10), (40, 20), (25, 20))
  )
  for entry in result["methods"].values():
    entry["test_acc"] = [
      [epoch / 1000 + 1 / 3 for epoch in range(1, len(seed))] + [seed[-1]]
      for seed in entry["test_acc"]
    ]
  return result


def test_protocol_traces_thin_and_the_tables_stay(tmp_path):
  result = long_protocol_json()
  path = test_report.write(tmp_path, "ws.json", result)
  compact_results.main([path, "--max-points", "8"])
  thin = json.loads(open(path).read())
  for name, entry in thin["methods"].items():
    full = result["methods"][name]
    assert entry["final_test_acc"] == full["final_test_acc"]
    assert entry["epochs_per_phase"] == full["epochs_per_phase"]
    for seed, (epochs, accuracy) in enumerate(
      zip(entry["trace_epochs"], entry["test_acc"])
    ):
      assert len(epochs) == len(accuracy) <= 8
      assert epochs[0] == 1 and epochs[-1] == len(full["test_acc"][seed])
      for epoch, value in zip(epochs, accuracy):  # the same epochs, rounded
        assert value == pytest.approx(full["test_acc"][seed][epoch - 1], 1e-5)
  assert test_report.report(path) == test_report.report(
    test_report.write(tmp_path, "full.json", result)
  )
  again = copy.deepcopy(thin)
  compact_results.main([path, "--max-points", "8"])  # twice: no change
  assert json.loads(open(path).read()) == again
  pytest.importorskip("matplotlib", reason="plots need the [plots] extra")
  png = plot_results.plot_file(path, str(tmp_path))
  assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_beyond_chains_steps_and_summaries(tmp_path):
  variant = {
    "distance": [float(s) for s in range(1, 101)],
    "distance_unpinned": [0.5] * 100,
    "max_log_ratio": [0.25] * 100,
    "loss": [1.0] * 100,
    "final_loss": 0.125,
    "max_ratio": [1.5, 2.0],
  }
  model = {"layers": ["a", "b"], "variants": {"adam": variant}}
  result = {"config": {}, "models": {"mlp": model}}
  path = test_report.write(tmp_path, "beyond_chains.json", result)
  compact_results.main([path, "--max-points", "10"])
  thin = json.loads(open(path).read())["models"]["mlp"]
  assert thin["steps"] == [1, 12, 23, 34, 45, 56, 67, 78, 89, 100]
  assert thin["variants"]["adam"]["distance"] == thin["steps"]
  assert thin["variants"]["adam"]["max_ratio"] == [1.5, 2.0]
  assert thin["variants"]["adam"]["final_loss"] == 0.125


def test_max_points_below_two_is_refused(tmp_path):
  path = test_report.write(tmp_path, "ws.json", long_protocol_json())
  with pytest.raises(ValueError, match="--max-points must be at least 2"):
    compact_results.main([path, "--max-points", "1"])


def test_a_moved_file_records_where_it_now_is(tmp_path):
  results = {"config": {"out": "/elsewhere/rl.json", "tasks": 3}, "methods": {}}
  path = tmp_path / "rl.json"
  path.write_text(json.dumps(results))
  compact_results.main([str(path)])
  moved = json.loads(path.read_text())
  assert moved["config"] == {"out": str(path), "tasks": 3}
