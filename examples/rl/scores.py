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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike


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
