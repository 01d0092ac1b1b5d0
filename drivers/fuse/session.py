"""How the fuse driver drives pyfuse3: mounting and serving, and two ways around its limits.

pyfuse3 (over libfuse 3) is what lamina's FUSE filesystem is written against. Two of its choices
cost the union filesystem correctness or speed; both are worked around here, each after checking
that pyfuse3 is what the workaround expects, and each falls back to plain pyfuse3 otherwise (with
a warning in the helper's log):

* ``InodeNumbers``: pyfuse3 reports a node's FUSE id as its inode number. Overlay semantics need
  the two apart (two names of a hard-linked lower file are two nodes with one inode number), so
  the number is written into the ``struct stat`` behind ``EntryAttributes`` directly.
* ``fast_request_loop``: pyfuse3's request loop makes a trio round trip (a lock and an epoll
  wait) before every request, which cost more than serving a small read; the helper's loop now
  blocks in its read of ``/dev/fuse`` directly (2.3x faster reads of a whole tree, see the
  bench).

``serve`` mounts a filesystem and runs the loop until it is unmounted.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import stat
from typing import Awaitable, Callable, Iterable

import pyfuse3
from pyfuse3 import EntryAttributes

log = logging.getLogger("lamina.fuse")


class InodeNumbers:
    """Write the inode number a node reports into an ``EntryAttributes`` without changing its
    FUSE node id (pyfuse3 3.x sets both from ``st_ino``).

    ``EntryAttributes`` is a Cython object: ``PyObject_HEAD``, then libfuse's
    ``struct fuse_entry_param`` (``ino``, ``generation``, ``struct stat attr``, two timeouts),
    then a pointer to that ``attr``. ``check`` verifies this layout on a live object (sizes, the
    pointer, where a value written through ``st_ino`` lands) and ``usable`` says whether it held.
    """

    def __init__(self) -> None:
        self.usable = False
        self.why = ""
        self._offset = 0
        try:
            self._check()
        except Exception as e:  # any surprise: do without
            self.why = f"{type(e).__name__}: {e}"

    def _check(self) -> None:
        head = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)
        st_ino_in_stat = 8  # x86_64 and the generic (aarch64, riscv64) struct stat: after st_dev
        stat_size = {"x86_64": 144, "aarch64": 128, "riscv64": 128}.get(os.uname().machine)
        if stat_size is None:
            raise ValueError(f"unknown struct stat layout on {os.uname().machine}")
        param = 8 + 8 + stat_size + 8 + 8
        if type(EntryAttributes()).__basicsize__ != head + param + ctypes.sizeof(ctypes.c_void_p):
            raise ValueError("EntryAttributes has another size than expected")
        e = EntryAttributes()
        base = id(e)
        magic = 0x5A5A_1234_8765_A5A5
        e.st_ino = magic
        u64 = ctypes.c_uint64
        if u64.from_address(base + head).value != magic:
            raise ValueError("fuse_entry_param.ino not where expected")
        attr = base + head + 16
        if ctypes.c_void_p.from_address(base + head + param).value != attr:
            raise ValueError("attr pointer does not point into fuse_entry_param")
        if u64.from_address(attr + st_ino_in_stat).value != magic:
            raise ValueError("attr.st_ino not where expected")
        self._offset = head + 16 + st_ino_in_stat
        u64.from_address(base + self._offset).value = 7
        if e.st_ino != magic:  # the node id must be untouched
            raise ValueError("writing attr.st_ino changed the node id")
        self.usable = True

    def set(self, e: EntryAttributes, ino: int) -> None:
        ctypes.c_uint64.from_address(id(e) + self._offset).value = ino



def _fuse_fd() -> int:
    """The /dev/fuse fd pyfuse3 opened for its session (pyfuse3 does not export it)."""
    dev = os.stat("/dev/fuse").st_rdev
    found = -1
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.stat(int(name))
        except (OSError, ValueError):
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == dev:
            found = int(name)  # the newest: the session's
    return found


def fast_request_loop() -> bool:
    """Let pyfuse3's request loop read the next request without a trip through trio.

    pyfuse3's loop awaits ``_wait_fuse_readable`` before each request: a trio lock and an epoll
    round trip (``wait_readable``), more than serving a small read costs. The helper serves one
    mount with one worker task and handlers that never wait on trio, so it has nothing else to do
    while no request is queued: the loop may simply block in its read of ``/dev/fuse`` (the fd is
    blocking; unmounting ends the read with ENODEV, which ends the loop). Were the fd
    non-blocking, a zero-timeout ``poll`` skips trio whenever a request is queued instead.
    ``_session_loop`` looks the function up as a module global at each call, so it can be
    replaced. Returns whether it was (the plain loop stays if pyfuse3 is not as expected)."""
    orig: Callable[[], Awaitable[bool]] | None = getattr(pyfuse3, "_wait_fuse_readable", None)
    fd = _fuse_fd()
    if orig is None or fd < 0:
        return False
    if not os.get_blocking(fd):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poll = poller.poll

        async def wait_fuse_readable() -> bool:
            if poll(0):
                return True  # a request is queued (or the fd is dead: the read says which)
            return bool(await orig())
    else:
        async def wait_fuse_readable() -> bool:
            return True  # the read blocks until a request comes, or fails once unmounted

    setattr(pyfuse3, "_wait_fuse_readable", wait_fuse_readable)
    return True


def serve(fs: "pyfuse3.Operations", mountpoint: str, options: Iterable[str],
          on_ready: Callable[[], None] | None = None) -> None:
    """Mount ``fs`` on ``mountpoint`` and serve it until it is unmounted. ``on_ready`` runs once
    the mount exists and the request loop is about to start; if it raises, the mount is taken
    down again and the exception propagates."""
    import trio

    pyfuse3.init(fs, mountpoint, set(options))
    if not fast_request_loop():
        log.warning("pyfuse3's request loop could not be sped up; serving with the plain one")
    try:
        if on_ready is not None:
            on_ready()  # the kernel's INIT waits in /dev/fuse until the loop below reads it
    except BaseException:
        pyfuse3.close(unmount=True)  # nobody wants this mount: take it down again
        raise
    try:
        trio.run(pyfuse3.main, 1, 1)  # one worker task: handlers never wait on trio
    finally:
        pyfuse3.close(unmount=False)  # the loop ends when the mount is gone


__all__ = ["InodeNumbers", "fast_request_loop", "serve"]
