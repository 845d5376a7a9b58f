"""The generated report and figures, on small JSON files made by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from examples.paper import plot_results
from examples.paper import selection
from examples.paper import stats
from examples.paper import summarize_results
from examples.paper import task_runs
from tests import selection_runs

VANILLA = [0.80, 0.82, 0.84]
SWR = [0.83, 0.84, 0.88]
SCRATCH = [0.85, 0.86, 0.86]


def protocol_entry(final, method, coefs=(), epochs=((3, 2),) * 3):
  """A method's entry; seed s trains sum(epochs[s]) epochs (ragged if so)."""
  lengths = [sum(phases) for phases in epochs]
  return {
    "test_acc": [[0.5] * (n - 1) + [a] for n, a in zip(lengths, final)],
    "online_acc": [[0.5] * n for n in lengths],
    "final_test_acc": list(final),
    "weight_norms": [[[1.0, 2.0]] * n for n in lengths],
    "balancedness": None,
    "epochs_per_phase": [list(phases) for phases in epochs],
    "phase_train_acc": [[1.0] * len(phases) for phases in epochs],
    "total_steps": [10 * n for n in lengths],
    "seconds": 1.5,
    "hparams": {
      "method": method,
      "lr": 1e-3,
      "lr_boundaries": [],
      "coefs": list(coefs),
    },
  }


def protocol_json(protocol="warm_start", until=None, epochs=((3, 2),) * 3):
  methods = {
    "vanilla": protocol_entry(VANILLA, "vanilla", epochs=epochs),
    "swr": protocol_entry(SWR, "swr", (1e-3, 1e-2), epochs=epochs),
  }
  if protocol == "warm_start":
    scratch_epochs = [(sum(e),) for e in epochs]
    methods["from_scratch"] = protocol_entry(
      SCRATCH, "vanilla", epochs=scratch_epochs
    )
  return {
    "config": {
      "protocol": protocol,
      "data": "digits",
      "model": "mlp",
      "epochs": 3,
      "seeds": 3,
      "batch_size": 64,
      "until_train_acc": until,
      "lr_decay": False,
      "coefs": {"swr": [1e-3, 1e-2]},
      "num_train": 100,
      "num_test": 50,
      "split_per_seed": True,
      "online_rounds": 2,
    },
    "versions": {},
    "wall_time_s": 90.0,
    "methods": methods,
  }


def random_label_json():
  """Six tasks, so that the last five are tasks 2 to 6."""
  accuracy = {
    "vanilla": [[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.9, 0.7, 0.7, 0.5, 0.5, 0.3]],
    "swr_0.01": [
      [0.9, 0.9, 0.8, 0.8, 0.7, 0.7],
      [0.9, 0.8, 0.8, 0.7, 0.7, 0.7],
    ],
  }
  methods = {
    name: {
      "task_train_acc": acc,
      "task_online_acc": acc,
      "weight_norms": [[[1.0, 2.0]] * 6] * 2,
      "dormant_fraction": [[0.25] * 6] * 2,
      "effective_rank": [[40.0] * 6] * 2,
      "hparams": {
        "method": name.split("_")[0],
        "coefs": [0.01] if name != "vanilla" else [],
        "lr": 1e-3,
        "total_steps": 600,
      },
      "seconds": 2.0,
    }
    for name, acc in accuracy.items()
  }
  config = {
    "data": "digits",
    "methods": ["vanilla", "swr"],
    "coefs": {"l2": [1e-4], "swr": [0.01]},
    "tasks": 6,
    "steps_per_task": 100,
    "seeds": 2,
    "num_examples": 300,
    "batch_size": 32,
    "lr": 1e-3,
  }
  return {
    "config": config,
    "versions": {},
    "wall_time_s": 60.0,
    "methods": methods,
  }


def write(tmp_path, name, result):
  path = tmp_path / name
  path.write_text(json.dumps(result))
  return str(path)


def report(*paths):
  return summarize_results.markdown(summarize_results.load(paths))


def test_spread_is_the_sample_standard_deviation(tmp_path):
  text = report(write(tmp_path, "ws.json", protocol_json()))
  # [0.80, 0.82, 0.84]: sample std 0.02; np.std (ddof=0) would be 0.0163.
  assert "| vanilla | 0.8200 ± 0.0200 |" in text
  assert "ddof=1" in text


def test_difference_from_vanilla_is_the_paired_interval(tmp_path):
  text = report(write(tmp_path, "g.json", protocol_json("generalization")))
  assert f"| swr | {stats.paired(SWR, VANILLA)} |" in text
  assert "95% t interval" in text


def test_pull_of_swr_rows(tmp_path):
  text = report(write(tmp_path, "ws.json", protocol_json()))
  # lambda_f = 1e-3, every seed 10 steps x 5 epochs.
  assert "| SWR λ_f × steps | 0.001 × 50 = 0.05 |" in text


def test_warm_start_to_convergence(tmp_path):
  ragged = ((4, 2), (6, 3), (5, 1))
  main = protocol_json(until=0.99, epochs=ragged)
  sweep = protocol_json(until=0.99, epochs=ragged)
  sweep["config"]["coefs"]["swr"] = [0.1, 0.1]
  del sweep["methods"]["vanilla"]
  text = report(
    write(tmp_path, "wsu.json", main),
    write(tmp_path, "sweep_wsu_0.1.json", sweep),
  )
  assert "### Warm start trained to convergence" in text
  assert "### Warm start (half" not in text
  gap = stats.paired(SCRATCH, SWR)
  steps = np.mean([60, 90, 60])
  swr_row = f"| swr | 0.8500 ± 0.0265 | {gap} | 5 / 2 | 0.001 × 70 = 0.07 |"
  assert steps == 70 and swr_row in text
  assert "| swr λ=0.1 |" in text  # the sweep joins its setting's table
  assert "| from_scratch | 0.8567 ± 0.0058 |  | 7 |  |" in text


def test_random_label_table(tmp_path):
  text = report(write(tmp_path, "rl.json", random_label_json()))
  assert "### Random-label tasks" in text
  vanilla_last5 = [np.mean([0.8, 0.7, 0.6, 0.5, 0.4]), 0.54]
  swr_last5 = [0.78, 0.74]
  mean, std = stats.mean_std(swr_last5)
  difference = stats.paired(swr_last5, vanilla_last5)
  assert f"| {mean:.4f} ± {std:.4f} | {difference} | 0.01 × 600 = 6 |" in text
  assert "| task 1 | task 3 | task 6 | last 5 tasks |" in text
  assert "6 tasks × 100 steps" in text and "1.0 min" in text


def test_calibration_and_figure1_tables(tmp_path):
  calibration = {
    "config": {
      "data": "digits",
      "num_examples": 300,
      "seeds": 2,
      "batch_size": 32,
    },
    "calibration": {
      "steps": [250, 500],
      "train_acc": [[0.5, 0.97], [0.4, 0.95]],
      "target": 0.95,
      "calibrated_steps": 500,
    },
    "wall_time_s": 6.0,
  }
  figure1 = {
    "config": {"data": "digits", "model": "mlp", "epochs": 1, "seed": 0},
    "factors": [0.5, 1.0, 2.0],
    "proportional_test_acc": [0.9, 0.9, 0.9],
    "weights_only_test_acc": [0.3, 0.9, 0.8],
    "proportional_max_rel_error": [1e-7, 0.0, 2e-7],
    "base_test_acc": 0.9,
    "wall_time_s": 3.0,
  }
  text = report(
    write(tmp_path, "cal.json", calibration),
    write(tmp_path, "f1.json", figure1),
  )
  assert "| 500 | 0.9600 | 0.9500 |" in text
  assert "reaches 0.95: 500" in text
  assert "| 0.5 | 0.9000 | 0.3000 | 1.0e-07 |" in text


def test_paper_numbers_next_to_ours(tmp_path):
  text = report(write(tmp_path, "g.json", protocol_json("generalization")))
  assert "| vanilla | 0.9789 ± 0.0009 |" in text  # the paper's Table 1
  assert "ours: digits mlp, 3 ep" in text
  assert "| SWR + re-init | 0.9829 |" in text  # Table 5


def test_markers_keep_the_text_outside(tmp_path):
  target = tmp_path / "RESULTS.md"
  target.write_text(
    "intro\n<!-- tables:begin -->\nold\n<!-- tables:end -->\nend\n"
  )
  summarize_results.main(
    [
      write(tmp_path, "g.json", protocol_json("generalization")),
      "--write",
      str(target),
    ]
  )
  text = target.read_text()
  assert text.startswith("intro\n<!-- tables:begin -->\n### Generalization")
  assert text.endswith("\n<!-- tables:end -->\nend\n") and "old" not in text


def test_missing_markers_leave_the_file_alone(tmp_path):
  target = tmp_path / "RESULTS.md"
  target.write_text("no markers\n")
  path = write(tmp_path, "g.json", protocol_json("generalization"))
  with pytest.raises(ValueError, match="lacks the markers"):
    summarize_results.main([path, "--write", str(target)])
  assert target.read_text() == "no markers\n"


def test_an_unknown_json_is_a_clear_error(tmp_path):
  path = write(tmp_path, "other.json", {"hello": 1})
  with pytest.raises(ValueError, match="other.json: not a JSON file of"):
    summarize_results.load([path])


def permuted_calibration_json():
  online = [[0.8, 0.8, 0.7, 0.7, 0.6, 0.6], [0.8, 0.7, 0.7, 0.6, 0.6, 0.5]]
  rows = [
    {"tasks": n, "first": [0.8, 0.75], "last": [0.6, 0.55]} for n in (5, 6)
  ]
  return {
    "config": {
      "data": "digits",
      "tasks": 6,
      "examples_per_task": 160,
      "seeds": 2,
      "batch_size": 16,
    },
    "calibration": {
      "window": 5,
      "table": rows,
      "calibrated_tasks": 5,
      "online_acc": online,
    },
    "wall_time_s": 6.0,
  }


def test_permuted_calibration_is_not_the_random_label_pilot(tmp_path):
  text = report(write(tmp_path, "pi_cal.json", permuted_calibration_json()))
  assert text.startswith("### Permuted inputs\n\n#### Calibration: pi_cal")
  difference = stats.paired([0.6, 0.55], [0.8, 0.75])
  assert f"| 5 | 0.7750 ± 0.0354 | 0.5750 ± 0.0354 | {difference} |" in text
  assert "lies below 0: 5" in text


def test_a_report_needs_the_selection_it_was_chosen_from(tmp_path):
  grid = {("vanilla", ()): 0.2, **{("l2", (c,)): 0.3 for c in (1, 2, 3)}}
  grid["l2", (2,)] = 0.5
  selection_run = selection_runs.run("random_labels", grid)
  choices = selection.select(task_runs.grids([selection_run], range(3)))
  chosen = {("vanilla", ()): 0.2, ("l2", (2,)): 0.5}
  run = selection_runs.run("random_labels", chosen, first_seed=3)
  run["config"]["selection"] = {
    "files": ["results/sel.json"],
    "seeds": [0, 1, 2],
    "choices": {m: selection.choice_record(c) for m, c in choices.items()},
  }
  path = write(tmp_path, "report.json", run)
  with pytest.raises(ValueError, match="give summarize_results sel.json too"):
    report(path)
  assert "| l2 (--l2 2) − vanilla |" in report(
    path, write(tmp_path, "sel.json", selection_run)
  )
  grid["l2", (3,)] = 0.9  # a selection run replaced since
  changed = write(
    tmp_path, "sel.json", selection_runs.run("random_labels", grid)
  )
  with pytest.raises(ValueError, match="now choose"):
    report(path, changed)


@pytest.mark.parametrize(
  "name, result",
  [
    ("rl.json", random_label_json()),
    ("wsu.json", protocol_json(until=0.99, epochs=((4, 2), (6, 3), (5, 1)))),
    (
      "pi.json",
      selection_runs.run("permuted_inputs", {("vanilla", ()): 0.5}),
    ),
    ("pi_cal.json", permuted_calibration_json()),
  ],
)
def test_plots_are_pngs(tmp_path, name, result):
  pytest.importorskip("matplotlib", reason="plots need the [plots] extra")
  png = plot_results.plot_file(write(tmp_path, name, result), str(tmp_path))
  assert png == str(tmp_path / name.replace(".json", ".png"))
  assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_beyond_chains_json_is_read_and_has_no_table(tmp_path):
  # `make results` summarizes every JSON of examples/paper/results; the
  # beyond-chains numbers are in docs/how_it_works.md, drawn by its script.
  path = write(tmp_path, "beyond_chains.json", {"config": {}, "models": {}})
  assert summarize_results.markdown(summarize_results.load([path])) == ""
