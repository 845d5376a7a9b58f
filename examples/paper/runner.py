"""Runs a phased protocol: every method, all seeds side by side, per phase.

A protocol is a list of *phases*: training sets, each trained on for
``epochs`` epochs, with a *data change* between phases (where a method's
intervention acts: Shrink & Perturb, head reset). A protocol script
(``warm_start.py``, ``continual.py``, ``generalization.py``) builds the phases
and calls :func:`run_protocol`, which trains every method of
``examples.methods`` for every seed on the same data, batch order and
initialisation, and returns the JSON-ready results described in
``examples/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import functools
import time
from typing import Any
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from examples import cli
from examples import data
from examples import methods as methods_lib
from examples.models import linen as models_linen
from examples.paper import engine as engine_lib
import optax_swr
from optax_swr import metrics

# Every method of the registry: the engine gives the step hooks (ReDo,
# continual backprop) each batch's activations.
METHODS = methods_lib.names()
# Fully connected layers at the end: the classifier for SWR's lambda_c and for
# head reset ("for the MLP only the last").
CLASSIFIER_LAYERS = {
  "mlp": 1,
  "cnn": 2,
  "cnn_bn": 2,
  "vgg16": 3,
  "vgg_bn": 2,
  "resnet18": 1,
  "transformer": 1,
}


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
  redo_every: int = 1000
  until_train_acc: float | None = None
  swr_sweep: tuple[float, ...] = ()
  workers: int | None = None
  progress: bool = True
  out: str | None = None


SWEEP_PREFIX = "swr λ="  # An entry of --swr's further values: "swr λ=0.01".


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
    "versions": cli.versions(),
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
  setup = methods_lib.TrainingSetup(
    layers,
    head,
    lr,
    lr_boundaries=boundaries,
    redo_every=settings.redo_every,
  )
  method = methods_lib.build(method_name, coefs, setup)
  engine = engine_lib.Engine(module, method.tx, layers, method.step_hook)
  num_classes = int(pool.y.max()) + 1
  variables = variables_per_seed(settings, pool, num_classes)
  state = engine.init(variables)
  initial = engine_lib.stack([v["params"] for v in variables])
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
    if number and method.at_task_switch is not None:
      fresh = variables_per_seed(
        settings, pool, num_classes, 1000 * (number + 1)
      )
      state = engine_lib.intervene(
        method.at_task_switch,
        state,
        initial,
        engine_lib.stack([v["params"] for v in fresh]),
      )
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
