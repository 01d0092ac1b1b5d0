"""``lamina port CONTAINER [PRIVATE_PORT[/PROTO]]``: the published ports of a running container,
as ``docker port``: ``80/tcp -> 127.0.0.1:18080`` per binding, or only ``127.0.0.1:18080`` for
the port asked for (not published: an error)."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("port", help="list a container's published ports", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("private", nargs="?", default=None, metavar="PRIVATE_PORT[/PROTO]")
    p.set_defaults(run=run)


def _addr(b: dict[str, str]) -> str:
    ip = b.get("HostIp") or "0.0.0.0"
    return f"[{ip}]:{b['HostPort']}" if ":" in ip else f"{ip}:{b['HostPort']}"


def run(args: argparse.Namespace, store: "Store") -> int:
    from graph.errors import NotFound
    from runtime.network import api

    ports = api.port(store, args.container)
    if args.private is not None:
        key = args.private if "/" in args.private else f"{args.private}/tcp"
        if key not in ports:
            raise NotFound(f"no public port '{key}' published for {args.container}")
        for b in ports[key]:
            print(_addr(b))
        return 0
    for key in sorted(ports, key=lambda k: (int(k.split("/")[0]), k)):
        for b in ports[key]:
            print(f"{key} -> {_addr(b)}")
    return 0
