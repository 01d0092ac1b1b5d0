"""Paired statistics for A/B runs: the verdict on one cell from its per-repetition ratios.

An A/B run (``bench/ab.py``) measures the base and the new revision one right after the other,
repetition by repetition, in random order within each pair, on the same filesystems. Both
samples of a pair saw the same neighbours, so their ratio ``new / base`` cancels most of what a
busy machine does to both. The verdict is therefore taken on the *log ratios* of the pairs, not
on two unpaired sample sets:

- ``sign_flip_test``: exact one-sided sign-flip permutation test of "the mean log ratio is above
  0" (every one of the 2^n sign assignments is enumerated up to n = 16, a seeded random sample
  above). No normality assumption; one wild pair cannot make a cell significant, because
  flipping its sign alone moves the statistic as much as it moved it. With n pairs the smallest
  p-value possible is 1 / 2^n (n = 8: 0.0039).
- ``pair_log_ratio``: a pair whose sides each timed the phase K times (repeats, taken in turns:
  the k-th timing of one side right next to the k-th of the other) counts as ONE pair whose log
  ratio is the median of the K per-turn log ratios: the neighbours' noise of each turn cancels in
  its own ratio, and the median drops the turns a burst hit on one side only. The test stays
  exact: under "no change" each per-turn ratio, hence their median, is symmetric about 0.
- ``gm_ratio_ci``: percentile bootstrap interval of the geometric-mean ratio (resampling pairs).
- ``verdict``: ``regression`` only when the change is both significant (p <= alpha) and large
  (geometric-mean ratio >= 1 + threshold); ``improvement`` symmetrically; ``slower`` /
  ``faster`` when significant but small; ``same`` otherwise. A cell whose base median is under
  ``floor`` seconds is ``tiny`` (timer and scheduler noise) and never fails.

Defaults (``DEFAULTS``) are what ``python -m bench compare`` and the gate use; bench/README.md
gives the measured false-alarm rate and sensitivity for them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np

EXACT_MAX_PAIRS = 16  # 2^16 sign assignments enumerated; above, random ones


@dataclass(frozen=True)
class Thresholds:
    """When a paired change fails: p <= alpha AND ratio >= 1 + threshold."""

    alpha: float = 0.01
    threshold: float = 0.10
    floor: float = 1e-3  # seconds: base medians below this are ``tiny`` and never fail
    level: float = 0.95  # bootstrap interval level


DEFAULTS = Thresholds()


def log_ratios(base: Sequence[float], new: Sequence[float]) -> "np.ndarray":
    """``log(new_i / base_i)`` of each pair; pairs with a non-positive side are dropped."""
    import numpy as np  # here: the CLI imports this module for its defaults

    b = np.asarray(base, dtype=float)
    n = np.asarray(new, dtype=float)
    if b.shape != n.shape:
        raise ValueError(f"paired samples differ in length: {b.size} base, {n.size} new")
    ok = (b > 0) & (n > 0) & np.isfinite(b) & np.isfinite(n)
    return np.log(n[ok] / b[ok])


def pair_log_ratio(base: Sequence[float], new: Sequence[float]) -> float:
    """The log ratio of one pair from its sides' K repeated timings, paired turn by turn: the
    median of ``log(new_k / base_k)`` (see the module docstring). Raises ValueError on unequal
    or empty timings, or a non-positive one."""
    if len(base) != len(new) or not base:
        raise ValueError(f"repeated timings differ in length: {len(base)} base, {len(new)} new")
    if min(base) <= 0 or min(new) <= 0:
        raise ValueError("a repeated timing is not positive")
    import statistics

    return statistics.median(math.log(n / b) for b, n in zip(base, new))


def sign_flip_test(d: Sequence[float], alternative: str = "greater", n_resamples: int = 20_000,
                   seed: int = 0) -> float:
    """p-value of the one-sided (``greater``: mean(d) > 0; ``less``: mean(d) < 0) or
    ``two-sided`` sign-flip permutation test on the paired differences ``d``. The observed
    assignment counts as one of them, so p is never 0; no pairs: nan."""
    import numpy as np  # here: the CLI imports this module for its defaults

    x = np.asarray(d, dtype=float)
    n = x.size
    if n == 0:
        return math.nan
    obs = float(x.mean())
    if n <= EXACT_MAX_PAIRS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((1.0, -1.0), size=(n_resamples, n))
        signs[0] = 1.0
    stats = (signs * x).mean(axis=1)
    eps = 1e-12 * max(1.0, abs(obs))
    if alternative == "greater":
        hits = np.count_nonzero(stats >= obs - eps)
    elif alternative == "less":
        hits = np.count_nonzero(stats <= obs + eps)
    elif alternative == "two-sided":
        hits = np.count_nonzero(np.abs(stats) >= abs(obs) - eps)
    else:
        raise ValueError(f"alternative must be greater, less or two-sided, not {alternative!r}")
    return float(hits / stats.shape[0])


def gm_ratio_ci(d: Sequence[float], level: float = 0.95, n_boot: int = 4000,
                seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``exp(mean(d))``, the geometric-mean ratio, resampling
    the pairs. One pair: (r, r); none: (nan, nan)."""
    import numpy as np  # here: the CLI imports this module for its defaults

    x = np.asarray(d, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        r = float(math.exp(x[0]))
        return r, r
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(math.exp(lo)), float(math.exp(hi))


@dataclass(frozen=True)
class PairedResult:
    """The paired verdict on one cell."""

    n: int
    ratio: float  # geometric-mean ratio new / base
    ci: tuple[float, float]
    p_slower: float
    p_faster: float
    base_median: float
    new_median: float
    verdict: str  # regression | improvement | slower | faster | same | tiny | too-few

    @property
    def failed(self) -> bool:
        return self.verdict == "regression"


MIN_PAIRS = 3


def verdict(base: Sequence[float], new: Sequence[float], t: Thresholds = DEFAULTS,
            logs: Sequence[float] | None = None) -> PairedResult:
    """The verdict on one cell from its paired samples (``base[i]`` and ``new[i]`` measured in the
    same repetition); see the module docstring for the rule. ``logs``: the pairs' log ratios when
    they are not simply ``log(new[i] / base[i])`` (repeated phases: ``pair_log_ratio``); the
    samples then give only the medians shown."""
    import numpy as np  # here: the CLI imports this module for its defaults

    d = log_ratios(base, new) if logs is None else np.asarray(logs, dtype=float)
    bmed = float(np.median(base)) if len(base) else math.nan
    nmed = float(np.median(new)) if len(new) else math.nan
    if d.size < MIN_PAIRS:
        r = float(math.exp(d.mean())) if d.size else math.nan
        return PairedResult(int(d.size), r, (math.nan, math.nan), math.nan, math.nan, bmed, nmed, "too-few")
    ratio = float(math.exp(d.mean()))
    ci = gm_ratio_ci(d, t.level)
    p_slow = sign_flip_test(d, "greater")
    p_fast = sign_flip_test(d, "less")
    if bmed < t.floor:
        v = "tiny"
    elif p_slow <= t.alpha and ratio >= 1 + t.threshold:
        v = "regression"
    elif p_fast <= t.alpha and ratio <= 1 / (1 + t.threshold):
        v = "improvement"
    elif p_slow <= t.alpha:
        v = "slower"
    elif p_fast <= t.alpha:
        v = "faster"
    else:
        v = "same"
    return PairedResult(int(d.size), ratio, ci, p_slow, p_fast, bmed, nmed, v)
