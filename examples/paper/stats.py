"""The statistics of the reports: spreads over seeds and paired differences.

Every method of one seed starts from the same initialisation and sees the same
data in the same order, so two methods are compared seed by seed: the mean of
the per-seed differences with a confidence interval from Student's t
distribution. A spread is the sample standard deviation (``ddof=1``).
With one seed neither is defined: the std and the interval's ends are NaN,
and the text says so (``0.8123 (1 seed, no std)``) instead of a spread of 0.

Example::

  from examples.paper import stats
  difference = stats.paired(swr_acc, vanilla_acc)
  print(difference)  # +0.0123 [+0.0050, +0.0196]
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (``ddof=1``; NaN for one value)."""
  values = np.asarray(values, dtype=float)
  std = values.std(ddof=1) if values.size > 1 else np.nan
  return float(values.mean()), float(std)


def mean_std_text(values: Sequence[float], plus_minus: str = "±") -> str:
  """``0.8123 ± 0.0200``, or ``0.8123 (1 seed, no std)`` for one value.

  Args:
    values: one value per seed.
    plus_minus: the sign between the mean and the std (``"+-"`` in ASCII).

  Returns:
    The mean and the sample std with four decimals.

  Example::

    mean_std_text([0.80, 0.82, 0.84])  # "0.8200 ± 0.0200"
  """
  mean, std = mean_std(values)
  if len(values) < 2:
    return f"{mean:.4f} ({_seeds(len(values))}, no std)"
  return f"{mean:.4f} {plus_minus} {std:.4f}"


@dataclasses.dataclass(frozen=True)
class Difference:
  """The mean of per-seed differences ``a - b`` and its confidence interval.

  Attributes:
    mean: the mean difference.
    low: the lower end of the interval (NaN with one seed: undefined).
    high: the upper end (NaN with one seed).
    seeds: how many pairs.
  """

  mean: float
  low: float
  high: float
  seeds: int

  @property
  def verdict(self) -> str:
    """ "higher" or "lower" when the interval excludes 0, else "tie".

    One seed has no interval, so it is a "tie" whatever its mean.
    """
    if self.low > 0:
      return "higher"
    if self.high < 0:
      return "lower"
    return "tie"

  def __str__(self) -> str:
    if self.seeds < 2:
      return f"{self.mean:+.4f} ({_seeds(self.seeds)}, no interval)"
    return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired(
  a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> Difference:
  """The paired difference ``a - b`` over seeds with a t interval.

  Args:
    a: one value per seed.
    b: one value per seed, in the same seed order.
    confidence: the interval's coverage.

  Returns:
    A :class:`Difference`; with one seed its interval is undefined (NaN).
  """
  a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(
      f"paired: a and b must hold one value per seed each; got shapes "
      f"{a.shape} and {b.shape}."
    )
  differences = a - b
  mean, std = mean_std(differences)
  if len(differences) < 2:
    return Difference(mean, np.nan, np.nan, len(differences))
  quantile = scipy_stats.t.ppf(0.5 + confidence / 2, len(differences) - 1)
  half_width = quantile * std / np.sqrt(len(differences))
  return Difference(
    mean, mean - half_width, mean + half_width, len(differences)
  )


def _seeds(count: int) -> str:
  return f"{count} seed" if count == 1 else f"{count} seeds"
