"""The paper's experimental protocols, as functions the scripts share.

A protocol is a list of *phases*: training sets, each trained on for
``epochs`` epochs, with a *data change* between phases (where Shrink &
Perturb and head reset act). ``warm_start.py``, ``continual.py`` and
``generalization.py`` build the phases and call :func:`run_protocol`, which
trains every method for every seed on the same data, batch order and
initialisation, and returns the JSON-ready results described in
``examples/README.md``.

Methods (PAPER.md "Experiments"): ``vanilla`` (Adam), ``l2``, ``l2_init``,
``snp`` (Shrink & Perturb), ``head_reset``, ``swr`` and ``swr_reinit`` (SWR
with its reference norms reset where the learning rate drops).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import dataclasses
import functools
import json
import os
import platform
import time
from typing import Any
import warnings

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from examples import data
from examples import methods as methods_lib
from examples.models import linen as models_linen
from examples.paper import engine as engine_lib
from examples.paper import stats
import optax_swr
from optax_swr import metrics

# The registry's methods that need no activations (the protocols record none).
METHODS = methods_lib.names(needs_activations=False)
# The paper's best SWR coefficients (lambda_f, lambda_c), PAPER.md.
PAPER_SWR_COEFS = {
  "warm_start": {
    "mlp": (1e-4, 1e-4),
    "cnn": (1e-3, 1e-3),
    "cnn_bn": (1e-4, 1.0),
    "vgg16": (1e-2, 1e-1),
  },
  "continual_full": {
    "mlp": (1e-4, 1e-4),
    "cnn": (1e-3, 1e-3),
    "cnn_bn": (1e-4, 1e-1),
    "vgg16": (1e-2, 1e-2),
  },
  "continual_limited": {
    "mlp": (1e-4, 1e-4),
    "cnn": (1e-1, 1e-1),
    "cnn_bn": (1e-1, 1e-2),
    "vgg16": (1e-4, 1.0),
  },
}
# The paper sweeps these baselines but does not publish the chosen values;
# these sit inside its sweeps (L2 1e-5..1e-1, S&P 0.2..0.8).
BASELINE_COEFS = {"l2": 1e-4, "l2_init": 1e-4, "snp": 0.2}
# Fully connected layers at the end: the classifier for SWR's lambda_c and for
# head reset ("for the MLP only the last").
CLASSIFIER_LAYERS = {
  "mlp": 1,
  "cnn": 2,
  "cnn_bn": 2,
  "vgg16": 3,
  "resnet18": 1,
  "transformer": 1,
}

Engine = engine_lib.Engine
stack = engine_lib.stack


@dataclasses.dataclass(frozen=True)
class Settings:
  """What every protocol script takes from its flags."""

  protocol: str
  data: str
  model: str = "mlp"
  width: int | None = None
  methods: tuple[str, ...] = METHODS[:6]
  epochs: int = 10
  batch_size: int = 256
  lr: float = 1e-3
  seeds: int = 3
  lr_decay: bool = False
  max_train: int | None = None
  max_test: int | None = None
  coefs: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
  until_train_acc: float | None = None
  swr_sweep: tuple[float, ...] = ()
  workers: int | None = None
  progress: bool = True
  out: str | None = None


def add_flags(parser: argparse.ArgumentParser, default_methods: str) -> None:
  """The flags every protocol script shares."""
  parser.add_argument(
    "--data",
    default="digits",
    help=(
      f"a built-in name {data.BUILT_IN} or a path to an .npz with x_train, "
      "y_train, x_test, y_test"
    ),
  )
  parser.add_argument("--model", default="mlp", choices=models_linen.ALL_MODELS)
  parser.add_argument(
    "--width",
    type=int,
    default=None,
    help="model width (default: the paper's sizes)",
  )
  parser.add_argument(
    "--methods",
    default=default_methods,
    help=f"comma-separated, from {','.join(METHODS)}",
  )
  parser.add_argument("--epochs", type=int, default=10, help="per phase")
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--lr", type=float, default=1e-3, help="Adam")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument(
    "--max-train",
    type=int,
    default=None,
    help="train on a random subset of this size",
  )
  parser.add_argument("--max-test", type=int, default=None)
  parser.add_argument("--l2", type=float, default=BASELINE_COEFS["l2"])
  parser.add_argument(
    "--l2-init", type=float, default=BASELINE_COEFS["l2_init"]
  )
  parser.add_argument(
    "--snp",
    type=float,
    default=BASELINE_COEFS["snp"],
    help="Shrink & Perturb's weight of the fresh params",
  )
  parser.add_argument(
    "--swr",
    default=None,
    help=(
      "SWR's lambda_f (default: the paper's best); a comma-separated list "
      "adds one entry 'swr λ=X' (lambda_f = lambda_c = X) per further value"
    ),
  )
  parser.add_argument(
    "--swr-classifier",
    type=float,
    default=None,
    help="SWR's lambda_c (default: the paper's best)",
  )
  parser.add_argument(
    "--until-train-acc",
    type=float,
    default=None,
    help=(
      "train each phase until this training accuracy (e.g. 0.99), with "
      "--epochs as the cap"
    ),
  )
  parser.add_argument(
    "--workers",
    type=int,
    default=None,
    help=(
      "train the methods in this many processes, one CPU core each "
      "(default: one per core on a CPU, 1 on a GPU or TPU)"
    ),
  )
  parser.add_argument("--out", default=None, help="write the results as JSON")
  parser.add_argument("--no-progress", dest="progress", action="store_false")


def settings_from_flags(
  args: argparse.Namespace, protocol: str, swr_table: str, **extra: Any
) -> Settings:
  """Checks the flags and fills in the paper's SWR coefficients."""
  methods = tuple(m for m in args.methods.split(",") if m)
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise ValueError(f"--methods: unknown {unknown}; choose from {METHODS}.")
  check_positive("--epochs", args.epochs)
  check_positive("--seeds", args.seeds)
  check_positive("--batch-size", args.batch_size)
  if args.workers is not None:
    check_positive("--workers", args.workers)
  if args.until_train_acc is not None and not 0 < args.until_train_acc <= 1:
    raise ValueError(
      f"--until-train-acc must be in (0, 1]; got {args.until_train_acc}."
    )
  check_out_path(args.out)
  paper = PAPER_SWR_COEFS[swr_table].get(args.model, (1e-3, 1e-3))
  swr_values = () if args.swr is None else parse_coefs("--swr", args.swr)
  swr_coefs = (
    swr_values[0] if swr_values else paper[0],
    paper[1] if args.swr_classifier is None else args.swr_classifier,
  )
  coefs = {
    "l2": (args.l2,),
    "l2_init": (args.l2_init,),
    "snp": (args.snp,),
    "swr": swr_coefs,
    "swr_reinit": swr_coefs,
  }
  sweep = tuple(swr_values[1:]) if "swr" in methods else ()
  return Settings(
    protocol=protocol,
    data=args.data,
    model=args.model,
    width=args.width,
    methods=methods,
    epochs=args.epochs,
    batch_size=args.batch_size,
    lr=args.lr,
    seeds=args.seeds,
    max_train=args.max_train,
    max_test=args.max_test,
    coefs=coefs,
    until_train_acc=args.until_train_acc,
    swr_sweep=sweep,
    workers=args.workers,
    progress=args.progress,
    out=args.out,
    **extra,
  )


SWEEP_PREFIX = "swr λ="  # An entry of --swr's further values: "swr λ=0.01".


def parse_coefs(
  flag: str, text: str, upper: float | None = 1.0
) -> tuple[float, ...]:
  """A flag's comma-separated coefficients, each >= 0 and <= ``upper``.

  Raises:
    ValueError: naming ``flag``, for text that is not such a list.
  """
  try:
    values = tuple(float(v) for v in str(text).split(",") if v)
  except ValueError:
    raise ValueError(
      f"{flag}: {text!r} is not a comma-separated list of numbers."
    ) from None
  if not values or not all(
    0 <= v <= (np.inf if upper is None else upper) for v in values
  ):
    bounds = ">= 0" if upper is None else f"in [0, {upper:g}]"
    raise ValueError(f"{flag}: every coefficient must be {bounds}; got {text}.")
  return values


def check_positive(flag: str, value: int) -> None:
  """Raises a ValueError naming ``flag`` unless ``value`` >= 1."""
  if value < 1:
    raise ValueError(f"{flag} must be at least 1; got {value}.")


def load_data(settings: Settings) -> data.Dataset:
  """The data set named by ``--data``, cut to ``--max-train/--max-test``."""
  dataset = data.load(settings.data)
  return data.subset(dataset, settings.max_train, settings.max_test)


@dataclasses.dataclass(frozen=True)
class Pool:
  """Every example of a data set, and each seed's split.

  The protocols index the pool: a phase is an index array per seed. Data
  sets with a train/test split of their own (Fashion-MNIST, a user's .npz)
  keep it for every seed; the digits, which have none, are split anew per
  seed (stratified, the same sizes).

  Attributes:
    x: every input.
    y: every label.
    train: ``[seeds, num_train]`` indices of each seed's training examples.
    test: ``[seeds, num_test]`` indices of each seed's test examples.
  """

  x: np.ndarray
  y: np.ndarray
  train: np.ndarray
  test: np.ndarray


def make_pool(name: str, dataset: data.Dataset, seeds: int) -> Pool:
  """The pool of ``dataset``; ``name`` decides whether its split is redrawn."""
  x = np.concatenate([dataset.x_train, dataset.x_test])
  y = np.concatenate([dataset.y_train, dataset.y_test])
  num_train = len(dataset.x_train)
  if name in data.NO_FIXED_SPLIT:
    train, test = zip(
      *(data.stratified_split(y, num_train, seed) for seed in range(seeds))
    )
  else:
    train = [np.arange(num_train)] * seeds
    test = [np.arange(num_train, len(x))] * seeds
  return Pool(x, y, np.stack(train), np.stack(test))


def all_data(train: np.ndarray, seed: int) -> list[np.ndarray]:
  """One phase of every training example (generalization, from scratch)."""
  del seed
  return [train]


PhaseFn = Callable[[np.ndarray, int], Sequence[np.ndarray]]


def run_protocol(
  settings: Settings,
  dataset: data.Dataset,
  phases: PhaseFn,
  lr_boundaries_at: Sequence[float] = (),
  extra_runs: dict[str, PhaseFn] | None = None,
) -> dict[str, Any]:
  """Trains every method, all seeds side by side, through the phases.

  Args:
    settings: the run's settings.
    dataset: the data; its test set is evaluated after every epoch.
    phases: ``phases(train_indices, seed)``: the training sets, as indices
      into the pool, in order; a data change precedes each phase after the
      first.
    lr_boundaries_at: fractions of the total steps where the learning rate
      drops to a tenth (and ``swr_reinit`` resets its reference norms).
    extra_runs: further entries trained with vanilla Adam on other phases,
      e.g. ``{"from_scratch": all_data}``. Phase functions are pickled to
      the workers: module-level functions or ``functools.partial`` of them.

  Returns:
    ``{"config", "versions", "wall_time_s", "methods"}``, as documented in
    ``examples/README.md``.
  """
  start = time.perf_counter()
  pool = make_pool(settings.data, dataset, settings.seeds)
  module, variables = models_linen.create(
    settings.model,
    dataset.num_classes,
    dataset.x_train.shape[1:],
    width=settings.width,
  )
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optax_swr.NotAChainWarning)
    layers = optax_swr.layers_from_linen(
      module, variables, dataset.x_train[:1], train=True
    )
  entries = [(m, phases) for m in settings.methods]
  entries += [(f"{SWEEP_PREFIX}{c:g}", phases) for c in settings.swr_sweep]
  entries += list((extra_runs or {}).items())
  jobs = [
    (name, settings, pool, entry_phases, module, layers, lr_boundaries_at)
    for name, entry_phases in entries
  ]
  # The sweep's strongest coefficients can train longest (toward a target
  # they may never reach): workers start them first.
  first = sorted(range(len(jobs)), key=lambda i: _start_order(entries[i][0]))
  done = engine_lib.run_jobs(
    _run_method, [jobs[i] for i in first], settings.workers
  )
  by_name = {entries[i][0]: entry for i, entry in zip(first, done)}
  results = {name: by_name[name] for name, _ in entries}
  return {
    "config": _config(settings, dataset, layers, lr_boundaries_at),
    "versions": versions(),
    "wall_time_s": time.perf_counter() - start,
    "methods": results,
  }


def seed_phases(
  phases: PhaseFn, pool: Pool, batch_size: int
) -> list[np.ndarray]:
  """Each phase's ``[seeds, n]`` training indices; checks n >= a batch."""
  per_seed = [
    list(phases(train, seed)) for seed, train in enumerate(pool.train)
  ]
  stacked = [np.stack(phase) for phase in zip(*per_seed)]
  for number, phase in enumerate(stacked, start=1):
    if phase.shape[1] < batch_size:
      raise ValueError(
        f"phase {number} has {phase.shape[1]} training examples, fewer "
        f"than one batch (--batch-size {batch_size}); use fewer --chunks, "
        "a smaller --batch-size or more data."
      )
  return stacked


def variables_per_seed(
  settings: Settings, pool: Pool, num_classes: int, seed_offset: int = 0
) -> list[dict[str, Any]]:
  """One initialisation of the model per seed (``seed + seed_offset``)."""
  in_shape = pool.x.shape[1:]
  return [
    models_linen.create(
      settings.model,
      num_classes,
      in_shape,
      width=settings.width,
      seed=seed + seed_offset,
    )[1]
    for seed in range(settings.seeds)
  ]


def _run_method(
  name, settings, pool, phases_fn, module, layers, lr_boundaries_at
) -> dict[str, Any]:
  start = time.perf_counter()
  method_name, coefs = _method_of(name, settings)
  phases = seed_phases(phases_fn, pool, settings.batch_size)
  steps_per_epoch = [-(-p.shape[1] // settings.batch_size) for p in phases]
  until = settings.until_train_acc
  total_steps = settings.epochs * sum(steps_per_epoch)
  boundaries = sorted({int(f * total_steps) for f in lr_boundaries_at})
  lr = _learning_rate(settings.lr, boundaries)
  head = layers[-CLASSIFIER_LAYERS[settings.model] :]
  setup = methods_lib.TrainingSetup(layers, head, lr, lr_boundaries=boundaries)
  method = methods_lib.build(method_name, coefs, setup)
  engine = Engine(module, method.tx, layers)
  num_classes = int(pool.y.max()) + 1
  variables = variables_per_seed(settings, pool, num_classes)
  state = engine.init(variables)
  initial = stack([v["params"] for v in variables])
  x = jnp.asarray(pool.x)
  labels = jnp.broadcast_to(jnp.asarray(pool.y), (settings.seeds, len(pool.y)))
  rngs = [np.random.default_rng(seed) for seed in range(settings.seeds)]
  balanced = not _has_normalization(variables[0]["params"], layers)
  norms, balance = lane_metrics(layers)
  max_steps = max(steps_per_epoch)
  lanes = range(settings.seeds)
  record: dict[str, Any] = {
    key: [[] for _ in lanes]
    for key in ("test_acc", "online_acc", "weight_norms", "balancedness")
  }
  record["epochs_per_phase"] = [[] for _ in lanes]
  record["phase_train_acc"] = [[] for _ in lanes]
  steps_done = np.zeros(settings.seeds, np.int64)
  bar = tqdm.tqdm(
    total=len(phases) * settings.epochs,
    disable=not settings.progress,
    desc=f"{settings.protocol} {name}",
    unit="epoch",
  )
  for number, phase in enumerate(phases):
    if number and method.intervene is not None:
      fresh = variables_per_seed(
        settings, pool, num_classes, 1000 * (number + 1)
      )
      params, opt_state = method.intervene(
        methods_lib.InterventionInputs(
          state.params,
          state.opt_state,
          initial,
          stack([v["params"] for v in fresh]),
        )
      )
      state = state._replace(params=params, opt_state=opt_state)
    active = np.ones(settings.seeds, bool)
    epochs = np.zeros(settings.seeds, np.int64)
    for _ in range(settings.epochs):
      steps = steps_per_epoch[number]
      order = _epoch_batches(phase, rngs, settings.batch_size, steps, max_steps)
      state, online = engine.train(
        state, x, labels, order, np.where(active, steps, 0)
      )
      steps_done += np.where(active, steps, 0)
      epochs += active
      test = engine.accuracy(state, x, labels, pool.test)
      layer_norms = np.asarray(norms(state.params))
      balances = np.asarray(balance(state.params)) if balanced else None
      for lane in np.flatnonzero(active):
        record["test_acc"][lane].append(float(test[lane]))
        record["online_acc"][lane].append(float(online[lane]))
        record["weight_norms"][lane].append(layer_norms[lane].tolist())
        record["balancedness"][lane].append(
          None if balances is None else float(balances[lane])
        )
      bar.set_postfix(test_acc=f"{test.mean():.4f}")
      bar.update()
      if until is not None:
        train_acc = engine.accuracy(state, x, labels, phase)
        active &= train_acc < until
        if not active.any():
          break
    if until is None:  # With a target, the last epoch measured it already.
      train_acc = engine.accuracy(state, x, labels, phase)
    for lane in lanes:
      record["epochs_per_phase"][lane].append(int(epochs[lane]))
      record["phase_train_acc"][lane].append(float(train_acc[lane]))
  bar.close()
  record["final_test_acc"] = [run[-1] for run in record["test_acc"]]
  if not balanced:
    record["balancedness"] = None
  record["total_steps"] = steps_done.tolist()
  record["seconds"] = time.perf_counter() - start
  record["hparams"] = {
    "method": method_name,
    "lr": settings.lr,
    "lr_boundaries": boundaries,
    "coefs": list(coefs),
  }
  return record


def _learning_rate(lr: float, boundaries: Sequence[int]) -> Any:
  """``lr``, divided by 10 at each of ``boundaries`` (steps), if any."""
  if not boundaries:
    return lr
  return optax.piecewise_constant_schedule(lr, {b: 0.1 for b in boundaries})


def _epoch_batches(
  phase: np.ndarray,
  rngs: Sequence[np.random.Generator],
  batch_size: int,
  steps: int,
  max_steps: int,
) -> np.ndarray:
  """One epoch's ``[seeds, max_steps, batch]`` indices into the pool.

  Rows past ``steps`` are padding (never trained on), so that phases of
  every size share one compilation of the training loop.
  """
  order = np.zeros((len(rngs), max_steps, batch_size), np.int64)
  for lane, rng in enumerate(rngs):
    order[lane, :steps] = phase[lane][
      engine_lib.epoch_order(rng, phase.shape[1], batch_size, steps)
    ]
  return order


def _start_order(name: str) -> tuple[int, float]:
  """Sweep entries first, the largest coefficient first; then the rest."""
  if name.startswith(SWEEP_PREFIX):
    return 0, -float(name[len(SWEEP_PREFIX) :])
  return 1, 0.0


def _method_of(name: str, settings: Settings) -> tuple[str, tuple[float, ...]]:
  """An entry's method and coefficients; extra runs are vanilla Adam."""
  if name.startswith(SWEEP_PREFIX):
    coef = float(name[len(SWEEP_PREFIX) :])
    return "swr", (coef, coef)
  method = name if name in METHODS else "vanilla"
  return method, tuple(settings.coefs.get(method, ()))


@functools.cache
def lane_metrics(layers: tuple[tuple[Any, ...], ...]) -> tuple[Any, Any]:
  """Jitted per-lane weight norms and balancedness, compiled once."""
  norms = jax.jit(jax.vmap(lambda p: metrics.layer_norms(p, layers)))
  balance = jax.jit(jax.vmap(lambda p: metrics.balancedness(p, layers)))
  return norms, balance


def _has_normalization(params, layers) -> bool:
  """Balancedness is defined for chains without normalization layers."""
  return any(layer.norm for layer in optax_swr.find_layers(params, layers))


def _config(settings, dataset, layers, lr_boundaries_at) -> dict[str, Any]:
  config = dataclasses.asdict(settings)
  config.update(
    num_train=len(dataset.x_train),
    num_test=len(dataset.x_test),
    input_shape=list(dataset.x_train.shape[1:]),
    num_classes=dataset.num_classes,
    layers=[layer.name for layer in layers],
    lr_decay_at=list(lr_boundaries_at),
    split_per_seed=settings.data in data.NO_FIXED_SPLIT,
  )
  return config


def versions() -> dict[str, str]:
  """Versions of what produced the results, for the JSON."""
  return {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "optax": optax.__version__,
    "flax": flax.__version__,
    "numpy": np.__version__,
    "optax_swr": optax_swr.__version__,
    "device": str(jax.devices()[0].device_kind),
  }


def write_json(path: str, results: dict[str, Any]) -> None:
  """Writes ``results`` to ``path`` whole or not at all (never a partial file)."""
  temporary = f"{path}.partial"
  try:
    with open(temporary, "w") as file:
      json.dump(results, file)
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def check_out_path(path: str | None) -> None:
  """Fails before any training if ``--out`` can't be written."""
  if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
    raise ValueError(
      f"--out: the folder of {path!r} does not exist; create it first."
    )


def finish(results: dict[str, Any], settings: Settings) -> None:
  """Writes the JSON (if ``--out``) and prints the final accuracies.

  The +- is the sample standard deviation over seeds (ddof=1).
  """
  if settings.out:
    write_json(settings.out, results)
  print(
    f"\n{settings.protocol}: {settings.data}, {settings.model}, "
    f"{settings.epochs} epochs per phase, {settings.seeds} seeds"
  )
  print(f"{'method':12s} {'final test accuracy':>22s} {'sum ||W_l||':>12s}")
  for name, entry in results["methods"].items():
    final = np.array(entry["final_test_acc"])
    norm = np.mean([seed[-1] for seed in entry["weight_norms"]], axis=0).sum()
    accuracy = stats.mean_std_text(final, "+-")
    print(f"{name:12s} {accuracy:>24s} {norm:12.2f}")
  if settings.out:
    print(f"results written to {settings.out}")
