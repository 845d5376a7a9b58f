"""Smoke test of examples/sharded_training.py on 8 simulated CPU devices."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

pytest.importorskip("sklearn", reason="the examples need the [examples] extra")

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def printed() -> str:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  # The script sets the device count itself, unless XLA_FLAGS already does.
  env["XLA_FLAGS"] = re.sub(
    r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")
  )
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "examples.sharded_training",
      "--steps",
      "40",
      "--log-every",
      "20",
      "--devices",
      "8",
      "--fsdp",
      "4",
    ],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_mesh_and_placement_are_printed(printed):
  assert "mesh: {'data': 2, 'fsdp': 4} over 8 cpu devices" in printed
  # A [128, 128] kernel is split in 4 over fsdp; the 10 head biases are not.
  assert re.search(
    r"hidden_1/kernel +\(128, 128\) +P\('fsdp',\) +\(32, 128\)", printed
  )
  assert re.search(r"head/bias +\(10,\) +P\(\) +\(10,\)", printed)
  assert (
    len(
      re.findall(r"^  cpu:\d: \[\d+:\d+, 0:128\]$", printed, flags=re.MULTILINE)
    )
    == 8
  )


def test_it_learns(printed):
  accuracies = [
    float(a) for a in re.findall(r"test accuracy (\d\.\d+)", printed)
  ]
  losses = [float(a) for a in re.findall(r"train loss (\d+\.\d+)", printed)]
  assert len(accuracies) == 2
  assert losses[-1] < losses[0]
  assert accuracies[-1] > 0.5  # Chance is 0.1.


def test_state_placement_is_checked(printed):
  assert "Adam's moments split as the params: True" in printed
  assert re.search(
    r"SWR state: 6 arrays, \d+ bytes, replicated, equal on 8 "
    r"devices",
    printed,
  )
