"""Continual language modelling: the same text under a new vocabulary per task.

Self-Normalized Resets' "permuted Shakespeare", at the character level. Task
t relabels every character by a fixed random permutation of the vocabulary,
drawn from (seed, task) alone, so it is the same for every method; the text
and the model stay the same. One model per run trains through ``--tasks``
tasks of ``--steps-per-task`` steps. After each task its loss is measured on
that task's permutation of the validation and test splits. A method that
keeps its plasticity learns task t as well as task 1; plasticity loss shows
as later tasks' final losses above task 1's (paired by seed) and above a
fresh model's (a new model of the same method and seed, trained on the last
task's permutation alone).

Every method's setting is chosen on the validation split (the lowest mean
final loss over tasks, averaged over seeds); the report reads the test split.
``snp`` moves the params toward their initialisation at every new task.

  python -m examples.lm.permuted_vocab --out /tmp/permuted_vocab.json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from examples import cli
from examples.lm import char_gpt
from examples.lm import selection
from examples.lm import training
from examples.paper import engine

DEFAULT_METHODS = "adam,adamw,swr,swr_chain_rule,adamh,swr_adamw,l2_init,snp"


def permutation(seed: int, task: int, vocab_size: int) -> np.ndarray:
  """Task ``task``'s relabelling of the vocabulary for ``seed`` (task 0: the identity)."""
  if task == 0:
    return np.arange(vocab_size, dtype=np.int32)
  rng = np.random.default_rng([seed, task])
  return rng.permutation(vocab_size).astype(np.int32)


def task_perms(runs: training.Runs, task: int, vocab_size: int) -> np.ndarray:
  """Every run's permutation for ``task``: ``[R, vocab]``."""
  return np.stack(
    [permutation(int(s), task, vocab_size) for s in np.asarray(runs.seed)]
  )


def run_method(
  args, name, corpus, model, traced, valid, test
) -> dict[str, Any]:
  """One method's grid through every task, and a fresh model on the last."""
  trainer, runs, state = char_gpt.trainer_and_runs(
    args, name, corpus, model, traced
  )
  curves: dict[str, list] = {"val": [], "test": [], "train": []}
  start = time.perf_counter()
  for task in range(args.tasks):
    runs = runs.with_perm(task_perms(runs, task, corpus.vocab_size))
    if task and name == "snp":
      state = state._replace(params=shrink_toward_initial(state, runs.coef))
    state, losses = train_task(trainer, state, runs, task, args)
    curves["train"].append(np.asarray(losses))
    curves["val"].append(np.asarray(trainer.evaluate(state, runs, *valid)))
    curves["test"].append(np.asarray(trainer.evaluate(state, runs, *test)))
    if not args.no_progress:
      print(
        f"  {name} task {task + 1}: val {curves['val'][-1].mean():.3f}",
        flush=True,
      )
  fresh = trainer.init(runs)
  fresh, _ = train_task(trainer, fresh, runs, args.tasks - 1, args)
  return {
    "runs": training.runs_record(runs),
    "curves": {
      k: np.stack(v, axis=1).round(5).tolist() for k, v in curves.items()
    },
    "fresh_val": np.asarray(trainer.evaluate(fresh, runs, *valid))
    .round(5)
    .tolist(),
    "fresh_test": np.asarray(trainer.evaluate(fresh, runs, *test))
    .round(5)
    .tolist(),
    "wall_time_s": time.perf_counter() - start,
  }


def shrink_toward_initial(state: training.State, coef: jax.Array) -> Any:
  """``(1 - coef) theta + coef theta_0`` per run (``baselines.shrink_perturb``'s rule)."""

  def shrink(param, initial):
    c = coef.reshape((-1,) + (1,) * (param.ndim - 1))
    return (1 - c) * param + c * initial

  return jax.tree.map(shrink, state.params, state.initial)


def train_task(trainer, state, runs, task: int, args):
  """``--steps-per-task`` steps on ``task``; the mean training loss per run."""
  losses = []
  for first in range(0, args.steps_per_task, args.eval_every):
    steps = min(args.eval_every, args.steps_per_task - first)
    step0 = jnp.int32(task * args.steps_per_task + first)
    state, loss = trainer.train(state, runs, step0, steps=steps)
    losses.append(loss)
  return state, jnp.concatenate(losses, axis=1).mean(axis=1)


def select(result: dict[str, Any]) -> dict[str, Any]:
  """The setting with the lowest final validation loss over tasks and seeds."""
  mean_val = np.asarray(result["curves"]["val"]).mean(axis=1)
  choice = selection.choose(result["runs"], mean_val)
  rows = choice.pop("rows")
  pick = lambda values: [values[i] for i in rows]
  return {
    **choice,
    "task_val_loss": pick(result["curves"]["val"]),
    "task_test_loss": pick(result["curves"]["test"]),
    "task_train_loss": pick(result["curves"]["train"]),
    "fresh_test_loss": pick(result["fresh_test"]),
    "fresh_val_loss": pick(result["fresh_val"]),
    "wall_time_s": result["wall_time_s"],
  }


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The flags of this script alone (the shared ones: ``char_gpt.add_flags``)."""
  parser.add_argument(
    "--from-selection",
    help=(
      "selection runs' JSON files, comma-separated: run each method at its "
      "chosen setting (with --lr: over those learning rates at its chosen "
      "coefficient)"
    ),
  )
  cli.add_workers_flag(parser)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
  args = char_gpt.parse(
    argv,
    __doc__,
    DEFAULT_METHODS,
    "3e-3",
    True,
    add_flags,
    tasks=20,
    steps_per_task=100,
  )
  cli.check_positive("--tasks", args.tasks)
  if args.tasks < 2:
    raise ValueError(
      f"--tasks must be at least 2 (task 1 is the reference); got {args.tasks}"
    )
  cli.check_positive("--steps-per-task", args.steps_per_task)
  if args.workers is not None:
    cli.check_positive("--workers", args.workers)
  args.steps = args.tasks * args.steps_per_task
  args.selection = selection.apply(args) if args.from_selection else None
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse(argv)
  start = time.perf_counter()
  corpus = _setup(args)[0]
  results: dict[str, Any] = {
    "config": char_gpt.config_record(args),
    "versions": cli.versions(),
    "corpus": char_gpt.corpus_summary(corpus),
    "methods": {},
  }
  jobs = [(args, name) for name in args.methods]
  chosen = engine.run_jobs(method_job, jobs, args.workers)
  results["methods"] = dict(zip(args.methods, chosen))
  results["wall_time_s"] = time.perf_counter() - start
  print_summary(results)
  if args.out:
    cli.write_json(args.out, results)
  return results


def method_job(args: argparse.Namespace, name: str) -> dict[str, Any]:
  """One method's runs and its chosen setting (a worker process's job)."""
  return select(run_method(args, name, *_setup(args)))


_SETUPS: dict[tuple, Any] = {}


def _setup(args: argparse.Namespace):
  """``char_gpt.setup``, once per process (a worker runs several methods)."""
  key = tuple(
    getattr(args, k)
    for k in ("text", "context", "dim", "depth", "heads", "eval_windows")
  )
  if key not in _SETUPS:
    _SETUPS[key] = char_gpt.setup(args)
  return _SETUPS[key]


def plasticity_gap(entry: dict[str, Any], last: int = 5) -> np.ndarray:
  """Per seed: mean test loss of the last ``last`` tasks minus task 1's."""
  losses = np.asarray(entry["task_test_loss"])
  return losses[:, -last:].mean(axis=1) - losses[:, 0]


def print_summary(results: dict[str, Any]) -> None:
  print(f"wall time {results['wall_time_s']:.0f} s")
  for name, entry in results["methods"].items():
    losses = np.asarray(entry["task_test_loss"])
    gap = plasticity_gap(entry)
    fresh = np.asarray(entry["fresh_test_loss"])
    print(
      f"{name:16s} lr {entry['lr']:g} coef {entry['coef']:g}: task 1 "
      f"{losses[:, 0].mean():.3f}, last {losses[:, -1].mean():.3f}, fresh on last "
      f"{fresh.mean():.3f}; last-5 minus task 1 {gap.mean():+.3f}"
      + (f" (edge: {', '.join(entry['at_edge'])})" if entry["at_edge"] else "")
    )


if __name__ == "__main__":
  main()
