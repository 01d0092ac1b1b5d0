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

Start-up is kept light: this module imports only the standard library's argparse and builds the
full parser of the chosen command alone (the others are one help line each, ``COMMAND_TABLE``);
the store and everything under it are imported when a command runs, so ``lamina --help`` never
touches ``graph``.
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

# The commands in ``lamina --help`` order: (name, aliases, module under lamina.cli, one-line help).
# Only the chosen command's module is imported and builds its full parser; the others are not
# added at all (an ArgumentParser each costs about 0.3 ms), so ``lamina images`` does not import
# (or build) the other thirty commands; ``lamina --help`` or an unknown word gets a bare parser
# with this help line per command. tests/cli/test_main.py checks that this table says what the modules say.
COMMAND_TABLE: list[tuple[str, tuple[str, ...], str, str]] = [
    ("pull", (), "pull", "pull an image from a registry"),
    ("push", (), "push", "push an image to a registry"),
    ("login", (), "login", "log in to a registry"),
    ("logout", (), "login", "forget a registry's credentials"),
    ("load", (), "load", "load images from a docker-save tar or an OCI layout"),
    ("save", (), "save", "save images to a docker-save or OCI archive"),
    ("images", (), "images", "list images"),
    ("image", (), "image", "manage images (prune)"),
    ("tag", (), "tag", "name an image"),
    ("rmi", (), "rmi", "remove images"),
    ("inspect", (), "inspect", "show details of images and containers (JSON)"),
    ("create", (), "create", "create a container (a read-write layer on an image)"),
    ("mount", (), "mount", "mount a container's filesystem and print its path"),
    ("umount", ("unmount",), "umount", "unmount a container's filesystem"),
    ("diff", (), "diff", "list changed files of a container"),
    ("commit", (), "commit", "create an image from a container's changes"),
    ("export", (), "export", "export a container's filesystem as a tar"),
    ("rm", (), "rm", "remove containers"),
    ("ps", (), "ps", "list containers"),
    ("system", (), "system", "disk usage, prune, consistency check"),
    ("run", (), "run", "create and start a container"),
    ("start", (), "start", "start containers"),
    ("stop", (), "stop", "stop running containers"),
    ("kill", (), "kill", "send a signal to running containers"),
    ("pause", (), "pause", "freeze all processes of containers"),
    ("unpause", (), "pause", "thaw all processes of containers"),
    ("logs", (), "logs", "show a container's output"),
    ("exec", (), "exec", "run a command in a running container"),
    ("stats", (), "stats", "show containers' resource use"),
    ("network", (), "network", "manage networks"),
    ("port", (), "port", "list a container's published ports"),
    ("daemon", (), "daemon", "serve the Docker Engine API on a unix socket"),
    ("volume", (), "volume", "manage volumes"),
]

_GLOBAL_WITH_VALUE = ("--root", "--driver", "--runtime", "--host")

EXIT_OS_ERROR = 1
EXIT_INTERRUPTED = 130
EXIT_UNEXPECTED = 70
EXIT_BROKEN_PIPE = 141
EXIT_USAGE = 125  # docker's exit code for flag and argument errors
EXIT_UNKNOWN_COMMAND = 1  # docker nosuch: 1


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, with the terminal's width read the way ``shutil.get_terminal_size``
    reads it ($COLUMNS, else the terminal, else 80) but without importing ``shutil``: every parser
    makes formatters while its arguments are added, and shutil (with bz2, lzma and fnmatch) costs
    milliseconds at each start of a command that never prints help."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = config.terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """argparse with Docker's usage-error form: the error, then where help is, exit 125.
    Subparsers are made of this class too (argparse uses the parent's class), and all use
    ``_Formatter``."""

    def __init__(self, *args: object, **kw: object) -> None:
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        sys.stderr.write(f"lamina: {message}\nSee '{self.prog} --help'.\n")
        unknown = self.prog == "lamina" and message.startswith("argument COMMAND: invalid choice")
        raise SystemExit(EXIT_UNKNOWN_COMMAND if unknown else EXIT_USAGE)


def build_parser(argv: Sequence[str] | None = None, *, full: bool = False) -> argparse.ArgumentParser:
    """The parser for ``argv``: complete for the command it names (or for all with ``full``)."""
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
    p.set_defaults(recovers=True)  # a command that only reads rows sets False (lamina/cli/common.py)
    sub = p.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)  # run's "command" is its argv
    chosen = None if full else _chosen_module(argv)
    done: set[str] = set()
    for name, aliases, module_name, help_line in COMMAND_TABLE:
        if full or module_name == chosen:
            if module_name not in done:  # one module may register several commands (login, logout)
                done.add(module_name)
                _command_module(module_name).register(sub)
        elif chosen is None:  # lamina --help, a typo: every command, one help line each
            sub.add_parser(name, aliases=list(aliases), help=help_line, add_help=False)
    return p


def _command_module(name: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"lamina.cli.{name}")


def _chosen_module(argv: Sequence[str] | None) -> str | None:
    """The module of the command ``argv`` names (the first word that is not a global option or
    its value), or None (``lamina --help``, a typo: argparse then says what is wrong)."""
    args = list(sys.argv[1:] if argv is None else argv)
    names = {n: m for n, aliases, m, _ in COMMAND_TABLE for n in (n, *aliases)}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            i += 1
            continue
        if a.startswith("-"):
            # --root DIR (also abbreviated, as argparse allows: --ro DIR); --root=DIR is one word
            if "=" not in a and len(a) > 2 and any(o.startswith(a) for o in _GLOBAL_WITH_VALUE):
                i += 1
            i += 1
            continue
        return names.get(a)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)  # usage errors: two lines, exit 125 (see _Parser)
    if not hasattr(args, "run"):  # argparse chose a command _chosen_module did not: parse in full
        parser = build_parser(argv, full=True)
        args, extra = parser.parse_known_args(argv)
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
