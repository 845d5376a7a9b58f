"""Does SWR still act on bfloat16 / float16 weights? Measured, not assumed.

One step changes a weight by the factor c = 1 + coef (n / ||W|| - 1), i.e. by
at most ``coef`` of its value. When that is below half the dtype's epsilon
(bf16: 3.9e-3, f16: 4.9e-4), adding the update rounds it away. This starts a
32 x 32 layer at twice its reference norm and runs 100 SWR steps with zero
base updates; exact arithmetic gives ||W|| / n = 1 + (1 - coef) ** 100.
From the repository root::

  python -m benchmarks.low_precision --out benchmarks/results/low_precision_cpu.json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import _timing
import optax_swr

COEFS = (1e-4, 1e-3, 3e-3, 1e-2, 1e-1)
DTYPES = {
  "float32": jnp.float32,
  "bfloat16": jnp.bfloat16,
  "float16": jnp.float16,
}
STEPS = 100


def norm_ratio_after_shrinking(dtype, coef: float, steps: int = STEPS) -> float:
  """||W|| / n after ``steps`` SWR steps from ||W|| = 2n, zero updates."""
  weight = np.random.default_rng(0).normal(size=(32, 32)) / np.sqrt(32)
  tx = optax_swr.swr(coef=coef)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optax_swr.LowPrecisionWarning)
    state = tx.init({"Dense_0": {"kernel": jnp.asarray(weight, dtype)}})
  params = {"Dense_0": {"kernel": jnp.asarray(2 * weight, dtype)}}
  zeros = jax.tree.map(jnp.zeros_like, params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(zeros, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(steps):
    params, state = step(params, state)
  norm = np.linalg.norm(np.asarray(params["Dense_0"]["kernel"], np.float64))
  return float(norm / state.reference_norms[0])


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=None, help="write the results here")
  args = parser.parse_args(argv)
  rows = []
  for coef in COEFS:
    row = {"coef": coef, "exact": 1 + (1 - coef) ** STEPS}
    for name, dtype in DTYPES.items():
      row[name] = norm_ratio_after_shrinking(dtype, coef, STEPS)
    rows.append(row)
  _timing.report(
    {"steps": STEPS, "rows": rows},
    args.out,
    columns=[
      ("coef", "g"),
      ("exact", ".4f"),
      *((name, ".4f") for name in DTYPES),
    ],
    rows=[(r["coef"], r["exact"], *(r[name] for name in DTYPES)) for r in rows],
    title=f"||W|| / n after {STEPS} SWR steps from ||W|| = 2n (zero updates)",
  )
  return {"rows": rows}


if __name__ == "__main__":
  main()
