"""A whole bench run, tiny: the quick profile on vfs, one repetition, one tiny workload, through
``python -m bench run`` as a user runs it. Checks the results file, the report and plots, and that
nothing stays mounted or attached. Needs root, loop devices and docker-registry (for pull)."""

from __future__ import annotations

import json
import os
import shutil
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
