"""The statistics of the reports: spreads over seeds and paired differences.

Every method of one seed starts from the same initialisation and sees the same
data in the same order, so two methods are compared seed by seed: the mean of
the per-seed differences with a confidence interval from Student's t
distribution. A spread is the sample standard deviation (``ddof=1``).
With one seed neither is defined: the std and the interval's ends are NaN,
and the text says so (``0.8123 (1 seed, no std)``) instead of a spread of 0.

A table that makes several comparisons corrects them together
(:func:`holm`): Holm's step-down adjusted p-values decide, and every
interval is at Bonferroni's level, so that the table's intervals hold
together. A report never calls an interval that contains 0 a "tie": it says
which gain and which loss the interval rules out
(:meth:`Difference.describe`).

Example::

  from examples.paper import stats
  difference = stats.paired(swr_acc, vanilla_acc)
  print(difference)  # +0.0123 [+0.0050, +0.0196]
  print(difference.describe())  # +0.012 [+0.005, +0.020]: a gain of 0.005 to 0.020
  family = stats.holm({"swr − vanilla": (swr_acc, vanilla_acc),
                       "l2 − vanilla": (l2_acc, vanilla_acc)})
  print(family["swr − vanilla"].holm_p)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

    For code that branches on the sign; a report's text uses
    :meth:`describe`, which says what an interval around 0 rules out.
    One seed has no interval, so it is a "tie" whatever its mean.
    """
    if self.low > 0:
      return "higher"
    if self.high < 0:
      return "lower"
    return "tie"

  def describe(self, decimals: int = 3) -> str:
    """The difference, its interval and the margins the interval rules out.

    A gain is ``a - b > 0``. An interval that excludes 0 gives the range of
    the gain (or loss); one that contains 0 still bounds both, and the text
    says by how much instead of calling it a tie.

    Args:
      decimals: the decimals of every number.

    Returns:
      The text, e.g. (4 decimals give ``str(difference)``'s numbers)::

        "+0.004 [-0.010, +0.018]: rules out a gain above 0.018 and a loss
        above 0.010"
        "+0.098 [+0.041, +0.155]: a gain of 0.041 to 0.155"
        "-0.030 [-0.050, -0.010]: a loss of 0.010 to 0.050"
        "+0.100 (1 seed, no interval: rules out nothing)"
    """

    def signed(value: float) -> str:
      return f"{value:+.{decimals}f}"

    def size(value: float) -> str:
      return f"{abs(value):.{decimals}f}"

    if self.seeds < 2:
      return (
        f"{signed(self.mean)} ({_seeds(self.seeds)}, no interval: rules out "
        "nothing)"
      )
    text = f"{signed(self.mean)} [{signed(self.low)}, {signed(self.high)}]"
    if self.low > 0:
      return f"{text}: a gain of {size(self.low)} to {size(self.high)}"
    if self.high < 0:
      return f"{text}: a loss of {size(self.high)} to {size(self.low)}"
    return (
      f"{text}: rules out a gain above {size(self.high)} and a loss above "
      f"{size(self.low)}"
    )

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
  differences = _differences(a, b, "paired")
  mean, std = mean_std(differences)
  if len(differences) < 2:
    return Difference(mean, np.nan, np.nan, len(differences))
  quantile = scipy_stats.t.ppf(0.5 + confidence / 2, len(differences) - 1)
  half_width = quantile * std / np.sqrt(len(differences))
  return Difference(
    mean, mean - half_width, mean + half_width, len(differences)
  )


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float:
  """The two-sided p-value of the paired t test that ``a - b`` has mean 0.

  It matches :func:`paired`'s interval: the interval at confidence ``c``
  excludes 0 exactly when the p-value is below ``1 - c``.

  Args:
    a: one value per seed.
    b: one value per seed, in the same seed order.

  Returns:
    The p-value; NaN with one seed. Differences without spread (all equal)
    give 1 if they are 0 and 0 otherwise, as their zero-width interval does.
  """
  differences = _differences(a, b, "paired_p_value")
  mean, std = mean_std(differences)
  if len(differences) < 2:
    return float("nan")
  if std == 0:
    return 1.0 if mean == 0 else 0.0
  t = mean / (std / np.sqrt(len(differences)))
  return float(2 * scipy_stats.t.sf(abs(t), len(differences) - 1))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
  """Holm's step-down adjusted p-values, in the order given.

  With the m p-values sorted, ``p_(1) <= ... <= p_(m)``, the adjusted
  ``p_(i)`` is ``max_{j <= i} min(1, (m - j + 1) p_(j))``: never below the
  raw one, in the same order as the raw ones, at most 1. Rejecting each
  hypothesis whose adjusted p-value is below alpha is Holm's procedure,
  which keeps the chance of any false rejection in the family at most alpha
  whatever the dependence between the tests.

  Args:
    p_values: one p-value per comparison, each in [0, 1].

  Returns:
    The adjusted p-values, in the same order.

  Raises:
    ValueError: for an empty list, a NaN or a value outside [0, 1].

  References:
    Holm, *A simple sequentially rejective multiple test procedure*,
    Scandinavian Journal of Statistics 6(2), 1979.
  """
  p = np.asarray(p_values, dtype=float)
  if p.ndim != 1 or not p.size or np.any(~((p >= 0) & (p <= 1))):
    raise ValueError(
      "holm_adjust: p_values must be a non-empty list of numbers in [0, 1] "
      f"(no NaN: a comparison of one seed has no p-value); got {p_values}."
    )
  m = len(p)
  order = np.argsort(p, kind="stable")
  scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
  adjusted = np.empty(m)
  adjusted[order] = np.maximum.accumulate(scaled)
  return adjusted.tolist()


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One paired comparison of a family, corrected by Holm's method.

  Attributes:
    difference: the mean per-seed difference ``a - b``, its interval at
      Bonferroni's level ``1 - (1 - confidence) / family``.
    p_value: the paired t test's two-sided p-value, before correction.
    holm_p: Holm's adjusted p-value within the family.
    family: how many comparisons the family holds.
    confidence: the family's confidence (0.95: at most a 5% chance of any
      false rejection in the family).
  """

  difference: Difference
  p_value: float
  holm_p: float
  family: int
  confidence: float

  @property
  def rejected(self) -> bool:
    """Whether Holm's procedure says the difference is not 0."""
    return self.holm_p < 1 - self.confidence

  @property
  def interval_confidence(self) -> float:
    """Each interval's own confidence: Bonferroni's level."""
    return 1 - (1 - self.confidence) / self.family

  def describe(self, decimals: int = 3) -> str:
    """The difference, what its interval rules out, and both p-values."""
    return (
      f"{self.difference.describe(decimals)} (p = {self.p_value:.2g}, "
      f"Holm p = {self.holm_p:.2g})"
    )


def holm(
  pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]],
  confidence: float = CONFIDENCE,
) -> dict[str, Comparison]:
  """The paired comparisons of one table, corrected together.

  Holm's adjusted p-values (:func:`holm_adjust`) decide which differences
  are not 0, with at most a ``1 - confidence`` chance of any false
  rejection in the table. Holm's decisions have no interval of their own,
  so every interval is Bonferroni's, at confidence
  ``1 - (1 - confidence) / m`` for m comparisons: all m intervals hold
  together with probability at least ``confidence``. They are the more
  cautious of the two: an interval that excludes 0 always comes with a
  Holm rejection (its p-value is below ``(1 - confidence) / m``, so its
  adjusted one is below ``1 - confidence``), but Holm may reject a
  difference whose interval still reaches 0, which is why a report shows
  both.

  Args:
    pairs: ``{label: (a, b)}``, the values of ``a`` and ``b`` per seed in
      the same seed order.
    confidence: the family's confidence.

  Returns:
    ``{label: Comparison}`` in the order of ``pairs``.

  Raises:
    ValueError: for no comparison, or one with fewer than 2 seeds.
  """
  if not pairs:
    raise ValueError("holm: the family needs at least one comparison.")
  short = [label for label, (a, _) in pairs.items() if len(a) < 2]
  if short:
    raise ValueError(
      f"holm: {short} have fewer than 2 seeds, so no p-value; run more "
      "seeds or leave them out of the family."
    )
  level = 1 - (1 - confidence) / len(pairs)
  p_values = [paired_p_value(a, b) for a, b in pairs.values()]
  adjusted = holm_adjust(p_values)
  return {
    label: Comparison(
      difference=paired(a, b, level),
      p_value=p,
      holm_p=holm_p,
      family=len(pairs),
      confidence=confidence,
    )
    for (label, (a, b)), p, holm_p in zip(pairs.items(), p_values, adjusted)
  }


def _differences(a: Sequence[float], b: Sequence[float], caller: str):
  a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(
      f"{caller}: a and b must hold one value per seed each; got shapes "
      f"{a.shape} and {b.shape}."
    )
  return a - b


def _seeds(count: int) -> str:
  return f"{count} seed" if count == 1 else f"{count} seeds"
