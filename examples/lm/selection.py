"""Choosing each method's setting: from a grid of runs, and from files of them.

A method's *setting* is its (learning rate, coefficient). :func:`choose`
picks the one whose runs have the lowest mean validation loss; :func:`load`
joins the grids of several runs of one protocol (a grid extended beyond an
edge is a second run); :func:`apply` makes a script run each method at the
setting chosen in such files (``--from-selection``).

Example::

  choice = selection.choose(training.runs_record(runs), final_val_losses)
  merged = selection.load("results/a.json,results/a_extension.json")
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
from typing import Any

import numpy as np

from examples.lm import methods as methods_lib

# The flags that fix what a selection run trained: a run at a chosen setting
# must match its selection on every one of them.
PROTOCOL_FLAGS = (
  "text",
  "tasks",
  "steps_per_task",
  "context",
  "batch_size",
  "dim",
  "depth",
  "heads",
  "swr_adamw_decay",
)


def choose(record: dict[str, list], scores: Sequence[float]) -> dict[str, Any]:
  """The setting whose runs have the lowest mean score (a validation loss).

  Args:
    record: ``training.runs_record`` of the runs.
    scores: one score per run.

  Returns:
    ``lr``, ``coef``, ``at_edge`` (:func:`grid_edges`), ``grid_val_loss``
    (``[lr, coef, mean score]`` per setting, in grid order) and ``rows``
    (the chosen setting's runs, one per seed).
  """
  settings = list(zip(record["lr"], record["coef"]))
  grid = {
    setting: float(
      np.mean([v for v, s in zip(scores, settings) if s == setting])
    )
    for setting in dict.fromkeys(settings)
  }
  lr, coef = min(grid, key=grid.get)
  rows = [[lr, coef, score] for (lr, coef), score in grid.items()]
  return {
    "lr": lr,
    "coef": coef,
    "at_edge": grid_edges(lr, coef, rows),
    "grid_val_loss": rows,
    "rows": [i for i, s in enumerate(settings) if s == (lr, coef)],
  }


def grid_edges(
  lr: float, coef: float, grid: Sequence[Sequence[float]]
) -> list[str]:
  """Which of the chosen ``lr`` and ``coef`` lie at an edge of ``grid``'s values."""
  lrs = sorted({row[0] for row in grid})
  coefs = sorted({row[1] for row in grid})
  return [
    flag
    for flag, values, value in (("--lr", lrs, lr), ("coef", coefs, coef))
    if len(values) > 1 and value in (values[0], values[-1])
  ]


def load(paths: str) -> dict[str, Any]:
  """One JSON, or several runs of the same protocol (comma-separated) merged.

  A method in several files keeps the entry whose chosen setting has the
  lower validation score, with the grids of all files joined: extending a
  grid beyond an edge is a second run of that method with the new values.
  """
  runs = []
  for path in paths.split(","):
    with open(path.strip(), encoding="utf-8") as f:
      runs.append(json.load(f))
  return merge(runs)


# What a method's entry measured about speed keeps the first run's value: the
# runs of a grid extension are fewer per compiled step, so not comparable.
SPEED_KEYS = ("step_time_s", "tokens_per_s", "runs_per_step")


def merge(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """The first run, each method's entry the best over ``runs`` (see :func:`load`)."""
  merged = {**runs[0], "methods": dict(runs[0]["methods"])}
  merged["wall_time_s"] = sum(run["wall_time_s"] for run in runs)
  for run in runs[1:]:
    for name, entry in run["methods"].items():
      if name not in merged["methods"]:
        merged["methods"][name] = entry
        continue
      old = merged["methods"][name]
      grid = old["grid_val_loss"] + entry["grid_val_loss"]
      best = min((old, entry), key=chosen_score)
      merged["methods"][name] = {
        **best,
        **{key: old[key] for key in SPEED_KEYS if key in old},
        "grid_val_loss": grid,
        "at_edge": grid_edges(best["lr"], best["coef"], grid),
      }
  return merged


def chosen_score(entry: dict[str, Any]) -> float:
  """The validation score of an entry's chosen setting."""
  return next(
    score
    for lr, coef, score in entry["grid_val_loss"]
    if (lr, coef) == (entry["lr"], entry["coef"])
  )


def coef_upper(name: str) -> float | None:
  """The largest coefficient method ``name`` takes (None: unbounded)."""
  return None if name in ("adamw", "l2_init") else 1.0


def apply(args: argparse.Namespace) -> dict[str, Any]:
  """Sets ``args`` to run each method at its setting chosen in ``args.from_selection``.

  ``--methods`` (default: every method of the selection) must be methods the
  selection chose for; each runs at its chosen coefficient and learning
  rate, or over ``--lr`` when given (the learning rate swept at the chosen
  coefficient: a grid extension along the learning rate).

  Args:
    args: parsed flags, with ``given`` (the flags set on the command line),
      ``methods``, ``lr``, ``lrs`` and ``coefs``; changed in place.

  Returns:
    The record of the choice: the files and each method's chosen setting.

  Raises:
    ValueError: naming the flag, for a coefficient flag given with it (the
      selection sets it), a method the files did not choose for, a protocol
      flag that differs from the selection's, or a choice at an edge of its
      grid (the grid to extend).
  """
  chosen = load(args.from_selection)
  coef_flags = sorted(
    {
      spec.flag
      for spec in methods_lib.METHODS.values()
      if spec.flag and spec.flag[2:].replace("-", "_") in args.given
    }
  )
  if coef_flags:
    raise ValueError(
      f"{', '.join(coef_flags)}: --from-selection runs each method at its chosen "
      "coefficient; leave these flags out."
    )
  _check_protocol(args, chosen["config"])
  if "methods" in args.given:
    missing = [m for m in args.methods if m not in chosen["methods"]]
    if missing:
      raise ValueError(
        f"--methods: {', '.join(missing)} not in --from-selection's files "
        f"(they chose for {', '.join(chosen['methods'])})"
      )
  else:
    args.methods = tuple(chosen["methods"])
  for name in args.methods:
    entry = chosen["methods"][name]
    _check_inside(name, entry, sweep_lr="lr" in args.given)
    args.coefs[name] = (entry["coef"],)
    args.lrs[name] = args.lr if "lr" in args.given else (entry["lr"],)
  return {
    "files": args.from_selection,
    "chosen": {
      name: {
        "lr": chosen["methods"][name]["lr"],
        "coef": chosen["methods"][name]["coef"],
      }
      for name in args.methods
    },
  }


def _check_protocol(args: argparse.Namespace, config: dict[str, Any]) -> None:
  """The flags that fix the protocol equal the selection's."""
  for key in PROTOCOL_FLAGS:
    if key in config and config[key] != getattr(args, key, config[key]):
      flag = "--" + key.replace("_", "-")
      raise ValueError(
        f"{flag} {getattr(args, key)} differs from --from-selection's "
        f"{config[key]}: a chosen setting holds for its own protocol only."
      )


def _check_inside(name: str, entry: dict[str, Any], sweep_lr: bool) -> None:
  """A chosen setting inside its grid (or at its bound) before it is reported."""
  edges = [
    edge
    for edge in grid_edges(entry["lr"], entry["coef"], entry["grid_val_loss"])
    if not (edge == "--lr" and sweep_lr)
    and not (edge == "coef" and entry["coef"] == coef_upper(name))
  ]
  if edges:
    flag = methods_lib.METHODS[name].flag or "--lr"
    axis = " and ".join(edges).replace("coef", flag)
    raise ValueError(
      f"--from-selection: {name}'s chosen setting (lr {entry['lr']:g}, coef "
      f"{entry['coef']:g}) lies at the edge of its grid in {axis}; run a "
      "grid extension beyond it and add its file."
    )
