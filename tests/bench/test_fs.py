"""bench.fs: the bench's own loop filesystems are always torn down, and a killed run's leftovers
are swept. Needs root and loop devices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import fs

pytestmark = pytest.mark.integration

if fs.loopfs_unavailable("ext4"):
    pytest.skip(f"loop ext4: {fs.loopfs_unavailable('ext4')}", allow_module_level=True)


def test_loop_ext4_has_a_journal_and_goes_away(tmp_path: Path) -> None:
    with fs.loop_filesystem(tmp_path, "ext4", 64 << 20, "e") as lfs:
        assert fs.is_mounted(lfs.mountpoint)
        assert fs.fstype_of(lfs.mountpoint) == "ext4"
        (lfs.mountpoint / "f").write_text("x")
        assert lfs.device and lfs.device in fs.loop_devices_backed_by(tmp_path)
        import subprocess

        out = subprocess.run(["dumpe2fs", "-h", lfs.device], capture_output=True, text=True).stdout
        assert "has_journal" in out
    assert not fs.mounts_under(tmp_path)
    assert not fs.loop_devices_backed_by(tmp_path)
    assert not (tmp_path / "e.img").exists()


def test_torn_down_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with fs.loop_filesystem(tmp_path, "ext4", 64 << 20, "e"):
            raise RuntimeError("boom")
    assert not fs.mounts_under(tmp_path) and not fs.loop_devices_backed_by(tmp_path)


def test_sweep_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    lfs = fs.make_loopfs(tmp_path, "ext4", 64 << 20, "left")
    inner = lfs.mountpoint / "inner"
    inner.mkdir()
    os.system(f"mount -t tmpfs tmpfs {inner}")
    try:
        assert len(fs.mounts_under(tmp_path)) == 2
        assert fs.sweep(tmp_path) == []
        assert not fs.mounts_under(tmp_path) and not fs.loop_devices_backed_by(tmp_path)
    finally:
        lfs.close()


def test_drop_caches_reports_its_method(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 4096)
    assert fs.drop_caches([tmp_path]) in ("drop_caches=3", "fadvise")


BASE = "714c715"  # main before drivers.sys grew umount_tree/detach/sweep (bench/fs.py's docstring)


def test_worker_side_runs_with_an_older_bases_drivers(tmp_path: Path) -> None:
    """An A/B worker imports this checkout's ``bench.fs`` with the measured base's ``drivers``:
    the functions a worker calls must work with a base's ``drivers.sys`` (here ``BASE``'s)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    if subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{BASE}^{{commit}}"],
                      capture_output=True).returncode != 0:
        pytest.skip(f"no git history with {BASE} here")
    base = tmp_path / "base"
    base.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", BASE, "drivers"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
    tree = tmp_path / "store"
    (tree / "mnt").mkdir(parents=True)
    (tree / "f").write_bytes(b"x" * 5000)
    script = f"""
import os, subprocess, sys
sys.path[:0] = [{str(base)!r}, {str(repo)!r}]
import drivers.sys.mount
assert drivers.sys.mount.__file__.startswith({str(base)!r}), drivers.sys.mount.__file__
assert not hasattr(drivers.sys.mount, "umount_tree")
from bench import fs
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", {str(tree / "mnt")!r}], check=True)
assert fs.mounts_under({str(tree)!r}) == [{str(tree / "mnt")!r}] and fs.is_mounted({str(tree / "mnt")!r})
assert fs.fstype_of({str(tree / "mnt")!r}) == "tmpfs"
assert fs.warm([{str(tree)!r}]) == 5000
fs.syncfs({str(tree)!r})
assert fs.drop_caches([{str(tree)!r}]) in ("drop_caches=3", "fadvise")
fs.rmtree({str(tree)!r})
assert not os.path.exists({str(tree)!r}) and fs.mounts_under({str(tmp_path)!r}) == []
print("ok")
"""
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
        assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    finally:
        subprocess.run(["umount", "-l", str(tree / "mnt")], capture_output=True)
