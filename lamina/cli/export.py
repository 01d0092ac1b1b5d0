"""``lamina export [-o FILE] CONTAINER``: write the container's whole filesystem as a tar
(``docker export``). With ``-o`` the file appears only when complete; without it the tar goes to
stdout, which must not be a terminal."""

from __future__ import annotations

import argparse

from lamina.cli.common import atomic_output, binary_stdout, stdout_is_terminal

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="export a container's filesystem as a tar",
                       description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("container", metavar="CONTAINER", help="container name, ID or ID prefix")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    from graph.errors import InvalidInput

    c = store.containers.get(args.container)
    if args.output:
        with atomic_output(args.output) as f:
            store.export(c.id, f)
        return 0
    if stdout_is_terminal():
        raise InvalidInput("refusing to write a tar to a terminal: use -o FILE or redirect stdout")
    out = binary_stdout()
    store.export(c.id, out)
    out.flush()
    return 0
