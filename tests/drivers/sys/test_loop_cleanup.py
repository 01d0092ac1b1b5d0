"""``drivers.sys.mount.umount_tree`` and ``drivers.sys.loop``'s clean-up (``detach``,
``loop_devices_backed_by``, ``sweep``, ``LoopFS.close``): what a killed run leaves is found and
removed, mounts inside mounts and busy mounts included, and nothing outside the directory is
touched. Real tmpfs mounts and loop devices the test makes; needs root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.sys import loop
from drivers.sys import mount as mountapi

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def _tmpfs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    mountapi.mount("tmpfs", path, "tmpfs", data="size=4m")
    return path


def test_umount_tree_innermost_first_and_busy_ones_lazily(tmp_path: Path) -> None:
    outer = _tmpfs(tmp_path / "tree" / "outer")
    inner = _tmpfs(outer / "a" / "inner")
    _tmpfs(inner / "deeper")
    neighbour = _tmpfs(tmp_path / "neighbour")  # beside the tree: must stay
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=inner)
    try:
        assert len(mountapi.mounts_under(tmp_path / "tree")) == 3
        assert mountapi.umount_tree(tmp_path / "tree", busy_for=0.2) == []
        assert mountapi.mounts_under(tmp_path / "tree") == []
        assert mountapi.is_mount_point(neighbour)
        assert mountapi.umount_tree(tmp_path / "tree") == []  # again: nothing to do
    finally:
        holder.kill()
        holder.wait()
        mountapi.umount_tree(tmp_path)
    assert mountapi.mounts_under(tmp_path) == []


@pytest.mark.skipif(loop.loopfs_skip_reason("ext4") is not None, reason="no loop ext4 here")
def test_sweep_removes_a_killed_runs_loop_filesystem(tmp_path: Path) -> None:
    work = tmp_path / "work"
    fs = loop.make_loop_filesystem(work, "ext4", "64M", mkfs_args=["-L", "swept"])
    try:
        assert fs.describe()["mkfs"].endswith("-L swept") and fs.size == 64 << 20
        _tmpfs(fs.mountpoint / "inner")  # a mount inside the loop filesystem
        assert fs.device in loop.loop_devices_backed_by(work)
        assert loop.loop_devices_backed_by(tmp_path / "elsewhere") == []
        # the process that made it was killed: only the directory is known
        assert loop.sweep(work) == []
        assert mountapi.mounts_under(work) == [] and loop.loop_devices_backed_by(work) == []
        assert loop.leftovers([fs.image], [fs.mountpoint]) == []
        fs.device = None  # freed: its number may be another process's loop device by now
    finally:
        fs.close()
    assert fs.errors == [] and not fs.image.exists()
