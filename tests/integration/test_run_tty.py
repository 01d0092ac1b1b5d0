"""Terminals end to end: the real ``lamina`` on a real pty (``os.openpty``: the test is the
terminal emulator), typing into ``run -it IMG sh`` and ``exec -it``, reading the screen, resizing
the window; crun and runc, overlay and vfs."""

from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import time

import pytest

from tests.cli.conftest import Lamina, clean_env, lamina_command
from tests.integration.test_run import cli, layout, until  # noqa: F401 - fixtures

RUNTIMES = [n for n in ("crun", "runc") if shutil.which(n)]


class PtyProcess:
    """A command with a pty as its controlling terminal, stdin, stdout and stderr (the test is
    the terminal emulator: it types, reads the screen and resizes the window)."""

    def __init__(self, cmd: list[str], env: dict[str, str], *, rows: int = 40, cols: int = 120) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols)
        self.saved = termios.tcgetattr(slave)

        def controlling() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, preexec_fn=controlling)
        self.slave = slave
        self.screen = b""

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[bytes]:
        end = time.monotonic() + timeout
        rx = re.compile(pattern.encode())
        while True:
            m = rx.search(self.screen)
            if m:
                self.screen = self.screen[m.end():]
                return m
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} on the screen; it shows {self.screen[-500:]!r}")
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    self.screen += os.read(self.master, 4096)
                except OSError:  # EIO once lamina has gone
                    time.sleep(0.05)

    def wait(self, timeout: float = 30.0) -> int:
        end = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < end:
            r, _, _ = select.select([self.master], [], [], 0.1)
            if r:
                try:
                    self.screen += os.read(self.master, 4096)
                except OSError:
                    pass
        return self.proc.wait(timeout=1)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


class Terminal(PtyProcess):
    """``lamina ARGS`` on a pty."""

    def __init__(self, cli: Lamina, *args: str, rows: int = 40, cols: int = 120) -> None:
        cmd = lamina_command() + ["--root", str(cli.root), "--driver", cli.driver, *args]
        super().__init__(cmd, clean_env(TERM="xterm"), rows=rows, cols=cols)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_run_it_gives_a_working_shell(cli: Lamina, rt: str) -> None:  # noqa: F811
    t = Terminal(cli, "--runtime", rt, "run", "--rm", "-it", "bb:1", "sh", rows=40, cols=120)
    try:
        t.expect(r"# ")  # busybox's prompt for root
        t.type("tty; stty size; echo $((6*7))\r")
        t.expect(r"/dev/pts/\d+\r\n40 120\r\n42\r\n")
        t.resize(50, 100)  # SIGWINCH to lamina, which resizes the container's pty
        time.sleep(0.3)
        t.type("stty size\r")
        t.expect(r"50 100\r\n")
        t.type("\x03")  # Ctrl-C goes to the container's shell, not to lamina
        t.expect(r"# ")
        t.type("exit 7\r")
        assert t.wait() == 7
        after = termios.tcgetattr(t.slave)
        assert after == t.saved  # the terminal is back in the mode it was in (not raw)
    finally:
        t.close()
    assert cli("ps", "-aq").out == ""


@pytest.mark.parametrize("rt", RUNTIMES)
def test_logs_of_a_tty_container_are_the_ptys_output(cli: Lamina, rt: str) -> None:  # noqa: F811
    cli("--runtime", rt, "run", "-d", "-t", "--name", "t", "bb:1", "sh", "-c", "echo hi; tty; echo err >&2")
    until(lambda: "Exited" in cli("ps", "-a").out)
    out = cli("logs", "t").out
    assert re.fullmatch(r"hi\r\n/dev/pts/\d+\r\nerr\r\n", out), repr(out)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_exec_it(cli: Lamina, rt: str) -> None:  # noqa: F811
    cli("--runtime", rt, "run", "-d", "--name", "box", "bb:1", "sleep", "60")
    t = Terminal(cli, "exec", "-it", "box", "sh", rows=33, cols=77)
    try:
        t.expect(r"# ")
        t.type("tty; stty size; echo $((6*7))\r")
        t.expect(r"/dev/pts/\d+\r\n33 77\r\n42\r\n")
        t.type("exit 3\r")
        assert t.wait() == 3
        assert termios.tcgetattr(t.slave) == t.saved
    finally:
        t.close()
    cli("rm", "-f", "box")
