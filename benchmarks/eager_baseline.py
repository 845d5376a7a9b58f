"""Question 3: what fusion buys, against SWR written as a per-tensor loop.

The straightforward way to rescale, as the authors' PyTorch code does it: for
each layer in turn, one op computes the weight's norm, a few scalar ops the
factor c, one op multiplies the weight and one the bias, each dispatched on
its own outside ``jit``. This times that loop against ``optax_swr.swr``'s
``update`` + ``apply_updates`` under one ``jax.jit`` (params and state
donated; the updates are zeros, so both only rescale), and, to tell dispatch
from fusion apart, the same loop under ``jax.jit``. First it checks that the
three give the same params from the same start (``allclose``), so that the
comparison is honest. The params start at 1.5 times the reference norms, as
if training had grown them. From the repository root::

  python -m benchmarks.eager_baseline --out benchmarks/results/eager_baseline_cpu.json
  python -m benchmarks.eager_baseline --quick      # seconds: the 1M shape
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _timing
from benchmarks import optimizer_step
import optax_swr

COEF = 1e-3
GROWTH = 1.5  # The params start this many times larger than the references.
DEFAULT_SHAPES = "21M params,100 layers x 256"
VARIANTS = ("eager loop", "jit loop", "jit swr")


def rescale_loop(
  params: dict, reference_norms: Sequence[float | jax.Array], coef: float
) -> tuple[dict]:
  """One SWR step written layer by layer, one op per tensor.

  ``params`` are ``Dense_i`` layers with a ``kernel`` and a ``bias``, in
  forward order; returns a one-tuple, the carry of a ``_timing.Loop``.
  """
  rescaled = {}
  cumulative = 1.0
  for i, reference in enumerate(reference_norms):
    layer = params[f"Dense_{i}"]
    norm = jnp.linalg.norm(layer["kernel"])
    scale = (coef * reference + (1 - coef) * norm) / norm
    cumulative = cumulative * scale
    rescaled[f"Dense_{i}"] = {
      "kernel": layer["kernel"] * scale,
      "bias": layer["bias"] * cumulative,
    }
  return (rescaled,)


def grown_params(layers: int, width: int) -> tuple[dict, list[jax.Array]]:
  """Params ``GROWTH`` times their init, and the init's weight norms."""
  params = optimizer_step.make_params(layers, width)
  norms = [
    jnp.linalg.norm(params[f"Dense_{i}"]["kernel"]) for i in range(layers)
  ]
  bias_key = jax.random.key(1)  # Nonzero biases, so that C is checked too.
  params = {
    name: {
      "kernel": GROWTH * layer["kernel"],
      "bias": jax.random.normal(bias_key, layer["bias"].shape),
    }
    for name, layer in params.items()
  }
  return params, norms


def loops(params: dict, norms: list[jax.Array]) -> dict[str, _timing.Loop]:
  """The three ways to rescale ``params``, each on its own copy."""
  tx = optax_swr.swr(COEF)
  state = tx.init(params)._replace(reference_norms=jnp.stack(norms))
  zeros = jax.tree.map(jnp.zeros_like, params)
  loop = lambda params: rescale_loop(params, norms, COEF)
  return {
    "eager loop": _timing.Loop(loop, (_timing.fresh_copy(params),)),
    "jit loop": _timing.Loop(
      jax.jit(loop, donate_argnums=0), (_timing.fresh_copy(params),)
    ),
    "jit swr": _timing.Loop(
      optimizer_step.jitted_step(tx),
      (_timing.fresh_copy(params), state),
      (zeros,),
    ),
  }


def max_difference(params: dict, norms: list[jax.Array]) -> float:
  """Largest |difference| of one step's params between the variants.

  Raises:
    AssertionError: if the variants disagree beyond float32 rounding.
  """
  results = {
    name: loop.step(*loop.carry, *loop.args)[0]
    for name, loop in loops(params, norms).items()
  }
  reference = jax.tree.leaves(results["eager loop"])
  worst = 0.0
  for name in VARIANTS[1:]:
    for want, got in zip(reference, jax.tree.leaves(results[name])):
      np.testing.assert_allclose(
        got,
        want,
        rtol=1e-5,
        atol=1e-6,
        err_msg=f"{name} against the eager loop",
      )
      worst = max(worst, float(jnp.max(jnp.abs(got - want))))
  return worst


def main(argv: Sequence[str] | None = None) -> None:
  args, shapes = optimizer_step.parse_shape_flags(
    __doc__.split("\n")[0], argv, DEFAULT_SHAPES, rounds=3
  )
  rows = []
  for name, layers, width in shapes:
    params, norms = grown_params(layers, width)
    difference = max_difference(params, norms)
    timings = _timing.compare(loops(params, norms), args.repeats, args.rounds)
    seconds = {variant: t["seconds"] for variant, t in timings.items()}
    rows.append(
      {
        "shape": name,
        "layers": layers,
        "width": width,
        "params": _timing.num_params(params),
        "seconds": seconds,
        "max_abs_difference": difference,
        "speedup": seconds["eager loop"] / seconds["jit swr"],
      }
    )
  _timing.report(
    {
      "coef": COEF,
      "repeats": args.repeats,
      "rounds": args.rounds,
      "rows": rows,
    },
    args.out,
    [
      ("shape", "s"),
      ("params", "d"),
      ("eager loop ms", ".2f"),
      ("jit loop ms", ".2f"),
      ("jit swr ms", ".2f"),
      ("eager/jit swr", ".1f"),
      ("max |diff|", ".1e"),
    ],
    [
      [
        r["shape"],
        r["params"],
        *(1e3 * r["seconds"][variant] for variant in VARIANTS),
        r["speedup"],
        r["max_abs_difference"],
      ]
      for r in rows
    ],
  )


if __name__ == "__main__":
  main()
