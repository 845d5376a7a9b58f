"""Convolutions inside loops on XLA:CPU: what each formulation costs per step.

The experiment engine (``examples/paper/engine.py``) runs an epoch of
training steps as one jitted ``lax.fori_loop``. With ``nn.Conv`` in the model,
XLA:CPU runs that loop 8 to 25 times slower per step than the same step under
a plain ``jax.jit``. The cause is one pass: ``ConvCanonicalization``
(``xla/service/cpu/conv_canonicalization.cc``) rewrites each convolution that
Eigen cannot run (anything but an NHWC input, HWIO kernel and NHWC output)
into that form with transposes, but it walks only the *entry* computation.
The forward convolution of ``nn.Conv`` is in that form; its two gradients, as
JAX's transpose rules write them (the input gradient with the kernel's
in/out features swapped, ``b01f_01oi->b01f``; the kernel gradient with batch
and features swapped, ``f01b_i01o->01bf``), are not. Under a plain ``jit`` they
sit in the entry computation and are rewritten; in the body of a while loop
(``lax.fori_loop``, ``lax.scan``) they are not, and XLA emits them as plain
loops ("non-canonical convolutions" below counts them in the compiled HLO).

For the zoo's ``vgg_bn`` (4 conv 3x3 + BatchNorm + ReLU layers of 32, 32,
pool, 64, 64, pool channels; dense 128; head) on 28x28x1 images with Adam
(``examples/train/linen.py``'s training step), this times, per training step,
with compile times:

- ``jit step``: one jitted step per call, as a step-by-step loop runs it;
- ``fori_loop`` / ``scan``: the steps in one jitted ``lax.fori_loop`` (a traced
  count, as the engine) or ``lax.scan``;
- ``fori_loop, N lanes``: the engine's form, ``jax.vmap`` over N seeds of the
  loop (a step advances every lane);
- ``fori_loop unrolled``: ``unroll=True`` over a static count, which puts the
  body in the entry computation (compile time grows with the steps);

each with the convolution computed as:

- ``xla``: ``nn.Conv``'s default, ``lax.conv_general_dilated``;
- ``patches``: ``examples/models/patch_conv.py``, slices of the padded input
  concatenated into im2col patches and one matmul (the zoo's
  ``conv_impl="patches"``); ``patches + remat`` the same under
  ``jax.checkpoint`` (the backward pass rebuilds the patches);
- ``lax patches``: ``lax.conv_general_dilated_patches`` (itself a
  convolution, with a one-hot kernel) and one matmul;
- ``shifted matmuls``: one matmul per window position on a shifted slice,
  summed (no patch buffer);
- ``canonical gradients``: ``lax.conv_general_dilated`` with a custom VJP
  that writes both gradients as NHWC/HWIO convolutions (explicit transposes),
  so that every convolution in the loop is one that Eigen runs.

``--flags`` also times ``fori_loop`` with ``xla`` under XLA flags that might
change how XLA:CPU emits convolutions (oneDNN, XNNPACK/YNNPACK convolution
fusions, no fusion emitters, ...), each in a fresh process (XLA reads
``XLA_FLAGS`` once), next to a fresh process without flags. Each
formulation's gradient is checked against ``nn.Conv``'s ("grad difference":
the largest difference over the largest entry), and each compiled program's
temporary memory is read from ``memory_analysis()``. ``--models``,
``--in-shape`` and ``--width`` time other zoo models (``--only`` picks the
variants).

Default: batch 32, a couple of minutes (the slow variants run 1 step per
timed call); ``--full``: batch 128, the issue's setting (about 10 minutes;
``nn.Conv`` in a loop is some 20 s per step there). From the repository
root::

  python -m benchmarks.conv_in_loops
  python -m benchmarks.conv_in_loops --full --out benchmarks/results/conv_in_loops_cpu.json
  python -m benchmarks.conv_in_loops --flags --out benchmarks/results/conv_in_loops_flags_cpu.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import functools
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import _timing
from examples.models import linen as models_linen
from examples.models import patch_conv
from examples.train import linen as train_linen

NUM_CLASSES, EXAMPLES = 10, 1024
NHWC = ("NHWC", "HWIO", "NHWC")
CANONICAL_2D = "b01f_01io->b01f"  # what Eigen runs: NHWC, HWIO -> NHWC
# XLA flags that might change how XLA:CPU emits convolutions (jaxlib 0.10.2;
# `XLA_FLAGS=--help python -c "import jax; jax.numpy.zeros(1)"` lists them).
XLA_FLAG_SETS = (
  "",
  "--xla_cpu_use_onednn=true",
  "--xla_cpu_experimental_onednn_custom_call=true",
  "--xla_cpu_experimental_xnn_fusion_type=individual_convolution",
  "--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
  "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
  "--xla_cpu_use_xnnpack=false",
  "--xla_cpu_use_fusion_emitters=false",
  "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME",
)


# Other formulations of lax.conv_general_dilated (Flax's NHWC / HWIO only).


def _check_nhwc(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any) -> None:
  expected = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
  given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  if lhs.ndim != 4 or given != expected:
    raise ValueError(f"only 2-D NHWC / HWIO convolutions, got {given}")


def _pads(
  padding: Any, size: Sequence[int], window: Sequence[int], strides: Any
) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(size, window, strides, padding)
  return tuple((int(low), int(high)) for low, high in padding)


def lax_patches_conv(
  lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
  dimension_numbers=None, feature_group_count=1, batch_group_count=1,
  precision=None, preferred_element_type=None,
):  # fmt: skip
  """``lax.conv_general_dilated_patches`` (features ordered [C, kh, kw]),
  then one matmul with the kernel in that order."""
  _check_nhwc(lhs, rhs, dimension_numbers)
  patches = lax.conv_general_dilated_patches(
    lhs,
    rhs.shape[:2],
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    NHWC,
  )
  kernel = jnp.moveaxis(rhs, 2, 0).reshape(-1, rhs.shape[-1])
  return patches @ kernel


def shifted_conv(
  lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
  dimension_numbers=None, feature_group_count=1, batch_group_count=1,
  precision=None, preferred_element_type=None,
):  # fmt: skip
  """The sum over window positions of (shifted, strided slice) @ kernel[i, j]."""
  _check_nhwc(lhs, rhs, dimension_numbers)
  strides, window = tuple(window_strides), rhs.shape[:2]
  pads = _pads(padding, lhs.shape[1:3], window, strides)
  x = jnp.pad(lhs, ((0, 0), *pads, (0, 0)))
  out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:3], window, strides)]
  total = 0
  for i, j in itertools.product(range(window[0]), range(window[1])):
    tile = x[
      :,
      i : i + (out[0] - 1) * strides[0] + 1 : strides[0],
      j : j + (out[1] - 1) * strides[1] + 1 : strides[1],
    ]
    total = total + tile @ rhs[i, j]
  return total


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _canonical(lhs, rhs, strides, pads, dilation):
  return lax.conv_general_dilated(
    lhs, rhs, strides, pads, rhs_dilation=dilation, dimension_numbers=NHWC
  )


def _canonical_fwd(lhs, rhs, strides, pads, dilation):
  return _canonical(lhs, rhs, strides, pads, dilation), (lhs, rhs)


def _canonical_bwd(strides, pads, dilation, residuals, grad):
  """Both gradients as NHWC / HWIO convolutions (what XLA:CPU's
  ConvCanonicalization makes of JAX's rules in an entry computation)."""
  lhs, rhs = residuals
  window, size, out = rhs.shape[:2], lhs.shape[1:3], grad.shape[1:3]
  span = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
  lhs_pads = []
  for n, o, k, s, (low, _) in zip(size, out, span, strides, pads):
    before = k - 1 - low
    lhs_pads.append((before, n + k - 1 - ((o - 1) * s + 1) - before))
  flipped = jnp.swapaxes(jnp.flip(rhs, (0, 1)), 2, 3)  # HWOI -> HWIO
  lhs_grad = lax.conv_general_dilated(
    grad,
    flipped,
    (1, 1),
    lhs_pads,
    lhs_dilation=strides,
    rhs_dilation=dilation,
    dimension_numbers=NHWC,
  )
  # The kernel gradient: channels as the batch, examples as the features.
  rhs_pads = [
    (low, (k - 1) * d + (o - 1) * s + 1 - n - low)
    for n, o, k, s, d, (low, _) in zip(
      size, out, window, strides, dilation, pads
    )
  ]
  rhs_grad = lax.conv_general_dilated(
    jnp.transpose(lhs, (3, 1, 2, 0)),
    jnp.transpose(grad, (1, 2, 0, 3)),
    dilation,
    rhs_pads,
    rhs_dilation=strides,
    dimension_numbers=NHWC,
  )
  return lhs_grad, jnp.transpose(rhs_grad, (1, 2, 0, 3))


_canonical.defvjp(_canonical_fwd, _canonical_bwd)


def canonical_conv(
  lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
  dimension_numbers=None, feature_group_count=1, batch_group_count=1,
  precision=None, preferred_element_type=None,
):  # fmt: skip
  """``lax.conv_general_dilated`` whose gradients are canonical too."""
  _check_nhwc(lhs, rhs, dimension_numbers)
  dilation = tuple(rhs_dilation or (1, 1))
  span = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dilation)]
  strides = tuple(window_strides)
  pads = _pads(padding, lhs.shape[1:3], span, strides)
  return _canonical(lhs, rhs, strides, pads, dilation)


def remat_patch_conv(lhs, rhs, *args, **kwargs):
  """``patch_conv_general_dilated`` under ``jax.checkpoint``: the backward
  pass rebuilds the patches from the input instead of keeping them."""
  conv = lambda lhs, rhs: patch_conv.patch_conv_general_dilated(
    lhs, rhs, *args, **kwargs
  )
  return jax.checkpoint(conv)(lhs, rhs)


FORMULATIONS: dict[str, Any] = {
  "xla": "xla",
  "patches": "patches",
  "patches + remat": remat_patch_conv,
  "lax patches": lax_patches_conv,
  "shifted matmuls": shifted_conv,
  "canonical gradients": canonical_conv,
}
# (loop, formulation); "lanes" is `fori_loop` under jax.vmap.
VARIANTS = (
  ("jit step", "xla"),
  ("jit step", "patches"),
  ("jit step", "canonical gradients"),
  ("fori_loop", "xla"),
  ("scan", "xla"),
  ("lanes", "xla"),
  ("fori_loop unrolled", "xla"),
  ("fori_loop", "patches"),
  ("scan", "patches"),
  ("lanes", "patches"),
  ("fori_loop", "patches + remat"),
  ("fori_loop", "lax patches"),
  ("fori_loop", "shifted matmuls"),
  ("fori_loop", "canonical gradients"),
  ("lanes", "canonical gradients"),
)
# nn.Conv inside a loop: seconds per step; timed one step per call.
SLOW = {("fori_loop", "xla"), ("scan", "xla"), ("lanes", "xla")}


class Setup(NamedTuple):
  """A zoo model, its initial state and the data every variant trains on.

  Attributes:
    module: ``module(conv_impl)``, the model computing convolutions so.
    state: ``(params, batch_stats, opt_state)``.
    x: images ``[EXAMPLES, *in_shape]``.
    y: labels ``[EXAMPLES]``.
    index: each step's batch, int32 ``[steps, batch]``.
  """

  module: Callable[[Any], Any]
  state: tuple
  x: jax.Array
  y: jax.Array
  index: jax.Array


def make_setup(
  model: str,
  in_shape: tuple[int, ...],
  width: int | None,
  batch: int,
  steps: int,
) -> Setup:
  kwargs = models_linen.model_kwargs(model, in_shape, width, "xla")
  module = lambda conv_impl: models_linen.MODELS[model](
    num_classes=NUM_CLASSES, **{**kwargs, "conv_impl": conv_impl}
  )
  init = jax.jit(module("xla").init, static_argnames="train")
  variables = init(jax.random.key(0), jnp.zeros((1, *in_shape)), train=False)
  params = variables["params"]
  state = (
    params,
    variables.get("batch_stats", {}),
    optax.adam(1e-3).init(params),
  )
  rng = np.random.default_rng(0)
  return Setup(
    module,
    state,
    jnp.asarray(rng.random((EXAMPLES, *in_shape), dtype=np.float32)),
    jnp.asarray(rng.integers(0, NUM_CLASSES, EXAMPLES, dtype=np.int32)),
    jnp.asarray(rng.integers(0, EXAMPLES, (steps, batch), dtype=np.int32)),
  )


class Compiled(NamedTuple):
  """A variant, compiled: ``run(state, steps)`` returns the next state.

  Attributes:
    run: runs ``steps`` training steps from ``state``.
    state: the initial state (lane-stacked for "lanes").
    steps: the steps one timed call runs.
    static: whether ``steps`` is compiled in (scan, unrolled): ``run``
      ignores its count then.
    compile_seconds: lowering and XLA compilation.
    hlo: the optimized HLO of the compiled loop (or step).
    temp_bytes: the compiled program's temporary memory (``memory_analysis``).
  """

  run: Callable[[Any, int], Any]
  state: Any
  steps: int
  static: bool
  compile_seconds: float
  hlo: str
  temp_bytes: int


def compile_variant(
  loop: str, formulation: str, setup: Setup, steps: int, lanes: int
) -> Compiled:
  """The jitted step or loop of ``loop``, with ``formulation``'s convs."""
  module = setup.module(FORMULATIONS[formulation])
  train_step = train_linen.make_train_step(module.apply, optax.adam(1e-3))
  step = lambda state, x, y: tuple(train_step(*state, x, y)[:3])
  x, y, index = setup.x, setup.y, setup.index

  def body(t, state):
    return step(state, x[index[t]], y[index[t]])

  state, static = setup.state, None
  if loop == "jit step":
    fn, example = step, (state, x[index[0]], y[index[0]])
  elif loop in ("fori_loop", "lanes"):
    fn = lambda state, n: lax.fori_loop(0, n, body, state)
    if loop == "lanes":
      fn = jax.vmap(fn, in_axes=(0, None))
      state = jax.tree.map(lambda a: jnp.stack([a] * lanes), state)
    example = (state, jnp.int32(steps))
  elif loop == "scan":
    static = steps
    fn = lambda state: lax.scan(
      lambda s, t: (body(t, s), None), state, jnp.arange(static)
    )[0]
    example = (state,)
  elif loop == "fori_loop unrolled":
    static = steps
    fn = lambda state: lax.fori_loop(0, static, body, state, unroll=True)
    example = (state,)
  else:
    raise ValueError(f"unknown loop {loop!r}")
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*example).compile()
  seconds = time.perf_counter() - start
  batches = [(x[rows], y[rows]) for rows in index] if loop == "jit step" else []

  def run(state, n):
    if loop == "jit step":  # batches sliced beforehand, as the loops' are
      for t in range(n):
        state = compiled(state, *batches[t])
      return state
    if static is not None:
      return compiled(state)
    return compiled(state, jnp.int32(n))

  return Compiled(
    run,
    state,
    static or steps,
    static is not None,
    seconds,
    compiled.as_text(),
    compiled.memory_analysis().temp_size_in_bytes,
  )


def count_convolutions(hlo: str) -> tuple[int, int]:
  """(convolutions, those not in Eigen's NHWC / HWIO form) in HLO text."""
  labels = re.findall(r"convolution\(.*?dim_labels=([^,\s]+)", hlo)
  return len(labels), sum(label != CANONICAL_2D for label in labels)


def gradient_difference(formulation: str, setup: Setup) -> float:
  """max |grad - nn.Conv's grad| / max |nn.Conv's grad| of the training loss
  (training-mode BatchNorm) at the initial params, on the first batch."""
  x, y = setup.x[setup.index[0]], setup.y[setup.index[0]]
  params, batch_stats, _ = setup.state

  def grads(conv_impl):
    module = setup.module(conv_impl)

    def loss(params):
      logits, _ = module.apply(
        {"params": params, "batch_stats": batch_stats},
        x,
        train=True,
        mutable=["batch_stats"],
      )
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return jax.jit(jax.grad(loss))(params)

  reference, other = grads("xla"), grads(FORMULATIONS[formulation])
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(reference))
  differences = jax.tree.map(
    lambda a, b: float(jnp.max(jnp.abs(a - b))), other, reference
  )
  return max(jax.tree.leaves(differences)) / scale


def time_variants(
  compiled: dict[tuple[str, str], Compiled], rounds: int, slow_rounds: int
) -> dict[tuple[str, str], list[float]]:
  """Seconds per step of each variant, round by round, taking turns.

  Each variant first runs one warm-up call; a round is one call of
  ``steps`` steps (one step for the slow variants).
  """
  states = {key: c.run(c.state, c.steps) for key, c in compiled.items()}
  jax.block_until_ready(states)
  seconds: dict[tuple[str, str], list[float]] = {key: [] for key in compiled}
  for round_ in range(rounds):
    for key, c in compiled.items():
      if key in SLOW and round_ >= slow_rounds:
        continue
      start = time.perf_counter()
      states[key] = jax.block_until_ready(c.run(states[key], c.steps))
      seconds[key].append((time.perf_counter() - start) / c.steps)
  return seconds


def measure(args: argparse.Namespace, model: str) -> list[dict[str, Any]]:
  """One row per variant of ``args.only``, for one zoo model."""
  setup = make_setup(model, args.in_shape, args.width, args.batch, args.steps)
  compiled = {}
  for loop, formulation in args.only:
    steps = args.slow_steps if (loop, formulation) in SLOW else args.steps
    compiled[loop, formulation] = compile_variant(
      loop, formulation, setup, steps, args.lanes
    )
  differences = {
    formulation: gradient_difference(formulation, setup)
    for formulation in dict.fromkeys(f for _, f in args.only)
  }
  seconds = time_variants(compiled, args.rounds, args.slow_rounds)
  rows = []
  for (loop, formulation), c in compiled.items():
    convolutions, non_canonical = count_convolutions(c.hlo)
    rows.append(
      {
        "model": model,
        "loop": loop if loop != "lanes" else f"fori_loop, {args.lanes} lanes",
        "formulation": formulation,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compile_seconds": c.compile_seconds,
        "seconds_per_step": float(np.median(seconds[loop, formulation])),
        "round_seconds_per_step": seconds[loop, formulation],
        "steps_per_call": c.steps,
        "temp_bytes": c.temp_bytes,
        "convolutions": convolutions,
        "non_canonical_convolutions": non_canonical,
        "gradient_relative_difference": differences[formulation],
      }
    )
  baselines = [
    row["seconds_per_step"]
    for row in rows
    if (row["loop"], row["formulation"]) == ("jit step", "xla")
  ]
  for row in rows:
    if baselines:
      row["vs_jit_step"] = row["seconds_per_step"] / baselines[0]
  return rows


def measure_flags(args: argparse.Namespace) -> list[dict[str, Any]]:
  """``fori_loop`` with ``xla`` under each of ``XLA_FLAG_SETS``, each in a
  fresh process (the first, without flags, is the control)."""
  rows = []
  for flags in XLA_FLAG_SETS:
    with tempfile.TemporaryDirectory() as folder:
      out = os.path.join(folder, "rows.json")
      command = [
        sys.executable,
        "-m",
        "benchmarks.conv_in_loops",
        "--only=fori_loop:xla",
        f"--models={args.models[0]}",
        f"--in-shape={','.join(map(str, args.in_shape))}",
        f"--batch={args.batch}",
        f"--slow-steps={args.slow_steps}",
        f"--slow-rounds={args.slow_rounds}",
        f"--out={out}",
      ]
      if args.width:
        command.append(f"--width={args.width}")
      env = {**os.environ, "XLA_FLAGS": flags}
      done = subprocess.run(command, env=env, capture_output=True, text=True)
      if done.returncode:
        rows.append({"xla_flags": flags, "error": done.stderr[-2000:]})
        continue
      with open(out) as file:
        rows.extend(json.load(file)["rows"])
  return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--models", default="vgg_bn", help="comma-separated zoo models"
  )
  parser.add_argument(
    "--in-shape", default="28,28,1", help="height,width,channels"
  )
  parser.add_argument(
    "--width", type=int, default=None, help="the zoo's width; default: its own"
  )
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument(
    "--steps", type=int, default=5, help="steps per timed call"
  )
  parser.add_argument(
    "--slow-steps",
    type=int,
    default=1,
    help="steps per timed call of nn.Conv inside a loop",
  )
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument(
    "--slow-rounds",
    type=int,
    default=2,
    help="rounds of nn.Conv inside a loop",
  )
  parser.add_argument("--lanes", type=int, default=2, help="of the vmap")
  parser.add_argument(
    "--only",
    default=",".join(f"{loop}:{f}" for loop, f in VARIANTS),
    help="comma-separated LOOP:FORMULATION from VARIANTS",
  )
  parser.add_argument(
    "--flags",
    action="store_true",
    help="also time fori_loop:xla under each of XLA_FLAG_SETS",
  )
  parser.add_argument(
    "--full",
    action="store_true",
    help="the issue's setting: batch 128, 10 steps per call, 5 rounds",
  )
  parser.add_argument(
    "--quick", action="store_true", help="batch 8, 2 steps, 1 round"
  )
  parser.add_argument("--out", default=None, help="write the JSON here")
  args = parser.parse_args(argv)
  if args.full:
    args.batch, args.steps, args.rounds = 128, 10, 5
  if args.quick:
    args.batch, args.steps, args.rounds, args.slow_rounds = 8, 2, 1, 1
  args.models = args.models.split(",")
  args.in_shape = tuple(int(n) for n in args.in_shape.split(","))
  args.only = [tuple(item.split(":")) for item in args.only.split(",") if item]
  for loop, formulation in args.only:
    if (loop, formulation) not in VARIANTS:
      parser.error(f"--only: {loop}:{formulation} is not in VARIANTS")
  return args


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  rows = [row for model in args.models for row in measure(args, model)]
  if args.flags:
    rows += measure_flags(args)
  baselines = {  # the flags' rows are relative to this process's jit step
    row["model"]: row["seconds_per_step"]
    for row in rows
    if (row.get("loop"), row.get("formulation")) == ("jit step", "xla")
  }
  for row in rows:
    if "vs_jit_step" not in row and row.get("model") in baselines:
      row["vs_jit_step"] = row["seconds_per_step"] / baselines[row["model"]]
  settings = ("in_shape", "width", "batch", "steps", "slow_steps", "rounds")
  table = [
    [
      f"{row['model']}: {row['loop']}, {row['formulation']}"
      + (f" [{row['xla_flags']}]" if row["xla_flags"] else ""),
      row["compile_seconds"],
      1e3 * row["seconds_per_step"],
      row.get("vs_jit_step", float("nan")),
      row["temp_bytes"] / 2**20,
      f"{row['non_canonical_convolutions']}/{row['convolutions']}",
      row["gradient_relative_difference"],
    ]
    for row in rows
    if "error" not in row
  ]
  _timing.report(
    {
      **{k: getattr(args, k) for k in settings},
      "slow_rounds": args.slow_rounds,
      "lanes": args.lanes,
      "rows": rows,
    },
    args.out,
    [
      ("variant", ""),
      ("compile s", ".1f"),
      ("ms/step", ".1f"),
      ("x jit step", ".2f"),
      ("temp MiB", ".0f"),
      ("non-canonical convs", ""),
      ("grad difference", ".1e"),
    ],
    table,
    title=f"{args.in_shape} images, batch {args.batch}, Adam; ms per "
    "training step (median of rounds); x jit step: over the model's jitted "
    "nn.Conv step",
  )
  for row in rows:
    if "error" in row:
      print(f"XLA_FLAGS={row['xla_flags']!r} failed: {row['error']}")


if __name__ == "__main__":
  main()
