"""The benchmark set of the memory-floor questions, in one run, for a device.

Runs, on the default JAX backend, within a time budget (8 minutes by
default): the optimizer step (``optimizer_step.py``, donated and not), the
HLO passes and ``memory_analysis`` of the donated steps (``hlo_passes.py``),
compile time and memory of deep MLPs (``deep_compile.py``, training step up
to 300 layers) and the training step of the paper's CNN, ResNet-18 and the
ViT (``train_step.py``). Each part writes its JSON into ``--out-dir``;
``summary.json`` there names the device and says which parts ran, how long
each took, and which were skipped because the budget was spent. From the
repository root, on the machine with the accelerator::

  python -m benchmarks.run_all --out-dir benchmarks/results/gpu
  python -m benchmarks.run_all --quick --out-dir /tmp/bench   # seconds, CPU
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import json
import os
import time

import jax

from benchmarks import _timing
from benchmarks import deep_compile
from benchmarks import hlo_passes
from benchmarks import optimizer_step
from benchmarks import train_step

BUDGET_SECONDS = 480


def parts(
  quick: bool,
) -> list[tuple[str, Callable[[list[str]], object], list[str]]]:
  """``(name, main, argv)`` of each part, most wanted first."""
  if quick:
    return [
      ("optimizer_step", optimizer_step.main, ["--quick"]),
      ("hlo_passes", hlo_passes.main, ["--quick"]),
      ("deep_compile", deep_compile.main, ["--quick", "--train-step"]),
      ("train_step", train_step.main, ["--quick", "--models=cnn"]),
    ]
  return [
    ("optimizer_step", optimizer_step.main, ["--repeats=20", "--rounds=3"]),
    ("hlo_passes", hlo_passes.main, ["--shape=21M params"]),
    (
      "train_step",
      train_step.main,
      ["--models=cnn,resnet18,transformer", "--repeats=10", "--rounds=3"],
    ),
    (
      "deep_compile",
      deep_compile.main,
      ["--train-step", "--depths", "10", "100", "300", "--repeats=10"],
    ),
  ]


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out-dir", required=True, help="where the JSON goes")
  parser.add_argument(
    "--budget", type=float, default=BUDGET_SECONDS, help="seconds in all"
  )
  parser.add_argument("--quick", action="store_true", help="smoke run")
  args = parser.parse_args(argv)
  os.makedirs(args.out_dir, exist_ok=True)
  device = jax.devices()[0]
  summary: dict = {
    "device": f"{device.platform}: {device.device_kind}",
    "device_count": jax.device_count(),
    "environment": _timing.environment(),
    "budget_seconds": args.budget,
    "parts": {},
  }
  start = time.perf_counter()
  for name, run, part_argv in parts(args.quick):
    spent = time.perf_counter() - start
    if spent > args.budget:
      summary["parts"][name] = {"skipped": f"budget spent after {spent:.0f} s"}
      continue
    out = os.path.join(args.out_dir, f"{name}.json")
    part_start = time.perf_counter()
    run([*part_argv, "--out", out])
    summary["parts"][name] = {
      "json": out,
      "seconds": time.perf_counter() - part_start,
    }
  summary["seconds"] = time.perf_counter() - start
  with open(os.path.join(args.out_dir, "summary.json"), "w") as file:
    json.dump(summary, file, indent=2)
  print(json.dumps(summary["parts"], indent=2))
  return summary


if __name__ == "__main__":
  main()
