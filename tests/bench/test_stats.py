"""bench.stats: medians, bootstrap intervals, outliers, spread and the permutation test."""

from __future__ import annotations

import math

import pytest

from bench import stats


def test_median_and_empty() -> None:
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([1.0, 2.0, 3.0, 10.0]) == 2.5
    assert math.isnan(stats.median([]))


def test_bootstrap_ci_brackets_the_median_and_is_reproducible() -> None:
    x = [1.0, 1.1, 0.9, 1.05, 0.95, 1.2, 0.85]
    lo, hi = stats.bootstrap_ci(x)
    assert lo <= stats.median(x) <= hi
    assert min(x) <= lo and hi <= max(x)
    assert stats.bootstrap_ci(x) == (lo, hi)  # seeded: the report does not flicker


def test_bootstrap_ci_degenerate_inputs() -> None:
    assert stats.bootstrap_ci([2.0]) == (2.0, 2.0)
    lo, hi = stats.bootstrap_ci([])
    assert math.isnan(lo) and math.isnan(hi)


def test_outliers_are_flagged_not_dropped() -> None:
    x = [1.0, 1.01, 0.99, 1.02, 0.98, 5.0]
    flags = stats.outliers(x)
    assert flags == [False, False, False, False, False, True]
    assert stats.outliers([1.0, 9.0, 1.0]) == [False, False, False]  # too few to call one


def test_spread_and_noisy() -> None:
    assert stats.spread([1.0]) == 0.0
    assert not stats.noisy([1.0, 1.01, 0.99, 1.0])
    assert stats.noisy([1.0, 1.5, 0.7, 1.2])


def test_permutation_complete_separation_three_against_three() -> None:
    base = [1.0, 1.1, 1.05]
    new = [2.0, 2.1, 2.05]
    assert stats.permutation_test(base, new, "greater") == pytest.approx(1 / 20)
    assert stats.permutation_test(base, new, "less") == pytest.approx(1.0)
    assert stats.permutation_test(base, new, "two-sided") == pytest.approx(2 / 20)


def test_permutation_no_difference_is_not_significant() -> None:
    a = [1.0, 1.2, 0.9, 1.1, 1.05]
    b = [1.1, 0.95, 1.0, 1.15, 1.02]
    assert stats.permutation_test(a, b, "greater") > 0.2
    assert stats.permutation_test(a, a, "two-sided") == pytest.approx(1.0)


def test_permutation_large_samples_use_random_splits() -> None:
    a = [1.0 + 0.01 * i for i in range(30)]
    b = [2.0 + 0.01 * i for i in range(30)]
    p = stats.permutation_test(a, b, "greater", n_resamples=2000)
    assert 0 < p < 0.01


def test_ratio_ci() -> None:
    lo, hi = stats.ratio_ci([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    lo, hi = stats.ratio_ci([1.0, 1.1, 0.9, 1.0], [1.9, 2.1, 2.0, 2.0])
    assert lo < 2.0 < hi


def test_summarize() -> None:
    s = stats.summarize([1.0, 2.0, 3.0])
    assert s["n"] == 3 and s["median"] == 2.0 and s["min"] == 1.0 and s["max"] == 3.0
