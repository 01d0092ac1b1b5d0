"""``lamina tag SOURCE TARGET``: give an image another name (``docker tag``). SOURCE is a name or
an (abbreviated) image ID; TARGET is a name, normalised as Docker does (``app`` is
``docker.io/library/app:latest``). A name that pointed at another image moves."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("tag", help="name an image", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("source", metavar="SOURCE", help="image name or ID")
    p.add_argument("target", metavar="TARGET", help="new name, e.g. registry:5000/app:1.0")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    store.tag(args.source, args.target)
    return 0
