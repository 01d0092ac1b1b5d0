"""The simulator's model, checked on its own (so a trial that passes means lamina is right, not
that the simulator keeps everything), and the bugs the trials found, each as a minimal scenario.

Each test mounts a tmpfs and the simulator itself and takes both down afterwards.
"""

from __future__ import annotations

import ast
import ctypes
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import small_image, write_oci_layout
from tests.powercut.harness import Machine, scratch_tmpfs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts tmpfs and FUSE: needs root"),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse"),
]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    with scratch_tmpfs(tmp_path / "tmpfs", size="512m") as t:
        m = Machine(t, tmp_path / "mnt")
        m.boot()
        try:
            yield m
        finally:
            m.close()


def _write(p: Path, data: bytes, *, fsync: bool = False) -> None:
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cut(m: Machine) -> Path:
    m.control("cut_at", 1)
    with pytest.raises(OSError):
        _write(m.mountpoint / "after-the-cut", b"x")
    m.power_cut_and_reboot()
    return m.mountpoint


# ---- the model -------------------------------------------------------------------------------
def test_only_what_posix_makes_durable_survives(machine: Machine) -> None:
    mp = machine.mountpoint
    os.mkdir(mp / "d")
    _fsync_dir(mp)
    _write(mp / "d/synced", b"data and name synced", fsync=True)
    _write(mp / "d/unsynced", b"name synced, data not")
    _fsync_dir(mp / "d")
    _write(mp / "d/nameless", b"data synced, name not", fsync=True)
    _write(mp / "d/synced", b"overwritten, not synced")  # the durable bytes are the earlier ones
    os.rename(mp / "d/unsynced", mp / "d/renamed")  # the directory is not synced again
    os.mkdir(mp / "newdir")  # its parent is not synced
    after = _cut(machine)
    assert sorted(os.listdir(after / "d")) == ["synced", "unsynced"]
    assert (after / "d/synced").read_bytes() == b"data and name synced"
    assert (after / "d/unsynced").read_bytes() == b""  # moby's zero-length file
    assert not (after / "newdir").exists()


def test_unlink_and_replace_without_a_directory_sync_are_undone(machine: Machine) -> None:
    mp = machine.mountpoint
    _write(mp / "a", b"old a", fsync=True)
    _write(mp / "b", b"old b", fsync=True)
    _fsync_dir(mp)
    os.unlink(mp / "a")
    _write(mp / "tmp", b"new b", fsync=True)
    os.replace(mp / "tmp", mp / "b")  # rename without syncing the directory
    after = _cut(machine)
    assert (after / "a").read_bytes() == b"old a"
    assert (after / "b").read_bytes() == b"old b"


def test_hard_links_and_symlinks_keep_their_identity(machine: Machine) -> None:
    mp = machine.mountpoint
    _write(mp / "f", b"linked", fsync=True)
    os.link(mp / "f", mp / "g")
    os.symlink("f", mp / "s")
    os.mkdir(mp / "d")
    os.symlink("d", mp / "to-dir")
    os.symlink("d", mp / "to-dir-synced-by-syncfs")
    _fsync_dir(mp)
    after = _cut(machine)
    assert os.stat(after / "f").st_ino == os.stat(after / "g").st_ino
    assert os.readlink(after / "s") == "f" and (after / "g").read_bytes() == b"linked"
    assert os.readlink(after / "to-dir") == "d"
    machine.sync()  # the same through the whole-tree walk of a syncfs
    after = _cut(machine)
    assert os.readlink(after / "to-dir-synced-by-syncfs") == "d" and os.readlink(after / "s") == "f"


def test_syncfs_is_invisible_to_the_server_so_lamina_s_call_is_observed(machine: Machine) -> None:
    """The kernel sends a FUSE server nothing for syncfs(2): a bare syncfs keeps nothing. The
    marker ``lamina_main`` sets after lamina's own syncfs makes everything durable."""
    mp = machine.mountpoint
    _write(mp / "f", b"data")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(mp, os.O_RDONLY)
    try:
        assert libc.syncfs(fd) == 0
    finally:
        os.close(fd)
    assert "syncfs" not in machine.status()["ops"] and "fsync" not in machine.status()["ops"]
    after = _cut(machine)
    assert not (after / "f").exists()
    _write(after / "g", b"data")
    machine.sync()
    after = _cut(machine)
    assert (after / "g").read_bytes() == b"data"


# Every way to flush a filesystem that lamina may use, with why. The simulator sees a syncfs only
# through ``lamina_main``'s wrapper of ``drivers.sys.durable.libc``: any other way would be
# invisible to it, and the trials would then call data lost that lamina did sync.
SYNC_ALLOWED: dict[tuple[str, str], str] = {
    ("drivers/sys/durable.py", "syncfs"): "the one syncfs path: lamina_main wraps the handle it calls",
    ("drivers/sys/durable.py", "sync_file_range"): "start_writeback: SYNC_FILE_RANGE_WRITE only (no wait); "
                                                   "an fsync, which the simulator sees, follows",
    ("drivers/btrfs_ioctl.py", "IOC_SYNC"): "a btrfs transaction commit for TREE_SEARCH; btrfs never runs on "
                                            "the simulator (its mount is FUSE)",
}
_DURABLE_MODULE_NAMES = {"durable", "drivers.sys.durable"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def sync_paths(source: str) -> list[tuple[int, str]]:
    """``(line, kind)`` of every way to flush a filesystem in ``source``: a C ``syncfs``,
    ``sync`` or ``sync_file_range`` reached through any handle (``libc.syncfs``,
    ``CDLL(None).syncfs``, ``getattr(h, "syncfs")``), a ``syncfs`` of its own or imported from
    elsewhere than ``drivers.sys.durable``, ``os.sync``, ``sync(1)``, the btrfs sync ioctl. Calling
    ``drivers.sys.durable.syncfs`` (by name or through its module) is the one path, not listed."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Attribute):
            if node.attr == "syncfs" and _dotted(node.value) not in _DURABLE_MODULE_NAMES:
                found.append((line, "syncfs"))
            elif node.attr == "sync" and (_dotted(node.value) == "os" or "libc" in _dotted(node.value).lower()
                                          or isinstance(node.value, ast.Call)):
                found.append((line, "sync"))
            elif node.attr == "sync_file_range":
                found.append((line, "sync_file_range"))
            elif "IOC_SYNC" in node.attr:
                found.append((line, "IOC_SYNC"))
        elif isinstance(node, ast.Name) and "IOC_SYNC" in node.id:
            found.append((line, "IOC_SYNC"))
        elif isinstance(node, ast.FunctionDef) and node.name == "syncfs":
            found.append((line, "syncfs"))
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "syncfs" and node.module != "drivers.sys.durable":
                    found.append((line, "syncfs"))
                elif alias.name == "sync" and node.module == "os":
                    found.append((line, "sync"))
        elif isinstance(node, ast.Constant) and node.value in ("syncfs", "sync_file_range"):
            found.append((line, str(node.value)))  # getattr(handle, "syncfs"), dlsym by name
        elif isinstance(node, (ast.List, ast.Tuple)) and node.elts:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and first.value in ("sync", "/bin/sync", "/usr/bin/sync"):
                found.append((line, "sync"))  # an argv running sync(1)
    return found


@pytest.mark.parametrize("source, kinds", [
    ("import os\nos.sync()", ["sync"]),
    ("from os import sync\nsync()", ["sync"]),
    ("from drivers.sys.libc import libc\nlibc.syncfs(3)", ["syncfs"]),
    ("import ctypes\nctypes.CDLL(None).syncfs(3)", ["syncfs"]),
    ("import ctypes\nctypes.CDLL(None).sync()", ["sync"]),
    ("getattr(handle, 'syncfs')(3)", ["syncfs"]),
    ("def syncfs(path):\n    pass", ["syncfs"]),
    ("from somewhere import syncfs", ["syncfs"]),
    ("subprocess.run(['sync', '-f', p])", ["sync"]),
    ("_libc.sync_file_range(fd, 0, 0, 7)", ["sync_file_range"]),
    ("fcntl.ioctl(fd, BTRFS_IOC_SYNC)", ["IOC_SYNC"]),
    # the one path, and what is not a sync of a filesystem
    ("from drivers.sys.durable import syncfs\nsyncfs(home)", []),
    ("from drivers.sys import durable\ndurable.syncfs(home)", []),
    ("self.driver.sync()\nos.fsync(fd)\nos.fdatasync(fd)", []),
    ('"""calls ``drivers.sys.durable.syncfs`` once"""', []),
])
def test_rule_sync_paths_finds_each_way_to_sync(source: str, kinds: list[str]) -> None:
    """The scan below can fail: each planted way to sync is found, the one path is not."""
    assert [k for _, k in sync_paths(source)] == kinds


def test_lamina_calls_syncfs_only_through_drivers_sys_durable() -> None:
    """The wrapper observes ``drivers.sys.durable.libc.syncfs``; another way to sync would be
    invisible to the simulator, so there must be none (or an entry in SYNC_ALLOWED, with why)."""
    offenders = []
    seen = set()
    for pkg in ("graph", "drivers", "runtime", "lamina"):
        for p in sorted((REPO / pkg).rglob("*.py")):
            rel = str(p.relative_to(REPO))
            for line, kind in sync_paths(p.read_text()):
                if (rel, kind) in SYNC_ALLOWED:
                    seen.add((rel, kind))
                else:
                    offenders.append(f"{rel}:{line}: {kind}")
    assert offenders == []
    assert seen == set(SYNC_ALLOWED), "an allowance no longer matches anything: drop it"


def test_the_wrapper_sees_every_driver_sync(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``GraphDriver.sync`` of the drivers here reaches the handle ``lamina_main`` wraps: the name
    ``libc`` that ``durable.syncfs`` looks up at call time, the one handle of ``drivers.sys.libc``."""
    from drivers.base import LocalDriver
    from drivers.sys import durable, libc
    from tests.powercut import lamina_main

    assert durable.libc is libc.libc
    calls: list[int] = []

    class Spy:
        def syncfs(self, fd: int) -> int:
            calls.append(fd)
            return int(libc.libc.syncfs(fd))

    monkeypatch.setattr(durable, "libc", Spy())
    lamina_main.install(dev=-1)  # wraps the spy; st_dev is never -1, so no marker is set
    assert isinstance(durable.libc, lamina_main._ObservedLibc)
    driver = LocalDriver()
    driver.home = tmp_path
    driver.sync()
    assert len(calls) == 1


def test_sqlite_wal_commits_survive_with_synchronous_full_and_not_with_off(machine: Machine) -> None:
    """SQLite in WAL mode is modelled faithfully: the WAL's frames are durable at its fsync. The
    writer is a child that ends with ``os._exit`` (no close, so no checkpoint), as a crash would."""
    mp = machine.mountpoint
    script = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode = WAL")
c.execute("PRAGMA synchronous = FULL")
c.execute("CREATE TABLE t (x)")
c.execute("PRAGMA synchronous = " + sys.argv[2])
c.execute("INSERT INTO t VALUES (1)")
fd = os.open(os.path.dirname(sys.argv[1]), os.O_RDONLY)
os.fsync(fd)  # the names of the db and its -wal are durable in both cases
os._exit(0)
"""
    for mode, survives in (("FULL", 1), ("OFF", 0)):
        subprocess.run([sys.executable, "-c", script, str(mp / f"{mode}.db"), mode], check=True)
        after = _cut(machine)
        c = sqlite3.connect(after / f"{mode}.db")
        try:
            assert c.execute("SELECT count(*) FROM t").fetchone()[0] == survives, mode
        finally:
            c.close()


# ---- bugs the trials found -------------------------------------------------------------------
def test_a_container_created_just_before_a_power_cut_has_its_rw_layer(machine: Machine, tmp_path: Path) -> None:
    """Found by the trials: ``create`` recorded the container (SQLite synced) while the RW layer's
    names were not yet durable; after the cut, check reported ``RW layer ... missing``."""
    layout = write_oci_layout(tmp_path / "small", [(small_image(), "small:1")])
    assert machine.lamina("load", "-i", str(layout)).rc == 0
    assert machine.lamina("create", "--name", "c", "small:1").rc == 0
    _cut(machine)
    r = machine.lamina("system", "check")
    assert (r.rc, r.out) == (0, "ok\n"), r.out + r.err
    assert machine.lamina("rm", "c").rc == 0


def test_a_new_store_keeps_its_driver_binding_through_a_power_cut(machine: Machine) -> None:
    """Found by the trials: the ``driver`` file was written without fsync, while SQLite synced
    the directory holding it (at its WAL's creation), so a cut could leave it empty and the next
    open would bind another driver to a store full of the first one's layers."""
    machine.root.mkdir()
    _fsync_dir(machine.mountpoint)  # the user's root directory exists for good
    assert machine.lamina("images").rc == 0  # creates the store, bound to vfs
    _cut(machine)
    assert (machine.root / "driver").read_text() == "vfs\n"


def test_rm_of_a_container_whose_create_died_while_it_was_mounted(tmp_path: Path) -> None:
    """Found by the trials (vfs, cut inside ``create``): ``runtime.create`` records the container,
    then mounts its rootfs to prepare the bundle, then unmounts. A process that dies between the
    two (power cut or SIGKILL) left the mount count on disk, and ``rm`` then refused with
    "container ... is mounted: umount it first or use -f" on every try, after any reboot. Counts
    belong to their process now (``drivers.base.RefCounts``): a dead holder's count is gone."""
    from tests.cli.conftest import Lamina

    cli = Lamina(tmp_path / "root")
    cli("load", "-i", str(write_oci_layout(tmp_path / "small", [(small_image(), "small:1")])))
    script = (
        "import os, sys\n"
        "from graph import Store\n"
        "s = Store(sys.argv[1])\n"
        "c = s.create_container('small:1', name='c')\n"
        "s.containers.mount(c)\n"  # what runtime.create does before _prepare
        "os._exit(0)\n"  # and dies there
    )
    subprocess.run([sys.executable, "-c", script, str(cli.root)], check=True, cwd=REPO)
    r = cli("rm", "c", expect=None)
    assert r.rc == 0, r.err
