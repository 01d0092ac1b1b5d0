"""What several commands share: opening the store for a command, and writing an output file so
that it either appears whole or not at all."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:  # the store is imported only when a command runs (start-up stays light)
    from typing import BinaryIO

    from graph import Store


@contextlib.contextmanager
def open_store(args: argparse.Namespace) -> Iterator["Store"]:
    """Open (creating if needed) the store the global options name, and close it afterwards.

    ``--driver`` (or ``$LAMINA_DRIVER``) picks the driver of a new root; an existing root keeps
    its own and refuses another (graph.Store raises Conflict, which names the root).

    A command that only reads rows sets ``recovers=False`` (``lamina images``): the store opens
    without the recovery and the driver opens only if the command uses it (``graph.Store``)."""
    from graph import Store

    store = Store(args.root, driver=args.driver, recover=args.recovers)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """A file that appears at ``path`` only when the block completes: written under a temporary
    name in the same directory, synced, then renamed over ``path``. On any exception (including
    KeyboardInterrupt) the temporary file is removed and ``path`` is left as it was."""
    from drivers.sys.durable import atomic_file

    with atomic_file(path) as f:
        yield f  # type: ignore[misc]


def binary_stdout() -> BinaryIO:
    """stdout for bytes (an archive written to a pipe)."""
    sys.stdout.flush()
    return sys.stdout.buffer


def stdout_is_terminal() -> bool:
    try:
        return os.isatty(sys.stdout.fileno())
    except (ValueError, OSError):
        return False
