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

A method's *step hook* (``examples.methods.StepHook``: continual backprop
every step, ReDo every K steps) runs inside the same loop, after the update of
every ``every``-th step (counted over the whole run), on the activations of
that step's batch and a fresh initialisation drawn from the lane's key; its
state rides in :class:`TrainState`'s ``hook``.

``benchmarks/experiment_engine.py`` measures the steps per second of this
engine against the step-by-step loop; ``tests/test_engine.py`` checks that
both give the same parameters, with and without a hook.

Example::

  engine = Engine(module, tx, hook=method.step_hook)
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

from examples import methods
from examples.train import linen as train_linen

EVAL_CHUNK = 1000  # Examples per forward pass when evaluating.


class HookCarry(NamedTuple):
  """A step hook's part of one lane's :class:`TrainState`.

  Attributes:
    step: the updates done so far, over every call of ``train``.
    key: the lane's key; the hook after update ``k`` draws its fresh params
      from ``jax.random.fold_in(key, k)``.
    state: the hook's own state (``StepHook.init``).
  """

  step: jax.Array
  key: jax.Array
  state: Any


class TrainState(NamedTuple):
  """What a training step reads and writes.

  Attributes:
    params: the model's params.
    batch_stats: BatchNorm running statistics (``{}`` without BatchNorm).
    opt_state: the optimizer's state.
    hook: the method's step hook's carry, None without a hook.
  """

  params: Any
  batch_stats: Any
  opt_state: Any
  hook: HookCarry | None = None


Step = Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, Any]]
# after_step(state before the step, state after it, the step's inputs)
AfterStep = Callable[[TrainState, TrainState, jax.Array], TrainState]


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
    params, batch_stats, opt_state, metrics = train_step(
      state.params, state.batch_stats, state.opt_state, x, y
    )
    new_state = state._replace(
      params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    return new_state, metrics["accuracy"]

  return step


def make_after_step(
  module: nn.Module, hook: methods.StepHook, lanes_axis: str | None = None
) -> AfterStep:
  """Runs ``hook`` after every ``hook.every``-th update of a lane.

  ``after_step(before, after, x)``: ``before`` and ``after`` are the lane's
  state around the step on the inputs ``x``. Where the hook is due, it gets
  the params and optimizer state of ``after``, the activations of ``x``
  under ``before``'s params (the step's own forward pass: see
  :func:`hook_activations`) and a fresh initialisation of ``module`` drawn
  from ``jax.random.fold_in(key, k)`` after update ``k``. The hook must
  choose what it resets without reading the fresh values: it first runs
  with NaNs in their place, and only where some entry took one is the draw
  made and the hook run again with it.

  Args:
    module: the model.
    hook: the method's step hook.
    lanes_axis: the name of the ``jax.vmap`` axis of the lanes, if any.
      Under ``vmap`` a ``lax.cond`` on each lane's own step count runs both
      branches at every step; with the axis named, the hook is skipped
      outright at the steps where no lane is due.
  """

  def run(before: TrainState, after: TrainState, x: jax.Array) -> TrainState:
    assert after.hook is not None  # Engine.init gives a hooked state one.
    carry = after.hook
    activations = hook_activations(module, _variables(before), x)

    def apply(fresh_params: Any) -> tuple[Any, Any, Any]:
      inputs = methods.InterventionInputs(
        after.params, after.opt_state, None, fresh_params, activations
      )
      return hook.apply(inputs, carry.state)

    def draw_and_apply() -> tuple[Any, Any, Any]:
      key = jax.random.fold_in(carry.key, carry.step)
      return apply(module.init(key, x[:1])["params"])

    # A fresh draw costs several steps of a small network, and most calls
    # reset nothing: try NaNs in its place first, and draw only if some
    # entry took one (what a hook resets never depends on the draw).
    trial = apply(
      jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), after.params)
    )
    took = jnp.any(
      jnp.array([jnp.isnan(p).any() for p in jax.tree.leaves(trial[0])])
    )
    if lanes_axis is not None:
      took = jax.lax.psum(took.astype(jnp.int32), lanes_axis) > 0
    params, opt_state, hook_state = jax.lax.cond(
      took, draw_and_apply, lambda: trial
    )
    return after._replace(
      params=params, opt_state=opt_state, hook=carry._replace(state=hook_state)
    )

  def after_step(
    before: TrainState, after: TrainState, x: jax.Array
  ) -> TrainState:
    assert after.hook is not None
    after = after._replace(hook=after.hook._replace(step=after.hook.step + 1))
    if hook.every == 1:
      return run(before, after, x)
    due = after.hook.step % hook.every == 0

    def skip(before: TrainState, after: TrainState, x: jax.Array):
      return after

    def run_if_due(before: TrainState, after: TrainState, x: jax.Array):
      return jax.lax.cond(due, run, skip, before, after, x)

    if lanes_axis is None:
      return run_if_due(before, after, x)
    any_due = jax.lax.psum(due.astype(jnp.int32), lanes_axis) > 0
    return jax.lax.cond(any_due, run_if_due, skip, before, after, x)

  return after_step


def train_steps(
  step: Step,
  state: TrainState,
  x: jax.Array,
  y: jax.Array,
  batch_index: jax.Array,
  num_steps: jax.Array,
  after_step: AfterStep | None = None,
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
    after_step: from :func:`make_after_step`, run after every step; None
      for a method without a step hook.

  Returns:
    The new state and the mean batch accuracy over the steps (the online
    training accuracy; 0 when no step ran).
  """

  def body(t, carry):
    state, correct = carry
    index = batch_index[t]
    new_state, accuracy = step(state, x[index], y[index])
    if after_step is not None:
      new_state = after_step(state, new_state, x[index])
    return new_state, correct + accuracy

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
    hook: the method's step hook, run inside the training loop (None: none).
  """

  def __init__(
    self,
    module: nn.Module,
    tx: optax.GradientTransformation,
    layers: Sequence[Any] | None = None,
    hook: methods.StepHook | None = None,
  ):
    self.module = module
    self.tx = tx
    self.hook = hook
    self.step = jax.jit(make_step(module, tx, layers))  # one lane, one batch
    after_step = None
    if hook is not None:
      after_step = make_after_step(module, hook, lanes_axis="lanes")
    run = lambda *args: train_steps(
      make_step(module, tx, layers), *args, after_step=after_step
    )
    self._train = jax.jit(
      jax.vmap(run, in_axes=(0, None, 0, 0, 0), axis_name="lanes"),
      donate_argnums=0,
    )
    self._accuracy = _accuracy_fn(module)
    self._features = _features_fn(module)

  def init(
    self,
    variables: Sequence[dict[str, Any]],
    hook_seeds: Sequence[int] | None = None,
  ) -> TrainState:
    """The lane-stacked state of one initialisation per seed.

    Args:
      variables: each lane's initial variables.
      hook_seeds: with a step hook, each lane's seed for the hook's fresh
        draws (default: the lane's index).
    """
    if hook_seeds is None:
      hook_seeds = range(len(variables))
    states = [
      TrainState(
        v["params"],
        v.get("batch_stats", {}),
        self.tx.init(v["params"]),
        None if self.hook is None else self._hook_carry(v["params"], seed),
      )
      for v, seed in zip(variables, hook_seeds, strict=True)
    ]
    return stack(states)

  def _hook_carry(self, params: Any, seed: int) -> HookCarry:
    assert self.hook is not None
    return HookCarry(
      jnp.zeros((), jnp.int32), jax.random.key(seed), self.hook.init(params)
    )

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


def intervene(
  intervention: methods.Intervention,
  state: TrainState,
  initial_params: Any,
  fresh_params: Any,
) -> TrainState:
  """Runs a method's intervention on every lane (``jax.vmap``).

  Args:
    intervention: e.g. ``method.at_task_switch``.
    state: lane-stacked.
    initial_params: each lane's theta_0, lane-stacked.
    fresh_params: each lane's fresh draw, lane-stacked.

  Returns:
    The state with the new params and optimizer state.
  """
  params, opt_state = jax.vmap(intervention)(
    methods.InterventionInputs(
      state.params, state.opt_state, initial_params, fresh_params
    )
  )
  return state._replace(params=params, opt_state=opt_state)


def layer_inputs(
  module: nn.Module, variables: dict[str, Any], x: jax.Array, train: bool
) -> list[tuple[jax.Array, int]]:
  """The input of every Dense/Conv layer but the first, from one forward pass.

  In forward order, each with the number of units of the layer before it:
  for the paper's chain models, the post-ReLU (and pooled) output of each
  hidden layer. With ``train=True`` the model runs as a training step runs
  it (BatchNorm on the batch's statistics, which are not kept).
  """
  recorded = []

  def record(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(
      context.module, (nn.Dense, nn.Conv)
    ):
      recorded.append((args[0], context.module.features))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    if train:
      module.apply(variables, x, train=True, mutable=["batch_stats"])
    else:
      module.apply(variables, x, train=False)
  return [
    (inputs, units)
    for (inputs, _), (_, units) in zip(recorded[1:], recorded[:-1])
  ]


def hook_activations(
  module: nn.Module, variables: dict[str, Any], x: jax.Array
) -> list[jax.Array]:
  """What a step hook reads: each hidden layer's output on the batch ``x``.

  ``baselines.redo``'s activations: the inputs of the layers after the
  first (training mode), each ``[batch, ..., units]`` of the layer that
  produced it; a dense layer's flattened input after a conv is unflattened
  to ``[batch, positions, channels]``.
  """
  return [
    inputs.reshape(*inputs.shape[:-1], -1, units)
    if inputs.shape[-1] != units
    else inputs
    for inputs, units in layer_inputs(module, variables, x, train=True)
  ]


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
    pairs = layer_inputs(module, _variables(state), x[index], train=False)
    return [inputs for inputs, _ in pairs]

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
