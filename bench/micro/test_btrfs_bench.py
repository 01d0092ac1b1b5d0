"""Micro benchmarks of the btrfs driver: snapshots against chain depth, ioctl against the
``btrfs`` program, deletion, the disk a fresh container snapshot takes, apply throughput, and the
generation-based differ against the tree comparison.

Run: ``.venv/bin/python -m pytest bench/micro/test_btrfs_bench.py --benchmark-only``.
Needs root, a kernel with btrfs and btrfs-progs (only for the ``btrfs`` program rows). Everything
lives on sparse loop btrfs filesystems made for the module and torn down after it. Setup (building
a chain of 128 layers, making the snapshot a delete then removes) is not timed.

- ``test_snapshot``: one writable snapshot of the top layer of a chain of N layers, by ioctl
  (``BTRFS_IOC_SNAP_CREATE_V2``, what the driver does) and by ``btrfs subvolume snapshot`` in a
  subprocess (what a driver forking the tool per layer would pay). btrfs has no stacking, so
  depth as such does not matter; the time grows a little with the size of the source's tree
  (layer N holds 16*N files) and includes the transaction commit the kernel does for a snapshot.
- ``test_create_rw``: the driver's whole ``create_rw`` (temp name, snapshot, rename).
- ``test_delete``: deleting a fresh snapshot, ioctl (by id) against ``btrfs subvolume delete``.
  The kernel drops the tree later, in its cleaner thread; this is what the caller waits for.
- ``test_fresh_snapshot_disk_use``: bytes a new container layer takes on a 64 MiB image, from
  the qgroup's exclusive count (quotas on, own filesystem) and from statfs before and after;
  recorded in ``extra_info`` (the timed part is the snapshot).
- ``test_apply_throughput``: ``apply_diff`` of a 32 MiB, 1024-file tar into a fresh layer
  (includes the syncfs and the read-only flag); MB/s in ``extra_info``.
- ``test_changes``: ``changes`` of a container that touched 10 files of a 3000-file image,
  generation-based (``native``) against the generic tree comparison (``generic``), which must
  read every same-size file that came from a tar.
"""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Iterator

import pytest

from drivers import btrfs_ioctl as ioc
from drivers.base import CacheID
from tests.loopfs import LoopFS, leftovers, loopfs_skip_reason, make_loop_filesystem

if loopfs_skip_reason("btrfs"):
    pytest.skip(f"btrfs bench: {loopfs_skip_reason('btrfs')}", allow_module_level=True)

from drivers.btrfs import BtrfsDriver  # noqa: E402

DEPTHS = [1, 8, 64, 128]
_names = itertools.count()


def _tar(files: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted({os.path.dirname(n) for n in files if os.path.dirname(n)})
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tf.addfile(ti)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    return buf


@pytest.fixture(scope="module")
def fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopFS]:
    f = make_loop_filesystem(tmp_path_factory.mktemp("btrfs-bench"), "btrfs", "8G")
    try:
        yield f
    finally:
        f.close()
    assert not leftovers([f.image], [f.mountpoint])


@pytest.fixture(scope="module")
def chain(fs: LoopFS) -> tuple[BtrfsDriver, list[CacheID]]:
    """A driver with a chain of max(DEPTHS) read-only layers, each adding 16 small files."""
    d = BtrfsDriver(fs.mountpoint / "home")
    ids: list[CacheID] = []
    parent: CacheID | None = None
    for i in range(max(DEPTHS)):
        lid = CacheID(f"layer{i:04d}")
        d.create(lid, parent)
        d.apply_diff(lid, parent, _tar({f"l{i}/f{j}": os.urandom(512) for j in range(16)}))
        ids.append(lid)
        parent = lid
    return d, ids


def _fresh(d: BtrfsDriver) -> str:
    return f"snap{next(_names)}"


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("how", ["ioctl", "btrfs-program"])
def test_snapshot(benchmark, chain, depth: int, how: str) -> None:  # type: ignore[no-untyped-def]
    d, ids = chain
    src = d.subvolumes / ids[depth - 1]
    made: list[str] = []
    dfd = os.open(d.subvolumes, os.O_RDONLY | os.O_DIRECTORY)
    sfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)

    def setup() -> tuple[tuple[str], dict[str, object]]:
        while made:
            ioc.subvol_delete(dfd, made.pop())
        name = _fresh(d)
        made.append(name)
        return (name,), {}

    def by_ioctl(name: str) -> None:
        ioc.snapshot(sfd, dfd, name)

    def by_program(name: str) -> None:
        subprocess.run(["btrfs", "subvolume", "snapshot", str(src), str(d.subvolumes / name)],
                       check=True, capture_output=True)

    try:
        benchmark.pedantic(by_ioctl if how == "ioctl" else by_program, setup=setup,
                           rounds=30, warmup_rounds=2)
    finally:
        while made:
            ioc.subvol_delete(dfd, made.pop())
        os.close(dfd)
        os.close(sfd)
    benchmark.extra_info.update(depth=depth, how=how)


@pytest.mark.parametrize("depth", DEPTHS)
def test_create_rw(benchmark, chain, depth: int) -> None:  # type: ignore[no-untyped-def]
    d, ids = chain
    made: list[CacheID] = []

    def setup() -> tuple[tuple[CacheID], dict[str, object]]:
        while made:
            d.remove(made.pop())
        cid = CacheID(_fresh(d))
        made.append(cid)
        return (cid,), {}

    try:
        benchmark.pedantic(lambda cid: d.create_rw(cid, ids[depth - 1]), setup=setup,
                           rounds=30, warmup_rounds=2)
    finally:
        while made:
            d.remove(made.pop())
    benchmark.extra_info.update(depth=depth)


@pytest.mark.parametrize("how", ["ioctl", "btrfs-program"])
def test_delete(benchmark, chain, how: str) -> None:  # type: ignore[no-untyped-def]
    d, ids = chain
    dfd = os.open(d.subvolumes, os.O_RDONLY | os.O_DIRECTORY)
    sfd = os.open(d.subvolumes / ids[-1], os.O_RDONLY | os.O_DIRECTORY)
    left: list[str] = []

    def setup() -> tuple[tuple[str], dict[str, object]]:
        name = _fresh(d)
        ioc.snapshot(sfd, dfd, name)
        (d.subvolumes / name / "written").write_bytes(os.urandom(64 << 10))  # a used container
        left.append(name)
        return (name,), {}

    def by_ioctl(name: str) -> None:
        with ioc.opendir(d.subvolumes / name) as fd:
            sid = ioc.subvol_info(fd).id
        ioc.subvol_delete_by_id(dfd, sid)
        left.remove(name)

    def by_program(name: str) -> None:
        subprocess.run(["btrfs", "subvolume", "delete", str(d.subvolumes / name)],
                       check=True, capture_output=True)
        left.remove(name)

    try:
        benchmark.pedantic(by_ioctl if how == "ioctl" else by_program, setup=setup,
                           rounds=30, warmup_rounds=2)
    finally:
        for name in left:
            ioc.subvol_delete(dfd, name)
        os.close(dfd)
        os.close(sfd)
    benchmark.extra_info.update(how=how)


@pytest.mark.parametrize("quota", ["full", "simple"])
def test_fresh_snapshot_disk_use(benchmark, tmp_path: Path, quota: str) -> None:  # type: ignore[no-untyped-def]
    qfs = make_loop_filesystem(tmp_path, "btrfs", "2G", name=f"quota-{quota}")
    try:
        d = BtrfsDriver(qfs.mountpoint / "home")
        assert d.enable_quota(simple=quota == "simple") == quota
        base = CacheID("image")
        d.create(base, None)
        d.apply_diff(base, None, _tar({f"f{i}": os.urandom(1 << 20) for i in range(64)}))
        made: list[CacheID] = []

        def setup() -> tuple[tuple[CacheID], dict[str, object]]:
            while made:
                d.remove(made.pop())
            cid = CacheID(_fresh(d))
            made.append(cid)
            return (cid,), {}

        benchmark.pedantic(lambda cid: d.create_rw(cid, base), setup=setup, rounds=10)
        with ioc.opendir(d.subvolumes) as fd:
            ioc.sync(fd)
        used_before = _used(d)
        d.create_rw(CacheID("measured"), base)
        with ioc.opendir(d.subvolumes) as fd:
            ioc.sync(fd)
        used_after = _used(d)
        usage = d.layer_usage(CacheID("measured"))
        image = d.layer_usage(base)
        assert usage is not None and image is not None
        benchmark.extra_info.update(
            quota=quota, image_rfer_bytes=image.rfer, snapshot_excl_bytes=usage.excl,
            snapshot_rfer_bytes=usage.rfer, statfs_delta_bytes=used_after - used_before)
        d.cleanup()
    finally:
        qfs.close()


def _used(d: BtrfsDriver) -> int:
    v = os.statvfs(d.subvolumes)
    return (v.f_blocks - v.f_bfree) * v.f_frsize


def test_apply_throughput(benchmark, fs: LoopFS) -> None:  # type: ignore[no-untyped-def]
    d = BtrfsDriver(fs.mountpoint / "apply-home")
    payload = _tar({f"d{i % 32}/f{i}": os.urandom(32 << 10) for i in range(1024)}).getvalue()
    made: list[CacheID] = []

    def setup() -> tuple[tuple[CacheID], dict[str, object]]:
        while made:
            d.remove(made.pop())
        cid = CacheID(_fresh(d))
        d.create(cid, None)
        made.append(cid)
        return (cid,), {}

    def apply(cid: CacheID) -> int:
        return d.apply_diff(cid, None, io.BytesIO(payload))

    try:
        benchmark.pedantic(apply, setup=setup, rounds=8, warmup_rounds=1)
    finally:
        while made:
            d.remove(made.pop())
    mb = len(payload) / 1e6
    benchmark.extra_info.update(tar_mb=round(mb, 1), files=1024,
                                mb_per_s=round(mb / benchmark.stats.stats.median, 1))


@pytest.fixture(scope="module")
def touched(fs: LoopFS) -> tuple[BtrfsDriver, CacheID, CacheID]:
    d = BtrfsDriver(fs.mountpoint / "changes-home")
    img, ctr = CacheID("image"), CacheID("container")
    d.create(img, None)
    d.apply_diff(img, None, _tar({f"usr/d{i % 60}/f{i}": os.urandom(4096) for i in range(3000)}))
    d.create_rw(ctr, img)
    root = Path(d.get(ctr))
    for i in range(0, 3000, 301):      # 10 files in 10 different dirs
        (root / f"usr/d{i % 60}/f{i}").write_bytes(b"changed")
    d.put(ctr)
    return d, ctr, img


@pytest.mark.parametrize("how", ["native", "generic"])
def test_changes(benchmark, touched, how: str) -> None:  # type: ignore[no-untyped-def]
    d, ctr, img = touched
    fn = d.changes if how == "native" else d.generic_changes
    result = benchmark.pedantic(fn, args=(ctr, img), rounds=5, warmup_rounds=1)
    assert len(result) == 10 + 10 + 1       # 10 files, their 10 dirs, /usr
    benchmark.extra_info.update(how=how, image_files=3000, changed_files=10)
