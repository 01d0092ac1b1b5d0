"""Regression compare: BASE vs NEW, cell by cell, on ratios to in-run references, with a test.

These machines are shared and noisy, so raw seconds from two runs are not compared directly.
Each sample of a phase is first divided by its *reference* measured in the same repetition of
the same run (``roofline.reference_samples``: the phase's limit, else the ``calib`` mix on the
driver's filesystem). A busy neighbour that slows the whole run slows the reference too.

For every cell both runs have (phases and series of lamina; peers and the roofline are context,
not lamina's code): ``ratio`` = median(NEW normalised) / median(BASE normalised), a 95% bootstrap
interval of it, and exact permutation tests on the log-normalised samples for "slower" and
"faster". Verdicts:

- ``regression``: p(slower) <= alpha and ratio > 1 + threshold (the only verdict that fails CI);
- ``improvement``: p(faster) <= alpha and ratio < 1 / (1 + threshold);
- ``slower`` / ``faster``: significant, within the threshold;
- ``same``: not significant. ``noisy`` is a flag (spread over 10% of the median in either run),
  shown beside the verdict;
- ``tiny``: the base median is under ``FLOOR`` seconds; timer and scheduler noise dominate, so
  such cells are shown but never called a regression.

Defaults: threshold 0.5 (1.5x), alpha 0.05. With 3 repetitions against 3, p <= 0.05 requires
every new sample to be slower than every old one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import stats
from bench.results import Cell, Suite, fmt_s
from bench.roofline import reference_samples

FLOOR = 200e-6
COMPARED_KINDS = ("phase", "series")


@dataclass
class Change:
    key: tuple[Any, ...]
    label: str
    reference: str
    base_median: float
    new_median: float
    ratio: float
    ci: tuple[float, float]
    p_slower: float
    p_faster: float
    noisy: bool
    verdict: str
    n_base: int
    n_new: int

    @property
    def raw_ratio(self) -> float:
        return self.new_median / self.base_median if self.base_median > 0 else math.nan


@dataclass
class Comparison:
    changes: list[Change] = field(default_factory=list)
    only_base: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    threshold: float = 0.5
    alpha: float = 0.05

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regression"]

    @property
    def improvements(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "improvement"]


def _normalised(suite: Suite, cell: Cell) -> tuple[list[float], str]:
    phase = cell.name if cell.kind == "phase" else "concurrent"
    ref = reference_samples(suite, cell.driver, cell.workload, phase)
    if ref is None:
        return list(cell.samples), "none"
    by_rep, name = ref
    out = [s / by_rep[r] for s, r in zip(cell.samples, cell.reps) if by_rep.get(r, 0) > 0]
    if not out:
        return list(cell.samples), "none"
    return out, name


def compare(base: Suite, new: Suite, *, threshold: float = 0.5, alpha: float = 0.05) -> Comparison:
    c = Comparison(threshold=threshold, alpha=alpha)
    base_cells = {x.key: x for x in base.cells if x.kind in COMPARED_KINDS and x.samples}
    new_cells = {x.key: x for x in new.cells if x.kind in COMPARED_KINDS and x.samples}
    c.only_base = sorted(base_cells[k].label() for k in base_cells.keys() - new_cells.keys())
    c.only_new = sorted(new_cells[k].label() for k in new_cells.keys() - base_cells.keys())
    for name, info in new.workloads.items():
        b = base.workloads.get(name, {})
        if b.get("manifest") and info.get("manifest") and b["manifest"] != info["manifest"]:
            c.notes.append(f"workload {name} differs between the runs (other bytes: compare with care)")
    if base.machine.get("cpu") != new.machine.get("cpu") or base.machine.get("cpus") != new.machine.get("cpus"):
        c.notes.append(f"machines differ: {base.machine.get('cpu')} x{base.machine.get('cpus')} vs "
                       f"{new.machine.get('cpu')} x{new.machine.get('cpus')}")
    for key in sorted(base_cells.keys() & new_cells.keys(), key=lambda k: tuple(str(x) for x in k)):
        bc, nc = base_cells[key], new_cells[key]
        bn, bref = _normalised(base, bc)
        nn, nref = _normalised(new, nc)
        if bref != nref:  # one side lacks the reference: fall back to raw seconds on both
            bn, nn, ref = list(bc.samples), list(nc.samples), "none"
        else:
            ref = bref
        bm, nm = stats.median(bn), stats.median(nn)
        ratio = nm / bm if bm > 0 else math.nan
        lb, ln = np.log(np.maximum(bn, 1e-12)), np.log(np.maximum(nn, 1e-12))
        p_slow = stats.permutation_test(lb, ln, "greater")
        p_fast = stats.permutation_test(lb, ln, "less")
        noisy = stats.noisy(bc.samples) or stats.noisy(nc.samples)
        base_med = stats.median(bc.samples)
        if base_med < FLOOR:
            verdict = "tiny"
        elif p_slow <= alpha and ratio > 1 + threshold:
            verdict = "regression"
        elif p_fast <= alpha and ratio < 1 / (1 + threshold):
            verdict = "improvement"
        elif p_slow <= alpha and ratio > 1:
            verdict = "slower"
        elif p_fast <= alpha and ratio < 1:
            verdict = "faster"
        else:
            verdict = "same"
        c.changes.append(Change(
            key=key, label=nc.label().removeprefix("phase / ").removeprefix("series / "), reference=ref,
            base_median=base_med, new_median=stats.median(nc.samples), ratio=ratio,
            ci=stats.ratio_ci(bn, nn), p_slower=p_slow, p_faster=p_fast, noisy=noisy, verdict=verdict,
            n_base=len(bn), n_new=len(nn)))
    return c


def _order(c: Comparison) -> list[Change]:
    rank = {"regression": 0, "slower": 1, "improvement": 2, "faster": 3, "same": 4, "tiny": 5}
    return sorted(c.changes, key=lambda x: (rank.get(x.verdict, 9), -abs(math.log(x.ratio)) if x.ratio > 0 else 0))


def summary_text(c: Comparison) -> str:
    counts: dict[str, int] = {}
    for x in c.changes:
        counts[x.verdict] = counts.get(x.verdict, 0) + 1
    noisy = sum(1 for x in c.changes if x.noisy)
    parts = [f"{counts.get(v, 0)} {v}" for v in ("regression", "slower", "improvement", "faster", "same", "tiny")
             if counts.get(v)]
    lines = [f"compare: {len(c.changes)} cells ({', '.join(parts) or 'none'}; {noisy} noisy); "
             f"regression = p <= {c.alpha} and > {1 + c.threshold:.2f}x ratio-adjusted"]
    for x in c.regressions:
        lines.append(f"  REGRESSION {x.label}: {x.ratio:.2f}x (raw {fmt_s(x.base_median)} -> "
                     f"{fmt_s(x.new_median)}, p={x.p_slower:.3f}, vs {x.reference})")
    for x in c.improvements[:10]:
        lines.append(f"  improvement {x.label}: {x.ratio:.2f}x (p={x.p_faster:.3f})")
    for n in c.notes:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def table_text(c: Comparison, limit: int | None = None) -> str:
    rows = _order(c)[:limit] if limit else _order(c)
    w = max([len(x.label) for x in rows] + [4])
    out = [f"{'cell':<{w}}  {'base':>9}  {'new':>9}  {'ratio':>6}  {'95% CI':>13}  {'p':>6}  verdict"]
    for x in rows:
        p = x.p_slower if x.ratio >= 1 else x.p_faster
        out.append(f"{x.label:<{w}}  {fmt_s(x.base_median):>9}  {fmt_s(x.new_median):>9}  {x.ratio:6.2f}  "
                   f"[{x.ci[0]:5.2f}, {x.ci[1]:5.2f}]  {p:6.3f}  {x.verdict}{' (noisy)' if x.noisy else ''}")
    return "\n".join(out)


def markdown(c: Comparison, base_name: str, new_name: str, plot: str | None = "compare.png") -> str:
    lines = [f"# Comparison: `{new_name}` against `{base_name}`", "",
             f"Ratios are of medians after dividing every sample by its in-run reference (the phase's "
             f"roofline limit, else the calibration mix); > 1 is slower. A **regression** is p <= {c.alpha} "
             f"(exact permutation test, one-sided) and a ratio above {1 + c.threshold:.2f}. Cells whose "
             f"base median is under {FLOOR * 1e6:.0f} µs are `tiny` and never fail.", "",
             "```", summary_text(c), "```", ""]
    if plot:
        lines += [f"![ratio changes]({plot})", ""]
    lines += ["| cell | base | new | ratio | 95% CI | p | reference | verdict |",
              "|---|---:|---:|---:|---|---:|---|---|"]
    for x in _order(c):
        p = x.p_slower if x.ratio >= 1 else x.p_faster
        v = f"**{x.verdict}**" if x.verdict in ("regression", "improvement") else x.verdict
        lines.append(f"| {x.label} | {fmt_s(x.base_median)} | {fmt_s(x.new_median)} | {x.ratio:.2f} | "
                     f"{x.ci[0]:.2f}–{x.ci[1]:.2f} | {p:.3f} | {x.reference} | {v}{' (noisy)' if x.noisy else ''} |")
    if c.only_base or c.only_new:
        lines += ["", f"Only in the base: {len(c.only_base)} cells; only in the new run: {len(c.only_new)} cells."]
    return "\n".join(lines) + "\n"


def write(c: Comparison, out_dir: Path, *, base_name: str, new_name: str) -> Path:
    from bench import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [plots.ForestRow(x.label, x.ratio, x.ci[0], x.ci[1], x.verdict) for x in c.changes]
    plot = plots.forest(rows, out_dir / "compare.png", threshold=c.threshold, limit=40,
                        title=f"{min(40, len(rows))} of {len(rows)} cells (regressions and the largest changes)",
                        xlabel="ratio of medians, new / base, after dividing by in-run references (> 1: slower)")
    path = out_dir / "compare.md"
    path.write_text(markdown(c, base_name, new_name, plot.name if plot else None))
    return path
