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


def start_time(pid: int | str = "self") -> int | None:
    """When ``pid`` started (clock ticks after boot, ``/proc/<pid>/stat`` field 22), or None if
    there is no such process or it has ended (a zombie waiting for its parent). With the pid it
    names one process for good: a pid the kernel hands out again later has another start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ")": split after the last
    fields = stat[stat.rfind(b")") + 2:].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None
