"""The whole optimizer state survives an orbax checkpoint, bit for bit.

tests/checkpoint_run.py trains STEPS=8 steps without a break ("full") and,
in the same process, 4 steps then a checkpoint ("save"); a fresh process
restores it and trains the last 4 steps ("resume"). The runs cover chain + swr with schedules,
a norm reset and a classifier, inject_hyperparams, MultiSteps (checkpoint in
the middle of an accumulation), and params sharded FSDP-style over 8 devices
restored onto a 2x4 mesh or one device.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import chex
import numpy as np
import pytest

pytest.importorskip("orbax.checkpoint", reason="needs the [checkpoint] extra")

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNS = (
  "chain",
  "inject_hyperparams",
  "multisteps",
  "fsdp_to_2x4",
  "fsdp_to_one_device",
)
SHARDED = ("fsdp_to_2x4", "fsdp_to_one_device")


def run_worker(modes: str, directory: pathlib.Path) -> None:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(ROOT)
  # The later processes load the executables the first one compiled: this
  # halves the wall time, and running the same programs is what a resumed
  # job does anyway.
  env["JAX_COMPILATION_CACHE_DIR"] = str(directory / "jax_cache")
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
  result = subprocess.run(
    [
      sys.executable,
      str(ROOT / "tests" / "checkpoint_run.py"),
      modes,
      str(directory),
    ],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, f"{modes} failed:\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
  directory = tmp_path_factory.mktemp("checkpoint")
  # What a restart must survive is a fresh process: the resume gets one.
  run_worker("full,save", directory)
  run_worker("resume", directory)
  reports = {
    mode: json.loads((directory / f"{mode}.json").read_text())
    for mode in ("full", "save", "resume")
  }
  return {"dir": directory, **reports}


def load(runs: dict, mode: str, name: str) -> dict[str, np.ndarray]:
  with np.load(runs["dir"] / mode / f"{name}.npz") as arrays:
    return dict(arrays)


@pytest.mark.parametrize("name", RUNS)
def test_resumed_run_is_bit_identical(runs, name):
  full, resumed = load(runs, "full", name), load(runs, "resume", name)
  assert sorted(full) == sorted(resumed)
  assert any(key.startswith("['opt_state']") for key in full)
  for key, value in full.items():
    assert value.dtype == resumed[key].dtype, key
    assert np.array_equal(value, resumed[key]), key


@pytest.mark.parametrize("name", RUNS)
def test_restore_gives_back_the_state_classes(runs, name):
  restored = runs["resume"][name]
  assert restored["step"] == 4
  assert restored["treedef_is_init"]  # SWRState, ScaleByAdamState, ...
  assert restored["treedef"] == runs["full"][name]["treedef"]
  assert restored["swr_states"] == 1


@pytest.mark.parametrize("name", RUNS)
def test_restore_lays_arrays_out_as_the_target(runs, name):
  assert runs["resume"][name]["as_target"]


def test_checkpoint_falls_between_schedule_events(runs):
  saved = runs["save"]
  # Norm reset at 3 before the checkpoint, coef boundary at 5 after it.
  assert saved["chain"]["swr_step_count"] == 4
  # MultiSteps: one inner update done, one micro-batch accumulated.
  assert saved["multisteps"] == {"swr_step_count": 1, "mini_step": 1}


@pytest.mark.parametrize("name", SHARDED)
def test_resharded_run_matches_one_device_within_rounding(runs, name):
  # Bit-identical to an uninterrupted run with the same layouts (above), but
  # not to a one-device run: a sharded matmul or norm sums per-device partial
  # results, in another order than one device does, so float32 rounding
  # differs (relative differences below 1e-6 after 8 steps).
  one_device, sharded = load(runs, "full", "chain"), load(runs, "full", name)
  chex.assert_trees_all_close(sharded, one_device, rtol=1e-5, atol=1e-6)
