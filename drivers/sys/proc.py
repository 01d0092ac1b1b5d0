"""Process liveness: the one test behind every "does its owner still live?" of the store
(pending rows, leases, volume operations)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True when ``pid`` names a live process (ours included). EPERM means it exists under
    another user: alive. A reused pid reads as alive, which only delays a clean-up, never
    makes one wrong."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
