"""``/events``: what happened to containers and images through this daemon, streamed as
Docker's event objects, with ``since``/``until`` and ``filters`` (type, event, container, image,
label).

The log is in memory (the last ``KEEP`` events), as Docker's is: it starts empty with each
daemon. Changes made by ``lamina`` CLI commands on the same root are not seen here.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from lamina.daemon import wire
from lamina.daemon.wire import ApiError

if TYPE_CHECKING:
    from lamina.daemon.server import Daemon

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


def _timestamp(request: web.Request, name: str) -> float | None:
    v = request.query.get(name)
    if not v:
        return None
    try:
        return float(v)
    except ValueError:
        pass
    try:
        from datetime import datetime

        return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError(400, f"invalid {name} value {v!r}: want a Unix timestamp or RFC 3339 time") from None


def _matches(ev: dict[str, Any], flt: dict[str, list[str]]) -> bool:
    actor = ev["Actor"]
    attrs = actor.get("Attributes") or {}
    for key, wanted in flt.items():
        if not wanted:
            continue
        if key == "type" and ev["Type"] not in wanted:
            return False
        if key == "event" and ev["Action"] not in wanted and ev["Action"].split(":")[0] not in wanted:
            return False
        if key == "container" and (ev["Type"] != "container" or not any(
                w == actor["ID"] or actor["ID"].startswith(w) or w == attrs.get("name") for w in wanted)):
            return False
        if key == "image":
            img = attrs.get("image", actor["ID"] if ev["Type"] == "image" else "")
            if not any(w in (img, actor["ID"], attrs.get("name")) for w in wanted):
                return False
        if key == "label":
            for w in wanted:
                k, eq, v = w.partition("=")
                if k not in attrs or (eq and attrs[k] != v):
                    return False
    return True


async def events(d: "Daemon", request: web.Request) -> web.StreamResponse:
    since = _timestamp(request, "since")
    until = _timestamp(request, "until")
    flt = wire.filters(request)
    wire.check_filters(flt, {"type", "event", "container", "image", "label", "daemon", "scope"})
    flt.pop("daemon", None)
    flt.pop("scope", None)
    past, q = d.events.subscribe()
    try:
        resp = await wire.stream(request)

        async def send(ev: dict[str, Any]) -> None:
            await resp.write(json.dumps(ev).encode() + b"\n")

        for ev in past:
            t = ev["timeNano"] / 1e9
            if since is not None and t >= since and (until is None or t <= until) and _matches(ev, flt):
                await send(ev)
        while True:
            timeout = None if until is None else until - time.time()
            if timeout is not None and timeout <= 0:
                break
            try:
                ev = await asyncio.wait_for(q.get(), timeout)
            except asyncio.TimeoutError:
                break
            if until is not None and ev["timeNano"] / 1e9 > until:
                break
            if _matches(ev, flt):
                await send(ev)
        await resp.write_eof()
        return resp
    finally:
        d.events.unsubscribe(q)


ROUTES = [("GET", r"/events", events)]
