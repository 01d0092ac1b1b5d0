"""The bottom layer (``drivers/sys``) and ``RefCounts``, on real files: locks taken and refused,
renames that refuse or swap, writes that appear whole or not at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.base import CacheID, RefCounts
from drivers.sys.durable import atomic_file, fsync_dir, start_writeback, syncfs
from drivers.sys.flock import Flock
from drivers.sys.libc import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2

REPO = Path(__file__).resolve().parents[3]


def test_flock_excludes_and_shares(tmp_path: Path) -> None:
    lock = tmp_path / "l"
    with Flock(lock) as held:
        assert held.acquired
        with Flock(lock, wait=False) as other:       # another open file description: refused
            assert not other.acquired
        with Flock(lock, shared=True, wait=False) as other:
            assert not other.acquired
    with Flock(lock, shared=True) as a, Flock(lock, shared=True, wait=False) as b:
        assert a.acquired and b.acquired
        with Flock(lock, wait=False) as ex:
            assert not ex.acquired
    assert (os.stat(lock).st_mode & 0o777) == 0o600


def test_flock_is_seen_by_another_process_and_dropped_on_close(tmp_path: Path) -> None:
    lock = tmp_path / "l"
    probe = ("import sys; from drivers.sys.flock import Flock\n"
             "with Flock(sys.argv[1], wait=False) as l: print(l.acquired)")
    run = lambda: subprocess.run([sys.executable, "-c", probe, str(lock)], cwd=REPO, check=True,  # noqa: E731
                                 capture_output=True, text=True).stdout.strip()
    with Flock(lock):
        assert run() == "False"
    assert run() == "True"


def test_flock_on_a_directory(tmp_path: Path) -> None:
    with Flock(tmp_path) as a:
        assert a.acquired
        with Flock(tmp_path, wait=False) as b:
            assert not b.acquired


def test_renameat2_noreplace_and_exchange(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("A")
    b.write_text("B")
    with pytest.raises(FileExistsError) as e:
        renameat2(a, b, RENAME_NOREPLACE)
    assert e.value.filename == str(b)
    renameat2(a, b, RENAME_EXCHANGE)
    assert (a.read_text(), b.read_text()) == ("B", "A")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        renameat2("a", "c", RENAME_NOREPLACE, dir_fd=fd)
    finally:
        os.close(fd)
    assert (tmp_path / "c").read_text() == "B" and not a.exists()


def test_atomic_file_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as f:
            f.write(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["out"]
    with atomic_file(target, 0o640) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["out"]
    assert (os.stat(target).st_mode & 0o777) == 0o640


def test_syncs_run_and_report_errors(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 8192)
    syncfs(tmp_path)
    fsync_dir(tmp_path)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        start_writeback(fd, 0, 8192)
    finally:
        os.close(fd)
    with pytest.raises(FileNotFoundError):
        syncfs(tmp_path / "missing")


def test_refcounts_count_across_instances(tmp_path: Path) -> None:
    a, b = RefCounts(tmp_path), RefCounts(tmp_path)    # two processes' views of one home
    calls: list[str] = []
    assert a.increment(CacheID("x"), on_first=lambda: calls.append("mount")) == 1
    assert b.increment(CacheID("x"), on_first=lambda: calls.append("mount")) == 2
    assert calls == ["mount"] and b.count(CacheID("x")) == 2 and list(a.held()) == ["x"]
    assert a.decrement(CacheID("x"), on_last=lambda: calls.append("umount")) == 1
    assert b.decrement(CacheID("x"), on_last=lambda: calls.append("umount")) == 0
    assert calls == ["mount", "umount"] and list(a.held()) == []
    assert a.decrement(CacheID("x")) == 0                  # at zero: a no-op


def test_refcounts_a_failing_mount_changes_nothing(tmp_path: Path) -> None:
    rc = RefCounts(tmp_path)

    def fail() -> None:
        raise OSError("mount refused")

    with pytest.raises(OSError):
        rc.increment(CacheID("y"), on_first=fail)
    assert rc.count(CacheID("y")) == 0


def test_refcounts_set_and_reset(tmp_path: Path) -> None:
    rc = RefCounts(tmp_path)
    with rc.locked():
        rc.set(CacheID("a"), 3)
        rc.set(CacheID("b"), 1)
    assert sorted(rc.held()) == ["a", "b"] and rc.count(CacheID("a")) == 3
    with rc.locked():
        rc.set(CacheID("b"), 0)
    assert list(rc.held()) == ["a"]
    rc.reset()
    assert list(rc.held()) == [] and rc.count(CacheID("a")) == 0
    assert not any(p.name.startswith(".") for p in rc.dir.iterdir())   # no temp files left


def _in_child(tmp_path: Path, code: str) -> None:
    """Run ``code`` with ``rc = RefCounts(home)`` in a process of its own, which then exits."""
    script = f"import sys; from pathlib import Path; from drivers.base import RefCounts\nrc = RefCounts(Path(sys.argv[1]))\n{code}"
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=REPO)


def test_refcounts_of_a_process_that_ended_are_dropped_kept_ones_stay(tmp_path: Path) -> None:
    rc = RefCounts(tmp_path)
    rc.increment(CacheID("mine"))
    _in_child(tmp_path, "rc.increment('mine'); rc.increment('gone'); rc.increment('kept'); rc.keep('kept')")
    assert rc.count(CacheID("mine")) == 1       # the child's count went with it, ours stays
    assert rc.count(CacheID("gone")) == 0 and rc.count(CacheID("kept")) == 1
    assert sorted(rc.held()) == ["kept", "mine"]
    calls: list[str] = []
    assert rc.decrement(CacheID("kept"), on_last=lambda: calls.append("umount")) == 0  # any process
    assert calls == ["umount"]
    with rc.locked():
        assert rc.add(CacheID("gone")) == 1     # the dead holder's line is dropped on the next change
    assert (rc.dir / "gone").read_text().count("\n") == 1


def test_refcounts_put_takes_its_own_count_first(tmp_path: Path) -> None:
    rc = RefCounts(tmp_path)
    rc.increment(CacheID("x"))
    with rc.locked():
        rc.set(CacheID("x"), 1)                 # one kept count (replaces ours)
    rc.increment(CacheID("x"))
    _in_child(tmp_path, "rc.decrement('x')")    # another process's put: takes the kept one
    assert rc.count(CacheID("x")) == 1
    _in_child(tmp_path, "rc.increment('y'); rc.keep('y')")
    rc.increment(CacheID("y"))
    rc.decrement(CacheID("y"))                  # ours goes, the kept one stays
    assert rc.count(CacheID("y")) == 1 and "kept 1" in (rc.dir / "y").read_text()


def test_refcounts_old_format_and_reused_pids(tmp_path: Path) -> None:
    rc = RefCounts(tmp_path)
    (rc.dir / "old").write_text("2")            # a bare count, from before holders: kept
    (rc.dir / "reused").write_text(f"{os.getpid()}:1 5\n")  # our pid, another start time
    (rc.dir / "junk").write_text("x y z\n")
    assert rc.count(CacheID("old")) == 2
    assert rc.count(CacheID("reused")) == 0 and rc.count(CacheID("junk")) == 0
    assert list(rc.held()) == ["old"]


def test_flock_waits_for_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "l"
    hold = ("import sys, time; from drivers.sys.flock import Flock\n"
            "with Flock(sys.argv[1]):\n    print('held', flush=True); time.sleep(0.3)")
    p = subprocess.Popen([sys.executable, "-c", hold, str(lock)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        with Flock(lock) as mine:             # blocks until the child lets go
            assert mine.acquired
            assert p.wait(10) == 0            # the child could finish: it was not waiting on us
    finally:
        p.kill()
        p.wait()
