"""``drivers.sys.proc.pid_alive``: the liveness test behind pending rows, leases and volume
operations, on real processes."""

from __future__ import annotations

import os
import subprocess
import sys

from drivers.sys.proc import pid_alive


def test_live_and_dead_processes() -> None:
    assert pid_alive(os.getpid()) and pid_alive(1)
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert pid_alive(p.pid)
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(30)
    assert not pid_alive(p.pid)  # exited and reaped: gone


def test_a_zombie_still_counts_as_alive() -> None:
    # a dead child not yet waited for still holds its pid: nobody else can own it yet
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
    try:
        assert pid_alive(p.pid)
    finally:
        p.wait(30)
