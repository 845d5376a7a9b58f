"""Very deep nets: compile time, memory and step time of adam + swr.

SWR works layer by layer (one norm and one rescale per layer), so its jitted
update grows with the depth. For MLPs of ``depth`` dense layers of width 16,
this measures, for ``adam``, ``adam + swr`` and ``adam + swr`` through
``swr(..., deferred=True)`` + ``optax_swr.rescale_params`` ("deferred"): the time to trace and lower
the step, the XLA compile time, the compiled program's temporary and argument
memory (``memory_analysis``), and the median step time; "x adam" is the
compile time over adam's. ``--train-step``
measures the whole training step (forward, backward, update) too, which is
what a user compiles. From the repository root::

  python -m benchmarks.deep_compile --train-step --out benchmarks/results/deep_compile_cpu.json
  python -m benchmarks.deep_compile --quick
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import _timing
from benchmarks import optimizer_step
import optax_swr

DEPTHS = (10, 100, 300, 1000)
QUICK_DEPTHS = (10, 30)
WIDTH = 16
BATCH = 32
OPTIMIZERS = ("adam", "adam+swr", "adam+swr deferred")


def loss(params: dict, x: jax.Array) -> jax.Array:
  for i in range(len(params)):
    layer = params[f"Dense_{i}"]
    x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
  return jnp.mean(x**2)


def make_step(
  tx: optax.GradientTransformation, train_step: bool, deferred: bool = False
):
  """The jitted step; with ``train_step``, gradients come from the loss."""

  def step(params, opt_state, grads_or_batch):
    grads = (
      jax.grad(loss)(params, grads_or_batch) if train_step else grads_or_batch
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if deferred:
      return optax_swr.rescale_params(params, opt_state)
    return params, opt_state

  return jax.jit(step, donate_argnums=(0, 1))


def measure(
  depth: int, name: str, train_step: bool, repeats: int, compiles: int = 1
) -> dict:
  tx = optimizer_step.OPTIMIZERS[name]()
  params = optimizer_step.make_params(depth, WIDTH)
  opt_state = tx.init(params)
  data = (
    jnp.ones((BATCH, WIDTH))
    if train_step
    else jax.tree.map(jnp.ones_like, params)
  )
  step = make_step(tx, train_step, name in optimizer_step.DEFERRED)

  start = time.perf_counter()
  lowered = step.lower(params, opt_state, data)
  trace_s = time.perf_counter() - start
  compile_times = []
  for attempt in range(compiles):  # XLA:CPU's compile time varies ~20%.
    if attempt:  # Or jax hands back the executable it compiled before.
      jax.clear_caches()
      lowered = step.lower(params, opt_state, data)
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_times.append(time.perf_counter() - start)
  compile_s = min(compile_times)
  memory = compiled.memory_analysis()

  carry = (params, opt_state)
  seconds = []
  for _ in range(repeats + 1):  # The first call is a warm-up.
    start = time.perf_counter()
    carry = jax.block_until_ready(compiled(*carry, data))
    seconds.append(time.perf_counter() - start)
  return {
    "depth": depth,
    "optimizer": name,
    "train_step": train_step,
    "trace_s": trace_s,
    "compile_s": compile_s,
    "temp_bytes": int(memory.temp_size_in_bytes),
    "argument_bytes": int(memory.argument_size_in_bytes),
    "step_ms": 1e3 * float(np.median(seconds[1:])),
  }


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _timing.add_flags(parser, repeats=20, rounds=1)
  parser.add_argument("--depths", type=int, nargs="+", default=None)
  parser.add_argument(
    "--compiles",
    type=int,
    default=1,
    help="compile each step this many times and keep the fastest",
  )
  parser.add_argument(
    "--train-step",
    action="store_true",
    help="also measure forward + backward + update",
  )
  args = parser.parse_args(argv)
  _timing.quick_counts(args)
  depths = args.depths or (QUICK_DEPTHS if args.quick else DEPTHS)
  kinds = (False, True) if args.train_step else (False,)
  rows = [
    measure(depth, name, kind, args.repeats, args.compiles)
    for kind in kinds
    for depth in depths
    for name in OPTIMIZERS
  ]
  adam = {
    (r["train_step"], r["depth"]): r["compile_s"]
    for r in rows
    if r["optimizer"] == "adam"
  }
  for r in rows:
    r["compile_vs_adam"] = r["compile_s"] / adam[(r["train_step"], r["depth"])]
  _timing.report(
    {"width": WIDTH, "batch": BATCH, "compiles": args.compiles, "rows": rows},
    args.out,
    columns=[
      ("step", "s"),
      ("depth", "d"),
      ("optimizer", "s"),
      ("trace s", ".2f"),
      ("compile s", ".2f"),
      ("x adam", ".2f"),
      ("temp MB", ".2f"),
      ("args MB", ".2f"),
      ("step ms", ".3f"),
    ],
    rows=[
      (
        "train" if r["train_step"] else "optimizer",
        r["depth"],
        r["optimizer"],
        r["trace_s"],
        r["compile_s"],
        r["compile_vs_adam"],
        r["temp_bytes"] / 1e6,
        r["argument_bytes"] / 1e6,
        r["step_ms"],
      )
      for r in rows
    ],
    title=f"dense layers of width {WIDTH}, batch {BATCH}",
  )
  return {"rows": rows}


if __name__ == "__main__":
  main()
