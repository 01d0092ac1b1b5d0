"""``drivers.sys.libc``: the one C-library handle. ``check`` turns a failing call into the
``OSError`` Python would raise; ``renameat2``'s third mode, ``RENAME_WHITEOUT``, leaves the
overlay whiteout (a 0/0 character device) behind."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from drivers.sys.libc import RENAME_WHITEOUT, check, libc, renameat2


def test_check_passes_results_and_raises_the_errno(tmp_path: Path) -> None:
    assert check(0, "x") == 0 and check(7, "x") == 7
    ret = libc.rmdir(os.fsencode(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError) as ei:
        check(ret, "rmdir", tmp_path / "missing")
    assert ei.value.errno == errno.ENOENT and ei.value.filename == str(tmp_path / "missing")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").touch()
    ret = libc.rmdir(os.fsencode(tmp_path / "full"))
    with pytest.raises(OSError) as ei:
        check(ret, "rmdir")
    assert ei.value.errno == errno.ENOTEMPTY and ei.value.filename == "rmdir"  # no path: the call's name


@pytest.mark.skipif(os.geteuid() != 0, reason="a whiteout is a device node: needs CAP_MKNOD")
def test_rename_whiteout_leaves_an_overlay_whiteout(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("A")
    renameat2(tmp_path / "a", tmp_path / "b", RENAME_WHITEOUT)
    st = os.lstat(tmp_path / "a")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert (tmp_path / "b").read_text() == "A"
    with pytest.raises(FileNotFoundError) as ei:
        renameat2(tmp_path / "nosuch", tmp_path / "c", RENAME_WHITEOUT)
    assert ei.value.filename == str(tmp_path / "c")  # named after the target, as documented
