"""Scores on a common scale, so that games with different scales average.

MinAtar's games score on scales about 50 times apart (Breakout's returns are
tens, SpaceInvaders' hundreds), so a raw mean over games is the mean of the
largest game. :func:`normalized_score` puts every game on the scale of its
own references, as Atari's human-normalized score does: 0 is a uniformly
random policy, 1 is a fresh agent trained for the same budget. A continual
agent's normalized score below 1 is what it lost against starting afresh.

Example::

  from examples.rl import scores
  scores.normalized_score(
    raw=[[30.0, 4.0]], random_score=[2.0, 0.5], fresh_score=[40.0, 5.0],
    games=["Breakout", "Asterix"],
  )  # [[0.737, 0.778]]

:func:`random_policy_scores` measures the random reference of the continual
MinAtar games (``examples.rl.continual``), and this module's command line
writes it to a JSON file for ``examples.rl.continual_report``::

  python -m examples.rl.scores --out examples/rl/results/minatar_random.json
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from examples import cli
from examples.rl import continual
from examples.rl import envs
from examples.rl import records


def normalized_score(
  raw: ArrayLike,
  random_score: ArrayLike,
  fresh_score: ArrayLike,
  games: Sequence[str] | None = None,
) -> np.ndarray:
  """``(raw - random) / (fresh - random)``, per game, vectorized.

  Args:
    raw: the scores to normalize; the last axis is the game's when the
      references hold one value per game (``[seed, game]``, ``[game]``...),
      broadcast as numpy does.
    random_score: a uniformly random policy's score, per game (or one value).
    fresh_score: a fresh agent's score at the same budget, per game (or one).
    games: the games' names, in the order of the references' last axis, for
      the error message.

  Returns:
    The normalized scores, float, of the broadcast shape: 0 is the random
    policy's score, 1 the fresh agent's.

  Raises:
    ValueError: where a game's fresh score equals its random score (the
      scale is undefined there), naming the game when ``games`` is given.
  """
  raw = np.asarray(raw, dtype=float)
  random_score = np.asarray(random_score, dtype=float)
  fresh_score = np.asarray(fresh_score, dtype=float)
  scale = fresh_score - random_score
  if scale.ndim > 1:
    raise ValueError(
      "normalized_score: random_score and fresh_score hold one value per game "
      f"(or one in all); got shapes {random_score.shape} and "
      f"{fresh_score.shape}."
    )
  degenerate = np.atleast_1d(scale == 0)
  if np.any(degenerate):
    where = np.flatnonzero(degenerate)
    if games is not None:
      names = [games[i] for i in where]
    else:
      names = [f"game {i}" for i in where]
    raise ValueError(
      f"normalized_score: the fresh agent's score equals the random policy's "
      f"for {', '.join(names)}, so the scale (fresh - random) is 0; train "
      "the fresh agent longer, or leave the game out of the average."
    )
  return (raw - random_score) / scale


def random_policy_scores(
  games: Sequence[str],
  steps: int,
  seeds: int,
  key: jax.Array,
  num_envs: int = 8,
) -> dict[str, dict[str, Any]]:
  """The return of a uniformly random policy per game, as a visit counts it.

  Each seed plays ``num_envs`` environments of
  :class:`examples.rl.continual.PaddedMinAtar` (the full action set) with
  uniformly random actions for ``steps`` environment steps in all (a
  visit's budget counts the same way), resetting an ended episode as the
  agent's rollouts do, and counts every episode that ended, as
  ``records.recent_return`` does. The agent's score counts only its last
  quarter of updates because it is still learning; the random policy does
  not change, so all its episodes are counted. The seeds run vmapped in one
  jitted program per game.

  Args:
    games: MinAtar games, of :data:`examples.rl.continual.GAMES`.
    steps: environment steps per seed, all its environments together (a
      multiple of ``num_envs``; Freeway's episodes last 2,500 steps each).
    seeds: how many independent runs, each from its own key.
    key: the PRNG key the seeds' keys are split from.
    num_envs: environments per seed (the agent's ``--num-envs``).

  Returns:
    Per game: ``mean``, the mean return over every ended episode of every
    seed; ``stderr``, its standard error (the episodes are independent:
    each starts from its own reset); ``episodes``, how many ended; and per
    seed, ``seed_means`` (None where none ended) and ``seed_episodes``.

  Raises:
    ValueError: for an unknown game, or ``steps`` that is not a positive
      multiple of ``num_envs``.
  """
  if steps < num_envs or steps % num_envs:
    raise ValueError(
      f"--steps: {steps} is not a positive multiple of --num-envs "
      f"({num_envs}); every environment takes the same number of steps."
    )
  keys = jax.random.split(key, seeds)
  measured = {}
  for game in games:
    play = _random_play(game, steps // num_envs, num_envs)
    totals, squares, counts = play(keys)
    total, square, count = (
      float(np.sum(np.asarray(x, float))) for x in (totals, squares, counts)
    )
    mean = total / count if count else float("nan")
    variance = (square - count * mean**2) / (count - 1) if count > 1 else 0.0
    seed_counts = np.asarray(counts, float)
    seed_means = np.where(
      seed_counts > 0, np.asarray(totals) / np.maximum(seed_counts, 1), np.nan
    )
    measured[game] = {
      "mean": mean,
      "stderr": float(np.sqrt(max(variance, 0.0) / count)) if count else None,
      "episodes": int(count),
      "seed_means": records.json_ready(seed_means),
      "seed_episodes": seed_counts.astype(int).tolist(),
    }
  return measured


@functools.cache
def _random_play(game: str, steps_per_env: int, num_envs: int) -> Any:
  """:func:`_play_randomly` on ``game``, vmapped over seeds' keys, jitted.

  Cached, so that a second call with the same budget does not compile again.
  """
  env = continual.PaddedMinAtar(game)
  play = functools.partial(_play_randomly, env, steps_per_env, num_envs)
  return jax.jit(jax.vmap(play))


def _play_randomly(
  env: continual.PaddedMinAtar,
  steps_per_env: int,
  num_envs: int,
  key: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One seed: the sum, the sum of squares and the count of ended returns."""
  reset_key, key = jax.random.split(key)
  _, env_state = jax.vmap(env.reset, in_axes=(0, None))(
    jax.random.split(reset_key, num_envs), env.params
  )
  num_actions = envs.num_actions(env, env.params)
  step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))

  def step(carry, step_key):
    env_state, episode_returns, ended = carry
    action_key, envs_key = jax.random.split(step_key)
    action = jax.random.randint(action_key, (num_envs,), 0, num_actions)
    _, env_state, reward, done = envs.step_outputs(
      step_envs(
        jax.random.split(envs_key, num_envs), env_state, action, env.params
      )
    )
    episode_returns = episode_returns + reward
    finished = jnp.where(done, episode_returns, 0.0)
    ended = (
      ended[0] + jnp.sum(finished),
      ended[1] + jnp.sum(finished**2),
      ended[2] + jnp.sum(done),
    )
    return (env_state, jnp.where(done, 0.0, episode_returns), ended), None

  zero = jnp.zeros((), jnp.float32)
  start = (env_state, jnp.zeros(num_envs), (zero, zero, jnp.zeros((), int)))
  (_, _, ended), _ = jax.lax.scan(
    step, start, jax.random.split(key, steps_per_env)
  )
  return ended


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = cli.parser(__doc__)
  parser.add_argument("--games", default=",".join(continual.GAMES))
  parser.add_argument(
    "--steps",
    type=int,
    default=100_000,
    help="environment steps per seed, its environments together",
  )
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num-envs", type=int, default=8)
  parser.add_argument("--out", help="write the scores to this JSON file")
  args = parser.parse_args(argv)
  cli.check_out_path(args.out)
  cli.check_positive("--seeds", args.seeds)
  games = [g.strip() for g in args.games.split(",") if g.strip()]
  start = time.perf_counter()
  measured = random_policy_scores(
    games, args.steps, args.seeds, jax.random.key(args.seed), args.num_envs
  )
  results = {
    "config": {
      "games": games,
      "steps": args.steps,
      "seeds": args.seeds,
      "seed": args.seed,
      "num_envs": args.num_envs,
      "actions": continual.ACTIONS,
    },
    "versions": records.versions(),
    "games": measured,
    "wall_time_s": time.perf_counter() - start,
  }
  for game, score in measured.items():
    if not score["episodes"]:
      print(f"{game:13s} random policy: no episode ended", flush=True)
      continue
    print(
      f"{game:13s} random policy {score['mean']:8.4f} "
      f"± {score['stderr']:.4f} (SE, {score['episodes']} episodes)",
      flush=True,
    )
  if args.out:
    cli.write_json(args.out, results)
  return results


if __name__ == "__main__":
  main()
