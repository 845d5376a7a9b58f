"""Shifting observations: does a PPO agent that has trained before learn worse?

One agent per method and seed trains through ``--phases`` phases of one
gymnax environment, ``--steps-per-phase`` environment steps each. Each phase
shows the agent the observation vector through a fixed random permutation
with sign flips, drawn from the seed and the phase alone
(``envs.observation_shift``; the identity at the first phase), so the task's
dynamics and rewards never change, only what the inputs mean. The continual
agent carries its params and optimizer state from one phase to the next (its
environments restart under the new shift). Every phase is paired with a
fresh agent of the same method and seed, trained on that phase alone from
the same key: the first phase of the continual agent and its fresh agent are
the same computation, bit for bit.

Per phase and seed, the JSON keeps the mean return of the episodes that ended
in the phase's last 10% of updates (``records.recent_return``), the policy's
mean entropy over those updates, and whether the policy collapsed: a mean
entropy below ``COLLAPSE_ENTROPY`` = 0.05 nats, which on two actions is at
least 99% of the probability on one action on average (``ln 2`` = 0.69 is
uniform). A fresh PPO agent keeps some entropy (``--ent-coef``); a collapsed
one plays almost one action whatever it sees (on CartPole, a return near 9).

The summary, per method and seed, is the plasticity gap: the mean over phases
2..K of the continual agent's return minus its fresh agent's (phase 1 is left
out: the two are identical there), with its mean and 95% t interval over
seeds (``examples.paper.stats.paired``). Each method's gap is compared with
vanilla's, paired by seed, with its power: whether the interval's half-width
is at most a quarter of vanilla's gap (``POWER_FRACTION``), and the seeds the
usual plug-in estimate says would make it so (:func:`power`). Seed ``s``
starts from ``jax.random.key(s)`` and sees the shifts of seed ``s``, for
``s`` from ``--seed`` to ``--seed + --seeds - 1``, so adding seeds keeps the
ones already run. All seeds run vmapped, and one compiled program per method
runs every phase, continual and fresh. From the repository root::

  python -m examples.rl.shifting --out /tmp/shifting.json

The defaults (CartPole-v1, 10 phases of 50,000 steps, 16 seeds) are the
calibrated budget (``examples/rl/RESULTS.md``): the smallest calibrated at
which vanilla's gap to a fresh agent excludes 0 with an interval whose
half-width is at most a quarter of the gap (the power the comparisons of
methods need, if their differences spread as much), in at most 8 minutes on
2 CPU cores for the three default methods.

``--from-selection FILE`` runs each method at the setting chosen for it on
selection seeds (``python -m examples.rl.selection``): vanilla's learning
rate for every method, each method's coefficient its own
(:func:`chosen_settings`).

``--calibrate`` runs vanilla alone at each of ``--calibrate-steps`` steps per
phase and reports its gap and collapse rates per setting, to find the
smallest budget at which a fresh agent beats the continual one with an
interval that excludes 0.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import dataclasses
import json
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats as scipy_stats

from examples import cli
from examples.paper import stats
from examples.rl import agent
from examples.rl import envs
from examples.rl import records
from examples.rl.config import METHODS
from examples.rl.config import Config
from examples.rl.config import add_config_flags
from examples.rl.config import config_from_flags
from examples.rl.config import parse_methods
from examples.rl.train import Metrics
from examples.rl.train import make_train

SCORED_FRACTION = 0.1  # a phase is scored on its last 10% of updates
COLLAPSE_ENTROPY = 0.05  # nats: below it, the policy has collapsed
POWER_FRACTION = 0.25  # of |vanilla's gap|: the half-width the power asks for
CONFIDENCE = stats.CONFIDENCE
# Per phase and seed, the means over the scored updates the JSON keeps.
PHASE_METRICS = (
  "returns",
  "entropy",
  "value_error",
  "dormant_fraction",
  "effective_rank",
  "weight_norms",
)


def check_flags(phases: int, steps_per_phase: int, seeds: int) -> None:
  """ValueErrors naming the flag, before any training.

  Raises:
    ValueError: for fewer than 2 phases (the gap is measured on phases
      2..K), or fewer than 1 step per phase or seed.
  """
  if phases < 2:
    raise ValueError(
      f"--phases must be at least 2 (the gap is measured on phases 2..K); "
      f"got {phases}."
    )
  cli.check_positive("--steps-per-phase", steps_per_phase)
  cli.check_positive("--seeds", seeds)


def seed_numbers(first: int, seeds: int) -> list[int]:
  """The seeds of a run: ``first``, ``first + 1``, ..."""
  return list(range(first, first + seeds))


def phase_shifts(
  env: Any, env_params: Any, seeds: Sequence[int], phases: int
) -> list[envs.ShiftParams]:
  """Per phase, the shifts of ``seeds`` stacked on a leading seed axis.

  Drawn from (seed, phase) alone, so every method sees the same ones.

  Raises:
    ValueError: naming ``--env`` for an environment whose observation is
      not a vector (from ``envs.observation_shift``).
  """
  return [
    jax.tree.map(
      lambda *x: jnp.stack(x),
      *[envs.observation_shift(env, env_params, s, phase) for s in seeds],
    )
    for phase in range(phases)
  ]


class PhaseRunner:
  """One method's phase: every seed trains one phase, in one compiled program.

  Calling it with ``(state, shifts)`` trains the agents of ``state`` (a
  runner state vmapped over seeds) for one phase with ``shifts`` (the
  phase's ``ShiftParams``, stacked over seeds). The agents leave their
  environments first (``agent.without_envs``), so that the phase's
  environments start under its shift; the new agents of ``new_agents(keys)``
  have none either, so a continual agent and a fresh one are the same input
  structure, and ``run`` (the jitted program) compiles once for all phases of
  both.

  Args:
    config: the run's configuration; ``config.num_updates`` per phase.
    env: the base environment (vector observations).
    env_params: its params.
    method: one of :data:`examples.rl.config.METHODS`.
  """

  def __init__(self, config: Config, env: Any, env_params: Any, method: str):
    shifted = envs.ShiftedObservation(env)
    identity = envs.observation_shift(env, env_params, 0, 0)
    train = make_train(config, shifted, identity, method)
    network, built, _ = agent.make_agent(config, shifted, identity, method)
    obs_shape = envs.observation_shape(shifted, identity)
    num_updates = config.num_updates

    def one_seed(state: agent.RunnerState, shift: envs.ShiftParams):
      return train(state, num_updates, shift)

    self.run = jax.jit(jax.vmap(one_seed))
    hook = agent.loop_hook(built)
    self.new_agents = jax.jit(
      jax.vmap(
        lambda key: agent.new_agent(network, built.tx, obs_shape, key, hook)
      )
    )

  def __call__(
    self, state: agent.RunnerState, shifts: envs.ShiftParams
  ) -> tuple[agent.RunnerState, Metrics]:
    state = agent.without_envs(state)
    return jax.block_until_ready(self.run(state, shifts))


def phase_scores(measured: Metrics) -> dict[str, np.ndarray]:
  """Per seed, the phase's ``PHASE_METRICS`` and whether it collapsed.

  Means over the last ``SCORED_FRACTION`` of the phase's updates
  (``records.final_means``; ``returns`` is ``records.recent_return``, NaN
  if no episode ended there); ``collapsed`` is ``entropy <
  COLLAPSE_ENTROPY``.
  """
  final = records.final_means(measured, SCORED_FRACTION)
  scores = {name: np.array(final[name], float) for name in PHASE_METRICS}
  scores["collapsed"] = scores["entropy"] < COLLAPSE_ENTROPY
  return scores


def run_method(
  runner: PhaseRunner,
  method: str,
  keys: jax.Array,
  shifts: Sequence[envs.ShiftParams],
) -> dict[str, Any]:
  """The continual agents through every phase, and a fresh agent per phase.

  Args:
    runner: ``method``'s compiled phase.
    method: its name, for the printed lines.
    keys: one PRNG key per seed; the continual agents and every phase's
      fresh agents start from them.
    shifts: per phase, the shifts stacked over seeds (:func:`phase_shifts`).

  Returns:
    For the JSON: ``phase_<metric>`` and ``fresh_<metric>`` for each of
    ``PHASE_METRICS`` and ``collapsed``, each ``[seed][phase]``, and
    ``wall_time_s``.
  """
  started = time.perf_counter()
  new_agents = runner.new_agents(keys)
  state = new_agents
  continual, fresh = [], []
  for phase, shift in enumerate(shifts):
    state, measured = runner(state, shift)
    continual.append(phase_scores(measured))
    _, measured = runner(new_agents, shift)
    fresh.append(phase_scores(measured))
    _print_phase(method, phase, len(shifts), continual[-1], fresh[-1])
  result: dict[str, Any] = {}
  for prefix, scores in (("phase", continual), ("fresh", fresh)):
    for name in (*PHASE_METRICS, "collapsed"):
      per_seed = np.stack([s[name] for s in scores], axis=1)
      result[f"{prefix}_{name}"] = (
        per_seed.tolist()
        if name == "collapsed"
        else records.json_ready(per_seed)
      )
  result["wall_time_s"] = time.perf_counter() - started
  return result


def _print_phase(
  method: str,
  phase: int,
  phases: int,
  continual: dict[str, np.ndarray],
  fresh: dict[str, np.ndarray],
) -> None:
  seeds = len(continual["returns"])
  print(
    f"{method:8s} phase {phase + 1:2d}/{phases}: continual "
    f"{np.nanmean(continual['returns']):6.1f} "
    f"(collapsed {int(np.sum(continual['collapsed']))}/{seeds}), fresh "
    f"{np.nanmean(fresh['returns']):6.1f} "
    f"(collapsed {int(np.sum(fresh['collapsed']))}/{seeds})",
    flush=True,
  )


@dataclasses.dataclass(frozen=True)
class Power:
  """Whether a method's difference from vanilla is measured precisely enough.

  Attributes:
    half_width: the half-width of the difference's interval (NaN below two
      seeds).
    target: ``POWER_FRACTION`` times ``|mean of vanilla's gaps|``.
    enough: ``half_width <= target``.
    seeds_needed: the smallest n with ``t(n - 1) * sd / sqrt(n) <= target``,
      with ``sd`` the differences' sample std (None where undefined: one
      seed, or a target of 0).
  """

  half_width: float
  target: float
  enough: bool
  seeds_needed: int | None


def power(
  vanilla_gaps: Sequence[float],
  differences: Sequence[float],
  fraction: float = POWER_FRACTION,
  confidence: float = CONFIDENCE,
) -> Power:
  """Is the interval of a method's difference from vanilla narrow enough?

  The question of issue 28, part 2: an interval whose half-width is at most
  a quarter of vanilla's loss against a fresh agent can tell a method that
  recovers a quarter of it from one that recovers none. The seeds needed
  are the usual estimate ``n = (t * sd / target)^2``, solved for the
  smallest n with the t quantile at ``n - 1`` degrees of freedom and the
  sample std of the differences in hand as ``sd``.

  Args:
    vanilla_gaps: vanilla's gap per seed (continual - fresh).
    differences: the method's gap minus vanilla's, per seed.
    fraction: the half-width asked for, as a fraction of ``|vanilla gap|``.
    confidence: the interval's coverage.

  Returns:
    A :class:`Power`.
  """
  differences = np.asarray(differences, float)
  difference = stats.paired(differences, np.zeros_like(differences), confidence)
  half_width = difference.high - difference.mean
  target = fraction * abs(float(np.mean(vanilla_gaps)))
  _, sd = stats.mean_std(differences)
  return Power(
    half_width=float(half_width),
    target=target,
    enough=bool(half_width <= target),
    seeds_needed=_seeds_needed(sd, target, confidence),
  )


def _seeds_needed(sd: float, target: float, confidence: float) -> int | None:
  if not (np.isfinite(sd) and np.isfinite(target) and target > 0):
    return None
  quantile = 0.5 + confidence / 2
  normal = scipy_stats.norm.ppf(quantile) * sd / target
  seeds = max(2, math.ceil(normal**2))  # t > z: never fewer than this
  while scipy_stats.t.ppf(quantile, seeds - 1) * sd / math.sqrt(seeds) > target:
    seeds += 1
  return seeds


def summarize(methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """Per method: the gap on phases 2..K, its difference from vanilla, power.

  Computed from the JSON's per-phase numbers (None read as NaN, which then
  propagates: a phase without an ended episode in its window makes its
  seed's gap NaN).

  Args:
    methods: ``results["methods"]``, each with ``phase_returns``,
      ``fresh_returns``, ``phase_collapsed`` and ``fresh_collapsed``.

  Returns:
    ``{method: summary}``, each with ``continual_mean`` and ``fresh_mean``
    (returns over seeds and phases 2..K), ``gap`` (``per_seed``, ``mean``,
    ``low``, ``high``: the 95% t interval), ``collapse_rate``
    (``continual`` and ``fresh``: the fraction of (seed, phase) pairs of
    phases 2..K that collapsed) and, for methods other than vanilla when
    vanilla ran, ``vs_vanilla`` (the paired difference of the gaps, its
    interval, and ``power``).
  """
  summary: dict[str, Any] = {}
  for method, run in methods.items():
    continual = np.array(run["phase_returns"], float)[:, 1:].mean(axis=1)
    fresh = np.array(run["fresh_returns"], float)[:, 1:].mean(axis=1)
    summary[method] = {
      "continual_mean": _number(np.mean(continual)),
      "fresh_mean": _number(np.mean(fresh)),
      "gap": {
        "per_seed": records.json_ready(continual - fresh),
        **_interval(stats.paired(continual, fresh)),
      },
      "collapse_rate": {
        "continual": float(np.mean(np.array(run["phase_collapsed"])[:, 1:])),
        "fresh": float(np.mean(np.array(run["fresh_collapsed"])[:, 1:])),
      },
    }
  if "vanilla" in summary:
    vanilla_gaps = np.array(summary["vanilla"]["gap"]["per_seed"], float)
    for method, entry in summary.items():
      if method == "vanilla":
        continue
      gaps = np.array(entry["gap"]["per_seed"], float)
      entry["vs_vanilla"] = {
        **_interval(stats.paired(gaps, vanilla_gaps)),
        "power": {
          name: _number(value) if isinstance(value, float) else value
          for name, value in dataclasses.asdict(
            power(vanilla_gaps, gaps - vanilla_gaps)
          ).items()
        },
      }
  return summary


def _interval(difference: stats.Difference) -> dict[str, float | None]:
  return {
    "mean": _number(difference.mean),
    "low": _number(difference.low),
    "high": _number(difference.high),
  }


def _number(value: float) -> float | None:
  """A float for JSON, None for NaN (JSON has no NaN)."""
  return None if np.isnan(value) else float(value)


def table(summary: dict[str, Any]) -> str:
  """:func:`summarize`'s summary as a text table, one method per row."""
  lines = [
    f"{'method':8s} {'continual':>9s} {'fresh':>7s}  {'gap [95%]':26s} "
    f"{'collapsed c/f':>13s}  vs vanilla [95%], power"
  ]
  for method, entry in summary.items():
    rates = entry["collapse_rate"]
    line = (
      f"{method:8s} {_text(entry['continual_mean']):>9s} "
      f"{_text(entry['fresh_mean']):>7s}  {_interval_text(entry['gap']):26s} "
      f"{rates['continual']:6.2f}/{rates['fresh']:4.2f}"
    )
    if "vs_vanilla" in entry:
      versus = entry["vs_vanilla"]
      line += f"  {_interval_text(versus)}, {_power_text(versus['power'])}"
    lines.append(line)
  return "\n".join(lines)


def _text(value: float | None, sign: str = "") -> str:
  return "nan" if value is None else f"{value:{sign}.1f}"


def _interval_text(entry: dict[str, Any]) -> str:
  return (
    f"{_text(entry['mean'], '+')} [{_text(entry['low'], '+')}, "
    f"{_text(entry['high'], '+')}]"
  )


def _power_text(entry: dict[str, Any]) -> str:
  verdict = "enough" if entry["enough"] else "not enough"
  needed = entry["seeds_needed"]
  return (
    f"half-width {_text(entry['half_width'])} vs target "
    f"{_text(entry['target'])}: {verdict} "
    f"(seeds needed: {'n/a' if needed is None else needed})"
  )


def calibrate(
  args: argparse.Namespace, env: Any, env_params: Any, keys: jax.Array
) -> list[dict[str, Any]]:
  """Vanilla alone at each of ``--calibrate-steps``, at ``--phases``.

  Args:
    args: the parsed flags (``--calibrate-steps``, ``--phases``, ``--seed``,
      ``--seeds`` and the config's).
    env: the base environment.
    env_params: its params.
    keys: one PRNG key per seed.

  Returns:
    One row per setting: ``steps_per_phase``, ``num_updates_per_phase``,
    the summary of vanilla's run (``gap``, ``collapse_rate``...) and the run
    itself under ``vanilla``.
  """
  shifts = phase_shifts(
    env, env_params, seed_numbers(args.seed, args.seeds), args.phases
  )
  rows = []
  for steps in args.calibrate_steps:
    config = config_from_flags(args, total_steps=steps, network="mlp")
    runner = PhaseRunner(config, env, env_params, "vanilla")
    run = run_method(runner, "vanilla", keys, shifts)
    rows.append(
      {
        "steps_per_phase": steps,
        "num_updates_per_phase": config.num_updates,
        **summarize({"vanilla": run})["vanilla"],
        "vanilla": run,
      }
    )
  return rows


def calibration_table(rows: Sequence[dict[str, Any]], phases: int) -> str:
  """:func:`calibrate`'s rows as a text table, one setting per row.

  Its last line names the smallest budget whose interval excludes 0.
  """
  lines = [
    f"{'steps/phase':>11s} {'K':>3s} {'continual':>9s} {'fresh':>7s}  "
    f"{'gap [95%]':26s} {'excludes 0':10s} {'collapsed c/f':>13s} "
    f"{'wall s':>7s}"
  ]
  smallest = None
  for row in rows:
    gap = row["gap"]
    excludes = gap["high"] is not None and (gap["high"] < 0 or gap["low"] > 0)
    if excludes and smallest is None:
      smallest = row["steps_per_phase"]
    rates = row["collapse_rate"]
    lines.append(
      f"{row['steps_per_phase']:11d} {phases:3d} "
      f"{_text(row['continual_mean']):>9s} {_text(row['fresh_mean']):>7s}  "
      f"{_interval_text(gap):26s} {'yes' if excludes else 'no':10s} "
      f"{rates['continual']:6.2f}/{rates['fresh']:4.2f} "
      f"{row['vanilla']['wall_time_s']:7.1f}"
    )
  lines.append(
    "no setting's interval excludes 0"
    if smallest is None
    else f"smallest steps per phase whose interval excludes 0: {smallest}"
  )
  return "\n".join(lines)


def chosen_settings(
  path: str, args: argparse.Namespace, config: Config
) -> dict[str, dict[str, float]]:
  """Each method's Config fields as chosen in a selection file, checked.

  Args:
    path: the selection's JSON (``python -m examples.rl.selection``).
    args: the parsed flags: ``methods``, ``seed``, ``seeds``, ``given`` (the
      flags set on the command line), ``env``, ``phases``.
    config: the run's config before the choices.

  Returns:
    ``{method: {"lr": ..., field: value}}``: the fields to set per method.

  Raises:
    ValueError: naming the flag, for a tuned flag given on the command line
      (the selection sets it), a protocol flag that differs from the
      selection's, seeds the selection used, or a method it did not choose
      for.
  """
  with open(path, encoding="utf-8") as f:
    selection = json.load(f)
  chosen = selection["methods"]
  missing = [m for m in args.methods if m not in chosen]
  if missing:
    raise ValueError(
      f"--methods: {', '.join(missing)} not chosen in --from-selection "
      f"(it chose for {', '.join(chosen)})."
    )
  tuned = {"lr", *(entry["field"] for entry in chosen.values())}
  given = sorted(_flag(name) for name in tuned & set(args.given))
  if given:
    raise ValueError(
      f"{', '.join(given)}: --from-selection sets each method's chosen "
      "value; leave these flags out."
    )
  ours = {
    **dataclasses.asdict(config),
    "env": args.env,
    "phases": args.phases,
    "steps_per_phase": args.steps_per_phase,
  }
  for key, value in ours.items():
    theirs = selection["config"].get(key, value)
    if key not in tuned and key != "total_steps" and theirs != value:
      raise ValueError(
        f"{_flag(key)} {value} differs from --from-selection's {theirs}: a "
        "chosen setting holds for its own protocol only."
      )
  first, count = selection["config"]["seed"], selection["config"]["seeds"]
  overlap = sorted(set(range(first, first + count)) & set(args.seed_list))
  if overlap:
    raise ValueError(
      f"--seed/--seeds: seeds {overlap[:5]} chose the settings of "
      "--from-selection; report on others (seeds from 0)."
    )
  for method in args.methods:
    if chosen[method]["at_edge"]:
      print(
        f"warning: {method}'s chosen {chosen[method]['field']}="
        f"{chosen[method]['chosen']:g} lies at the {chosen[method]['at_edge']} "
        "edge of the values tried",
        flush=True,
      )
  return {
    method: {
      "lr": chosen[method]["lr"],
      chosen[method]["field"]: chosen[method]["chosen"],
    }
    for method in args.methods
  }


def _flag(name: str) -> str:
  return "--" + name.replace("_", "-")


def parse_flags(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = cli.parser(__doc__)
  parser.add_argument(
    "--env", default="CartPole-v1", help="gymnax name, vector observations"
  )
  parser.add_argument(
    "--methods",
    default="vanilla,swr,l2_init",
    help=f"comma-separated, from {', '.join(METHODS)}",
  )
  parser.add_argument("--phases", type=int, default=10, help="K")
  parser.add_argument("--steps-per-phase", type=int, default=50_000)
  parser.add_argument("--seeds", type=int, default=16, help="number of seeds")
  parser.add_argument("--seed", type=int, default=0, help="the first seed")
  parser.add_argument("--out", help="write the results to this JSON file")
  parser.add_argument(
    "--from-selection",
    help="run each method at its setting chosen in this JSON "
    "(python -m examples.rl.selection)",
  )
  parser.add_argument(
    "--calibrate",
    action="store_true",
    help="run vanilla alone at each of --calibrate-steps",
  )
  parser.add_argument(
    "--calibrate-steps",
    default="25000,50000,100000",
    help="comma-separated steps per phase for --calibrate",
  )
  add_config_flags(parser, exclude=("total_steps", "network"))
  args = parser.parse_args(argv)
  # What the command line set, for --from-selection (which sets the rest).
  args.given = [
    key for key, value in vars(args).items() if value != parser.get_default(key)
  ]
  args.calibrate_steps = [
    int(s) for s in args.calibrate_steps.split(",") if s.strip()
  ]
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_flags(argv)
  check_flags(args.phases, args.steps_per_phase, args.seeds)
  for steps in args.calibrate_steps:
    cli.check_positive("--calibrate-steps", steps)
  cli.check_out_path(args.out)
  methods = ["vanilla"] if args.calibrate else parse_methods(args.methods)
  if args.calibrate and args.from_selection:
    raise ValueError(
      "--from-selection: --calibrate runs vanilla at the flags' settings; "
      "leave one of them out."
    )
  env, env_params = envs.make_env(args.env)
  envs.observation_shift(env, env_params, 0, 0)  # --env: vector observations
  config = config_from_flags(
    args, total_steps=args.steps_per_phase, network="mlp"
  )
  seeds = seed_numbers(args.seed, args.seeds)
  settings: dict[str, dict[str, float]] = {method: {} for method in methods}
  if args.from_selection:
    args.methods, args.seed_list = methods, seeds
    settings = chosen_settings(args.from_selection, args, config)
  keys = jax.vmap(jax.random.key)(jnp.array(seeds))
  results: dict[str, Any] = {
    "config": {
      **dataclasses.asdict(config),
      "env": args.env,
      "phases": args.phases,
      "steps_per_phase": args.steps_per_phase,
      "num_updates_per_phase": config.num_updates,
      "seeds": args.seeds,
      "seed": args.seed,
      "scored_fraction": SCORED_FRACTION,
      "collapse_entropy": COLLAPSE_ENTROPY,
      "power_fraction": POWER_FRACTION,
      "confidence": CONFIDENCE,
      "out": args.out,
    },
    "versions": records.versions(),
  }
  if args.from_selection:
    results["selection"] = {"file": args.from_selection, "chosen": settings}
  start = time.perf_counter()
  if args.calibrate:
    for name in ("total_steps", "steps_per_phase", "num_updates_per_phase"):
      del results["config"][name]  # one per setting, in its row
    results["config"]["calibrate_steps"] = args.calibrate_steps
    results["calibration"] = calibrate(args, env, env_params, keys)
    results["wall_time_s"] = time.perf_counter() - start
    print(calibration_table(results["calibration"], args.phases))
  else:
    shifts = phase_shifts(env, env_params, seeds, args.phases)
    results["shifts"] = {
      name: np.stack([getattr(s, name) for s in shifts], axis=1).tolist()
      for name in ("perm", "sign")
    }
    results["methods"] = {}
    for method in methods:
      chosen = dataclasses.replace(config, **settings[method])
      runner = PhaseRunner(chosen, env, env_params, method)
      results["methods"][method] = run_method(runner, method, keys, shifts)
    results["wall_time_s"] = time.perf_counter() - start
    results["summary"] = summarize(results["methods"])
    print(table(results["summary"]))
  if args.out:
    cli.write_json(args.out, results)
  return results


if __name__ == "__main__":
  main()
