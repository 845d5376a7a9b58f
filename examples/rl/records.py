"""What the RL scripts write to their JSON files: traces, summaries, versions.

``train`` measures its :class:`~examples.rl.train.Metrics` after every
update. A run's JSON keeps, per seed:

* the summaries the tables are made of, computed from every update before
  anything is thinned: :func:`recent_return` (a script's score), and
  ``final``, the mean of each metric over the last ``FINAL_FRACTION`` of the
  updates (:func:`final_means`);
* the per-update traces the figures are drawn from, thinned to at most
  ``TRACE_POINTS`` points (:func:`trace`): the values after updates 1,
  1 + k, 1 + 2k, ... and the last, with k (``trace_every``) and the updates
  (``trace_updates``) in the JSON's config. ``returns`` and ``episodes``
  count every episode: a point holds those that ended since the previous
  point. Thinned so, a run's file stays small at any budget (a 10-visit
  continual run of 3 seeds is about 220 kB, where every update took 2.4 MB).
"""

from __future__ import annotations

import importlib.metadata
import math
from typing import Any

import numpy as np

from examples import cli
from examples.rl.train import Metrics

TRACE_POINTS = 32
FINAL_FRACTION = 0.1
# Measured at an update, not counted over updates: thinned by keeping the
# traced updates' values, and averaged over the last updates by final_means.
STATE_METRICS = (
  "weight_norms",
  "layer_norms",
  "dormant_fraction",
  "effective_rank",
  "entropy",
  "value_error",
)


def versions() -> dict[str, str]:
  """Versions of what produced the results, for the JSON."""
  return {
    **cli.versions(),
    "gymnax": importlib.metadata.version("gymnax"),
  }


def json_ready(values: Any) -> list[Any]:
  """Nested lists of floats, NaN as None (JSON has no NaN)."""
  array = np.asarray(values, dtype=float)
  return np.where(np.isnan(array), None, array).tolist()


def recent_return(measured: Metrics, fraction: float = 0.1) -> np.ndarray:
  """Per seed, the mean return of the episodes of the last updates.

  Args:
    measured: metrics of ``[seed, update]``.
    fraction: of the updates, counted from the end (at least one update).
  """
  updates = max(1, round(np.shape(measured.returns)[-1] * fraction))
  returns = np.asarray(measured.returns, float)[..., -updates:]
  episodes = np.asarray(measured.episodes, float)[..., -updates:]
  total = np.sum(np.where(episodes > 0, returns * episodes, 0.0), axis=-1)
  count = np.sum(episodes, axis=-1)
  return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def trace_every(num_updates: int, points: int = TRACE_POINTS) -> int:
  """The smallest k that traces ``num_updates`` in at most ``points``."""
  if points < 2:
    raise ValueError(f"trace_every: points={points}; trace at least 2.")
  return max(1, math.ceil((num_updates - 1) / (points - 1)))


def traced_updates(num_updates: int, every: int) -> list[int]:
  """The updates a trace keeps (counted from 1): 1, 1 + every, ..., last."""
  kept = list(range(1, num_updates + 1, every))
  if kept[-1] != num_updates:
    kept.append(num_updates)
  return kept


def trace(measured: Metrics, every: int) -> dict[str, list[Any]]:
  """The metrics of ``[seed, update, ...]`` at the traced updates, for JSON.

  Each metric keeps its values after the updates of
  :func:`traced_updates`, except ``returns`` and ``episodes``: at a traced
  update, the mean return and the number of the episodes that ended after
  the previous traced update, up to this one (so no episode is dropped, and
  ``recent_return`` of a trace weighs every episode as the full run's does).
  """
  num_updates = np.shape(measured.returns)[1]
  kept = np.array(traced_updates(num_updates, every)) - 1
  starts = np.concatenate([[0], kept[:-1] + 1])
  returns = np.asarray(measured.returns, float)
  episodes = np.asarray(measured.episodes, float)
  summed = np.add.reduceat(
    np.where(episodes > 0, returns * episodes, 0.0), starts, axis=1
  )
  counted = np.add.reduceat(episodes, starts, axis=1)
  traced = {
    "returns": np.where(counted > 0, summed / np.maximum(counted, 1), np.nan),
    "episodes": counted,
    **{
      name: np.take(np.asarray(getattr(measured, name)), kept, axis=1)
      for name in STATE_METRICS
    },
  }
  return {name: json_ready(traced[name]) for name in Metrics._fields}


def final_means(
  measured: Metrics, fraction: float = FINAL_FRACTION
) -> dict[str, list[Any]]:
  """Per seed, each metric's mean over the last ``fraction`` of updates.

  ``returns`` is :func:`recent_return`'s (the episodes' mean); the metrics
  measured at each update are averaged over the updates. For JSON.
  """
  updates = max(1, round(np.shape(measured.returns)[1] * fraction))
  means = {
    name: np.mean(
      np.asarray(getattr(measured, name), float)[:, -updates:], axis=1
    )
    for name in STATE_METRICS
  }
  return {
    "returns": json_ready(recent_return(measured, fraction)),
    **{name: json_ready(value) for name, value in means.items()},
  }


def record(measured: Metrics) -> dict[str, Any]:
  """A run's metrics for its JSON: the traces and, under ``final``, means.

  Thinned as :func:`trace_config` of its number of updates says.
  """
  every = trace_every(np.shape(measured.returns)[1])
  return {**trace(measured, every), "final": final_means(measured)}


def trace_config(num_updates: int) -> dict[str, Any]:
  """How :func:`record` thins a run of ``num_updates``, for the config."""
  every = trace_every(num_updates)
  return {
    "trace_every": every,
    "trace_updates": traced_updates(num_updates, every),
    "final_fraction": FINAL_FRACTION,
  }
