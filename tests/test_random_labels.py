"""The random-label task sequence: its JSON, its subset, its errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from examples import cli
from examples import data
from examples.paper import random_labels
from examples.paper import summarize_results
from tests import selection_runs

TINY = [
  "--data",
  "digits",
  "--tasks",
  "2",
  "--steps-per-task",
  "40",
  "--seeds",
  "2",
  "--num-examples",
  "100",
  "--batch-size",
  "16",
  "--workers",
  "1",
  "--no-progress",
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  out = tmp_path_factory.mktemp("rl") / "rl.json"
  flags = ["--methods", "vanilla,snp,swr", "--swr", "1e-2,1", "--out", str(out)]
  returned = random_labels.main([*TINY, *flags])
  assert json.loads(out.read_text()) == json.loads(json.dumps(returned))
  return returned


def test_json_schema(results):
  """The results' layout (smoke checks: shapes and ranges); the real checks
  are the step count and the coefficients the runs were given."""
  assert set(results) == {"config", "versions", "wall_time_s", "methods"}
  assert list(results["methods"]) == ["vanilla", "snp", "swr_0.01", "swr_1"]
  for entry in results["methods"].values():
    for key in ("task_train_acc", "task_online_acc"):
      acc = np.array(entry[key])
      assert acc.shape == (2, 2) and ((0 <= acc) & (acc <= 1)).all()
    assert np.array(entry["weight_norms"]).shape == (2, 2, 3)
    dormant = np.array(entry["dormant_fraction"])
    assert dormant.shape == (2, 2) and ((0 <= dormant) & (dormant <= 1)).all()
    rank = np.array(entry["effective_rank"])
    assert rank.shape == (2, 2) and (rank >= 1).all() and (rank <= 100).all()
    assert entry["hparams"]["total_steps"] == 80
  assert results["methods"]["swr_1"]["hparams"]["coefs"] == [1.0]
  assert results["config"]["num_classes"] == 10


def test_swr_1_projects_every_layer_to_its_initial_norm(results):
  norms = np.array(results["methods"]["swr_1"]["weight_norms"])
  vanilla = np.array(results["methods"]["vanilla"]["weight_norms"])
  # Both tasks end at the initial norms (seed by seed), vanilla grows.
  np.testing.assert_allclose(norms[:, 0], norms[:, 1], rtol=1e-5)
  assert (vanilla[:, 1].sum(-1) > norms[:, 1].sum(-1) * 1.01).all()
  # ... which the entry records, seed by seed and layer by layer.
  initial = results["methods"]["swr_1"]["initial_weight_norms"]
  np.testing.assert_allclose(norms[:, 1], initial, rtol=1e-5)
  np.testing.assert_array_equal(
    initial, results["methods"]["vanilla"]["initial_weight_norms"]
  )


def test_the_methods_in_the_loop_run_there_and_get_no_switch_signal():
  flags = ["--methods", "full_reset,redo", "--redo-every", "30"]
  methods = random_labels.main([*TINY, *flags, "--redo", "0.5"])["methods"]
  assert methods["full_reset"]["hparams"]["task_switch"] is True
  redo = methods["redo"]["hparams"]
  assert redo["task_switch"] is False and redo["hook_every"] == 30
  assert redo["coefs"] == [0.5]


def test_a_seed_run_on_its_own_is_its_lane_of_a_run_of_many(results):
  """--first-seed runs seeds apart (selection seeds, reporting seeds): seed 1
  alone gives what it gave as the second lane, intervention included."""
  flags = ["--methods", "vanilla,snp", "--first-seed", "1", "--seeds", "1"]
  alone = random_labels.main([*TINY, *flags])
  assert alone["config"]["first_seed"] == 1
  for name in ("vanilla", "snp"):
    for key in ("task_train_acc", "weight_norms"):
      np.testing.assert_allclose(
        alone["methods"][name][key][0],
        results["methods"][name][key][1],
        rtol=1e-5,
      )


def test_every_method_of_a_seed_sees_the_same_labels():
  first = random_labels.task_labels(3, 1, 50, 10)
  np.testing.assert_array_equal(first, random_labels.task_labels(3, 1, 50, 10))
  assert (first != random_labels.task_labels(3, 2, 50, 10)).any()
  assert (first != random_labels.task_labels(4, 1, 50, 10)).any()


def test_the_subset_is_fixed_and_class_balanced():
  dataset = data.load_digits()
  x = random_labels.training_subset(dataset, 200, 32)
  assert x.shape == (200, 64)
  np.testing.assert_array_equal(
    x, random_labels.training_subset(dataset, 200, 32)
  )
  rows = {
    row.tobytes(): i
    for i, row in enumerate(dataset.x_train.reshape(len(dataset.x_train), -1))
  }
  labels = dataset.y_train[[rows[row.tobytes()] for row in x]]
  assert np.bincount(labels).tolist() == [20] * 10


def test_calibration_reports_the_first_budget_that_reaches_the_target():
  results = random_labels.main(
    [*TINY, "--calibrate", "--steps-per-task", "500", "--num-examples", "50"]
  )
  calibration = results["calibration"]
  assert calibration["steps"] == [250, 500]
  accuracy = np.array(calibration["train_acc"])
  reached = [
    s for s, a in zip(calibration["steps"], accuracy.T) if a.min() >= 0.95
  ]
  assert calibration["calibrated_steps"] == (reached[0] if reached else None)


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--tasks", "0"], "--tasks must be at least 1; got 0"),
    (["--first-seed", "999"], "--first-seed 999: the seeds run must lie in"),
    (["--methods", "vanilla,adamx"], "--methods: unknown ['adamx']"),
    (["--cbp", "2"], "--cbp: every coefficient must be in [0, 1]"),
    (["--swr", "2"], "--swr: every coefficient must be in [0, 1]"),
    (["--l2-init", "x"], "--l2-init: 'x' is not a comma-separated list"),
    (["--num-examples", "8"], "--num-examples 8: need at least one batch"),
    (["--data", "mnist"], "--data: unknown data set 'mnist'"),
  ],
)
def test_bad_flags_are_clear_errors_and_leave_no_json(flags, message, tmp_path):
  out = tmp_path / "never.json"
  with pytest.raises(ValueError, match=re.escape(message)):
    random_labels.main([*TINY, *flags, "--out", str(out)])
  assert not out.exists()
  assert not list(tmp_path.iterdir())


def test_bad_data_files_are_clear_errors(tmp_path):
  missing = tmp_path / "missing.npz"
  np.savez(missing, x_train=np.zeros((40, 4)), y_train=np.zeros(40, int))
  with pytest.raises(
    ValueError, match=r"lacks the arrays \['x_test', 'y_test'\]"
  ):
    random_labels.main([*TINY, "--data", str(missing)])
  unseen = tmp_path / "unseen.npz"
  np.savez(
    unseen,
    x_train=np.zeros((40, 4)),
    y_train=np.arange(40) % 2,
    x_test=np.zeros((4, 4)),
    y_test=np.array([0, 1, 7, 1]),
  )
  with pytest.raises(
    ValueError, match=r"y_test has labels \[7\] out of the range"
  ):
    random_labels.main([*TINY, "--data", str(unseen)])
  negative = tmp_path / "negative.npz"
  np.savez(
    negative,
    x_train=np.zeros((40, 4)),
    y_train=np.arange(40) % 2 - 1,
    x_test=np.zeros((4, 4)),
    y_test=np.zeros(4, int),
  )
  with pytest.raises(ValueError, match="labels must be non-negative integers"):
    random_labels.main([*TINY, "--data", str(negative)])


def test_too_many_examples_names_the_smallest_class_and_the_limit():
  # 4 per class needed; class 1 (3) is the first short class, class 2 (2)
  # the smallest, so only 2 per class, 6 in all, can be drawn.
  labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
  dataset = data.Dataset(
    x_train=np.zeros((len(labels), 2), np.float32),
    y_train=labels,
    x_test=np.zeros((1, 2), np.float32),
    y_test=np.zeros(1, np.int32),
  )
  with pytest.raises(ValueError) as error:
    random_labels.training_subset(dataset, 12, 1)
  message = str(error.value)
  assert "the smallest class, 2, has only 2" in message
  assert "ask for at most 6 " in message
  assert "class 1" not in message
  assert random_labels.training_subset(dataset, 6, 1).shape == (6, 2)


# A grid of L2 on seeds 0 to 2 (made by hand), best inside it at 1e-3.
L2_GRID = {
  ("vanilla", ()): 0.2,
  ("l2", (1e-5,)): 0.3,
  ("l2", (1e-3,)): 0.5,
  ("l2", (1e-1,)): 0.4,
}


@pytest.fixture(scope="module")
def chosen(tmp_path_factory):
  """The selection run's file, and the run of its choices on seeds 3, 4."""
  folder = tmp_path_factory.mktemp("selected")
  selection_run = selection_runs.run("random_labels", L2_GRID)
  path = selection_runs.write(folder / "rl_selection.json", selection_run)
  out = folder / "rl_report.json"
  flags = ["--first-seed", "3", "--from-selection", path, "--out", str(out)]
  return path, str(out), random_labels.main([*TINY, *flags])


def test_from_selection_runs_each_method_at_its_chosen_setting(chosen):
  path, out, report = chosen
  methods = report["methods"]
  assert list(methods) == ["vanilla", "l2"]
  assert methods["l2"]["hparams"]["coefs"] == [1e-3]
  config = report["config"]
  assert config["first_seed"] == 3 and list(config["methods"]) == [
    "vanilla",
    "l2",
  ]
  record = config["selection"]
  assert record["files"] == [cli.recorded_path(path)]
  assert record["seeds"] == [0, 1, 2]
  l2 = record["choices"]["l2"]
  assert l2["flag"] == "--l2" and l2["setting"] == 1e-3
  assert l2["grid"] == [1e-5, 1e-3, 1e-1]
  assert record["choices"]["vanilla"]["flag"] is None
  assert np.array(methods["l2"]["initial_weight_norms"]).shape == (2, 3)


def test_the_report_of_a_selection_renders(chosen):
  path, out, _ = chosen
  text = summarize_results.markdown(summarize_results.load([path, out]))
  assert "#### Random-label tasks: rl_report.json" in text
  assert "| l2 (--l2 0.001) |" in text  # the chosen setting's row
  assert "**0.001: 0.50" in text  # its mean on the selection seeds
  assert "| l2 (--l2 0.001) − vanilla |" in text  # Holm's table
  assert "selection seeds 0 to 2" in text and "Holm" in text
  assert "2 seeds (3 to 4)" in text
  # Neither file is also a plain random-label table.
  assert "### Random-label tasks" not in text.splitlines()
  with pytest.raises(ValueError, match=r"give summarize_results rl_sel"):
    summarize_results.markdown(summarize_results.load([out]))


def refused(tmp_path, flags, grid=L2_GRID, protocol="random_labels", **config):
  """The error of a run of ``--from-selection`` on a selection run made
  of ``grid``; no JSON is written."""
  selection_run = selection_runs.run(protocol, grid, **config)
  path = selection_runs.write(tmp_path / "sel.json", selection_run)
  out = tmp_path / "never.json"
  argv = [*TINY, "--from-selection", path, *flags, "--out", str(out)]
  with pytest.raises(ValueError) as error:
    random_labels.main(argv)
  assert not out.exists()
  return str(error.value)


@pytest.mark.parametrize(
  "flags, message",
  [
    (
      ["--first-seed", "1"],
      "--first-seed 1: the run's seeds 1 to 2 include [1, 2], which chose "
      "the settings",
    ),
    (["--first-seed", "3", "--l2", "1e-2"], "--l2: --from-selection runs"),
    (["--first-seed", "3", "--methods", "swr"], "--methods: --from-sel"),
    (
      ["--first-seed", "3", "--tasks", "3"],
      "--tasks 3: the selection run",
    ),
    (["--first-seed", "3", "--calibrate"], "--calibrate trains vanilla"),
  ],
)
def test_from_selection_refusals_name_the_flag(flags, message, tmp_path):
  assert message in refused(tmp_path, flags)


def test_from_selection_refuses_what_it_cannot_choose_from(tmp_path):
  at_edge = {**L2_GRID, ("l2", (1e-1,)): 0.9}
  assert "extend --l2 above 0.1 and select again" in refused(
    tmp_path, ["--first-seed", "3"], at_edge
  )
  two = {key: v for key, v in L2_GRID.items() if key != ("l2", (1e-1,))}
  assert "give --l2 at least 3" in refused(tmp_path, ["--first-seed", "3"], two)
  no_vanilla = {k: v for k, v in L2_GRID.items() if k[0] != "vanilla"}
  assert "no vanilla run" in refused(
    tmp_path, ["--first-seed", "3"], no_vanilla
  )
  permuted = refused(
    tmp_path, ["--first-seed", "3"], protocol="permuted_inputs"
  )
  assert "is a run of examples.paper.permuted_inputs" in permuted
