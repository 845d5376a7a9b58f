"""Permuted inputs: its tasks, its JSON, its errors (examples/paper)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from examples import cli
from examples.paper import permuted_inputs
from examples.paper import stats
from examples.paper import summarize_results
from tests import selection_runs

TINY = [
  "--data",
  "digits",
  "--tasks",
  "3",
  "--examples-per-task",
  "160",
  "--seeds",
  "2",
  "--batch-size",
  "16",
  "--workers",
  "1",
  "--no-progress",
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  out = tmp_path_factory.mktemp("pi") / "pi.json"
  # adamw with weight decay 0 is Adam: vanilla's run, if it sees the same
  # permutations and examples in the same order.
  flags = [
    "--methods",
    "vanilla,adamw,snp_noise,cbp",
    "--adamw",
    "0",
    "--out",
    str(out),
  ]
  returned = permuted_inputs.main([*TINY, *flags])
  assert json.loads(out.read_text()) == json.loads(json.dumps(returned))
  return returned


def test_json_schema(results):
  assert set(results) == {"config", "versions", "wall_time_s", "methods"}
  methods = results["methods"]
  assert list(methods) == ["vanilla", "adamw", "snp_noise", "cbp"]
  for entry in methods.values():
    online = np.array(entry["task_online_acc"])
    assert online.shape == (2, 3) and ((0 <= online) & (online <= 1)).all()
    assert np.array(entry["weight_norms"]).shape == (2, 3, 3)
    assert np.array(entry["initial_weight_norms"]).shape == (2, 3)
    for key in ("first_task_test_acc", "last_task_test_acc"):
      accuracy = np.array(entry[key])
      assert (
        accuracy.shape == (2,) and ((0 <= accuracy) & (accuracy <= 1)).all()
      )
    assert entry["hparams"]["total_steps"] == 3 * 10
  told = {name: e["hparams"]["task_switch"] for name, e in methods.items()}
  assert told == {
    "vanilla": False,
    "adamw": False,
    "snp_noise": True,
    "cbp": False,
  }
  assert methods["cbp"]["hparams"]["hook_every"] == 1
  assert methods["snp_noise"]["hparams"]["coefs"] == [0.8, 0.2]
  config = results["config"]
  assert config["steps_per_task"] == 10 and config["input_dim"] == 64


def test_every_method_sees_the_same_tasks(results):
  methods = results["methods"]
  for key in ("task_online_acc", "first_task_test_acc", "weight_norms"):
    np.testing.assert_array_equal(
      methods["adamw"][key], methods["vanilla"][key]
    )
  # Shrink & Perturb acts at each switch: it leaves task 1 alone only.
  snp = np.array(methods["snp_noise"]["task_online_acc"])
  vanilla = np.array(methods["vanilla"]["task_online_acc"])
  np.testing.assert_array_equal(snp[:, 0], vanilla[:, 0])
  assert (snp[:, 1:] != vanilla[:, 1:]).any()


def test_tasks_are_fixed_per_seed_and_task():
  permutation, examples = permuted_inputs.task_draw(3, 1, 500, 64, 100)
  assert sorted(permutation) == list(range(64))
  assert len(set(examples)) == 100 and examples.max() < 500
  again = permuted_inputs.task_draw(3, 1, 500, 64, 100)
  np.testing.assert_array_equal(permutation, again[0])
  np.testing.assert_array_equal(examples, again[1])
  for other in [(3, 2), (4, 1)]:
    different = permuted_inputs.task_draw(*other, 500, 64, 100)
    assert (different[0] != permutation).any()
    assert (different[1] != examples).any()


def test_calibration_finds_the_first_task_count_with_a_loss(tmp_path):
  results = permuted_inputs.main([*TINY, "--calibrate", "--tasks", "12"])
  calibration = results["calibration"]
  table = calibration["table"]
  assert [row["tasks"] for row in table] == [10, 12]
  online = np.array(calibration["online_acc"])
  assert online.shape == (2, 12)
  first = online[:, :5].mean(1)
  np.testing.assert_allclose(table[0]["first"], first)
  np.testing.assert_allclose(table[0]["last"], online[:, 5:10].mean(1))
  below = [row["tasks"] for row in table if row["difference"][2] < 0]
  assert calibration["calibrated_tasks"] == (below[0] if below else None)
  # Its table, not the random-label pilot's.
  path = selection_runs.write(tmp_path / "pi_calibration.json", results)
  text = summarize_results.markdown(summarize_results.load([path]))
  assert "#### Calibration: pi_calibration.json" in text
  assert "| tasks | first 5 | last 5 | last − first |" in text
  assert text.count("\n| 1") == 2  # rows for 10 and 12 tasks


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--tasks", "0"], "--tasks must be at least 1; got 0"),
    (["--methods", "vanilla,adamx"], "--methods: unknown ['adamx']"),
    (["--snp-noise-shrink", "2"], "--snp-noise-shrink: every coefficient"),
    (["--redo-every", "0"], "--redo-every must be at least 1"),
    (
      ["--examples-per-task", "100000"],
      "--examples-per-task 100000: a task needs at least one batch",
    ),
    (["--examples-per-task", "8"], "--examples-per-task 8: a task needs"),
  ],
)
def test_bad_flags_are_clear_errors_and_leave_no_json(flags, message, tmp_path):
  out = tmp_path / "never.json"
  with pytest.raises(ValueError, match=re.escape(message)):
    permuted_inputs.main([*TINY, *flags, "--out", str(out)])
  assert not list(tmp_path.iterdir())


def test_a_data_file_without_a_test_set_is_refused(tmp_path):
  missing = tmp_path / "missing.npz"
  np.savez(missing, x_train=np.zeros((40, 4)), y_train=np.zeros(40, int))
  with pytest.raises(
    ValueError, match=r"lacks the arrays \['x_test', 'y_test'\]"
  ):
    permuted_inputs.main([*TINY, "--data", str(missing)])


def test_a_run_has_its_own_table(results, tmp_path):
  """Not the random-label table, which would look for task_train_acc."""
  path = selection_runs.write(tmp_path / "pi.json", results)
  text = summarize_results.markdown(summarize_results.load([path]))
  assert text.startswith("### Permuted inputs\n\n#### pi.json")
  vanilla = np.array(results["methods"]["vanilla"]["task_online_acc"])
  first = stats.mean_std_text(vanilla[:, :3].mean(1))
  assert f"| vanilla | {first} | {first} |" in text  # 3 tasks: both windows
  assert "| first 3 tasks | last 3 tasks |" in text


def test_from_selection_runs_the_chosen_settings_on_other_seeds(tmp_path):
  grid = {
    ("vanilla", ()): 0.2,
    ("swr", (1e-3,)): 0.4,
    ("swr", (1e-2,)): 0.5,
    ("swr", (1e-1,)): 0.45,
  }
  selection_run = selection_runs.run("permuted_inputs", grid)
  path = selection_runs.write(tmp_path / "pi_selection.json", selection_run)
  out = str(tmp_path / "pi_report.json")
  flags = ["--from-selection", path, "--first-seed", "3", "--out", out]
  report = permuted_inputs.main([*TINY, *flags])
  assert list(report["methods"]) == ["vanilla", "swr"]
  assert report["methods"]["swr"]["hparams"]["coefs"] == [1e-2]
  assert report["config"]["selection"]["seeds"] == [0, 1, 2]
  text = summarize_results.markdown(summarize_results.load([path, out]))
  assert "#### Permuted inputs: pi_report.json" in text
  assert "| first 3 tasks (online) | last 3 tasks (online) |" in text
  assert "| swr (--swr 0.01) − vanilla |" in text
  assert "0.01 × 30 = 0.3" in text  # lambda x steps
  assert "### Permuted inputs" not in text.splitlines()  # no plain table
  # A random-label selection run is refused, naming what wrote it.
  other = selection_runs.run("random_labels", grid)
  wrong = selection_runs.write(tmp_path / "rl_selection.json", other)
  with pytest.raises(ValueError, match="is a run of examples.paper.random_"):
    permuted_inputs.main([*TINY, "--from-selection", wrong])


def test_layer_norm_methods_train_the_layer_norm_mlp(tmp_path):
  # ln and swr_ln name the model with a LayerNorm before each ReLU; at
  # lambda = 1 SWR projects every layer, the LayerNorms' scales included,
  # back to its initial norm after each step (normalize-and-project).
  flags = ["--methods", "vanilla,ln,swr_ln", "--swr-ln", "1"]
  results = permuted_inputs.main([*TINY, *flags])
  methods = results["methods"]
  assert np.array(methods["vanilla"]["initial_weight_norms"]).shape == (2, 3)
  for name in ("ln", "swr_ln"):  # hidden_0, norms_0, hidden_1, norms_1, head
    assert np.array(methods[name]["initial_weight_norms"]).shape == (2, 5)
  final = np.array(methods["swr_ln"]["weight_norms"])[:, -1]
  np.testing.assert_allclose(
    final, methods["swr_ln"]["initial_weight_norms"], rtol=1e-5
  )
  grown = np.array(methods["ln"]["weight_norms"])[:, -1]
  assert not np.allclose(grown, methods["ln"]["initial_weight_norms"])


def test_protocols_without_a_model_choice_refuse_the_layer_norm_methods():
  from examples.paper import protocols  # Only this test needs it.

  parser = cli.parser(None)
  protocols.add_flags(parser, "vanilla")
  args = parser.parse_args(["--methods", "vanilla,swr_ln"])
  with pytest.raises(ValueError, match="--methods: unknown \\['swr_ln'\\]"):
    protocols.settings_from_flags(args, "warm_start", "warm_start")
