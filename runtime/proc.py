"""Processes by identity: a pid with its start time, which pid reuse cannot fake.

``state.json`` records a monitor as (pid, start time); everything that asks "is it still that
process?" asks here."""

from __future__ import annotations

import time


def start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), None if
    it does not exist or is a zombie: with its pid, an identity that pid reuse cannot fake."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    if not rest or rest[0] == b"Z":
        return None
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has ended (or is a zombie); True if it did within ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if start_time(pid) is None:
            return True
        time.sleep(0.01)
    return start_time(pid) is None
