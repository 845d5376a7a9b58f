"""The random-label task sequence: its JSON, its subset, its errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from examples import data
from examples.paper import random_labels

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
