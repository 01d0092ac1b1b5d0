"""``lamina umount CONTAINER``: release one ``mount`` of the container's filesystem (unmounted
when the last one goes). Prints the container's ID, as ``podman umount`` does."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("umount", aliases=["unmount"], help="unmount a container's filesystem",
                       description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("container", metavar="CONTAINER", help="container name, ID or ID prefix")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    from graph.errors import Conflict

    c = store.containers.get(args.container)
    if store.containers.mounted(c) == 0:
        raise Conflict(f"container {c.name} is not mounted")
    store.containers.unmount(c)
    print(c.id)
    return 0
