"""Terminals: the runtime's console socket, the user's terminal in raw mode, window sizes.

A container with ``Tty`` gets a pty made by the runtime inside it; the runtime hands the master
end to whoever listens on ``--console-socket`` (an ``AF_UNIX`` stream socket; the fd comes as
``SCM_RIGHTS`` ancillary data). For ``run -t`` that is the container's monitor, which copies the
master to the log and an attached caller; for ``exec -t`` it is the caller itself. A socket path
must fit in ``sun_path`` (108 bytes) however deep the store is, so the listener binds a name
relative to a directory it has entered, and the runtime, started in that directory, connects to
the same relative name."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import termios
from collections.abc import Iterator

CONSOLE_SOCKET = "console.sock"


def listen_console(directory: str, *, relative: bool = True) -> socket.socket:
    """A listening socket at ``directory/console.sock``. ``relative``: bound by a relative name,
    the process's working directory becoming ``directory`` (the monitor's way; the runtime it
    starts there connects to the same relative name); else by its absolute path, which must be
    short (``exec`` makes a directory in /tmp for it)."""
    path = CONSOLE_SOCKET if relative else os.path.join(directory, CONSOLE_SOCKET)
    if relative:
        os.chdir(directory)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.bind(path)
    s.listen(1)
    return s


def receive_master(listener: socket.socket) -> int:
    """Accept the runtime's connection and return the pty master fd it sends.
    Raises OSError if the runtime sent none."""
    conn, _ = listener.accept()
    with conn:
        _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 4)
    if not fds:
        raise OSError("the runtime sent no terminal")
    for extra in fds[1:]:
        os.close(extra)
    os.set_inheritable(fds[0], False)
    return fds[0]


def window_size(fd: int) -> tuple[int, int] | None:
    """(rows, cols) of the terminal at ``fd``; None if it is not a terminal."""
    try:
        rows, cols, _x, _y = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return (rows, cols) if rows and cols else None


def set_window_size(fd: int, rows: int, cols: int) -> None:
    """Resize a pty (the kernel sends SIGWINCH to its foreground process group)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@contextlib.contextmanager
def raw(fd: int) -> Iterator[None]:
    """The terminal at ``fd`` in raw mode (keys go through as they are typed, Ctrl-C included,
    to the container's own line discipline), restored on the way out whatever happens. A
    non-terminal ``fd`` is left alone."""
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    import tty as _tty

    try:
        _tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def proxy(master: int, stdin_fd: int | None, out_fd: int, size_fd: int | None) -> None:
    """Copy a pty master to ``out_fd`` and ``stdin_fd`` (if given) to the master until the
    master ends (every slave end closed: the process and its children are gone); the pty's
    size follows the terminal at ``size_fd`` (SIGWINCH)."""
    import select
    import signal

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    old_winch = signal.signal(signal.SIGWINCH, lambda *_: None)

    def resize() -> None:
        size = window_size(size_fd) if size_fd is not None else None
        if size is not None:
            with contextlib.suppress(OSError):
                set_window_size(master, *size)

    try:
        resize()
        fds = [master, wake_r] + ([stdin_fd] if stdin_fd is not None else [])
        while True:
            ready, _, _ = select.select(fds, [], [])
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                resize()
            if stdin_fd is not None and stdin_fd in ready:
                data = os.read(stdin_fd, 65536)
                if data:
                    os.write(master, data)
                else:
                    fds.remove(stdin_fd)
                    stdin_fd = None
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the slave side is closed
                    data = b""
                if not data:
                    return
                os.write(out_fd, data)
    finally:
        signal.signal(signal.SIGWINCH, old_winch)
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)
