"""Durable writes: the syncs that make "visible only after its data is synced" true. Shared by
drivers, graph and the CLI (one copy of each; ``tests/test_architecture.py`` keeps it so)."""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import IO, Iterator

from drivers.sys.libc import check, libc

libc.syncfs.argtypes = [ctypes.c_int]
libc.syncfs.restype = ctypes.c_int


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush the whole filesystem holding ``path`` (syncfs(2)).

    One syncfs after a layer is applied is far cheaper than an fsync per file, and it is what
    makes "a layer becomes visible only after its data is synced" true before the metadata
    transaction commits.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(libc.syncfs(fd), "syncfs", path)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_sync_file_range = getattr(libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    _sync_file_range.restype = ctypes.c_int


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """``sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)``: start writeback of the
    range, do not wait. Where libc lacks it this does nothing. Errors are ignored: this only
    moves work earlier, an fsync still follows."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[IO[bytes]]:
    """A file that appears at ``path`` only when the block completes: written under a temporary
    name in the same directory, fsynced, renamed over ``path``, the directory fsynced; ``mode``
    (if given) is set regardless of the umask. On any exception the temporary file is removed and ``path`` is left as it was."""
    target = os.path.abspath(path)
    directory, name = os.path.split(target)
    tmp = os.path.join(directory, f".{name}.lamina-{os.getpid()}.tmp")
    f = open(tmp, "xb")
    try:
        yield f
        f.flush()
        if mode is not None:
            os.fchmod(f.fileno(), mode)
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, target)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)
