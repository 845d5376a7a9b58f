"""Draws a JSON of ``examples.rl.ppo``: returns and plasticity metrics.

Four panels against environment steps: the episode return, the summed weight
norm, the fraction of dormant units and the effective rank of the last hidden
layer; per method the mean over seeds with its 95% t interval. Each point
is the mean over the traced updates of the last ``--window`` updates (the
JSON keeps every ``trace_every``-th, see ``examples.rl.records``); for the
return, the mean return of all the episodes that ended in them (an update
where none ended has no return of its own). Needs matplotlib (the [plots]
extra) and scipy.

  python -m examples.rl.plot --json /tmp/cartpole.json --out /tmp/cartpole.png
"""

from __future__ import annotations

from collections.abc import Sequence
import json
from typing import Any

import numpy as np

from examples import cli
from examples.paper import stats

PANELS = (
  ("returns", "episode return"),
  ("weight_norms", "sum of layer weight norms"),
  ("dormant_fraction", "fraction of dormant units (tau {dormant_tau})"),
  ("effective_rank", "effective rank (last hidden layer)"),
)


def pyplot() -> Any:
  """matplotlib's pyplot, drawing to files only."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(
      "examples.rl.plot needs matplotlib: pip install 'optax-swr[plots]'."
    ) from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def as_array(values: Any) -> np.ndarray:
  """``[seed][update]`` lists, ``None`` as NaN."""
  return np.array(values, dtype=float)


def windowed_mean(
  values: np.ndarray, weights: np.ndarray, window: int
) -> np.ndarray:
  """The weighted mean of each point's last ``window`` values, per seed.

  Args:
    values: ``[seed, point]``, a trace (NaN where there is none).
    weights: ``[seed, point]``: for returns, how many episodes each
      point's mean is over, so that the result is the mean return of the
      episodes that ended in the window.
    window: points per window, >= 1.

  Returns:
    ``[seed, point]``; NaN where the window holds no weight.
  """
  weights = np.where(np.isfinite(values), weights, 0.0)
  kernel = np.ones(window)

  def trailing(x: np.ndarray) -> np.ndarray:
    return np.convolve(x, kernel)[: len(x)]

  summed = np.apply_along_axis(trailing, 1, np.nan_to_num(values) * weights)
  counted = np.apply_along_axis(trailing, 1, weights)
  return np.where(
    counted > 0, summed / np.where(counted > 0, counted, 1), np.nan
  )


def mean_interval(values: np.ndarray) -> np.ndarray:
  """Per update, the mean over the seeds with a value and its 95% interval.

  Returns:
    ``[3, update]``: the means, the lower and the upper ends.
  """
  rows = []
  for column in values.T:
    finite = column[np.isfinite(column)]
    if finite.size:
      # The interval of a mean is the paired interval against 0.
      interval = stats.paired(finite, np.zeros_like(finite))
      rows.append((interval.mean, interval.low, interval.high))
    else:
      rows.append((np.nan, np.nan, np.nan))
  return np.array(rows).T


def plot(results: dict[str, Any], window: int) -> Any:
  """The figure of one JSON file."""
  plt = pyplot()
  config = results["config"]
  steps_per_update = config["num_envs"] * config["num_steps"]
  # Files written before traces were thinned hold every update.
  every = config.get("trace_every", 1)
  traced = config.get("trace_updates", range(1, config["num_updates"] + 1))
  steps = steps_per_update * np.array(traced)
  points = max(1, round(window / every))
  figure, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6))
  for axis, (name, label) in zip(axes, PANELS):
    means = []
    for color, (method, measured) in enumerate(results["methods"].items()):
      values = as_array(measured[name])
      weights = (
        as_array(measured["episodes"])
        if name == "returns"
        else np.ones_like(values)
      )
      values = windowed_mean(values, weights, points)
      mean, low, high = mean_interval(values)
      axis.plot(steps, mean, color=f"C{color}", label=method, linewidth=1.2)
      axis.fill_between(steps, low, high, color=f"C{color}", alpha=0.15)
      means.append(mean)
    # With few seeds an interval can be wide; the means set the scale.
    lowest, highest = np.nanmin(means), np.nanmax(means)
    margin = 0.15 * (highest - lowest) or 0.5
    axis.set_ylim(lowest - margin, highest + margin)
    axis.set_title(label.format(**config), fontsize=9)
    axis.set_xlabel("environment steps per seed", fontsize=8)
    axis.tick_params(labelsize=7)
  axes[0].legend(fontsize=7)
  figure.suptitle(
    f"PPO on {config['env']} | {config['seeds']} seeds, mean and 95% t "
    f"interval | each point: the mean over the last {points * every} "
    f"updates ({points} traced)",
    fontsize=9,
  )
  figure.tight_layout()
  return figure


def main(argv: Sequence[str] | None = None) -> None:
  parser = cli.parser(__doc__)
  parser.add_argument("--json", required=True, help="from examples.rl.ppo")
  parser.add_argument("--out", required=True, help="the PNG to write")
  parser.add_argument(
    "--window", type=int, default=10, help="updates per window"
  )
  args = parser.parse_args(argv)
  if args.window < 1:
    parser.error("--window must be at least 1")
  with open(args.json) as file:
    results = json.load(file)
  plot(results, args.window).savefig(args.out, dpi=120)


if __name__ == "__main__":
  main()
