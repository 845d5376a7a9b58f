"""Trains a small Equinox CNN on scikit-learn's 8x8 digits with Adam and SWR.

What it shows: SWR on an Equinox model. ``optax_swr.layers_from_equinox``
traces the order in which the model calls its layers (the model declares
its classifier first, so the field order is not the forward order, and the
names ``conv1``, ``conv2``, ``dense``, ``head`` do not give one either); the
params are ``eqx.filter(model, eqx.is_inexact_array)``; one
``eqx.filter_jit`` step applies ``optax.chain(optax.adam(lr),
optax_swr.swr(coef, layers=layers))`` with ``eqx.apply_updates``. Every epoch
prints the training loss, the training and test accuracy and each layer's
weight norm, named with ``optax_swr.by_layer``: with SWR the norms level
off within a few epochs, with ``--no-swr`` (plain Adam) they keep growing.

Run it as a module from the repository root (as a script, this file's name
would shadow the ``equinox`` package)::

  python -m examples.train.equinox
  python -m examples.train.equinox --no-swr
  python -m examples.train.equinox --epochs 20 --coef 1e-1 --seed 1
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import cli
from examples import data
import optax_swr
from optax_swr import metrics

LEARNING_RATE = 1e-2
BATCH_SIZE = 32
WIDTH = 8


class CNN(eqx.Module):
  """Two conv-ReLU-max-pool blocks, a hidden dense layer and a classifier.

  Takes one image, channels first (``[1, 8, 8]``), as Equinox layers do;
  ``jax.vmap`` it over a batch. A chain of layers joined by ReLU and max
  pooling, so an SWR step scales its logits by one constant (Theorem 1).
  """

  head: eqx.nn.Linear  # Declared first, called last.
  conv1: eqx.nn.Conv2d
  conv2: eqx.nn.Conv2d
  dense: eqx.nn.Linear
  pool: eqx.nn.MaxPool2d

  def __init__(self, num_classes: int, width: int, key: jax.Array):
    head_key, conv1_key, conv2_key, dense_key = jax.random.split(key, 4)
    self.conv1 = eqx.nn.Conv2d(1, width, 3, padding=1, key=conv1_key)
    self.conv2 = eqx.nn.Conv2d(width, 2 * width, 3, padding=1, key=conv2_key)
    self.pool = eqx.nn.MaxPool2d(2, 2)
    # Two 2x2 poolings take 8x8 images to 2x2.
    self.dense = eqx.nn.Linear(2 * width * 2 * 2, 8 * width, key=dense_key)
    self.head = eqx.nn.Linear(8 * width, num_classes, key=head_key)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.pool(jax.nn.relu(self.conv1(x)))  # [width, 4, 4]
    x = self.pool(jax.nn.relu(self.conv2(x)))  # [2 * width, 2, 2]
    x = jax.nn.relu(self.dense(x.reshape(-1)))
    return self.head(x)


def batch_loss(
  model: CNN, images: jax.Array, labels: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Mean cross-entropy of a batch, and its accuracy as the auxiliary."""
  logits = jax.vmap(model)(images)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return loss.mean(), accuracy_of(logits, labels)


def accuracy_of(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def make_train_step(tx: optax.GradientTransformation):
  """One jitted step of ``tx``, compiled once for every batch of one shape.

  The step maps ``(model, opt_state, images, labels)`` to ``(model,
  opt_state, loss, accuracy)``.
  """

  @eqx.filter_jit
  def train_step(model, opt_state, images, labels):
    (loss, accuracy), grads = eqx.filter_value_and_grad(
      batch_loss, has_aux=True
    )(model, images, labels)
    # SWR reads the params: the model's float arrays, as grads has them.
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = tx.update(grads, opt_state, params)
    return eqx.apply_updates(model, updates), opt_state, loss, accuracy

  return train_step


@eqx.filter_jit
def evaluate(model: CNN, images: jax.Array, labels: jax.Array):
  return accuracy_of(jax.vmap(model)(images), labels)


def weight_norms(
  model: CNN, layers: tuple[optax_swr.Layer, ...]
) -> dict[str, float]:
  """Each layer's weight norm, by layer name (what SWR keeps bounded)."""
  norms = optax_swr.by_layer(_layer_norms(model, layers), layers)
  return {name: float(norm) for name, norm in norms.items()}


@eqx.filter_jit  # `layers` is static: a tuple of Layer values.
def _layer_norms(model: CNN, layers: tuple[optax_swr.Layer, ...]):
  return metrics.layer_norms(eqx.filter(model, eqx.is_inexact_array), layers)


def format_norms(norms: dict[str, float]) -> str:
  return " ".join(f"{name} {norm:.3f}" for name, norm in norms.items())


def channels_first(images: np.ndarray) -> np.ndarray:
  """``[N, H, W, C]`` (what ``examples.data`` loads) to ``[N, C, H, W]``."""
  return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m examples.train.equinox",
    description=__doc__.split("\n\n")[0],
    formatter_class=cli.DefaultsHelpFormatter,
  )
  parser.add_argument(
    "--epochs", type=int, default=10, help="(default: %(default)d)"
  )
  parser.add_argument(
    "--coef",
    type=float,
    default=1e-2,
    help="SWR's coefficient lambda in [0, 1] (default: %(default)g)",
  )
  parser.add_argument(
    "--no-swr", action="store_true", help="train with plain Adam"
  )
  parser.add_argument(
    "--seed",
    type=int,
    default=0,
    help="seed of the initialization, the train/test split and the batch "
    "order (default: %(default)d)",
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, list[Any]]:
  """Trains and prints one line per epoch; returns the per-epoch history.

  Returns:
    ``loss``, ``train_accuracy`` (both averaged over the epoch's batches),
    ``test_accuracy`` and ``weight_norms`` (a dict from layer name to the
    Frobenius norm of its weight) after each epoch.
  """
  args = parse_args(argv)
  dataset = data.load_digits(seed=args.seed)
  x_train = channels_first(dataset.x_train)
  x_test = channels_first(dataset.x_test)
  model = CNN(dataset.num_classes, WIDTH, jax.random.key(args.seed))

  # One example: the model takes one image; the trace costs no FLOPs.
  layers = optax_swr.layers_from_equinox(model, x_train[0])
  print("layers in forward order:", ", ".join(layer.name for layer in layers))
  print("initial weight norms:", format_norms(weight_norms(model, layers)))
  tx = optax.adam(LEARNING_RATE)
  if not args.no_swr:
    tx = optax.chain(tx, optax_swr.swr(args.coef, layers=layers))
  opt_state = tx.init(eqx.filter(model, eqx.is_inexact_array))
  train_step = make_train_step(tx)

  history: dict[str, list[Any]] = {
    "loss": [],
    "train_accuracy": [],
    "test_accuracy": [],
    "weight_norms": [],
  }
  rng = np.random.default_rng(args.seed)
  start = time.perf_counter()
  for epoch in range(1, args.epochs + 1):
    losses, accuracies = [], []
    for images, labels in data.batches(
      x_train, dataset.y_train, BATCH_SIZE, rng
    ):
      model, opt_state, loss, accuracy = train_step(
        model, opt_state, images, labels
      )
      losses.append(loss)
      accuracies.append(accuracy)
    history["loss"].append(float(np.mean(losses)))
    history["train_accuracy"].append(float(np.mean(accuracies)))
    history["test_accuracy"].append(
      float(evaluate(model, x_test, dataset.y_test))
    )
    history["weight_norms"].append(weight_norms(model, layers))
    print(
      f"epoch {epoch:3d}  loss {history['loss'][-1]:.4f}  "
      f"train {history['train_accuracy'][-1]:.3f}  "
      f"test {history['test_accuracy'][-1]:.3f}  "
      f"norms {format_norms(history['weight_norms'][-1])}"
    )
  method = "Adam" if args.no_swr else f"Adam + SWR (coef {args.coef:g})"
  print(f"{method}: {time.perf_counter() - start:.1f} s")
  return history


if __name__ == "__main__":
  main()
