"""Terminals through the daemon (``docker run -it``, ``docker attach``, ``docker exec -it``).

As in Docker, a connection to a terminal is the raw stream both ways: the container's pty output
as it comes (no multiplexing header: a terminal has one output stream), the client's keys as it
types them. Sizes come from ``HostConfig.ConsoleSize`` / the exec's ``ConsoleSize`` at start and
then from the ``resize`` endpoints.

A terminal container the daemon starts is one ``Session``: the daemon stays the monitor's
attached caller (``runtime.start(attach=True)``) for the container's whole life, whether or not
a client attached at the start, so a later ``docker attach`` gets the output and sends keys, and
``/containers/{id}/resize`` reaches the pty (the monitor takes keys and sizes only from its
caller, ``runtime.frames``). The daemon records the exit as for an attached ``docker run``. If
the daemon stops, the monitor sees its caller go and carries on alone (Docker's live restore);
a terminal container the daemon did not start (``lamina run -t``, or before a restart) can be
attached for its output only.

An exec's terminal is simpler: ``runtime.exec_`` hands the pty's master to the daemon
(``terminal=``), which copies it to and from the one connection and resizes it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from typing import TYPE_CHECKING

from lamina.daemon import wire
from lamina.daemon.wire import Hijacked

if TYPE_CHECKING:
    from runtime.attach import Attachment

Conn = tuple[Hijacked, "asyncio.Future[None] | None"]


def console_size(value: object) -> tuple[int, int] | None:
    """Docker's ``ConsoleSize`` ``[rows, cols]``; None when absent or zero (no terminal)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        with contextlib.suppress(TypeError, ValueError):
            rows, cols = int(value[0]), int(value[1])
            if rows > 0 and cols > 0:
                return rows, cols
    return None


class Session:
    """A running terminal container the daemon is the monitor's caller of: the connections
    that see its output (a list shared with the thread that streams it) and take its keys."""

    def __init__(self, att: "Attachment", conns: list[Conn], loop: asyncio.AbstractEventLoop) -> None:
        self.att = att
        self.conns = conns
        self.loop = loop
        self.lock = threading.Lock()
        self.over = False

    def add(self, h: Hijacked, fut: "asyncio.Future[None] | None", *, stdin: bool) -> bool:
        """Attach one more connection; False if the container has already ended."""
        with self.lock:
            if self.over:
                return False
            self.conns.append((h, fut))
        if stdin:
            self.keys_from(h)
        return True

    def keys_from(self, h: Hijacked) -> None:
        """Copy a connection's input to the pty in a thread of its own until the client closes
        its side (the output goes on: a terminal's stdin is not closed by a client's end)."""

        def pump() -> None:
            while True:
                data = h.read()
                if not data or not self.att.send_input(data):
                    return

        threading.Thread(target=pump, daemon=True, name="lamina-tty-keys").start()

    def resize(self, rows: int, cols: int) -> None:
        self.att.resize(rows, cols)

    def end(self) -> list[Conn]:
        """The container ended: no more connections; the ones attached (the caller closes them)."""
        with self.lock:
            self.over = True
            got = list(self.conns)
            self.conns.clear()
        return got


class Sink:
    """``runtime.wait``'s ``out``/``err``: to every attached connection (frames, or raw bytes for
    a terminal, as each ``Hijacked`` was made). A connection whose client has gone is dropped
    and its waiting handler released."""

    def __init__(self, conns: list[Conn], kind: int, lock: threading.Lock, loop: asyncio.AbstractEventLoop) -> None:
        self.conns = conns
        self.kind = kind
        self.lock = lock
        self.loop = loop

    def write(self, data: bytes) -> int:
        with self.lock:
            now = list(self.conns)
        for h, fut in now:
            if not h.write(self.kind, bytes(data)):
                with self.lock:
                    self.conns[:] = [c for c in self.conns if c[0] is not h]
                if fut is not None:
                    self.loop.call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))
        return len(data)

    def flush(self) -> None:
        pass


# ---- exec -t ------------------------------------------------------------------------------------
class ExecTerminal:
    """An exec's pty master while its process runs, and the size the client asked for (a resize
    may come before the runtime has made the pty)."""

    def __init__(self, size: tuple[int, int] | None) -> None:
        self.lock = threading.Lock()
        self.master: int | None = None
        self.size = size

    def resize(self, rows: int, cols: int) -> None:
        from runtime import tty

        with self.lock:
            self.size = (rows, cols)
            if self.master is not None:
                with contextlib.suppress(OSError):
                    tty.set_window_size(self.master, rows, cols)

    def relay(self, master: int, h: Hijacked, stdin: bool) -> None:
        """``runtime.exec_``'s ``terminal``: the pty to the connection (and its keys to the pty)
        until the pty ends. The master is closed by the caller once this returns, so the key
        pump writes to it only under the lock while it is still ours."""
        from runtime import tty

        with self.lock:
            self.master = master
            if self.size is not None:
                with contextlib.suppress(OSError):
                    tty.set_window_size(master, *self.size)
        if stdin:
            threading.Thread(target=self._keys, args=(h,), daemon=True, name="lamina-exec-keys").start()
        try:
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave end closed
                    break
                if not data or not h.write(wire.STDOUT, data):
                    break
        finally:
            with self.lock:
                self.master = None

    def _keys(self, h: Hijacked) -> None:
        while True:
            data = h.read()
            if not data:
                return
            with self.lock:
                if self.master is None:
                    return
                try:
                    os.write(self.master, data)
                except OSError:
                    return
