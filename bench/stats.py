"""Statistics for the bench, on numpy only: medians with bootstrap confidence intervals, outliers
(kept, only flagged), spread, and a permutation test for "did this get slower".

Why these: with 3 to 10 samples per cell, normal-theory intervals are not to be trusted and
outliers are common on shared machines; a percentile bootstrap of the median makes no shape
assumption, and an exact permutation test (all splits are enumerated for small samples) gives a
p-value without scipy. With 3 samples against 3, the smallest one-sided p-value possible is
1/20 = 0.05: it is reached only when every new sample is slower than every old one.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal, Sequence

import numpy as np

NOISY = 0.10  # spread (stdev / median) above which a cell is flagged noisy, as pyperf does
EXACT_LIMIT = 50_000  # enumerate every split up to this many; sample randomly above


def median(x: Sequence[float]) -> float:
    return float(np.median(np.asarray(x, dtype=float))) if len(x) else math.nan


def bootstrap_ci(x: Sequence[float], level: float = 0.95, n_boot: int = 4000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median. One sample: (x, x); none: (nan, nan)."""
    a = np.asarray(x, dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    if a.size == 1:
        return float(a[0]), float(a[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    meds = np.median(a[idx], axis=1)
    lo, hi = np.quantile(meds, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def outliers(x: Sequence[float]) -> list[bool]:
    """Tukey's fences: outside [Q1 - 1.5 IQR, Q3 + 1.5 IQR]. Needs 4 samples; fewer: none."""
    a = np.asarray(x, dtype=float)
    if a.size < 4:
        return [False] * int(a.size)
    q1, q3 = np.quantile(a, [0.25, 0.75])
    iqr = q3 - q1
    return [bool(v < q1 - 1.5 * iqr or v > q3 + 1.5 * iqr) for v in a]


def spread(x: Sequence[float]) -> float:
    """Relative spread: sample standard deviation over the median (0 for fewer than 2)."""
    a = np.asarray(x, dtype=float)
    if a.size < 2:
        return 0.0
    m = float(np.median(a))
    return float(np.std(a, ddof=1) / m) if m > 0 else math.inf


def noisy(x: Sequence[float]) -> bool:
    return spread(x) > NOISY


def permutation_test(a: Sequence[float], b: Sequence[float],
                     alternative: Literal["greater", "less", "two-sided"] = "greater",
                     n_resamples: int = 20_000, seed: int = 0) -> float:
    """p-value for "b's values are larger than a's" (``greater``), smaller (``less``) or
    different (``two-sided``); the statistic is the difference of means. Every split of the
    pooled samples is enumerated when there are at most ``EXACT_LIMIT`` of them (exact test),
    otherwise ``n_resamples`` random splits are drawn. The observed split counts as one of them,
    so p is never 0."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan
    pooled = np.concatenate([x, y])
    n, m = x.size, y.size
    observed = y.mean() - x.mean()
    total = pooled.sum()
    if math.comb(n + m, m) <= EXACT_LIMIT:
        idx = np.array(list(itertools.combinations(range(n + m), m)), dtype=np.intp)
        sum_b = pooled[idx].sum(axis=1)
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((n_resamples, n + m)), axis=1)[:, :m]
        sum_b = pooled[perms].sum(axis=1)
    stats = sum_b / m - (total - sum_b) / n
    eps = 1e-12 * max(1.0, abs(observed))
    if alternative == "greater":
        hits = np.count_nonzero(stats >= observed - eps)
    elif alternative == "less":
        hits = np.count_nonzero(stats <= observed + eps)
    else:
        hits = np.count_nonzero(np.abs(stats) >= abs(observed) - eps)
    if math.comb(n + m, m) <= EXACT_LIMIT:
        return float(hits / stats.size)
    return float((hits + 1) / (stats.size + 1))


def ratio_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95, n_boot: int = 4000,
             seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of median(b) / median(a), resampling each side independently."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    mx = np.median(x[rng.integers(0, x.size, size=(n_boot, x.size))], axis=1)
    my = np.median(y[rng.integers(0, y.size, size=(n_boot, y.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = my / mx
    r = r[np.isfinite(r)]
    if r.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(r, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def summarize(x: Sequence[float]) -> dict[str, float | int | list[bool] | bool]:
    """Everything a report row needs about one cell's samples."""
    lo, hi = bootstrap_ci(x)
    return {"n": len(x), "median": median(x), "ci_lo": lo, "ci_hi": hi,
            "min": float(min(x)) if len(x) else math.nan, "max": float(max(x)) if len(x) else math.nan,
            "spread": spread(x), "noisy": noisy(x), "outliers": outliers(x)}
