"""``lamina run [OPTIONS] IMAGE [COMMAND [ARG...]]``: create a container and start it, like
``docker run``. Attached (the default), the container's stdout and stderr are streamed here and
lamina exits with the container's exit code; signals lamina receives (Ctrl-C, SIGTERM, ...) are
passed on to the container (a third Ctrl-C detaches, leaving it running). ``-d`` prints the ID
and leaves the container running under its monitor. ``--rm`` removes it once it has exited
(also when detached). ``-i`` hands lamina's stdin to the container; ``-t`` (a terminal) is not
supported.

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
    create.add_options(p)
    p.set_defaults(run=run)


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background, print the ID")
    p.add_argument("-i", "--interactive", action="store_true", help="connect stdin to the container")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal (not supported)")


def run(args: argparse.Namespace, store: "Store") -> int:
    import runtime
    from graph.errors import InvalidInput, Unsupported

    if args.tty:
        raise Unsupported("-t: lamina does not allocate terminals; use -i for stdin")
    if args.detach and args.interactive:
        raise InvalidInput("-i with -d: lamina cannot attach to a container later; drop one of them")
    cfg = create.build_config(args, store)
    cfg.setdefault("HostConfig", {})["AutoRemove"] = bool(args.rm)
    img = store.resolve_image(args.image)
    r = runtime.run(store, str(img.id), name=args.name, config=cfg, runtime=args.runtime,
                    attach=not args.detach, stdin=args.interactive)
    if args.detach:
        print(r.container.id)
        return 0
    return attached(store, r)


def attached(store: "Store", r: Any) -> int:
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
        return runtime.wait(store, r, sys.stdout.buffer, sys.stderr.buffer)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
