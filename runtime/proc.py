"""Processes by identity: a pid with its start time, which pid reuse cannot fake.

``state.json`` records a monitor as (pid, start time); everything that asks "is it still that
process?" asks here (``start_time`` is the bottom layer's, ``drivers.sys.proc``)."""

from __future__ import annotations

import time

from drivers.sys.proc import start_time

__all__ = ["start_time", "wait_gone"]


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has ended (or is a zombie); True if it did within ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if start_time(pid) is None:
            return True
        time.sleep(0.01)
    return start_time(pid) is None
