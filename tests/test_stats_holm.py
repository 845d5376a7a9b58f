"""Holm's correction and the reports' margins, against hand-computed values.

Issue 26, part 4: every table corrects its comparisons together (Holm), and
an interval that contains 0 is reported with the margins it rules out, never
as a "tie".
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from examples.paper import stats

# Per-seed values of three methods on five seeds.
A = [0.82, 0.85, 0.80, 0.86, 0.84]
B = [0.80, 0.81, 0.81, 0.82, 0.815]
C = [0.79, 0.83, 0.78, 0.85, 0.80]


def p_by_hand(a, b):
  """The paired t test written out: t = mean / (sd / sqrt(n)), two-sided."""
  d = np.subtract(a, b)
  n = len(d)
  t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
  return 2 * scipy_stats.t.sf(abs(t), n - 1)


def test_p_value_is_the_paired_t_test():
  for a, b in ((A, B), (A, C), (B, C)):
    expected = p_by_hand(a, b)
    assert stats.paired_p_value(a, b) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)


def test_p_value_matches_the_interval():
  """The interval at confidence c excludes 0 exactly when p < 1 - c."""
  p = stats.paired_p_value(A, B)
  just_above, just_below = 1 - p * 1.001, 1 - p * 0.999
  assert stats.paired(A, B, just_above).low > 0
  assert stats.paired(A, B, just_below).low < 0


def test_p_value_without_spread_and_with_one_seed():
  assert stats.paired_p_value([0.5, 0.6], [0.4, 0.5]) == 0.0  # all +0.1
  assert stats.paired_p_value([0.5, 0.6], [0.5, 0.6]) == 1.0  # all 0
  assert math.isnan(stats.paired_p_value([0.9], [0.8]))


def test_holm_adjust_by_hand():
  # Sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06),
  # 0.04 (x1 = 0.04, raised to 0.06 to stay monotone).
  adjusted = stats.holm_adjust([0.01, 0.04, 0.03, 0.005])
  np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
  # 0.05 x3 = 0.15; 0.4 x2 = 0.8; 0.5 x1 = 0.5, raised to 0.8.
  np.testing.assert_allclose(
    stats.holm_adjust([0.4, 0.5, 0.05]), [0.8, 0.8, 0.15]
  )
  # Capped at 1: 0.6 x3 = 1.8, 0.7 x2 = 1.4.
  assert stats.holm_adjust([0.6, 0.7, 0.8]) == [1.0, 1.0, 1.0]
  assert stats.holm_adjust([0.02]) == [0.02]  # a family of one: unchanged


def test_holm_adjust_is_monotone_and_never_below_the_raw_p():
  rng = np.random.default_rng(0)
  for _ in range(20):
    p = rng.uniform(0, 0.2, size=6)
    adjusted = np.array(stats.holm_adjust(p))
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1)


@pytest.mark.parametrize("bad", [[], [0.1, float("nan")], [1.2], [-0.1]])
def test_holm_adjust_refuses_what_is_not_a_p_value(bad):
  with pytest.raises(ValueError, match="holm_adjust"):
    stats.holm_adjust(bad)


def test_holm_family_against_hand_computed_values():
  family = stats.holm({"a − b": (A, B), "a − c": (A, C), "b − c": (B, C)})
  raw = [p_by_hand(A, B), p_by_hand(A, C), p_by_hand(B, C)]
  order = np.argsort(raw)
  by_hand = np.empty(3)
  running = 0.0
  for rank, index in enumerate(order):  # Holm written out, step by step
    running = max(running, min(1.0, (3 - rank) * raw[index]))
    by_hand[index] = running
  assert list(family) == ["a − b", "a − c", "b − c"]
  for comparison, p, holm_p, (a, b) in zip(
    family.values(), raw, by_hand, ((A, B), (A, C), (B, C))
  ):
    assert comparison.p_value == pytest.approx(p, rel=1e-12)
    assert comparison.holm_p == pytest.approx(holm_p, rel=1e-12)
    assert comparison.family == 3
    assert comparison.interval_confidence == pytest.approx(1 - 0.05 / 3)
    # Bonferroni's interval: the t quantile at 1 - 0.05 / 6 on each side.
    d = np.subtract(a, b)
    half = scipy_stats.t.ppf(1 - 0.05 / 6, 4) * d.std(ddof=1) / math.sqrt(5)
    assert comparison.difference.low == pytest.approx(d.mean() - half)
    assert comparison.difference.high == pytest.approx(d.mean() + half)
    # An interval that excludes 0 always comes with a Holm rejection.
    if comparison.difference.verdict != "tie":
      assert comparison.rejected


def test_holm_family_needs_two_seeds_per_comparison():
  with pytest.raises(ValueError, match="fewer than 2 seeds"):
    stats.holm({"one seed": ([0.9], [0.8])})
  with pytest.raises(ValueError, match="at least one comparison"):
    stats.holm({})


def test_describe_reports_margins_never_a_tie():
  around_zero = stats.Difference(0.004, -0.010, 0.018, 10)
  assert around_zero.describe() == (
    "+0.004 [-0.010, +0.018]: rules out a gain above 0.018 and a loss above "
    "0.010"
  )
  assert around_zero.verdict == "tie"  # kept for code that branches on it
  gain = stats.Difference(0.098, 0.041, 0.155, 5)
  assert gain.describe() == "+0.098 [+0.041, +0.155]: a gain of 0.041 to 0.155"
  loss = stats.Difference(-0.03, -0.05, -0.01, 5)
  assert loss.describe() == "-0.030 [-0.050, -0.010]: a loss of 0.010 to 0.050"
  assert loss.describe(4).startswith("-0.0300 [-0.0500, -0.0100]")
  one = stats.paired([0.9], [0.8])
  assert one.describe() == "+0.100 (1 seed, no interval: rules out nothing)"
  comparison = stats.holm({"a − b": (A, B)})["a − b"]
  assert comparison.describe().endswith(
    f"(p = {comparison.p_value:.2g}, Holm p = {comparison.holm_p:.2g})"
  )
