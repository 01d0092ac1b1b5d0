"""``drivers.sys.flock.Flock``: what ``test_sys.py`` leaves out. A lock dies with its holder
(even a SIGKILLed one: nothing to clean up), an error while opening leaks no descriptor, and a
lock is per open file description, so one process can exclude itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.sys.flock import Flock

REPO = Path(__file__).resolve().parents[3]
HOLD = ("import sys, time; from drivers.sys.flock import Flock\n"
        "with Flock(sys.argv[1]) as l:\n    print(l.acquired, flush=True); time.sleep(60)")


def test_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    lock = tmp_path / "l"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "True"
        with Flock(lock, wait=False) as other:
            assert not other.acquired
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
        with Flock(lock, wait=False) as mine:  # at once: the kernel dropped it with the process
            assert mine.acquired
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert lock.exists()  # the file stays: it is never removed


def test_exit_releases_and_the_object_can_be_used_again(tmp_path: Path) -> None:
    lock = Flock(tmp_path / "l")
    with lock:
        assert lock.acquired and lock.fd >= 0
    assert not lock.acquired and lock.fd == -1
    with Flock(tmp_path / "l", wait=False) as again:  # released: free for anyone at once
        assert again.acquired
    with lock:  # re-entered after release
        with Flock(tmp_path / "l", wait=False) as other:
            assert not other.acquired


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_failures_leak_no_descriptor(tmp_path: Path) -> None:
    before = _open_fds()
    with pytest.raises(FileNotFoundError):
        with Flock(tmp_path / "no" / "such" / "dir" / "l"):
            pass
    with Flock(tmp_path / "l"):
        with Flock(tmp_path / "l", wait=False) as other:
            assert not other.acquired
        assert len(_open_fds() - before) == 1  # the refused one closed its fd on exit; ours is open
    assert _open_fds() == before
