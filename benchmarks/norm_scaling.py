"""What the scaled norm costs: SWR's steps with and without it, side by side.

``swr`` multiplies each weight by a power of two (from its reference norm)
before squaring it, so that entries of 1e-20 or 1e20 get the right norm. This
times adam, and adam + swr chained and fused, each with the library's norms
and with the plain ``sqrt(sum(w**2))`` patched in while the step is traced,
interleaved in one process (params and state donated). From the repository
root::

  python -m benchmarks.norm_scaling --out benchmarks/results/norm_scaling_cpu.json
  python -m benchmarks.norm_scaling --quick      # seconds: the 1M shape
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import contextlib

import jax
import jax.numpy as jnp

from benchmarks import _timing
from benchmarks import optimizer_step
from optax_swr import _norms

DEFAULT_SHAPES = "21M params,100 layers x 256"
STEPS = ("adam+swr", "adam+swr deferred")


def plain_frobenius_norm(weight: jax.Array, scale: jax.Array | None = None):
  """sqrt(sum(w**2)) in float32, ignoring ``scale``: the norm before."""
  del scale
  weight = weight.astype(_norms.compute_dtype(weight))
  return jnp.sqrt(jnp.sum(jnp.square(weight))).astype(jnp.float32)


@contextlib.contextmanager
def plain_norms() -> Iterator[None]:
  """Makes swr trace the unscaled norm (dense layers only, as timed here)."""
  scaled = _norms.frobenius_norm
  _norms.frobenius_norm = plain_frobenius_norm
  try:
    yield
  finally:
    _norms.frobenius_norm = scaled


def traced_loop(name: str, params, plain: bool) -> _timing.Loop:
  """``optimizer_step``'s loop of ``name``, compiled with the chosen norm."""
  loop = optimizer_step.optimizer_loop(name, params)
  with plain_norms() if plain else contextlib.nullcontext():
    # Compiles now; later calls reuse the executable whatever the module says.
    jax.block_until_ready(
      loop.step(*_timing.fresh_copy(loop.carry), *loop.args)
    )
  return loop


def loops(params) -> dict[str, _timing.Loop]:
  result = {"adam": traced_loop("adam", params, plain=False)}
  for name in STEPS:
    result[name] = traced_loop(name, params, plain=False)
    result[f"{name}, plain norm"] = traced_loop(name, params, plain=True)
  return result


def main(argv: Sequence[str] | None = None) -> None:
  args, shapes = optimizer_step.parse_shape_flags(
    __doc__.split("\n")[0], argv, DEFAULT_SHAPES, rounds=5
  )
  rows = []
  for name, layers, width in shapes:
    params = optimizer_step.make_params(layers, width)
    variants = loops(params)
    # In float32's range the scaled norm is the plain one: equal params and
    # states (the state holds the norms).
    differences = {
      step: _timing.first_step_difference(
        variants[step], variants[f"{step}, plain norm"]
      )[0]
      for step in STEPS
    }
    timings = _timing.compare(variants, args.repeats, args.rounds)
    seconds = {variant: t["seconds"] for variant, t in timings.items()}
    paired = {
      step: _timing.paired_percent(
        timings[step], timings[f"{step}, plain norm"]
      )
      for step in STEPS
    }
    rows.append(
      {
        "shape": name,
        "params": _timing.num_params(params),
        "seconds": seconds,
        "round_medians": {v: t["round_medians"] for v, t in timings.items()},
        "scaled_vs_plain_percent": paired,
        "scaled_vs_plain_max_abs": differences,
      }
    )
  _timing.report(
    {"rows": rows},
    args.out,
    [
      ("shape", ""),
      ("adam ms", ".2f"),
      ("chain ms", ".2f"),
      ("chain plain ms", ".2f"),
      ("chain %", "+.1f"),
      ("deferred ms", ".2f"),
      ("deferred plain ms", ".2f"),
      ("deferred %", "+.1f"),
    ],
    [
      (
        r["shape"],
        1e3 * r["seconds"]["adam"],
        1e3 * r["seconds"]["adam+swr"],
        1e3 * r["seconds"]["adam+swr, plain norm"],
        r["scaled_vs_plain_percent"]["adam+swr"],
        1e3 * r["seconds"]["adam+swr deferred"],
        1e3 * r["seconds"]["adam+swr deferred, plain norm"],
        r["scaled_vs_plain_percent"]["adam+swr deferred"],
      )
      for r in rows
    ],
    title="scaled norm against the plain one: median over rounds of the "
    "per-round ratio, in %",
  )


if __name__ == "__main__":
  main()
