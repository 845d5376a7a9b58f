"""What the Linen and NNX training loops share: flags, optimizer, history.

``examples/train/linen.py`` and ``examples/train/nnx.py`` train a model of the
zoo on the digits of ``examples/data.py`` with Adam followed by
``optax_swr.swr``; this module holds their configuration (a frozen dataclass,
filled from the command line), the optimizer with its learning-rate schedule,
the metrics of a batch, and the per-epoch history with its progress bar.

The learning rate drops to a tenth at 50% and at 75% of the steps; SWR's
reference norms are reset to the current weight norms at the same steps
("SWR + re-init", Appendix E of the paper): without the reset, the decayed
learning rate no longer balances the rescaling and the weights shrink back to
their initial norms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from examples import cli
from examples import data
from examples.models import shapes
import optax_swr
from optax_swr import metrics

Metrics = dict[str, jax.Array]  # Scalars of one batch: "loss", "accuracy".

DECAY_AT = (0.5, 0.75)  # Fractions of the training steps.
DECAY_FACTOR = 0.1


@dataclasses.dataclass(frozen=True)
class Config:
  """The hyperparameters of one training run; the flags have the same names.

  Attributes:
    model: a name of the zoo (``shapes.ALL_MODELS``).
    epochs: passes over the training set.
    batch_size: examples per step; a last partial batch is dropped.
    lr: Adam's initial learning rate.
    coef: SWR's coefficient for every layer (the paper's lambda_f).
    classifier_coef: SWR's coefficient for the last layer (lambda_c); None
      uses ``coef`` everywhere.
    width: the model's width (see ``shapes.model_kwargs``); None for the
      paper's sizes.
    seed: seed of the initialisation and of the batch order; the train/test
      split is fixed.
    swr: False trains with Adam alone, the baseline.
    progress: whether to show a progress bar (off in tests).
  """

  model: str = "cnn_bn"
  epochs: int = 10
  batch_size: int = 64
  lr: float = 1e-3
  coef: float = 1e-3
  classifier_coef: float | None = None
  width: int | None = None
  seed: int = 0
  swr: bool = True
  progress: bool = True


def parse_config(argv: Sequence[str] | None, description: str) -> Config:
  """Parses the command-line flags into a ``Config``."""
  parser = cli.parser(description)
  parser.add_argument(
    "--model", default=Config.model, choices=shapes.ALL_MODELS
  )
  parser.add_argument("--epochs", type=int, default=Config.epochs)
  parser.add_argument("--batch-size", type=int, default=Config.batch_size)
  parser.add_argument("--lr", type=float, default=Config.lr, help="Adam.")
  parser.add_argument(
    "--coef", type=float, default=Config.coef, help="SWR's lambda_f."
  )
  parser.add_argument(
    "--classifier-coef",
    type=float,
    default=None,
    help="SWR's lambda_c for the last layer (default: --coef).",
  )
  parser.add_argument(
    "--width", type=int, default=None, help="default: the paper's sizes."
  )
  parser.add_argument("--seed", type=int, default=Config.seed)
  parser.add_argument(
    "--no-swr", dest="swr", action="store_false", help="Adam alone."
  )
  parser.add_argument("--no-progress", dest="progress", action="store_false")
  return Config(**vars(parser.parse_args(argv)))


def decay_steps(config: Config, dataset: data.Dataset) -> tuple[int, ...]:
  """The steps at which the learning rate drops and SWR's targets reset."""
  steps = config.epochs * (len(dataset.x_train) // config.batch_size)
  return tuple(sorted({int(fraction * steps) for fraction in DECAY_AT}))


def make_optimizer(
  config: Config, dataset: data.Dataset, layers: Sequence[tuple[Any, ...]]
) -> optax.GradientTransformation:
  """Adam on a step schedule, then SWR over ``layers`` unless ``--no-swr``.

  Args:
    config: the run's hyperparameters.
    dataset: the training data, which sets the number of steps.
    layers: the layer paths in forward order, from
      ``optax_swr.layers_from_linen`` or ``optax_swr.layers_from_nnx``.
  """
  boundaries = decay_steps(config, dataset)
  schedule = optax.piecewise_constant_schedule(
    config.lr, {step: DECAY_FACTOR for step in boundaries}
  )
  if not config.swr:
    return optax.adam(schedule)
  rescale = optax_swr.swr(
    config.coef,
    layers=layers,
    classifier=None if config.classifier_coef is None else 1,
    classifier_coef=config.classifier_coef,
    reset_norms_at=boundaries,
  )
  return optax.chain(optax.adam(schedule), rescale)


def has_swr(opt_state: Any) -> bool:
  """Whether ``opt_state`` holds an SWR state (static under ``jit``)."""
  return optax.tree.get(opt_state, "input_scales") is not None


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The share of examples whose largest logit is the label's."""
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def batch_metrics(logits: jax.Array, labels: jax.Array) -> Metrics:
  """Mean cross-entropy and accuracy of a batch; "loss" is what is trained."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return {"loss": loss.mean(), "accuracy": accuracy(logits, labels)}


class History:
  """The per-epoch metrics of a run, shown on a progress bar as they come.

  ``epochs`` drives the loop; the training loop reports each step's metrics
  with ``add_step`` and ends each epoch with ``end_epoch``.
  """

  def __init__(self, config: Config, layers: Sequence[tuple[Any, ...]]):
    self.config = config
    self.layers = tuple(layers)
    self.rng = np.random.default_rng(config.seed)
    self.steps: list[Metrics] = []
    self.bar: tqdm.tqdm | None = None
    self.records: dict[str, list[Any]] = {
      "train_loss": [],
      "train_accuracy": [],
      "test_accuracy": [],
      "weight_norms": [],
      "reference_norms": [],
    }

  def epochs(self, dataset: data.Dataset) -> Iterator[Iterator[data.Batch]]:
    """Yields each epoch's shuffled training batches."""
    self.bar = tqdm.trange(
      self.config.epochs, desc="epochs", disable=not self.config.progress
    )
    for _ in self.bar:
      yield data.batches(
        dataset.x_train, dataset.y_train, self.config.batch_size, self.rng
      )
    self.bar.close()

  def add_step(self, metrics: Metrics) -> None:
    """Keeps one training step's metrics (on device, so it does not block)."""
    self.steps.append(metrics)

  def end_epoch(
    self, test_accuracy: jax.Array | float, opt_state: Any, params: Any
  ) -> None:
    """Records the epoch's means, test accuracy and norms.

    Args:
      test_accuracy: the accuracy on the test set, in eval mode.
      opt_state: the optimizer state; with SWR it holds the weight and
        reference norms.
      params: the params, for the weight norms of the baseline.
    """
    steps = jax.device_get(self.steps)
    self.steps = []
    weight_norms = optax.tree.get(opt_state, "weight_norms")
    reference_norms = optax.tree.get(opt_state, "reference_norms")
    record = self.records
    record["train_loss"].append(float(np.mean([m["loss"] for m in steps])))
    record["train_accuracy"].append(
      float(np.mean([m["accuracy"] for m in steps]))
    )
    record["test_accuracy"].append(float(test_accuracy))
    record["weight_norms"].append(
      np.asarray(metrics.layer_norms(params, self.layers))
      if weight_norms is None
      else np.asarray(weight_norms)
    )
    record["reference_norms"].append(
      None if reference_norms is None else np.asarray(reference_norms)
    )
    self.bar.set_postfix(
      {  # A dict keeps this order; keywords get sorted.
        "loss": f"{record['train_loss'][-1]:.4f}",
        "train_acc": f"{record['train_accuracy'][-1]:.4f}",
        "test_acc": f"{record['test_accuracy'][-1]:.4f}",
      }
    )

  def as_dict(self) -> dict[str, list[Any]]:
    """One list per metric, one entry per epoch.

    ``train_loss`` and ``train_accuracy`` are means over the epoch's steps
    (training mode); ``test_accuracy`` is measured in eval mode after the
    epoch; ``weight_norms`` are the Frobenius norms of the layers' weights in
    forward order; ``reference_norms`` SWR's targets (None without SWR).
    """
    return {name: list(values) for name, values in self.records.items()}


def main(
  train_and_evaluate: Callable[[Config], dict[str, list[Any]]],
  argv: Sequence[str] | None,
  description: str,
) -> None:
  """Parses the flags, trains, and prints the history epoch by epoch."""
  config = parse_config(argv, description)
  start = time.perf_counter()
  history = train_and_evaluate(config)
  seconds = time.perf_counter() - start
  method = f"SWR coef {config.coef:g}" if config.swr else "Adam alone"
  print(f"{config.model} on digits, {method}, {jax.devices()[0].platform}:")
  print("epoch  train loss  train acc  test acc  sum ||W_l||")
  for epoch, (loss, train_acc, test_acc, norms) in enumerate(
    zip(
      history["train_loss"],
      history["train_accuracy"],
      history["test_accuracy"],
      history["weight_norms"],
    ),
    start=1,
  ):
    print(
      f"{epoch:5d}  {loss:10.4f}  {train_acc:9.4f}  {test_acc:8.4f}"
      f"  {norms.sum():11.2f}"
    )
  print(f"Wall time {seconds:.1f} s, compilation included.")
