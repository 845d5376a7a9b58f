"""Tables and a figure from runs of ``examples.rl.continual``.

Merges the JSON files of several runs (one method each, or several), prints
Markdown tables: per game and visit, each method's score, the fresh agent's,
and their paired per-seed gap with its 95% t interval; the gap over the later
visits; the weights and features at the end of the sequence. Draws one panel
per game (the gap against the visit) and one of the summed weight norm over
the whole sequence. Needs matplotlib (the [plots] extra) and scipy.

With a random policy's scores (``python -m examples.rl.scores``), it also
prints the later visits' scores normalized per game (0 a random policy, 1
the method's fresh agent), averaged over games (:func:`normalized_table`).

  python -m examples.rl.continual_report examples/rl/results/continual_*.json \\
      --random-scores examples/rl/results/minatar_random.json \\
      --figure examples/rl/figures/continual.png
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
import os
from typing import Any

import numpy as np

from examples import cli
from examples.paper import stats
from examples.rl import continual
from examples.rl import plot as rl_plot
from examples.rl import scores

# The random policy's scores that --random-scores reads by default.
RANDOM_SCORES = os.path.join(
  cli.REPOSITORY, "examples", "rl", "results", "minatar_random.json"
)
# A game's scale (fresh minus random) within this many of the summed
# standard errors of its two ends is noise: the game is left out.
NOISE_MULTIPLE = 2.0


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


def _plus_minus(
  mean: float, half_width: float | None, signed: bool = True
) -> str:
  """``+1.23 ± 0.45``; below two seeds the interval is undefined, not 0."""
  value = f"{mean:+.2f}" if signed else f"{mean:.2f}"
  if half_width is None or np.isnan(half_width):
    return f"{value} (under 2 seeds, no CI)"
  return f"{value} ± {half_width:.2f}"


@dataclasses.dataclass(frozen=True)
class Scale:
  """One method's scale on one game: its fresh agent's score minus random.

  Attributes:
    random: the random policy's mean return.
    random_stderr: its standard error.
    fresh: the fresh agent's score, the mean over seeds (NaN if none).
    fresh_stderr: its standard error over seeds (0 below two seeds).
  """

  random: float
  random_stderr: float
  fresh: float
  fresh_stderr: float

  @property
  def size(self) -> float:
    return self.fresh - self.random

  @property
  def margin(self) -> float:
    """The size below which the scale is noise."""
    return NOISE_MULTIPLE * (self.random_stderr + self.fresh_stderr)

  @property
  def resolved(self) -> bool:
    return bool(np.isfinite(self.size) and self.size > self.margin)


@dataclasses.dataclass(frozen=True)
class NormalizedVisits:
  """Per method and span of visits, the normalized score of each seed.

  Attributes:
    spans: per span's label, the visits (counted from 1) it averages.
    per_visit: per method, ``[visit, seed]``: the normalized score of each
      visit, every visit from the first (NaN for the games left out).
    per_seed: per method and span's label, ``[seed]``: the mean normalized
      score over the span's visits to the games kept (NaN where none).
    scales: per method and game, its :class:`Scale`.
    left_out: per game left out of every average, the reason.
  """

  spans: dict[str, list[int]]
  per_visit: dict[str, np.ndarray]
  per_seed: dict[str, dict[str, np.ndarray]]
  scales: dict[str, dict[str, Scale]]
  left_out: dict[str, str]


def load_random_scores(path: str, games: Sequence[str]) -> dict[str, Any]:
  """``examples.rl.scores``' JSON, checked to hold every one of ``games``."""
  with open(path) as file:
    random_scores = json.load(file)
  missing = [g for g in games if g not in random_scores["games"]]
  if missing:
    raise ValueError(
      f"--random-scores: {path} has no random policy's score for "
      f"{', '.join(missing)}; run python -m examples.rl.scores --games "
      f"{','.join(games)} --out {path}."
    )
  return random_scores


def scales(
  results: dict[str, Any], random_scores: dict[str, Any]
) -> dict[str, dict[str, Scale]]:
  """Per method and game, the fresh agent's and the random policy's scores.

  The fresh score is the mean over seeds: a seed's own fresh agent can score
  at the random policy's level, and a ratio over it would explode.
  """
  scaled: dict[str, dict[str, Scale]] = {}
  for method, run in results["methods"].items():
    scaled[method] = {}
    for game in results["config"]["games"]:
      fresh = rl_plot.as_array(run["fresh"][game]["score"])
      fresh = fresh[np.isfinite(fresh)]
      random = random_scores["games"][game]
      scaled[method][game] = Scale(
        random=_float(random["mean"]),
        random_stderr=_float(random["stderr"]),
        fresh=float(np.mean(fresh)) if len(fresh) else float("nan"),
        fresh_stderr=(
          float(np.std(fresh, ddof=1) / np.sqrt(len(fresh)))
          if len(fresh) > 1
          else 0.0
        ),
      )
  return scaled


def _float(value: float | None) -> float:
  return float("nan") if value is None else float(value)


def normalized_visits(
  results: dict[str, Any], random_scores: dict[str, Any]
) -> NormalizedVisits:
  """Each later visit's score, normalized per game, averaged over games.

  Per method, seed and visit, ``scores.normalized_score``: (score - random)
  / (fresh - random), the random policy's mean return and the method's
  fresh agent's score on the game, the mean over seeds (:func:`scales`). A
  game is left out of every method's average (so that the methods average
  the same games) where for some method the scale is noise: fresh minus
  random at most ``NOISE_MULTIPLE`` times the random score's standard error
  plus the fresh seeds' (or undefined). Two spans: the first cycle's visits
  after the first (games met for the first time, after others), and the
  later cycles' visits (games met again). Per seed, the mean over a span's
  visits to the games kept.
  """
  games = results["config"]["games"]
  scaled = scales(results, random_scores)
  left_out = {}
  for game in games:
    noise = [
      f"{method}: {s.size:.2f} <= {s.margin:.2f}"
      for method, by_game in scaled.items()
      if not (s := by_game[game]).resolved
    ]
    if noise:
      left_out[game] = (
        "fresh - random within noise, "
        f"{NOISE_MULTIPLE:g} x (SE random + SE fresh) ({'; '.join(noise)})"
      )
  spans = _spans(len(games), results["config"]["cycles"])
  per_visit = {}
  per_seed: dict[str, dict[str, np.ndarray]] = {}
  for method, run in results["methods"].items():
    visits = []
    for visit in run["visits"]:
      score = rl_plot.as_array(visit["score"])
      scale = scaled[method][visit["game"]]
      if visit["game"] in left_out:
        visits.append(np.full_like(score, np.nan))
      else:
        visits.append(
          scores.normalized_score(
            score, scale.random, scale.fresh, games=[visit["game"]]
          )
        )
    per_visit[method] = np.stack(visits)
    per_seed[method] = {
      label: _nan_mean(per_visit[method][np.array(numbers) - 1])
      for label, numbers in spans.items()
    }
  return NormalizedVisits(spans, per_visit, per_seed, scaled, left_out)


def _spans(games: int, cycles: int) -> dict[str, list[int]]:
  """The visits (from 1) of the first cycle after the first, and later."""
  spans = {}
  if games > 1:
    spans[f"visits 2..{games} (cycle 1)"] = list(range(2, games + 1))
  if cycles > 1:
    cycle = "cycle 2" if cycles == 2 else f"cycles 2..{cycles}"
    spans[f"visits {games + 1}..{games * cycles} ({cycle})"] = list(
      range(games + 1, games * cycles + 1)
    )
  return spans


def _nan_mean(values: np.ndarray) -> np.ndarray:
  """The mean over axis 0 of the finite values; NaN where there are none."""
  finite = np.isfinite(values)
  count = np.sum(finite, axis=0)
  total = np.sum(np.where(finite, values, 0.0), axis=0)
  return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def normalized_table(
  results: dict[str, Any], random_scores: dict[str, Any]
) -> str:
  """Markdown: the scales per game, then the normalized scores per method.

  Per method and span of visits (:func:`normalized_visits`): the mean over
  seeds of the per-seed normalized score with its 95% t interval, and its
  difference from vanilla's, paired by seed; then a note that names the
  games left out and why.
  """
  normalized = normalized_visits(results, random_scores)
  methods = list(results["methods"])
  lines = [
    "| game | random (± SE) | "
    + " | ".join(
      f"{m}: fresh - random (noise); normalized, per visit" for m in methods
    )
    + " |",
    "|---|---|" + "---|" * len(methods),
  ]
  for game in results["config"]["games"]:
    first = normalized.scales[methods[0]][game]
    cells = [
      _scale_text(normalized, method, game, results) for method in methods
    ]
    lines.append(
      f"| {game} | {first.random:.3f} ± {first.random_stderr:.3f} | "
      + " | ".join(cells)
      + " |"
    )
  header = "| method |"
  for label in normalized.spans:
    header += f" {label}: normalized (± 95% CI) | minus vanilla |"
  lines += ["", header, "|---|" + "---|---|" * len(normalized.spans)]
  vanilla = normalized.per_seed.get("vanilla")
  for method, spans in normalized.per_seed.items():
    cells = []
    for label, values in spans.items():
      cells.append(_interval_text(values, signed=False))
      versus = "-"
      if vanilla is not None and method != "vanilla":
        versus = _interval_text(values, vanilla[label])
      cells.append(versus)
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  kept = [g for g in results["config"]["games"] if g not in normalized.left_out]
  note = (
    "Normalized per game: (score - random) / (fresh - random), the fresh "
    "agent's score the mean over its seeds; 0 is the random policy, 1 the "
    "method's fresh agent. Per seed the mean over the span's visits to the "
    f"games kept ({', '.join(kept) or 'none'}), then over seeds."
  )
  for game, reason in normalized.left_out.items():
    note += f" Left out: {game}, {reason}."
  return "\n".join([*lines, "", note])


def _scale_text(
  normalized: NormalizedVisits,
  method: str,
  game: str,
  results: dict[str, Any],
) -> str:
  """``0.18 (0.15); 2.98, 3.43``: the scale, its noise, each visit's score.

  Each visit's normalized score is its mean over seeds; "left out" for a
  game left out.
  """
  scale = normalized.scales[method][game]
  text = f"{scale.size:.2f} ({scale.margin:.2f}); "
  if game in normalized.left_out:
    return text + "left out"
  visits = results["methods"][method]["visits"]
  means = [
    _nan_mean(values)
    for values, visit in zip(normalized.per_visit[method], visits)
    if visit["game"] == game
  ]
  return text + ", ".join(f"{mean:.2f}" for mean in means)


def _interval_text(
  values: np.ndarray,
  baseline: np.ndarray | None = None,
  signed: bool = True,
) -> str:
  """The mean of ``values`` (minus ``baseline``, paired) and its interval.

  Seeds without a value on either side are left out.
  """
  if baseline is None:
    baseline = np.zeros_like(values)
  finite = np.isfinite(values) & np.isfinite(baseline)
  if not np.any(finite):
    return "(no game kept)"
  difference = stats.paired(values[finite], baseline[finite])
  half_width = (difference.high - difference.low) / 2
  return _plus_minus(difference.mean, half_width, signed)


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
  parser.add_argument(
    "--random-scores",
    help="the random policy's scores, from examples.rl.scores (default: "
    f"{cli.recorded_path(RANDOM_SCORES)}, where it exists)",
  )
  parser.add_argument("--figure", help="the PNG to write")
  args = parser.parse_args(argv)
  results = merge(args.json)
  print(table(results))
  print()
  print(later_visits(results))
  print()
  random_path = args.random_scores
  if random_path is None and os.path.exists(RANDOM_SCORES):
    random_path = RANDOM_SCORES
  if random_path is None:
    print(
      f"(no random policy's scores at {cli.recorded_path(RANDOM_SCORES)}: "
      "no normalized table; python -m examples.rl.scores writes them)"
    )
  else:
    random_scores = load_random_scores(random_path, results["config"]["games"])
    print(normalized_table(results, random_scores))
  print()
  print(end_of_sequence(results))
  if args.figure:
    figure(results, args.figure)
  return results


if __name__ == "__main__":
  main()
