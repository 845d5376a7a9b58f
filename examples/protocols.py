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
import json
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
from examples import models_linen
from examples import training
import optax_swr
from optax_swr import baselines
from optax_swr import metrics

METHODS = ("vanilla", "l2", "l2_init", "snp", "head_reset", "swr", "swr_reinit")
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
EVAL_BATCH = 1000


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
    type=float,
    default=None,
    help="SWR's lambda_f (default: the paper's best)",
  )
  parser.add_argument(
    "--swr-classifier",
    type=float,
    default=None,
    help="SWR's lambda_c (default: the paper's best)",
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
  paper = PAPER_SWR_COEFS[swr_table].get(args.model, (1e-3, 1e-3))
  swr_coefs = (
    paper[0] if args.swr is None else args.swr,
    paper[1] if args.swr_classifier is None else args.swr_classifier,
  )
  coefs = {
    "l2": (args.l2,),
    "l2_init": (args.l2_init,),
    "snp": (args.snp,),
    "swr": swr_coefs,
    "swr_reinit": swr_coefs,
  }
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
    progress=args.progress,
    out=args.out,
    **extra,
  )


def load_data(settings: Settings) -> data.Dataset:
  """The data set named by ``--data``, cut to ``--max-train/--max-test``."""
  dataset = data.load(settings.data)
  return data.subset(dataset, settings.max_train, settings.max_test)


@dataclasses.dataclass
class Method:
  """A method's optimizer and what it does at a change of the data."""

  tx: optax.GradientTransformation
  on_data_change: Callable[[Any, Any], Any] | None = None  # (params, fresh)


def make_method(
  name: str,
  settings: Settings,
  layers: tuple[tuple[Any, ...], ...],
  lr: optax.ScalarOrSchedule,
  lr_boundaries: Sequence[int],
) -> Method:
  """Builds one method of ``METHODS`` for the given layers."""
  adam = optax.adam(lr)
  coefs = settings.coefs.get(name, ())
  head = layers[-CLASSIFIER_LAYERS[settings.model] :]
  if name == "vanilla":
    return Method(adam)
  if name == "l2":
    return Method(optax.chain(baselines.l2(coefs[0]), adam))
  if name == "l2_init":
    return Method(optax.chain(baselines.l2_init(coefs[0]), adam))
  if name == "snp":
    return Method(
      adam, lambda p, fresh: baselines.shrink_perturb(p, fresh, coefs[0])
    )
  if name == "head_reset":
    return Method(adam, lambda p, fresh: baselines.reset_layers(p, fresh, head))
  rescale = optax_swr.swr(
    coefs[0],
    layers=layers,
    classifier=len(head),
    classifier_coef=coefs[1],
    reset_norms_at=tuple(lr_boundaries) if name == "swr_reinit" else (),
  )
  return Method(optax.chain(adam, rescale))


class Run:
  """One method, one seed: the model's state and its training loop."""

  def __init__(self, variables, method: Method, step, logits, layers, balanced):
    self.params = variables["params"]
    self.batch_stats = variables.get("batch_stats", {})
    self.method = method
    self.step = step  # jitted once per method, shared by the seeds
    self.logits = logits
    self.layers = layers
    self.balanced = balanced
    self.opt_state = method.tx.init(self.params)

  def train_epoch(
    self, x, y, batch_size: int, rng: np.random.Generator
  ) -> None:
    for images, labels in full_batches(x, y, batch_size, rng):
      self.params, self.batch_stats, self.opt_state = self.step(
        self.params, self.batch_stats, self.opt_state, images, labels
      )

  def data_change(self, fresh_params: Any) -> None:
    if self.method.on_data_change is not None:
      self.params = self.method.on_data_change(self.params, fresh_params)

  def test_accuracy(self, dataset: data.Dataset) -> float:
    variables = {"params": self.params, "batch_stats": self.batch_stats}
    correct = 0
    for start in range(0, len(dataset.x_test), EVAL_BATCH):
      logits = self.logits(
        variables, dataset.x_test[start : start + EVAL_BATCH]
      )
      correct += int(
        jnp.sum(
          jnp.argmax(logits, -1) == dataset.y_test[start : start + EVAL_BATCH]
        )
      )
    return correct / len(dataset.x_test)

  def norms(self) -> list[float]:
    return np.asarray(metrics.layer_norms(self.params, self.layers)).tolist()

  def balancedness(self) -> float | None:
    if not self.balanced:
      return None
    return float(metrics.balancedness(self.params, self.layers))


def full_batches(x, y, batch_size: int, rng: np.random.Generator):
  """One epoch of batches of one shape, so that each method compiles once.

  Every example comes once in a random order; the last batch is filled up
  with random examples of the same set (and a set smaller than a batch is
  repeated), so an epoch is ``ceil(len(x) / batch_size)`` steps.
  """
  steps = -(-len(x) // batch_size)
  order = rng.permutation(len(x))
  fill = rng.choice(len(x), steps * batch_size - len(x))
  order = np.concatenate([order, fill]).reshape(steps, batch_size)
  for index in order:
    yield x[index], y[index]


def _train_step(module, tx):
  """One jitted step; BatchNorm statistics follow an SWR step."""

  @jax.jit
  def step(params, batch_stats, opt_state, x, y):
    def loss_fn(params):
      logits, mutated = module.apply(
        {"params": params, "batch_stats": batch_stats},
        x,
        train=True,
        mutable=["batch_stats"],
      )
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, mutated.get("batch_stats", {})

    grads, new_stats = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    if new_stats and training.has_swr(opt_state):
      new_stats = optax_swr.sync_batch_stats(new_stats, opt_state)
    return optax.apply_updates(params, updates), new_stats, opt_state

  return step


def run_protocol(
  settings: Settings,
  dataset: data.Dataset,
  phases: Sequence[tuple[np.ndarray, np.ndarray]],
  lr_boundaries_at: Sequence[float] = (),
  extra_runs: dict[str, Sequence[tuple[np.ndarray, np.ndarray]]] | None = None,
) -> dict[str, Any]:
  """Trains every method for every seed through the phases.

  Args:
    settings: the run's settings.
    dataset: the data; its test set is evaluated after every epoch.
    phases: the training sets, in order; a data change precedes each phase
      after the first.
    lr_boundaries_at: fractions of the total steps where the learning rate
      drops to a tenth (and ``swr_reinit`` resets its reference norms).
    extra_runs: further entries trained with vanilla Adam on other phases,
      e.g. ``{"from_scratch": [full_data]}`` for the warm-start reference.

  Returns:
    ``{"config", "versions", "methods"}``, as documented in
    ``examples/README.md``.
  """
  in_shape = dataset.x_train.shape[1:]
  module, variables = models_linen.create(
    settings.model, dataset.num_classes, in_shape, width=settings.width
  )
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optax_swr.NotAChainWarning)
    layers = optax_swr.layers_from_linen(
      module, variables, dataset.x_train[:1], train=True
    )
  balanced = not _has_normalization(variables["params"], layers)
  entries = [(m, phases) for m in settings.methods]
  entries += [(name, p) for name, p in (extra_runs or {}).items()]
  bar = tqdm.tqdm(
    total=settings.seeds * sum(len(p) for _, p in entries) * settings.epochs,
    disable=not settings.progress,
    desc=settings.protocol,
    unit="epoch",
  )
  results = {}
  for name, entry_phases in entries:
    results[name] = _run_method(
      name,
      settings,
      dataset,
      entry_phases,
      module,
      layers,
      balanced,
      lr_boundaries_at,
      bar,
    )
  bar.close()
  return {
    "config": _config(settings, dataset, layers, lr_boundaries_at),
    "versions": versions(),
    "methods": results,
  }


def _has_normalization(params, layers) -> bool:
  """Balancedness is defined for chains without normalization layers."""
  for path in layers:
    node = params
    for key in path:
      node = node[key]
    if "scale" in node:
      return True
  return False


def _run_method(
  name,
  settings,
  dataset,
  phases,
  module,
  layers,
  balanced,
  lr_boundaries_at,
  bar,
) -> dict[str, Any]:
  method_name = name if name in METHODS else "vanilla"
  logits = jax.jit(lambda v, x: module.apply(v, x, train=False))
  steps_per_epoch = [-(-len(x) // settings.batch_size) for x, _ in phases]
  total_steps = settings.epochs * sum(steps_per_epoch)
  boundaries = sorted({int(f * total_steps) for f in lr_boundaries_at})
  lr = (
    optax.piecewise_constant_schedule(settings.lr, {b: 0.1 for b in boundaries})
    if boundaries
    else settings.lr
  )
  method = make_method(method_name, settings, layers, lr, boundaries)
  step = _train_step(module, method.tx)
  record = {
    key: []
    for key in (
      "test_acc",
      "final_test_acc",
      "weight_norms",
      "balancedness",
      "seconds",
    )
  }
  for seed in range(settings.seeds):
    start = time.perf_counter()
    _, variables = models_linen.create(
      settings.model,
      dataset.num_classes,
      dataset.x_train.shape[1:],
      width=settings.width,
      seed=seed,
    )
    run = Run(variables, method, step, logits, layers, balanced)
    rng = np.random.default_rng(seed)
    accuracies, norms, balance = [], [], []
    for phase, (x, y) in enumerate(phases):
      if phase:
        _, fresh = models_linen.create(
          settings.model,
          dataset.num_classes,
          dataset.x_train.shape[1:],
          width=settings.width,
          seed=1000 * (seed + 1) + phase,
        )
        run.data_change(fresh["params"])
      for _ in range(settings.epochs):
        run.train_epoch(x, y, settings.batch_size, rng)
        accuracies.append(run.test_accuracy(dataset))
        norms.append(run.norms())
        balance.append(run.balancedness())
        bar.set_postfix(
          method=name, seed=seed, test_acc=f"{accuracies[-1]:.4f}"
        )
        bar.update()
    record["test_acc"].append(accuracies)
    record["final_test_acc"].append(accuracies[-1])
    record["weight_norms"].append(norms)
    record["balancedness"].append(balance if balanced else None)
    record["seconds"].append(time.perf_counter() - start)
  record["hparams"] = {
    "method": method_name,
    "lr": settings.lr,
    "lr_boundaries": boundaries,
    "coefs": list(settings.coefs.get(method_name, ())),
  }
  return record


def _config(settings, dataset, layers, lr_boundaries_at) -> dict[str, Any]:
  config = dataclasses.asdict(settings)
  config.update(
    num_train=len(dataset.x_train),
    num_test=len(dataset.x_test),
    input_shape=list(dataset.x_train.shape[1:]),
    num_classes=dataset.num_classes,
    layers=["/".join(map(str, p)) for p in layers],
    lr_decay_at=list(lr_boundaries_at),
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


def finish(results: dict[str, Any], settings: Settings) -> None:
  """Writes the JSON (if ``--out``) and prints the final accuracies."""
  if settings.out:
    with open(settings.out, "w") as file:
      json.dump(results, file)
  print(
    f"\n{settings.protocol}: {settings.data}, {settings.model}, "
    f"{settings.epochs} epochs per phase, {settings.seeds} seeds"
  )
  print(f"{'method':12s} {'final test accuracy':>22s} {'sum ||W_l||':>12s}")
  for name, entry in results["methods"].items():
    final = np.array(entry["final_test_acc"])
    norm = np.mean([seed[-1] for seed in entry["weight_norms"]], axis=0).sum()
    print(f"{name:12s} {final.mean():14.4f} +- {final.std():.4f} {norm:12.2f}")
  if settings.out:
    print(f"results written to {settings.out}")
