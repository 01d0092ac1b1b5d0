"""``lamina exec [OPTIONS] CONTAINER COMMAND [ARG...]``: run a command in a running container
(its namespaces, cgroup and root), attached to this terminal's stdout and stderr; lamina exits
with the command's exit code. ``-i`` connects stdin; ``-d`` starts it in the background; ``-e``,
``-w``, ``-u`` as for ``run`` (the container's own user, environment and working directory
otherwise). ``-t`` runs it in a new terminal; ``-i -t`` connects this one in raw mode."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("exec", help="run a command in a running container", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-d", "--detach", action="store_true", help="run the command in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="connect stdin")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal (with -i: this one, in raw mode)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE", help="set an environment variable")
    p.add_argument("-w", "--workdir", default="", metavar="DIR", help="working directory (absolute)")
    p.add_argument("-u", "--user", default=None, metavar="USER[:GROUP]", help="user to run as")
    p.add_argument("container", metavar="CONTAINER", help="container name, ID or ID prefix")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND", help="command and arguments")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    import runtime
    from graph.errors import InvalidInput
    from lamina import config, containerconfig

    if not args.command:
        raise InvalidInput("exec: no command given")
    env = containerconfig.parse_env(args.env, config.client_env)
    if args.tty and args.interactive:
        from runtime import tty

        with tty.raw(0):
            return runtime.exec_(store, args.container, args.command, env=env, workdir=args.workdir,
                                 user=args.user, detach=args.detach, stdin=True, tty=True)
    return runtime.exec_(store, args.container, args.command, env=env, workdir=args.workdir,
                         user=args.user, detach=args.detach, stdin=args.interactive, tty=args.tty)
