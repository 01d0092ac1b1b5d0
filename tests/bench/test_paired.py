"""bench.paired: the A/B verdict from paired ratios (sign-flip test, bootstrap interval, rule)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import paired
from bench.paired import Thresholds


def _pairs(n: int, shift: float, noise: float, seed: int, base: float = 0.1) -> tuple[list[float], list[float]]:
    """n pairs whose sides share a per-pair machine factor (the neighbour), each with its own
    lognormal noise; new = base x shift."""
    rng = np.random.default_rng(seed)
    machine = np.exp(rng.normal(0, 0.3, n))  # a busy neighbour: up to ~2x, on both sides of a pair
    b = base * machine * np.exp(rng.normal(0, noise, n))
    x = base * shift * machine * np.exp(rng.normal(0, noise, n))
    return list(b), list(x)


def test_rejects_a_real_25_percent_shift() -> None:
    b, n = _pairs(8, 1.25, 0.03, seed=1)
    r = paired.verdict(b, n)
    assert r.verdict == "regression" and r.failed
    assert r.p_slower == pytest.approx(1 / 256)  # every pair slower: the smallest p of 8 pairs
    assert 1.15 < r.ratio < 1.35
    assert r.ci[0] > 1.1 and r.ci[0] <= r.ratio <= r.ci[1]


def test_accepts_identical_samples() -> None:
    b = [0.1, 0.2, 0.15, 0.3, 0.12, 0.11, 0.5, 0.2]
    r = paired.verdict(b, list(b))
    assert r.verdict == "same" and not r.failed
    assert r.ratio == 1.0 and r.p_slower == 1.0 and r.p_faster == 1.0
    assert r.ci == (1.0, 1.0)


def test_a_against_a_rarely_significant_and_never_a_regression() -> None:
    """500 simulated A/A cells under a neighbour that moves whole pairs by up to 2x: the paired
    test is significant at about its level, and never past the 10% size rule."""
    sig = fails = 0
    for seed in range(500):
        b, n = _pairs(8, 1.0, 0.03, seed)
        r = paired.verdict(b, n)
        sig += r.p_slower <= 0.01
        fails += r.failed
    assert sig <= 10  # 500 x 0.0039 ~ 2 expected
    assert fails == 0


def test_the_neighbour_cancels_in_pairs() -> None:
    """Unpaired, a 2x machine factor swamps 25%; paired, it cancels."""
    b, n = _pairs(8, 1.25, 0.02, seed=7)
    assert max(b) / min(b) > 1.5  # the neighbour is big
    assert paired.verdict(b, n).failed


def test_exact_sign_flip_p_values() -> None:
    assert paired.sign_flip_test([1.0] * 8) == pytest.approx(1 / 256)
    assert paired.sign_flip_test([-1.0] * 8, "less") == pytest.approx(1 / 256)
    assert paired.sign_flip_test([1.0] * 8, "less") == 1.0
    # one negative pair of the same size: 9 of 256 assignments reach a mean of 0.75
    assert paired.sign_flip_test([1.0] * 7 + [-1.0]) == pytest.approx(9 / 256)
    assert math.isnan(paired.sign_flip_test([]))
    big = list(np.random.default_rng(0).normal(0.5, 0.1, 20))  # sampled above 16 pairs
    assert paired.sign_flip_test(big) < 0.001


def test_one_wild_pair_is_not_significant() -> None:
    d = [0.01, -0.01, 0.0, 0.02, -0.02, 0.01, -0.01, 1.5]  # one pair hit by a 4x spike
    assert paired.sign_flip_test(d) > 0.05
    b = [0.1] * 8
    n = [0.1 * math.exp(x) for x in d]
    assert paired.verdict(b, n).verdict == "same"  # gm ratio 1.2, but not significant


def test_small_significant_shift_is_slower_not_a_regression() -> None:
    b, n = _pairs(8, 1.04, 0.005, seed=3)
    r = paired.verdict(b, n)
    assert r.verdict == "slower" and not r.failed


def test_improvement_and_tiny_and_too_few() -> None:
    b, n = _pairs(8, 0.7, 0.02, seed=4)
    assert paired.verdict(b, n).verdict == "improvement"
    b, n = _pairs(8, 2.0, 0.02, seed=5, base=200e-6)
    assert paired.verdict(b, n).verdict == "tiny"  # under the 1 ms floor: never fails
    assert paired.verdict([0.1, 0.1], [0.2, 0.2]).verdict == "too-few"
    with pytest.raises(ValueError):
        paired.log_ratios([1.0], [1.0, 2.0])


def test_thresholds_are_honoured() -> None:
    b, n = _pairs(8, 1.25, 0.02, seed=6)
    assert not paired.verdict(b, n, Thresholds(threshold=0.5)).failed  # 1.25 < 1.5
    assert paired.verdict(b, n, Thresholds(threshold=0.2)).failed


def test_bootstrap_interval_covers_the_true_ratio() -> None:
    """Over 300 simulated cells of 8 pairs with a true ratio of 1.2, the 95% interval of the
    geometric-mean ratio covers 1.2 in most of them (a percentile bootstrap of 8 pairs is a
    little narrow: at least 85%, not 95%)."""
    covered = 0
    for seed in range(300):
        b, n = _pairs(8, 1.2, 0.05, seed)
        lo, hi = paired.gm_ratio_ci(paired.log_ratios(b, n))
        covered += lo <= 1.2 <= hi
    assert covered >= 0.85 * 300


def test_bootstrap_degenerate_and_seeded() -> None:
    assert paired.gm_ratio_ci([math.log(2.0)]) == pytest.approx((2.0, 2.0))
    lo, hi = paired.gm_ratio_ci([])
    assert math.isnan(lo) and math.isnan(hi)
    d = [0.1, 0.2, 0.0, 0.15]
    assert paired.gm_ratio_ci(d) == paired.gm_ratio_ci(d)  # the report does not flicker


def test_pair_log_ratio_is_the_median_of_the_per_turn_ratios() -> None:
    # turn 2 was hit by a burst on the new side only: the median drops it, a ratio of means would not
    base = [0.100, 0.110, 0.100, 0.120, 0.100]
    new = [0.120, 0.132, 0.300, 0.144, 0.120]
    assert paired.pair_log_ratio(base, new) == pytest.approx(math.log(1.2))
    assert paired.pair_log_ratio([1.0, 2.0], [2.0, 2.0]) == pytest.approx(math.log(2) / 2)  # even K: middle two
    with pytest.raises(ValueError):
        paired.pair_log_ratio([0.1, 0.1], [0.1])
    with pytest.raises(ValueError):
        paired.pair_log_ratio([0.1, 0.0], [0.1, 0.1])


def test_verdict_on_given_log_ratios() -> None:
    """``logs`` decides the verdict (the samples give only the medians shown): samples that
    alone look the same, with per-pair logs all at +20%, are a regression."""
    b = [0.1] * 8
    r = paired.verdict(b, list(b), logs=[math.log(1.2)] * 8)
    assert r.verdict == "regression" and r.ratio == pytest.approx(1.2)
    assert r.base_median == r.new_median == pytest.approx(0.1)
    assert paired.verdict(b, list(b)).verdict == "same"


def test_ab_analyse_pairs_repeated_timings_turn_by_turn() -> None:
    """A cell whose repetitions carry K timings per side is judged on the per-turn ratios: a turn
    where a burst hit one side only is dropped by the median, and each turn's own neighbour
    cancels in its ratio; the medians of each side, taken alone, do neither."""
    from bench import ab
    from bench.results import Cell, Suite

    rng = np.random.default_rng(3)
    bc = Cell("phase", "materialise", "vfs", "w", samples=[], reps=[])
    nc = Cell("phase", "materialise", "vfs", "w", samples=[], reps=[])
    for rep in range(8):
        # five turns: the machine's state moves from turn to turn (the same for both timings of a
        # turn); the new side is 15% slower; a burst makes one new timing 3x in two turns of five
        turn = [0.1, 0.1, 0.1, 0.3, 0.3]
        bt = [x * float(np.exp(rng.normal(0, 0.01))) for x in turn]
        nt = [x * 1.15 * float(np.exp(rng.normal(0, 0.01))) for x in turn]
        for k in rng.choice(3, size=2, replace=False):
            nt[int(k)] *= 3
        for c, t in ((bc, bt), (nc, nt)):
            c.samples.append(float(np.median(t)))
            c.reps.append(rep)
            c.extra.setdefault("repeats", {})[str(rep)] = t
    r = ab.analyse(Suite(cells=[bc]), Suite(cells=[nc]))[0].result
    assert r is not None and r.verdict == "regression" and r.ratio == pytest.approx(1.15, rel=0.02)
    for c in (bc, nc):  # without the timings: the ratio of the sides' medians, thrown by the bursts
        c.extra.pop("repeats")
    plain = ab.analyse(Suite(cells=[bc]), Suite(cells=[nc]))[0].result
    assert plain is not None and plain.ratio > 2
