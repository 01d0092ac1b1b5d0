"""Micro benchmark: what the garbage collection on store open costs (``graph.gc``).

Every lamina command opens the store, and the open runs a bounded collection. Timed here:

- ``open[clean-N]``: ``Store(root)`` + close of a store with N images (one 2-file layer each, a
  config and a manifest: 3N blobs) and no garbage: the collector's queries, one ``scandir`` of
  ``blobs/sha256`` and of the driver's layers, no write lock.
- ``open[garbage]``: the same open right after an ``rmi`` killed after its transaction (refs and
  image row gone) of a 3-layer image whose top layer holds 2000 files: the open removes the three
  layers and their blobs (within ``graph.gc.OPEN_BUDGET``; the removal of a big layer is what it
  bounds). Each round gets fresh garbage, made outside the timing.

Run as root (the store sits on a journaled ext4 loop filesystem, see MACHINE-NOTES)::

    .venv/bin/python -m pytest bench/micro/test_gc_bench.py --benchmark-columns=min,median,max
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from graph import Store, parse_reference
from tests.loopfs import loop_filesystem, loopfs_skip_reason


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _image(s: Store, tars: list[bytes], ref: str) -> None:
    parent = None
    diff_ids = []
    for t in tars:
        layer = s.layers.register(io.BytesIO(t), parent)
        s.record_layer_blob(layer.diff_id, s.content.put_bytes(t), "application/vnd.oci.image.layer.v1.tar", len(t))
        parent = layer.chain_id
        diff_ids.append(layer.diff_id)
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    img = s.images.create(cfg)
    s.images.add_manifest(s.content.put_bytes(s.images.build_manifest(img)), "application/vnd.oci.image.manifest.v1+json", img.id)
    s.refs.add(parse_reference(ref), img.id)


@pytest.fixture(scope="module")
def fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = loopfs_skip_reason("ext4")
    if reason:
        pytest.skip(reason)
    with loop_filesystem(tmp_path_factory.mktemp("gc-bench"), "ext4", size="1G") as f:
        yield f.mountpoint


@pytest.mark.parametrize("n", [10, 200])
def test_open_clean(benchmark: Any, fs: Path, n: int) -> None:
    root = fs / f"clean-{n}"
    with Store(root, driver="vfs") as s:
        for i in range(n):
            _image(s, [_tar({f"f{i}": b"x" * 100, "g": str(i).encode()})], f"img{i}:1")
    benchmark.group = "store open"
    benchmark.name = f"open[clean-{n}]"
    benchmark(lambda: Store(root, driver="vfs").close())


def test_open_garbage(benchmark: Any, fs: Path) -> None:
    base = _tar({f"etc/f{i}": b"b" * 64 for i in range(200)})
    mid = _tar({f"usr/m{i}": b"m" * 512 for i in range(200)})
    top = _tar({f"app/{i // 100}/t{i}": b"t" * 256 for i in range(2000)})
    root = fs / "garbage"

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        shutil.rmtree(root, ignore_errors=True)
        with Store(root, driver="vfs") as s:
            _image(s, [base, mid, top], "big:1")
            with s.db.transaction():  # rmi killed right after its transaction
                for r in s.refs.list():
                    s.refs.remove(r.reference)
                for img in s.images.list():
                    s.images.unrecord(img.id)
        return (), {}

    def open_and_check() -> None:
        with Store(root, driver="vfs") as s:
            benchmark.extra_info["collected_all"] = not s.layers.list()

    benchmark.group = "store open"
    benchmark.name = "open[garbage]"
    benchmark.pedantic(open_and_check, setup=setup, rounds=7, iterations=1)
