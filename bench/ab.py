"""A/B runs: two (or more) revisions measured in one run, pair by pair, judged on paired ratios.

Why: a comparison with a stored baseline from another day, machine or load cannot tell a
regression from a busy neighbour (issue 12: an unchanged commit under load 3-4 showed 11
"significant regressions" of 2-3x). Here every repetition of every cell is measured once per
side, the sides one right after the other in an order drawn at random per pair, on the same loop
filesystems, the same workload bytes and the same local registry; the verdict on a cell comes
from the pairs' log ratios (``bench/paired.py``). A neighbour that slows the machine for a
while slows both samples of the pairs it overlaps.

The runner is this bench's (``Runner``: filesystems, workloads, registry, fresh worker per
task); only the worker processes differ per side (``revs.Side``: interpreter, cwd, PYTHONPATH,
extra environment). Roofline, machine and peer tasks are not run: a paired ratio needs no in-run
reference. A phase a side cannot run (its lamina lacks a function the phase calls, it errors) is
a row saying so, not a verdict.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from bench import paired
from bench.phases import PHASE_NAMES
from bench.results import Cell, Suite, fmt_s
from bench.revs import Side
from bench.runner import Progress, RunConfig, Runner, Task, kill_worker

COMPARED_KINDS = ("phase", "series")
# How the sides of a pair alternate: ``phase`` (default): both workers of a lifecycle pair alive,
# taking turns phase by phase (bench/interleave.py), so the two samples of a phase are one phase
# apart; ``task``: one whole worker after the other (a lifecycle apart, ~3 s; the concurrent
# series always runs this way: its children overlap by design).
INTERLEAVE = ("phase", "task")
# Both sides' workers run at nice -10 (root only): on a machine shared with other jobs (load 5-14
# on 2 cores here) a nice-0 worker gets a varying sixth of a core, and the halves of a pair, 3 s
# apart, correlated only 0.39; the instrument at nice 0 found no 50% slowdown in 8 pairs
# (bench/README.md). A higher priority takes CPU contention out of the samples; it hides no
# slowdown of lamina's own code, and both sides get it alike.
WORKER_NICE = -10
AB_SCHEMA = "lamina-bench-ab/1"


class ABRunner(Runner):
    """Runs every lifecycle and concurrent task of the profile once per side, per repetition,
    the sides of a pair in random order (seeded: ``order_seed``)."""

    def __init__(self, cfg: RunConfig, sides: list[Side], *, order_seed: int = 0,
                 interleave: str = "phase", out: Callable[[str], None] | None = None) -> None:
        super().__init__(cfg, out=out)
        if interleave not in INTERLEAVE:
            raise ValueError(f"interleave must be one of {', '.join(INTERLEAVE)}, not {interleave!r}")
        self.interleave = interleave
        self.turn_rng = random.Random(order_seed ^ 0x5EED)
        if len({s.name for s in sides}) != len(sides) or len(sides) < 2:
            raise ValueError("an A/B run needs at least two sides with distinct names")
        self.sides = sides
        self.by_name = {s.name: s for s in sides}
        self.side_suites = {s.name: Suite(label=s.name, profile=cfg.profile.name) for s in sides}
        self.order_seed = order_seed
        self.task_log: list[dict[str, Any]] = []

    def plan(self) -> list[Task]:
        rng = random.Random(self.order_seed)
        names = [s.name for s in self.sides]
        phases = [p for p in PHASE_NAMES if p in self.p.phases]
        tasks: list[Task] = []
        for rep in range(self.p.reps):
            for wl in self.p.workloads:
                if wl not in self.workloads:
                    continue
                for d in self.drivers:
                    if self._workload_allowed(d, wl):
                        continue
                    for side in rng.sample(names, len(names)):
                        tasks.append(self._lifecycle_task(rep, d, wl, phases, side=side))
            if self.p.concurrency and self.p.concurrency_workload in self.workloads:
                for d in self.drivers:
                    for side in rng.sample(names, len(names)):
                        tasks.append(self._concurrent_task(rep, d, side=side))
        return tasks

    def _lifecycle_task(self, rep: int, d: str, name: str, phases: list[str], side: str = "") -> Task:
        """The two workers of a pair may be alive at once: one store root each, and the roots
        change hands from pair to pair (side i takes root (i + rep) mod n). A root kept by one
        side would give it, for a whole run, whatever that part of the loop filesystem costs:
        ext4 places a directory's files near it, and the sparse image under the loop device
        allocates blocks on its first writes there. The first A/A runs of the instrument failed
        on ``remove`` (deletions and a syncfs), 11 of 12 pairs slower on the same side."""
        t = super()._lifecycle_task(rep, d, name, phases, side)
        if side:
            names = [s.name for s in self.sides]
            slot = (names.index(side) + rep) % len(names)
            t.payload["store_base"] = str(Path(t.payload["store_base"]) / f"root{slot}")
        return t

    def _execute(self, tasks: list[Task]) -> None:
        if self.interleave == "task":
            return super()._execute(tasks)
        progress = Progress(tasks, self.out)
        i = 0
        while i < len(tasks):
            group = [tasks[i]]
            if tasks[i].kind == "lifecycle":
                while (i + len(group) < len(tasks) and tasks[i + len(group)].kind == "lifecycle"
                       and tasks[i + len(group)].family == tasks[i].family
                       and tasks[i + len(group)].rep == tasks[i].rep):
                    group.append(tasks[i + len(group)])
            i += len(group)
            progress.begin(group[0])
            t0 = time.monotonic()
            results = self._run_pair(group) if len(group) > 1 else [self._run_task(group[0])]
            took = time.monotonic() - t0
            for t, res in zip(group, results):
                self._after_task(t)
                summary = self._fold(t, res)
                progress.end(t, took / len(group),
                             f"[{t.side}] {summary}" if self.cfg.verbose or isinstance(res, str) else "")

    def _run_pair(self, group: list[Task]) -> list[dict[str, Any] | str]:
        """The workers of one pair, alive together, taking turns phase by phase."""
        from bench import interleave

        t0, load = time.time(), os.getloadavg()[0]
        seats: list[interleave.Seat] = []
        outs: list[Path] = []
        with open(self.log_path, "a") as log:
            try:
                for t in group:
                    (wr, rw), (rr, ww) = interleave.pipes()
                    try:
                        proc, out = self._start_worker(t, log, {interleave.ENV: f"{wr},{ww}"}, (wr, ww))
                    except BaseException:
                        for fd in (wr, rw, rr, ww):
                            os.close(fd)
                        raise
                    os.close(wr)
                    os.close(ww)
                    seats.append(interleave.Seat(t.side, proc, rw, rr))
                    outs.append(out)
                why = interleave.take_turns(seats, self.turn_rng, self.p.task_timeout * len(group))
                if why:
                    why = f"{why} after {self.p.task_timeout * len(group):.0f} s (interleaved pair)"
                for seat in seats:
                    seat.close()
                results = [self._finish_worker(s.proc, out, self.p.task_timeout, why)
                           for s, out in zip(seats, outs)]
            except BaseException:
                for seat in seats:
                    seat.close()
                    kill_worker(seat.proc)
                raise
        took = round(time.time() - t0, 3)
        for t, res, seat in zip(group, results, seats):
            self.task_log.append({"rep": t.rep, "kind": t.kind, "driver": t.driver, "workload": t.workload,
                                  "side": t.side, "start": round(t0, 3), "seconds": took, "load1": load,
                                  "ok": not isinstance(res, str), "interleave": "phase",
                                  "turns": len(seat.turns), "root": Path(t.payload["store_base"]).name})
        return results

    def _worker(self, t: Task, task_file: Path) -> tuple[list[str], str, dict[str, str] | None]:
        s = self.by_name[t.side]
        nice = ["nice", "-n", str(WORKER_NICE)] if WORKER_NICE and os.geteuid() == 0 else []
        return [*nice, s.python, "-m", "bench.worker", str(task_file)], s.cwd, s.environ()

    def _run_task(self, t: Task) -> dict[str, Any] | str:
        t0 = time.time()
        load = os.getloadavg()[0]
        res = super()._run_task(t)
        self.task_log.append({"rep": t.rep, "kind": t.kind, "driver": t.driver, "workload": t.workload,
                              "side": t.side, "start": round(t0, 3), "seconds": round(time.time() - t0, 3),
                              "load1": load, "ok": not isinstance(res, str)})
        return res

    def _fold(self, t: Task, res: dict[str, Any] | str) -> str:
        if not isinstance(res, str):
            res = self._check_code(t, res)
        main = self.suite
        self.suite = self.side_suites[t.side]
        try:
            return super()._fold(t, res)
        finally:
            self.suite = main

    def _check_code(self, t: Task, res: dict[str, Any]) -> dict[str, Any] | str:
        """A worker must have measured its own side's lamina and run this runner's bench; a
        mix-up would compare a revision with itself and pass anything, so it fails the task."""
        s = self.by_name[t.side]
        code = res.get("code", {})
        root = Path(s.pythonpath[0] if s.pythonpath else s.cwd).resolve()
        for mod in ("graph", "drivers"):
            f = code.get(mod)
            if f and not Path(f).resolve().is_relative_to(root):
                return f"side {s.name} imported {mod} from {f}, not from {root}"
        f = code.get("bench")
        if f and Path(f).resolve().parent != Path(__file__).resolve().parent:
            return f"side {s.name} ran the bench in {f}, not this runner's"
        return res

    def run_ab(self) -> "ABRun":
        main = self.run()
        for s in self.sides:
            suite = self.side_suites[s.name]
            suite.created, suite.duration_s = main.created, main.duration_s
            suite.machine, suite.config, suite.drivers = main.machine, main.config, main.drivers
            suite.versions = dict(main.versions, commit=s.commit, side=s.label)
            for wl, info in main.workloads.items():
                mine = suite.workloads.get(wl, {})
                suite.workloads[wl] = {**info, **mine}
            for c in main.cells:  # the skip rows of the plan
                if c.status == "skipped":
                    suite.add_skip(c.kind, c.name, c.driver, c.workload, c.param, c.reason)
        notes = list(main.notes)
        base = self.side_suites[self.sides[0].name]
        for s in self.sides[1:]:
            other = self.side_suites[s.name]
            for wl, info in base.workloads.items():
                a, b = info.get("fingerprints", {}), other.workloads.get(wl, {}).get("fingerprints", {})
                for d in sorted(a.keys() & b.keys()):
                    if a[d] != b[d]:
                        notes.append(f"TREE MISMATCH: {d} × {wl}: {s.name} materialised another tree than "
                                     f"{self.sides[0].name}")
        return ABRun(sides=self.sides, suites=self.side_suites, machine=main.machine, config=main.config,
                     notes=notes, task_log=self.task_log, order_seed=self.order_seed,
                     duration_s=main.duration_s)


@dataclass
class Row:
    """The verdict on one cell of one comparison (``result`` None: not compared; ``reason``)."""

    key: tuple[Any, ...]
    label: str
    result: paired.PairedResult | None
    reason: str = ""

    @property
    def verdict(self) -> str:
        return self.result.verdict if self.result else "not compared"


def _label(c: Cell) -> str:
    return c.label().removeprefix("phase / ").removeprefix("series / ")


def _why_not(c: Cell | None, side: str) -> str:
    if c is None:
        return f"{side} has no such cell"
    if c.status == "skipped":
        return f"{side}: skipped: {c.reason}"
    first = c.errors[0].split(": ", 1)[-1] if c.errors else c.reason
    return f"{side} cannot run it: {first}"[:240]


def analyse(base: Suite, new: Suite, t: paired.Thresholds = paired.DEFAULTS, *,
            base_name: str = "base", new_name: str = "new") -> list[Row]:
    """Pair every phase and series cell of ``new`` with ``base`` by repetition and judge it."""
    keys = {c.key for s in (base, new) for c in s.cells if c.kind in COMPARED_KINDS}
    rows: list[Row] = []
    for key in sorted(keys, key=lambda k: tuple(str(x) for x in k)):
        bc, nc = base.cell(*key), new.cell(*key)
        some = nc or bc
        assert some is not None
        label = _label(some)
        if bc is None or not bc.samples or nc is None or not nc.samples:
            if (bc is None or bc.status == "skipped") and (nc is None or nc.status == "skipped"):
                reason = _why_not(nc, new_name) if nc is not None else _why_not(bc, base_name)
            elif bc is None or not bc.samples:
                reason = _why_not(bc, base_name)
            else:
                reason = _why_not(nc, new_name)
            rows.append(Row(key, label, None, reason))
            continue
        b, n = bc.by_rep(), nc.by_rep()
        common = sorted(b.keys() & n.keys())
        res = paired.verdict([b[r] for r in common], [n[r] for r in common], t, logs=_repeat_logs(bc, nc, common))
        lost = (len(b) - len(common)) + (len(n) - len(common))
        rows.append(Row(key, label, res, f"{lost} unpaired samples left out" if lost else ""))
    return rows


def _repeat_logs(bc: Cell, nc: Cell, reps: list[int]) -> list[float] | None:
    """The pairs' log ratios from the repeated timings of a phase (``paired.pair_log_ratio``),
    when every pair has K timings on both sides; None (plain ratios of the samples) otherwise."""
    br, nr = bc.extra.get("repeats") or {}, nc.extra.get("repeats") or {}
    pairs = [(br.get(str(r)), nr.get(str(r))) for r in reps]
    if not pairs or any(not x or not y or len(x) != len(y) for x, y in pairs):
        return None
    return [paired.pair_log_ratio(x, y) for x, y in pairs]


@dataclass
class ABRun:
    sides: list[Side]
    suites: dict[str, Suite]
    machine: dict[str, Any]
    config: dict[str, Any]
    notes: list[str]
    task_log: list[dict[str, Any]]
    order_seed: int
    duration_s: float

    def rows(self, new: str | None = None, t: paired.Thresholds = paired.DEFAULTS,
             reps: range | None = None) -> list[Row]:
        """The comparison of side ``new`` (default: the second side) with the first side, on
        the repetitions in ``reps`` (default: all)."""
        base = self.sides[0].name
        new = new or self.sides[1].name
        b, n = self.suites[base], self.suites[new]
        if reps is not None:
            b, n = _only_reps(b, reps), _only_reps(n, reps)
        return analyse(b, n, t, base_name=base, new_name=new)

    def to_json(self, t: paired.Thresholds = paired.DEFAULTS) -> dict[str, Any]:
        return {
            "schema": AB_SCHEMA, "duration_s": self.duration_s, "order_seed": self.order_seed,
            "sides": [asdict(s) for s in self.sides], "thresholds": asdict(t), "machine": self.machine,
            "config": self.config, "notes": self.notes, "tasks": self.task_log,
            "suites": {k: v.to_json() for k, v in self.suites.items()},
        }

    def save(self, path: Path, t: paired.Thresholds = paired.DEFAULTS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(t), indent=1) + "\n")
        os.replace(tmp, path)


def load(path: Path) -> ABRun:
    from bench import results as R

    doc = json.loads(path.read_text())
    if doc.get("schema") != AB_SCHEMA:
        raise R.ResultsError(f"{path} is not an A/B results file ({AB_SCHEMA})")
    sides = [Side(**{**s, "pythonpath": tuple(s.get("pythonpath", ()))}) for s in doc["sides"]]
    return ABRun(sides=sides, suites={k: R.from_json(v) for k, v in doc["suites"].items()},
                 machine=doc.get("machine", {}), config=doc.get("config", {}), notes=doc.get("notes", []),
                 task_log=doc.get("tasks", []), order_seed=doc.get("order_seed", 0),
                 duration_s=doc.get("duration_s", 0.0))


def _only_reps(s: Suite, reps: range) -> Suite:
    out = Suite(label=s.label, profile=s.profile, machine=s.machine, versions=s.versions, config=s.config)
    for c in s.cells:
        keep = [(x, r) for x, r in zip(c.samples, c.reps) if r in reps]
        out.cells.append(Cell(c.kind, c.name, c.driver, c.workload, c.param, c.unit, [x for x, _ in keep],
                              [r for _, r in keep], list(c.errors), c.status if keep or not c.samples else "error",
                              c.reason, dict(c.extra)))
    out.__post_init__()
    return out


# ---- the report ---------------------------------------------------------------------------------


def _loads(run: ABRun) -> str:
    xs = [x["load1"] for x in run.task_log]
    if not xs:
        return "-"
    return f"{min(xs):.1f}–{max(xs):.1f} (median {sorted(xs)[len(xs) // 2]:.1f})"


def verdict_paragraph(run: ABRun, rows: list[Row], t: paired.Thresholds) -> str:
    base, new = run.sides[0], run.sides[1]
    judged = [r for r in rows if r.result is not None and r.result.verdict not in ("tiny", "too-few")]
    bad = [r for r in rows if r.result is not None and r.result.failed]
    slower = [r for r in rows if r.result is not None and r.result.verdict == "slower"]
    better = [r for r in rows if r.result is not None and r.result.verdict in ("improvement", "faster")]
    skipped = [r for r in rows if r.result is None]
    tiny = [r for r in rows if r.result is not None and r.result.verdict in ("tiny", "too-few")]
    pairs = max((r.result.n for r in judged), default=0)
    head = (f"**FAIL: {len(bad)} regression{'s' if len(bad) != 1 else ''}** "
            + "; ".join(f"{r.label} {r.result.ratio:.2f}x [{r.result.ci[0]:.2f}, {r.result.ci[1]:.2f}], "
                        f"p={r.result.p_slower:.4f}" for r in bad if r.result) + ".") if bad else "**PASS.**"
    return (f"{head} `{new.label}` against `{base.label}`: {len(judged)} cells judged on up to {pairs} "
            f"pairs each (both sides measured back to back, order random per pair, load average "
            f"{_loads(run)}). A regression is a cell at least {t.threshold:.0%} slower (geometric-mean "
            f"ratio of the pairs >= {1 + t.threshold:.2f}) with p <= {t.alpha} in a one-sided sign-flip "
            f"test on the log ratios. {len(slower)} cell(s) were significantly slower by less than that, "
            f"{len(better)} significantly faster; {len(tiny)} tiny (base median under "
            f"{fmt_s(t.floor)}, never fail) and {len(skipped)} not compared (reasons in the table).")


def markdown(run: ABRun, rows: list[Row], t: paired.Thresholds, plot: str | None) -> str:
    base, new = run.sides[0], run.sides[1]
    lines = [f"# A/B: `{new.label}` against `{base.label}`", "", verdict_paragraph(run, rows, t), ""]
    if plot:
        lines += [f"![paired ratios per cell]({plot})", ""]
    order = {"regression": 0, "slower": 1, "improvement": 2, "faster": 3, "same": 4, "tiny": 5, "too-few": 6}
    judged = sorted((r for r in rows if r.result), key=lambda r: (order.get(r.verdict, 9), -(r.result.ratio if r.result else 0)))
    lines += ["| cell | base median | new median | ratio (gm of pairs) | 95% CI | p slower | pairs | verdict |",
              "|---|---:|---:|---:|---|---:|---:|---|"]
    for r in judged:
        x = r.result
        assert x is not None
        v = f"**{x.verdict}**" if x.verdict in ("regression", "improvement") else x.verdict
        note = f" ({r.reason})" if r.reason else ""
        lines.append(f"| {r.label} | {fmt_s(x.base_median)} | {fmt_s(x.new_median)} | {x.ratio:.3f} | "
                     f"{x.ci[0]:.3f}–{x.ci[1]:.3f} | {x.p_slower:.4f} | {x.n} | {v}{note} |")
    skipped = [r for r in rows if r.result is None]
    if skipped:
        lines += ["", "Not compared:", ""] + [f"- {r.label}: {r.reason}" for r in skipped]
    lines += ["", "Sides:", ""]
    for s in run.sides:
        extra = f", env {s.env}" if s.env else ""
        lines.append(f"- **{s.name}**: {s.label}: `{s.python}`, PYTHONPATH {':'.join(s.pythonpath) or '-'}{extra}")
    m = run.machine
    lines += ["", f"Machine: {m.get('cpu', '?')} × {m.get('cpus', '?')}, kernel {m.get('kernel', '?')}; "
                  f"run time {run.duration_s:.0f} s; order seed {run.order_seed}."]
    for n in run.notes:
        lines.append(f"- note: {n}")
    return "\n".join(lines) + "\n"


def write(run: ABRun, out: Path, t: paired.Thresholds = paired.DEFAULTS) -> tuple[Path, list[Row]]:
    """``ab.json`` (every sample of both sides), ``ab.md`` (verdict, table) and ``ab.png``."""
    from bench import plots

    out.mkdir(parents=True, exist_ok=True)
    rows = run.rows(t=t)
    run.save(out / "ab.json", t)
    frows = [plots.ForestRow(r.label, r.result.ratio, r.result.ci[0], r.result.ci[1], r.result.verdict)
             for r in rows if r.result is not None and r.result.verdict != "too-few"]
    plot = plots.forest(frows, out / "ab.png", threshold=t.threshold,
                        title=f"paired ratio per cell with its 95% bootstrap CI (regressions red)\n"
                              f"new: {run.sides[1].label}\nbase: {run.sides[0].label}",
                        xlabel="geometric mean of the per-pair ratios new / base (> 1: slower)")
    path = out / "ab.md"
    path.write_text(markdown(run, rows, t, plot.name if plot else None))
    return path, rows


def summary_text(run: ABRun, rows: list[Row], t: paired.Thresholds) -> str:
    bad = [r for r in rows if r.result is not None and r.result.failed]
    judged = [r for r in rows if r.result is not None and r.result.verdict not in ("tiny", "too-few")]
    lines = [f"bench: A/B {run.sides[1].label} vs {run.sides[0].label}: {len(judged)} cells judged, "
             f"{len(bad)} regression(s) (>= {1 + t.threshold:.2f}x and p <= {t.alpha}); load {_loads(run)}; "
             f"{run.duration_s:.0f} s"]
    for r in bad:
        assert r.result is not None
        lines.append(f"  REGRESSION {r.label}: {r.result.ratio:.3f}x [{r.result.ci[0]:.3f}, {r.result.ci[1]:.3f}] "
                     f"p={r.result.p_slower:.4f} ({fmt_s(r.result.base_median)} -> {fmt_s(r.result.new_median)})")
    return "\n".join(lines)
