"""Minor page faults per optimizer step: fresh temporaries, counted.

XLA:CPU allocates a step's temporaries at every call; a large one is new
memory whose pages the kernel maps on first touch. This counts the faults
(``getrusage``), which do not depend on the machine's load, for the steps of
``optimizer_step.py``.

  python -m benchmarks.page_faults --shape "21M params"
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import resource

import jax

from benchmarks import optimizer_step

PAGE_BYTES = resource.getpagesize()


def faults_per_step(name: str, params, steps: int) -> float:
  """Minor page faults per call of ``name``'s donated step, after warm-up."""
  loop = optimizer_step.optimizer_loop(name, params)
  carry = loop.carry
  for _ in range(3):
    carry = loop.step(*carry, *loop.args)
  jax.block_until_ready(carry)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(steps):
    carry = loop.step(*carry, *loop.args)
  jax.block_until_ready(carry)
  return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--shape", default="21M params")
  parser.add_argument("--steps", type=int, default=20)
  args = parser.parse_args(argv)
  ((shape, layers, width),) = optimizer_step.shapes_named(args.shape)
  params = optimizer_step.make_params(layers, width)
  print(f"{shape}, {jax.devices()[0].platform}, jax {jax.__version__}")
  for name in optimizer_step.OPTIMIZERS:
    faults = faults_per_step(name, params, args.steps)
    print(
      f"{name:14s} {faults:9.0f} minor page faults per step "
      f"({faults * PAGE_BYTES / 2**20:.1f} MiB)"
    )


if __name__ == "__main__":
  main()
