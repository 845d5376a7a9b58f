"""Each method's setting for the shifting protocol, chosen on seeds of its own.

A method's *setting* is the value of its one tuned flag (:data:`GRIDS`).
Selection runs in two stages on the selection seeds (``--seed 1000`` on,
disjoint from the report's ``0..``):

1. vanilla over the learning rate (``--lr``): the base optimizer tuned first;
2. every other method over its coefficient, at vanilla's chosen rate.

A setting's score is the continual agent's mean return over phases 2..K
(what a user of a continually trained agent gets; fresh agents are not run,
which halves the cost), averaged over the seeds. A best at an edge of its
grid extends the grid by the grid's factor beyond that edge (up to
``--max-extensions`` times, and never beyond the method's bound), so that a
chosen setting lies inside the values tried or is marked ``at_edge``.

The report then runs each method at its chosen setting, with fresh agents,
on other seeds: ``python -m examples.rl.shifting --from-selection FILE``
(``shifting.chosen_settings``). From the repository root::

  python -m examples.rl.selection \\
      --out examples/rl/results/shifting_selection.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from examples import cli
from examples import methods as methods_lib
from examples.rl import envs
from examples.rl import records
from examples.rl import shifting
from examples.rl.config import METHODS
from examples.rl.config import Config
from examples.rl.config import add_config_flags
from examples.rl.config import config_from_flags
from examples.rl.config import parse_methods

SELECTION_SEED = 1000  # the report's seeds start at 0: never the same ones
MAX_EXTENSIONS = 2
DEFAULT_METHODS = "vanilla,adamw,swr,l2_init,snp,redo,cbp,swr_redo"


@dataclasses.dataclass(frozen=True)
class Grid:
  """The values of a method's tuned flag.

  Attributes:
    field: the :class:`~examples.rl.config.Config` field (flag) it sets.
    values: the values tried first, ascending.
    factor: an extension beyond an edge multiplies (or divides) by it.
  """

  field: str
  values: tuple[float, ...]
  factor: float


GRIDS: dict[str, Grid] = {
  "vanilla": Grid("lr", (3e-4, 1e-3, 3e-3), 3.0),
  "swr": Grid("swr_coef", (1e-5, 1e-4, 1e-3), 10.0),
  "l2": Grid("l2_coef", (1e-5, 1e-4, 1e-3), 10.0),
  "l2_init": Grid("l2_init_coef", (1e-5, 1e-4, 1e-3), 10.0),
  "snp": Grid("snp_coef", (0.02, 0.1, 0.5), 5.0),
  "redo": Grid("redo_tau", (0.025, 0.1, 0.4), 4.0),
  "adamw": Grid("adamw_coef", (1e-3, 1e-2, 1e-1), 10.0),
  "cbp": Grid("cbp_rate", (1e-5, 1e-4, 1e-3), 10.0),
  "swr_redo": Grid("swr_redo_coef", (1e-5, 1e-4, 1e-3), 10.0),
}
assert set(GRIDS) == set(METHODS), "a grid for every method of the agent"


def upper_bound(method: str) -> float | None:
  """The largest value ``method``'s flag takes (None: unbounded)."""
  if method == "vanilla":
    return None
  return methods_lib.REGISTRY[method].max_coef


def search(
  grid: Grid,
  score: Callable[[float], float],
  upper: float | None = None,
  max_extensions: int = MAX_EXTENSIONS,
) -> dict[str, Any]:
  """The best value of ``grid`` by ``score`` (higher is better), extended at edges.

  Args:
    grid: the values to try first.
    score: a value's score (here: the continual return of a run); a NaN
      (no episode ended to score) ranks below every number.
    upper: the largest value allowed; an extension past it is clipped to it
      (a best at the bound is not an edge).
    max_extensions: how many values may be added beyond the edges.

  Returns:
    ``chosen`` (the best value), ``at_edge`` (``"low"``, ``"high"`` or
    None) and ``tried`` (``[value, score]`` pairs, ascending).
  """
  scores = {value: _rankable(score(value)) for value in grid.values}
  for _ in range(max_extensions):
    edge = _edge(scores, upper)
    if edge is None:
      break
    values = sorted(scores)
    value = (
      values[0] / grid.factor if edge == "low" else values[-1] * grid.factor
    )
    if upper is not None:
      value = min(value, upper)
    scores[value] = _rankable(score(value))
  chosen = max(scores, key=lambda value: scores[value])
  return {
    "chosen": chosen,
    "at_edge": _edge(scores, upper),
    "tried": [  # None for a NaN score: JSON has no NaN
      [value, None if np.isinf(scores[value]) else scores[value]]
      for value in sorted(scores)
    ],
  }


def _rankable(score: float) -> float:
  return -np.inf if np.isnan(score) else score


def _edge(scores: dict[float, float], upper: float | None) -> str | None:
  """Where the best of ``scores`` lies: ``"low"``, ``"high"`` or None (inside)."""
  values = sorted(scores)
  best = max(scores, key=lambda value: scores[value])
  if best == values[0]:
    return "low"
  if best == values[-1] and best != upper:
    return "high"
  return None


def continual_scores(
  config: Config,
  env: Any,
  env_params: Any,
  method: str,
  keys: jax.Array,
  shifts: Sequence[envs.ShiftParams],
) -> dict[str, Any]:
  """The continual agents of ``method`` through every phase (no fresh ones).

  Returns:
    ``returns`` (``[seed][phase]``), ``per_seed`` (the mean over phases
    2..K, NaN phases left out), ``score`` (their mean), ``collapse_rate``
    (phases 2..K) and ``wall_time_s``.
  """
  started = time.perf_counter()
  runner = shifting.PhaseRunner(config, env, env_params, method)
  state = runner.new_agents(keys)
  phases = []
  for shift in shifts:
    state, measured = runner(state, shift)
    phases.append(shifting.phase_scores(measured))
  returns = np.stack([p["returns"] for p in phases], axis=1)
  collapsed = np.stack([p["collapsed"] for p in phases], axis=1)
  per_seed = np.nanmean(returns[:, 1:], axis=1)
  return {
    "returns": records.json_ready(returns),
    "per_seed": records.json_ready(per_seed),
    "score": float(np.mean(per_seed)),
    "collapse_rate": float(np.mean(collapsed[:, 1:])),
    "wall_time_s": time.perf_counter() - started,
  }


def select(
  args: argparse.Namespace,
  run: Callable[[str, Config], dict[str, Any]],
) -> dict[str, Any]:
  """Both stages: vanilla's learning rate, then the others' coefficients.

  Args:
    args: the parsed flags (``methods``, ``max_extensions`` and the
      config's).
    run: a method's run at a config (:func:`continual_scores`, bound).

  Returns:
    ``{method: {"field", "chosen", "at_edge", "tried", "runs"}}`` with
    ``runs`` each value's run, and the chosen ``lr`` under ``"vanilla"``.
  """
  base = config_from_flags(
    args, total_steps=args.steps_per_phase, network="mlp"
  )
  chosen: dict[str, Any] = {}
  for method in ["vanilla", *[m for m in args.methods if m != "vanilla"]]:
    grid = GRIDS[method]
    lr = chosen["vanilla"]["chosen"] if "vanilla" in chosen else base.lr
    runs: dict[float, dict[str, Any]] = {}

    def score(value: float, method=method, grid=grid, lr=lr, runs=runs):
      config = dataclasses.replace(base, **{"lr": lr, grid.field: value})
      runs[value] = run(method, config)
      print(
        f"{method:8s} {grid.field}={value:g}: continual return "
        f"{runs[value]['score']:.1f} ({runs[value]['wall_time_s']:.0f} s)",
        flush=True,
      )
      return runs[value]["score"]

    found = search(grid, score, upper_bound(method), args.max_extensions)
    chosen[method] = {
      "field": grid.field,
      "lr": lr,
      **found,
      "runs": {f"{value:g}": runs[value] for value in sorted(runs)},
    }
  return chosen


def parse_flags(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = cli.parser(__doc__)
  parser.add_argument("--env", default="CartPole-v1", help="gymnax name")
  parser.add_argument(
    "--methods",
    default=DEFAULT_METHODS,
    help=f"comma-separated, from {', '.join(METHODS)} (vanilla always runs)",
  )
  parser.add_argument("--phases", type=int, default=10, help="K")
  parser.add_argument("--steps-per-phase", type=int, default=50_000)
  parser.add_argument("--seeds", type=int, default=8, help="selection seeds")
  parser.add_argument(
    "--seed", type=int, default=SELECTION_SEED, help="the first selection seed"
  )
  parser.add_argument(
    "--max-extensions",
    type=int,
    default=MAX_EXTENSIONS,
    help="values a grid may add beyond its edges",
  )
  parser.add_argument("--out", help="write the selection to this JSON file")
  add_config_flags(parser, exclude=("total_steps", "network"))
  args = parser.parse_args(argv)
  args.methods = parse_methods(args.methods)
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_flags(argv)
  shifting.check_flags(args.phases, args.steps_per_phase, args.seeds)
  if args.max_extensions < 0:
    raise ValueError(
      f"--max-extensions must be >= 0; got {args.max_extensions}."
    )
  cli.check_out_path(args.out)
  env, env_params = envs.make_env(args.env)
  envs.observation_shift(env, env_params, 0, 0)  # --env: vector observations
  seeds = shifting.seed_numbers(args.seed, args.seeds)
  keys = jax.vmap(jax.random.key)(jnp.array(seeds))
  shifts = shifting.phase_shifts(env, env_params, seeds, args.phases)
  start = time.perf_counter()
  chosen = select(
    args,
    lambda method, config: continual_scores(
      config, env, env_params, method, keys, shifts
    ),
  )
  config = config_from_flags(
    args, total_steps=args.steps_per_phase, network="mlp"
  )
  results = {
    "config": {
      **dataclasses.asdict(config),
      "env": args.env,
      "phases": args.phases,
      "steps_per_phase": args.steps_per_phase,
      "seeds": args.seeds,
      "seed": args.seed,
      "max_extensions": args.max_extensions,
      "score": "continual return, mean over phases 2..K and seeds",
      "out": args.out,
    },
    "versions": records.versions(),
    "methods": chosen,
    "wall_time_s": time.perf_counter() - start,
  }
  print(table(results))
  if args.out:
    cli.write_json(args.out, results)
  return results


def table(results: dict[str, Any]) -> str:
  """One line per method: the values tried, their scores, the choice."""
  lines = []
  for method, entry in results["methods"].items():
    tried = ", ".join(
      f"{value:g}: {score_text(score)}"
      + ("*" if value == entry["chosen"] else "")
      for value, score in entry["tried"]
    )
    edge = f" (at the {entry['at_edge']} edge)" if entry["at_edge"] else ""
    lines.append(f"{method:8s} {entry['field']}: {tried}{edge}")
  return "\n".join(lines)


def score_text(score: float | None) -> str:
  """A score to one decimal; ``nan`` for None."""
  return "nan" if score is None else f"{score:.1f}"


if __name__ == "__main__":
  main()
