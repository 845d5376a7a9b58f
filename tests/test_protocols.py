"""The protocol scripts on a user's .npz, the data loaders and the plots."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pytest

from examples import data
from examples.paper import continual
from examples.paper import generalization
from examples.paper import plot_results
from examples.paper import summarize_results
from examples.paper import warm_start

# One process: the worker processes (the default on a CPU) have a test of
# their own.
FLAGS = [
  "--epochs",
  "1",
  "--seeds",
  "2",
  "--no-progress",
  "--batch-size",
  "32",
  "--workers",
  "1",
]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
  """A user's data set: 4 classes of 8x8 grey images with a bright row."""
  rng = np.random.default_rng(0)

  def split(n):
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 60, (n, 8, 8)).astype(np.uint8)
    for label in range(4):
      x[y == label, label, :] = 255
    return x, y

  (x_train, y_train), (x_test, y_test) = split(160), split(40)
  path = tmp_path_factory.mktemp("data") / "user.npz"
  np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
  return str(path)


def check_schema(results, methods, epochs_per_seed, seeds=2):
  """The results' layout (smoke checks: shapes, accuracies in [0, 1]).

  The real check: every method trains for as many steps as vanilla (fewer
  for ``from_scratch``, which runs the second phase only), so the comparison
  is fair.
  """
  vanilla_steps = results["methods"][methods[0]]["total_steps"]
  for name, entry in results["methods"].items():
    if name == "from_scratch":
      assert 0 < min(entry["total_steps"])
      assert max(np.subtract(entry["total_steps"], vanilla_steps)) < 0
    else:
      assert entry["total_steps"] == vanilla_steps, name
  assert set(results) == {"config", "versions", "wall_time_s", "methods"}
  assert results["wall_time_s"] > 0
  assert list(results["methods"]) == methods
  for name, entry in results["methods"].items():
    if name == "from_scratch":  # one phase, where the others have two
      epochs_per_seed //= 2
    assert len(entry["test_acc"]) == seeds
    assert all(len(run) == epochs_per_seed for run in entry["test_acc"])
    assert entry["final_test_acc"] == [run[-1] for run in entry["test_acc"]]
    assert all(0.0 <= a <= 1.0 for run in entry["test_acc"] for a in run)
    assert len(entry["online_acc"]) == seeds
    assert all(0.0 <= a <= 1.0 for run in entry["online_acc"] for a in run)
    assert len(entry["total_steps"]) == seeds
    num_layers = len(results["config"]["layers"])
    assert np.array(entry["weight_norms"]).shape == (
      seeds,
      epochs_per_seed,
      num_layers,
    )
  json.dumps(results)  # everything is JSON-ready


@pytest.fixture(scope="module")
def warm(npz, tmp_path_factory):
  """warm_start.py's every method on the CNN, and the JSON it wrote."""
  out = tmp_path_factory.mktemp("warm") / "ws.json"
  results = warm_start.main(
    ["--data", npz, "--model", "cnn", "--width", "4", "--out", str(out), *FLAGS]
  )
  return results, out


@pytest.fixture(scope="module")
def lr_decay(npz, tmp_path_factory):
  """generalization.py with --lr-decay (4 epochs), and the JSON it wrote."""
  out = tmp_path_factory.mktemp("lr_decay") / "g.json"
  results = generalization.main(
    [
      "--data",
      npz,
      "--model",
      "mlp",
      "--lr-decay",
      "--out",
      str(out),
      *FLAGS,
      "--epochs",
      "4",
    ]
  )
  return results, out


@pytest.fixture(scope="module")
def sweep(npz):
  """generalization.py's vanilla and swr, with a second coefficient of swr.

  A method's run depends on its own flags only (each entry is a job of its
  own, on the same data, batches and initialisation), so the vanilla and swr
  entries are those of a run without the sweep: the workers test compares
  them with a run in worker processes.
  """
  return generalization.main(
    ["--data", npz, "--methods", "vanilla,swr", "--swr", "1e-3,0.1", *FLAGS]
  )


def test_warm_start_on_a_users_npz(warm):
  results, out = warm
  check_schema(
    results,
    ["vanilla", "l2", "l2_init", "snp", "head_reset", "swr", "from_scratch"],
    epochs_per_seed=2,
  )
  assert json.loads(out.read_text())["config"]["input_shape"] == [8, 8, 1]
  assert results["config"]["num_classes"] == 4
  swr = results["methods"]["swr"]["hparams"]
  assert swr["coefs"] == [1e-3, 1e-3]  # the paper's CNN warm-start value
  # The CNN has no normalization layer, so balancedness is recorded (a smoke
  # check: it is >= 1 by definition).
  assert all(
    b >= 1.0 for run in results["methods"]["swr"]["balancedness"] for b in run
  )


@pytest.mark.parametrize("access, epochs", [("full", 3), ("limited", 3)])
def test_continual_stages(npz, access, epochs):
  results = continual.main(
    [
      "--data",
      npz,
      "--access",
      access,
      "--chunks",
      "3",
      "--methods",
      "vanilla,snp,swr",
      *FLAGS,
    ]
  )
  check_schema(results, ["vanilla", "snp", "swr"], epochs_per_seed=epochs)
  assert results["config"]["protocol"] == f"continual_{access}"


def test_continual_stage_sets():
  train = np.arange(10, 20)
  full = continual.stages(train, 0, 3, "full")
  limited = continual.stages(train, 0, 3, "limited")
  assert [len(s) for s in full] == [4, 7, 10]
  assert sorted(np.concatenate(limited).tolist()) == list(range(10, 20))
  assert set(full[0]) == set(limited[0])
  assert set(full[1]) == set(limited[0]) | set(limited[1])
  other = continual.stages(train, 1, 3, "limited")  # drawn per seed
  assert any(set(a) != set(b) for a, b in zip(limited, other))


def test_a_chunk_smaller_than_a_batch_is_refused(npz, tmp_path):
  out = tmp_path / "never.json"
  flags = ["--data", npz, "--access", "limited", "--chunks", "8"]
  with pytest.raises(
    ValueError, match=r"fewer than one batch \(--batch-size 32\)"
  ):
    continual.main([*flags, *FLAGS, "--out", str(out)])
  assert not out.exists()


def test_generalization_with_lr_decay_adds_swr_reinit(lr_decay):
  results, _ = lr_decay
  check_schema(
    results,
    ["vanilla", "l2", "l2_init", "swr", "swr_reinit"],
    epochs_per_seed=4,
  )
  boundaries = results["methods"]["swr_reinit"]["hparams"]["lr_boundaries"]
  assert boundaries == [10, 15]  # 4 epochs of 5 steps (160 / 32): 50%, 75%
  assert results["methods"]["swr"]["hparams"]["lr_boundaries"] == [10, 15]


def test_unknown_method_and_data_are_clear_errors(npz):
  with pytest.raises(ValueError, match=re.escape("--methods: unknown ['sgd']")):
    warm_start.main(["--data", npz, "--methods", "sgd", *FLAGS])
  with pytest.raises(ValueError, match="--data: unknown data set 'mnist'"):
    data.load("mnist")


def test_npz_errors(tmp_path):
  missing = tmp_path / "missing.npz"
  np.savez(missing, x_train=np.zeros((2, 3)))
  with pytest.raises(
    ValueError,
    match=re.escape("lacks the arrays ['x_test', 'y_test', 'y_train']"),
  ):
    data.load(str(missing))
  bad = tmp_path / "bad.npz"
  np.savez(
    bad,
    x_train=np.zeros((2, 3)),
    y_train=np.array([0.5, 1.0]),
    x_test=np.zeros((1, 3)),
    y_test=np.array([0]),
  )
  with pytest.raises(ValueError, match="labels must be non-negative integers"):
    data.load(str(bad))
  with pytest.raises(ValueError, match="does not exist"):
    data.load(str(tmp_path / "nowhere.npz"))


def test_read_idx_round_trip(tmp_path):
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  header = bytes([0, 0, 0x08, 3]) + np.array([2, 3, 4], ">u4").tobytes()
  path = tmp_path / "images-idx3-ubyte.gz"
  with gzip.open(path, "wb") as file:
    file.write(header + images.tobytes())
  np.testing.assert_array_equal(data.read_idx(str(path)), images)


def test_fashion_mnist_reports_how_to_install(tmp_path):
  with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist"):
    data.load_fashion_mnist(str(tmp_path / "absent"))


def test_plots_are_written(lr_decay, tmp_path):
  pytest.importorskip("matplotlib", reason="plots need the [plots] extra")
  _, out = lr_decay  # a generalization run's JSON, as the script wrote it
  png = plot_results.plot_file(str(out), str(tmp_path / "figures"))
  assert png.endswith("g.png")
  assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_summary_tables_are_generated_into_the_markers(warm, tmp_path):
  _, out = warm  # a warm-start run's JSON, as the script wrote it
  report = tmp_path / "RESULTS.md"
  report.write_text(
    "intro\n<!-- tables:begin -->\nold\n<!-- tables:end -->\noutro\n"
  )
  summarize_results.main([str(out), "--write", str(report)])
  text = report.read_text()
  assert (
    text.startswith("intro\n")
    and text.endswith("outro\n")
    and "old" not in text
  )
  results = json.loads(out.read_text())["methods"]
  final = np.array(results["swr"]["final_test_acc"])
  assert f"| swr | {final.mean():.4f} ± {final.std(ddof=1):.4f} |" in text
  assert "| from_scratch |" in text


def test_workers_give_the_results_of_one_process(npz, sweep):
  here = sweep  # one process; its swr λ=0.1 entry is not compared
  flags = ["--data", npz, "--methods", "vanilla,swr", "--swr", "1e-3", *FLAGS]
  there = generalization.main([*flags, "--workers", "2"])
  assert list(there["methods"]) == ["vanilla", "swr"]
  for name, entry in there["methods"].items():
    assert here["methods"][name]["test_acc"] == entry["test_acc"]
    np.testing.assert_allclose(
      here["methods"][name]["weight_norms"], entry["weight_norms"], rtol=1e-5
    )


def test_a_list_of_swr_coefficients_adds_sweep_entries(npz, sweep):
  results = sweep
  assert list(results["methods"]) == ["vanilla", "swr", "swr λ=0.1"]
  assert results["methods"]["swr"]["hparams"]["coefs"][0] == 1e-3
  assert results["methods"]["swr λ=0.1"]["hparams"]["coefs"] == [0.1, 0.1]
  with pytest.raises(
    ValueError, match=re.escape("--swr: every coefficient must be in [0, 1]")
  ):
    generalization.main(["--data", npz, "--swr", "1e-3,2", *FLAGS])


def test_until_train_acc_stops_each_seed_at_the_target_or_the_cap(npz):
  cap, target = 6, 0.6
  results = warm_start.main(
    [
      "--data",
      npz,
      "--methods",
      "vanilla",
      "--until-train-acc",
      str(target),
      *FLAGS,
      "--epochs",
      str(cap),
    ]
  )
  for entry in results["methods"].values():
    for epochs, accuracy, test_acc in zip(
      entry["epochs_per_phase"], entry["phase_train_acc"], entry["test_acc"]
    ):
      assert len(test_acc) == sum(epochs)  # one record per epoch trained
      for e, a in zip(epochs, accuracy):
        assert 1 <= e <= cap and (a >= target or e == cap)
