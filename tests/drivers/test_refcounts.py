"""``RefCounts`` (the per-layer ``get`` counts drivers share across processes), through its
public calls only: the mount runs on the first hold and the unmount on the last, whatever the
number of processes racing; a failing mount or unmount changes no count. (How the counts are
kept on disk is the class's business and is not looked at here.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drivers.base import CacheID

try:
    from drivers.refcounts import RefCounts
except ImportError:  # before RefCounts moved out of drivers.base
    from drivers.base import RefCounts  # type: ignore[attr-defined,no-redef]

REPO = Path(__file__).resolve().parents[2]
X, Y = CacheID("x"), CacheID("y")


def test_first_hold_mounts_and_last_release_unmounts(tmp_path: Path) -> None:
    rc = RefCounts(tmp_path)
    calls: list[str] = []
    assert rc.count(X) == 0 and list(rc.held()) == []
    assert rc.increment(X, on_first=lambda: calls.append("mount")) == 1
    assert rc.increment(X, on_first=lambda: calls.append("mount")) == 2
    assert rc.increment(Y) == 1
    assert calls == ["mount"] and sorted(rc.held()) == ["x", "y"]
    assert rc.decrement(X, on_last=lambda: calls.append("umount")) == 1
    assert calls == ["mount"] and rc.count(X) == 1
    assert rc.decrement(X, on_last=lambda: calls.append("umount")) == 0
    assert calls == ["mount", "umount"] and list(rc.held()) == ["y"]
    assert rc.decrement(X, on_last=lambda: calls.append("again")) == 0  # at zero: nothing runs
    assert calls == ["mount", "umount"]


def test_failing_mount_or_unmount_changes_no_count(tmp_path: Path) -> None:
    rc = RefCounts(tmp_path)

    def fail() -> None:
        raise OSError("refused")

    with pytest.raises(OSError):
        rc.increment(X, on_first=fail)
    assert rc.count(X) == 0 and list(rc.held()) == []
    rc.increment(X)
    with pytest.raises(OSError):
        rc.decrement(X, on_last=fail)
    assert rc.count(X) == 1  # still held: the mount is still there
    assert rc.decrement(X) == 0


def test_counts_are_shared_by_every_instance_on_one_home(tmp_path: Path) -> None:
    a, b = RefCounts(tmp_path), RefCounts(tmp_path)
    a.increment(X)
    assert b.count(X) == 1 and list(b.held()) == ["x"]
    assert b.decrement(X) == 0 and a.count(X) == 0
    other = RefCounts(tmp_path / "other")  # another driver home: its own counts
    a.increment(Y)
    assert other.count(Y) == 0


def test_reset_drops_every_count(tmp_path: Path) -> None:
    rc = RefCounts(tmp_path)
    for _ in range(3):
        rc.increment(X)
    rc.increment(Y)
    rc.reset()
    assert rc.count(X) == rc.count(Y) == 0 and list(rc.held()) == []
    calls: list[str] = []
    assert rc.increment(X, on_first=lambda: calls.append("mount")) == 1 and calls == ["mount"]


HOLDER = """
import sys
from pathlib import Path
from drivers.base import CacheID
try:
    from drivers.refcounts import RefCounts
except ImportError:
    from drivers.base import RefCounts
home, log = Path(sys.argv[1]), Path(sys.argv[2])
rc = RefCounts(home)
def note(what):
    with open(log, "a") as f:
        f.write(what + "\\n")
rc.increment(CacheID("shared"), on_first=lambda: note("mount"))
print("held", flush=True)
sys.stdin.readline()  # stay alive (a holder) until told to let go
rc.decrement(CacheID("shared"), on_last=lambda: note("umount"))
print("released", flush=True)
"""


def test_racing_processes_mount_once_and_unmount_once(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.touch()
    n = 6
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "home"), str(log)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "held"
        rc = RefCounts(tmp_path / "home")
        assert rc.count(CacheID("shared")) == n and log.read_text() == "mount\n"
        for i, p in enumerate(procs):
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("go\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "released"
            assert rc.count(CacheID("shared")) == n - 1 - i
        for p in procs:
            assert p.wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert log.read_text() == "mount\numount\n" and list(RefCounts(tmp_path / "home").held()) == []
