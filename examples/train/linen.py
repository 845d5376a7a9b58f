"""Trains a Linen model of the zoo on digits with Adam and SWR.

The Flax Linen side of ``optax_swr``: a ``TrainState`` that also carries the
BatchNorm statistics, the layer order traced by ``optax_swr.layers_from_linen``
and, in the jitted step, ``optax_swr.sync_batch_stats``, which rescales the
running statistics as SWR rescales the layers before each BatchNorm. The step
itself comes from ``make_train_step``, which the paper's experiment engine
(``examples/paper/engine.py``) and the benchmarks (``benchmarks/train_step.py``)
use too. ``common.py`` holds what this loop shares with ``nnx.py``: the flags,
the optimizer (the learning rate drops to a tenth at 50% and 75% of the steps,
where SWR's reference norms are reset) and the history. From the repository
root::

  python -m examples.train.linen                 # CNN-BN, 10 epochs
  python -m examples.train.linen --no-swr        # the Adam baseline
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flax import struct
from flax.training import train_state
import jax
import optax

from examples import data
from examples.models import linen as models_linen
from examples.train import common
import optax_swr

# (params, batch_stats, opt_state, images, labels)
#   -> (params, batch_stats, opt_state, metrics)
Step = Callable[..., tuple[Any, Any, Any, common.Metrics]]


class TrainState(train_state.TrainState):
  """Flax's ``TrainState`` plus the BatchNorm running statistics."""

  batch_stats: Any  # {} for models without BatchNorm.
  layers: Any = struct.field(pytree_node=False, default=None)  # SWR's layers


def create_train_state(
  config: common.Config, dataset: data.Dataset
) -> tuple[TrainState, tuple[tuple[Any, ...], ...]]:
  """Builds the model, its layer order and the optimizer.

  Returns:
    The initial state and the layer paths in forward order.
  """
  module, variables = models_linen.create(
    config.model,
    dataset.num_classes,
    dataset.x_train.shape[1:],
    width=config.width,
    seed=config.seed,
  )
  layers = optax_swr.layers_from_linen(
    module, variables, dataset.x_train[:1], train=True
  )
  state = TrainState.create(
    apply_fn=module.apply,
    params=variables["params"],
    batch_stats=variables.get("batch_stats", {}),
    layers=layers,
    tx=common.make_optimizer(config, dataset, layers),
  )
  return state, layers


def make_train_step(
  apply_fn: Callable[..., Any],
  tx: optax.GradientTransformation,
  layers: Sequence[optax_swr.Layer] | None = None,
  deferred: bool = False,
) -> Step:
  """The Linen training step of the examples, not jitted.

  ``step(params, batch_stats, opt_state, images, labels)`` runs the model in
  training mode, takes the gradient of the mean cross-entropy, applies ``tx``
  and, when ``tx`` holds SWR, rescales the BatchNorm running statistics as SWR
  rescaled the layers feeding them (``optax_swr.sync_batch_stats``). It
  returns the new ``params``, ``batch_stats`` and ``opt_state`` and the
  batch's metrics (``common.batch_metrics`` of the logits before the update).

  This file's ``train_step``, the paper's experiment engine
  (``examples/paper/engine.py``) and ``benchmarks/train_step.py`` all take
  this step; jit it (or put it in a loop) where it is used.

  Args:
    apply_fn: the model's ``apply``, called with ``train=True`` and
      ``mutable=["batch_stats"]`` (``batch_stats`` is ``{}`` without
      BatchNorm).
    tx: the optimizer, e.g. Adam followed by ``optax_swr.swr``.
    layers: the layers ``tx``'s SWR rescales, which ``sync_batch_stats``
      needs for a model with BatchNorm.
    deferred: ``tx``'s SWR is ``swr(..., deferred=True)``: the step ends
      with ``optax_swr.rescale_params`` (the fast step).
  """

  def step(params, batch_stats, opt_state, images, labels):
    def loss_fn(params):
      logits, updates = apply_fn(
        {"params": params, "batch_stats": batch_stats},
        images,
        train=True,
        mutable=["batch_stats"],
      )
      metrics = common.batch_metrics(logits, labels)
      return metrics["loss"], (metrics, updates.get("batch_stats", {}))

    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    if deferred:
      new_params, opt_state = optax_swr.rescale_params(new_params, opt_state)
    if batch_stats and common.has_swr(opt_state):
      # SWR scaled the layers feeding each BatchNorm; scale its statistics too.
      batch_stats = optax_swr.sync_batch_stats(batch_stats, opt_state, layers)
    return new_params, batch_stats, opt_state, metrics

  return step


@jax.jit
def train_step(
  state: TrainState, batch: data.Batch
) -> tuple[TrainState, common.Metrics]:
  """One step of Adam and SWR; BatchNorm statistics follow the rescaling."""
  step = make_train_step(state.apply_fn, state.tx, state.layers)
  params, batch_stats, opt_state, metrics = step(
    state.params, state.batch_stats, state.opt_state, *batch
  )
  state = state.replace(
    step=state.step + 1,
    params=params,
    batch_stats=batch_stats,
    opt_state=opt_state,
  )
  return state, metrics


@jax.jit
def eval_step(state: TrainState, images: jax.Array, labels: jax.Array):
  """Test accuracy with BatchNorm's running statistics (eval mode)."""
  logits = state.apply_fn(
    {"params": state.params, "batch_stats": state.batch_stats},
    images,
    train=False,
  )
  return common.accuracy(logits, labels)


def train_and_evaluate(config: common.Config) -> dict[str, list[Any]]:
  """Trains ``config.model`` on digits; returns the per-epoch history.

  See ``common.History.as_dict`` for what the history holds.
  """
  dataset = data.load_digits()
  state, layers = create_train_state(config, dataset)
  history = common.History(config, layers)
  for batches in history.epochs(dataset):
    for batch in batches:
      state, metrics = train_step(state, batch)
      history.add_step(metrics)
    test_accuracy = eval_step(state, dataset.x_test, dataset.y_test)
    history.end_epoch(test_accuracy, state.opt_state, state.params)
  return history.as_dict()


def main(argv: Sequence[str] | None = None) -> None:
  common.main(train_and_evaluate, argv, __doc__.split("\n")[0])


if __name__ == "__main__":
  main()
