"""``lamina commit [-m MESSAGE] [-a AUTHOR] CONTAINER [IMAGE]``: make a new image from the
container's changes (one new layer on its image) and print its ID; IMAGE names it. The layer is
stored as a blob too, so ``save`` hands out the same bytes later."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("commit", help="create an image from a container's changes",
                       description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-m", "--message", default="", help="commit message (history comment)")
    p.add_argument("-a", "--author", default="", help='author, e.g. "Ada <ada@example.com>"')
    p.add_argument("container", metavar="CONTAINER", help="container name, ID or ID prefix")
    p.add_argument("ref", nargs="?", metavar="IMAGE", help="name for the new image, e.g. app:2")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    if args.ref:  # refuse a bad name before any work is done
        from graph.errors import InvalidInput
        from graph.oci.reference import parse_reference

        if parse_reference(args.ref).digest is not None:
            raise InvalidInput(f"refusing to name an image with a digest reference: {args.ref}")
    img = store.commit(args.container, args.ref, message=args.message, author=args.author)
    print(img.id)
    return 0
