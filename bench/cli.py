"""``python -m bench``: run the benchmark suite, report, compare, run micro benchmarks, clean up.

One module per stage (STYLE.md 14): ``workloads/`` and ``phases.py`` define what is measured,
``runner.py`` and ``worker.py`` run it, ``results.py`` keeps it, ``report.py``/``plots.py`` and
``compare.py`` read it. This module only parses arguments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
from pathlib import Path

from bench import paired
from bench.phases import PHASES, PHASE_NAMES, REPEATABLE
from bench.profiles import GATE_REPEATS, PROFILES

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPO / "results"
DEFAULT_WORK = Path(os.environ.get("LAMINA_BENCH_WORK", str(REPO / "results" / "work")))

DESCRIPTION = """\
lamina's benchmark suite. `make bench` runs `python -m bench run --profile default`; `make
bench-quick` the CI profile. A run measures every phase of an image's life on every graphdriver
this machine supports, on filesystems the bench makes itself, next to the machine's own limits
(the roofline) and the established tools (peers), and writes results/<label>.json, a Markdown
report with plots, and a comparison with the committed baseline."""

PHASE_HELP = "\n".join(f"  {p.name:<12} {p.what}" for p in PHASES)

RUN_EPILOG = f"""\
phases (each timed on its own, per driver x workload):
{PHASE_HELP}

workloads (generated from the seed and cached under WORK/cache):
  realistic          Debian minbase (debootstrap) + python3 + an app layer with deletions
  small-files[-N]    N files of 1-16 KiB in one layer (default 20k; N like 500, 2k, 20k)
  large-files[-S]    three files totalling S (default 512m; S like 8m, 64m, 1g)
  deep-N             N layers (1..500) each changing a few files of a 500-file base

profiles:
""" + "\n".join(f"  {n:<8} {p.description} ({p.reps} reps; workloads: {', '.join(p.workloads)})"
                for n, p in PROFILES.items()) + """

exit status: 0, or 1 when the comparison with the baseline finds a significant regression
beyond the threshold and failing on it is asked for (--fail-on-regression; off in every profile:
the baseline is history, CI's gate is the A/B run `python -m bench gate`).
"""


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _repeats(text: str) -> dict[str, int]:
    """``materialise=9,pull=5`` -> {"materialise": 9, "pull": 5}; '' -> {} (no repeats)."""
    out: dict[str, int] = {}
    for item in _csv(text):
        name, eq, k = item.partition("=")
        if not eq or name not in REPEATABLE or not k.isdigit() or int(k) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: want PHASE=K with PHASE one of {', '.join(REPEATABLE)}, K >= 1")
        out[name] = int(k)
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a profile: measure, write results JSON, report, compare",
                         description="Run the benchmark suite.", epilog=RUN_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--profile", choices=sorted(PROFILES), default="default",
                     help="named set of the knobs below (default: %(default)s)")
    run.add_argument("--drivers", type=_csv, metavar="LIST",
                     help="graphdrivers to measure, comma-separated (default: the profile's; 'default' "
                          "means every registered driver this machine supports)")
    run.add_argument("--workloads", type=_csv, metavar="LIST",
                     help="workloads, comma-separated (see below); replaces the profile's list and lifts "
                          "its per-driver depth limits")
    run.add_argument("--phases", type=_csv, metavar="LIST",
                     help=f"phases to time (default: all: {','.join(PHASE_NAMES)}); phases that others "
                          "need still run, untimed")
    run.add_argument("--reps", type=int, metavar="N", help="repetitions per cell (default: the profile's; "
                                                           ">= 5 for meaningful confidence intervals)")
    run.add_argument("--concurrency", type=_csv, metavar="LIST",
                     help="container counts of the concurrent-containers series, e.g. 1,2,4,8,16 "
                          "('none' to skip)")
    run.add_argument("--peers", type=_csv, metavar="LIST",
                     help="peer tools to run ('none' to skip; names as in the report, e.g. "
                          "'skopeo copy,crun run')")
    run.add_argument("--label", help="name of this run: results/<label>.json (default: the profile name); "
                                     "the label 'default' writes results/report.md, others "
                                     "results/<label>/report.md")
    run.add_argument("--baseline", type=Path, metavar="FILE",
                     help="results file to compare with (default: the profile's baseline in the results "
                          "dir, when it exists)")
    run.add_argument("--no-compare", action="store_true", help="do not compare with a baseline")
    run.add_argument("--save-baseline", action="store_true",
                     help="also write this run as the profile's baseline (results/baseline*.json)")
    run.add_argument("--fail-on-regression", action=argparse.BooleanOptionalAction, default=None,
                     help="exit 1 on a significant regression beyond --threshold against the baseline "
                          "(default: off; CI gates with `python -m bench gate`)")
    run.add_argument("--threshold", type=float, default=0.5, metavar="F",
                     help="a regression counts when the ratio-adjusted median got slower by more than F "
                          "(0.5 = 1.5x) and the permutation test says p <= --alpha (default: %(default)s)")
    run.add_argument("--alpha", type=float, help="significance level (default: the profile's: 0.05; quick 0.01)")
    run.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, metavar="DIR",
                     help="where workloads are cached and loop filesystems live (default: %(default)s; "
                          "$LAMINA_BENCH_WORK)")
    run.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, metavar="DIR",
                     help="where results, reports and baselines go (default: %(default)s)")
    run.add_argument("--keep", action="store_true",
                     help="keep the loop filesystems mounted after the run for inspection "
                          "(`python -m bench clean` removes them)")
    run.add_argument("--seed", type=int, default=1, help="workload generator seed (default: %(default)s)")
    run.add_argument("--mirror", default="http://deb.debian.org/debian",
                     help="Debian mirror for debootstrap (default: %(default)s)")
    run.add_argument("--timeout", type=float, metavar="S", help="seconds a single task may take")
    run.add_argument("-v", "--verbose", action="store_true", help="print every sample as it comes")

    rep = sub.add_parser("report", help="write the Markdown report and plots of a results file")
    rep.add_argument("results", type=Path, help="results JSON")
    rep.add_argument("--out", type=Path, help="report directory (default: next to the results file)")
    rep.add_argument("--baseline", type=Path, help="results file to compare with in the report")

    cmp_ = sub.add_parser("compare", help="A/B: run two revisions pair by pair and judge paired ratios "
                                          "(--base REV); or compare two results files",
                          description=textwrap.dedent(f"""\
        With --base REV (the gate's way): build REV in its own git worktree and venv (cached
        under $LAMINA_BENCH_REVS, default /var/tmp/lamina-bench/rev-<sha>), then measure it and
        --new (default: this worktree) one right after the other, repetition by repetition, in
        random order per pair, on the same loop filesystems. A cell is a regression when the
        geometric mean of its per-pair ratios new/base is >= 1 + threshold (default
        {paired.DEFAULTS.threshold}) AND a one-sided sign-flip test on the log ratios gives
        p <= alpha (default {paired.DEFAULTS.alpha}); cells with a base median under
        {paired.DEFAULTS.floor * 1e3:g} ms never fail. Writes ab.json, ab.md, ab.png into --out
        (default results/ab/). Exit 1 on a regression, 2 when a side cannot be built.

        With two results files BASE NEW: the older unpaired comparison (each sample divided by
        its in-run reference, exact permutation test), for runs made at different times."""),
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp_.add_argument("base_file", nargs="?", type=Path, metavar="BASE.json")
    cmp_.add_argument("new_file", nargs="?", type=Path, metavar="NEW.json")
    cmp_.add_argument("--base", dest="base_rev", metavar="REV", help="git revision to measure as the base")
    cmp_.add_argument("--new", dest="new_rev", metavar="REV", default="worktree",
                      help="git revision to measure as the new side, or 'worktree' (default)")
    cmp_.add_argument("--profile", choices=sorted(PROFILES), default="quick",
                      help="workloads, drivers and phases of the A/B (default: %(default)s)")
    cmp_.add_argument("--pairs", type=int, default=8, metavar="N",
                      help="repetitions of each side (default: %(default)s; >= 7 for alpha 0.01)")
    cmp_.add_argument("--drivers", type=_csv, metavar="LIST")
    cmp_.add_argument("--workloads", type=_csv, metavar="LIST")
    cmp_.add_argument("--phases", type=_csv, metavar="LIST")
    cmp_.add_argument("--threshold", type=float, help="smallest slowdown that fails (A/B default: "
                                                      f"{paired.DEFAULTS.threshold}; files: 0.5)")
    cmp_.add_argument("--alpha", type=float, help=f"significance level (A/B default: {paired.DEFAULTS.alpha}; "
                                                  "files: 0.05)")
    cmp_.add_argument("--repeats", type=_repeats, metavar="PHASE=K,...", default=None,
                      help="time these phases K times per pair, in turns, judged on the median of the "
                           "per-turn ratios (default: the gate's, "
                           + ",".join(f"{k}={v}" for k, v in GATE_REPEATS.items()) + "; '' for none)")
    cmp_.add_argument("--interleave", choices=("phase", "task"), default="phase",
                      help="how the sides of a pair alternate: phase by phase, both workers alive "
                           "(default), or one whole lifecycle after the other")
    cmp_.add_argument("--out", type=Path, help="report directory")
    cmp_.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, metavar="DIR")
    cmp_.add_argument("--fail-on-regression", action="store_true", help="(files) exit 1 on a regression")
    cmp_.add_argument("-v", "--verbose", action="store_true")

    gate = sub.add_parser("gate", help="CI's gate: A/B of this checkout against HEAD^ on the quick workloads",
                          description=textwrap.dedent("""\
        The A/B compare (see `compare --base`) of this checkout against its first parent on the
        quick profile's workloads, 12 pairs; exit 1 only on a regression that is significant and
        large. Budget: 15 minutes on 2 cores, building the base included. When HEAD has no
        parent or the base cannot be built or run, it prints one line starting
        'bench gate: NOT GATED' and runs the quick profile without a gate instead (exit 0)."""),
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    gate.add_argument("--base", dest="base_rev", default="HEAD^", metavar="REV", help="(default: %(default)s)")
    gate.add_argument("--pairs", type=int, default=None, metavar="N",
                      help="pairs (default: bench.gate.GATE_PAIRS, the number the instrument measured)")
    gate.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, metavar="DIR")
    gate.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, metavar="DIR")
    gate.add_argument("-v", "--verbose", action="store_true")

    hist = sub.add_parser("history", help="plot the headline cells across the committed results of past revisions")
    hist.add_argument("--out", type=Path, default=DEFAULT_RESULTS / "history",
                      help="where history.md and history-*.png go (default: %(default)s)")
    hist.add_argument("--max", type=int, default=50, help="newest N revisions (default: %(default)s)")

    mic = sub.add_parser("micro", help="run the pytest-benchmark micro benchmarks (bench/micro) into a "
                                       "results file")
    mic.add_argument("--into", type=Path, help="results JSON to add them to (default: results/micro.json)")
    mic.add_argument("-k", dest="keyword", help="pytest -k expression to select benchmarks")
    mic.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")

    cl = sub.add_parser("clean", help="unmount and detach what a run left in the work dir")
    cl.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    cl.add_argument("--cache", action="store_true", help="also delete the workload cache")
    cl.add_argument("--revs", action="store_true", help="also delete the A/B revision cache (worktrees, venvs)")

    sub.add_parser("list", help="list profiles, workloads, phases, peers and drivers")
    return ap


def cmd_run(args: argparse.Namespace) -> int:
    from bench.runner import RunConfig, Runner

    p = PROFILES[args.profile]
    over: dict[str, object] = {}
    if args.drivers:
        over["drivers"] = None if args.drivers == ("default",) else args.drivers
    if args.workloads:
        over["workloads"] = args.workloads
    if args.phases:
        bad = [x for x in args.phases if x not in PHASE_NAMES]
        if bad:
            print(f"bench: unknown phase(s): {', '.join(bad)} (known: {', '.join(PHASE_NAMES)})", file=sys.stderr)
            return 2
        over["phases"] = args.phases
    if args.reps is not None:
        if args.reps < 1:
            print("bench: --reps must be >= 1", file=sys.stderr)
            return 2
        over["reps"] = args.reps
    if args.concurrency:
        over["concurrency"] = () if args.concurrency == ("none",) else tuple(int(x) for x in args.concurrency)
    if args.peers:
        from bench.peers import BY_NAME

        chosen = () if args.peers == ("none",) else args.peers
        bad = [x for x in chosen if x not in BY_NAME]
        if bad:
            print(f"bench: unknown peer(s): {', '.join(bad)} (known: {', '.join(BY_NAME)})", file=sys.stderr)
            return 2
        over["peers"] = chosen
    if args.timeout:
        over["task_timeout"] = args.timeout
    if args.workloads:
        from bench import workloads as W

        try:
            for n in args.workloads:
                W.parse(n)
        except W.WorkloadError as e:
            print(f"bench: {e}", file=sys.stderr)
            return 2
        if "concurrency_workload" not in over and p.concurrency_workload not in args.workloads:
            over["concurrency_workload"] = args.workloads[0]
        over["peer_workloads"] = tuple(x for x in p.peer_workloads if x in args.workloads) or args.workloads[:1]
    profile = p.with_(**over)  # type: ignore[arg-type]
    if os.geteuid() != 0:
        print("bench: needs root (loop filesystems, mounts, dropping caches)", file=sys.stderr)
        return 2
    label = args.label or profile.name
    results_dir = args.results_dir
    baseline = args.baseline
    if baseline is None and profile.baseline:
        baseline = results_dir / profile.baseline
    fail = profile.fail_on_regression if args.fail_on_regression is None else args.fail_on_regression
    cfg = RunConfig(profile=profile, label=label, work_dir=args.work_dir, results_dir=results_dir,
                    seed=args.seed, keep=args.keep, baseline=baseline, compare=not args.no_compare,
                    fail_on_regression=fail, threshold=args.threshold,
                    alpha=profile.alpha if args.alpha is None else args.alpha, mirror=args.mirror,
                    explicit_workloads=bool(args.workloads), verbose=args.verbose)
    from bench.runner import BusyError

    try:
        suite = Runner(cfg).run()
    except BusyError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    out_json = results_dir / f"{label}.json"
    suite.save(out_json)
    print(f"bench: results in {out_json}", file=sys.stderr)
    from bench.report import finish

    return finish(cfg, suite, out_json, save_baseline=args.save_baseline)


def cmd_report(args: argparse.Namespace) -> int:
    from bench import compare, report
    from bench import results as R

    suite = R.load(args.results)
    out = args.out or args.results.parent
    comparison = None
    if args.baseline:
        comparison = compare.compare(R.load(args.baseline), suite)
        compare.write(comparison, out, base_name=args.baseline.name, new_name=args.results.name)
    path = report.write_report(suite, out, results_name=os.path.relpath(args.results, out),
                               comparison=comparison, headline=suite.label == "default")
    print(path)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    if args.base_rev:
        if args.base_file or args.new_file:
            print("bench: give either --base REV or two results files, not both", file=sys.stderr)
            return 2
        return _compare_revs(args)
    if not (args.base_file and args.new_file):
        print("bench: compare needs --base REV, or BASE.json NEW.json", file=sys.stderr)
        return 2
    from bench import compare
    from bench import results as R

    try:
        base, new = R.load(args.base_file), R.load(args.new_file)
    except R.ResultsError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    c = compare.compare(base, new, threshold=0.5 if args.threshold is None else args.threshold,
                        alpha=0.05 if args.alpha is None else args.alpha)
    print(compare.table_text(c))
    print(compare.summary_text(c))
    if args.out:
        compare.write(c, args.out, base_name=args.base_file.name, new_name=args.new_file.name)
    return 1 if (args.fail_on_regression and c.regressions) else 0


def _compare_revs(args: argparse.Namespace) -> int:
    from bench import gate

    over: dict[str, object] = {"reps": args.pairs,
                               "repeats": dict(GATE_REPEATS) if args.repeats is None else args.repeats}
    if args.pairs < 1:
        print("bench: --pairs must be >= 1", file=sys.stderr)
        return 2
    if args.drivers:
        over["drivers"] = args.drivers
    if args.workloads:
        over["workloads"] = args.workloads
        over["concurrency_workload"] = args.workloads[0]
    if args.phases:
        bad = [x for x in args.phases if x not in PHASE_NAMES]
        if bad:
            print(f"bench: unknown phase(s): {', '.join(bad)}", file=sys.stderr)
            return 2
        over["phases"] = args.phases
    if os.geteuid() != 0:
        print("bench: needs root (loop filesystems, mounts, dropping caches)", file=sys.stderr)
        return 2
    t = paired.Thresholds(alpha=paired.DEFAULTS.alpha if args.alpha is None else args.alpha,
                          threshold=paired.DEFAULTS.threshold if args.threshold is None else args.threshold)
    profile = PROFILES[args.profile].with_(**over)  # type: ignore[arg-type]
    return gate.compare_revs(args.base_rev, args.new_rev, profile, work_dir=args.work_dir,
                             out_dir=args.out or DEFAULT_RESULTS / "ab", t=t, interleave=args.interleave,
                             verbose=args.verbose)


def cmd_gate(args: argparse.Namespace) -> int:
    from bench import gate

    if os.geteuid() != 0:
        print("bench: needs root (loop filesystems, mounts, dropping caches)", file=sys.stderr)
        return 2
    return gate.gate(base_rev=args.base_rev, work_dir=args.work_dir, results_dir=args.results_dir,
                     pairs=gate.GATE_PAIRS if args.pairs is None else args.pairs, verbose=args.verbose)


def cmd_history(args: argparse.Namespace) -> int:
    from bench import history

    path = history.write(REPO, args.out, newest=args.max)
    print(path)
    return 0


def cmd_micro(args: argparse.Namespace) -> int:
    from bench.micro_runner import run_micro

    into = args.into or DEFAULT_RESULTS / "micro.json"
    return run_micro(into, keyword=args.keyword, extra=args.pytest_args)


def cmd_clean(args: argparse.Namespace) -> int:
    from bench import fs

    errors = fs.sweep(args.work_dir)
    for sub in ("fs", "tasks", "registry"):
        shutil.rmtree(args.work_dir / sub, ignore_errors=True)
    if args.cache:
        shutil.rmtree(args.work_dir / "cache", ignore_errors=True)
    if args.revs:
        from bench import revs

        revs.prune(REPO, keep=0)
    for e in errors:
        print(f"bench: {e}", file=sys.stderr)
    return 1 if errors else 0


def cmd_list(_args: argparse.Namespace) -> int:
    import drivers

    from bench.peers import PEERS

    print("profiles:")
    for n, p in PROFILES.items():
        print(f"  {n:<8} {p.description}")
        print(f"           workloads: {', '.join(p.workloads)}")
    print("phases:")
    print(PHASE_HELP)
    print("peers:")
    for peer in PEERS:
        print(f"  {peer.name:<21} vs {peer.phase:<12} {peer.what}")
    print("drivers (registered; probed on the bench's own filesystems at run time):")
    for d in drivers.names():
        print(f"  {d}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.command is None:
        ap.print_help()
        return 2
    return {"run": cmd_run, "report": cmd_report, "compare": cmd_compare, "micro": cmd_micro,
            "clean": cmd_clean, "list": cmd_list, "gate": cmd_gate, "history": cmd_history}[args.command](args)
