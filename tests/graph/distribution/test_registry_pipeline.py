"""The parts of a pull's pipeline that need no registry: decompression in the stream
(``graph.unpack``), the spool an applier reads while the download writes it, progress events
(``graph.distribution.progress``) and the CLI's rendering of them."""

from __future__ import annotations

import gzip
import io
import os
import threading
import time
from pathlib import Path

import pytest
import zstandard

from graph.errors import InvalidInput, Unsupported
from graph.distribution.progress import DOWNLOADING, DONE, Event, Reporter
from graph.distribution.pull import _Spool, _SpoolReader
from graph.distribution.registry import Cancelled
from graph.unpack import decompressed
from lamina.cli.pull import PULL_WORDS, ProgressView

DATA = os.urandom(300_000) + b"text " * 200_000


def _all(r: io.RawIOBase | object) -> bytes:
    out = bytearray()
    buf = bytearray(70_000)
    while True:
        n = r.readinto(buf)  # type: ignore[attr-defined]
        if not n:
            return bytes(out)
        out += buf[:n]


# ------------------------------------------------------------------------------ unpack


@pytest.mark.parametrize("comp, blob", [
    ("gzip", gzip.compress(DATA, mtime=0)),
    ("zstd", zstandard.ZstdCompressor().compress(DATA)),
    ("zstd", zstandard.ZstdCompressor().compress(DATA[:1000]) + zstandard.ZstdCompressor().compress(DATA[1000:])),
    ("none", DATA),
])
def test_decompressed_gives_the_tar_back(comp: str, blob: bytes) -> None:
    assert _all(decompressed(io.BytesIO(blob), comp, "layer x")) == DATA


@pytest.mark.parametrize("comp, blob, match", [
    ("gzip", gzip.compress(DATA, mtime=0)[:-100], "layer x: corrupt gzip"),
    ("gzip", b"\x1f\x8b\x08\x00" + os.urandom(5000), "layer x: corrupt gzip"),
    ("zstd", zstandard.ZstdCompressor().compress(DATA)[:-30], "layer x: corrupt zstd data: the stream ends inside a frame"),
    ("zstd", b"\x28\xb5\x2f\xfd" + os.urandom(5000), "layer x: corrupt zstd"),
    ("zstd", zstandard.ZstdCompressor().compress(DATA) + b"garbage!", "layer x: corrupt zstd"),
])
def test_damaged_streams_are_invalid_input(comp: str, blob: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        _all(decompressed(io.BytesIO(blob), comp, "layer x"))


def test_unknown_compression() -> None:
    with pytest.raises(Unsupported, match="xz"):
        decompressed(io.BytesIO(b""), "xz", "layer x")


# ------------------------------------------------------------------------------ spool


def test_spool_reader_follows_a_growing_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"")
    spool = _Spool()
    seen: list[int] = []
    result: dict[str, bytes] = {}

    def read() -> None:
        result["data"] = _all(_SpoolReader(spool, seen.append))

    t = threading.Thread(target=read)
    t.start()
    time.sleep(0.05)
    assert t.is_alive() and "data" not in result  # nothing opened yet: the reader waits
    spool.open(path, 0)
    with open(path, "ab") as f:
        for i in range(0, len(DATA), 100_000):
            f.write(DATA[i:i + 100_000])
            f.flush()
            spool.grow(min(len(DATA), i + 100_000))
            time.sleep(0.01)
    spool.complete()
    t.join(10)
    assert result["data"] == DATA and seen[-1] == len(DATA)
    spool.close()


def test_spool_failure_wakes_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    spool = _Spool()
    spool.open(path, 3)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            _all(_SpoolReader(spool, lambda n: None))
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            errors.append(e)

    t = threading.Thread(target=read)
    t.start()
    time.sleep(0.05)
    spool.fail(ConnectionError("peer went away"))
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], Cancelled) and "peer went away" in str(errors[0])
    spool.close()


# ------------------------------------------------------------------------------ progress


def test_reporter_throttles_bytes_but_not_phases() -> None:
    events: list[Event] = []
    r = Reporter(events.append, interval=10)
    for n in range(100):
        r("sha256:" + "a" * 64, DOWNLOADING, n, 100)
    r("sha256:" + "a" * 64, DONE, 100, 100)
    assert [(e.phase, e.current) for e in events] == [(DOWNLOADING, 0), (DONE, 100)]
    assert events[0].short_id == "a" * 12
    Reporter(None)("x", DONE)  # no callback: nothing happens


def test_progress_view_plain_lines() -> None:
    out = io.StringIO()
    v = ProgressView(out, PULL_WORDS, tty=False)
    d = "sha256:" + "b" * 64
    v.event(Event(d, "waiting", 0, 10))
    v.event(Event(d, "downloading", 5, 10))
    v.event(Event(d, "downloading", 7, 10))
    v.event(Event(d, "done", 10, 10))
    v.close()
    assert out.getvalue().splitlines() == ["bbbbbbbbbbbb: Waiting", "bbbbbbbbbbbb: Downloading",
                                           "bbbbbbbbbbbb: Pull complete"]


def test_progress_view_terminal_redraws_in_place() -> None:
    out = io.StringIO()
    v = ProgressView(out, PULL_WORDS, tty=True)
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    v.event(Event(a, "downloading", 0, 1000))
    v.event(Event(b, "exists", 10, 10))
    v.event(Event(a, "extracting", 500, 1000))
    v.close()
    text = out.getvalue()
    assert "\x1b[2F" in text  # moved up over the two lines to redraw them
    last = text.rsplit("\x1b[2F", 1)[1]
    lines = [line.removeprefix("\x1b[2K") for line in last.splitlines()]
    assert lines[0].startswith("aaaaaaaaaaaa: Extracting") and "[" + "=" * 24 + ">" + " " * 25 + "]" in lines[0]
    assert lines[0].endswith("500B/1kB") and lines[1] == "bbbbbbbbbbbb: Already exists"


def test_many_tiny_layers_get_more_downloads_at_once() -> None:
    """``choose_concurrency``: Docker's 3 unless the image is more than 3 layers with a median
    blob under 1 MiB (measured: deep-500 pulls in about 2/3 of the time with 8)."""
    from graph.digest import Digest
    from graph.distribution.pull import DEFAULT_CONCURRENCY, TINY_CONCURRENCY, choose_concurrency
    from graph.oci.formats import Descriptor, Manifest

    def manifest(*sizes: int) -> Manifest:
        layer = "application/vnd.oci.image.layer.v1.tar+gzip"
        descs = tuple(Descriptor(layer, Digest.of(str(i).encode()), n) for i, n in enumerate(sizes))
        cfg = Descriptor("application/vnd.oci.image.config.v1+json", Digest.of(b"c"), 2)
        return Manifest("application/vnd.oci.image.manifest.v1+json", cfg, descs, {}, b"{}")

    assert choose_concurrency(manifest(*[4096] * 500)) == TINY_CONCURRENCY
    assert choose_concurrency(manifest(*[4096] * 3)) == DEFAULT_CONCURRENCY  # 3 at once anyway
    assert choose_concurrency(manifest(70 << 20, 4096, 30 << 20, 5 << 20)) == DEFAULT_CONCURRENCY
    assert choose_concurrency(manifest(4096, 4096, 4096, 64 << 20, 4096)) == TINY_CONCURRENCY
