"""Durability helpers shared by drivers and the store."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    import ctypes

_libc: "ctypes.CDLL | None" = None


def _c() -> "ctypes.CDLL":
    """libc, loaded on first use. Not through ``ctypes.util.find_library``: on Linux that runs
    ``ldconfig -p`` in a subprocess (and imports shutil, subprocess, tempfile), on every start of
    every command that imports the store. The interpreter itself links libc, so ``CDLL(None)``
    (dlopen of the main program) resolves its symbols."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush the whole filesystem holding ``path`` (syncfs(2)).

    One syncfs after a layer is applied is far cheaper than an fsync per file, and it is what
    makes "a layer becomes visible only after its data is synced" true before the metadata
    transaction commits.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _c().syncfs(fd) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
