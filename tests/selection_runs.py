"""Hand-made JSON of the task sequences, for the tests of the selection.

A run of ``examples.paper.random_labels`` or ``permuted_inputs`` as its
script would write it, small enough to build in a test, with the scores
chosen: ``run("random_labels", {("swr", (0.01,)): 0.6, ...})``. Its
configuration matches the tiny runs of ``tests/test_random_labels.py`` and
``tests/test_permuted_inputs.py`` (their ``TINY`` flags), so that those may
choose from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
from typing import Any

from examples.paper import task_sequence

CONFIGS = {
  "random_labels": {"tasks": 2, "steps_per_task": 40, "num_examples": 100},
  "permuted_inputs": {
    "tasks": 3,
    "examples_per_task": 160,
    "steps_per_task": 10,
    "window": 5,
  },
}
Key = tuple[str, tuple[float, ...]]  # (method, coefficients)


def value(key: Key, mean: float | Sequence[float], seed: int, task: int):
  """A seed's value at one task: the mean (per task, or for all) and a
  small spread over seeds."""
  method, _ = key
  at_task = mean if isinstance(mean, float | int) else mean[task]
  return float(at_task) + 0.01 * ((seed * 7 + len(method)) % 5 - 2)


def run(
  protocol: str,
  means: Mapping[Key, float | Sequence[float]],
  first_seed: int = 0,
  seeds: int = 3,
  **config: Any,
) -> dict[str, Any]:
  """A run's JSON whose every entry ``key`` scores ``means[key]`` (a
  number, or one per task) at every task, give or take 0.02 by seed.

  Args:
    protocol: ``"random_labels"`` or ``"permuted_inputs"``.
    means: ``{(method, coefs): mean}``, one entry each.
    first_seed: the run's ``--first-seed``; row ``r`` is its seed
      ``first_seed + r``.
    seeds: how many seeds.
    **config: overrides of the configuration.
  """
  config = {
    "data": "digits",
    "methods": list(dict.fromkeys(method for method, _ in means)),
    "coefs": {},
    "seeds": seeds,
    "first_seed": first_seed,
    "batch_size": 16,
    "lr": 1e-3,
    "width": 100,
    "redo_every": 1000,
    **CONFIGS[protocol],
    **config,
  }
  methods = {}
  for key, mean in means.items():
    method, coefs = key
    for flag, coef in zip(task_sequence.COEF_FLAGS[method], coefs):
      config["coefs"].setdefault(flag, []).append(coef)
    rows = [
      [value(key, mean, seed, t) for t in range(config["tasks"])]
      for seed in range(first_seed, first_seed + seeds)
    ]
    name = method + "".join(f"_{c:g}" for c in coefs)
    methods[name] = entry(protocol, method, coefs, rows, config)
  return {
    "config": config,
    "versions": {},
    "wall_time_s": 60.0,
    "methods": methods,
  }


def entry(
  protocol: str,
  method: str,
  coefs: Sequence[float],
  rows: list[list[float]],
  config: Mapping[str, Any],
) -> dict[str, Any]:
  """One method's entry: ``rows`` as its score, the rest made up."""
  tasks, seeds = config["tasks"], len(rows)
  result: dict[str, Any] = {
    "task_online_acc": rows,
    "weight_norms": [[[2.0, 4.0, 6.0]] * tasks] * seeds,
    "initial_weight_norms": [[1.0, 2.0, 2.0]] * seeds,
    "hparams": {
      "method": method,
      "coefs": list(coefs),
      "lr": config["lr"],
      "total_steps": tasks * config["steps_per_task"],
      "task_switch": False,
    },
    "seconds": 1.0,
  }
  if protocol == "random_labels":
    result.update(
      task_train_acc=rows,
      dormant_fraction=[[0.25] * tasks] * seeds,
      effective_rank=[[40.0] * tasks] * seeds,
    )
  else:
    result.update(
      first_task_test_acc=[row[0] for row in rows],
      last_task_test_acc=[row[-1] for row in rows],
    )
  return result


def write(path: Any, result: Mapping[str, Any]) -> str:
  """Writes ``result`` as JSON to ``path``; returns the path as text."""
  with open(path, "w") as file:
    json.dump(result, file)
  return str(path)
