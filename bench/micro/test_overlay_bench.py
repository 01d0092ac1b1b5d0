"""Micro benchmarks of the overlay driver: mount + umount and first-read latency against stack
depth, and building the mount options.

Run: ``.venv/bin/python -m pytest bench/micro/test_overlay_bench.py --benchmark-only``.
Needs root and overlayfs; the layers live on a loop-mounted journaled ext4 made for the module
(the root fs here has no journal). Setup (creating up to 500 layers) is not timed.

- ``test_get_put``: ``get`` + ``put`` of a container layer over N read-only layers: mount with
  N lower dirs (``fsconfig lowerdir+`` one by one; ``mount(2)`` for the legacy rows), refcount
  file under flock, umount. This is what ``lamina mount`` / a container start pays.
- ``test_first_read``: right after a fresh mount (cold overlay dentry cache, warm ext4), open
  and read a file that lives in the bottom layer, and stat a name no layer has: both lookups
  walk all N layers.
- ``test_option_building``: the Python side of a 500-deep mount, without the syscalls.
- ``test_create_rw``: making a container layer on a 1- and a 500-deep image.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Iterator

import pytest

from drivers.sys import mount as mountapi
from drivers.base import CacheID

if os.geteuid() != 0 or "overlay" not in mountapi.filesystems():
    pytest.skip("needs root and overlayfs", allow_module_level=True)

from drivers import overlay  # noqa: E402
from drivers.overlay import OverlayDriver  # noqa: E402

DEPTHS = [1, 8, 64, 128, 256, 500]
LEGACY_DEPTHS = [1, 8, 64, 128]
NEW = overlay.kernel_overlay().lowerdir_plus


@pytest.fixture(scope="module")
def loop_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("ovl-bench")
    img, mnt = base / "fs.img", base / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(1 << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, capture_output=True)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        mountapi.mount(dev, mnt, "ext4")
        try:
            yield mnt
        finally:
            for m in reversed(mountapi.mounts_under(mnt)):
                mountapi.umount(m.mount_point, mountapi.MNT_DETACH)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
        img.unlink(missing_ok=True)


def _tar(i: int) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in ((f"f{i}", b"x" * 100), ("v", str(i).encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    return buf


@pytest.fixture(scope="module")
def stack(loop_home: Path) -> Iterator[tuple[Path, list[CacheID]]]:
    """500 read-only layers (each with its own file f<i> and a shared /v) and a container layer
    on each benchmarked depth."""
    home = loop_home / "overlay"
    d = OverlayDriver(home)
    ids: list[CacheID] = []
    for i in range(1, max(DEPTHS) + 1):
        id = CacheID(f"L{i:03d}")
        d.create(id, ids[-1] if ids else None)
        d.apply_diff(id, ids[-1] if ids else None, _tar(i))
        ids.append(id)
    for n in DEPTHS:
        d.create_rw(CacheID(f"c{n}"), ids[n - 1])
    try:
        yield home, ids
    finally:
        d.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def _driver(home: Path, api: str) -> OverlayDriver:
    return OverlayDriver(home, mount_api=api)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("api", ["new", "legacy"])
def test_get_put(benchmark, stack: tuple[Path, list[CacheID]], api: str, depth: int) -> None:
    if api == "new" and not NEW:
        pytest.skip("no fsconfig lowerdir+ here")
    if api == "legacy" and depth not in LEGACY_DEPTHS:
        pytest.skip("mount(2) option string is one page: about 136 layers")
    home, _ = stack
    d = _driver(home, api)
    cid = CacheID(f"c{depth}")
    benchmark.group = f"overlay get+put ({api})"
    benchmark.extra_info["depth"] = depth

    def get_put() -> None:
        d.get(cid)
        d.put(cid)

    benchmark.pedantic(get_put, rounds=30, warmup_rounds=2)
    assert not mountapi.is_mount_point(home / cid / "merged")


@pytest.mark.parametrize("depth", DEPTHS)
def test_first_read(benchmark, stack: tuple[Path, list[CacheID]], depth: int) -> None:
    home, _ = stack
    d = _driver(home, "auto")
    cid = CacheID(f"c{depth}")
    benchmark.group = "overlay first read after mount"
    benchmark.extra_info["depth"] = depth
    roots: list[str] = []

    def setup() -> None:
        roots.append(d.get(cid))

    def teardown() -> None:
        d.put(cid)

    def first_read() -> None:
        root = roots[-1]
        with open(f"{root}/f1", "rb") as f:  # f1 lives in the bottom layer
            assert f.read() == b"x" * 100
        assert not os.path.lexists(f"{root}/absent")

    benchmark.pedantic(first_read, setup=setup, teardown=teardown, rounds=30, warmup_rounds=1)


@pytest.mark.parametrize("what", ["fsconfig-calls-500", "legacy-string-128"])
def test_option_building(benchmark, what: str) -> None:
    k = overlay.kernel_overlay()
    lowers = [f"/var/lib/lamina/drivers/overlay/l/{'A' * 26}{i:03d}" for i in range(500)]
    benchmark.group = "overlay option building"
    if what == "fsconfig-calls-500":
        out = benchmark(overlay.mount_options, lowers, "/x/diff", "/x/work", k)
        assert len(out) == 505
    else:
        rel = [f"l/{'A' * 26}" for _ in range(128)]
        out = benchmark(overlay._legacy_data, rel, "c/diff", "c/work", k.options, False)
        assert len(out) < mountapi.PAGE_SIZE


@pytest.mark.parametrize("depth", [1, 500])
def test_create_rw(benchmark, stack: tuple[Path, list[CacheID]], depth: int) -> None:
    """A container layer costs a few mkdirs, three small files and two dir fsyncs; only the
    ``lower`` file grows with depth (29 bytes a layer), nothing with the image's size."""
    home, ids = stack
    d = _driver(home, "auto")
    benchmark.group = "overlay create_rw"
    benchmark.extra_info["depth"] = depth
    n = [0]

    def setup() -> tuple[tuple[CacheID], dict]:
        n[0] += 1
        return (CacheID(f"rw{depth}-{n[0]}"),), {}

    def create(cid: CacheID) -> None:
        d.create_rw(cid, ids[depth - 1])

    def teardown(cid: CacheID) -> None:
        d.remove(cid)

    benchmark.pedantic(create, setup=setup, teardown=teardown, rounds=30, warmup_rounds=1)
