"""``lamina kill [-s SIGNAL] CONTAINER...``: send a signal (default KILL; a name such as TERM or
SIGHUP, or a number) to the main process of running containers. Prints each name as given."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("kill", help="send a signal to running containers", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-s", "--signal", default="KILL", help="signal name or number (default KILL)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER", help="container name, ID or ID prefix")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    import runtime

    runtime.signal_number(args.signal)  # a bad signal fails before anything is sent
    for name in args.containers:
        runtime.kill(store, name, args.signal)
        print(name, flush=True)
    return 0
