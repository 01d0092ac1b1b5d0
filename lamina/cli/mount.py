"""``lamina mount CONTAINER``: mount the container's filesystem and print the absolute path of its
merged root. Mounts are counted: each ``mount`` needs one ``umount``; ``rm`` refuses a mounted
container unless ``-f``."""

from __future__ import annotations

import argparse
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("mount", help="mount a container's filesystem and print its path",
                       description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("container", metavar="CONTAINER", help="container name, ID or ID prefix")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    c = store.containers.get(args.container)
    print(os.path.abspath(store.containers.mount(c, keep=True)))
    return 0
