"""Network namespaces as files: lamina makes a container's namespace before the container
exists, binds it to ``<root>/runtime/network/<id>.netns`` and names that path in the bundle's
``linux.namespaces`` (so the runtime joins it and the container's first instruction already
sees its interfaces, addresses and routes), and destroys it by unmounting the file.

Why lamina and not the runtime makes it: the links can then be set up before the process
starts, with no race against a program that reads its interfaces at start, and without asking
the runtime for a pid; and a crash leaves a file, which the next sweep finds and unmounts.

Made in this process (``unshare`` + a bind mount of ``/proc/thread-self/ns/net`` + ``setns``
back: three syscalls, under a millisecond), not by ``ip netns add``, which would put the file
in ``/run/netns``, outside the store's root. ``entered`` runs a block (and the programs it
starts) inside a namespace; only the calling thread moves.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from typing import Any

from graph import LaminaError

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2

_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _fail(what: str) -> LaminaError:
    err = ctypes.get_errno()
    return LaminaError(f"{what}: {os.strerror(err)}")


def _go_back(libc: Any, fd: int) -> None:
    if libc.setns(fd, CLONE_NEWNET) != 0:
        # staying in another namespace would put every later link in the wrong place
        os.write(2, f"lamina: cannot return to the original network namespace: "
                    f"{os.strerror(ctypes.get_errno())}\n".encode())
        os._exit(70)


def create(path: str) -> None:
    """A new, empty network namespace (only ``lo``, down) bound to ``path``.
    Raises LaminaError; on failure nothing is left at ``path``."""
    libc = _lib()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            if libc.unshare(CLONE_NEWNET) != 0:
                raise _fail("unshare(CLONE_NEWNET)")
            try:
                if libc.mount(b"/proc/thread-self/ns/net", path.encode(), None, MS_BIND, None) != 0:
                    raise _fail(f"bind the network namespace to {path}")
            finally:
                _go_back(libc, back)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
    finally:
        os.close(back)


def is_bound(path: str) -> bool:
    """Whether ``path`` is a live namespace file (an nsfs bind mount), not a plain file left
    by a crash between the create and the mount."""
    try:  # an nsfs file lives on the nsfs device, the one /proc/self/ns/net is on
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def remove(path: str) -> None:
    """Unmount and delete a namespace file (the namespace, and every veth inside it with its
    peer, goes when nothing else holds it). No-op if missing."""
    libc = _lib()
    if os.path.lexists(path):
        if libc.umount2(path.encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (22, 2):  # EINVAL: not mounted
            raise _fail(f"unmount {path}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the block with this thread in the namespace at ``path``; programs started in the
    block start there too."""
    libc = _lib()
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise _fail(f"enter network namespace {path}")
        try:
            yield
        finally:
            _go_back(libc, back)
    finally:
        os.close(target)
        os.close(back)
