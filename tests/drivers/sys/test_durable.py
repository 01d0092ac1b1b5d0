"""``drivers.sys.durable``: what ``test_sys.py`` leaves out. ``atomic_file`` sets the mode it is
given whatever the umask, never leaves its temporary name behind, and keeps an old file readable
through an open descriptor while it is replaced; ``fsync_dir`` wants a directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drivers.sys.durable import atomic_file, fsync_dir, syncfs


def test_mode_is_set_regardless_of_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        with atomic_file(tmp_path / "shared", 0o644) as f:
            f.write(b"x")
        with atomic_file(tmp_path / "private") as f:  # no mode: the umask decides
            f.write(b"y")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "shared").st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "private").st_mode & 0o777 == 0o600


def test_a_reader_of_the_old_file_keeps_it(tmp_path: Path) -> None:
    target = tmp_path / "doc"
    target.write_bytes(b"old")
    with open(target, "rb") as reader:
        with atomic_file(target) as f:
            f.write(b"new")
        assert reader.read() == b"old"  # replaced by rename: the old inode lives on for its reader
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["doc"]


def test_a_missing_directory_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        with atomic_file(tmp_path / "no" / "doc") as f:
            f.write(b"x")
    assert os.listdir(tmp_path) == []


def test_fsync_dir_and_syncfs_want_real_paths(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "f")
    syncfs(tmp_path / "f")  # any path on the filesystem will do
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")
