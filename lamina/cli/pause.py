"""``lamina pause CONTAINER...`` and ``lamina unpause CONTAINER...``: freeze and thaw every
process of running containers (the cgroup freezer, through the runtime). A paused container
makes no progress and takes no signals until unpaused (``stop`` and ``kill`` thaw it)."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    for name, what in (("pause", "freeze"), ("unpause", "thaw")):
        p = sub.add_parser(name, help=f"{what} all processes of containers",
                           description=(__doc__ or "").split("\n\n")[0])
        p.add_argument("containers", nargs="+", metavar="CONTAINER", help="container name, ID or ID prefix")
        p.set_defaults(run=run_pause if name == "pause" else run_unpause)


def run_pause(args: argparse.Namespace, store: "Store") -> int:
    import runtime

    for name in args.containers:
        runtime.pause(store, name)
        print(name, flush=True)
    return 0


def run_unpause(args: argparse.Namespace, store: "Store") -> int:
    import runtime

    for name in args.containers:
        runtime.unpause(store, name)
        print(name, flush=True)
    return 0
