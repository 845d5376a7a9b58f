"""Sharded params on 8 simulated CPU devices give the single-device numbers."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report() -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(ROOT)
  result = subprocess.run(
    [sys.executable, str(ROOT / "tests" / "sharded_run.py")],
    env=env,
    capture_output=True,
    text=True,
    check=True,
    timeout=600,
  )
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layout", ["fsdp", "data_x_model"])
def test_sharded_training_matches_one_device(report, layout):
  entry = report[layout]
  assert entry["max_abs_diff"] < 1e-5
  assert entry["scales_diff"] < 1e-6
  assert entry["params_keep_sharding"] and entry["moments_keep_sharding"]
  assert entry["swr_state_replicated"]
  assert entry["swr_state_bytes"] < 1024  # O(layers) scalars


@pytest.mark.parametrize("layout", ["fsdp", "data_x_model"])
def test_swr_step_communicates_only_scalars(report, layout):
  # Adam alone compiles to no collective: these are SWR's norm reductions,
  # which XLA may combine into fewer all-reduces than there are layers.
  collectives = report[layout]["collectives"]
  assert collectives and len(collectives) <= 4, collectives
  for collective in collectives:
    op, shapes = collective.split(" ", 1)
    assert op == "all-reduce", collectives
    assert set(re.findall(r"\w+\[[^\]]*\]", shapes)) == {"f32[]"}, collectives


@pytest.mark.parametrize("loop", ["shard_map", "pmap"])
def test_data_parallel_training_matches_one_device(report, loop):
  entry = report[loop]
  assert entry["devices"] == 8
  assert entry["max_abs_diff"] < 1e-5
  assert entry["swr_state_diff"] < 1e-6
  assert entry["loss_diff"] < 1e-5 and entry["loss_decreased"]
  assert entry["params_same_on_all_devices"]
  assert entry["swr_state_same_on_all_devices"]
