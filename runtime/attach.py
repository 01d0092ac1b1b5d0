"""The caller's end of a container's monitor (``runtime.monitor``): the handshake (the
container started, or why it could not), the output stream, and the hand-over of the exit.
Frames as ``runtime.frames`` defines them."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import BinaryIO

from graph import LaminaError
from runtime.frames import DONE, EXIT, FAILED, HEADER, HELLO, RESIZE, STARTED, STDERR, STDIN, STDOUT, pack, resize_body
from runtime.paths import Paths
from runtime.proc import start_time
from runtime.records import Record
from runtime.state import Exit

START_TIMEOUT = 120.0


class Started(Record):
    """The container runs: init's pid, when, and the monitor's identity (pid, start time)."""

    __slots__ = ("pid", "started_ns", "monitor_pid", "monitor_start")
    pid: int
    started_ns: int
    monitor_pid: int
    monitor_start: int


# ---- the caller's side ---------------------------------------------------------------------------
class Attachment:
    """The CLI's end of the monitor's socket."""

    def __init__(self, sock: socket.socket, paths: Paths) -> None:
        self.sock = sock
        self.paths = paths
        self.monitor_pid = 0
        self.monitor_start = 0
        self.child = 0  # the monitor is our child until we exit: reap it if it ends first
        self._send = threading.Lock()  # frames to the monitor may come from several threads

    def send_input(self, data: bytes) -> bool:
        """Keys for a terminal container's pty (from any thread); False once the monitor is gone."""
        return self._frame_out(STDIN, data)

    def resize(self, rows: int, cols: int) -> bool:
        """Set a terminal container's window size (from any thread); False once the monitor is gone."""
        return self._frame_out(RESIZE, resize_body(rows, cols))

    def _frame_out(self, kind: int, body: bytes) -> bool:
        try:
            with self._send:
                self.sock.sendall(pack(kind, body))
            return True
        except OSError:
            return False

    def _recv_exact(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def frame(self) -> tuple[int, bytes] | None:
        head = self._recv_exact(HEADER.size)
        if head is None:
            return None
        kind, size = HEADER.unpack(head)
        body = self._recv_exact(size) if size else b""
        if body is None:
            return None
        return kind, body

    def _monitor_failure(self) -> str:
        try:
            with open(self.paths.monitor_log, encoding="utf-8", errors="replace") as f:
                lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
        except OSError:
            lines = []
        return lines[-1] if lines else "it exited without a word"

    def handshake(self, timeout: float = START_TIMEOUT) -> Started:
        """Wait until the container runs. Raises LaminaError with the runtime's message if it
        could not start it."""
        self.sock.settimeout(timeout)
        try:
            while True:
                got = self.frame()
                if got is None:
                    raise LaminaError(f"container {self.paths.container_id[:12]}: the monitor failed: "
                                      f"{self._monitor_failure()}")
                kind, body = got
                if kind == HELLO:
                    d = json.loads(body)
                    self.monitor_pid, self.monitor_start = int(d["pid"]), int(d["start"])
                elif kind == FAILED:
                    raise LaminaError(json.loads(body)["error"])
                elif kind == STARTED:
                    d = json.loads(body)
                    return Started(int(d["pid"]), int(d["started"]), self.monitor_pid, self.monitor_start)
        except TimeoutError:
            raise LaminaError(f"container {self.paths.container_id[:12]}: not started after {timeout:.0f} s") from None
        finally:
            self.sock.settimeout(None)

    def stream(self, out: BinaryIO, err: BinaryIO) -> Exit | None:
        """Copy the container's output until it exits; its exit, or None if the monitor went
        away without saying (killed: the container may run on; ``reconcile`` decides)."""
        while True:
            got = self.frame()
            if got is None:
                return None
            kind, body = got
            if kind == STDOUT:
                out.write(body)
                out.flush()
            elif kind == STDERR:
                err.write(body)
                err.flush()
            elif kind == EXIT:
                return Exit.from_json(json.loads(body))

    def stream_tty(self, out: BinaryIO, stdin_fd: int | None, *, window: bool = True) -> Exit | None:
        """``stream`` for a terminal container: its output to ``out`` as it comes, and, with
        ``stdin_fd``, the keys read there sent to its pty; with ``window`` the window size
        follows this process's terminal (SIGWINCH: the main thread only). The caller puts its
        terminal in raw mode. A caller in another thread (the daemon) passes ``window=False``
        and sends keys and sizes itself (``send_input``, ``resize``)."""
        import select
        import signal

        from runtime import tty

        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        if window:
            old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
            old_winch = signal.signal(signal.SIGWINCH, lambda *_: None)
        watch = None
        if window:
            watch = stdin_fd if stdin_fd is not None else (out.fileno() if _isatty(out) else None)

        def send_size() -> None:
            size = tty.window_size(watch) if watch is not None else None
            if size is not None:
                self.resize(*size)

        try:
            send_size()
            fds = [self.sock.fileno(), wake_r] + ([stdin_fd] if stdin_fd is not None else [])
            buf = bytearray()
            while True:
                ready, _, _ = select.select(fds, [], [])
                if wake_r in ready:
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    send_size()
                if stdin_fd is not None and stdin_fd in ready:
                    data = os.read(stdin_fd, 65536)
                    if data:
                        self.send_input(data)
                    else:
                        fds.remove(stdin_fd)  # end of input: the container goes on
                        stdin_fd = None
                if self.sock.fileno() in ready:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        return None
                    buf += chunk
                    while len(buf) >= HEADER.size:
                        kind, size = HEADER.unpack_from(buf)
                        if len(buf) < HEADER.size + size:
                            break
                        body = bytes(buf[HEADER.size:HEADER.size + size])
                        del buf[:HEADER.size + size]
                        if kind in (STDOUT, STDERR):
                            out.write(body)
                            out.flush()
                        elif kind == EXIT:
                            return Exit.from_json(json.loads(body))
        finally:
            if window:
                signal.signal(signal.SIGWINCH, old_winch)
                signal.set_wakeup_fd(old_wakeup)
            os.close(wake_r)
            os.close(wake_w)

    def wait_gone(self, timeout: float = 10.0) -> None:
        """After the socket closed without an exit: wait until the monitor has really ended
        (its socket closes before it is dead, and a dying monitor still looks alive)."""
        if self.child:
            try:
                os.waitpid(self.child, 0)  # ours: the kernel says when
            except ChildProcessError:
                pass
            self.child = 0
            return
        end = time.monotonic() + timeout
        while self.monitor_pid and start_time(self.monitor_pid) is not None and time.monotonic() < end:
            time.sleep(0.01)

    def detach(self) -> None:
        """Leave the container to the monitor (it records the exit itself)."""
        self.sock.close()
        self.reap()

    def finish(self) -> None:
        """The caller recorded the exit: tell the monitor, which then just exits (the runtime has
        deleted the container before the exit was reported, so nothing of it is left)."""
        try:
            self._frame_out(DONE, b"")
        finally:
            self.sock.close()
            self.reap()

    def reap(self) -> None:
        """Collect the monitor's exit status once it has ended (no zombie while we live on):
        now if it is over, else at the next ``spawn`` of this process."""
        if self.child:
            with _unreaped_lock:
                _unreaped.append(self.child)
            self.child = 0
        reap_children()


_unreaped: list[int] = []
_unreaped_lock = threading.Lock()  # the daemon starts and reaps monitors from many threads


def _isatty(f: BinaryIO) -> bool:
    try:
        return os.isatty(f.fileno())
    except (OSError, ValueError, AttributeError):
        return False


def reap_children() -> None:
    with _unreaped_lock:
        for pid in list(_unreaped):
            try:
                done = os.waitpid(pid, os.WNOHANG)[0] != 0
            except ChildProcessError:
                done = True
            if done:
                _unreaped.remove(pid)
