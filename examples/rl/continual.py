"""Continual MinAtar: one PPO agent cycles through games; does it still learn?

The loss of plasticity shows when an agent that has trained on other tasks
learns a task worse than a fresh agent would. One agent (one set of params and
one optimizer state, per method) plays a sequence of MinAtar games, each for
``--steps-per-visit`` environment steps, and cycles through the sequence
``--cycles`` times. Every game is seen through the same interface: MinAtar's
full action set (6 actions; a game ignores those it does not use, as no-ops)
and observations zero-padded to the largest channel count (10, Seaquest's), so
one network plays them all. The reference is a fresh agent of the same method
trained on each game for one visit's budget; plasticity loss is a later
visit's return below it.

A visit's score is the mean return of the episodes finished in the last
quarter of its updates. The seeds run vmapped in one program per game.
From the repository root::

  python -m examples.rl.continual --steps-per-visit 100000 --cycles 2 \\
      --seeds 3 --methods vanilla,swr,l2_init,redo \\
      --out examples/rl/results/continual.json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from examples import cli
from examples.rl import agent
from examples.rl import envs
from examples.rl import records
from examples.rl.config import Config
from examples.rl.config import add_config_flags
from examples.rl.config import config_from_flags
from examples.rl.config import parse_methods
from examples.rl.train import Metrics
from examples.rl.train import make_train

GAMES = ("SpaceInvaders", "Asterix", "Breakout", "Freeway", "Seaquest")
CHANNELS = 10  # Seaquest's; the most of the five
ACTIONS = 6  # MinAtar's full action set
SCORED_FRACTION = 0.25  # a visit is scored on its last quarter of updates


class PaddedMinAtar:
  """A MinAtar game with the full action set and ``CHANNELS`` channels.

  Wraps a gymnax MinAtar environment made with
  ``use_minimal_action_set=False``; ``reset`` and ``step`` zero-pad the
  observation's channel axis, everything else is the game's.
  """

  def __init__(self, game: str):
    if game not in GAMES:
      raise ValueError(
        f"--games: unknown MinAtar game {game!r}; choose from: "
        f"{', '.join(GAMES)}."
      )
    if envs.gymnax is None:
      raise ImportError(
        "examples.rl needs gymnax: pip install 'optax-swr[rl]'."
      )
    self.game = game
    self.env, self.params = envs.gymnax.make(
      f"{game}-MinAtar", use_minimal_action_set=False
    )

  def _pad(self, obs: jax.Array) -> jax.Array:
    missing = CHANNELS - obs.shape[-1]
    return jnp.pad(obs.astype(jnp.float32), [(0, 0), (0, 0), (0, missing)])

  def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
    obs, state = self.env.reset(key, params)
    return self._pad(obs), state

  def step(self, key: jax.Array, state: Any, action: Any, params: Any):
    obs, *rest = self.env.step(key, state, action, params)
    return (self._pad(obs), *rest)

  def action_space(self, params: Any) -> Any:
    return self.env.action_space(params)


class Runner:
  """One method: a compiled ``train`` per game, vmapped over seeds.

  Every visit starts from a runner state without environments, so each
  game's ``train`` compiles once.
  """

  def __init__(self, config: Config, method: str, games: Sequence[str]):
    self.trains = {}
    for game in games:
      env = PaddedMinAtar(game)
      train = make_train(config, env, env.params, method)
      self.trains[game] = jax.jit(
        jax.vmap(functools.partial(train, num_updates=config.num_updates))
      )
    first = PaddedMinAtar(games[0])
    self.network, built, _ = agent.make_agent(
      config, first, first.params, method
    )
    self.tx = built.tx
    self.hook = agent.loop_hook(built)
    self.obs_shape = envs.observation_shape(first, first.params)

  def new_agents(self, keys: jax.Array) -> agent.RunnerState:
    return jax.vmap(
      lambda key: agent.new_agent(
        self.network, self.tx, self.obs_shape, key, self.hook
      )
    )(keys)

  def visit(
    self, game: str, state: agent.RunnerState
  ) -> tuple[agent.RunnerState, Metrics]:
    return jax.block_until_ready(self.trains[game](agent.without_envs(state)))


def run_method(
  config: Config,
  method: str,
  games: Sequence[str],
  cycles: int,
  keys: jax.Array,
) -> dict[str, Any]:
  """The sequence of visits and the fresh references of one method.

  The fresh agents start from the same keys as the continual one, so the
  first visit of the first game is that game's fresh run, exactly.
  """
  started = time.perf_counter()
  runner = Runner(config, method, games)
  state = runner.new_agents(keys)
  visits = []
  for cycle in range(cycles):
    for game in games:
      state, measured = runner.visit(game, state)
      visits.append(_record(measured, game=game, cycle=cycle))
      _print(method, f"cycle {cycle}", game, visits[-1]["score"])
  fresh = {}
  for game in games:
    _, measured = runner.visit(game, runner.new_agents(keys))
    fresh[game] = _record(measured)
    _print(method, "fresh  ", game, fresh[game]["score"])
  return {
    "visits": visits,
    "fresh": fresh,
    "wall_time_s": time.perf_counter() - started,
  }


def _record(measured: Metrics, **labels: Any) -> dict[str, Any]:
  """A visit's score per seed and its metrics, thinned (``records.record``).

  The score, as every summary, is computed from every update.
  """
  score = records.recent_return(measured, SCORED_FRACTION)
  return {
    **labels,
    "score": records.json_ready(score),
    **records.record(measured),
  }


def _print(method: str, visit: str, game: str, score: list[Any]) -> None:
  values = np.array([np.nan if s is None else s for s in score], float)
  print(
    f"{method:8s} {visit} {game:13s} score {np.nanmean(values):6.2f} "
    f"(seeds {np.round(values, 2).tolist()})",
    flush=True,
  )


def summarize(results: dict[str, Any]) -> dict[str, Any]:
  """Per method, game and visit: the score and its gap to a fresh agent.

  ``gap`` is the visit's score minus the fresh agent's on that game, per
  seed (paired: the fresh agent starts from the same key), with its mean and
  the half-width of its 95% t-interval over seeds (None below two seeds with
  a score: undefined, and JSON has no NaN).
  """
  as_array = lambda values: np.array(
    [np.nan if v is None else v for v in values], float
  )
  summary: dict[str, Any] = {}
  for method, run in results["methods"].items():
    rows = []
    for visit in run["visits"]:
      score = as_array(visit["score"])
      fresh = as_array(run["fresh"][visit["game"]]["score"])
      gap = score - fresh
      half_width = _half_width(gap)
      rows.append(
        {
          "game": visit["game"],
          "cycle": visit["cycle"],
          "score_mean": float(np.nanmean(score)),
          "fresh_mean": float(np.nanmean(fresh)),
          "gap_mean": float(np.nanmean(gap)),
          "gap_ci95": None if np.isnan(half_width) else half_width,
        }
      )
    summary[method] = rows
  return summary


def _half_width(values: np.ndarray) -> float:
  """Half-width of the 95% t-interval of the mean (NaN below 2 values)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top

  values = np.asarray(values, float)
  values = values[np.isfinite(values)]
  if len(values) < 2:
    return float("nan")
  t = stats.t.ppf(0.975, len(values) - 1)
  return float(t * np.std(values, ddof=1) / np.sqrt(len(values)))


def parse_flags(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = cli.parser(__doc__)
  parser.add_argument("--games", default=",".join(GAMES))
  parser.add_argument("--cycles", type=int, default=2)
  parser.add_argument("--steps-per-visit", type=int, default=100_000)
  parser.add_argument("--methods", default="vanilla,swr")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", help="write the results to this JSON file")
  add_config_flags(parser, exclude=("total_steps", "network"))
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_flags(argv)
  cli.check_out_path(args.out)
  games = [g.strip() for g in args.games.split(",") if g.strip()]
  for game in games:
    if game not in GAMES:
      raise ValueError(
        f"--games: unknown MinAtar game {game!r}; choose from: "
        f"{', '.join(GAMES)}."
      )
  methods = parse_methods(args.methods)
  config = config_from_flags(
    args, total_steps=args.steps_per_visit, network="cnn"
  )
  keys = jax.random.split(jax.random.key(args.seed), args.seeds)
  results: dict[str, Any] = {
    "config": {
      **dataclasses.asdict(config),
      "games": games,
      "cycles": args.cycles,
      "steps_per_visit": args.steps_per_visit,
      "num_updates_per_visit": config.num_updates,
      "seeds": args.seeds,
      "seed": args.seed,
      "scored_fraction": SCORED_FRACTION,
      **records.trace_config(config.num_updates),
    },
    "versions": records.versions(),
    "methods": {},
  }
  start = time.perf_counter()
  for method in methods:
    results["methods"][method] = run_method(
      config, method, games, args.cycles, keys
    )
  results["wall_time_s"] = time.perf_counter() - start
  results["summary"] = summarize(results)
  if args.out:
    cli.write_json(args.out, results)
  return results


if __name__ == "__main__":
  main()
