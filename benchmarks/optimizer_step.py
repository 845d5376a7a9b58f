"""Question 1: the cost of one optimizer step, adam + swr against adam.

Times ``update`` + ``apply_updates`` under one ``jax.jit``, for ``adam``,
``adamw``, ``adam + swr`` and ``adam + swr`` through
``swr(..., deferred=True)`` and ``optax_swr.rescale_params`` after
``optax.apply_updates`` ("deferred", the fast step), over models of several sizes and
depths (stacks of square dense layers with biases), side by side in one
process; once with the params and optimizer state donated (as Flax
``TrainState`` loops run them) and once without. Reports medians after
warm-up and compilation, and the ratios to adam; prints a table last and
writes JSON. From the repository root::

  python -m benchmarks.optimizer_step --out benchmarks/results/optimizer_step_cpu.json
  python -m benchmarks.optimizer_step --quick       # seconds: the 1M shape only
  python -m benchmarks.optimizer_step --shapes "100M params" --donated-only
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import _timing
import optax_swr

# (name, layers, width): ~1M to ~100M params, and 4 to 200 layers.
SHAPES = (
  ("1M params", 4, 512),
  ("4M params", 4, 1024),
  ("21M params", 20, 1024),
  ("100M params", 25, 2000),
  ("100 layers x 256", 100, 256),
  ("200 layers x 128", 200, 128),
)
QUICK_SHAPES = "1M params"
OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
  "adam": lambda: optax.adam(1e-3),
  "adamw": lambda: optax.adamw(1e-3, weight_decay=1e-4),
  "adam+swr": lambda: optax.chain(optax.adam(1e-3), optax_swr.swr(1e-3)),
  "adam+swr deferred": lambda: optax.chain(
    optax.adam(1e-3), optax_swr.swr(1e-3, deferred=True)
  ),
}
# The steps that end with optax_swr.rescale_params.
DEFERRED = frozenset({"adam+swr deferred"})


def make_params(layers: int, width: int) -> dict:
  """``layers`` dense layers ``Dense_i`` of ``width x width`` with biases."""
  keys = jax.random.split(jax.random.key(0), layers)
  return {
    f"Dense_{i}": {
      "kernel": jax.random.normal(k, (width, width)) / np.sqrt(width),
      "bias": jnp.zeros(width),
    }
    for i, k in enumerate(keys)
  }


def shapes_named(names: str) -> list[tuple[str, int, int]]:
  """The entries of ``SHAPES`` named in a comma-separated list."""
  wanted = names.split(",")
  unknown = set(wanted) - {name for name, _, _ in SHAPES}
  if unknown:
    raise ValueError(
      f"Unknown shapes {sorted(unknown)}; choose from "
      f"{[name for name, _, _ in SHAPES]}."
    )
  return [shape for shape in SHAPES if shape[0] in wanted]


def parse_shape_flags(
  description: str,
  argv: Sequence[str] | None,
  default_shapes: str,
  rounds: int,
) -> tuple[argparse.Namespace, list[tuple[str, int, int]]]:
  """A script's ``--shapes`` (names from ``SHAPES``) and the timing flags.

  Returns:
    The parsed flags and the shapes to run (``QUICK_SHAPES`` with --quick).
  """
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument(
    "--shapes",
    default=default_shapes,
    help="comma-separated names from optimizer_step.SHAPES",
  )
  _timing.add_flags(parser, repeats=20, rounds=rounds)
  args = parser.parse_args(argv)
  _timing.quick_counts(args)
  return args, shapes_named(QUICK_SHAPES if args.quick else args.shapes)


def jitted_step(
  tx: optax.GradientTransformation, deferred: bool = False, donate: bool = True
) -> Callable:
  """One jitted ``(params, state, grads) -> (params, state)``.

  Args:
    tx: the optimizer.
    deferred: end the step with ``optax_swr.rescale_params``.
    donate: donate the params and the state.
  """

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    if deferred:
      return optax_swr.rescale_params(params, state)
    return params, state

  return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def optimizer_loop(name: str, params, donate: bool = True) -> _timing.Loop:
  """A loop of ``name``'s steps on a copy of ``params``, constant gradients."""
  tx = OPTIMIZERS[name]()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
  params = _timing.fresh_copy(params)
  step = jitted_step(tx, name in DEFERRED, donate)
  return _timing.Loop(step, (params, tx.init(params)), (grads,))


def time_optimizers(
  params,
  optimizers: Sequence[str],
  repeats: int,
  rounds: int,
  donate: bool = True,
) -> tuple[dict[str, float], float | None]:
  """Seconds per step of each of ``OPTIMIZERS`` named, side by side.

  Also returns the largest difference between the params and states after
  one chained and one deferred adam + swr step (the two time one rule), or None
  unless both are timed.
  """
  loops = {name: optimizer_loop(name, params, donate) for name in optimizers}
  difference = None
  if {"adam+swr", "adam+swr deferred"} <= loops.keys():
    difference = _timing.first_step_difference(
      loops["adam+swr"], loops["adam+swr deferred"]
    )[0]
  timings = _timing.compare(loops, repeats, rounds)
  return {name: t["seconds"] for name, t in timings.items()}, difference


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--shapes",
    default=",".join(s[0] for s in SHAPES),
    help="comma-separated names from SHAPES",
  )
  parser.add_argument(
    "--donated-only",
    action="store_true",
    help="skip the undonated steps (they hold twice the memory)",
  )
  _timing.add_flags(parser, repeats=20, rounds=3)
  args = parser.parse_args(argv)
  _timing.quick_counts(args)
  shapes = shapes_named(QUICK_SHAPES if args.quick else args.shapes)
  rows = []
  for name, layers, width in shapes:
    params = make_params(layers, width)
    for donate in (True,) if args.donated_only else (True, False):
      seconds, difference = time_optimizers(
        params, list(OPTIMIZERS), args.repeats, args.rounds, donate
      )
      rows.append(
        {
          "shape": name,
          "layers": layers,
          "width": width,
          "donated": donate,
          "params": _timing.num_params(params),
          "seconds": seconds,
          "adam+swr/adam": seconds["adam+swr"] / seconds["adam"],
          "deferred/adam": seconds["adam+swr deferred"] / seconds["adam"],
          "adamw/adam": seconds["adamw"] / seconds["adam"],
          "deferred_vs_chain_max_abs": difference,
        }
      )
    del params
  _timing.report(
    {"repeats": args.repeats, "rounds": args.rounds, "rows": rows},
    args.out,
    [
      ("shape", "s"),
      ("donated", "s"),
      ("params", "d"),
      ("adam ms", ".2f"),
      ("adamw ms", ".2f"),
      ("adam+swr ms", ".2f"),
      ("deferred ms", ".2f"),
      ("swr/adam", ".3f"),
      ("deferred/adam", ".3f"),
      ("adamw/adam", ".3f"),
    ],
    [
      [
        r["shape"],
        "yes" if r["donated"] else "no",
        r["params"],
        1e3 * r["seconds"]["adam"],
        1e3 * r["seconds"]["adamw"],
        1e3 * r["seconds"]["adam+swr"],
        1e3 * r["seconds"]["adam+swr deferred"],
        r["adam+swr/adam"],
        r["deferred/adam"],
        r["adamw/adam"],
      ]
      for r in rows
    ],
  )


if __name__ == "__main__":
  main()
