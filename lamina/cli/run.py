"""``lamina run [OPTIONS] IMAGE [COMMAND [ARG...]]``: create a container and start it, like
``docker run``. Attached (the default), the container's stdout and stderr are streamed here and
lamina exits with the container's exit code; signals lamina receives (Ctrl-C, SIGTERM, ...) are
passed on to the container (a third Ctrl-C detaches, leaving it running). ``-d`` prints the ID
and leaves the container running under its monitor. ``--rm`` removes it once it has exited
(also when detached). ``-i`` hands lamina's stdin to the container; ``-t`` gives it a terminal
(a pty made by the runtime), and ``-i -t`` puts this terminal in raw mode and connects it
(restored on exit; the window size follows). ``--restart`` restarts it by policy.

Options as ``create``: ``--name``, ``-e``, ``-w``, ``-u``, ``--entrypoint``, ``--hostname``,
``--network none|host|bridge|NAME``, ``--ip``, ``--network-alias``, ``-p``, ``-P``, ``--memory``, ``--cpus``, ``--pids-limit``; the runtime is the global
``--runtime crun|runc`` (default crun).
"""

from __future__ import annotations

import argparse
import sys

from lamina.cli import create

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store

PROXIED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="create and start a container",
                       description=(__doc__ or "").split("\n\n")[0])
    add_run_options(p)
    create.add_options(p, terminal=False)
    p.set_defaults(run=run)


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background, print the ID")
    p.add_argument("-i", "--interactive", action="store_true", help="connect stdin to the container")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal (with -i: this one, in raw mode)")


def run(args: argparse.Namespace, store: "Store") -> int:
    import runtime
    from graph.errors import InvalidInput

    if args.detach and args.interactive:
        raise InvalidInput("-i with -d: lamina cannot attach to a container later; drop one of them")
    image_id, cfg = create.build_config(args, store)
    cfg.setdefault("HostConfig", {})["AutoRemove"] = bool(args.rm)
    size = _terminal_size() if args.tty else None
    r = runtime.run(store, image_id, name=args.name, config=cfg, runtime=args.runtime,
                    attach=not args.detach, stdin=args.interactive, console_size=size)
    if args.detach:
        print(r.container.id)
        return 0
    return attached(store, r, args.interactive)


def attached(store: "Store", r: Any, interactive: bool = True) -> int:
    """Stream an attached container to this process's stdout and stderr, passing signals on;
    its exit code."""
    import signal

    import runtime

    presses = [0]

    def forward(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT:
            presses[0] += 1
            if presses[0] >= 3:
                raise KeyboardInterrupt
        rt = r.state.runtime()
        if rt is not None:
            try:
                rt.kill(r.container.id, signum)
            except Exception:  # noqa: BLE001 - the container may be gone already
                pass

    old = {}
    for name in PROXIED:
        sig = getattr(signal, name)
        old[sig] = signal.signal(sig, forward)
    try:
        sys.stdout.flush()
        if not r.container.config.get("Tty"):
            return runtime.wait(store, r, sys.stdout.buffer, sys.stderr.buffer)
        from runtime import tty

        stdin = 0 if r.container.config.get("OpenStdin") and interactive else None
        with tty.raw(0) if stdin is not None else _nothing():
            return runtime.wait(store, r, sys.stdout.buffer, sys.stderr.buffer, tty_stdin=stdin)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()


def _terminal_size() -> tuple[int, int] | None:
    from runtime import tty

    return tty.window_size(0) or tty.window_size(1)
