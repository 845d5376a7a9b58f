"""Random-label tasks: the standard loss-of-plasticity benchmark.

A fixed, class-balanced subset of the training set (``--num-examples``) is
learned again and again, each task with fresh uniformly random labels, by one
network whose optimizer state is never reset (Lyle et al., 2023; Kumar et
al., 2023). Only Shrink & Perturb and head reset are told when the task
changes (they act at each switch); the other methods get no signal of it.
Memorizing random labels needs all of a network's capacity, so the training
accuracy a method reaches on task t, compared with task 1, measures how much
plasticity it kept. Model: the paper's MLP 784-100-100-10 (any input shape,
flattened); Adam lr 1e-3, batch 32.

Methods: ``vanilla``, ``l2`` (loss + lam/2 ||theta||^2), ``l2_init`` (loss +
lam ||theta - theta_0||^2), ``snp`` (Shrink & Perturb toward theta_0 at each
task switch), ``head_reset`` (a fresh last layer at each switch) and ``swr``;
each coefficient flag takes a comma-separated list, and a method with several
coefficients becomes one entry per coefficient (``swr_0.001``). SWR with
coefficient 1 projects every layer back to its initial norm after each step.
Also (not run by default): ``adamw``; ``snp_noise`` (Ash & Adams' Shrink &
Perturb) and ``full_reset`` (a fresh network and optimizer state), which are
told of each switch and act there, as ``snp`` and ``head_reset``; ``redo``,
``swr_redo`` (every ``--redo-every`` steps) and ``cbp`` (every step), which
act inside the training loop on each batch's activations. A method with
several coefficient flags gets one entry per combination of their values.

  python -m examples.paper.random_labels                 # the defaults
  python -m examples.paper.random_labels --calibrate     # the pilot
  python -m examples.paper.random_labels --data digits --tasks 5 \\
      --steps-per-task 500 --seeds 2 --methods vanilla,swr --out rl.json

Each method's setting chosen on selection seeds, reported on others
(``examples.paper.selection``): a grid of every tuned method on seeds 100
to 102, then ``--from-selection`` runs every method of the selection at the
value of its first coefficient flag with the best mean training accuracy
over the last 5 tasks there (inside its grid, or an error names the flag
to extend), on seeds 0 to 9; the JSON's ``config.selection`` records the
choices, and ``examples.paper.summarize_results`` given both files
compares them with Holm's correction:

  python -m examples.paper.random_labels --first-seed 100 --seeds 3 \\
      --l2 1e-5,1e-4,1e-3 --l2-init 1e-3,1e-2,1e-1 --snp 0.1,0.2,0.5 \\
      --swr 1e-3,1e-2,1e-1 --out rl_selection.json
  python -m examples.paper.random_labels --seeds 10 \\
      --from-selection rl_selection.json --out rl_report.json
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import time
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from examples import cli
from examples import data
from examples.paper import engine as engine_lib
from examples.paper import task_sequence

METHODS = task_sequence.METHODS
DEFAULT_METHODS = ("vanilla", "l2", "l2_init", "snp", "head_reset", "swr")
DEFAULT_COEFS = {
  "l2": "1e-4",
  "l2_init": "1e-2",
  "snp": "0.2",
  "swr": "1e-4,1e-3,1e-2,1",
}
# Vanilla Adam's training accuracy on task 1 must reach this at the
# calibrated --steps-per-task (the pilot: --calibrate).
CALIBRATION_TARGET = 0.95
CALIBRATION_EVERY = 250


@dataclasses.dataclass(frozen=True)
class Settings(task_sequence.Settings):
  """The flags of one run."""

  PROTOCOL: ClassVar[str] = "random_labels"
  SAME_AS_SELECTION: ClassVar[tuple[str, ...]] = (
    *task_sequence.Settings.SAME_AS_SELECTION,
    "steps_per_task",
    "num_examples",
  )

  methods: tuple[str, ...] = DEFAULT_METHODS
  tasks: int = 20
  steps_per_task: int = 3250
  seeds: int = 5
  num_examples: int = 1200
  batch_size: int = 32
  dormant_tau: float = 0.0


def parse_flags(argv: Sequence[str] | None) -> tuple[Settings, bool]:
  """The settings, and whether to run the calibration pilot instead."""
  parser = task_sequence.make_parser(__doc__, Settings(), DEFAULT_COEFS)
  parser.add_argument(
    "--steps-per-task", type=int, default=Settings.steps_per_task
  )
  parser.add_argument(
    "--num-examples",
    type=int,
    default=Settings.num_examples,
    help="size of the class-balanced training subset",
  )
  parser.add_argument(
    "--dormant-tau",
    type=float,
    default=Settings.dormant_tau,
    help="a unit is dormant when its normalized activation is <= this",
  )
  parser.add_argument(
    "--calibrate",
    action="store_true",
    help=(
      "instead: train vanilla on task 1 for --steps-per-task steps and "
      f"print its training accuracy every {CALIBRATION_EVERY} steps"
    ),
  )
  args = parser.parse_args(argv)
  cli.check_positive("--steps-per-task", args.steps_per_task)
  settings = task_sequence.settings_from_args(
    Settings,
    args,
    parser,
    steps_per_task=args.steps_per_task,
    num_examples=args.num_examples,
    dormant_tau=args.dormant_tau,
  )
  return settings, args.calibrate


def training_subset(
  dataset: data.Dataset, num_examples: int, batch_size: int
) -> np.ndarray:
  """A fixed class-balanced subset of the training inputs, flattened.

  Raises:
    ValueError: if ``num_examples`` is smaller than a batch, or needs more
      examples per class than the smallest class has (the message names
      that class and the largest ``num_examples`` it allows).
  """
  classes = np.unique(dataset.y_train)
  per_class = num_examples // len(classes)
  if num_examples < batch_size or per_class < 1:
    raise ValueError(
      f"--num-examples {num_examples}: need at least one batch "
      f"(--batch-size {batch_size}) and one example per class "
      f"({len(classes)} classes)."
    )
  # The smallest class sets the limit, wherever it comes in label order.
  sizes = [np.count_nonzero(dataset.y_train == label) for label in classes]
  smallest = int(np.argmin(sizes))
  if sizes[smallest] < per_class:
    raise ValueError(
      f"--num-examples {num_examples}: needs {per_class} training examples "
      f"per class, but the smallest class, {classes[smallest]}, has only "
      f"{sizes[smallest]}; ask for at most "
      f"{sizes[smallest] * len(classes)} ({len(classes)} classes x "
      f"{sizes[smallest]})."
    )
  rng = np.random.default_rng(0)
  picked = []
  for label in classes:
    members = np.flatnonzero(dataset.y_train == label)
    picked.append(rng.choice(members, per_class, replace=False))
  chosen = np.sort(np.concatenate(picked))
  return dataset.x_train[chosen].reshape(len(chosen), -1)


def task_labels(seed: int, task: int, n: int, num_classes: int) -> np.ndarray:
  """The uniformly random labels of one task, the same for every method."""
  rng = np.random.default_rng([seed, task])
  return rng.integers(0, num_classes, n).astype(np.int32)


def calibrate(
  settings: Settings, x: np.ndarray, num_classes: int
) -> dict[str, Any]:
  """Vanilla on task 1: training accuracy every ``CALIBRATION_EVERY`` steps.

  Returns ``{"steps", "train_acc" [seeds][checkpoints], "calibrated_steps"}``,
  the last being the first checkpoint where every seed reaches
  ``CALIBRATION_TARGET`` (None if none does).
  """
  run = _Run(settings, x, num_classes, "vanilla", ())
  checkpoints = list(
    range(CALIBRATION_EVERY, settings.steps_per_task + 1, CALIBRATION_EVERY)
  )
  run.new_task(0)
  order = run.batch_order(0, checkpoints[-1])
  accuracy = []
  for start in range(0, checkpoints[-1], CALIBRATION_EVERY):
    run.train(order[:, start : start + CALIBRATION_EVERY])
    accuracy.append(run.train_accuracy())
  per_seed = np.array(accuracy).T
  reached = [
    s
    for s, acc in zip(checkpoints, per_seed.T)
    if acc.min() >= CALIBRATION_TARGET
  ]
  return {
    "steps": checkpoints,
    "train_acc": per_seed.tolist(),
    "target": CALIBRATION_TARGET,
    "calibrated_steps": reached[0] if reached else None,
  }


class _Run:
  """One method over all seeds (lanes), on the subset and each task's labels."""

  def __init__(self, settings, x, num_classes, method_name, coefs):
    self.settings = settings
    self.x = jnp.asarray(x)
    self.num_classes = num_classes
    self.lanes = task_sequence.Lanes(
      settings, x[:1], num_classes, method_name, coefs
    )
    self.labels = jnp.zeros((settings.seeds, len(x)), jnp.int32)
    self.everything = np.broadcast_to(
      np.arange(len(x)), (settings.seeds, len(x))
    )

  def new_task(self, task: int) -> None:
    """The task's labels, and the method's intervention at the switch."""
    n = len(self.x)
    self.labels = jnp.asarray(
      np.stack(
        [
          task_labels(seed, task, n, self.num_classes)
          for seed in self.settings.seed_ids
        ]
      )
    )
    self.lanes.switch_task(task)

  def batch_order(self, task: int, steps: int) -> np.ndarray:
    """``[seeds, steps, batch]``: epochs of fresh permutations, per seed."""
    return np.stack(
      [
        engine_lib.epoch_order(
          np.random.default_rng([seed, task]),
          len(self.x),
          self.settings.batch_size,
          steps,
        )
        for seed in self.settings.seed_ids
      ]
    )

  def train(self, order: np.ndarray) -> np.ndarray:
    """Trains every seed on its batches; returns the online accuracy."""
    return self.lanes.train(self.x, self.labels, order)

  def train_accuracy(self) -> np.ndarray:
    return self.lanes.accuracy(self.x, self.labels, self.everything)

  def diagnostics(self) -> dict[str, np.ndarray]:
    """Weight norms, dormant fraction and srank of every lane."""
    hidden = self.lanes.hidden_metrics(
      self.x, self.everything, self.settings.dormant_tau
    )
    return {"weight_norms": self.lanes.weight_norms(), **hidden}


def run_method(settings, x, num_classes, method_name, coefs) -> dict[str, Any]:
  """Trains one method through every task; returns its JSON entry."""
  start = time.perf_counter()
  run = _Run(settings, x, num_classes, method_name, coefs)
  keys = (
    "task_train_acc",
    "task_online_acc",
    "weight_norms",
    "dormant_fraction",
    "effective_rank",
  )
  record: dict[str, Any] = {key: [] for key in keys}
  for task in range(settings.tasks):
    run.new_task(task)
    online = run.train(run.batch_order(task, settings.steps_per_task))
    record["task_train_acc"].append(run.train_accuracy())
    record["task_online_acc"].append(online)
    for key, value in run.diagnostics().items():
      record[key].append(value)
  total_steps = settings.tasks * settings.steps_per_task
  return task_sequence.method_result(
    record, run.lanes, coefs, total_steps, start
  )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  start = time.perf_counter()
  settings, calibration = parse_flags(argv)
  dataset = data.load(settings.data)
  x = training_subset(dataset, settings.num_examples, settings.batch_size)
  config = dataclasses.asdict(settings)
  config.update(
    num_examples=len(x),
    input_dim=int(x.shape[1]),
    num_classes=dataset.num_classes,
  )
  if calibration:
    results = {
      "config": config,
      "calibration": calibrate(settings, x, dataset.num_classes),
    }
  else:
    methods = task_sequence.run_entries(
      settings, run_method, (x, dataset.num_classes), "random labels"
    )
    results = {"config": config, "methods": methods}
  return task_sequence.finish(results, settings, start, print_summary)


def print_summary(results: dict[str, Any]) -> None:
  """Task 1, last task and last-5 accuracy; differences from vanilla."""
  config = results["config"]
  if "calibration" in results:
    calibration = results["calibration"]
    print("steps  vanilla training accuracy on task 1 (per seed)")
    for step, accs in zip(
      calibration["steps"], np.array(calibration["train_acc"]).T
    ):
      print(f"{step:5d}  " + " ".join(f"{a:.3f}" for a in accs))
    print(
      f"first budget where every seed reaches {CALIBRATION_TARGET}: "
      f"{calibration['calibrated_steps']}"
    )
    return
  print(
    f"\nrandom labels: {config['data']}, {config['num_examples']} examples, "
    f"{config['tasks']} tasks x {config['steps_per_task']} steps, "
    f"{config['seeds']} seeds; +- is the sample std (ddof=1); the paired "
    "difference from vanilla has a 95% t interval"
  )

  def scores(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    accuracy = np.array(entry["task_train_acc"])
    return accuracy[:, 0], accuracy[:, -1]

  task_sequence.print_comparison(
    results["methods"], scores, ("task 1", "last task")
  )
  print(f"wall time {results['wall_time_s']:.0f} s")


if __name__ == "__main__":
  main()
