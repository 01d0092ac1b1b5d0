"""Network endpoints through ``runtime.network.api`` (what ``lamina network`` calls): list,
inspect, create, remove, prune, connect, disconnect; and ``/build/prune``, which ``docker system
prune`` calls (lamina has no build cache: nothing to reclaim)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from lamina.daemon import wire
from lamina.daemon.wire import ApiError

if TYPE_CHECKING:
    from graph import Store
    from lamina.daemon.context import Daemon


def _list(store: "Store", flt: dict[str, list[str]]) -> list[dict[str, Any]]:
    from runtime.network import api

    out = []
    for net in api.list_networks(store):
        if flt.get("name") and not any(w in net.name for w in flt["name"]):
            continue
        if flt.get("id") and not any(net.id.startswith(w) for w in flt["id"]):
            continue
        if flt.get("driver") and net.driver not in flt["driver"]:
            continue
        out.append(api.inspect_network(store, net.id))
    return out


async def list_(d: "Daemon", request: web.Request) -> web.StreamResponse:
    flt = wire.filters(request)
    wire.check_filters(flt, {"name", "id", "driver", "label", "scope", "type", "dangling"})
    return wire.json_response(await d.call(_list, flt))


async def inspect(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    from runtime.network import api

    return wire.json_response(await d.call(api.inspect_network, id))


async def create(d: "Daemon", request: web.Request) -> web.StreamResponse:
    from runtime.network import api

    body = await wire.json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("Name"), str):
        raise ApiError(400, "network create: Name is required")
    ipam = (body.get("IPAM") or {}).get("Config") or [{}]
    first = ipam[0] if isinstance(ipam, list) and ipam else {}

    def do(store: "Store") -> str:
        net = api.create_network(store, body["Name"], driver=str(body.get("Driver") or "bridge"),
                                 subnet=first.get("Subnet"), gateway=first.get("Gateway"),
                                 internal=bool(body.get("Internal")), options=body.get("Options") or {},
                                 labels=body.get("Labels") or {})
        return net.id

    nid = await d.call(do)
    d.events.emit("network", "create", nid, {"name": body["Name"]})
    return wire.json_response({"Id": nid, "Warning": ""}, 201)


async def remove(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    from runtime.network import api

    net = await d.call(api.remove_network, id)
    d.events.emit("network", "destroy", net.id, {"name": net.name})
    return wire.no_content(204)


async def prune(d: "Daemon", request: web.Request) -> web.StreamResponse:
    from runtime.network import api

    gone = await d.call(api.prune_networks)
    return wire.json_response({"NetworksDeleted": gone or None})


async def connect(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    from runtime.network import api

    body = await wire.json_body(request)
    if not isinstance(body, dict) or not body.get("Container"):
        raise ApiError(400, "Container is required")
    ep = body.get("EndpointConfig") or {}
    ip = ((ep.get("IPAMConfig") or {}).get("IPv4Address")) or None
    await d.call(lambda s: api.connect(s, id, str(body["Container"]), aliases=list(ep.get("Aliases") or []), ip=ip))
    return wire.no_content(200)


async def disconnect(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    from runtime.network import api

    body = await wire.json_body(request)
    if not isinstance(body, dict) or not body.get("Container"):
        raise ApiError(400, "Container is required")
    await d.call(lambda s: api.disconnect(s, id, str(body["Container"]), force=bool(body.get("Force"))))
    return wire.no_content(200)


async def build_prune(d: "Daemon", request: web.Request) -> web.StreamResponse:
    return wire.json_response({"CachesDeleted": None, "SpaceReclaimed": 0})


ROUTES = [
    ("GET", r"/networks", list_),
    ("POST", r"/networks/create", create),
    ("POST", r"/networks/prune", prune),
    ("GET", r"/networks/(?P<id>[^/]+)", inspect),
    ("DELETE", r"/networks/(?P<id>[^/]+)", remove),
    ("POST", r"/networks/(?P<id>[^/]+)/connect", connect),
    ("POST", r"/networks/(?P<id>[^/]+)/disconnect", disconnect),
    ("POST", r"/build/prune", build_prune),
]
