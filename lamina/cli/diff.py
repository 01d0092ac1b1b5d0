"""``lamina diff CONTAINER``: what changed in the container's filesystem against its image, one
line per path as ``docker diff`` prints it: ``A`` added, ``C`` changed, ``D`` deleted."""

from __future__ import annotations

import argparse

from lamina.cli import output

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("diff", help="list changed files of a container", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    p.add_argument("container", metavar="CONTAINER", help="container name, ID or ID prefix")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    c = store.containers.get(args.container)
    changes = sorted(store.containers.changes(c), key=lambda ch: ch.path)
    if args.format == "json":
        output.print_json([{"Path": ch.path, "Kind": int(ch.kind)} for ch in changes])
    else:
        for ch in changes:
            print(f"{'CAD'[ch.kind]} {output.cell(ch.path)}")
    return 0
