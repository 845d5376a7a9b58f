"""Steps per second of the experiment engine against the step-by-step loop.

The protocols of ``examples/`` used to train with a Python loop over numpy
minibatches sliced on the host, one call of a jitted one-batch step per batch
(``Run.train_epoch``). ``examples/paper/engine.py`` instead runs all steps of
a run in one jitted ``lax.fori_loop`` on data that stays on the device, with
the seeds as ``jax.vmap`` lanes. This script times, for the paper's MLP
(784-100-100-10) at batch 32 on 1,200 random images, with Adam and with
Adam + SWR:

- (a) the step-by-step loop, one seed;
- (b) the engine, one lane;
- (c) the engine, ``--lanes`` seeds side by side (steps/s counts every lane's
  steps: ``lanes * steps / seconds``).

It also times whole protocol runs, as users run them: ``--protocol-seeds``
seeds x ``--protocol-epochs`` epochs of one phase with the test accuracy,
weight norms and balancedness after every epoch, compilation included, for
vanilla Adam and Adam + SWR:

- (d) the protocol loop as ``examples/paper/protocols.py`` ran it before the
  engine (commit d616e65): seeds one after another, one jitted call per batch, the
  metrics of every epoch computed op by op on the host;
- (e) ``runner.run_protocol`` today.

Each variant is compiled and warmed up first; then the variants take turns
``--rounds`` times, ``--steps`` steps each, and a variant's time is its best
round. It also checks that (a) and (b) end with the same params after the
same ``--check-steps`` batches (``max_abs_param_difference``; on random
labels, rounding differences grow chaotically after about 1,500 steps, so
the check is kept short). From the repository root::

  python -m benchmarks.experiment_engine
  python -m benchmarks.experiment_engine --quick   # seconds: 50 steps
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import os
import shlex
import sys
import time
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import _timing
from examples import data as data_lib
from examples.models import linen as models_linen
from examples.paper import engine as engine_lib
from examples.paper import runner
import optax_swr
from optax_swr import metrics

MODEL, NUM_CLASSES, IN_SHAPE = "mlp", 10, (28, 28, 1)
WARMUP_CALLS, WARMUP_STEPS = 2, 10  # The first call compiles.
DEFAULT_OUT = os.path.join(
  "benchmarks", "results", "experiment_engine_cpu.json"
)
OPTIMIZERS: dict[str, Callable[[Any], optax.GradientTransformation]] = {
  "adam": lambda layers: optax.adam(1e-3),
  "adam+swr": lambda layers: optax.chain(
    optax.adam(1e-3), optax_swr.swr(1e-3, layers=layers)
  ),
}
STEP_BY_STEP, ONE_LANE, LANES = "step-by-step", "engine 1 lane", "engine lanes"


class Data(NamedTuple):
  """Random images and labels, and each lane's batches.

  Attributes:
    x: float32 images ``[examples, 28, 28, 1]``, on the host.
    labels: int32 ``[lanes, examples]``, each lane's, on the host.
    batch_index: int32 ``[lanes, steps, batch]``, each lane's batches.
  """

  x: np.ndarray
  labels: np.ndarray
  batch_index: np.ndarray


class Variant(NamedTuple):
  """A way to train: ``run(state, steps)`` trains and waits for the result.

  Attributes:
    run: trains ``state`` on its first ``steps`` batches; returns the new
      state (the engine consumes the one it is given).
    init: a fresh initial state (lane-stacked for the engine).
  """

  run: Callable[[engine_lib.TrainState, int], engine_lib.TrainState]
  init: Callable[[], engine_lib.TrainState]


def make_data(examples: int, lanes: int, batch: int, steps: int) -> Data:
  """``examples`` random images, random labels and batches per lane."""
  rng = np.random.default_rng(0)
  x = rng.random((examples, *IN_SHAPE), dtype=np.float32)
  labels = rng.integers(0, NUM_CLASSES, (lanes, examples), dtype=np.int32)
  batch_index = np.stack(
    [
      engine_lib.epoch_order(rng, examples, batch, steps).astype(np.int32)
      for _ in range(lanes)
    ]
  )
  return Data(x, labels, batch_index)


def step_by_step(
  engine: engine_lib.Engine,
  state: engine_lib.TrainState,
  x: np.ndarray,
  y: np.ndarray,
  batch_index: np.ndarray,
) -> engine_lib.TrainState:
  """The old ``Run.train_epoch``: host numpy batches, one jitted call each."""
  for index in batch_index:
    state, _ = engine.step(state, x[index], y[index])
  return state


def step_by_step_variant(
  engine: engine_lib.Engine, variables: dict, data: Data
) -> Variant:
  """(a): lane 0's seed, labels and batches, through ``step_by_step``."""

  def run(state, steps):
    state = step_by_step(
      engine, state, data.x, data.labels[0], data.batch_index[0, :steps]
    )
    return jax.block_until_ready(state)

  return Variant(run, lambda: engine_lib.lane(engine.init([variables]), 0))


def engine_variant(
  engine: engine_lib.Engine, variables: Sequence[dict], data: Data
) -> Variant:
  """(b) or (c): the first ``len(variables)`` lanes in one ``engine.train``.

  The batch index always has all ``--steps`` rows, so that every call shares
  one compilation; ``num_steps`` says how many run.
  """
  lanes = len(variables)
  x, labels = jnp.asarray(data.x), jnp.asarray(data.labels[:lanes])

  def run(state, steps):
    state, _ = engine.train(
      state, x, labels, data.batch_index[:lanes], np.full(lanes, steps)
    )
    return jax.block_until_ready(state)

  return Variant(run, lambda: engine.init(list(variables)))


def make_variants(
  name: str, module: Any, variables: Sequence[dict], data: Data
) -> dict[str, Variant]:
  """The three variants of one optimizer; each gets its own ``Engine``."""
  layers = optax_swr.layers_from_linen(module, variables[0], data.x[:1])
  engine = lambda: engine_lib.Engine(module, OPTIMIZERS[name](layers), layers)
  return {
    STEP_BY_STEP: step_by_step_variant(engine(), variables[0], data),
    ONE_LANE: engine_variant(engine(), variables[:1], data),
    LANES: engine_variant(engine(), variables, data),
  }


def time_variants(
  variants: dict[tuple[str, str], Variant], steps: int, rounds: int
) -> dict[tuple[str, str], list[float]]:
  """Seconds of ``steps`` steps of each variant per round, taking turns."""
  states = {}
  for key, variant in variants.items():
    states[key] = variant.init()
    for _ in range(WARMUP_CALLS):
      states[key] = variant.run(states[key], WARMUP_STEPS)
  seconds = {key: [] for key in variants}
  for _ in range(rounds):
    for key, variant in variants.items():
      start = time.perf_counter()
      states[key] = variant.run(states[key], steps)
      seconds[key].append(time.perf_counter() - start)
  return seconds


def max_abs_param_difference(variants: dict[str, Variant], steps: int) -> float:
  """Largest |(a) - (b)| of a param after the same ``steps`` batches."""
  a = variants[STEP_BY_STEP].run(variants[STEP_BY_STEP].init(), steps)
  b = variants[ONE_LANE].run(variants[ONE_LANE].init(), steps)
  b = engine_lib.lane(b, 0)
  differences = jax.tree.map(
    lambda u, v: float(jnp.max(jnp.abs(u - v))), a.params, b.params
  )
  return max(jax.tree.leaves(differences))


def make_row(
  name: str, lanes: int, steps: int, seconds: dict[str, list[float]]
) -> dict[str, Any]:
  """One optimizer's steps/s (over every lane) and the speed-ups."""
  count = {STEP_BY_STEP: 1, ONE_LANE: 1, LANES: lanes}
  rate = {
    variant: count[variant] * steps / min(rounds)
    for variant, rounds in seconds.items()
  }
  return {
    "optimizer": name,
    "lanes": lanes,
    "round_seconds": seconds,
    "steps_per_second": rate,
    "engine 1 lane/step-by-step": rate[ONE_LANE] / rate[STEP_BY_STEP],
    "engine lanes/step-by-step": rate[LANES] / rate[STEP_BY_STEP],
  }


def old_protocol_loop(
  module: Any,
  tx: optax.GradientTransformation,
  variables: Sequence[dict],
  dataset: data_lib.Dataset,
  layers: Sequence[tuple[str, ...]],
  epochs: int,
  batch: int,
) -> None:
  """(d): the protocol loop before the engine, for one method, seed by seed.

  The same work as the old ``protocols.Run``: per batch, a host-sliced
  numpy batch and one jitted step; per epoch, the test accuracy in chunks of
  1,000 with a host sync per chunk, the layer norms and the balancedness.
  """
  engine = engine_lib.Engine(module, tx, layers)
  logits = jax.jit(lambda v, x: module.apply(v, x, train=False))
  x, y = dataset.x_train, dataset.y_train
  for seed, seed_variables in enumerate(variables):
    state = engine_lib.lane(engine.init([seed_variables]), 0)
    rng = np.random.default_rng(seed)
    steps = -(-len(x) // batch)
    for _ in range(epochs):
      order = rng.permutation(len(x))
      fill = rng.choice(len(x), steps * batch - len(x))
      for index in np.concatenate([order, fill]).reshape(steps, batch):
        state, _ = engine.step(state, x[index], y[index])
      correct = 0
      for start in range(0, len(dataset.x_test), 1000):
        out = logits(
          {"params": state.params}, dataset.x_test[start : start + 1000]
        )
        correct += int(
          jnp.sum(jnp.argmax(out, -1) == dataset.y_test[start : start + 1000])
        )
      np.asarray(metrics.layer_norms(state.params, layers)).tolist()
      float(metrics.balancedness(state.params, layers))


def measure_protocols(args: argparse.Namespace) -> list[dict[str, Any]]:
  """(d) against (e), whole runs with compilation, per optimizer."""
  rng = np.random.default_rng(1)
  dataset = data_lib.Dataset(
    rng.random((args.examples, *IN_SHAPE), dtype=np.float32),
    rng.integers(0, NUM_CLASSES, args.examples).astype(np.int32),
    rng.random((1000, *IN_SHAPE), dtype=np.float32),
    rng.integers(0, NUM_CLASSES, 1000).astype(np.int32),
  )
  seeds, epochs = args.protocol_seeds, args.protocol_epochs
  module, variables = models_linen.create(MODEL, NUM_CLASSES, IN_SHAPE)
  layers = optax_swr.layers_from_linen(module, variables, dataset.x_train[:1])
  steps = seeds * epochs * -(-args.examples // args.batch)
  rows = []
  for name, method in (("adam", "vanilla"), ("adam+swr", "swr")):
    start = time.perf_counter()
    old_protocol_loop(
      module,
      OPTIMIZERS[name](layers),
      [
        models_linen.create(MODEL, NUM_CLASSES, IN_SHAPE, seed=seed)[1]
        for seed in range(seeds)
      ],
      dataset,
      layers,
      epochs,
      args.batch,
    )
    old = time.perf_counter() - start
    settings = runner.Settings(
      protocol="benchmark",
      data="random",
      model=MODEL,
      methods=(method,),
      epochs=epochs,
      batch_size=args.batch,
      seeds=seeds,
      coefs={"swr": (1e-3, 1e-3)},
      workers=1,  # one process, as the old loop ran
      progress=False,
    )
    start = time.perf_counter()
    runner.run_protocol(settings, dataset, runner.all_data)
    new = time.perf_counter() - start
    rows.append(
      {
        "optimizer": name,
        "seeds": seeds,
        "epochs": epochs,
        "steps": steps,
        "seconds": {"old protocol loop": old, "run_protocol": new},
        "steps_per_second": {
          "old protocol loop": steps / old,
          "run_protocol": steps / new,
        },
        "run_protocol/old": old / new,
      }
    )
  return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=2000, help="per round")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--lanes", type=int, default=5, help="seeds of (c)")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--examples", type=int, default=1200)
  parser.add_argument(
    "--check-steps", type=int, default=200, help="steps (a) and (b) compare"
  )
  parser.add_argument("--protocol-seeds", type=int, default=5)
  parser.add_argument("--protocol-epochs", type=int, default=20)
  parser.add_argument(
    "--quick",
    action="store_true",
    help="a smoke run: 50 steps, 1 round, protocols of 2 seeds x 1 epoch",
  )
  parser.add_argument("--out", default=DEFAULT_OUT, help="the JSON file")
  args = parser.parse_args(argv)
  if args.quick:
    args.steps, args.rounds = min(args.steps, 50), 1
    args.protocol_seeds, args.protocol_epochs = 2, 1
  args.check_steps = min(args.check_steps, args.steps)
  return args


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
  """One row per optimizer: steps/s of the variants and the params check."""
  data = make_data(args.examples, args.lanes, args.batch, args.steps)
  models = [
    models_linen.create(MODEL, NUM_CLASSES, IN_SHAPE, seed=seed)
    for seed in range(args.lanes)
  ]
  module, variables = models[0][0], [v for _, v in models]
  variants = {
    name: make_variants(name, module, variables, data) for name in OPTIMIZERS
  }
  seconds = time_variants(
    {(n, v): variant for n in variants for v, variant in variants[n].items()},
    args.steps,
    args.rounds,
  )
  rows = []
  for name, named in variants.items():
    row = make_row(
      name, args.lanes, args.steps, {v: seconds[name, v] for v in named}
    )
    row["max_abs_param_difference"] = max_abs_param_difference(
      named, args.check_steps
    )
    rows.append(row)
  return rows


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  rows = measure(args)
  protocol_rows = measure_protocols(args)
  settings = ("steps", "rounds", "lanes", "batch", "examples", "check_steps")
  flags = sys.argv[1:] if argv is None else list(argv)
  command = ["python", "-m", "benchmarks.experiment_engine", *flags]
  _report(
    {
      **{k: getattr(args, k) for k in settings},
      "model": MODEL,
      "command": shlex.join(command),
      "rows": rows,
      "protocol_rows": protocol_rows,
    },
    args.out,
  )
  print(
    f"whole protocol runs ({args.protocol_seeds} seeds x "
    f"{args.protocol_epochs} epochs, metrics every epoch, compilation "
    "included), steps/s:"
  )
  for row in protocol_rows:
    rate = row["steps_per_second"]
    print(
      f"  {row['optimizer']:9s} old loop {rate['old protocol loop']:7.0f}"
      f"  run_protocol {rate['run_protocol']:7.0f}"
      f"  ratio {row['run_protocol/old']:.2f}"
    )


def _report(result: dict[str, Any], out: str) -> None:
  """Writes the JSON (with the flax version) and prints the table."""
  variants = (STEP_BY_STEP, ONE_LANE, LANES)
  rates = lambda r: [r["steps_per_second"][v] for v in variants]
  _timing.report(
    {"flax": flax.__version__, **result},
    out,
    [
      ("optimizer", "s"),
      ("(a) step-by-step", ".0f"),
      ("(b) engine 1 lane", ".0f"),
      (f"(c) engine {result['lanes']} lanes", ".0f"),
      ("(b)/(a)", ".2f"),
      ("(c)/(a)", ".2f"),
      (f"max|a-b| {result['check_steps']} steps", ".1e"),
    ],
    [
      [
        r["optimizer"],
        *rates(r),
        r["engine 1 lane/step-by-step"],
        r["engine lanes/step-by-step"],
        r["max_abs_param_difference"],
      ]
      for r in result["rows"]
    ],
    title=f"steps/s, {result['model']} at batch {result['batch']}, "
    f"best of {result['rounds']} rounds of {result['steps']} steps "
    f"((c): all lanes' steps)",
  )


if __name__ == "__main__":
  main()
