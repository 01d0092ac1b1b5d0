"""``lamina`` as the power-cut trials run it: the real CLI, with its one syncfs path made visible
to the simulator.

``syncfs(2)`` on a FUSE mount reaches the server as nothing at all (the kernel sends FUSE_SYNCFS
only to virtiofs; pyfuse3 could not receive it anyway), so the simulator cannot see it. Every
syncfs lamina makes goes through ``drivers.sys.durable.syncfs`` (``GraphDriver.sync`` of the
drivers here calls it), which looks up the module global ``drivers.sys.durable.libc`` (the one
handle of ``drivers.sys.libc``) at call time; ``tests/powercut/test_simfs.py`` checks that nothing
else in lamina calls syncfs or sync. This wrapper replaces durable's name for that handle with
one whose ``syncfs`` makes the real call and then tells the simulator, through an extended
attribute set on the same file descriptor: one FUSE request, ordered after every write the
process made before. Everything else (every other function of the shared handle, and every other
module's use of it) is unchanged.
"""

from __future__ import annotations

import os
import sys
from typing import Any

SYNCFS_XATTR = "user.powercut.syncfs"


class _ObservedLibc:
    def __init__(self, real: Any, dev: int) -> None:
        self._real = real
        self._dev = dev

    def syncfs(self, fd: int) -> int:
        rc = int(self._real.syncfs(fd))
        if rc == 0 and os.fstat(fd).st_dev == self._dev:
            os.setxattr(fd, SYNCFS_XATTR, b"1")
        return rc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def install(dev: int) -> None:
    from drivers.sys import durable

    if not isinstance(durable.libc, _ObservedLibc):
        durable.libc = _ObservedLibc(durable.libc, dev)  # type: ignore[assignment]


if __name__ == "__main__":
    install(int(os.environ["POWERCUT_DEV"]))
    from lamina.cli.main import main

    sys.exit(main(sys.argv[1:]))
