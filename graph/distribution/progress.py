"""Progress of a pull or push, as events a front end renders (the CLI draws per-layer bars on a
terminal and plain lines otherwise; the library draws nothing).

The model is ``docker pull``'s: each *item* (a layer or config blob, named by its digest) moves
through phases, and an event says "item X is now in phase P, at ``current`` of ``total`` bytes".
Pull: ``waiting`` -> ``downloading`` -> ``verifying`` -> ``extracting`` -> ``done``, or
``exists`` when nothing had to be fetched; ``retrying`` when a transfer failed and is tried again.
Push: ``waiting`` -> ``pushing`` -> ``pushed``, or ``exists`` (the registry has it) or
``mounted`` (mounted from another repository). ``failed`` ends an item that did not make it.

A callback receives events from several threads at once (one per layer in flight); it must be
quick and thread-safe. ``Reporter`` wraps one: it serialises calls, throttles byte updates (at
most one per item every ``interval`` seconds, phase changes always pass), and swallows nothing:
an exception from the callback propagates, which aborts the operation, as a broken terminal
should.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

WAITING = "waiting"
DOWNLOADING = "downloading"
VERIFYING = "verifying"
EXTRACTING = "extracting"
DONE = "done"
EXISTS = "exists"
RETRYING = "retrying"
PUSHING = "pushing"
PUSHED = "pushed"
MOUNTED = "mounted"
FAILED = "failed"

PHASES = (WAITING, DOWNLOADING, VERIFYING, EXTRACTING, DONE, EXISTS, RETRYING, PUSHING, PUSHED, MOUNTED, FAILED)
FINAL = frozenset({DONE, EXISTS, PUSHED, MOUNTED, FAILED})


@dataclass(frozen=True)
class Event:
    """Item ``id`` (a blob digest) is in ``phase``; ``current`` of ``total`` bytes (``total``
    None when unknown); ``detail`` is a short human note (the repository mounted from, the error
    that caused a retry)."""

    id: str
    phase: str
    current: int = 0
    total: int | None = None
    detail: str = ""

    @property
    def short_id(self) -> str:
        """The 12 hex digits ``docker pull`` shows for a layer."""
        return self.id.removeprefix("sha256:")[:12]


ProgressFn = Callable[[Event], None]


class Reporter:
    """A thread-safe, throttled front for a ``ProgressFn`` (None: report nothing)."""

    def __init__(self, fn: ProgressFn | None, interval: float = 0.1) -> None:
        self.fn = fn
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str, float]] = {}

    def __call__(self, id: str, phase: str, current: int = 0, total: int | None = None, detail: str = "") -> None:
        if self.fn is None:
            return
        now = time.monotonic()
        with self._lock:
            last = self._last.get(id)
            if last is not None and last[0] == phase and now - last[1] < self.interval and phase not in FINAL:
                return
            self._last[id] = (phase, now)
            self.fn(Event(id, phase, current, total, detail))

    def bytes_fn(self, id: str, phase: str, total: int | None) -> Callable[[int], None]:
        """A callback ``f(current)`` reporting byte progress of one item in one phase."""
        if self.fn is None:
            return _ignore
        return lambda current: self(id, phase, current, total)


def _ignore(_current: int) -> None:
    return None


__all__ = ["DONE", "DOWNLOADING", "EXISTS", "EXTRACTING", "FAILED", "FINAL", "MOUNTED", "PHASES",
           "PUSHED", "PUSHING", "RETRYING", "VERIFYING", "WAITING", "Event", "ProgressFn", "Reporter"]
