"""Training a grid of language models at once: runs vmapped, steps scanned.

A *run* is one (learning rate, coefficient, seed) of one method. All runs of
a method share one compiled chunk of ``eval_every`` steps (``lax.scan``)
under ``jax.vmap``: the learning rate and the coefficient are traced, so a
grid of them costs one compile. A run's params start from its seed's
initialisation, and its batches come from its seed alone (the same windows
for every method and setting, so differences between methods are paired by
seed).

A batch is ``batch_size`` windows of ``context + 1`` characters at uniformly
drawn positions of the training split, with every token mapped through the
run's permutation of the vocabulary (the identity outside the continual
protocol). Evaluation is the mean cross-entropy (nats per character) on
fixed windows spread evenly over a held-out split.

Example::

  trainer = training.Trainer(model, "swr", traced, corpus.train, 128, 32)
  runs = training.Runs.grid(lrs=[1e-3, 3e-3], coefs=[1e-2], seeds=[0, 1])
  state = trainer.init(runs)
  state, train_loss = trainer.train(state, runs, steps=100, first_step=0)
  losses = trainer.evaluate(state, runs, valid_x, valid_y)
"""

from __future__ import annotations

from collections.abc import Sequence
import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples.lm import methods as methods_lib
import optax_swr


class Runs(NamedTuple):
  """The runs of one method, as arrays with one entry per run.

  Attributes:
    lr: learning rates, float32 ``[R]``.
    coef: coefficients, float32 ``[R]`` (0 for a method without one).
    seed: seeds, int32 ``[R]``.
    perm: each run's vocabulary permutation, int32 ``[R, vocab]``.
  """

  lr: Any
  coef: Any
  seed: Any
  perm: Any

  @classmethod
  def grid(
    cls,
    lrs: Sequence[float],
    coefs: Sequence[float],
    seeds: Sequence[int],
    vocab_size: int,
  ) -> Runs:
    """Every (lr, coef, seed), seeds varying fastest; identity permutations."""
    rows = list(itertools.product(lrs, coefs, seeds))
    perm = np.tile(np.arange(vocab_size, dtype=np.int32), (len(rows), 1))
    return cls(
      jnp.asarray([r[0] for r in rows], jnp.float32),
      jnp.asarray([r[1] for r in rows], jnp.float32),
      jnp.asarray([r[2] for r in rows], jnp.int32),
      jnp.asarray(perm),
    )

  def with_perm(self, perm: np.ndarray) -> Runs:
    """The same runs with new permutations ``[R, vocab]``."""
    return self._replace(perm=jnp.asarray(perm, jnp.int32))


class State(NamedTuple):
  """Every run's params, optimizer state and initial params."""

  params: Any
  opt_state: Any
  initial: Any


def cross_entropy(
  log_probs_or_logits: jax.Array, targets: jax.Array
) -> jax.Array:
  """Mean negative log-likelihood (nats per token) of ``targets``."""
  log_p = jax.nn.log_softmax(log_probs_or_logits)
  return -jnp.take_along_axis(log_p, targets[..., None], axis=-1).mean()


class Trainer:
  """Trains and evaluates one method's runs of one model.

  Args:
    model: the Linen GPT (:class:`examples.lm.model.GPT`).
    method: a key of :data:`examples.lm.methods.METHODS`.
    traced: the model's traced layers (:class:`examples.lm.methods.Traced`).
    train_ids: the training split's token ids.
    context: tokens per window.
    batch_size: windows per step.
    swr_adamw_decay: ``swr_adamw``'s weight decay.
  """

  def __init__(
    self,
    model: Any,
    method: str,
    traced: methods_lib.Traced,
    train_ids: np.ndarray,
    context: int,
    batch_size: int,
    swr_adamw_decay: float = 0.1,
  ):
    self.model = model
    self.method = method
    self.traced = traced
    self.train_ids = jnp.asarray(train_ids, jnp.int32)
    self.context = context
    self.batch_size = batch_size
    self.swr_adamw_decay = swr_adamw_decay
    self.init = jax.jit(jax.vmap(self._init_run))
    self.train = jax.jit(
      self._train_runs, static_argnames="steps", donate_argnums=(0,)
    )
    self.evaluate = jax.jit(
      jax.vmap(self._evaluate_run, in_axes=(0, 0, None, None))
    )

  def tx(self, lr: Any, coef: Any) -> optax.GradientTransformation:
    """The optimizer of one run."""
    return methods_lib.build(
      self.method, lr, coef, self.traced, self.swr_adamw_decay
    )

  def _init_run(self, runs: Runs) -> State:
    ids = jnp.zeros((1, self.context), jnp.int32)
    params = self.model.init(jax.random.key(runs.seed), ids)["params"]
    return State(params, self.tx(runs.lr, runs.coef).init(params), params)

  def _loss(self, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    return cross_entropy(self.model.apply({"params": params}, x), y)

  def _batch(self, runs: Runs, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    key = jax.random.fold_in(jax.random.key(runs.seed), step)
    high = self.train_ids.shape[0] - self.context
    starts = jax.random.randint(key, (self.batch_size,), 0, high)
    index = starts[:, None] + jnp.arange(self.context + 1)
    window = runs.perm[self.train_ids[index]]
    return window[:, :-1], window[:, 1:]

  def _train_run(self, state: State, runs: Runs, first_step, steps: int):
    tx = self.tx(runs.lr, runs.coef)

    def step(carry, index):
      params, opt_state = carry
      x, y = self._batch(runs, first_step + index)
      loss, grads = jax.value_and_grad(self._loss)(params, x, y)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      if methods_lib.uses_swr(self.method):
        params, opt_state = optax_swr.rescale_params(params, opt_state)
      return (params, opt_state), loss

    carry = (state.params, state.opt_state)
    (params, opt_state), losses = jax.lax.scan(step, carry, jnp.arange(steps))
    return State(params, opt_state, state.initial), losses

  def _train_runs(self, state: State, runs: Runs, first_step, steps: int):
    """``steps`` updates of every run; returns the state and ``[R, steps]`` losses."""
    train = lambda s, r: self._train_run(s, r, first_step, steps)
    return jax.vmap(train)(state, runs)

  def _evaluate_run(self, state: State, runs: Runs, x: jax.Array, y: jax.Array):
    return self._loss(state.params, runs.perm[x], runs.perm[y])


def runs_record(runs: Runs) -> dict[str, list]:
  """Each run's learning rate, coefficient and seed, as the JSON keeps them."""
  return {
    "lr": np.asarray(runs.lr).tolist(),
    "coef": np.asarray(runs.coef).tolist(),
    "seed": np.asarray(runs.seed).tolist(),
  }


def eval_windows(ids: np.ndarray, context: int, count: int):
  """``count`` windows spread evenly over ``ids``: inputs and targets."""
  starts = np.linspace(0, len(ids) - context - 1, count).astype(np.int64)
  index = starts[:, None] + np.arange(context + 1)
  chunk = np.asarray(ids)[index]
  return jnp.asarray(chunk[:, :-1]), jnp.asarray(chunk[:, 1:])


def matrix_norms(params: Any) -> Any:
  """The summed Frobenius norm of every matrix of each run: ``[R]``."""
  leaves = [leaf for leaf in jax.tree.leaves(params) if leaf.ndim >= 3]
  return sum(
    jnp.sqrt(jnp.sum(leaf.reshape(leaf.shape[0], -1) ** 2, -1))
    for leaf in leaves
  )
