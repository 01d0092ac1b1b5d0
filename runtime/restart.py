"""Restart policies, run by the container's monitor (Docker's ``--restart``): ``no``,
``on-failure[:N]`` (restart after a non-zero exit, at most N times), ``always`` and
``unless-stopped`` (restart whatever the exit; lamina has no daemon that restarts at boot, so
the two behave alike). ``stop`` (and ``rm -f``) end them: the CLI leaves a marker file in the
container's directory before it signals the container, and the monitor does not restart a
container that was asked to stop.

Back-off as Docker's restart manager (moby ``restartmanager``): 100 ms before the first restart,
doubling each time up to one minute, back to 100 ms once a run has lasted 10 s. While waiting,
the container is ``Restarting`` (``state.json``, written by the monitor under the directory's
lock; ``RestartCount`` counts the restarts of this start)."""

from __future__ import annotations

import os
import time

from runtime.paths import Paths, locked
from runtime.state import Exit, read_state, write_state

POLICIES = ("no", "on-failure", "always", "unless-stopped")
BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
RESET_AFTER = 10.0
STOP_MARKER = "stop-requested"
POLL = 0.02


def stop_marker(p: Paths) -> str:
    return os.path.join(p.dir, STOP_MARKER)


def request_stop(p: Paths) -> None:
    """Tell the monitor that the next exit is wanted (no restart). Idempotent."""
    with open(stop_marker(p), "w", encoding="utf-8"):
        pass


def stop_requested(p: Paths) -> bool:
    return os.path.exists(stop_marker(p))


class Policy:
    """A restart policy with the back-off state of one monitor."""

    def __init__(self, name: str, max_retries: int = 0) -> None:
        self.name = name or "no"
        self.max_retries = max_retries
        self.timeout = 0.0

    def should_restart(self, code: int, restarts: int, stopped: bool) -> bool:
        if stopped or self.name == "no":
            return False
        if self.name == "on-failure":
            return code != 0 and (self.max_retries <= 0 or restarts < self.max_retries)
        return True  # always, unless-stopped

    def delay(self, restarts: int, ran_for: float) -> float:
        """Seconds to wait before restart number ``restarts``."""
        del restarts
        if ran_for >= RESET_AFTER:
            self.timeout = 0.0
        self.timeout = BACKOFF_START if self.timeout == 0 else min(BACKOFF_MAX, self.timeout * 2)
        return self.timeout


def wait_backoff(p: Paths, seconds: float) -> bool:
    """Wait ``seconds`` (marked Restarting); False if a stop was asked meanwhile."""
    with locked(p):
        st = read_state(p, "running")
        st.Restarting = True
        st.Pid = 0
        write_state(p, st)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if stop_requested(p):
            return False
        time.sleep(min(POLL, max(0.0, end - time.monotonic())))
    return not stop_requested(p)


def record_restart(p: Paths, count: int, ex: Exit) -> None:
    """Before restart number ``count``: the count and the last exit, as Docker shows them."""
    with locked(p):
        st = read_state(p, "running")
        st.RestartCount = count
        st.ExitCode = ex.code
        st.FinishedAt = ex.finished_ns
        write_state(p, st)


def record_started(p: Paths, pid: int) -> None:
    """A restarted container runs: its new init and start time."""
    with locked(p):
        st = read_state(p, "running")
        st.Restarting = False
        st.Pid = pid
        st.StartedAt = time.time_ns()
        write_state(p, st)
