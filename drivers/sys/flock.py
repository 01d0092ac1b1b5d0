"""flock(2) on a lock file that is never removed, as a context manager: the one lock helper of
drivers, graph and runtime.

Closing the descriptor drops the lock, so a crashed holder never leaves a lock behind. A lock
file that its holder unlinks needs more care (a waiter may wake holding a removed file): the
content store's ``_lock`` does that and is not this.
"""

from __future__ import annotations

import fcntl
import os


class Flock:
    """``with Flock(path) as lock:`` an exclusive lock, waiting for it.

    ``shared=True`` takes a shared lock; ``wait=False`` does not wait: ``lock.acquired`` is then
    False when another process holds it (and the block runs without the lock). The lock file is
    created with ``mode`` if missing; a directory is locked through an ``O_DIRECTORY`` fd.
    """

    def __init__(self, path: str | os.PathLike[str], *, shared: bool = False, wait: bool = True,
                 mode: int = 0o600) -> None:
        self.path = path
        self.op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        self.mode = mode
        self.fd = -1
        self.acquired = False

    def __enter__(self) -> "Flock":
        if os.path.isdir(self.path):
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.mode)
        try:
            fcntl.flock(self.fd, self.op)
            self.acquired = True
        except BlockingIOError:
            self.acquired = False
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the lock
        self.fd = -1
        self.acquired = False
