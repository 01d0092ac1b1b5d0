"""Micro benchmarks of the fuse driver, side by side with the kernel's overlayfs and with
Debian's ``fuse-overlayfs`` on the same layers.

Run: ``.venv/bin/python -m pytest bench/micro/test_fuse_bench.py --benchmark-only``.
Needs root, FUSE and pyfuse3; the kernel overlay rows need overlayfs, the fuse-overlayfs rows the
``fuse-overlayfs`` program (Debian package ``fuse-overlayfs``). Everything lives on a
loop-mounted journaled ext4 made for the module (the root fs here has no journal).

The image is made here, deterministically from a seed, in the shape of MACHINE-NOTES' image A:
three layers, about 220 MB and 9.8k entries in all (a base of 6k files, a second layer of 2.5k
files that also rewrites 100 base files, an app layer of 800 small files with 3 whiteouts and an
opaque dir). It is applied once with the fuse driver and once with the overlay driver (the
layouts are the same); fuse-overlayfs mounts the overlay driver's diff dirs with an upper of its
own. Each row mounts a container layer afresh for every round (mounting is not timed), so the
FUSE page and dentry caches start empty; the ext4 below stays warm, as it would be on a host
running containers.

- ``test_cold_read``: read every regular file of the merged tree to its end (the Python reader
  is the same for every row).
- ``test_metadata_walk``: ``os.walk`` the merged tree and ``lstat`` every entry.
- ``test_copy_up_write``: append one byte to 300 lower files (200 B to 1 MiB): 300 copy-ups.
- ``test_get_put``: ``get`` + ``put`` of a container layer (lamina's drivers only): for the fuse
  driver a helper process start, mount, unmount and reap.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from bench.workloads.synthetic import MTIME, content
from drivers.sys import mount as mountapi
from drivers.base import CacheID
from drivers.sys.durable import syncfs

if os.geteuid() != 0:
    pytest.skip("needs root", allow_module_level=True)

from drivers.fuse import FuseDriver, supported  # noqa: E402

SEED = 7
PEERS = ["kernel-overlay", "fuse-overlayfs", "lamina-fuse"]
COPY_UPS = 300


# ---------------------------------------------------------------------------------------------
# the image


def _size(rng: random.Random) -> int:
    """Most files small, a few big (about 20 KiB on average, as a Debian root's files)."""
    r = rng.random()
    if r < 0.72:
        return rng.randint(200, 8 << 10)
    if r < 0.98:
        return rng.randint(8 << 10, 48 << 10)
    return rng.randint(48 << 10, 1 << 20)


def _add(tf: tarfile.TarFile, name: str, data: bytes | None = None, *, kind: bytes = tarfile.REGTYPE,
         target: str = "", mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.mtime, ti.type, ti.mode = MTIME, kind, mode
    if kind == tarfile.DIRTYPE:
        ti.mode = 0o755
    if kind == tarfile.SYMTYPE:
        ti.linkname = target
    if data is not None:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        tf.addfile(ti)


def _tree(tf: tarfile.TarFile, rng: random.Random, top: str, files: int) -> list[str]:
    """``files`` files in ``top``, 50 a dir, dirs 10 a parent dir, a symlink every 40 files."""
    names = []
    _add(tf, top, kind=tarfile.DIRTYPE)
    for i in range(files):
        a, b = divmod(i // 50, 10)
        if i % 500 == 0:
            _add(tf, f"{top}/d{a:02d}", kind=tarfile.DIRTYPE)
        if i % 50 == 0:
            _add(tf, f"{top}/d{a:02d}/e{b}", kind=tarfile.DIRTYPE)
        name = f"{top}/d{a:02d}/e{b}/f{i:05d}"
        if i % 40 == 39:
            _add(tf, name, kind=tarfile.SYMTYPE, target=f"f{i - 1:05d}")
        else:
            _add(tf, name, content(rng, _size(rng)))
            names.append(name)
    return names


def build_image(dir: Path) -> tuple[list[bytes], list[str]]:
    """The three layer tars and the names of the base's regular files."""
    rng = random.Random(SEED)
    tars = []
    bufs = [io.BytesIO() for _ in range(3)]
    with tarfile.open(fileobj=bufs[0], mode="w", format=tarfile.PAX_FORMAT) as tf:
        base = _tree(tf, rng, "usr", 6000)
    with tarfile.open(fileobj=bufs[1], mode="w", format=tarfile.PAX_FORMAT) as tf:
        _tree(tf, rng, "opt", 2500)
        _add(tf, "usr", kind=tarfile.DIRTYPE)
        for name in sorted(rng.sample(base, 100)):
            for parent in (name.rsplit("/", 2)[0], name.rsplit("/", 1)[0]):
                _add(tf, parent, kind=tarfile.DIRTYPE)
            _add(tf, name, content(rng, _size(rng)))
    with tarfile.open(fileobj=bufs[2], mode="w", format=tarfile.PAX_FORMAT) as tf:
        _tree(tf, rng, "app", 800)
        gone = sorted(rng.sample([n for n in base if not n.startswith("usr/d00/")], 3))
        for name in gone:
            head, tail = name.rsplit("/", 1)
            _add(tf, head.rsplit("/", 1)[0], kind=tarfile.DIRTYPE)
            _add(tf, head, kind=tarfile.DIRTYPE)
            _add(tf, f"{head}/.wh.{tail}", b"")
        _add(tf, "usr", kind=tarfile.DIRTYPE)
        _add(tf, "usr/d00", kind=tarfile.DIRTYPE)
        _add(tf, "usr/d00/.wh..wh..opq", b"")
        _add(tf, "usr/d00/replaced", b"the opaque dir's only file\n")
    for b in bufs:
        tars.append(b.getvalue())
    return tars, [n for n in base if not n.startswith("usr/d00/") and n not in gone]


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def loop_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from bench.fs import loop_filesystem, loopfs_unavailable

    reason = loopfs_unavailable("ext4")
    if reason:
        pytest.skip(reason)
    with loop_filesystem(tmp_path_factory.mktemp("fuse-bench"), "ext4", 4 << 30) as fs:
        yield fs.mountpoint


class Peer:
    """One way of mounting the image: ``mount()`` -> merged root, ``umount()``, and
    ``reset()`` to drop the container's changes."""

    def __init__(self, mount: Callable[[], str], umount: Callable[[], None],
                 reset: Callable[[], None]) -> None:
        self.mount, self.umount, self.reset = mount, umount, reset


def _apply(d: object, tars: list[bytes]) -> None:
    prev = None
    for i, t in enumerate(tars):
        id = CacheID(f"L{i}")
        d.create(id, prev)  # type: ignore[attr-defined]
        d.apply_diff(id, prev, io.BytesIO(t))  # type: ignore[attr-defined]
        prev = id
    d.create_rw(CacheID("ctr"), prev)  # type: ignore[attr-defined]


def _empty(p: Path) -> None:
    shutil.rmtree(p)
    p.mkdir(0o755)


@pytest.fixture(scope="module")
def image(loop_home: Path) -> Iterator[tuple[dict[str, Peer | str], list[str]]]:
    tars, base_files = build_image(loop_home)
    peers: dict[str, Peer | str] = {}
    cleanups: list[Callable[[], None]] = []
    cid = CacheID("ctr")

    why = supported(loop_home / "fuse")
    if why is None:
        fd = FuseDriver(loop_home / "fuse")
        _apply(fd, tars)
        upper = fd._layer(cid).diff
        peers["lamina-fuse"] = Peer(lambda: fd.get(cid), lambda: fd.put(cid), lambda: _empty(upper))
        cleanups.append(fd.cleanup)
    else:
        peers["lamina-fuse"] = f"fuse driver unsupported: {why}"

    if "overlay" in mountapi.filesystems():
        from drivers.overlay import OverlayDriver

        od = OverlayDriver(loop_home / "overlay")
        _apply(od, tars)
        oupper = od._layer(cid).diff
        peers["kernel-overlay"] = Peer(lambda: od.get(cid), lambda: od.put(cid), lambda: _empty(oupper))
        cleanups.append(od.cleanup)
        if shutil.which("fuse-overlayfs"):
            lowers = ":".join(od._diff_dirs(od._layer(cid).chain))
            fo = loop_home / "fuse-overlayfs"
            for d in ("upper", "work", "merged"):
                (fo / d).mkdir(parents=True)

            def fo_mount() -> str:
                subprocess.run(["fuse-overlayfs", "-o", f"lowerdir={lowers},upperdir={fo}/upper,"
                                f"workdir={fo}/work", str(fo / "merged")], check=True,
                               capture_output=True, timeout=30)
                return str(fo / "merged")

            def fo_umount() -> None:
                mountapi.umount(fo / "merged")

            def fo_reset() -> None:
                _empty(fo / "upper")
                _empty(fo / "work")

            peers["fuse-overlayfs"] = Peer(fo_mount, fo_umount, fo_reset)
            cleanups.append(lambda: [mountapi.umount(m.mount_point, mountapi.MNT_DETACH)
                                     for m in reversed(mountapi.mounts_under(fo))])
        else:
            peers["fuse-overlayfs"] = "fuse-overlayfs is not installed (apt-get install fuse-overlayfs)"
    else:
        peers["kernel-overlay"] = peers["fuse-overlayfs"] = "no overlayfs in this kernel"
    syncfs(loop_home)  # no writeback of the applied layers while rows are timed
    try:
        yield peers, base_files
    finally:
        for c in cleanups:
            c()


def _peer(image: tuple[dict[str, Peer | str], list[str]], name: str) -> Peer:
    p = image[0][name]
    if isinstance(p, str):
        pytest.skip(p)
    return p


# ---------------------------------------------------------------------------------------------
# what is timed


def read_all(root: str) -> int:
    buf = bytearray(1 << 20)
    total = 0
    for top, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(top, f)
            if os.path.islink(p):
                continue
            with open(p, "rb", buffering=0) as fh:
                while n := fh.readinto(buf):
                    total += n
    return total


def walk(root: str) -> int:
    n = 0
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lstat(os.path.join(top, name))
            n += 1
    return n


def _rounds(benchmark: object, peer: Peer, fn: Callable[[str], object], rounds: int = 5) -> None:
    roots: list[str] = []

    def setup() -> None:
        roots.append(peer.mount())

    def teardown() -> None:
        peer.umount()

    def run() -> object:
        return fn(roots[-1])

    benchmark.pedantic(run, setup=setup, teardown=teardown, rounds=rounds,  # type: ignore[attr-defined]
                       warmup_rounds=1)


@pytest.mark.parametrize("peer", PEERS)
def test_cold_read(benchmark: object, image: tuple[dict[str, Peer | str], list[str]], peer: str) -> None:
    p = _peer(image, peer)
    benchmark.group = "read the whole merged tree, fresh mount"  # type: ignore[attr-defined]
    _rounds(benchmark, p, read_all)


@pytest.mark.parametrize("peer", PEERS)
def test_metadata_walk(benchmark: object, image: tuple[dict[str, Peer | str], list[str]], peer: str) -> None:
    p = _peer(image, peer)
    benchmark.group = "walk + lstat the merged tree, fresh mount"  # type: ignore[attr-defined]
    _rounds(benchmark, p, walk)


@pytest.mark.parametrize("peer", PEERS)
def test_copy_up_write(benchmark: object, image: tuple[dict[str, Peer | str], list[str]], peer: str) -> None:
    p = _peer(image, peer)
    files = random.Random(SEED).sample(image[1], COPY_UPS)
    benchmark.group = f"append a byte to {COPY_UPS} lower files (copy-up), fresh mount"  # type: ignore[attr-defined]
    roots: list[str] = []

    def setup() -> None:
        p.reset()
        roots.append(p.mount())

    def teardown() -> None:
        p.umount()

    def copy_up() -> None:
        root = roots[-1]
        for name in files:
            with open(os.path.join(root, name), "ab") as f:
                f.write(b"#")

    benchmark.pedantic(copy_up, setup=setup, teardown=teardown, rounds=5, warmup_rounds=1)  # type: ignore[attr-defined]
    p.reset()


@pytest.mark.parametrize("peer", ["kernel-overlay", "lamina-fuse"])
def test_get_put(benchmark: object, image: tuple[dict[str, Peer | str], list[str]], peer: str) -> None:
    p = _peer(image, peer)
    benchmark.group = "get + put of a container layer (mount, unmount)"  # type: ignore[attr-defined]

    def get_put() -> None:
        p.mount()
        p.umount()

    benchmark.pedantic(get_put, rounds=10, warmup_rounds=1)  # type: ignore[attr-defined]
