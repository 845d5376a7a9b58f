"""The tables and figure of the shifting-observation protocol, for RESULTS.md.

Reads ``examples.rl.shifting``'s JSON files: calibration runs (``--calibrate``)
and method runs. From the per-phase numbers it builds the calibration table
(vanilla's gap per budget) and the methods' table: each method's gap on
phases 2..K (continual minus fresh return, per seed), its difference from
vanilla paired by seed with Holm's correction over the table
(``examples.paper.stats.holm``: Bonferroni intervals), the power of that
difference (``shifting.power``), the share of vanilla's gap it recovers,
and the collapse rate and entropy of the continual and fresh agents. A
selection file (``examples.rl.selection``) adds the table of the settings
tried on the selection seeds, and a run made ``--from-selection`` names each
method's chosen setting. The figure shows, per phase, each method's continual and fresh returns. From
the repository root::

  python -m examples.rl.shifting_report \\
      --calibration examples/rl/results/shifting_calibration_k10.json \\
      --selection examples/rl/results/shifting_selection.json \\
      --runs examples/rl/results/shifting.json \\
      --figure examples/rl/figures/shifting.png --write examples/rl/RESULTS.md
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
from typing import Any

import numpy as np

from examples.paper import stats
from examples.paper import summarize_results
from examples.rl import selection
from examples.rl import shifting


def load(path: str) -> dict[str, Any]:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def later(values: Any) -> np.ndarray:
  """``[seed][phase]`` values (None as NaN), phases 2..K only."""
  return np.array(values, float)[:, 1:]


def calibration_lines(runs: Sequence[dict[str, Any]]) -> list[str]:
  """One row per (phases, steps per phase) of the calibration runs."""
  lines = [
    "| phases K | steps per phase | vanilla continual | fresh | gap (continual − fresh) "
    "| collapsed, continual / fresh | wall time |",
    "|---|---|---|---|---|---|---|",
  ]
  for run in runs:
    for row in run["calibration"]:
      gap = row["gap"]
      rates = row["collapse_rate"]
      lines.append(
        f"| {run['config']['phases']} | {row['steps_per_phase']:,} | "
        f"{row['continual_mean']:.1f} | {row['fresh_mean']:.1f} | "
        f"{gap['mean']:+.1f} [{gap['low']:+.1f}, {gap['high']:+.1f}] | "
        f"{rates['continual']:.2f} / {rates['fresh']:.2f} | "
        f"{row['vanilla']['wall_time_s']:.0f} s |"
      )
  return lines


def selection_lines(results: dict[str, Any]) -> list[str]:
  """The settings tried per method, their scores, and the one chosen (bold)."""
  config = results["config"]
  lines = [
    f"Selection seeds {config['seed']}..{config['seed'] + config['seeds'] - 1}"
    f" ({config['seeds']}); score: the continual agent's return, mean over "
    f"phases 2..K and seeds; wall time {results['wall_time_s'] / 60:.0f} min. "
    "Vanilla's learning rate first; every other method at it.",
    "",
    "| method | flag | values tried: continual return | chosen |",
    "|---|---|---|---|",
  ]
  for name, entry in results["methods"].items():
    tried = ", ".join(
      (
        f"**{value:g}: {selection.score_text(score)}**"
        if value == entry["chosen"]
        else f"{value:g}: {selection.score_text(score)}"
      )
      for value, score in entry["tried"]
    )
    edge = f" (at the {entry['at_edge']} edge)" if entry["at_edge"] else ""
    flag = "--" + entry["field"].replace("_", "-")
    lines.append(f"| {name} | {flag} | {tried} | {entry['chosen']:g}{edge} |")
  return lines


def _setting(results: dict[str, Any], name: str) -> str:
  """``name``, with its chosen setting in a run made ``--from-selection``."""
  chosen = results.get("selection", {}).get("chosen", {}).get(name)
  if not chosen:
    return name
  fields = [f"{key} {value:g}" for key, value in chosen.items() if key != "lr"]
  return f"{name} ({', '.join(fields) or 'lr ' + format(chosen['lr'], 'g')})"


def method_lines(results: dict[str, Any]) -> list[str]:
  """The methods' table: returns, gaps, differences from vanilla, power, collapse.

  Two differences from vanilla, each corrected over the table: the
  continual return's (did the agent gain?) and the gap's (did it lose less
  against a fresh agent of its own?).
  """
  methods = results["methods"]
  gaps = {
    name: np.nanmean(
      later(run["phase_returns"]) - later(run["fresh_returns"]), axis=1
    )
    for name, run in methods.items()
  }
  others = [name for name in methods if name != "vanilla"]
  comparisons = (
    stats.holm({name: (gaps[name], gaps["vanilla"]) for name in others})
    if "vanilla" in methods and others
    else {}
  )
  # A gap also narrows when the fresh agents get worse: the continual
  # return's own difference from vanilla's says whether the agent gained.
  continuals = {
    name: np.nanmean(later(run["phase_returns"]), axis=1)
    for name, run in methods.items()
  }
  continual_comparisons = (
    stats.holm(
      {name: (continuals[name], continuals["vanilla"]) for name in others}
    )
    if "vanilla" in methods and others
    else {}
  )
  vanilla_gap = float(np.mean(gaps["vanilla"])) if "vanilla" in gaps else np.nan
  lines = [
    "| method | continual return | − vanilla's (Holm p) | fresh return | "
    "gap (continual − fresh) | − vanilla's gap (Holm p) | "
    "share of vanilla's gap recovered | power | "
    "collapsed, continual / fresh | entropy, continual / fresh |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name, run in methods.items():
    continual = continuals[name]
    fresh = np.nanmean(later(run["fresh_returns"]), axis=1)
    comparison = comparisons.get(name)
    versus = power = share = gained = "—"
    if name in continual_comparisons:
      gain = continual_comparisons[name]
      gained = f"{_returns(gain.difference)} ({gain.holm_p:.3f})"
    if comparison:
      versus = f"{_returns(comparison.difference)} ({comparison.holm_p:.3f})"
      share = f"{-comparison.difference.mean / vanilla_gap:.0%}"
      result = shifting.power(gaps["vanilla"], gaps[name] - gaps["vanilla"])
      power = f"half-width {result.half_width:.1f} vs {result.target:.1f}: " + (
        "enough" if result.enough else f"{result.seeds_needed} seeds needed"
      )
    collapsed = [
      np.mean(later(run[f"{kind}_collapsed"])) for kind in ("phase", "fresh")
    ]
    entropy = [
      np.nanmean(later(run[f"{kind}_entropy"])) for kind in ("phase", "fresh")
    ]
    lines.append(
      f"| {_setting(results, name)} | {continual.mean():.1f} | {gained} | "
      f"{fresh.mean():.1f} | "
      f"{_returns(stats.paired(continual, fresh))} | {versus} | {share} | {power} | "
      f"{collapsed[0]:.2f} / {collapsed[1]:.2f} | "
      f"{entropy[0]:.2f} / {entropy[1]:.2f} |"
    )
  return lines


def _returns(difference: stats.Difference) -> str:
  """A difference of returns and its interval, to one decimal."""
  return (
    f"{difference.mean:+.1f} [{difference.low:+.1f}, {difference.high:+.1f}]"
  )


def settings_line(results: dict[str, Any]) -> str:
  config = results["config"]
  chosen = results.get("selection", {}).get("chosen", {})
  lr = (
    f"learning rate {next(iter(chosen.values()))['lr']:g} (vanilla's chosen)"
    if chosen
    else f"learning rate {config['lr']:g}"
  )
  return (
    f"Settings: {config['env']}, {lr}, {config['phases']} phases × "
    f"{config['steps_per_phase']:,} steps ({config['num_updates_per_phase']} "
    f"updates), {config['seeds']} seeds (from {config['seed']}); wall time "
    f"{results['wall_time_s'] / 60:.1f} min. Numbers are means over phases "
    "2..K and seeds; a gap or difference is paired by seed, 95% t interval "
    "(Bonferroni over the table where Holm's p is given)."
  )


def figure(results: dict[str, Any], path: str) -> None:
  """Per phase and method: the continual return, and its gap to a fresh agent."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, (returns, gaps) = plt.subplots(1, 2, figsize=(10, 4))
  for name, run in results["methods"].items():
    continual = np.array(run["phase_returns"], float)
    fresh = np.array(run["fresh_returns"], float)
    phases = np.arange(1, continual.shape[1] + 1)
    label = _setting(results, name)
    returns.plot(phases, np.nanmean(continual, axis=0), marker=".", label=label)
    gaps.plot(phases, np.nanmean(continual - fresh, axis=0), marker=".")
  gaps.axhline(0.0, color="grey", lw=0.8)
  returns.set(
    xlabel="phase (a new permutation and sign flip of the observation)",
    ylabel="continual agent's return, last 10%",
    title=f"{results['config']['env']}, {results['config']['seeds']} seeds",
  )
  gaps.set(
    xlabel="phase",
    ylabel="continual − fresh return (mean over seeds)",
    title="the gap to a fresh agent on the same phase",
  )
  returns.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def markdown(
  calibration: Sequence[str],
  runs: Sequence[str],
  figure_path: str | None,
  selection: str | None = None,
) -> str:
  """The calibration table, the selection's, then one methods' table per run.

  The figure is drawn from the last run.
  """
  lines: list[str] = []
  if calibration:
    lines += ["### Calibration: vanilla PPO alone", ""]
    lines += calibration_lines([load(path) for path in calibration]) + [""]
  if selection:
    lines += ["### Selection: each method's setting, on seeds of its own", ""]
    lines += selection_lines(load(selection)) + [""]
  for index, path in enumerate(runs):
    results = load(path)
    seeds = results["config"]["seeds"]
    title = (
      f"Methods at their selected settings, {seeds} seeds"
      if "selection" in results
      else f"Methods at the default budget, {seeds} seeds"
    )
    lines += [f"### {title}", "", settings_line(results), ""]
    lines += method_lines(results) + [""]
    if figure_path and index == len(runs) - 1:
      figure(results, figure_path)
      name = figure_path.split("/")[-1]
      lines += [f"![continual return and gap per phase](figures/{name})"]
  return "\n".join(lines).rstrip("\n")


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--calibration", default="", help="calibration JSON files, comma-separated"
  )
  parser.add_argument(
    "--runs",
    default="",
    help="shifting JSON files of the methods, comma-separated",
  )
  parser.add_argument(
    "--selection", help="the JSON of python -m examples.rl.selection"
  )
  parser.add_argument("--figure", help="write the figure to this PNG")
  parser.add_argument(
    "--write", help="replace the tables between FILE's markers"
  )
  args = parser.parse_args(argv)
  calibration = [path for path in args.calibration.split(",") if path]
  runs = [path for path in args.runs.split(",") if path]
  text = markdown(calibration, runs, args.figure, args.selection)
  if not args.write:
    print(text)
    return
  summarize_results.write_tables(args.write, text)


if __name__ == "__main__":
  main()
