"""Loop filesystems for tests: the fixtures ``loop_btrfs`` / ``loop_ext4`` and ``btrfs_home``
over the one implementation, ``drivers.sys.loop`` (whose names are re-exported here for the
tests that import them from this module)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import pytest

from drivers.sys.loop import (LoopFS, leftovers, loop_filesystem, loopfs_skip_reason,  # noqa: F401
                              make_loop_filesystem, parse_size)


@contextlib.contextmanager
def btrfs_home(tmp_path: Path, size: str = "2G") -> Iterator[Path]:
    """A driver home on a fresh loop btrfs (``<mount>/home``, not the mount point itself, so a
    check for "nothing mounted under the home" stays meaningful); torn down and checked clean
    afterwards. Fits ``tests/drivers/conftest.py``'s ``HOME_PROVIDERS``."""
    reason = loopfs_skip_reason("btrfs")
    if reason:
        pytest.skip(reason)
    fs = make_loop_filesystem(Path(tmp_path) / "loopfs-home", "btrfs", size)
    try:
        yield fs.mountpoint / "home"
    finally:
        fs.close()
    left = leftovers([fs.image], [fs.mountpoint])
    assert not left, f"loop btrfs left behind: {left}"


def _fixture(fstype: str, size: str) -> object:
    @pytest.fixture
    def fixture(tmp_path: Path) -> Iterator[LoopFS]:
        reason = loopfs_skip_reason(fstype)
        if reason:
            pytest.skip(reason)
        fs = make_loop_filesystem(tmp_path / "loopfs", fstype, size)
        image, mountpoint = fs.image, fs.mountpoint
        try:
            yield fs
        finally:
            fs.close()
        left = leftovers([image], [mountpoint])
        assert not left, f"loop filesystem left behind: {left}"

    return fixture


loop_btrfs = _fixture("btrfs", "1G")
"""A fresh 1 GiB (sparse) btrfs, torn down and checked clean afterwards."""

loop_ext4 = _fixture("ext4", "256M")
"""A fresh 256 MiB (sparse) ext4 with a journal, torn down and checked clean afterwards."""
