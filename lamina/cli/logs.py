"""``lamina logs [-f] [--tail N] [-t] CONTAINER``: a container's output from its json-file log:
what it wrote to stdout goes to stdout, stderr to stderr. ``-f`` follows the log until the
container exits; ``--tail N`` starts with the last N lines; ``-t`` prefixes each line with its
time (RFC 3339, nanoseconds)."""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("logs", help="show a container's output", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-f", "--follow", action="store_true", help="follow the output until the container exits")
    p.add_argument("--tail", default="all", metavar="N", help="only the last N lines (default: all)")
    p.add_argument("-t", "--timestamps", action="store_true", help="show the time of each line")
    p.add_argument("container", metavar="CONTAINER", help="container name, ID or ID prefix")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    import runtime
    from graph.errors import InvalidInput

    tail = None
    if args.tail != "all":
        if not args.tail.isdigit():
            raise InvalidInput(f"invalid --tail {args.tail!r}: a number of lines, or all")
        tail = int(args.tail)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    sys.stdout.flush()
    for e in runtime.log_entries(store, args.container, follow=args.follow, tail=tail):
        f = err if e.stream == "stderr" else out
        text = f"{e.time} {e.text}" if args.timestamps else e.text
        f.write(text.encode("utf-8", errors="replace"))
        if args.follow:
            f.flush()
    out.flush()
    err.flush()
    return 0
