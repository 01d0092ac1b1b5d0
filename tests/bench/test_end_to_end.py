"""A whole bench run, tiny: the quick profile on vfs, one repetition, one tiny workload, through
``python -m bench run`` as a user runs it. Checks the results file, the report and plots, and that
nothing stays mounted or attached. Needs root, loop devices and docker-registry (for pull)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench import fs
from bench import results as R

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]

if os.geteuid() != 0 or fs.loopfs_unavailable("ext4"):
    pytest.skip("the bench needs root and loop devices", allow_module_level=True)


def test_quick_profile_on_vfs(tmp_path: Path) -> None:
    work, res = tmp_path / "work", tmp_path / "results"
    argv = [sys.executable, "-m", "bench", "run", "--profile", "quick", "--drivers", "vfs",
            "--workloads", "small-files-40", "--reps", "1", "--concurrency", "1,2", "--label", "e2e",
            "--work-dir", str(work), "--results-dir", str(res), "--no-compare", "--timeout", "240"]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ETA" in p.stderr  # live progress
    suite = R.load(res / "e2e.json")
    assert suite.drivers["vfs"] is None
    assert suite.machine["cpus"] and suite.versions["packages"]["numpy"]
    phases = {c.name: c for c in suite.select("phase", driver="vfs", workload="small-files-40")}
    for name in ("load", "materialise", "create", "mount", "walk", "read", "copy-up", "commit", "remove"):
        assert phases[name].status == "ok" and len(phases[name].samples) == 1, (name, phases[name])
    if shutil.which("docker-registry"):
        assert phases["pull"].status == "ok", phases["pull"]
    assert phases["start"].status == "skipped" and "/bin/true" in phases["start"].reason
    assert suite.cell("roofline", "tar-x", "ext4", "small-files-40").samples
    assert suite.cell("machine", "calib", "ext4").samples
    assert suite.cell("series", "concurrent", "vfs", "small-files-40", 2).samples
    assert suite.workloads["small-files-40"]["fingerprints"]["vfs"]
    assert not [n for n in suite.notes if "MISMATCH" in n or "left mounts" in n]
    report = (res / "e2e" / "report.md").read_text()
    assert "| materialise | vfs |" in report
    assert (res / "e2e" / "phases-small-files-40.png").stat().st_size > 1000
    json.loads((res / "e2e.json").read_text())
    assert not fs.mounts_under(tmp_path)
    assert not fs.loop_devices_backed_by(tmp_path)


def test_ab_compare_of_head_against_itself(tmp_path: Path) -> None:
    """``python -m bench compare --base HEAD``: HEAD built in its own worktree and venv (pip, with
    pip's cache), both sides run pair by pair by this runner, each importing its own lamina."""
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    work, out, cache = tmp_path / "work", tmp_path / "ab", tmp_path / "revs"
    argv = [sys.executable, "-m", "bench", "compare", "--base", "HEAD", "--pairs", "3", "--drivers", "vfs",
            "--workloads", "small-files-40", "--phases", "materialise,create,mount,remove",
            "--repeats", "materialise=3,remove=2", "--work-dir", str(work), "--out", str(out)]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=900,
                           env=dict(os.environ, LAMINA_BENCH_REVS=str(cache)))
        _check_ab(p, out, cache, tmp_path)
    finally:
        from bench import revs

        revs.prune(REPO, cache, keep=0)  # its worktree is registered in this repository
    assert not list(cache.glob("rev-*/"))


def _check_ab(p: "subprocess.CompletedProcess[str]", out: Path, cache: Path, tmp_path: Path) -> None:
    from bench import ab

    assert p.returncode in (0, 1), p.stderr[-3000:]  # 1 would be a (chance) regression: not asserted on
    run = ab.load(out / "ab.json")
    base, new = run.sides
    assert base.python.startswith(str(cache)) and new.python == sys.executable
    assert run.task_log and all(t["ok"] for t in run.task_log), run.task_log
    assert {t["side"] for t in run.task_log} == {"base", "new"}
    # pairs: each repetition of each task has one run per side, back to back
    log = run.task_log
    assert len(log) == 3 * 2 * 2  # 3 repetitions x (lifecycle, concurrent) x 2 sides
    for i in range(0, len(log), 2):
        a, b = log[i], log[i + 1]
        assert (a["rep"], a["kind"]) == (b["rep"], b["kind"]) and {a["side"], b["side"]} == {"base", "new"}
    # lifecycles interleaved phase by phase (the default): both workers of a pair started together
    # and handed the token back at each of the 4 phases asked for, materialise 3 times, remove twice
    lifecycles = [t for t in log if t["kind"] == "lifecycle"]
    for t in lifecycles:
        assert t["interleave"] == "phase" and t["turns"] == 4 + 2 + 1, t
    # the two store roots change hands from pair to pair
    roots = {(t["rep"], t["side"]): t["root"] for t in lifecycles}
    for rep in range(3):
        assert roots[rep, "base"] != roots[rep, "new"]
        if rep:
            assert roots[rep, "base"] == roots[rep - 1, "new"], roots
    # each repetition's materialise sample is the median of its 3 timings, all of them kept
    for suite in run.suites.values():
        c = suite.cell("phase", "materialise", "vfs", "small-files-40")
        assert c is not None and sorted(c.extra["repeats"]) == ["0", "1", "2"]
        for rep, x in zip(c.reps, c.samples):
            assert len(c.extra["repeats"][str(rep)]) == 3 and x == pytest.approx(sorted(c.extra["repeats"][str(rep)])[1])
        c = suite.cell("phase", "remove", "vfs", "small-files-40")
        assert c is not None and all(len(c.extra["repeats"][str(rep)]) == 2 for rep in c.reps)
        for rep, x in zip(c.reps, c.samples):
            assert x == pytest.approx(statistics.median(c.extra["repeats"][str(rep)]))
    assert all("interleave" not in t for t in log if t["kind"] == "concurrent")
    rows = run.rows()
    mat = next(r for r in rows if r.label == "materialise / vfs / small-files-40")
    assert mat.result is not None and mat.result.n == 3
    md = (out / "ab.md").read_text()
    assert md.startswith("# A/B:") and ("**PASS.**" in md or "**FAIL" in md)
    assert (out / "ab.png").stat().st_size > 1000
    assert (cache / f"rev-{base.commit}" / "ready.json").exists()
    assert not fs.mounts_under(tmp_path)
    assert not fs.loop_devices_backed_by(tmp_path)
