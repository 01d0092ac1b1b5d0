"""Micro benchmark of materialising a layer stack through each driver's ``create`` + ``apply_diff``
(the bench suite's *materialise* phase, without the store around it).

Run: ``.venv/bin/python -m pytest bench/micro/test_materialise_bench.py --benchmark-only``.
Needs root; the layers live on a loop-mounted journaled ext4 made for the module (see
MACHINE-NOTES: the root fs has no journal and slows down in wipe-and-recreate loops).

The stack (3 layers, about 6k entries, 24 MB) is the case the union drivers' copy-up rules cost
most on: a base of 60 dirs x 50 files; a second layer writing 40 files into each of those dirs
*without listing the dirs* (implicit parents: each is looked up in the layer below and copied up)
plus (``implicit+links``) a hardlink to a base file per dir (a copy-up of data); a third layer as Docker writes them
(every dir listed). Timed: create + apply of the three layers, then remove (not timed).
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

import drivers
from drivers.base import CacheID

if os.geteuid() != 0:
    pytest.skip("needs root", allow_module_level=True)

DIRS, BASE_FILES, UPPER_FILES = 60, 50, 40
DATA = os.urandom(4096)


def _tar(entries: list[tuple[str, str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_700_000_000
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o750
                ti.uid = ti.gid = 7
                tf.addfile(ti)
            elif kind == "link":
                ti.type, ti.linkname = tarfile.LNKTYPE, data.decode()
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def stack(links: bool) -> list[bytes]:
    base = [("dir", "usr", b"")]
    upper: list[tuple[str, str, bytes]] = []
    docker = [("dir", "usr", b"")]
    for d in range(DIRS):
        base.append(("dir", f"usr/d{d}", b""))
        base += [("file", f"usr/d{d}/f{i}", DATA) for i in range(BASE_FILES)]
        upper += [("file", f"usr/d{d}/new{i}", DATA[:512]) for i in range(UPPER_FILES)]
        if links:
            upper.append(("link", f"usr/d{d}/link", f"usr/d{d}/f0".encode()))
        docker.append(("dir", f"usr/d{d}", b""))
        docker += [("file", f"usr/d{d}/top{i}", DATA[:100]) for i in range(10)]
    return [_tar(base), _tar(upper), _tar(docker)]


@pytest.fixture(scope="module")
def ext4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("materialise-bench")
    img, mnt = base / "fs.img", base / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(4 << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True, capture_output=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)
        img.unlink()


@pytest.mark.parametrize("links", [False, True], ids=["implicit", "implicit+links"])
@pytest.mark.parametrize("name", ["vfs", "overlay", "fuse"])
def test_materialise(benchmark, name: str, links: bool, ext4: Path) -> None:
    home = ext4 / name
    why = drivers.supported(name, home)
    if why is not None:
        pytest.skip(why)
    d = drivers.open_driver(name, home)
    tars = stack(links)
    ids = itertools.count()
    made: list[CacheID] = []

    def setup() -> None:
        for cid in reversed(made):
            d.remove(cid)
        made.clear()

    def materialise() -> None:
        parent: CacheID | None = None
        for tar in tars:
            cid = CacheID(f"m{next(ids)}")
            d.create(cid, parent)
            made.append(cid)
            d.apply_diff(cid, parent, io.BytesIO(tar))
            parent = cid

    try:
        benchmark.pedantic(materialise, setup=setup, rounds=7, warmup_rounds=1)
    finally:
        setup()
        d.cleanup()
