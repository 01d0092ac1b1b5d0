"""``python -m bench.instrument``: measure the A/B instrument itself (the figures in bench/README.md).

- **False-alarm rate**: the commit against itself (HEAD built in its own worktree and venv as
  the base, this clean checkout as the new side: exactly the gate's arrangement), under a
  CPU-hog neighbour: one busy loop per core at nice 19, started and stopped here by PID.
- **Sensitivity**: the same, with a test-only knob on the new side only, for each S of
  ``--slowdowns`` (``bench/worker.py``): ``--knob register`` (default,
  ``LAMINA_BENCH_SLOWDOWN_REGISTER=S``: every ``LayerStore.register`` sleeps S times its own
  duration, so ``materialise``, which is registrations and nothing else, is S slower) or
  ``--knob apply`` (``LAMINA_BENCH_SLOWDOWN_APPLY=S``: only the tar applier, about half of
  ``materialise``). A cell counts as *affected* when the knob's code is all of it
  (``materialise``), as *partly affected* when it is a part (``pull``, ``load``, ``commit``),
  else *unaffected* (create, mount, start, walk, read, copy-up, remove, concurrent: their timed
  steps register no layer). Required: >= 9 of 10 runs flag every affected cell, no run flags an
  unaffected one.

Every arm runs in ONE A/B session, repetition by repetition (the base and each arm's new side in
random order per repetition), on a dedicated small set (default: small-files-500 on vfs
and overlay, every phase, with the gate's repeats of the cheap phases); run i is repetitions
``PAIRS*i .. PAIRS*(i+1)-1``, judged by ``paired.verdict`` with the gate's thresholds. The arms of one run share the base samples of that run.

Writes ``OUT/instrument.json`` (every sample), ``OUT/instrument.md`` (the tables for
bench/README.md) and one forest plot per arm for the first run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from bench import paired, revs
from bench.gate import GATE_PAIRS, GATE_THRESHOLDS, gate_profile

REPO = Path(__file__).resolve().parent.parent
KNOB_ENV = {"register": "LAMINA_BENCH_SLOWDOWN_REGISTER", "apply": "LAMINA_BENCH_SLOWDOWN_APPLY"}
AFFECTED = {"materialise"}
PARTLY = {"pull", "load", "commit"}


@contextlib.contextmanager
def cpu_hog(n: int | None = None) -> Iterator[list[int]]:
    """One low-priority (nice 19) busy loop per core; killed by PID on the way out."""
    n = n or os.cpu_count() or 1
    procs = [subprocess.Popen([sys.executable, "-c", "import os; os.nice(19)\nwhile True: pass"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(n)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait()


def classify(phase_or_series: str) -> str:
    if phase_or_series in AFFECTED:
        return "affected"
    if phase_or_series in PARTLY:
        return "partly"
    return "unaffected"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.instrument", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=GATE_PAIRS, help="pairs per run (default: the gate's, %(default)s)")
    ap.add_argument("--threshold", type=float, default=GATE_THRESHOLDS.threshold,
                    help="the rule judged (default: the gate's): smallest slowdown that fails")
    ap.add_argument("--alpha", type=float, default=GATE_THRESHOLDS.alpha,
                    help="the rule judged (default: the gate's): significance level")
    ap.add_argument("--slowdowns", default="0.10,0.25,0.50")
    ap.add_argument("--knob", choices=sorted(KNOB_ENV), default="register",
                    help="what the slowdown slows (default: %(default)s)")
    ap.add_argument("--workloads", default="small-files-500")
    ap.add_argument("--drivers", default="vfs,overlay")
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--no-hog", action="store_true", help="no CPU-hog neighbour")
    ap.add_argument("--work-dir", type=Path, default=revs.CACHE / "instrument-work")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "instrument")
    ap.add_argument("--from", dest="from_json", type=Path, metavar="JSON",
                    help="only summarise an earlier instrument.json (no measuring)")
    args = ap.parse_args(argv)
    t = paired.Thresholds(alpha=args.alpha, threshold=args.threshold, floor=GATE_THRESHOLDS.floor)
    if args.from_json:
        return resummarise(args.from_json, args.out, args.runs, args.pairs, t)
    if os.geteuid() != 0:
        print("bench.instrument: needs root", file=sys.stderr)
        return 2
    if revs.git(REPO, "status", "--porcelain", "--untracked-files=no"):
        print("bench.instrument: the checkout has uncommitted changes: an A/A run needs HEAD itself", file=sys.stderr)
        return 2
    from bench import ab
    from bench.runner import RunConfig

    slowdowns = [float(x) for x in args.slowdowns.split(",") if x]
    base = revs.build(REPO, "HEAD", name="base", label="HEAD (built)", log=print)
    same = revs.worktree_side(REPO, "same")
    arms = [same] + [same.with_env(f"{args.knob}{int(round(s * 100))}", **{KNOB_ENV[args.knob]: str(s)})
                     for s in slowdowns]
    profile = gate_profile(args.pairs).with_(
        reps=args.runs * args.pairs, workloads=tuple(args.workloads.split(",")), drivers=tuple(args.drivers.split(",")),
        concurrency=tuple(int(x) for x in args.concurrency.split(",") if x), concurrency_workload=args.workloads.split(",")[0],
        peers=(), peer_workloads=())
    cfg = RunConfig(profile=profile, label="instrument", work_dir=args.work_dir, results_dir=args.out,
                    compare=False)
    load_before = os.getloadavg()
    t0 = time.time()
    with (contextlib.nullcontext([]) if args.no_hog else cpu_hog()) as hog:
        print(f"bench.instrument: CPU hog PIDs {hog or 'none'}; {len(arms)} arms x {profile.reps} repetitions",
              flush=True)
        run = ab.ABRunner(cfg, [base, *arms], order_seed=12).run_ab()
    wall = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    run.save(args.out / "instrument.json", t)
    summary = summarise(run, arms, args.runs, args.pairs, t)
    summary.update(wall_s=round(wall, 1), load_before=load_before, load_after=os.getloadavg(), hog=bool(hog),
                   concurrency=list(profile.concurrency),
                   workloads=list(profile.workloads), drivers=list(profile.drivers or ()))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "instrument.md").write_text(markdown(summary))
    for arm in arms:  # a forest plot per arm of the first run, to look at
        from bench import plots

        rows = run.rows(arm.name, t, range(0, args.pairs))
        plots.forest([plots.ForestRow(r.label, r.result.ratio, r.result.ci[0], r.result.ci[1], r.result.verdict)
                      for r in rows if r.result is not None and r.result.verdict != "too-few"],
                     args.out / f"run1-{arm.name}.png", threshold=t.threshold,
                     title=f"instrument run 1: {arm.name} / base", xlabel="paired ratio (gm), new / base")
    print((args.out / "instrument.md").read_text())
    return 0


def resummarise(path: Path, out: Path, runs: int, pairs: int, t: paired.Thresholds = paired.DEFAULTS) -> int:
    from bench import ab

    run = ab.load(path)
    old = json.loads((path.parent / "summary.json").read_text()) if (path.parent / "summary.json").exists() else {}
    s = summarise(run, run.sides[1:], runs, pairs, t)
    s.update({k: old[k] for k in ("wall_s", "load_before", "load_after", "hog", "workloads", "drivers") if k in old})
    s.setdefault("wall_s", run.duration_s)
    s.setdefault("concurrency", run.config.get("concurrency", []))
    s.setdefault("hog", True)
    s.setdefault("workloads", run.config.get("workloads", []))
    s.setdefault("drivers", sorted({c.driver for c in run.suites[run.sides[0].name].cells if c.driver}))
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(s, indent=1) + "\n")
    (out / "instrument.md").write_text(markdown(s))
    print(markdown(s))
    return 0


def summarise(run: Any, arms: list[revs.Side], runs: int, pairs: int, t: paired.Thresholds) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs, "pairs": pairs, "alpha": t.alpha, "threshold": t.threshold,
                           "floor": t.floor, "arms": {}, "loads": []}
    for i in range(runs):
        reps = range(i * pairs, (i + 1) * pairs)
        loads = [x["load1"] for x in run.task_log if x["rep"] in reps]
        out["loads"].append([min(loads), max(loads)] if loads else [])
    for arm in arms:
        per_run = []
        for i in range(runs):
            rows = run.rows(arm.name, t, range(i * pairs, (i + 1) * pairs))
            per_run.append({r.label: {"verdict": r.verdict, "ratio": r.result.ratio if r.result else None,
                                      "p": r.result.p_slower if r.result else None,
                                      "class": classify(r.key[1]), "reason": r.reason}
                            for r in rows})
        cells = sorted({c for pr in per_run for c in pr})
        table = {}
        for c in cells:
            vs = [pr.get(c, {}) for pr in per_run]
            ratios = [v["ratio"] for v in vs if v.get("ratio")]
            table[c] = {"class": next((v["class"] for v in vs if v), ""),
                        "flagged": sum(v.get("verdict") == "regression" for v in vs),
                        "judged": sum(v.get("verdict") not in (None, "not compared", "too-few") for v in vs),
                        "tiny": any(v.get("verdict") == "tiny" for v in vs),
                        "median_ratio": sorted(ratios)[len(ratios) // 2] if ratios else None,
                        "reason": next((v["reason"] for v in vs if v.get("reason")), "")}
        runs_with_false = sum(any(v["verdict"] == "regression" and v["class"] == "unaffected" for v in pr.values())
                              for pr in per_run)
        runs_all_affected = sum(all(v["verdict"] == "regression" for v in pr.values() if v["class"] == "affected")
                                for pr in per_run)
        runs_any = sum(any(v["verdict"] == "regression" for v in pr.values()) for pr in per_run)
        out["arms"][arm.name] = {"env": arm.env, "cells": table, "runs_flagging_unaffected": runs_with_false,
                                 "runs_flagging_all_affected": runs_all_affected, "runs_failing": runs_any}
    return out


def _knob_label(env: dict[str, str]) -> str:
    """``register +25%`` for an arm's environment."""
    return ", ".join(f"{k} +{float(env[v]):.0%}" for k, v in KNOB_ENV.items() if v in env)


def markdown(s: dict[str, Any]) -> str:
    runs = s["runs"]
    loads = [x for x in s["loads"] if x]
    lo = min(x[0] for x in loads) if loads else float("nan")
    hi = max(x[1] for x in loads) if loads else float("nan")
    conc = s.get("concurrency") or []
    conc_text = f"concurrency {' and '.join(map(str, conc))}" if conc else "no concurrent-containers series"
    lines = [f"Measured by `python -m bench.instrument` ({runs} runs x {s['pairs']} pairs per arm, workloads "
             f"{', '.join(s['workloads'])} on {', '.join(s['drivers'])}, every phase, {conc_text}; "
             f"{'one nice-19 busy loop per core running throughout' if s['hog'] else 'no CPU hog'}; "
             f"1-minute load average {lo:.1f}-{hi:.1f} during the runs; {s['wall_s'] / 60:.0f} minutes in all). "
             f"Rule: regression = geometric-mean paired ratio >= {1 + s['threshold']:.2f} and sign-flip "
             f"p <= {s['alpha']}; cells under {s['floor'] * 1e3:g} ms never fail.", "",
             "| arm (new side) | runs failing | runs flagging every affected cell | runs flagging an unaffected cell |",
             "|---|---:|---:|---:|"]
    for name, a in s["arms"].items():
        label = "A/A (same commit)" if not a["env"] else _knob_label(a["env"])
        every = "-" if not a["env"] else f"{a['runs_flagging_all_affected']}/{runs}"
        lines.append(f"| {label} | {a['runs_failing']}/{runs} | {every} | "
                     f"{a['runs_flagging_unaffected']}/{runs} |")
    lines += ["", "Per cell: runs flagged as a regression (median paired ratio over the runs):", ""]
    names = list(s["arms"])
    lines += ["| cell | class | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    cells = sorted({c for a in s["arms"].values() for c in a["cells"]},
                   key=lambda c: ({"affected": 0, "partly": 1, "unaffected": 2}.get(
                       s["arms"][names[0]]["cells"].get(c, {}).get("class", ""), 3), c))
    for c in cells:
        first = s["arms"][names[0]]["cells"].get(c, {})
        row = [c, first.get("class", "") + (" (tiny)" if first.get("tiny") else "")]
        for n in names:
            x = s["arms"][n]["cells"].get(c)
            if not x or not x["judged"]:
                row.append("-")
            else:
                row.append(f"{x['flagged']}/{x['judged']} ({x['median_ratio']:.2f}x)")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
