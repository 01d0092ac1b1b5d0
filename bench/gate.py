"""``python -m bench compare --base REV`` and ``python -m bench gate``: A/B runs from the command line.

The gate is CI's bench step (``make bench-gate``): the A/B compare of the checkout (HEAD and any
uncommitted change) against HEAD's first parent on the quick profile's workloads, ``GATE_PAIRS``
pairs, failing only on a regression that is both significant and large (``GATE_THRESHOLDS``).
Budget: 15 minutes on a 2-core machine, building the base venv included (bench/README.md has
the measured time). When it cannot compare (HEAD has no parent, the base cannot be built, the
base can serve no cell) it says so in one line starting ``bench gate: NOT GATED`` and runs the
quick profile without a gate instead: never a silent pass of a check that did not run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

from bench import paired, revs
from bench.profiles import GATE_REPEATS, PROFILES, Profile

REPO = Path(__file__).resolve().parent.parent
GATE_PAIRS = 12  # 2^-12: the smallest p a sign-flip test of 12 pairs can give, well under alpha
GATE_BUDGET_S = 15 * 60
# CI's verdict: only a regression that is significant AND large fails the submission: ratio >= 1.10
# at p <= 0.0005, i.e. with 12 pairs p = 1/4096 (every pair slower) or 2/4096 (all but the pair
# of smallest |log ratio|). bench/README.md, "The instrument, measured": at p <= 0.001 (4/4096),
# 10 same-commit runs under a CPU hog failed once (remove / overlay, 11 of 12 pairs slower, p =
# 4/4096: one cell of 22 judged, as expected of ~0.1% per cell), and a gate run judges ~54 cells;
# at 0.0005 the same samples give no false alarm and still catch +25% in 10 of 10 runs. Cells whose
# base median is under 2 ms never fail: mount and vfs copy-up, whose log ratios spread 0.3-2.4.
GATE_THRESHOLDS = paired.Thresholds(alpha=0.0005, threshold=0.10, floor=2e-3)


def _say(s: str) -> None:
    print(s, file=sys.stderr, flush=True)


def side_for(rev: str, name: str, *, repo: Path = REPO, log: Callable[[str], None] = _say) -> revs.Side:
    """``worktree``: this checkout; anything else: a revision built (or cached) by ``revs``."""
    if rev == "worktree":
        return revs.worktree_side(repo, name)
    return revs.build(repo, rev, name=name, log=log)


def run_ab(base: revs.Side, new: revs.Side, profile: Profile, *, work_dir: Path, out_dir: Path,
           t: paired.Thresholds = paired.DEFAULTS, seed: int = 1, order_seed: int | None = None,
           interleave: str = "phase", verbose: bool = False) -> tuple["object", list["object"]]:
    """Run the A/B of ``new`` against ``base`` on ``profile`` (its reps = pairs) and write the
    report into ``out_dir``; returns (ABRun, rows)."""
    from bench import ab
    from bench.runner import RunConfig

    cfg = RunConfig(profile=profile.with_(peers=(), peer_workloads=()), label="ab", work_dir=work_dir,
                    results_dir=out_dir, seed=seed, compare=False, verbose=verbose)
    order_seed = int.from_bytes(os.urandom(4), "little") if order_seed is None else order_seed
    run = ab.ABRunner(cfg, [base, new], order_seed=order_seed, interleave=interleave).run_ab()
    path, rows = ab.write(run, out_dir, t)
    _say(ab.summary_text(run, rows, t))
    _say(f"bench: A/B report in {path}")
    return run, rows


def compare_revs(base_rev: str, new_rev: str, profile: Profile, *, work_dir: Path, out_dir: Path,
                 t: paired.Thresholds, interleave: str = "phase", verbose: bool = False) -> int:
    """``python -m bench compare --base REV [--new REV|worktree]``: exit 1 on a regression,
    2 when a side cannot be built."""
    try:
        base = side_for(base_rev, "base")
        new = side_for(new_rev, "new")
    except revs.BuildError as e:
        _say(f"bench: {e}")
        return 2
    _, rows = run_ab(base, new, profile, work_dir=work_dir, out_dir=out_dir, t=t, interleave=interleave,
                     verbose=verbose)
    return 1 if any(r.result is not None and r.result.failed for r in rows) else 0  # type: ignore[attr-defined]


def gate_profile(pairs: int = GATE_PAIRS) -> Profile:
    return PROFILES["quick"].with_(reps=pairs, repeats=dict(GATE_REPEATS))


def gate(*, base_rev: str = "HEAD^", work_dir: Path, results_dir: Path, pairs: int = GATE_PAIRS,
         t: paired.Thresholds = GATE_THRESHOLDS, repo: Path = REPO, cache: Path | None = None,
         verbose: bool = False) -> int:
    """CI's gate (module docstring). Exit status: 0 pass (or not gated, said so), 1 regression."""
    t0 = time.monotonic()
    out_dir = results_dir / "gate"
    try:
        base = revs.build(repo, base_rev, name="base", label=f"{revs.resolve(repo, base_rev)[:10]} ({base_rev})",
                          cache=cache or revs.CACHE, log=_say)
    except revs.BuildError as e:
        _say(f"bench gate: NOT GATED: no base to compare with: {e}; running the quick profile without a gate")
        return fallback(work_dir=work_dir, results_dir=results_dir, verbose=verbose)
    new = revs.worktree_side(repo, "new")
    run, rows = run_ab(base, new, gate_profile(pairs), work_dir=work_dir, out_dir=out_dir, t=t, verbose=verbose)
    judged = [r for r in rows if r.result is not None]  # type: ignore[attr-defined]
    took = time.monotonic() - t0
    over = f" (over its {GATE_BUDGET_S // 60}-minute budget)" if took > GATE_BUDGET_S else ""
    if not judged:
        _say(f"bench gate: NOT GATED: the base {base.label} could serve no cell of the quick workloads "
             f"(see {out_dir / 'ab.md'}); the new side's quick measurements are in {out_dir / 'ab.json'}")
        return 0
    bad = [r for r in judged if r.result.failed]  # type: ignore[attr-defined]
    if bad:
        _say(f"bench gate: FAIL: {len(bad)} regression(s) of {len(judged)} cells against {base.label} "
             f"in {took:.0f} s{over}; see {out_dir / 'ab.md'}")
        return 1
    tiny = sum(1 for r in judged if r.result.verdict in ("tiny", "too-few"))  # type: ignore[attr-defined]
    _say(f"bench gate: PASS: {len(judged) - tiny} cells judged against {base.label} ({tiny} more too small or "
         f"too few pairs to judge), no regression, in {took:.0f} s{over}")
    return 0


def fallback(*, work_dir: Path, results_dir: Path, verbose: bool = False) -> int:
    """The quick profile, reported against the committed baseline as history, never failing on it."""
    from bench.report import finish
    from bench.runner import BusyError, RunConfig, Runner

    p = PROFILES["quick"]
    cfg = RunConfig(profile=p, label="quick", work_dir=work_dir, results_dir=results_dir,
                    baseline=results_dir / p.baseline, compare=True, fail_on_regression=False,
                    alpha=p.alpha, verbose=verbose)
    try:
        suite = Runner(cfg).run()
    except BusyError as e:
        _say(f"bench: {e}")
        return 2
    out_json = results_dir / "quick.json"
    suite.save(out_json)
    return finish(cfg, suite, out_json, save_baseline=False)
