"""Micro benchmark: ingest of a 256 MiB blob through ``ContentStore.put_stream`` against raw
``hashlib.sha256`` over the same bytes in memory (the roofline: an ingest must hash every byte).

Target: put_stream at >= 90% of raw hashlib throughput. Run (as root, for the mounts)::

    .venv/bin/python -m pytest bench/micro/test_ingest_bench.py --benchmark-columns=min,median,max

Filesystems are made here, not taken from ``/`` (ext4 without a journal on these machines):
a fresh tmpfs (no device: the pure CPU cost of ingest) and a 1 GiB journaled ext4 on a loop
device (the page cache, and with ``durable`` the fsync of 256 MiB through the loop device to
the backing file). Each is measured with fsync (``durable=True``, the default) and without.
``extra_info`` of every result carries MB/s and the ratio to raw hashlib measured in the same
session. The source is an in-memory ``BytesIO``, so the reading is a memcpy.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from graph.content import ContentStore
from graph.digest import Digest
from graph.verify import CHUNK, VerifyingReader

SIZE = 256 << 20
ROUNDS = 7


@pytest.fixture(scope="module")
def data() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture(scope="module")
def digest(data: bytes) -> Digest:
    return Digest.of(data)


@pytest.fixture(scope="module")
def raw_seconds(data: bytes) -> float:
    """Best of 5 raw hashlib runs: the reference every ratio below is taken against."""
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        hashlib.sha256(data).digest()
        best = min(best, time.perf_counter() - t)
    return best


def _mount(args: list[str]) -> None:
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"{' '.join(args)}: {r.stderr.strip()}")


@pytest.fixture(scope="module", params=["tmpfs", "ext4-journal-loop"])
def fs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a benchmark filesystem needs root")
    base = tmp_path_factory.mktemp("ingest-bench")
    mnt = base / "mnt"
    mnt.mkdir()
    if request.param == "tmpfs":
        _mount(["mount", "-t", "tmpfs", "-o", "size=1g", "lamina-bench", str(mnt)])
    else:
        image = base / "ext4.img"
        with open(image, "wb") as f:
            f.truncate(1 << 30)
        # no lazy init: a background ext4lazyinit thread would write during the measurement
        mkfs = ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)]
        r = subprocess.run(mkfs, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"mkfs.ext4: {r.stderr.strip()}")
        _mount(["mount", "-o", "loop", str(image), str(mnt)])  # autoclear: the loop goes at umount
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _record(benchmark, raw_seconds: float) -> None:  # type: ignore[no-untyped-def]
    best = benchmark.stats.stats.min
    median = benchmark.stats.stats.median
    benchmark.extra_info["MB/s (best)"] = round(SIZE / best / 1e6)
    benchmark.extra_info["MB/s (median)"] = round(SIZE / median / 1e6)
    benchmark.extra_info["raw hashlib MB/s"] = round(SIZE / raw_seconds / 1e6)
    benchmark.extra_info["ratio to hashlib (best)"] = round(raw_seconds / best, 3)
    benchmark.extra_info["ratio to hashlib (median)"] = round(raw_seconds / median, 3)


def test_raw_hashlib(benchmark, data: bytes, raw_seconds: float) -> None:  # type: ignore[no-untyped-def]
    benchmark.pedantic(lambda: hashlib.sha256(data).digest(), rounds=ROUNDS, iterations=1)
    _record(benchmark, raw_seconds)


@pytest.mark.parametrize("durable", [True, False], ids=["fsync", "nosync"])
def test_put_stream(benchmark, fs: Path, durable: bool, data: bytes, digest: Digest, raw_seconds: float) -> None:  # type: ignore[no-untyped-def]
    store = ContentStore(fs / f"store-{durable}", durable=durable)

    def setup() -> None:
        store.delete(digest)

    def ingest() -> None:
        assert store.put_stream(io.BytesIO(data), digest, SIZE) == digest

    benchmark.pedantic(ingest, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _record(benchmark, raw_seconds)
    store.delete(digest)


def test_put_stream_serial_writes(benchmark, fs: Path, data: bytes, digest: Digest, raw_seconds: float) -> None:  # type: ignore[no-untyped-def]
    """The same ingest through plain ``Writer.write`` calls (no hashing thread): what the
    pipelined ``write_from`` buys."""
    store = ContentStore(fs / "store-serial", durable=False)
    mv = memoryview(data)

    def setup() -> None:
        store.delete(digest)

    def ingest() -> None:
        with store.ingest(digest, SIZE) as w:
            for i in range(0, SIZE, CHUNK):
                w.write(mv[i : i + CHUNK])
            w.commit()

    benchmark.pedantic(ingest, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _record(benchmark, raw_seconds)
    store.delete(digest)


def test_verifying_read(benchmark, fs: Path, data: bytes, digest: Digest, raw_seconds: float) -> None:  # type: ignore[no-untyped-def]
    """Reading a stored blob back through ``VerifyingReader`` with 1 MiB ``readinto`` (warm
    page cache)."""
    store = ContentStore(fs / "store-read", durable=False)
    store.put_bytes(data)
    buf = bytearray(CHUNK)

    def read() -> None:
        with store.open(digest) as f:
            r = VerifyingReader(f, digest, SIZE)
            while r.readinto(buf):
                pass
            assert r.verified

    benchmark.pedantic(read, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _record(benchmark, raw_seconds)
    store.delete(digest)
