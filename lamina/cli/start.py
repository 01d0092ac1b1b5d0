"""``lamina start [-a] [-i] CONTAINER...``: start created or stopped containers in the background
(each keeps running under its monitor) and print their names as given. ``-a`` attaches to one
container: its output is streamed here and lamina exits with its exit code, as ``run`` does."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("start", help="start containers", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-a", "--attach", action="store_true", help="stream output, exit with the container's code")
    p.add_argument("-i", "--interactive", action="store_true", help="connect stdin (with -a)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER", help="container name, ID or ID prefix")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    import runtime
    from graph.errors import InvalidInput

    if args.attach or args.interactive:
        if len(args.containers) != 1:
            raise InvalidInput("-a and -i attach to one container only")
        from lamina.cli.run import attached

        from lamina.cli.run import _terminal_size

        r = runtime.start(store, args.containers[0], runtime=args.runtime, attach=True, stdin=args.interactive,
                          console_size=_terminal_size())
        if r.attachment is None:  # it was running already: nothing to attach to
            raise InvalidInput(f"container {args.containers[0]} is already running; lamina cannot attach to it")
        return attached(store, r, args.interactive)
    for name in args.containers:
        runtime.start(store, name, runtime=args.runtime)
        print(name, flush=True)
    return 0
