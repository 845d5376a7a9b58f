"""Sharded params on 8 simulated CPU devices give the single-device numbers."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report() -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=8").strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(ROOT)
  result = subprocess.run(
      [sys.executable, str(ROOT / "tests" / "sharded_run.py")],
      env=env, capture_output=True, text=True, check=True, timeout=600)
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layout", ["fsdp", "data_x_model"])
def test_sharded_training_matches_one_device(report, layout):
  entry = report[layout]
  assert entry["max_abs_diff"] < 1e-5
  assert entry["scales_diff"] < 1e-6
  assert entry["params_keep_sharding"] and entry["moments_keep_sharding"]
  assert entry["swr_state_replicated"]
  assert entry["swr_state_bytes"] < 1024  # O(layers) scalars
