"""Plots of a results suite (matplotlib, Agg backend, PNG). They only read results.

- ``phases-<workload>.png``: one panel per phase, a bar per driver at the median with its 95%
  bootstrap interval as whiskers, every sample as a dot (outliers in red), peers as grey bars;
- ``series-<depth|size|files>.png``: median vs the series parameter (log axes), a line per driver
  with its interval as a band, one panel per phase;
- ``concurrency.png``: wall time for N containers at once and time per container;
- ``waterfall.png``: the critical path from registry to running container, per driver;
- ``roofline.png``: each phase as a fraction of its limit (limit / phase), per driver;
- ``history-<profile>.png``: each headline cell across committed revisions (``python -m bench history``);
- ``forest``: a forest plot of ratios with intervals, coloured by verdict (``compare.png`` against a
  baseline, ``ab.png`` of an A/B run); it takes plain ``ForestRow``s and imports no comparison.
"""

from __future__ import annotations

import math
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench import stats  # noqa: E402
from bench.phases import BY_NAME, CRITICAL_PATH, PHASE_NAMES  # noqa: E402
from bench.results import Suite  # noqa: E402

DPI = 100
COLORS = {"vfs": "#4c72b0", "overlay": "#dd8452", "btrfs": "#55a868", "fuse": "#c44e52"}
_EXTRA = ["#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]


def color(driver: str) -> str:
    if driver not in COLORS:
        COLORS[driver] = _EXTRA[len([k for k in COLORS if k not in ("vfs", "overlay", "btrfs", "fuse")]) % len(_EXTRA)]
    return COLORS[driver]


def _unit(values: list[float]) -> tuple[float, str]:
    m = max([v for v in values if math.isfinite(v)] or [1.0])
    if m < 2e-3:
        return 1e6, "µs"
    if m < 2:
        return 1e3, "ms"
    return 1.0, "s"


def _human_seconds(v: float, _pos: object = None) -> str:
    if v <= 0:
        return "0"
    if v < 1e-3:
        return f"{v * 1e6:.3g} µs"
    if v < 1:
        return f"{v * 1e3:.3g} ms"
    return f"{v:.3g} s"


def _time_axis(ax: Any) -> None:
    """Log time axis with plain labels ("20 ms", not 2x10^-2) on the decades only."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_ylim()
    narrow = lo > 0 and hi / lo < 100  # under two decades: label 1-2-5 steps, not decades only
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if narrow else (1.0,), numticks=12))
    ax.yaxis.set_major_formatter(FuncFormatter(_human_seconds))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _drivers(suite: Suite) -> list[str]:
    ran = [d for d, why in suite.drivers.items() if why is None]
    seen = {c.driver for c in suite.cells if c.kind in ("phase", "series")}
    return [d for d in ran if d in seen] + sorted(seen - set(ran))


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def phase_bars(suite: Suite, workload: str, path: Path) -> Path | None:
    drivers = _drivers(suite)
    phases = [p for p in PHASE_NAMES if any(c.samples for c in suite.select("phase", name=p, workload=workload))]
    if not phases or not drivers:
        return None
    peers = {n: info for n, info in suite.peers.items()}
    ncol = min(4, len(phases))
    nrow = math.ceil(len(phases) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.9 * nrow), squeeze=False)
    for ax, phase in zip(axes.flat, phases):
        labels, meds, los, his, cols, samples = [], [], [], [], [], []
        for d in drivers:
            c = suite.cell("phase", phase, d, workload)
            if c is None or not c.samples:
                continue
            s = stats.summarize(c.samples)
            labels.append(d)
            meds.append(s["median"])
            los.append(s["ci_lo"])
            his.append(s["ci_hi"])
            cols.append(color(d))
            samples.append((c.samples, s["outliers"]))
        for pname, info in peers.items():
            if info.get("phase") != phase:
                continue
            c = suite.cell("peer", pname, "", workload)
            if c is None or not c.samples:
                continue
            s = stats.summarize(c.samples)
            labels.append(pname.replace("fuse-overlayfs ", "fuse-ovl ").replace(" ", "\n", 1))
            meds.append(s["median"])
            los.append(s["ci_lo"])
            his.append(s["ci_hi"])
            cols.append("#bbbbbb")
            samples.append((c.samples, s["outliers"]))
        if not labels:
            ax.set_visible(False)
            continue
        k, unit = _unit(his + meds)
        x = np.arange(len(labels))
        m = np.array(meds) * k
        err = np.array([m - np.array(los) * k, np.array(his) * k - m])
        ax.bar(x, m, color=cols, yerr=np.maximum(err, 0), capsize=3, edgecolor="black", linewidth=0.4)
        tops = [max(h, max(v)) * k for h, (v, _) in zip(his, samples)]
        top = max(tops) if tops else 0.0
        for i, med in enumerate(meds):
            ax.text(i, tops[i] + top * 0.03, _human_seconds(med).replace(" ", "\u2009"), ha="center",
                    va="bottom", fontsize=6.5, color="#222222")
        for i, (vals, out) in enumerate(samples):
            jitter = np.linspace(-0.18, 0.18, len(vals)) if len(vals) > 1 else [0.0]
            ax.scatter(i + np.array(jitter), np.array(vals) * k, s=7, zorder=3,
                       c=["#d62728" if o else "black" for o in out])
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_title(BY_NAME[phase].title, fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylim(0, top * 1.15 if top > 0 else None)
    for ax in list(axes.flat)[len(phases):]:
        ax.set_visible(False)
    fig.suptitle(f"{workload}: median per phase, 95% bootstrap CI, every sample (red: outlier); grey: peers",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


SERIES_TITLES = {"depth": ("layers", "layer depth"), "size": ("image size (MiB)", "image size"),
                 "files": ("files", "file count")}


def series_lines(suite: Suite, series: str, path: Path) -> Path | None:
    wls = [(name, info) for name, info in suite.workloads.items()
           if isinstance(info, dict) and "error" not in info and _series_of(info) == series]
    if len(wls) < 2:
        return None
    drivers = _drivers(suite)
    xs = {name: _series_x(info) for name, info in wls}
    phases = [p for p in PHASE_NAMES if sum(1 for n, _ in wls if any(
        c.samples for c in suite.select("phase", name=p, workload=n))) >= 2]
    if not phases:
        return None
    ncol = min(4, len(phases))
    nrow = math.ceil(len(phases) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.8 * nrow), squeeze=False)
    xlabel, title = SERIES_TITLES[series]
    for ax, phase in zip(axes.flat, phases):
        for d in drivers:
            pts = []
            for name, _ in wls:
                c = suite.cell("phase", phase, d, name)
                if c is not None and c.samples:
                    s = stats.summarize(c.samples)
                    pts.append((xs[name], s["median"], s["ci_lo"], s["ci_hi"]))
            if not pts:
                continue
            pts.sort()
            x = np.array([p[0] for p in pts], dtype=float)
            ax.plot(x, [p[1] for p in pts], marker="o", ms=3, color=color(d), label=d)
            ax.fill_between(x, [p[2] for p in pts], [p[3] for p in pts], color=color(d), alpha=0.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _time_axis(ax)
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        ticks = sorted(set(xs.values()))
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(BY_NAME[phase].title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.2)
    for ax in list(axes.flat)[len(phases):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.suptitle(f"{title} series: median and 95% CI per driver (log-log)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    return _save(fig, path)


def _series_of(info: dict[str, Any]) -> str | None:
    return {"small-files": "files", "large-files": "size", "deep": "depth"}.get(info.get("kind", ""))


def _series_x(info: dict[str, Any]) -> float:
    spec = info.get("spec", {})
    kind = info.get("kind")
    if kind == "small-files":
        return float(spec.get("files", 0))
    if kind == "large-files":
        return float(spec.get("size", 0)) / (1 << 20)
    return float(spec.get("depth", 0))


def concurrency(suite: Suite, path: Path) -> Path | None:
    cells = [c for c in suite.select("series", name="concurrent") if c.samples]
    if not cells:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.3))
    wl = cells[0].workload
    for d in _drivers(suite):
        pts = sorted((c.param or 0, stats.summarize(c.samples)) for c in cells if c.driver == d)
        if not pts:
            continue
        n = np.array([p[0] for p in pts], dtype=float)
        med = np.array([p[1]["median"] for p in pts])
        a1.plot(n, med, marker="o", ms=3, color=color(d), label=d)
        a1.fill_between(n, [p[1]["ci_lo"] for p in pts], [p[1]["ci_hi"] for p in pts], color=color(d), alpha=0.2)
        a2.plot(n, med / n, marker="o", ms=3, color=color(d), label=d)
    start = str(cells[0].extra.get("start", ""))
    a1.set_title("wall time, N containers at once", fontsize=9)
    a2.set_title("wall time / N", fontsize=9)
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        from matplotlib.ticker import FuncFormatter

        a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        a.set_yscale("log")
        _time_axis(a)
        a.set_xlabel("containers", fontsize=8)
        a.grid(True, alpha=0.2)
        a.tick_params(labelsize=7)
    a1.legend(fontsize=8)
    what = "create + mount + start" if start == "included" else f"create + mount (start {start})"
    fig.suptitle(f"concurrent containers on {wl}: {what}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def waterfall(suite: Suite, workload: str, path: Path) -> Path | None:
    drivers = _drivers(suite)
    rows = []
    for d in drivers:
        segs = []
        for phase in CRITICAL_PATH:
            c = suite.cell("phase", phase, d, workload)
            if c is not None and c.samples:
                segs.append((phase, stats.median(c.samples), True))
            else:
                segs.append((phase, 0.0, False))
        if any(s[2] for s in segs):
            rows.append((d, segs))
    peer_row = []
    for pname in ("podman pull", "podman run"):
        c = suite.cell("peer", pname, "", workload)
        if c is not None and c.samples:
            peer_row.append((pname, stats.median(c.samples), True))
    if peer_row:
        rows.append(("podman", peer_row))
    if not rows:
        return None
    shades = {"pull": "#4c72b0", "create": "#dd8452", "mount": "#55a868", "start": "#c44e52",
              "podman pull": "#4c72b0", "podman run": "#c44e52"}
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.4))
    total_max = max(sum(s[1] for s in segs) for _, segs in rows)
    for i, (name, segs) in enumerate(rows):
        left = total = 0.0
        missing = []
        for phase, dur, ok in segs:
            if not ok:
                missing.append(phase)
                continue
            ax.barh(i, dur, left=left, color=shades.get(phase, "#8c8c8c"), edgecolor="white")
            if dur > total_max * 0.06:
                ax.text(left + dur / 2, i, f"{phase}\n{dur * 1e3:.0f} ms" if dur < 1 else f"{phase}\n{dur:.2f} s",
                        ha="center", va="center", fontsize=7, color="white")
            left += dur
            total += dur
        note = f"{total:.2f} s" if total >= 0.1 else f"{total * 1e3:.0f} ms"
        if missing:
            note += f"  (no {', '.join(missing)})"
        ax.text(left + total_max * 0.01, i, note, va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (medians, cumulative)", fontsize=8)
    ax.set_xlim(0, total_max * 1.4)
    ax.set_title(f"critical path on {workload}: registry -> running container "
                 f"({' -> '.join(CRITICAL_PATH)})", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def roofline(suite: Suite, workload: str, path: Path) -> Path | None:
    from bench.roofline import limit_samples

    drivers = _drivers(suite)
    rows: list[tuple[str, str, float]] = []
    for phase in PHASE_NAMES:
        for d in drivers:
            c = suite.cell("phase", phase, d, workload)
            lim = limit_samples(suite, d, workload, phase)
            if c is None or not c.samples or not lim:
                continue
            frac = stats.median(list(lim.values())) / stats.median(c.samples)
            rows.append((phase, d, frac))
    if not rows:
        return None
    phases = [p for p in PHASE_NAMES if any(r[0] == p for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(phases) + 2), 3.4))
    width = 0.8 / max(1, len(drivers))
    for j, d in enumerate(drivers):
        xs, ys = [], []
        for i, p in enumerate(phases):
            for r in rows:
                if r[0] == p and r[1] == d:
                    xs.append(i + (j - (len(drivers) - 1) / 2) * width)
                    ys.append(r[2] * 100)
        ax.bar(xs, ys, width=width, color=color(d), label=d, edgecolor="black", linewidth=0.3)
    ax.axhline(100, color="black", lw=0.8, ls="--")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.set_xticks(range(len(phases)), [BY_NAME[p].title for p in phases], fontsize=8)
    ax.set_ylabel("% of the machine's limit (log)", fontsize=8)
    ax.set_title(f"{workload}: each phase as a fraction of its limit (limit / phase; 100% = the machine's "
                 f"own tools)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.2)
    fig.tight_layout()
    return _save(fig, path)


VERDICT_COLORS = {"regression": "#d62728", "slower": "#ff9896", "improvement": "#2ca02c",
                  "faster": "#98df8a", "same": "#7f7f7f", "tiny": "#c7c7c7", "too-few": "#c7c7c7"}


@dataclass(frozen=True)
class ForestRow:
    """One row of a forest plot: a cell's ratio (new / base), its interval and its verdict. The
    plot takes plain rows so that it knows nothing of how they were computed (``compare.py``
    and ``ab.py`` both draw with it)."""

    label: str
    ratio: float
    lo: float
    hi: float
    verdict: str


def forest(rows: list[ForestRow], path: Path, *, threshold: float, title: str, xlabel: str,
           limit: int | None = None) -> Path | None:
    """A forest plot: one row per cell, the point estimate with its interval, regressions red,
    the no-change line at 1 and the threshold lines dashed. ``limit`` keeps every regression and
    the largest other changes."""
    rows = [r for r in rows if r.ratio > 0 and math.isfinite(r.ratio)]
    if not rows:
        return None
    if limit is not None and len(rows) > limit:
        bad = [r for r in rows if r.verdict == "regression"]
        rest = sorted((r for r in rows if r.verdict != "regression"), key=lambda r: -abs(math.log(r.ratio)))
        rows = bad + rest[: max(0, limit - len(bad))]
    rows = sorted(rows, key=lambda r: r.ratio)
    fig, ax = plt.subplots(figsize=(8.5, 0.22 * len(rows) + 1.6))
    y = np.arange(len(rows))
    r = np.array([x.ratio for x in rows])
    lo = np.array([x.lo if math.isfinite(x.lo) else x.ratio for x in rows])
    hi = np.array([x.hi if math.isfinite(x.hi) else x.ratio for x in rows])
    cols = [VERDICT_COLORS.get(x.verdict, "black") for x in rows]
    for i in range(len(rows)):
        ax.plot([lo[i], hi[i]], [y[i], y[i]], color=cols[i] if rows[i].verdict == "regression" else "#999999",
                lw=1.6 if rows[i].verdict == "regression" else 0.9)
    ax.scatter(r, y, c=cols, s=20, zorder=3)
    ax.axvline(1, color="black", lw=0.8)
    ax.axvline(1 + threshold, color="#d62728", lw=0.8, ls="--")
    ax.axvline(1 / (1 + threshold), color="#2ca02c", lw=0.8, ls="--")
    span = max(float(np.max(hi)), 1 + 2 * threshold) / min(float(np.min(lo)), 1 / (1 + 2 * threshold))
    ax.set_xscale("log", base=2)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}x"))
    if span < 4:
        ax.set_xticks([t for t in (0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)
                       if min(float(np.min(lo)), 0.9) * 0.95 <= t <= max(float(np.max(hi)), 1.1) * 1.05])
        ax.xaxis.set_minor_formatter(NullFormatter())
    labels = [x.label for x in rows]
    ax.set_yticks(y, labels, fontsize=7)
    for tick, row in zip(ax.get_yticklabels(), rows):
        if row.verdict == "regression":
            tick.set_color(VERDICT_COLORS["regression"])
            tick.set_fontweight("bold")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(xlabel, fontsize=8)
    present = sorted({x.verdict for x in rows}, key=list(VERDICT_COLORS).index)
    handles = [plt.Line2D([], [], marker="o", ls="", color=VERDICT_COLORS[v], label=v) for v in present]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="x", which="both", alpha=0.2)
    fig.tight_layout()
    return _save(fig, path)


def history(revisions: list[tuple[str, Suite]], workload: str, path: Path, *, title: str) -> Path | None:
    """asv-style history: one panel per phase on ``workload``, x = the revisions in order, a line
    per driver at the median with its 95% bootstrap interval as whiskers."""
    phases = [p for p in PHASE_NAMES if any(s.cell("phase", p, d, workload) is not None and
                                             s.cell("phase", p, d, workload).samples  # type: ignore[union-attr]
                                             for _, s in revisions for d in _drivers(s))]
    if not phases:
        return None
    drivers = sorted({d for _, s in revisions for d in _drivers(s)})
    ncol = min(4, len(phases))
    nrow = math.ceil(len(phases) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow + 0.6), squeeze=False)
    x = np.arange(len(revisions))
    for ax, phase in zip(axes.flat, phases):
        for d in drivers:
            med, lo, hi = [], [], []
            for _, s in revisions:
                c = s.cell("phase", phase, d, workload)
                if c is None or not c.samples:
                    med.append(np.nan), lo.append(np.nan), hi.append(np.nan)
                    continue
                m = stats.median(c.samples)
                a, b = stats.bootstrap_ci(c.samples)
                med.append(m), lo.append(m - a), hi.append(b - m)
            ax.errorbar(x, med, yerr=[lo, hi], marker="o", ms=4, lw=1.2, capsize=2, color=color(d), label=d)
        ax.set_title(BY_NAME[phase].title, fontsize=9)
        ax.set_yscale("log")
        _time_axis(ax)
        ax.set_xticks(x, [r for r, _ in revisions], rotation=60, fontsize=6)
        ax.set_xlim(-0.5, len(revisions) - 0.5)
        ax.grid(True, which="both", alpha=0.2)
    for ax in list(axes.flat)[len(phases):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def all_plots(suite: Suite, out: Path, main_workloads: list[str], headline: str | None) -> dict[str, Path]:
    """Every plot the report uses; returns name -> path of those that could be drawn."""
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    for wl in main_workloads:
        p = phase_bars(suite, wl, out / f"phases-{wl}.png")
        if p:
            made[f"phases-{wl}"] = p
    for series in ("depth", "size", "files"):
        p = series_lines(suite, series, out / f"series-{series}.png")
        if p:
            made[f"series-{series}"] = p
    p = concurrency(suite, out / "concurrency.png")
    if p:
        made["concurrency"] = p
    if headline:
        p = waterfall(suite, headline, out / "waterfall.png")
        if p:
            made["waterfall"] = p
        p = roofline(suite, headline, out / "roofline.png")
        if p:
            made["roofline"] = p
    return made

