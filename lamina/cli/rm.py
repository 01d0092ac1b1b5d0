"""``lamina rm [-f] CONTAINER...``: remove containers: the record, the read-write layer, and the
image layers nothing else needs. A mounted (or running) container is refused unless ``-f``.
Prints each name as given. The first failure stops the command."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("rm", help="remove containers", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-f", "--force", action="store_true", help="remove even if mounted or running")
    p.add_argument("-v", "--volumes", action="store_true", help="remove the container's anonymous volumes too")
    p.add_argument("containers", nargs="+", metavar="CONTAINER", help="container name, ID or ID prefix")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    import runtime

    for name in args.containers:
        runtime.remove(store, name, force=args.force, volumes=args.volumes)  # -f kills a running container first
        print(name, flush=True)
    return 0
