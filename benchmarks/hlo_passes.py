"""The byte floor, checked: how many passes over parameter memory a step makes.

Compiles the optimizer steps of ``optimizer_step.py`` (update + apply_updates,
params and state donated) for ``adam``, ``adamw`` and ``adam + swr``, and the
two jitted rescalings of ``eager_baseline.py`` (``swr`` alone on zero updates,
and the per-tensor loop), without running them, and reads the optimized HLO
of the entry computation:

- kernels: the instructions that do work (everything but parameters,
  constants, tuples, get-tuple-element and bitcasts); fusions: those of them
  that are fusions;
- param kernels: the kernels that read or write a parameter-sized array (one
  with as many elements as some parameter leaf: a param, a gradient, an Adam
  moment, an update);
- passes: the sum over kernels of the largest parameter-sized array each one
  touches, divided by the parameter count: how many times the step sweeps
  over the parameters;
- words/param: the sum over kernels of every parameter-sized operand and
  output, in 4-byte words, divided by the parameter count: the memory traffic
  if nothing stays in cache. The floor is 7 for adam and adamw (read g, m, v,
  p; write m, v, p), 9 for adam + swr (then read and write p once more), 5
  for swr alone (read p and u, write p + u; read it, write it scaled) and 3
  for the rescaling loop (read p for the norm; read p, write it scaled);
- the compiler's ``memory_analysis()``: argument, output, aliased (donated
  and reused) and temporary bytes, and the peak: arguments, plus outputs
  that do not reuse them, plus temporaries (what the step holds at once).
  Temporaries are freed after the step.

Compiling costs no device time, so this runs in seconds. From the repository
root::

  python -m benchmarks.hlo_passes --shape "21M params" --dump /tmp/hlo
  python -m benchmarks.hlo_passes --quick
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import os
import re
from typing import Any

import jax
import numpy as np
import optax

from benchmarks import _timing
from benchmarks import eager_baseline
from benchmarks import optimizer_step
import optax_swr

# Words per parameter that an ideal fused step moves (see the docstring).
FLOOR_WORDS = {
  "adam": 7,
  "adamw": 7,
  "adam+swr": 9,
  "adam+swr deferred": 9,
  "swr alone": 5,
  "rescale loop": 3,
}
# Instructions that move no data of their own.
NO_WORK = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}
BYTES = {
  "pred": 1,
  "s8": 1,
  "u8": 1,
  "bf16": 2,
  "f16": 2,
  "s16": 2,
  "u16": 2,
  "f32": 4,
  "s32": 4,
  "u32": 4,
  "f64": 8,
  "s64": 8,
  "u64": 8,
}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (.*)$")
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")


def compiled_steps(params: Any) -> dict[str, Any]:
  """Every step of ``FLOOR_WORDS``, compiled for ``params``' shapes, donated."""
  steps = {
    name: compile_optimizer(make(), params, name in optimizer_step.DEFERRED)
    for name, make in optimizer_step.OPTIMIZERS.items()
  }
  steps["swr alone"] = compile_optimizer(
    optax_swr.swr(eager_baseline.COEF), params
  )
  loop = lambda params: eager_baseline.rescale_loop(
    params, [1.0] * len(params), eager_baseline.COEF
  )
  steps["rescale loop"] = (
    jax.jit(loop, donate_argnums=0).lower(params).compile()
  )
  return steps


def compile_optimizer(
  tx: optax.GradientTransformation, params: Any, deferred: bool = False
) -> Any:
  """The compiled, donated ``optimizer_step.jitted_step`` of ``tx``."""
  state = jax.eval_shape(tx.init, params)
  step = optimizer_step.jitted_step(tx, deferred)
  return step.lower(params, state, params).compile()


def entry_instructions(hlo: str) -> list[tuple[str, str, str, list[str]]]:
  """``(name, shape, opcode, operand names)`` of the entry computation."""
  body = hlo[hlo.index("\nENTRY ") :]
  body = body[body.index("{\n") + 2 : body.index("\n}")]
  instructions = []
  for line in body.splitlines():
    match = _INSTRUCTION.match(line)
    if match:
      name, rest = match.groups()
      shape, rest = _split_shape(rest)
      opcode, rest = rest.split("(", 1)
      operands = _balanced(rest)
      instructions.append(
        (name, shape, opcode, re.findall(r"%([\w.\-]+)", operands))
      )
  return instructions


def _split_shape(text: str) -> tuple[str, str]:
  """Splits ``"SHAPE opcode(...)..."``; a tuple shape is in parentheses."""
  if not text.startswith("("):
    shape, rest = text.split(" ", 1)
    return shape, rest
  shape = "(" + _balanced(text[1:]) + ")"
  return shape, text[len(shape) :].lstrip()


def _balanced(text: str) -> str:
  """``text`` up to the parenthesis that closes one already open."""
  depth = 1
  for index, char in enumerate(text):
    depth += {"(": 1, ")": -1}.get(char, 0)
    if depth == 0:
      return text[:index]
  raise ValueError(f"Unbalanced parentheses in HLO: {text[:80]!r}")


def arrays(shape: str) -> list[tuple[int, int]]:
  """``(elements, bytes)`` of every array in an HLO shape (tuples flattened)."""
  found = []
  for dtype, dims in _ARRAY.findall(shape):
    elements = int(np.prod([int(d) for d in dims.split(",") if d]))
    found.append((elements, elements * BYTES.get(dtype, 4)))
  return found


def traffic(hlo: str, param_sizes: set[int], total: int) -> dict[str, float]:
  """Kernel and fusion counts, passes and words per parameter of a step."""
  instructions = entry_instructions(hlo)
  shapes = {name: shape for name, shape, _, _ in instructions}
  kernels = [i for i in instructions if i[2] not in NO_WORK]
  passes = words = param_kernels = 0
  for _name, shape, _, operands in kernels:
    touched = [
      a
      for s in [shape, *(shapes[o] for o in operands)]
      for a in arrays(s)
      if a[0] in param_sizes
    ]
    if touched:
      param_kernels += 1
      passes += max(elements for elements, _ in touched)
      words += sum(size for _, size in touched) / 4
  return {
    "kernels": len(kernels),
    "fusions": sum(opcode == "fusion" for _, _, opcode, _ in kernels),
    "param_kernels": param_kernels,
    "passes": passes / total,
    "words_per_param": words / total,
  }


def memory(compiled: Any) -> dict[str, int] | None:
  """The compiler's byte counts, where the backend reports them."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  fields = ("argument", "output", "alias", "temp")
  counts = {f: int(getattr(analysis, f"{f}_size_in_bytes")) for f in fields}
  # What is live at once: inputs, the outputs that do not reuse them, and the
  # temporaries. (XLA:CPU's own peak_memory_in_bytes leaves temporaries out.)
  counts["peak"] = (
    counts["argument"] + counts["output"] - counts["alias"] + counts["temp"]
  )
  counts["xla_peak"] = int(getattr(analysis, "peak_memory_in_bytes", 0))
  return counts


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--shape", default="21M params", help="a name from optimizer_step.SHAPES"
  )
  parser.add_argument(
    "--quick", action="store_true", help="the 1M shape (compiles in a second)"
  )
  parser.add_argument(
    "--dump",
    default=None,
    help="write each step's optimized HLO to this folder",
  )
  parser.add_argument("--out", default=None, help="write the results here")
  args = parser.parse_args(argv)
  shape = optimizer_step.QUICK_SHAPES if args.quick else args.shape
  ((name, layers, width),) = optimizer_step.shapes_named(shape)
  params = jax.eval_shape(lambda: optimizer_step.make_params(layers, width))
  leaves = jax.tree.leaves(params)
  total = sum(leaf.size for leaf in leaves)
  rows = {}
  for step, compiled in compiled_steps(params).items():
    hlo = compiled.as_text()
    if args.dump:
      os.makedirs(args.dump, exist_ok=True)
      with open(os.path.join(args.dump, f"{step}.hlo"), "w") as file:
        file.write(hlo)
    rows[step] = {
      **traffic(hlo, {l.size for l in leaves}, total),
      "floor_words": FLOOR_WORDS[step],
      "memory": memory(compiled),
    }
  _report(args.out, name, layers, width, total, rows)


def _report(out, name, layers, width, total, rows) -> None:
  megabytes = lambda row, field: (
    row["memory"][field] / 2**20 if row["memory"] else float("nan")
  )
  param_megabytes = 4 * total / 2**20
  _timing.report(
    {
      "shape": name,
      "layers": layers,
      "width": width,
      "params": total,
      "param_megabytes": param_megabytes,
      "rows": rows,
    },
    out,
    [
      ("step", "s"),
      ("kernels", "d"),
      ("fusions", "d"),
      ("param kernels", "d"),
      ("passes", ".2f"),
      ("words/param", ".2f"),
      ("floor", "d"),
      ("arg MB", ".1f"),
      ("out MB", ".1f"),
      ("alias MB", ".1f"),
      ("temp MB", ".1f"),
      ("peak MB", ".1f"),
    ],
    [
      [
        step,
        r["kernels"],
        r["fusions"],
        r["param_kernels"],
        r["passes"],
        r["words_per_param"],
        r["floor_words"],
        megabytes(r, "argument"),
        megabytes(r, "output"),
        megabytes(r, "alias"),
        megabytes(r, "temp"),
        megabytes(r, "peak"),
      ]
      for step, r in rows.items()
    ],
    title=f"{name}: {layers} layers x {width}, {total} params "
    f"({param_megabytes:.1f} MB in float32)",
  )


if __name__ == "__main__":
  main()
