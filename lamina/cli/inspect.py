"""``lamina inspect [--type image|container] NAME...``: details of containers and images as a JSON
array (Docker's ``inspect`` shape). A name is tried as a container first (name, ID or ID
prefix), then as an image (name, ID or ID prefix), as ``docker inspect`` does; ``--type`` looks in
one place only. Nothing is printed unless every name is found."""

from __future__ import annotations

import argparse

from lamina.cli import output

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Container, Store


def register(sub: Any) -> None:
    p = sub.add_parser("inspect", help="show details of images and containers (JSON)",
                       description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--type", choices=["image", "container"], help="look only for this kind of object")
    p.add_argument("--format", choices=["json"], default="json", help="output format (JSON, the default)")
    p.add_argument("-s", "--size", action="store_true", help="add a container's SizeRw (walks its layer)")
    p.add_argument("names", nargs="+", metavar="NAME", help="container or image: name, ID or ID prefix")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    from graph.errors import NotFound

    found: list[dict[str, Any]] = []
    for name in args.names:
        if args.type in (None, "container"):
            try:
                c = store.containers.get(name)
            except NotFound:
                if args.type == "container":
                    raise
            else:
                found.append(container_json(store, c, size=args.size))
                continue
        try:
            found.append(store.inspect_image(name))
        except NotFound:
            if args.type == "image":
                raise
            raise NotFound(f"no such object: {name}") from None
    output.print_json(found, indent=4)
    return 0


def container_json(store: "Store", c: "Container", *, size: bool = False) -> dict[str, Any]:
    """A container in the shape of Docker's ``ContainerJSON`` (the fields lamina has)."""
    import runtime

    got = runtime.reconcile(store, c)  # the state as it is now (exited unseen, monitor died...)
    if got is None:
        from graph.errors import NotFound

        raise NotFound(f"no such container: {c.name} (removed on exit)")
    c, st = got
    cfg = {k: v for k, v in c.config.items() if k != "HostConfig"}
    argv = list(cfg.get("Entrypoint") or []) + list(cfg.get("Cmd") or [])
    out: dict[str, Any] = {
        "Id": c.id,
        "Created": output.rfc3339(c.created),
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": runtime.inspect_state(st),
        "Image": str(c.image_id) if c.image_id else "",
        "Name": "/" + c.name,
        "Driver": store.driver_name,
        "Config": cfg,
        "HostConfig": dict(c.config.get("HostConfig") or {}),
        "GraphDriver": {
            "Name": store.driver_name,
            "Data": {
                "CacheID": str(c.cache_id),
                "ParentLayer": str(c.parent_layer) if c.parent_layer else None,
                "Mounts": store.containers.mounted(c),
            },
        },
    }
    out.update(runtime.extra_inspect(store, c))
    from runtime.network import api as network_api

    out["NetworkSettings"] = network_api.settings(store, c)
    if size:
        out["SizeRw"] = store.containers.size(c)
    return out
