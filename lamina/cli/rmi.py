"""``lamina rmi [-f] IMAGE...``: remove names, and images left without one (``docker rmi``).

By name: the name goes; the image goes with its last name, and its layers and blobs with the last
image that needs them. By ID: refused when several names point at it, or when a container uses it,
unless ``-f``. Forced while a container uses it, the image is untagged and kept until that
container is removed. Prints ``Untagged: NAME`` and ``Deleted: ID`` lines. Several images are
removed in order; the first failure stops the command (what was removed before it stays removed).
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("rmi", help="remove images", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-f", "--force", action="store_true",
                   help="remove an image with several names, or untag one a container uses")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image name or ID")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    for name in args.images:
        for event in store.rmi(name, force=args.force):
            print(event, flush=True)
    return 0
