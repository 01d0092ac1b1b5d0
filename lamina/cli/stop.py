"""``lamina stop [-t SECONDS] CONTAINER...``: stop running containers: the stop signal (the
image's StopSignal, else SIGTERM), then SIGKILL after the grace time (default 10 s). Prints
each name as given; a container that is not running is left as it is."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("stop", help="stop running containers", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-t", "--time", type=float, default=None, metavar="SECONDS",
                   help="seconds to wait before SIGKILL (default 10)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER", help="container name, ID or ID prefix")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    import runtime
    from graph.errors import InvalidInput

    if args.time is not None and args.time < 0:
        raise InvalidInput(f"invalid -t {args.time:g}: must not be negative")
    for name in args.containers:
        runtime.stop(store, name, timeout=args.time)
        print(name, flush=True)
    return 0
