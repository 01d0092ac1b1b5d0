"""``lamina``: parse the command line, open the store, run one command, map errors to exit codes.

Exit codes: 0 success; a ``LaminaError``'s own ``exit_code`` (1 generic, 2 not found, 3 exists,
4 conflict, 5 invalid input, 6 corrupt, 7 unsupported, 70 bug) with exactly one line
``lamina: <message>`` on stderr; 8 for a full disk (``NoSpace``: ENOSPC, EDQUOT, SQLite's "database
or disk is full", whichever write path met it); 1 for another operating-system error (permission
denied: one line too); 130 on Ctrl-C; 70 for anything unexpected, with one line and a hint to run
with ``--debug``, which shows tracebacks.

Usage errors follow Docker's CLI: ``lamina: <what is wrong>`` and ``See 'lamina <cmd> --help'.``
(two lines, no usage block), exit 125 as ``docker`` exits for a bad flag or argument; an unknown
command exits 1, as ``docker nosuch`` does.

Start-up is kept light: this module and the command modules import only the standard library's
argparse; the store and everything under it are imported when a command runs, so ``lamina
--help`` never touches ``graph``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import NoReturn

from lamina import __version__, config
from lamina.cli import (
    commit,
    create,
    daemon,
    diff,
    export,
    images,
    inspect,
    load,
    login,
    mount,
    ps,
    pull,
    push,
    rm,
    rmi,
    save,
    system,
    tag,
    umount,
)
from lamina.cli import exec as exec_command  # runtime commands (the module's name shadows a builtin)
from lamina.cli import kill, logs, pause, run, start, stats, stop
from lamina.cli import network, port  # networks and published ports

COMMANDS: list[ModuleType] = [
    pull, push, login, load, save, images, tag, rmi, inspect, create, mount, umount, diff, commit, export, rm, ps, system,
    run, start, stop, kill, pause, logs, exec_command, stats, daemon,
    network, port,
]

EXIT_OS_ERROR = 1
EXIT_INTERRUPTED = 130
EXIT_UNEXPECTED = 70
EXIT_BROKEN_PIPE = 141
EXIT_USAGE = 125  # docker's exit code for flag and argument errors
EXIT_UNKNOWN_COMMAND = 1  # docker nosuch: 1


class _Parser(argparse.ArgumentParser):
    """argparse with Docker's usage-error form: the error, then where help is, exit 125.
    Subparsers are made of this class too (argparse uses the parent's class)."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        sys.stderr.write(f"lamina: {message}\nSee '{self.prog} --help'.\n")
        unknown = self.prog == "lamina" and message.startswith("argument COMMAND: invalid choice")
        raise SystemExit(EXIT_UNKNOWN_COMMAND if unknown else EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    d = config.defaults()
    p = _Parser(
        prog="lamina",
        description="A container image and layer store.",
        epilog="Global options go before the command: lamina --root DIR images",
    )
    p.add_argument("--root", default=d.root, metavar="DIR",
                   help=f"the store's root directory (default: $LAMINA_ROOT or {config.DEFAULT_ROOT}; now {d.root})")
    p.add_argument("--driver", default=d.driver, metavar="NAME",
                   help="graphdriver for a new root: vfs, overlay, btrfs, fuse (default: $LAMINA_DRIVER, "
                        "else the root's own, else overlay where the kernel has it, else vfs)")
    p.add_argument("--runtime", choices=config.RUNTIMES, default=None,
                   help="OCI runtime for containers (recorded now, used when containers run)")
    p.add_argument("--host", default=config.daemon_host(), metavar="URL",
                   help="talk to a lamina daemon (unix:///PATH, tcp://127.0.0.1:PORT) instead of opening "
                        "the store (default: $LAMINA_HOST)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("--version", action="version", version=f"lamina {__version__}")
    sub = p.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)  # run's "command" is its argv
    for module in COMMANDS:
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # usage errors: two lines, exit 125 (see _Parser)
    if extra:  # say it as the innermost command's error, so the hint names that command's help
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.host and args.subcommand != "daemon":
        from lamina.cli import remote  # the standard library only: no store, no runtime

        return remote.dispatch(args)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        _flush_quietly()
        if args.debug:
            import traceback

            traceback.print_exc()
        print("lamina: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (lamina images | head): say nothing more, like other tools
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as e:  # noqa: BLE001 - this is the one place that turns errors into exits
        _flush_quietly()
        if args.debug:
            import traceback

            traceback.print_exc()
        code, line = _describe(e, args.debug, args.root)
        print(f"lamina: {line}", file=sys.stderr)
        return code


def _innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command ``args`` selected (``lamina system df`` -> its parser)."""
    p = parser
    while True:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name is None or name not in subs[0].choices:
            return p
        p = subs[0].choices[name]


def _dispatch(args: argparse.Namespace) -> int:
    from lamina.cli.common import open_store

    if not getattr(args, "opens_store", True):  # the daemon opens its own stores
        return int(args.run(args, None) or 0)
    with open_store(args) as store:
        rc = args.run(args, store)
    sys.stdout.flush()
    return int(rc or 0)


def _describe(e: BaseException, debug: bool, root: str = "") -> tuple[int, str]:
    """(exit code, one line) for an exception that reached the top."""
    try:
        from graph.errors import LaminaError, no_space
    except Exception:  # the library itself failed to import: that error is the unexpected one
        LaminaError = ()  # type: ignore[assignment,misc]
        no_space = None  # type: ignore[assignment]

    full = no_space(e, root or None) if no_space is not None else None
    if full is not None:  # whichever write path and driver met it: one line, one code
        return full.exit_code, f"{full} (store {root})" if root else str(full)
    if isinstance(e, LaminaError):
        return e.exit_code, _one_line(str(e)) or type(e).__name__
    if isinstance(e, OSError):
        what = e.strerror or str(e)
        where = f": {e.filename}" if e.filename else ""
        return EXIT_OS_ERROR, _one_line(f"{what}{where}")
    hint = "" if debug else " (run with --debug for the traceback)"
    return EXIT_UNEXPECTED, _one_line(f"unexpected error: {type(e).__name__}: {e}") + hint


def _one_line(s: str) -> str:
    return " ".join(s.split())


def _flush_quietly() -> None:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _silence_stdout()


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
