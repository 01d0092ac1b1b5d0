"""Durable writes: the syncs that make "visible only after its data is synced" true. Shared by
drivers, graph and the CLI (one copy of each; ``tests/test_architecture.py`` keeps it so)."""

from __future__ import annotations

import contextlib
import os
from typing import IO, Any, Iterator

# ``libc`` (the one handle of ``drivers.sys.libc``, with syncfs's and sync_file_range's argument
# types set) is a module global made on first use: ctypes costs milliseconds to import and
# ``lamina images``, whose store imports this module, syncs nothing. ``syncfs`` looks the global
# up at each call, so a test may replace it (tests/powercut/lamina_main.py observes syncfs so).
_sync_file_range: Any = None


def _libc() -> Any:
    g = globals()
    if "libc" not in g:
        import ctypes

        from drivers.sys.libc import libc

        libc.syncfs.argtypes = [ctypes.c_int]
        libc.syncfs.restype = ctypes.c_int
        sfr = getattr(libc, "sync_file_range", None)
        if sfr is not None:
            sfr.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            sfr.restype = ctypes.c_int
        g["_sync_file_range"] = sfr if sfr is not None else False
        g["libc"] = libc
    return g["libc"]


def __getattr__(name: str) -> Any:  # PEP 562: ``durable.libc`` before any sync made it
    if name == "libc":
        return _libc()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush the whole filesystem holding ``path`` (syncfs(2)).

    One syncfs after a layer is applied is far cheaper than an fsync per file, and it is what
    makes "a layer becomes visible only after its data is synced" true before the metadata
    transaction commits.
    """
    from drivers.sys.libc import check

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(_libc().syncfs(fd), "syncfs", path)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """``sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)``: start writeback of the
    range, do not wait. Where libc lacks it this does nothing. Errors are ignored: this only
    moves work earlier, an fsync still follows."""
    if _sync_file_range is None:
        _libc()
    if _sync_file_range:  # False where libc lacks it
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
