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
