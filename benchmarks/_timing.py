"""What the benchmark scripts share: timing side by side, flags, the report.

Every script times its variants in one process: each variant is compiled and
warmed up first, then the variants take turns (``rounds`` times, so that a
drift of the machine hits them all alike), each turn ``repeats`` calls ended
by ``jax.block_until_ready``. A variant's time is the lowest of its turns'
medians.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import json
import os
import platform
import shlex
import sys
import time
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

import optax_swr

WARMUP_CALLS = 3  # The first compiles; the others settle caches and clocks.


class Loop(NamedTuple):
  """A step to time: ``carry = step(*carry, *args)``, over and over.

  Attributes:
    step: a function of ``(*carry, *args)`` that returns the next ``carry``
      (a tuple); jitted with ``carry`` donated, or eager.
    carry: what each call consumes and returns (params, optimizer state).
    args: what stays the same from call to call (gradients, a batch).
  """

  step: Callable[..., tuple]
  carry: tuple
  args: tuple = ()


def add_flags(
  parser: argparse.ArgumentParser, repeats: int, rounds: int
) -> None:
  """Adds the flags every script takes: --repeats, --rounds, --quick, --out."""
  parser.add_argument(
    "--repeats",
    type=int,
    default=repeats,
    help="timed calls per variant and round",
  )
  parser.add_argument(
    "--rounds",
    type=int,
    default=rounds,
    help="turns the variants take, interleaved",
  )
  parser.add_argument(
    "--quick",
    action="store_true",
    help="a seconds-long smoke run: small shapes, few calls",
  )
  parser.add_argument("--out", default=None, help="write the results here")


def quick_counts(args: argparse.Namespace) -> None:
  """With --quick, few calls: the numbers only show that the script runs."""
  if args.quick:
    args.repeats, args.rounds = min(args.repeats, 3), 1


def compare(loops: dict[str, Loop], repeats: int, rounds: int) -> dict:
  """Times the loops side by side; ``{name: {"seconds", "round_medians"}}``.

  ``seconds`` is the lowest median over the rounds: the least disturbed
  estimate of one step. All loops' carries stay alive until the end, so the
  memory they need adds up.
  """
  carries = {
    name: _calls(loop, loop.carry, WARMUP_CALLS)[0]
    for name, loop in loops.items()
  }
  medians = {name: [] for name in loops}
  for _ in range(rounds):
    for name, loop in loops.items():
      carries[name], seconds = _calls(loop, carries[name], repeats)
      medians[name].append(float(np.median(seconds)))
  return {
    name: {"seconds": min(m), "round_medians": m} for name, m in medians.items()
  }


def paired_percent(variant: dict, baseline: dict) -> float:
  """The median over rounds of (variant / baseline - 1) in %, round by round.

  ``variant`` and ``baseline`` are entries of :func:`compare`'s result.
  """
  ratios = np.array(variant["round_medians"]) / np.array(
    baseline["round_medians"]
  )
  return float(100 * (np.median(ratios) - 1))


def first_step_difference(
  a: Loop, b: Loop, noise: Callable[[str], bool] = lambda path: False
) -> tuple[float, float]:
  """The largest differences between two loops' carries after one step.

  The carries (params, optimizer state, ...) must have one structure, but
  for the factors a deferred swr keeps in its state. Call it before timing:
  the timed calls consume the carries.

  Args:
    a: one loop.
    b: the other.
    noise: whether a leaf (by its ``jax.tree_util.keystr`` path) is one whose
      gradient is zero in exact arithmetic, so that Adam divides rounding
      noise by its epsilon and two programs may differ by up to a step.

  Returns:
    The largest difference over the other leaves, and over the noise leaves.
  """
  after = [
    _without_deferred_factors(loop.step(*fresh_copy(loop.carry), *loop.args))
    for loop in (a, b)
  ]
  structures = [jax.tree.structure(carry) for carry in after]
  if structures[0] != structures[1]:
    raise ValueError(f"the loops' carries differ in structure: {structures}")
  largest = {True: 0.0, False: 0.0}
  paired = zip(
    jax.tree_util.tree_leaves_with_path(after[0]), jax.tree.leaves(after[1])
  )
  for (path, x), y in paired:
    # In numpy: eager jnp ops would compile once per leaf shape (~80 ms each).
    difference = float(np.max(np.abs(np.asarray(x) - np.asarray(y)), initial=0))
    is_noise = noise(jax.tree_util.keystr(path))
    largest[is_noise] = max(largest[is_noise], difference)
  return largest[False], largest[True]


def _without_deferred_factors(tree: Any) -> Any:
  """``tree`` with every SWRState's deferred factors dropped (``()``)."""
  is_swr = lambda node: isinstance(node, optax_swr.SWRState)
  return jax.tree.map(
    lambda node: node._replace(deferred_factors=()) if is_swr(node) else node,
    tree,
    is_leaf=is_swr,
  )


def _calls(loop: Loop, carry: tuple, count: int) -> tuple[tuple, list[float]]:
  """Runs ``count`` steps; the carry after them and each step's seconds."""
  jax.block_until_ready(carry)
  seconds = []
  for _ in range(count):
    start = time.perf_counter()
    carry = loop.step(*carry, *loop.args)
    jax.block_until_ready(carry)
    seconds.append(time.perf_counter() - start)
  return carry, seconds


def fresh_copy(tree: Any) -> Any:
  """A copy of ``tree`` that a donating step may consume."""
  return jax.tree.map(lambda leaf: leaf.copy(), tree)


def num_params(params: Any) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def make_parent(path: str) -> None:
  """Creates the folder that ``path`` is to be written in."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)


def environment() -> dict[str, Any]:
  """The device, library versions and command line behind the numbers."""
  device = jax.devices()[0]
  return {
    "device": f"{device.platform} {device.device_kind}",
    "device_count": jax.device_count(),
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "optax": optax.__version__,
    "python": platform.python_version(),
    "command": command(),
  }


def command() -> str:
  """The command line, as typed: ``python -m benchmarks.NAME FLAGS``."""
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  program = ["-m", spec.name] if spec is not None else sys.argv[:1]
  return shlex.join(["python", *program, *sys.argv[1:]])


def report(
  result: dict[str, Any],
  out: str | None,
  columns: Sequence[tuple[str, str]],
  rows: Sequence[Sequence[Any]],
  title: str = "",
) -> None:
  """Writes ``result`` (with the environment) as JSON, then prints the table.

  Args:
    result: what the script measured; ``environment()`` is added to it.
    out: the JSON file, or None.
    columns: ``(title, format spec)`` of each column, e.g. ``("ms", ".2f")``.
    rows: the table's rows, one value per column.
    title: a line printed above the table.
  """
  result = {**environment(), **result}
  if out:
    make_parent(out)
    with open(out, "w") as file:
      json.dump(result, file, indent=1)
  print(
    f"device: {result['device']}, jax {result['jax']}, optax {result['optax']}"
  )
  print(f"command: {result['command']}")
  if title:
    print(title)
  cells = [
    [format(value, spec) for value, (_, spec) in zip(row, columns)]
    for row in rows
  ]
  widths = [
    max([len(title)] + [len(row[i]) for row in cells])
    for i, (title, _) in enumerate(columns)
  ]
  for line in [[title for title, _ in columns], *cells]:
    first, *rest = line
    print(
      "  ".join(
        [
          first.ljust(widths[0]),
          *(cell.rjust(w) for cell, w in zip(rest, widths[1:])),
        ]
      )
    )
