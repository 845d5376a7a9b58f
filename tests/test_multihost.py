"""Two processes joined by jax.distributed train as one process does.

tests/multihost_run.py runs as two processes of 4 simulated CPU devices each
(coordinator on a free localhost port, CPU collectives through gloo) and as
one process of 8 devices, with params and Adam moments sharded FSDP-style
over all 8 devices. Where this JAX cannot run CPU collectives, the tests are
skipped with the workers' error as the reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests import multihost_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "multihost_run.py"
TIMEOUT_S = 120
ERROR_TAIL = 2000  # Characters of a worker's stderr shown on failure.


@dataclasses.dataclass
class Worker:
  """One started worker process and the files its output goes to."""

  name: str
  process: subprocess.Popen
  stdout: pathlib.Path
  stderr: pathlib.Path

  def error(self) -> str:
    text = self.stderr.read_text(errors="replace")
    lines = [
      line for line in text.splitlines() if not line.startswith("[Gloo]")
    ]
    last = lines[-1] if lines else "no output"
    # The last line (the exception) first: `pytest -ra` shows one line.
    return (
      f"{self.name} (exit {self.process.returncode}): {last}\n"
      + "\n".join(lines)[-ERROR_TAIL:]
    )

  def reached_collectives(self) -> bool:
    return multihost_run.COLLECTIVES_OK in self.stderr.read_text(
      errors="replace"
    )

  def report(self) -> dict:
    return json.loads(self.stdout.read_text().strip().splitlines()[-1])


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


def start(
  num_processes: int, tmp_path: pathlib.Path, started: list[Worker]
) -> list[Worker]:
  """Starts the processes of one run; each is also appended to ``started``."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  port = free_port()
  workers = []
  for process_id in range(num_processes):
    name = f"process {process_id} of {num_processes}"
    stem = tmp_path / f"worker_{num_processes}_{process_id}"
    stdout, stderr = stem.with_suffix(".out"), stem.with_suffix(".err")
    with open(stdout, "w") as out, open(stderr, "w") as err:
      # Files, not pipes: a worker blocked on a full pipe would stall the
      # collectives of the other one.
      process = subprocess.Popen(
        [
          sys.executable,
          str(WORKER),
          str(process_id),
          str(num_processes),
          str(port),
        ],
        env=env,
        stdout=out,
        stderr=err,
        cwd=ROOT,
      )
    workers.append(Worker(name, process, stdout, stderr))
    started.append(workers[-1])
  return workers


def wait_all(workers: list[Worker], timeout_s: float) -> list[Worker]:
  """Waits until all exit, or one fails, or time is up; kills what is left.

  Returns:
    The workers that had to be killed.
  """
  deadline = time.monotonic() + timeout_s
  try:
    while time.monotonic() < deadline:
      codes = [worker.process.poll() for worker in workers]
      if all(code is not None for code in codes) or any(codes):
        break  # A failed worker leaves the others waiting for it.
      time.sleep(0.1)
  finally:  # Also on KeyboardInterrupt: no worker outlives the test.
    killed = [worker for worker in workers if worker.process.poll() is None]
    for worker in killed:
      worker.process.kill()
    for worker in workers:
      worker.process.wait()
  return killed


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[int, list[dict]]:
  """The workers' reports, keyed by the number of processes of the run."""
  tmp_path = tmp_path_factory.mktemp("multihost")
  everyone = []
  try:
    runs = {n: start(n, tmp_path, everyone) for n in (2, 1)}
  except BaseException:
    wait_all(everyone, 0)
    raise
  killed = wait_all(everyone, TIMEOUT_S)
  failed = [
    worker
    for worker in everyone
    if worker not in killed and worker.process.returncode != 0
  ]
  culprits = failed or killed
  if culprits:
    errors = "\n".join(worker.error() for worker in culprits)
    if not all(worker.reached_collectives() for worker in culprits):
      pytest.skip(
        f"this JAX cannot run multi-process CPU collectives: {errors}"
      )
    what = "failed" if failed else f"did not finish in {TIMEOUT_S} s"
    pytest.fail(f"multihost_run.py {what}:\n{errors}")
  return {
    n: [worker.report() for worker in workers] for n, workers in runs.items()
  }


def max_abs_diff(a, b) -> float:
  return max(
    float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def test_each_process_holds_4_devices_and_an_eighth_of_each_kernel(reports):
  for process_index, report in enumerate(reports[2]):
    assert report["process_index"] == process_index
    assert report["process_count"] == 2
    assert (report["local_devices"], report["global_devices"]) == (4, 8)
    assert report["param_shard_shape"] == [8, 64]  # Kernel [64, 64] / 8.
    assert report["moment_shard_shape"] == [8, 64]
  assert reports[1][0]["local_devices"] == 8


@pytest.mark.parametrize("process_index", [0, 1])
def test_swr_state_is_replicated_and_equal_to_one_process(
  reports, process_index
):
  report = reports[2][process_index]
  assert report["swr_state_replicated"]
  assert report["swr_state_same_on_local_devices"]
  assert max_abs_diff(report["swr_state"], reports[1][0]["swr_state"]) < 1e-6
  assert report["swr_state"]["step_count"] == multihost_run.STEPS


@pytest.mark.parametrize("process_index", [0, 1])
def test_two_processes_train_as_one(reports, process_index):
  report, single = reports[2][process_index], reports[1][0]
  assert max_abs_diff(report["params"], single["params"]) < 1e-6
  assert max_abs_diff(report["losses"], single["losses"]) < 1e-6
  # The gathered params moved away from the initialization.
  assert max_abs_diff(report["params"], multihost_run.global_params()) > 1e-3
