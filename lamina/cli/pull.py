"""``lamina pull [--insecure] [--platform OS/ARCH] [-q] REF``: fetch an image from a registry.

Output follows ``docker pull``: ``TAG: Pulling from REPO``, one line per layer that moves through
Waiting / Downloading / Verifying Checksum / Extracting / Pull complete (or Already exists), then
``Digest:``, ``Status:`` and the full reference. On a terminal the layer lines are bars redrawn in
place; otherwise each phase change is one plain line; ``-q`` prints only the reference.

Credentials come from Docker's client config (``lamina login``; ``$DOCKER_CONFIG``), mirrors from
``$LAMINA_REGISTRY_MIRRORS`` (``lamina/config.py``). ``--insecure`` speaks plain HTTP to the
registry named in REF (for registries on 127.0.0.1).

This module also holds what ``push`` and ``login`` share: the registry options built from the
command line and the environment, and the progress view.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from lamina import config

if TYPE_CHECKING:
    from graph import Store
    from graph.distribution.progress import Event
    from graph.distribution.registry import RegistryOptions


def register(sub: Any) -> None:
    p = sub.add_parser("pull", help="pull an image from a registry", description=__doc__.split("\n\n")[0])
    p.add_argument("--insecure", action="store_true", help="plain HTTP to the registry in REF (no TLS)")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="pick this platform from a multi-platform image (default: this machine's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image's reference")
    p.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="layers downloaded at once (default 3, or 8 for an image of many layers under 1 MB)")
    p.add_argument("ref", metavar="REF", help="image reference: busybox, repo:tag, host:port/repo@sha256:...")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    from graph.oci.formats import Platform
    from graph.distribution.pull import pull
    from graph.oci.reference import parse_reference

    ref = parse_reference(args.ref)
    platform = Platform.parse(args.platform) if args.platform else None
    options = registry_options(insecure_host=ref.domain if args.insecure else None)
    out = sys.stdout
    view = None
    if not args.quiet:
        what = ref.tag if ref.digest is None else ref.digest
        print(f"{what}: Pulling from {ref.familiar_name()}", file=out, flush=True)
        view = ProgressView(out, PULL_WORDS)
    try:
        result = pull(store, ref, options=options, platform=platform, concurrency=args.concurrency,
                      progress_fn=view.event if view else None)
    finally:
        if view is not None:
            view.close()
    if args.quiet:
        print(str(result.reference))
        return 0
    print(f"Digest: {result.digest}")
    status = "Downloaded newer image for" if result.new else "Image is up to date for"
    print(f"Status: {status} {result.reference.familiar()}")
    print(str(result.reference))
    return 0


# ---------------------------------------------------------------------------- shared options


def registry_options(*, insecure_host: str | None = None, credentials: dict[str, Any] | None = None) -> "RegistryOptions":
    """Registry options for a command: Docker's client config for credentials, the configured
    mirrors, and ``insecure_host`` (the REF's registry when ``--insecure`` was given)."""
    from pathlib import Path

    from graph.distribution.registry import RegistryOptions, mirror_endpoint

    mirrors: dict[str, list[str]] = {}
    for entry in config.registry_mirrors():
        host, sep, url = entry.partition("=")
        if not sep:
            host, url = "docker.io", entry
        mirror_endpoint(url)  # InvalidInput now, naming the bad entry, rather than mid-pull
        mirrors.setdefault(host, []).append(url)
    return RegistryOptions(
        insecure=frozenset({insecure_host} if insecure_host else set()),
        mirrors={h: tuple(u) for h, u in mirrors.items()},
        credentials_file=Path(config.docker_config_path()),
        credentials=credentials or {},
    )


# ---------------------------------------------------------------------------- progress view

PULL_WORDS = {
    "waiting": "Waiting",
    "downloading": "Downloading",
    "verifying": "Verifying Checksum",
    "extracting": "Extracting",
    "done": "Pull complete",
    "exists": "Already exists",
    "retrying": "Retrying",
    "failed": "Failed",
}
PUSH_WORDS = {
    "waiting": "Waiting",
    "pushing": "Pushing",
    "pushed": "Pushed",
    "exists": "Layer already exists",
    "mounted": "Mounted from",
    "retrying": "Retrying",
    "failed": "Failed",
}
_BAR_PHASES = frozenset({"downloading", "extracting", "pushing"})
_BAR_WIDTH = 50


class ProgressView:
    """Renders ``graph.distribution.progress`` events like ``docker pull``: on a terminal a block of lines,
    one per item, redrawn in place with ANSI escapes (at most every 0.1 s, and on each phase
    change); elsewhere one plain line per phase change and no byte counts. Thread-safe."""

    def __init__(self, out: IO[str], words: dict[str, str], *, tty: bool | None = None) -> None:
        self.out = out
        self.words = words
        self.tty = _isatty(out) if tty is None else tty
        self._lock = threading.Lock()
        self._order: list[str] = []
        self._lines: dict[str, str] = {}
        self._phase: dict[str, str] = {}
        self._drawn = 0
        self._last_draw = 0.0

    def event(self, e: "Event") -> None:
        with self._lock:
            if e.id not in self._lines:
                self._order.append(e.id)
            changed = self._phase.get(e.id) != e.phase
            self._phase[e.id] = e.phase
            self._lines[e.id] = self._format(e)
            if not self.tty:
                if changed:
                    self.out.write(self._lines[e.id] + "\n")
                    self.out.flush()
                return
            now = time.monotonic()
            if changed or now - self._last_draw >= 0.1:
                self._draw()
                self._last_draw = now

    def _format(self, e: "Event") -> str:
        word = self.words.get(e.phase, e.phase)
        line = f"{e.short_id}: {word}"
        if e.phase == "mounted" and e.detail:
            line += f" {e.detail}"
        elif e.phase in _BAR_PHASES and self.tty and e.total:
            frac = min(1.0, e.current / e.total) if e.total else 0.0
            filled = int(frac * _BAR_WIDTH)
            bar = "=" * max(0, filled - 1) + (">" if filled else "") + " " * (_BAR_WIDTH - filled)
            line = f"{line:<30} [{bar}]  {_size(e.current)}/{_size(e.total)}"
        elif e.detail:
            line += f" ({e.detail})"
        return line

    def _draw(self) -> None:
        parts = []
        if self._drawn:
            parts.append(f"\x1b[{self._drawn}F")  # to the start of the block's first line
        for id_ in self._order:
            parts.append("\x1b[2K" + self._lines[id_] + "\n")
        self._drawn = len(self._order)
        self.out.write("".join(parts))
        self.out.flush()

    def close(self) -> None:
        with self._lock:
            if self.tty and self._order:
                self._draw()


def _size(n: int) -> str:
    from lamina.cli.output import human_size

    return human_size(n)


def _isatty(out: IO[str]) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False
