"""What the RL scripts write to their JSON files.

The versions of what produced a run, its metrics as JSON lists, and the
returns the scripts score a run by.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import numpy as np

from examples.paper import protocols
from examples.rl.train import Metrics


def versions() -> dict[str, str]:
  """Versions of what produced the results, for the JSON."""
  return {
    **protocols.versions(),
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
