"""The Markdown report (and HEADLINE.md) of a results suite. Reads results only.

Sections: the headline (fastest driver per phase on the headline workload, and per workload),
the comparison with the baseline, the critical path and roofline, per-workload tables (median,
95% CI, samples, spread, outliers, % of limit, peers), the series, the machine's limits, the
peers, and everything that did not run with the reason.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import stats
from bench.phases import BY_NAME, PHASE_NAMES
from bench.results import Suite, fmt_s
from bench.roofline import LIMIT_TEXT, WRITE_SEQ_BYTES, limit_samples

if TYPE_CHECKING:
    from bench.compare import Comparison

HEADLINE_ORDER = ("realistic", "small-files", "large-files", "deep-128")


def fmt_bytes(n: float) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n:.0f} B"


def _drivers(suite: Suite) -> list[str]:
    ran = [d for d, why in suite.drivers.items() if why is None]
    seen = {c.driver for c in suite.cells if c.kind == "phase"}
    return [d for d in ran if d in seen]


def _workloads(suite: Suite) -> list[str]:
    return [w for w, info in suite.workloads.items() if isinstance(info, dict) and "error" not in info]


def headline_workload(suite: Suite) -> str | None:
    wls = _workloads(suite)
    for w in HEADLINE_ORDER:
        if w in wls and suite.select("phase", workload=w):
            return w
    return wls[0] if wls else None


def main_workloads(suite: Suite) -> list[str]:
    """Workloads that get their own bar charts: the named defaults, else every one that ran."""
    wls = [w for w in _workloads(suite) if any(c.samples for c in suite.select("phase", workload=w))]
    main = [w for w in HEADLINE_ORDER if w in wls]
    return main or wls


def _median(c: Any) -> float:
    return stats.median(c.samples) if c is not None and c.samples else math.nan


def _fraction(suite: Suite, driver: str, workload: str, phase: str) -> float | None:
    c = suite.cell("phase", phase, driver, workload)
    lim = limit_samples(suite, driver, workload, phase)
    if c is None or not c.samples or not lim:
        return None
    return stats.median(list(lim.values())) / stats.median(c.samples)


def headline_table(suite: Suite, workload: str) -> list[str]:
    """Phase x driver medians on the headline workload; the fastest in bold; % of limit."""
    drivers = _drivers(suite)
    lines = [f"| phase ({workload}) | " + " | ".join(drivers) + " | fastest | best % of limit |",
             "|---|" + "---:|" * len(drivers) + "---|---:|"]
    for phase in PHASE_NAMES:
        cells = {d: suite.cell("phase", phase, d, workload) for d in drivers}
        meds = {d: _median(c) for d, c in cells.items()}
        ok = {d: m for d, m in meds.items() if math.isfinite(m)}
        if not ok:
            reasons = {c.reason for c in cells.values() if c is not None and c.reason}
            if reasons:
                lines.append(f"| {BY_NAME[phase].title} | " + " | ".join("–" for _ in drivers) +
                             f" | not run: {sorted(reasons)[0]} | |")
            continue
        best = min(ok, key=lambda d: ok[d])
        row = []
        for d in drivers:
            m = meds[d]
            txt = fmt_s(m)
            if d == best and len(ok) > 1:
                txt = f"**{txt}**"
            row.append(txt)
        fr = [f for d in ok if (f := _fraction(suite, d, workload, phase)) is not None]
        frac = f"{max(fr) * 100:.0f}%" if fr else ""
        lines.append(f"| {BY_NAME[phase].title} | " + " | ".join(row) + f" | {best} | {frac} |")
    return lines


def winners_table(suite: Suite) -> list[str]:
    """For each workload and phase, the fastest driver (and by how much over the runner-up)."""
    drivers = _drivers(suite)
    phases = [p for p in PHASE_NAMES if any(c.samples for c in suite.select("phase", name=p))]
    if len(drivers) < 2 or not phases:
        return []
    lines = ["| workload | " + " | ".join(BY_NAME[p].title for p in phases) + " |",
             "|---|" + "---|" * len(phases)]
    for wl in _workloads(suite):
        row = []
        for p in phases:
            meds = {d: _median(suite.cell("phase", p, d, wl)) for d in drivers}
            ok = sorted((m, d) for d, m in meds.items() if math.isfinite(m))
            if not ok:
                row.append("–")
            elif len(ok) == 1:
                row.append(ok[0][1])
            else:
                lead = ok[1][0] / ok[0][0] if ok[0][0] > 0 else math.inf
                row.append(f"{ok[0][1]} ({lead:.1f}x)" if lead >= 1.1 else f"{ok[0][1]} (≈)")
        if any(r != "–" for r in row):
            lines.append(f"| {wl} | " + " | ".join(row) + " |")
    return lines


def workload_table(suite: Suite, wl: str) -> list[str]:
    lines = ["| phase | driver | median | 95% CI | n | spread | outliers | limit | % of limit |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for phase in PHASE_NAMES:
        for d in _drivers(suite):
            c = suite.cell("phase", phase, d, wl)
            if c is None:
                continue
            lines.append(_phase_row(suite, BY_NAME[phase].title, d, wl, phase, c))
            # the same work through the user's front doors (bench.daemon_path: start/cli, start/daemon)
            for other in sorted(suite.select("phase", driver=d, workload=wl), key=lambda x: x.name):
                if other.name.startswith(phase + "/"):
                    lines.append(_phase_row(suite, BY_NAME[phase].title, f"{d} · {other.name[len(phase) + 1:]}",
                                            wl, None, other))
        for pname, info in suite.peers.items():
            if info.get("phase") != phase:
                continue
            c = suite.cell("peer", pname, "", wl)
            if c is None:
                continue
            if not c.samples:
                why = c.reason or (c.errors[0] if c.errors else "")
                lines.append(f"| {BY_NAME[phase].title} | *peer: {pname}* | {c.status}: {why[:90]} | | | | | | |")
                continue
            s = stats.summarize(c.samples)
            lines.append(f"| {BY_NAME[phase].title} | *peer: {pname}* | {fmt_s(s['median'])} | "
                         f"{fmt_s(s['ci_lo'])} – {fmt_s(s['ci_hi'])} | {s['n']} | {s['spread'] * 100:.0f}% | "
                         f"{sum(s['outliers']) or ''} | | |")
    return lines


def _phase_row(suite: Suite, title: str, label: str, wl: str, phase: str | None, c: Any) -> str:
    """One row of the workload table; ``phase`` None: no limit column (a front-door path)."""
    if not c.samples:
        why = c.reason or (c.errors[0] if c.errors else "")
        return f"| {title} | {label} | {c.status}: {why[:90]} | | | | | | |"
    s = stats.summarize(c.samples)
    lim = limit_samples(suite, c.driver, wl, phase) if phase is not None else {}
    lim_m = stats.median(list(lim.values())) if lim else math.nan
    frac = f"{lim_m / s['median'] * 100:.0f}%" if lim else ""
    n_out = sum(s["outliers"])
    spread = f"{s['spread'] * 100:.0f}%" + (" ⚠" if s["noisy"] else "")
    err = f" ({len(c.errors)} failed)" if c.errors else ""
    return (f"| {title} | {label} | {fmt_s(s['median'])} | {fmt_s(s['ci_lo'])} – "
            f"{fmt_s(s['ci_hi'])} | {s['n']}{err} | {spread} | {n_out or ''} | "
            f"{fmt_s(lim_m) if lim else ''} | {frac} |")


def series_table(suite: Suite, kind: str) -> list[str]:
    wls = [(w, info) for w, info in suite.workloads.items()
           if isinstance(info, dict) and info.get("kind") == kind and "error" not in info]
    if len(wls) < 2:
        return []
    key = {"deep": "depth", "small-files": "files", "large-files": "size"}[kind]
    wls.sort(key=lambda x: x[1].get("spec", {}).get(key, 0))
    drivers = _drivers(suite)
    phases = [p for p in PHASE_NAMES if any(c.samples for w, _ in wls for c in suite.select("phase", name=p, workload=w))]
    lines = ["| workload | driver | " + " | ".join(BY_NAME[p].title for p in phases) + " |",
             "|---|---|" + "---:|" * len(phases)]
    for w, _ in wls:
        for d in drivers:
            row = [fmt_s(_median(suite.cell("phase", p, d, w))) for p in phases]
            if all(r == "–" for r in row):
                c = next((c for c in suite.select("phase", driver=d, workload=w) if c.reason), None)
                if c is not None:
                    lines.append(f"| {w} | {d} | not run: {c.reason[:100]} |" + " |" * (len(phases) - 1))
                continue
            lines.append(f"| {w} | {d} | " + " | ".join(row) + " |")
    return lines


def concurrency_table(suite: Suite) -> list[str]:
    cells = [c for c in suite.select("series", name="concurrent")]
    if not cells:
        return []
    counts = sorted({c.param for c in cells if c.param is not None})
    lines = ["| driver | " + " | ".join(f"N={n}" for n in counts) + " |", "|---|" + "---:|" * len(counts)]
    for d in _drivers(suite):
        row = []
        for n in counts:
            c = suite.cell("series", "concurrent", d, cells[0].workload, n)
            row.append(fmt_s(_median(c)) if c is not None and c.samples else
                       (f"{c.status}" if c is not None else "–"))
        lines.append(f"| {d} | " + " | ".join(row) + " |")
    return lines


def roofline_tables(suite: Suite) -> list[str]:
    out = []
    lines = ["| measure | filesystem | median | throughput |", "|---|---|---:|---:|"]
    for c in suite.select("machine"):
        if not c.samples:
            continue
        m = stats.median(c.samples)
        thr = f"{WRITE_SEQ_BYTES / m / 1e6:.0f} MB/s" if c.name == "write-seq" else ""
        lines.append(f"| {c.name} | {c.driver} | {fmt_s(m)} | {thr} |")
    out += lines + [""]
    wls = _workloads(suite)
    names = ["sha256-tar", "sha256-blob", "gunzip-zlib", "gunzip-isal", "zstd-d", "tar-x", "cp-a",
             "walk-plain", "read-plain", "rm-plain"]
    fss = sorted({c.driver for c in suite.select("roofline")} - {"cpu"})
    cols = [(n, "cpu") for n in names[:5]] + [(n, f) for n in names[5:] for f in fss]
    present = [(n, f) for n, f in cols if any(suite.cell("roofline", n, f, w) for w in wls)]
    if not present:
        return out
    out.append("| workload | " + " | ".join(f"{n}" + (f" ({f})" if f != "cpu" else "") for n, f in present) + " |")
    out.append("|---|" + "---:|" * len(present))
    for w in wls:
        info = suite.workloads[w]
        row = []
        for n, f in present:
            c = suite.cell("roofline", n, f, w)
            if c is None or not c.samples:
                row.append("–")
                continue
            m = stats.median(c.samples)
            nbytes = c.extra.get("bytes") or (info.get("tar_bytes") if n in ("tar-x", "cp-a", "read-plain") else None)
            row.append(f"{fmt_s(m)}" + (f"<br>{nbytes / m / 1e6:.0f} MB/s" if nbytes and m > 0 else ""))
        out.append(f"| {w} | " + " | ".join(row) + " |")
    return out


# Issue 15's aims: (what, lamina's cell, podman's peer cell, workload, aim, kind). A "ratio" aim is
# lamina / podman (medians of the same run, same filesystem); a "seconds" aim is lamina's own time.
# lamina's cell: ("phase", phase names summed, driver) or ("peer", peer name, "").
AIMS: tuple[tuple[str, tuple[str, tuple[str, ...], str], str | None, str, float, str], ...] = (
    ("pull, realistic image, gzip, overlay", ("phase", ("pull",), "overlay"), "podman pull", "realistic", 0.5, "ratio"),
    ("pull, realistic image, zstd, overlay", ("phase", ("pull",), "overlay"), "podman pull", "realistic-zstd", 0.4,
     "ratio"),
    ("pull, 64 tiny layers, overlay", ("phase", ("pull",), "overlay"), "podman pull", "deep-64", 0.25, "ratio"),
    ("pull + mount, 500 tiny layers, overlay", ("phase", ("pull", "mount"), "overlay"), "podman pull", "deep-500",
     5.0, "seconds"),
    ("`run --rm IMG /bin/true`, overlay (CLI)", ("peer", ("lamina run",), ""), "podman run", "realistic", 0.6, "ratio"),
    ("`lamina images` (one image, CLI)", ("peer", ("lamina images",), ""), None, "realistic", 0.060, "seconds"),
)


def _aim_side(suite: Suite, kind: str, names: tuple[str, ...], driver: str, workload: str) -> tuple[float | None, str]:
    """The summed medians of the cells (None and why when one has no samples)."""
    total = 0.0
    for n in names:
        c = suite.cell(kind, n, driver, workload)
        if c is None:
            return None, f"{n} not run on {workload}" + (" (not in this profile)" if workload not in suite.workloads else "")
        if not c.samples:
            return None, f"{n}: {c.status}: {(c.reason or (c.errors[0] if c.errors else ''))[:80]}"
        total += stats.median(c.samples)
    return total, ""


def aims_table(suite: Suite) -> list[str]:
    """Issue 15's table: each aim, lamina's and podman's medians, the ratio, met or missed by how
    much. A row whose cells did not run says why (workload not in the profile, peer missing)."""
    lines = ["| work | lamina | podman | lamina / podman | aim | verdict |", "|---|---:|---:|---:|---:|---|"]
    for what, (kind, names, driver), peer, wl, aim, aim_kind in AIMS:
        mine, why = _aim_side(suite, kind, names, driver, wl)
        theirs, their_why = (None, "") if peer is None else _aim_side(suite, "peer", (peer,), "", wl)
        ratio = mine / theirs if mine is not None and theirs is not None and theirs > 0 else None
        aim_txt = f"<= {aim:g}" if aim_kind == "ratio" else f"<= {fmt_s(aim)}"
        got = ratio if aim_kind == "ratio" else mine
        if got is None:
            verdict = f"not measured: {why or their_why}"
        elif got <= aim:
            verdict = "**met**"
        else:
            verdict = f"missed by {got / aim:.2f}x"
        lines.append(f"| {what} ({wl}) | {fmt_s(mine) if mine is not None else '–'} | "
                     f"{fmt_s(theirs) if theirs is not None else (their_why[:50] or '–') if peer else '–'} | "
                     f"{f'{ratio:.2f}' if ratio is not None else '–'} | {aim_txt} | {verdict} |")
    return lines


# What a CLI aim's time is made of, each part measured in the same run as fresh processes
# (bench/peers.py): (label, cell to add, cell to subtract). The last part is what is left of the
# command's own median once the others are taken away.
CLI_PARTS: dict[str, tuple[tuple[str, str | None, str | None], ...]] = {
    "lamina images": (
        ("Python's start (`python -I -c pass`)", "python start", None),
        ("lamina's imports", "lamina images imports", "python start"),
        ("the work (store open, rows, output)", None, None),
    ),
    "lamina run": (
        ("Python's start (`python -I -c pass`)", "python start", None),
        ("lamina's imports", "lamina run imports", "python start"),
        ("runc itself (bare `runc run` of a bundle)", "runc run", None),
        ("lamina's own work (create, mount, bundle, monitor, wait, remove)", None, None),
    ),
}
# parts no Python CLI that runs the OCI runtime can remove: the floor under the aim
FLOOR_PARTS = ("python start", "runc run")


def _peer_median(suite: Suite, name: str, workload: str) -> float | None:
    c = suite.cell("peer", name, "", workload)
    return stats.median(c.samples) if c is not None and c.samples else None


def _target(aim: float, aim_kind: str, theirs: float | None) -> float | None:
    """The time the aim allows lamina: the seconds, or the ratio times podman's median."""
    if aim_kind == "seconds":
        return aim
    return aim * theirs if theirs is not None else None


def _cli_why(suite: Suite, name: str, wl: str, mine: float, target: float | None) -> str:
    parts = CLI_PARTS[name]
    shown: list[str] = []
    floor = 0.0
    rest = mine
    for label, add, sub in parts[:-1]:
        assert add is not None
        a = _peer_median(suite, add, wl)
        b = _peer_median(suite, sub, wl) if sub is not None else 0.0
        if a is None or b is None:
            missing = add if a is None else sub
            return f"why not measured: `{missing}` has no samples on {wl} (bench/peers.py)"
        v = a - b
        rest -= v
        if add in FLOOR_PARTS and sub is None:
            floor += v
        shown.append(f"{label} {fmt_s(max(v, 0.0))}")
    shown.append(f"{parts[-1][0]} {fmt_s(max(rest, 0.0))}")
    out = f"of its {fmt_s(mine)}: " + ", ".join(shown) + "."
    if target is not None:
        cut = mine - floor
        need = target - floor
        out += f" The aim allows {fmt_s(target)}; the floor (" + " + ".join(
            f"`{n}`" for n in FLOOR_PARTS if any(a == n for _, a, _s in parts)) + f") is {fmt_s(floor)}, "
        if need <= 0:
            out += (f"above what the aim allows, so the aim cannot be met by a command line written in "
                    f"Python on this machine")
        else:
            out += (f"so lamina's share ({fmt_s(cut)}: imports and work) would have to fall to {fmt_s(need)}, "
                    f"{cut / need:.2f}x less")
    return out


def _phase_why(suite: Suite, names: tuple[str, ...], driver: str, wl: str, mine: float,
               target: float | None) -> str:
    """A phase aim against the machine's limit for the same work, measured in the same repetitions."""
    phase = names[0]
    lim = limit_samples(suite, driver, wl, phase)
    if not lim:
        return f"why not measured: no limit for {phase} on {wl} (a roofline component did not run)"
    limit = stats.median(list(lim.values()))
    out = (f"the machine's own tools need {fmt_s(limit)} for the same {phase} (its limit in this run's "
           f"repetitions, as in the roofline); lamina's {' + '.join(names)} takes {fmt_s(mine)}, "
           f"{mine / limit:.2f}x that limit")
    if target is not None:
        if target < limit:
            out += f"; the aim allows {fmt_s(target)}, below the limit itself: podman is that fast here"
        else:
            out += (f"; the aim allows {fmt_s(target)} ({target / limit:.2f}x the limit), so "
                    f"{fmt_s(mine - target)} of lamina's own overhead over the limit is still to cut")
    return out


def aims_why(suite: Suite) -> list[str]:
    """One line per missed aim saying why, from this run's measurements: for the command-line
    aims, the command's time split into Python's start, lamina's imports, the runtime's own time
    and lamina's work (the floor a Python CLI cannot remove, and what lamina could still cut); for
    the pull aims, the time against the machine's own tools doing the same work."""
    out = []
    for what, (kind, names, driver), peer, wl, aim, aim_kind in AIMS:
        mine, _ = _aim_side(suite, kind, names, driver, wl)
        theirs, _ = (None, "") if peer is None else _aim_side(suite, "peer", (peer,), "", wl)
        if mine is None or (peer is not None and theirs is None):
            continue  # not measured: the table says why
        got = mine / theirs if peer is not None and theirs else mine
        if got <= aim:
            continue
        target = _target(aim, aim_kind, theirs)
        if kind == "peer" and names[0] in CLI_PARTS:
            why = _cli_why(suite, names[0], wl, mine, target)
        elif kind == "phase":
            why = _phase_why(suite, names, driver, wl, mine, target)
        else:
            why = "why not measured: no breakdown for this aim"
        out.append(f"- **{what}** ({wl}), missed by {got / aim:.2f}x: {why}.")
    return out


def peers_table(suite: Suite) -> list[str]:
    if not suite.peers:
        return []
    lines = ["| peer | vs phase | what | " + " | ".join(_workloads_with_peers(suite)) + " |",
             "|---|---|---|" + "---:|" * len(_workloads_with_peers(suite))]
    for name, info in suite.peers.items():
        row = []
        for w in _workloads_with_peers(suite):
            c = suite.cell("peer", name, "", w)
            if c is None:
                row.append("")
            elif c.samples:
                row.append(fmt_s(stats.median(c.samples)))
            else:
                row.append(f"{c.status}: {(c.reason or (c.errors[0] if c.errors else ''))[:60]}")
        lines.append(f"| {name} | {info.get('phase')} | {info.get('what')} | " + " | ".join(row) + " |")
    return lines


def _workloads_with_peers(suite: Suite) -> list[str]:
    return [w for w in _workloads(suite) if suite.select("peer", workload=w)]


def not_run(suite: Suite) -> list[str]:
    lines = []
    for d, why in suite.drivers.items():
        if why is not None:
            lines.append(f"- driver **{d}**: {why}")
    for w, info in suite.workloads.items():
        if isinstance(info, dict) and "error" in info:
            lines.append(f"- workload **{w}**: {info['error']}")
    # group what did not run: by reason, then by (driver, workload) with the phases it concerns
    by_reason: dict[str, dict[tuple[str, str], list[str]]] = {}
    for c in suite.cells:
        if c.kind in ("phase", "series", "peer") and not c.samples:
            why = c.reason or (c.errors[0] if c.errors else "")
            name = c.name if c.kind != "series" else f"{c.name} N={c.param}"
            by_reason.setdefault(why, {}).setdefault((c.driver or "peer", c.workload), []).append(name)
    for why, where in sorted(by_reason.items()):
        items = []
        for (d, w), names in where.items():
            every = set(names) >= set(PHASE_NAMES)
            items.append(f"{d} × {w}" + (" (all phases)" if every else f" ({', '.join(names)})"))
        shown = "; ".join(items[:6]) + (f"; and {len(items) - 6} more" if len(items) > 6 else "")
        lines.append(f"- {shown}: {why}")
    errs = [(c.label(), e) for c in suite.cells if c.samples for e in c.errors]
    for label, e in errs[:30]:
        lines.append(f"- failed repetition: {label}: {e}")
    return lines


def machine_lines(suite: Suite) -> list[str]:
    m, v = suite.machine, suite.versions
    fss = suite.config.get("filesystems", {})
    fsdesc = "; ".join(f"{n}: {fmt_bytes(d.get('size', 0))} loop, mkfs {d.get('mkfs', '')}" for n, d in fss.items())
    commit = (v.get("commit") or "?")[:12] + (" (dirty)" if v.get("dirty") else "")
    return [
        f"- **run**: label `{suite.label}`, profile `{suite.profile}`, {suite.config.get('reps')} repetitions, "
        f"{suite.created}, {suite.duration_s / 60:.1f} min, commit `{commit}`",
        f"- **machine**: {m.get('cpu')} × {m.get('cpus')}, {fmt_bytes(m.get('memory', 0))} RAM, "
        f"kernel {m.get('kernel')}, {m.get('os')}, {m.get('virtualization') or 'bare metal?'}, "
        f"cgroups {m.get('cgroup')}; load {m.get('loadavg_start', ['?'])[0]:.2f} → "
        f"{(m.get('loadavg_end') or [0])[0]:.2f}",
        f"- **filesystems** (made by the bench): {fsdesc}",
        f"- **tools**: " + ", ".join(f"{k} {v_.split()[-1] if v_ else ''}" for k, v_ in
                                    sorted(v.get("tools", {}).items()) if k in
                                    ("crun", "runc", "skopeo", "umoci", "podman", "fuse-overlayfs", "tar")),
    ]


def headline_markdown(suite: Suite, comparison: "Comparison | None" = None,
                      report_path: str | None = "results/report.md") -> str:
    wl = headline_workload(suite)
    if wl is None:
        return "No results.\n"
    info = suite.workloads.get(wl, {})
    commit = (suite.versions.get("commit") or "?")[:12]
    lines = [f"Median of {suite.config.get('reps')} runs per cell on the `{wl}` image "
             f"({info.get('layers')} layers, {fmt_bytes(info.get('tar_bytes', 0))} unpacked, "
             f"{fmt_bytes(info.get('blob_bytes', 0))} gzip); fastest in bold; \"% of limit\" is the "
             f"machine's own tools for the same work (GNU tar, sha256, ISA-L) over the phase. "
             f"{suite.machine.get('cpus')} cores, kernel {suite.machine.get('kernel')}, commit `{commit}`, "
             f"{suite.created[:10]}." + (f" Full report: `{report_path}`." if report_path else ""), ""]
    lines += headline_table(suite, wl)
    if comparison is not None:
        lines += ["", f"Against the baseline: {len(comparison.regressions)} significant regression(s), "
                      f"{len(comparison.improvements)} improvement(s) over {len(comparison.changes)} cells."]
    return "\n".join(lines) + "\n"


def write_report(suite: Suite, out: Path, *, results_name: str = "", comparison: "Comparison | None" = None,
                 headline: bool = False) -> Path:
    from bench import plots

    out.mkdir(parents=True, exist_ok=True)
    hw = headline_workload(suite)
    made = plots.all_plots(suite, out, main_workloads(suite), hw)
    L: list[str] = [f"# lamina benchmark report: `{suite.label}`", ""]
    L += machine_lines(suite)
    if results_name:
        L.append(f"- **raw data**: [`{results_name}`]({results_name}) (every sample; schema {suite.schema_version})")
    L.append("")
    if hw:
        L += ["## Which driver is fastest", "", headline_markdown(suite, comparison, None).rstrip(), ""]
        win = winners_table(suite)
        if win:
            L += ["Fastest driver per workload and phase (lead over the runner-up):", ""] + win + [""]
    if comparison is not None:
        from bench.compare import summary_text

        L += ["## Against the baseline", "", "```", summary_text(comparison), "```", "",
              "Details: [compare.md](compare.md).", ""]
    if "waterfall" in made or "roofline" in made:
        L += ["## Critical path and roofline", ""]
        if "waterfall" in made:
            L += [f"![critical path]({made['waterfall'].name})", ""]
        if "roofline" in made:
            L += [f"![roofline]({made['roofline'].name})", ""]
        L += ["Limits (the machine's fastest tools doing the same work one step after another, measured "
              "in the same repetition):", ""]
        L += [f"- **{BY_NAME[p].title}**: {t}" for p, t in LIMIT_TEXT.items()] + [""]
    L += ["## Phases", "", "What each phase times:", ""]
    L += [f"- **{p.title}** (`{p.name}`): {p.what}" for p in BY_NAME.values()] + [""]
    for wl in _workloads(suite):
        if not suite.select("phase", workload=wl) and not suite.select("peer", workload=wl):
            continue
        info = suite.workloads[wl]
        tree = info.get("tree", {})
        L += [f"### {wl}", "",
              f"{info.get('layers')} layer(s), {fmt_bytes(info.get('tar_bytes', 0))} of tars, "
              f"{fmt_bytes(info.get('blob_bytes', 0))} gzip, {tree.get('files', '?')} files, "
              f"{tree.get('dirs', '?')} dirs; manifest `{(info.get('manifest') or '')[:19]}…`", ""]
        if f"phases-{wl}" in made:
            L += [f"![{wl}]({made[f'phases-{wl}'].name})", ""]
        L += workload_table(suite, wl) + [""]
    series_done = False
    for kind, title in (("deep", "Layer depth"), ("large-files", "Image size"), ("small-files", "File count")):
        t = series_table(suite, kind)
        if not t:
            continue
        if not series_done:
            L += ["## Series", ""]
            series_done = True
        key = {"deep": "depth", "large-files": "size", "small-files": "files"}[kind]
        L += [f"### {title}", ""]
        if f"series-{key}" in made:
            L += [f"![{title}]({made[f'series-{key}'].name})", ""]
        L += t + [""]
    ct = concurrency_table(suite)
    if ct:
        L += ["### Concurrent containers", ""]
        if "concurrency" in made:
            L += [f"![concurrency]({made['concurrency'].name})", ""]
        L += ct + [""]
    L += ["## The machine's limits (roofline)", ""] + roofline_tables(suite) + [""]
    pt = peers_table(suite)
    if pt:
        L += ["## Peers", ""] + pt + [""]
    if suite.peers:
        L += ["## Issue 15's aims", "",
              "Medians of this run, same machine and filesystem; the ratio is lamina's median over podman's "
              "(not paired). `lamina run` and `lamina images` are lamina's CLI in fresh processes "
              "(bench/peers.py).", ""] + aims_table(suite) + [""]
        why = aims_why(suite)
        if why:
            L += ["Why each missed aim is missed, from this run's measurements:", ""] + why + [""]
    nr = not_run(suite)
    if nr:
        L += ["## Not run, skipped or failed", ""] + nr + [""]
    if suite.notes:
        L += ["## Notes", ""] + [f"- {n}" for n in suite.notes] + [""]
    if suite.micro:
        L += ["## Micro benchmarks", "", "| benchmark | median | min | rounds |", "|---|---:|---:|---:|"]
        for m in suite.micro:
            st = m.get("stats", {})
            L.append(f"| {m['name']} | {fmt_s(st.get('median') or math.nan)} | {fmt_s(st.get('min') or math.nan)} "
                     f"| {st.get('rounds')} |")
        L.append("")
    L += ["## Method", "",
          "Every repetition of a (driver, workload) cell runs the whole lifecycle in a fresh process on a "
          "fresh store, on a loop filesystem the bench made for this run (ext4 with a journal, btrfs for "
          "the btrfs driver), torn down afterwards. Medians with 95% percentile-bootstrap intervals; "
          "outliers (Tukey fences) are kept and counted; spread is stdev / median, ⚠ above 10%. Caches "
          "are dropped before the walk and the cold read (`drop_caches`, else `posix_fadvise`). "
          "Regression compare: samples divided by their in-run reference, exact permutation test.", ""]
    path = out / "report.md"
    path.write_text("\n".join(L))
    if headline:
        (out / "HEADLINE.md").write_text(headline_markdown(suite, comparison))
    return path


def finish(cfg: object, suite: object, out_json: Path, *, save_baseline: bool) -> int:
    """Report, headline, comparison with the baseline; the exit status."""
    import os
    import shutil
    import sys

    from bench import compare
    from bench.runner import RunConfig
    from bench.results import Suite

    assert isinstance(cfg, RunConfig) and isinstance(suite, Suite)
    rdir = cfg.report_dir
    comparison = None
    if cfg.compare and cfg.baseline is not None and cfg.baseline.exists() and \
            cfg.baseline.resolve() != out_json.resolve():
        from bench import results as R

        base = R.load(cfg.baseline)
        comparison = compare.compare(base, suite, threshold=cfg.threshold, alpha=cfg.alpha)
        compare.write(comparison, rdir, base_name=str(cfg.baseline.name), new_name=out_json.name)
        print(compare.summary_text(comparison), file=sys.stderr)
    elif cfg.compare:
        print(f"bench: no baseline at {cfg.baseline}; nothing to compare "
              f"(--save-baseline makes this run the baseline)", file=sys.stderr)
    path = write_report(suite, rdir, results_name=os.path.relpath(out_json, rdir), comparison=comparison,
                               headline=cfg.label == "default")
    print(f"bench: report in {path}", file=sys.stderr)
    if save_baseline and cfg.profile.baseline:
        dst = cfg.results_dir / cfg.profile.baseline
        shutil.copyfile(out_json, dst)
        print(f"bench: baseline saved as {dst}", file=sys.stderr)
    if comparison is not None and cfg.fail_on_regression and comparison.regressions:
        print(f"bench: FAIL: {len(comparison.regressions)} significant regression(s) beyond "
              f"{1 + cfg.threshold:.2f}x", file=sys.stderr)
        return 1
    return 0
