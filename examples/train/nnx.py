"""Trains an NNX model of the zoo on digits with Adam and SWR.

The Flax NNX twin of ``linen.py``, with the same flags and results
format: ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` updates the model in
place inside an ``nnx.jit`` step, which then calls
``optax_swr.sync_nnx_batch_stats`` so that the BatchNorm running statistics
follow SWR's rescaling; ``model.train()`` / ``model.eval()`` switch BatchNorm
between batch and running statistics. Try, from the repository root::

  python -m examples.train.nnx --model cnn --epochs 20
  python -m examples.train.nnx --coef 1e-4 --classifier-coef 1
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

from flax import nnx
import jax

from examples import data
from examples.models import nnx as models_nnx
from examples.train import common
import optax_swr


@functools.partial(nnx.jit, static_argnames="layers")
def train_step(
  model: nnx.Module,
  optimizer: nnx.Optimizer,
  batch: data.Batch,
  layers: tuple[optax_swr.Layer, ...],
) -> common.Metrics:
  """One step of Adam and SWR; BatchNorm statistics follow the rescaling.

  Updates ``model`` (params and BatchNorm statistics) and ``optimizer`` in
  place, and returns the batch's metrics. ``layers`` are SWR's layers, which
  the BatchNorm statistics follow.
  """
  images, labels = batch

  def loss_fn(model):
    metrics = common.batch_metrics(model(images), labels)
    return metrics["loss"], metrics

  grads, metrics = nnx.grad(loss_fn, has_aux=True)(model)
  optimizer.update(model, grads)
  if common.has_swr(optimizer.opt_state):
    # SWR scaled the layers feeding each BatchNorm; scale its statistics too.
    optax_swr.sync_nnx_batch_stats(model, optimizer.opt_state, layers)
  return metrics


@nnx.jit
def eval_step(model: nnx.Module, images: jax.Array, labels: jax.Array):
  """Accuracy of ``model`` in its current mode (call ``model.eval()``)."""
  return common.accuracy(model(images), labels)


def train_and_evaluate(config: common.Config) -> dict[str, list[Any]]:
  """Trains ``config.model`` on digits; returns the per-epoch history.

  See ``common.History.as_dict`` for what the history holds.
  """
  dataset = data.load_digits()
  model = models_nnx.create(
    config.model,
    dataset.num_classes,
    dataset.x_train.shape[1:],
    width=config.width,
    seed=config.seed,
  )
  layers = optax_swr.layers_from_nnx(model, dataset.x_train[:1])
  tx = common.make_optimizer(config, dataset, layers)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  history = common.History(config, layers)
  for batches in history.epochs(dataset):
    model.train()  # BatchNorm: batch statistics, running averages updated.
    for batch in batches:
      history.add_step(train_step(model, optimizer, batch, layers))
    model.eval()  # BatchNorm: the running averages.
    test_accuracy = eval_step(model, dataset.x_test, dataset.y_test)
    params = nnx.state(model, nnx.Param)
    history.end_epoch(test_accuracy, optimizer.opt_state, params)
  return history.as_dict()


def main(argv: Sequence[str] | None = None) -> None:
  common.main(train_and_evaluate, argv, __doc__.split("\n")[0])


if __name__ == "__main__":
  main()
