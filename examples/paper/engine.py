"""The experiment engine: whole epochs as one jitted loop, seeds side by side.

The protocols train many short runs of small models, where a Python loop that
dispatches one jitted step per batch, slices batches on the host and computes
each epoch's metrics op by op spends much of its time outside the training
steps. Here a run's data lives on the device, the batch order is an index
array drawn on the host, and an epoch (or a task) is one jitted
``lax.fori_loop`` of training steps; the seeds of one method run side by side
as lanes of a ``jax.vmap``, and the metrics of all lanes are one jitted call.

Every array of a lane-stacked :class:`TrainState` has a leading seed axis.
The inputs are one array shared by the lanes (a pool of examples); which
examples a lane trains and tests on is an index array per lane (so a
train/test split can be drawn per seed), and labels are per lane (so random
labels can be drawn per seed).

``benchmarks/experiment_engine.py`` measures the steps per second of this
engine against the step-by-step loop; ``tests/test_engine.py`` checks that
both give the same parameters.

Example::

  engine = Engine(module, tx)
  state = engine.init([variables_seed0, variables_seed1])
  state, online_acc = engine.train(state, x, labels, batch_index)
  test_acc = engine.accuracy(state, x, labels, test_index)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent import futures
import functools
import multiprocessing
import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples.train import linen as train_linen

EVAL_CHUNK = 1000  # Examples per forward pass when evaluating.


class TrainState(NamedTuple):
  """What a training step reads and writes.

  Attributes:
    params: the model's params.
    batch_stats: BatchNorm running statistics (``{}`` without BatchNorm).
    opt_state: the optimizer's state.
  """

  params: Any
  batch_stats: Any
  opt_state: Any


Step = Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, Any]]


def make_step(
  module: nn.Module,
  tx: optax.GradientTransformation,
  layers: Sequence[Any] | None = None,
) -> Step:
  """One training step on a batch; returns the new state and batch accuracy.

  The step of ``examples/train/linen.py`` (``make_train_step``) on a
  :class:`TrainState`: the accuracy is that of the batch's logits before the
  update (training mode); BatchNorm statistics follow an SWR step
  (``sync_batch_stats``).
  """
  train_step = train_linen.make_train_step(module.apply, tx, layers)

  def step(state: TrainState, x: jax.Array, y: jax.Array):
    *state, metrics = train_step(*state, x, y)
    return TrainState(*state), metrics["accuracy"]

  return step


def train_steps(
  step: Step,
  state: TrainState,
  x: jax.Array,
  y: jax.Array,
  batch_index: jax.Array,
  num_steps: jax.Array,
) -> tuple[TrainState, jax.Array]:
  """Runs ``num_steps`` steps, step t on ``x[batch_index[t]]``, in one loop.

  Args:
    step: from :func:`make_step`.
    state: one lane's state.
    x: the inputs the batches index.
    y: their labels.
    batch_index: int32 ``[max_steps, batch]``; rows past ``num_steps`` are
      not used, so runs of different lengths share one compilation.
    num_steps: how many rows to train on (a traced int).

  Returns:
    The new state and the mean batch accuracy over the steps (the online
    training accuracy; 0 when no step ran).
  """

  def body(t, carry):
    state, correct = carry
    index = batch_index[t]
    state, accuracy = step(state, x[index], y[index])
    return state, correct + accuracy

  state, correct = jax.lax.fori_loop(
    0, num_steps, body, (state, jnp.zeros((), jnp.float32))
  )
  return state, correct / jnp.maximum(num_steps, 1)


def stack(trees: Sequence[Any]) -> Any:
  """Stacks same-shaped trees along a new leading (lane) axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def lane(tree: Any, index: int) -> Any:
  """One lane of a lane-stacked tree."""
  return jax.tree.map(lambda leaf: leaf[index], tree)


def epoch_order(
  rng: np.random.Generator, num_examples: int, batch_size: int, steps: int
) -> np.ndarray:
  """``steps`` batches of indices that go through the examples epoch by epoch.

  Each pass over the examples is a fresh random permutation; passes are
  concatenated and cut into batches, so a batch may straddle two passes and
  every example is seen equally often (to within one pass).
  """
  passes = -(-steps * batch_size // num_examples)
  order = np.concatenate([rng.permutation(num_examples) for _ in range(passes)])
  return order[: steps * batch_size].reshape(steps, batch_size)


class Engine:
  """Trains and evaluates one model and optimizer over lanes of seeds.

  Args:
    module: a Linen model of ``examples/models/linen.py`` (called with
      ``train=``).
    tx: the optimizer.
    layers: the layers ``tx``'s SWR rescales (needed with BatchNorm, whose
      statistics follow them).
  """

  def __init__(
    self,
    module: nn.Module,
    tx: optax.GradientTransformation,
    layers: Sequence[Any] | None = None,
  ):
    self.module = module
    self.tx = tx
    self.step = jax.jit(make_step(module, tx, layers))  # one lane, one batch
    run = lambda *args: train_steps(make_step(module, tx, layers), *args)
    self._train = jax.jit(
      jax.vmap(run, in_axes=(0, None, 0, 0, 0)), donate_argnums=0
    )
    self._accuracy = _accuracy_fn(module)
    self._features = _features_fn(module)

  def init(self, variables: Sequence[dict[str, Any]]) -> TrainState:
    """The lane-stacked state of one initialisation per seed."""
    states = [
      TrainState(
        v["params"], v.get("batch_stats", {}), self.tx.init(v["params"])
      )
      for v in variables
    ]
    return stack(states)

  def train(
    self,
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
    batch_index: np.ndarray,
    num_steps: np.ndarray | None = None,
  ) -> tuple[TrainState, np.ndarray]:
    """Trains every lane on its batches in one jitted call.

    The state is donated: use the returned one.

    Args:
      state: lane-stacked, ``L`` lanes.
      x: inputs ``[N, ...]``, shared by the lanes (on the device).
      y: labels ``[L, N]``, each lane's.
      batch_index: ``[L, steps, batch]`` indices into ``x``.
      num_steps: ``[L]`` steps to run per lane (default: all rows); a lane
        with 0 is left as it is.

    Returns:
      The new state and each lane's mean batch accuracy, ``[L]``.
    """
    lanes, steps = batch_index.shape[:2]
    if num_steps is None:
      num_steps = np.full(lanes, steps)
    state, online = self._train(
      state,
      x,
      y,
      jnp.asarray(batch_index, jnp.int32),
      jnp.asarray(num_steps, jnp.int32),
    )
    return state, np.asarray(online)

  def accuracy(
    self, state: TrainState, x: jax.Array, y: jax.Array, index: np.ndarray
  ) -> np.ndarray:
    """Each lane's accuracy (eval mode) on its examples ``index`` ``[L, n]``."""
    index = np.asarray(index)
    chunks, weights = _chunked(index)
    correct = self._accuracy(
      state, x, y, jnp.asarray(chunks), jnp.asarray(weights)
    )
    return np.asarray(correct, np.float64) / index.shape[1]

  def features(
    self, state: TrainState, x: jax.Array, index: np.ndarray
  ) -> list[jax.Array]:
    """Each lane's hidden activations on its examples ``index`` ``[L, n]``.

    The inputs of every Dense/Conv layer after the first, in forward order:
    for the paper's chain models, the post-ReLU (and pooled) activations of
    each hidden layer; the last is the penultimate feature matrix.
    """
    return self._features(state, x, jnp.asarray(index))


def _variables(state: TrainState) -> dict[str, Any]:
  return {"params": state.params, "batch_stats": state.batch_stats}


# Evaluation does not depend on the optimizer: every method of a protocol
# shares one compilation per model.
@functools.cache
def _accuracy_fn(module: nn.Module) -> Callable:
  def lane_accuracy(state, x, y, chunks, weights):
    def correct(index):
      logits = module.apply(_variables(state), x[index], train=False)
      return jnp.argmax(logits, -1) == y[index]

    hits = jax.lax.map(correct, chunks)
    return jnp.sum(jnp.where(weights > 0, hits, False))

  return jax.jit(jax.vmap(lane_accuracy, in_axes=(0, None, 0, 0, 0)))


@functools.cache
def _features_fn(module: nn.Module) -> Callable:
  def lane_features(state, x, index):
    inputs = []

    def record(next_fun, args, kwargs, context):
      if context.method_name == "__call__" and isinstance(
        context.module, (nn.Dense, nn.Conv)
      ):
        inputs.append(args[0])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
      module.apply(_variables(state), x[index], train=False)
    return inputs[1:]

  return jax.jit(jax.vmap(lane_features, in_axes=(0, None, 0)))


def _chunked(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``[L, n]`` indices as ``[L, chunks, EVAL_CHUNK]`` plus 0/1 weights
  (1 for a real example, 0 for padding).

  Whole chunks only, so that sets of different sizes share compilations.
  """
  lanes, n = index.shape
  size = EVAL_CHUNK
  padded = -(-n // size) * size
  chunks = np.zeros((lanes, padded), np.int32)
  chunks[:, :n] = index
  weights = np.zeros((lanes, padded), np.float32)
  weights[:, :n] = 1.0
  return chunks.reshape(lanes, -1, size), weights.reshape(lanes, -1, size)


def default_workers(jobs: int) -> int:
  """One worker per CPU core (at most one per job) when JAX runs on the CPU;
  1 on a GPU or TPU, whose memory one process takes."""
  if jax.default_backend() != "cpu":
    return 1
  return max(1, min(len(os.sched_getaffinity(0)), jobs))


def run_jobs(
  function: Callable[..., Any],
  jobs: Sequence[tuple[Any, ...]],
  workers: int | None = 1,
  on_done: Callable[[], None] | None = None,
) -> list[Any]:
  """``[function(*job) for job in jobs]``, in worker processes if asked.

  Small models leave a CPU's cores half idle in one process; with
  ``workers > 1`` the jobs run in that many fresh processes, each pinned to
  its own core with single-threaded XLA, and their results come back in the
  order of ``jobs``.

  Args:
    function: a module-level function (it is pickled to the workers).
    jobs: the argument tuples.
    workers: how many processes; 1 runs the jobs here, one after another;
      None: :func:`default_workers`.
    on_done: called after each job, e.g. to advance a progress bar.
  """
  if workers is None:
    workers = default_workers(len(jobs))
  if workers <= 1 or len(jobs) <= 1:
    results = []
    for job in jobs:
      results.append(function(*job))
      if on_done:
        on_done()
    return results
  context = multiprocessing.get_context("spawn")
  cores = context.SimpleQueue()
  available = sorted(os.sched_getaffinity(0))
  for index in range(workers):
    cores.put(available[index % len(available)])
  with futures.ProcessPoolExecutor(
    workers, mp_context=context, initializer=_pin, initargs=(cores,)
  ) as pool:
    pending = [pool.submit(function, *job) for job in jobs]
    for future in futures.as_completed(pending):
      future.result()  # Raise a worker's error here, at once.
      if on_done:
        on_done()
    return [future.result() for future in pending]


def _pin(cores: Any) -> None:
  """Worker start: one core, and XLA without its own thread pool there."""
  os.sched_setaffinity(0, {cores.get()})
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
  )
