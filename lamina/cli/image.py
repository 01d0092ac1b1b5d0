"""``lamina image prune [-f]``: remove dangling images (no reference, no container), as
``docker image prune``; asks first unless ``-f``. Named images and images a container uses stay.
"""

from __future__ import annotations

import argparse
import sys

from lamina.cli import output

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store

WARNING = """WARNING! This will remove all dangling images.
Are you sure you want to continue? [y/N] """


def register(sub: Any) -> None:
    p = sub.add_parser("image", help="manage images (prune)",
                       description=(__doc__ or "").split("\n\n")[0])
    isub = p.add_subparsers(dest="image_command", metavar="SUBCOMMAND", required=True)
    prune = isub.add_parser("prune", help="remove dangling images")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    prune.set_defaults(run=run_prune)


def run_prune(args: argparse.Namespace, store: "Store") -> int:
    from graph.errors import LaminaError

    if not args.force:
        sys.stderr.write(WARNING)
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line.endswith("\n") or not sys.stdin.isatty():
            sys.stderr.write("\n")
        if line.strip().lower() not in ("y", "yes"):
            raise LaminaError("image prune has been cancelled")
    rep = store.prune_images()
    if rep.images:
        print("Deleted Images:")
        for item in rep.images:
            print(f"deleted: {item}")
        print()
    print(f"Total reclaimed space: {output.human_size(rep.reclaimed)}")
    return 0
