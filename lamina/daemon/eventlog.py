"""The daemon's in-memory event log: the last ``KEEP`` events and live subscribers (``/events``
in ``events`` reads it; every API group writes it)."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any

KEEP = 1024


class EventLog:
    """Recent events and live subscribers; ``emit`` may be called from any thread."""

    def __init__(self) -> None:
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=KEEP)
        self._subs: set[asyncio.Queue[dict[str, Any]]] = set()
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def listeners(self) -> int:
        return len(self._subs)

    def emit(self, type_: str, action: str, id_: str, attributes: dict[str, str] | None = None) -> None:
        now = time.time_ns()
        ev: dict[str, Any] = {
            "Type": type_, "Action": action,
            "Actor": {"ID": id_, "Attributes": dict(attributes or {})},
            "scope": "local", "time": now // 1_000_000_000, "timeNano": now,
        }
        if type_ in ("container", "image"):  # the old fields, which docker-py still reads
            ev["status"], ev["id"] = action, id_
            if type_ == "container" and attributes and "image" in attributes:
                ev["from"] = attributes["image"]
        with self._lock:
            self.recent.append(ev)
            subs = list(self._subs)
        loop = self.loop
        if loop is None:
            return
        for q in subs:
            loop.call_soon_threadsafe(q.put_nowait, ev)

    def subscribe(self) -> tuple[list[dict[str, Any]], asyncio.Queue[dict[str, Any]]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        with self._lock:
            self._subs.add(q)
            return list(self.recent), q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._subs.discard(q)
