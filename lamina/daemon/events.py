"""``/events``: what happened to containers and images through this daemon, streamed as
Docker's event objects, with ``since``/``until`` and ``filters`` (type, event, container, image,
label).

The log is in memory (the last ``KEEP`` events), as Docker's is: it starts empty with each
daemon. Changes made by ``lamina`` CLI commands on the same root are not seen here.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from lamina.daemon import wire
from lamina.daemon.wire import ApiError

if TYPE_CHECKING:
    from lamina.daemon.context import Daemon

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
