"""The content store's behavioural contract, as a test class any backend binds to.

A backend's test module subclasses ``ContentStoreConformance`` (named ``Test...``) and supplies
``make_store(path)`` (a fresh, empty store; ``path`` is a private temp dir it may use) and
``corrupt(store, d)`` (damage one byte of a stored blob behind the store's back). Every test
here speaks the public API only; what is particular to one backend (files, modes, crashes,
processes) lives in that backend's own test module. Not collected by itself (no ``test_``
prefix on the module or ``Test`` on the class).
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from graph.content import ContentStore
from graph.digest import Digest
from graph.errors import Conflict, Corrupt, DigestMismatch, InvalidInput, NotFound
from graph.verify import CHUNK

DATA = os.urandom(3 * CHUNK + 4321)  # over two chunks: the pipelined copy path
D = Digest.of(DATA)
MISSING = Digest.of(b"never stored")


class Endless(io.RawIOBase):
    """As many bytes as anyone asks for; counts what it handed out."""

    def __init__(self) -> None:
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = len(b)
        memoryview(b)[:n] = b"\x00" * n
        self.given += n
        return n


class Untouchable(io.RawIOBase):
    """A stream that must not be read."""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        raise AssertionError("the stream was read")


class ReadOnly:
    """``read`` without ``readinto``."""

    def __init__(self, data: bytes) -> None:
        self.f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self.f.read(n)


class FailingAfter(io.RawIOBase):
    """Yields ``data[:n]`` then raises ConnectionResetError, like a dropped download."""

    def __init__(self, data: bytes, n: int) -> None:
        self.f = io.BytesIO(data[:n])

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        k = self.f.readinto(b)
        if k == 0:
            raise ConnectionResetError("peer went away")
        return k


class ContentStoreConformance:
    """Behaviour every content store must show. Bind with ``make_store`` and ``corrupt``."""

    def make_store(self, path: Path) -> ContentStore:
        raise NotImplementedError

    def corrupt(self, store: ContentStore, d: Digest) -> None:
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path) -> ContentStore:
        return self.make_store(tmp_path)

    def assert_clean(self, store: ContentStore) -> None:
        assert store.ingests() == []

    # -- round trips ------------------------------------------------------------------------------

    def test_put_bytes_round_trip(self, store: ContentStore) -> None:
        d = store.put_bytes(b"hello")
        assert d == Digest.of(b"hello")
        assert store.exists(d) and store.size(d) == 5
        assert store.read_bytes(d) == b"hello"
        with store.open(d) as f:
            assert f.read() == b"hello"
        assert store.path(d).read_bytes() == b"hello"
        assert dict(store.walk()) == {d: 5}

    @pytest.mark.parametrize("n", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, len(DATA)])
    @pytest.mark.parametrize("describe", ["none", "digest", "digest+size", "size"])
    def test_put_stream_round_trip(self, store: ContentStore, n: int, describe: str) -> None:
        data = DATA[:n]
        expected = Digest.of(data) if "digest" in describe else None
        size = n if "size" in describe else None
        d = store.put_stream(io.BytesIO(data), expected, size)
        assert d == Digest.of(data)
        with store.open(d) as f:
            assert f.read() == data
        self.assert_clean(store)

    def test_put_stream_from_a_stream_without_readinto(self, store: ContentStore) -> None:
        assert store.put_stream(ReadOnly(DATA), D) == D  # type: ignore[arg-type]
        assert store.size(D) == len(DATA)

    def test_empty_blob(self, store: ContentStore) -> None:
        d = store.put_bytes(b"")
        assert d == Digest.of(b"") and store.size(d) == 0 and store.read_bytes(d) == b""
        store.verify(d)

    def test_put_is_idempotent(self, store: ContentStore) -> None:
        assert store.put_bytes(DATA) == D
        assert store.put_bytes(DATA, D) == D
        assert store.put_stream(io.BytesIO(DATA)) == D
        assert list(store.walk()) == [(D, len(DATA))]
        self.assert_clean(store)

    def test_stored_blob_short_circuits_the_stream(self, store: ContentStore) -> None:
        store.put_bytes(DATA)
        assert store.put_stream(Untouchable(), D, len(DATA)) == D  # type: ignore[arg-type]

    def test_writer_for_a_stored_blob_is_done(self, store: ContentStore) -> None:
        store.put_bytes(DATA)
        with store.ingest(D, len(DATA), ref="r") as w:
            assert w.done and w.offset == len(DATA)
            with pytest.raises(DigestMismatch):
                w.write(b"x")  # nothing more may be written to a complete blob
        with store.ingest(D) as w:
            assert w.done
            assert w.commit() == D
        self.assert_clean(store)

    def test_stored_blob_with_another_size_is_a_mismatch(self, store: ContentStore) -> None:
        store.put_bytes(DATA)
        with pytest.raises(DigestMismatch, match="stored blob has"):
            with store.ingest(D, len(DATA) + 1) as w:
                w.commit()
        assert store.exists(D)  # the stored blob is fine; the descriptor lied

    # -- never trust a name -----------------------------------------------------------------------

    def test_digest_mismatch_stores_nothing(self, store: ContentStore) -> None:
        with pytest.raises(DigestMismatch) as e:
            store.put_bytes(b"actual", MISSING)
        assert MISSING in str(e.value) and Digest.of(b"actual") in str(e.value)
        with pytest.raises(DigestMismatch) as e:
            store.put_stream(io.BytesIO(DATA), MISSING)
        assert MISSING in str(e.value) and D in str(e.value) and "\n" not in str(e.value)
        assert list(store.walk()) == []
        assert not store.exists(D)
        self.assert_clean(store)

    def test_short_stream_is_a_mismatch(self, store: ContentStore) -> None:
        with pytest.raises(DigestMismatch, match=f"expected {len(DATA)} bytes, got {len(DATA) - 1}"):
            store.put_stream(io.BytesIO(DATA[:-1]), D, len(DATA))
        assert list(store.walk()) == []

    def test_long_stream_is_a_mismatch(self, store: ContentStore) -> None:
        with pytest.raises(DigestMismatch, match="more than the expected"):
            store.put_stream(io.BytesIO(DATA + b"x"), D, len(DATA))
        assert list(store.walk()) == []
        self.assert_clean(store)

    @pytest.mark.parametrize("size", [1000, 5 * CHUNK])
    def test_oversize_stream_stops_early(self, store: ContentStore, size: int) -> None:
        src = Endless()
        with pytest.raises(DigestMismatch, match="more than the expected"):
            store.put_stream(src, MISSING, size)  # type: ignore[arg-type]
        assert src.given == size + 1
        assert list(store.walk()) == []

    def test_size_without_digest_is_checked(self, store: ContentStore) -> None:
        with pytest.raises(DigestMismatch):
            store.put_stream(io.BytesIO(b"abc"), None, 4)
        assert list(store.walk()) == []

    def test_bad_arguments(self, store: ContentStore) -> None:
        with pytest.raises(InvalidInput):
            store.exists("sha256:../../etc/passwd")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            store.ingest("md5:abc")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            store.ingest(None, -1)
        with pytest.raises(InvalidInput):
            store.ingest(None, None, ref="")

    # -- writers ----------------------------------------------------------------------------------

    def test_writer_commit_and_repeat(self, store: ContentStore) -> None:
        with store.ingest(D, len(DATA)) as w:
            assert w.offset == 0 and not w.done
            w.write(DATA[:10])
            w.write(memoryview(DATA)[10:])
            assert w.offset == len(DATA)
            assert not store.exists(D)  # nothing visible before commit
            assert w.commit() == D
            assert w.commit() == D
            with pytest.raises(Conflict):
                w.write(b"more")
        assert store.read_bytes(D) == DATA

    def test_leaving_without_commit_discards(self, store: ContentStore) -> None:
        for ref in (None, "r"):
            with store.ingest(D, ref=ref) as w:
                w.write(DATA[:100])
            assert not store.exists(D)
            self.assert_clean(store)

    def test_error_in_refless_ingest_discards(self, store: ContentStore) -> None:
        with pytest.raises(ConnectionResetError):
            store.put_stream(FailingAfter(DATA, 2 * CHUNK + 3), D)  # type: ignore[arg-type]
        assert list(store.walk()) == []
        self.assert_clean(store)

    def test_transport_error_keeps_a_refd_partial_and_resume_completes(self, store: ContentStore) -> None:
        half = 2 * CHUNK + 7
        with pytest.raises(ConnectionResetError):
            with store.ingest(D, len(DATA), ref="pull-1") as w:
                w.write_from(FailingAfter(DATA, half))  # type: ignore[arg-type]
        [st] = store.ingests()
        assert (st.ref, st.offset, st.expected, st.size) == ("pull-1", half, D, len(DATA))
        assert not store.exists(D)
        with store.ingest(D, len(DATA), ref="pull-1") as w:
            assert w.offset == half
            w.write_from(io.BytesIO(DATA[half:]))
            assert w.commit() == D
        assert store.read_bytes(D) == DATA
        self.assert_clean(store)

    def test_resume_twice(self, store: ContentStore) -> None:
        for upto in (100, 1500, 5000):
            with pytest.raises(ConnectionResetError):
                with store.ingest(D, len(DATA), ref="r") as w:
                    w.write_from(FailingAfter(DATA[w.offset :], upto - w.offset))  # type: ignore[arg-type]
            assert store.ingests()[0].offset == upto
        with store.ingest(D, len(DATA), ref="r") as w:
            w.write(DATA[w.offset :])
            w.commit()
        store.verify(D)

    def test_writer_stays_usable_after_a_stream_error(self, store: ContentStore) -> None:
        with store.ingest(D, len(DATA)) as w:
            with pytest.raises(ConnectionResetError):
                w.write_from(FailingAfter(DATA, 3 * CHUNK + 1))  # type: ignore[arg-type]
            assert w.offset == 3 * CHUNK + 1
            w.write_from(io.BytesIO(DATA[w.offset :]))  # "retry with a Range request"
            assert w.commit() == D

    def test_resume_with_another_descriptor_starts_over(self, store: ContentStore) -> None:
        other = DATA[::-1]
        with pytest.raises(OSError):
            with store.ingest(D, len(DATA), ref="r") as w:
                w.write(DATA[:500])
                raise OSError("transport")
        with store.ingest(Digest.of(other), len(other), ref="r") as w:
            assert w.offset == 0
            w.write(other)
            w.commit()
        assert store.exists(Digest.of(other)) and not store.exists(D)
        self.assert_clean(store)

    def test_digest_mismatch_discards_a_refd_partial(self, store: ContentStore) -> None:
        bad = b"Z" + DATA[1:]
        with pytest.raises(DigestMismatch):
            with store.ingest(D, len(DATA), ref="r") as w:
                w.write(bad)
                w.commit()
        self.assert_clean(store)
        with store.ingest(D, len(DATA), ref="r") as w:
            assert w.offset == 0

    def test_commit_mismatch_outside_a_with_block_discards(self, store: ContentStore) -> None:
        w = store.ingest(D, ref="r")
        w.write(b"wrong")
        with pytest.raises(DigestMismatch):
            w.commit()
        with pytest.raises(Conflict):
            w.write(b"x")  # commit closed it
        self.assert_clean(store)

    def test_close_keeps_a_refd_partial(self, store: ContentStore) -> None:
        w = store.ingest(D, len(DATA), ref="r")
        w.write(DATA[:10])
        w.close()
        w.close()
        assert [s.offset for s in store.ingests()] == [10]

    def test_abort(self, store: ContentStore) -> None:
        with pytest.raises(OSError):
            with store.ingest(D, ref="r") as w:
                w.write(DATA[:10])
                raise OSError("transport")
        assert len(store.ingests()) == 1
        store.abort("r")
        self.assert_clean(store)
        store.abort("r")  # repeat: no-op
        store.abort("never-started")

    def test_abort_of_a_live_ingest_is_a_conflict(self, store: ContentStore) -> None:
        done = threading.Event()
        holding = threading.Event()
        errors: list[BaseException] = []

        def hold() -> None:
            try:
                with store.ingest(D, ref="live") as w:
                    w.write(DATA[:1])
                    holding.set()
                    done.wait(30)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        t = threading.Thread(target=hold)
        t.start()
        try:
            assert holding.wait(30)
            with pytest.raises(Conflict):
                store.abort("live")
            assert [s.ref for s in store.ingests()] == ["live"]
        finally:
            done.set()
            t.join()
        assert not errors

    def test_same_ref_twice_in_one_thread_is_a_conflict(self, store: ContentStore) -> None:
        with store.ingest(D, ref="r"):
            with pytest.raises(Conflict):
                store.ingest(D, ref="r")
        with store.ingest(D, ref="r"):  # free again afterwards
            pass

    def test_ingests_lists_refd_only(self, store: ContentStore) -> None:
        with store.ingest(D) as anon, store.ingest(D, 5, ref="b") as b, store.ingest(None, ref="a"):
            anon.write(b"123")
            b.write(b"12")
            listed = store.ingests()
            assert [(s.ref, s.offset, s.expected, s.size) for s in listed] == [("a", 0, None, None), ("b", 2, D, 5)]
            assert all(s.started <= s.updated or s.offset == 0 for s in listed)
        self.assert_clean(store)

    def test_threads_storing_one_blob_all_succeed(self, store: ContentStore) -> None:
        results: list[Digest] = []
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def put(i: int) -> None:
            try:
                start.wait()
                if i == 0:
                    results.append(store.put_stream(io.BytesIO(DATA)))
                elif i == 1:
                    results.append(store.put_stream(io.BytesIO(DATA), D, len(DATA)))
                else:
                    with store.ingest(D, len(DATA), ref=f"r{i % 3}") as w:
                        if not w.done:
                            w.write_from(io.BytesIO(DATA[w.offset :]))
                        results.append(w.commit())
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=put, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert results == [D] * 4
        assert list(store.walk()) == [(D, len(DATA))]
        self.assert_clean(store)

    # -- reading, deleting, checking --------------------------------------------------------------

    def test_missing_blob(self, store: ContentStore) -> None:
        assert not store.exists(MISSING)
        for call in (store.size, store.path, store.open, store.read_bytes, store.verify):
            with pytest.raises(NotFound, match=MISSING):
                call(MISSING)

    def test_walk_and_delete(self, store: ContentStore) -> None:
        blobs = {store.put_bytes(bytes([i]) * i): i for i in range(5)}
        assert dict(store.walk()) == blobs
        first = next(iter(blobs))
        store.delete(first)
        store.delete(first)  # repeat: no-op
        assert not store.exists(first)
        del blobs[first]
        assert dict(store.walk()) == blobs

    def test_open_file_survives_delete(self, store: ContentStore) -> None:
        store.put_bytes(DATA)
        with store.open(D) as f:
            store.delete(D)
            assert f.read() == DATA

    def test_verify_detects_a_flipped_byte(self, store: ContentStore) -> None:
        store.put_bytes(DATA)
        store.verify(D)
        self.corrupt(store, D)
        with pytest.raises(Corrupt, match=D):
            store.verify(D)

    def test_read_bytes_refuses_corrupt_data(self, store: ContentStore) -> None:
        d = store.put_bytes(b'{"a": 1}')
        self.corrupt(store, d)
        with pytest.raises(Corrupt):
            store.read_bytes(d)

    def test_read_bytes_limit(self, store: ContentStore) -> None:
        store.put_bytes(DATA)
        with pytest.raises(InvalidInput, match="limit"):
            store.read_bytes(D, max_size=len(DATA) - 1)
        assert store.read_bytes(D, max_size=len(DATA)) == DATA
