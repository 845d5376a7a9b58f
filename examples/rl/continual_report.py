"""Tables and a figure from runs of ``examples.rl.continual``.

Merges the JSON files of several runs (one method each, or several), prints
Markdown tables: per game and visit, each method's score, the fresh agent's,
and their paired per-seed gap with its 95% t interval; the gap over the later
visits; the weights and features at the end of the sequence. Draws one panel
per game (the gap against the visit) and one of the summed weight norm over
the whole sequence. Needs matplotlib (the [plots] extra) and scipy.

  python -m examples.rl.continual_report examples/rl/results/continual_*.json \\
      --figure examples/rl/figures/continual.png
"""

from __future__ import annotations

from collections.abc import Sequence
import json
from typing import Any

import numpy as np

from examples import cli
from examples.rl import continual
from examples.rl import plot as rl_plot


def merge(paths: Sequence[str]) -> dict[str, Any]:
  """The runs' methods in one results dict; their configs must agree."""
  merged: dict[str, Any] = {}
  for path in paths:
    with open(path) as file:
      run = json.load(file)
    if not merged:
      merged = {**run, "methods": {}}
    elif _protocol(run["config"]) != _protocol(merged["config"]):
      raise ValueError(
        f"{path}: its protocol ({_protocol(run['config'])}) differs from "
        f"the first file's ({_protocol(merged['config'])}); merge runs of "
        "one protocol only."
      )
    merged["methods"].update(run["methods"])
  merged["summary"] = continual.summarize(merged)
  return merged


def _protocol(config: dict[str, Any]) -> tuple[Any, ...]:
  keys = ("games", "cycles", "steps_per_visit", "seeds", "seed", "num_envs")
  return tuple(str(config[k]) for k in keys)


def table(results: dict[str, Any]) -> str:
  """Markdown: per game and visit, score / fresh / gap ± CI per method."""
  methods = list(results["summary"])
  header = "| game | visit | " + " | ".join(
    f"{m}: score (fresh), gap ± 95% CI" for m in methods
  )
  lines = [header + " |", "|---|---|" + "---|" * len(methods)]
  rows = zip(*(results["summary"][m] for m in methods))
  for cells in rows:
    game, cycle = cells[0]["game"], cells[0]["cycle"]
    values = [
      f"{c['score_mean']:.2f} ({c['fresh_mean']:.2f}), "
      + _plus_minus(c["gap_mean"], c["gap_ci95"])
      for c in cells
    ]
    lines.append(f"| {game} | {cycle + 1} | " + " | ".join(values) + " |")
  return "\n".join(lines)


def later_visits(results: dict[str, Any]) -> str:
  """Markdown: per method, the gap over every visit after the first cycle.

  Per seed, the mean gap over the later visits of all games; then the mean
  and 95% t interval over seeds, and the paired difference to vanilla.
  """
  if results["config"]["cycles"] < 2:
    return "(one cycle: no later visits to compare)"
  per_seed = {m: _later_gaps(results, m) for m in results["methods"]}
  lines = [
    "| method | mean gap, later visits (± 95% CI) | minus vanilla (± 95% CI) |",
    "|---|---|---|",
  ]
  for method, gaps in per_seed.items():
    versus = "-"
    if "vanilla" in per_seed and method != "vanilla":
      diff = gaps - per_seed["vanilla"]
      versus = _plus_minus(np.mean(diff), _ci(diff))
    lines.append(
      f"| {method} | {_plus_minus(np.mean(gaps), _ci(gaps))} | {versus} |"
    )
  return "\n".join(lines)


def end_of_sequence(results: dict[str, Any]) -> str:
  """Markdown: per method, the weights and features after the last visit.

  The summed weight norm after the first update and, as every other column,
  over the last ``final_fraction`` of the last visit's updates; the dormant
  fraction and the effective rank also at the end of the first visit. Means
  over seeds.
  """
  visits = len(next(iter(results["methods"].values()))["visits"])
  lines = [
    f"| method | summed weight norm, start -> end | dormant fraction, visit 1 "
    f"-> visit {visits} | effective rank, visit 1 -> visit {visits} | policy "
    f"entropy, visit {visits} |",
    "|---|---|---|---|---|",
  ]
  for method, run in results["methods"].items():
    first, last = run["visits"][0], run["visits"][-1]
    start = _seed_mean([norms[0] for norms in first["weight_norms"]])
    end = _seed_mean(last["final"]["weight_norms"])
    cells = [f"{start:.1f} -> {end:.1f}"]
    for name, digits in (("dormant_fraction", 2), ("effective_rank", 1)):
      before, after = (_seed_mean(v["final"][name]) for v in (first, last))
      cells.append(f"{before:.{digits}f} -> {after:.{digits}f}")
    cells.append(f"{_seed_mean(last['final']['entropy']):.2f}")
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _seed_mean(values: Any) -> float:
  return float(np.mean(rl_plot.as_array(values)))


def _later_gaps(results: dict[str, Any], method: str) -> np.ndarray:
  run = results["methods"][method]
  gaps = [
    rl_plot.as_array(v["score"])
    - rl_plot.as_array(run["fresh"][v["game"]]["score"])
    for v in run["visits"]
    if v["cycle"] > 0
  ]
  return np.nanmean(np.stack(gaps), axis=0)


def _ci(values: np.ndarray) -> float:
  return continual._half_width(values)  # noqa: SLF001


def _plus_minus(mean: float, half_width: float | None) -> str:
  """``+1.23 ± 0.45``; below two seeds the interval is undefined, not 0."""
  if half_width is None or np.isnan(half_width):
    return f"{mean:+.2f} (under 2 seeds, no CI)"
  return f"{mean:+.2f} ± {half_width:.2f}"


def figure(results: dict[str, Any], path: str) -> None:
  """A panel per game (gap against visit), and the weight norms."""
  plt = rl_plot.pyplot()
  games = results["config"]["games"]
  fig, axes = plt.subplots(
    1, len(games) + 1, figsize=(3.2 * (len(games) + 1), 3.2)
  )
  for method, rows in results["summary"].items():
    for ax, game in zip(axes, games):
      mine = [r for r in rows if r["game"] == game]
      visits = [r["cycle"] + 1 for r in mine]
      ax.errorbar(
        visits,
        [r["gap_mean"] for r in mine],
        yerr=rl_plot.as_array([r["gap_ci95"] for r in mine]),
        marker="o",
        capsize=3,
        label=method,
      )
      ax.axhline(0.0, color="gray", lw=0.8)
      ax.set_xticks(visits)
      ax.set_title(game)
      ax.set_xlabel("visit")
    visits = results["methods"][method]["visits"]
    norms = np.concatenate(
      [rl_plot.as_array(v["weight_norms"]) for v in visits], axis=-1
    )
    per_visit = results["config"]["num_updates_per_visit"]
    traced = np.array(results["config"]["trace_updates"])
    updates = np.concatenate(
      [i * per_visit + traced for i in range(len(visits))]
    )
    axes[-1].plot(updates, np.mean(norms, axis=0), label=method)
  axes[0].set_ylabel("score minus fresh agent's")
  axes[-1].set_title("sum of layer weight norms")
  axes[-1].set_xlabel("update (all visits)")
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = cli.parser(__doc__)
  parser.add_argument("json", nargs="+", help="from examples.rl.continual")
  parser.add_argument("--figure", help="the PNG to write")
  args = parser.parse_args(argv)
  results = merge(args.json)
  print(table(results))
  print()
  print(later_visits(results))
  print()
  print(end_of_sequence(results))
  if args.figure:
    figure(results, args.figure)
  return results


if __name__ == "__main__":
  main()
