"""``python -m bench history``: the headline cells across the committed results of past revisions.

asv-style: every commit that changed a committed results file (``results/default.json``,
``results/baseline.json``, ``results/baseline-quick.json``) is a point on the x axis, oldest
first; each panel is one phase on the profile's headline workload, a line per driver at the
median with its 95% bootstrap interval. A slow drift over many commits shows as a slope even
when no single A/B step trips the gate. The figures are raw seconds of runs made on whatever
machine and day each was made (the machine is in history.md): read a slope, not one step.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench import results as R

FILES = ("default.json", "baseline.json", "baseline-quick.json")


@dataclass
class Point:
    commit: str
    date: str
    subject: str
    file: str
    suite: R.Suite


def _git(repo: Path, *args: str) -> str:
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=120)
    return p.stdout if p.returncode == 0 else ""


def points(repo: Path, newest: int = 50) -> list[Point]:
    """Every (commit, results file) the history holds, oldest first; unreadable ones skipped."""
    out: list[Point] = []
    seen: set[tuple[str, str]] = set()  # (commit, run): baseline.json is often a copy of default.json
    for name in FILES:
        log = _git(repo, "log", f"-{newest}", "--format=%H%x09%cI%x09%s", "--", f"results/{name}")
        for line in reversed(log.splitlines()):
            sha, date, subject = (line.split("\t", 2) + ["", ""])[:3]
            text = _git(repo, "show", f"{sha}:results/{name}")
            if not text:
                continue  # deleted in that commit
            try:
                suite = R.from_json(json.loads(text))
            except (ValueError, R.ResultsError):
                continue
            if (sha, suite.created) in seen:
                continue
            seen.add((sha, suite.created))
            out.append(Point(sha, date, subject, name, suite))
    return out


def _profile(p: Point) -> str:
    return p.suite.profile or p.file.removesuffix(".json")


def write(repo: Path, out: Path, newest: int = 50) -> Path:
    """history.md and one history-<profile>.png per profile; returns the Markdown path."""
    from bench import plots, report, stats

    pts = points(repo, newest)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Bench history", "",
             "The headline cells across every commit that changed a committed results file (raw seconds, "
             "each run on its own machine and day: see the table). `python -m bench history` redraws it.", ""]
    by_profile: dict[str, list[Point]] = {}
    for p in pts:
        by_profile.setdefault(_profile(p), []).append(p)
    if not pts:
        lines.append("No committed results yet.")
    for profile, ps in by_profile.items():
        ps.sort(key=lambda p: p.date)
        wl = report.headline_workload(ps[-1].suite)
        png = plots.history(
            [(p.commit[:8], p.suite) for p in ps], wl or "", out / f"history-{profile}.png",
            title=f"{profile} profile, {wl}: median per phase across revisions (95% CI)")
        lines += [f"## {profile} ({wl})", ""]
        if png:
            lines += [f"![history of {profile}]({png.name})", ""]
        lines += ["| revision | date | file | machine | load at start |", "|---|---|---|---|---|"]
        for p in ps:
            m = p.suite.machine
            load = m.get("loadavg_start") or []
            lines.append(f"| `{p.commit[:8]}` {p.subject[:60]} | {p.date[:10]} | {p.file} | "
                         f"{m.get('cpu', '?')} × {m.get('cpus', '?')} | {f'{load[0]:.1f}' if load else '-'} |")
        first, last = ps[0].suite, ps[-1].suite
        if len(ps) > 1 and wl:
            lines += ["", "| cell | oldest | newest | ratio |", "|---|---:|---:|---:|"]
            for c in last.select("phase", workload=wl):
                o = first.cell(*c.key)
                if c.samples and o is not None and o.samples:
                    a, b = stats.median(o.samples), stats.median(c.samples)
                    lines.append(f"| {c.name} / {c.driver} | {a:.4g} s | {b:.4g} s | "
                                 f"{b / a if a > 0 else math.nan:.2f} |")
        lines.append("")
    path = out / "history.md"
    path.write_text("\n".join(lines) + "\n")
    return path
