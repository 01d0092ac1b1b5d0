"""graph/verify.py: the hashing tee and the verifying reader."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graph.digest import Digest
from graph.errors import DigestMismatch
from graph.verify import CHUNK, HashingReader, VerifyingReader, hash_stream


class Endless(io.RawIOBase):
    """A hostile source: as many bytes as anyone asks for, counting what was handed out."""

    def __init__(self) -> None:
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = len(b)
        memoryview(b)[:n] = b"\xab" * n
        self.given += n
        return n


class ReadOnly:
    """A stream with ``read`` but no ``readinto`` (some HTTP bodies look like this)."""

    def __init__(self, data: bytes, piece: int = 7) -> None:
        self.data = data
        self.pos = 0
        self.piece = piece

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = len(self.data)
        n = min(n, self.piece)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


DATA = os.urandom(3 * CHUNK + 12345)
DIGEST = Digest.of(DATA)


def test_hashing_reader_passes_bytes_through_and_hashes_them() -> None:
    r = HashingReader(io.BytesIO(DATA))
    out = r.read()
    assert out == DATA
    assert r.digest() == DIGEST
    assert r.size == len(DATA)


def test_hashing_reader_readinto_with_memoryview() -> None:
    r = HashingReader(io.BytesIO(DATA))
    buf = bytearray(CHUNK)
    got = bytearray()
    while n := r.readinto(memoryview(buf)):
        got += buf[:n]
    assert bytes(got) == DATA
    assert r.digest() == DIGEST


def test_hashing_reader_small_reads_and_readline() -> None:
    data = b"line one\nline two\nrest"
    r = HashingReader(io.BytesIO(data))
    assert r.read(3) == b"lin"
    assert r.readline() == b"e one\n"
    assert r.read() == b"line two\nrest"
    assert r.read(5) == b""
    assert r.digest() == Digest.of(data)


def test_hashing_reader_over_a_stream_without_readinto() -> None:
    r = HashingReader(ReadOnly(DATA[:1000]))  # type: ignore[arg-type]
    buf = bytearray(64)
    got = bytearray()
    while n := r.readinto(buf):
        got += buf[:n]
    assert bytes(got) == DATA[:1000]
    assert r.digest() == Digest.of(DATA[:1000])


def test_hashing_reader_under_a_buffered_reader() -> None:
    r = HashingReader(io.BytesIO(DATA))
    assert io.BufferedReader(r, CHUNK).read() == DATA  # type: ignore[type-var]
    assert r.digest() == DIGEST


def test_hashing_reader_leaves_the_wrapped_stream_open() -> None:
    raw = io.BytesIO(DATA)
    r = HashingReader(raw)
    r.close()
    assert not raw.closed
    with pytest.raises(ValueError):
        r.read(1)


def test_drain_hashes_the_rest() -> None:
    r = HashingReader(io.BytesIO(DATA))
    r.read(10)
    assert r.drain() == len(DATA) - 10
    assert r.digest() == DIGEST


def test_hash_stream() -> None:
    assert hash_stream(io.BytesIO(DATA)) == (DIGEST, len(DATA))
    assert hash_stream(io.BytesIO(b"")) == (Digest.of(b""), 0)


def test_verifying_reader_accepts_matching_bytes() -> None:
    r = VerifyingReader(io.BytesIO(DATA), DIGEST, len(DATA))
    assert r.read() == DATA
    assert r.verified
    assert r.read(10) == b""  # after the verdict: plain EOF


def test_verifying_reader_without_size() -> None:
    r = VerifyingReader(io.BytesIO(DATA), DIGEST)
    assert r.drain() == len(DATA)
    assert r.verified


def test_verifying_reader_rejects_other_bytes_at_eof() -> None:
    bad = bytearray(DATA)
    bad[CHUNK] ^= 1
    r = VerifyingReader(io.BytesIO(bytes(bad)), DIGEST, len(DATA))
    with pytest.raises(DigestMismatch) as e:
        r.drain()
    msg = str(e.value)
    assert DIGEST in msg and Digest.of(bytes(bad)) in msg and "\n" not in msg
    assert not r.verified
    with pytest.raises(DigestMismatch):  # the verdict sticks
        r.read(1)


def test_verifying_reader_rejects_a_short_stream() -> None:
    r = VerifyingReader(io.BytesIO(DATA[:-1]), DIGEST, len(DATA))
    with pytest.raises(DigestMismatch, match=f"expected {len(DATA)} bytes, got {len(DATA) - 1}"):
        r.drain()


def test_verifying_reader_rejects_a_long_stream_before_its_end() -> None:
    src = Endless()
    r = VerifyingReader(src, DIGEST, 5000)  # type: ignore[arg-type]
    with pytest.raises(DigestMismatch, match="more than the expected 5000 bytes"):
        while r.read(CHUNK):
            pass
    assert src.given == 5001  # one byte past the descriptor, never a whole chunk


def test_verifying_reader_long_stream_through_readinto() -> None:
    src = Endless()
    r = VerifyingReader(src, DIGEST, 3 * CHUNK)  # type: ignore[arg-type]
    buf = bytearray(CHUNK)
    with pytest.raises(DigestMismatch):
        while r.readinto(buf):
            pass
    assert src.given == 3 * CHUNK + 1


def test_verifying_reader_zero_length_blob() -> None:
    r = VerifyingReader(io.BytesIO(b""), Digest.of(b""), 0)
    assert r.read() == b""
    assert r.verified
    r = VerifyingReader(io.BytesIO(b"x"), Digest.of(b""), 0)
    with pytest.raises(DigestMismatch):
        r.read()


def test_verifying_reader_refuses_a_bad_descriptor() -> None:
    with pytest.raises(ValueError):
        VerifyingReader(io.BytesIO(b""), Digest.of(b""), -1)


def test_empty_buffer_read_is_not_eof() -> None:
    r = VerifyingReader(io.BytesIO(b"abc"), Digest.of(b"abc"), 3)
    assert r.readinto(bytearray(0)) == 0
    assert not r.verified
    assert r.read() == b"abc" and r.verified


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12))
def test_any_chunking_gives_the_same_digest(data: bytes, cuts: list[int]) -> None:
    r = VerifyingReader(io.BytesIO(data), Digest.of(data), len(data))
    out = bytearray()
    for c in cuts:
        out += r.read(c) or b""
    out += r.read() or b""
    assert bytes(out) == data
    assert r.verified and r.digest() == Digest("sha256:" + hashlib.sha256(data).hexdigest())
