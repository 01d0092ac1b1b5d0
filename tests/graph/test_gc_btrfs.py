"""Crash debris on a real (loop-backed) btrfs: a create killed between snapshot and rename, live
creators' temp subvolumes, orphan subvolumes, and random kills during commit, pull and load that
must leave nothing after ``rmi`` + ``system prune``.

Needs root and btrfs (``tests.loopfs``); the pull trials also need Debian's docker-registry.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from graph import Store
from tests.graph.test_gc import big_image_layout, crash_at, load_images, registry_host  # noqa: F401
from tests.loopfs import LoopFS, loop_btrfs, loopfs_skip_reason  # noqa: F401

if loopfs_skip_reason("btrfs"):
    pytest.skip(loopfs_skip_reason("btrfs"), allow_module_level=True)

from drivers import btrfs_ioctl as ioc  # noqa: E402
from drivers.btrfs import BtrfsDriver  # noqa: E402

RANDOM_TRIALS = int(os.environ.get("LAMINA_GC_BTRFS_TRIALS", "3"))  # per operation; `make test-crash-long` raises it


@pytest.fixture
def root(loop_btrfs: LoopFS) -> Iterator[Path]:
    """A store root on the loop btrfs (so ``drivers/btrfs`` is on btrfs); its driver is cleaned
    up (and the fs checked for nothing mounted) by the fixtures."""
    r = loop_btrfs.mountpoint / "root"
    yield r
    if (r / "drivers" / "btrfs").exists():
        with Store(r, driver="btrfs") as s:
            s.driver.cleanup()


def _subvolumes(root: Path) -> list[str]:
    return sorted(os.listdir(root / "drivers" / "btrfs" / "subvolumes"))


def test_create_killed_between_snapshot_and_rename_is_swept_on_open(root: Path, tmp_path: Path) -> None:
    with Store(root, driver="btrfs") as s:
        load_images(s, tmp_path)
        base = s.resolve_image("base:1")
        kept = _subvolumes(root)
    crash_at(root, "btrfs", "btrfs:snapshotted", lambda s: s.create_container("base:1"))
    left = [n for n in _subvolumes(root) if n.startswith(".tmp-")]
    assert len(left) == 1  # the kill hit exactly between the snapshot and the rename
    with Store(root, driver="btrfs") as s:  # the driver's sweep on open
        assert _subvolumes(root) == kept
        assert os.listdir(s.driver.home / "creating") == []
        assert s.check() == []
        assert s.images.exists(base.id)


def test_live_creators_temp_subvolume_is_never_touched(root: Path) -> None:
    with Store(root, driver="btrfs") as s:
        drv = s.driver
        assert isinstance(drv, BtrfsDriver)
        with drv._creator_lock("c0ffee"), ioc.opendir(drv.subvolumes) as dfd:  # a live create
            ioc.subvol_create(dfd, ".tmp-c0ffee")
            other = BtrfsDriver(drv.home)  # another process opening: its sweep
            assert (drv.subvolumes / ".tmp-c0ffee").exists()
            assert other.leftovers() == [] and other.sweep() == []
            assert s.check(verify_blobs=False) == []
        # the creator died without renaming or deleting: now it is debris
        assert drv.leftovers() == ["subvolumes/.tmp-c0ffee"]
        problems = s.check(verify_blobs=False)
        assert [(p.kind, p.object) for p in problems] == [("driver", "subvolumes/.tmp-c0ffee")]
        assert s.prune().orphans == ["btrfs: subvolumes/.tmp-c0ffee"]
        assert _subvolumes(root) == [] and s.check() == []


def test_hand_made_temp_and_orphan_subvolumes_are_reported_and_pruned(root: Path) -> None:
    with Store(root, driver="btrfs") as s:
        with ioc.opendir(s.driver.subvolumes) as dfd:
            ioc.subvol_create(dfd, ".tmp-byhand")  # no creator lock at all
            ioc.subvol_create(dfd, "ab" * 16)  # a layer no row knows
        found = {(p.kind, p.object) for p in s.check(verify_blobs=False)}
        assert found == {("driver", "subvolumes/.tmp-byhand"), ("driver", "ab" * 16)}
        rep = s.prune()
        assert sorted(rep.orphans) == sorted([f"btrfs: {'ab' * 16}", "btrfs: subvolumes/.tmp-byhand"])
        assert _subvolumes(root) == [] and s.check() == []


# ---- random kills --------------------------------------------------------------------------------

def _commit(s: Store) -> None:
    c = s.create_container("app:1")
    path = Path(s.containers.mount(c))
    try:
        (path / "written.bin").write_bytes(os.urandom(1 << 20))
    finally:
        s.containers.unmount(c)
    s.commit(c.id, "committed:1")


def _load(tmp: Path) -> Callable[[Store], None]:
    def run(s: Store) -> None:
        from graph.archive import load_archive

        load_archive(s, big_image_layout(tmp))

    return run


def _pull(host: str) -> Callable[[Store], None]:
    def run(s: Store) -> None:
        from graph.distribution.pull import pull
        from graph.distribution.registry import RegistryOptions

        pull(s, f"{host}/big:1", options=RegistryOptions(insecure=frozenset({host})))

    return run


def _killed_after(root: Path, what: Callable[[Store], object], delay: float) -> int | None:
    def child() -> None:
        s = Store(root, driver="btrfs")
        what(s)
        os._exit(0)

    p = multiprocessing.get_context("fork").Process(target=child)
    p.start()
    p.join(delay)
    if p.exitcode is None:
        os.kill(p.pid, signal.SIGKILL)
        p.join(60)
    return p.exitcode


def _assert_empty_after_rmi_and_prune(root: Path) -> None:
    with Store(root, driver="btrfs") as s:
        for img in s.images.list():
            for c in s.containers.using_image(img.id):
                s.remove_container(c.id, force=True)
        for c in s.containers.list():
            s.remove_container(c.id, force=True)
        for img in s.images.list():
            s.rmi(img.id, force=True)
        s.prune(partial_age=None)
        assert s.images.list() == [] and s.layers.list() == []
        assert list(s.content.walk()) == []
        assert s.content.ingests() == []
        assert _subvolumes(root) == []
        assert os.listdir(s.driver.home / "creating") == []
        assert not (root / "locks").exists()
        assert s.db.query("SELECT * FROM pending") == [] and s.db.query("SELECT * FROM leases") == []
        assert sorted(os.listdir(root / "ingest")) == ["sweep.lock"]
        assert s.check() == []


@pytest.mark.parametrize("op", ["commit", "load", "pull"])
def test_random_kills_leave_nothing_after_rmi_and_prune(root: Path, tmp_path: Path, op: str,
                                                        request: pytest.FixtureRequest) -> None:
    what: Callable[[Store], Any]
    with Store(root, driver="btrfs") as s:
        load_images(s, tmp_path)
    if op == "commit":
        what = _commit
    elif op == "load":
        what = _load(tmp_path)
    else:
        what = _pull(request.getfixturevalue("registry_host"))
    t0 = time.monotonic()  # one undisturbed run tells how long the operation takes
    assert _killed_after(root, what, 120) == 0
    span = time.monotonic() - t0
    rng = random.Random(os.environ.get("LAMINA_GC_SEED", "21"))
    outcomes = []
    for _ in range(RANDOM_TRIALS):
        _assert_empty_after_rmi_and_prune(root)
        with Store(root, driver="btrfs") as s:
            load_images(s, tmp_path)
        outcomes.append(_killed_after(root, what, rng.uniform(0.05, 1.0) * span))
    _assert_empty_after_rmi_and_prune(root)
    assert any(code == -signal.SIGKILL for code in outcomes), outcomes  # the kills did land
