"""The content store: blobs (compressed layers, configs, manifests) kept by their sha256.

The model
---------
A **blob** is a run of bytes named by the sha256 of those bytes (a ``Digest``). The name is never
trusted: it is computed from the bytes as they are written, and a caller who knows what to expect
(a descriptor's ``expected`` digest and ``size``) gets ``DigestMismatch`` and nothing stored when
the bytes disagree. Blobs are immutable and read-only (mode 0444).

Bytes enter through an **ingest**: ``ingest()`` returns a ``Writer`` (a context manager); the
caller writes, then ``commit()`` checks size and digest, syncs the data and links it into place.
Visibility rule (containerd's): **nothing is readable under ``blobs/`` before it is complete,
synced and verified**, and once committed, the ingest is gone. A commit that finds the blob
already there (another writer won the race) discards its own copy and succeeds: success means
"the blob is present", not "this call wrote it" (umoci's definition of idempotence).

An ingest may carry a **ref**, a caller-chosen name for a download (for example
``"pull-docker.io/library/busybox-sha256:..."``). A ref'd ingest that fails with a transport
error keeps its partial data; ``ingest()`` with the same ref, expected digest and size later
**resumes** it: ``Writer.offset`` says how many bytes are already there (ask the registry for a
Range from that offset). One writer holds a ref at a time (an exclusive ``flock``); a second
process asking for the same ref waits, then finds the blob committed (its writer is ``done``) or
resumes what the first one left.

Vocabulary: ``d`` is a blob's digest; ``expected`` and ``size`` are what a descriptor claims;
``ref`` names a resumable ingest; ``offset`` is the resume point.

Layout under ``root``::

    blobs/sha256/<hex>      committed blobs, 0444
    ingest/tmp-<random>     a ref-less ingest's data (flock'd by its live writer)
    ingest/ref-<key>.lock   a ref'd ingest's lock; <key> = sha256 of the ref
    ingest/ref-<key>.json   its descriptor: ref, expected, size, started
    ingest/ref-<key>.data   its partial data
    ingest/sweep.lock       writers hold it shared while creating a temp file; sweep exclusive

Crash recovery by names: a temp file whose flock nobody holds belongs to a dead writer and
``sweep`` (run when a store is opened) removes it; a ref'd partial is kept for resume unless it is
useless (its blob exists, its descriptor is unreadable, it is empty); ``abort(ref)`` drops one.

Worked example::

    store = ContentStore(root / "content")
    d = store.put_bytes(b'{"schemaVersion": 2}')          # small: manifests, configs
    with store.ingest(desc_digest, desc_size, ref="pull-" + desc_digest) as w:
        if not w.done:                                     # not stored yet
            resp = http_get(url, range_from=w.offset)      # resume where a failed try stopped
            w.write_from(resp)                             # hashed and written, pipelined
        w.commit()                                         # DigestMismatch -> nothing kept
    with store.open(desc_digest) as f: ...

Every method says what must be true before (*Requires*), what it does (*Effect*), what it raises
(*Raises*, a ``graph.errors`` class) and what a repeat does (*Repeat*).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator

from drivers.sys.durable import fsync_dir, start_writeback
from drivers.sys.flock import Flock
from drivers.sys.record import Frozen
from graph.digest import Digest, sha256 as _sha256
from graph.errors import Conflict, Corrupt, DigestMismatch, InvalidInput, NotFound, Unsupported
from graph.verify import CHUNK, hash_stream

if TYPE_CHECKING:
    import hashlib

_BLOB_MODE = 0o444
_DATA_MODE = 0o644
_PIPELINE_BUFFERS = 3  # measured: 3 x 1 MiB keeps the hashing thread busy; more does not help
# A durable writer starts the kernel's writeback of every this many new bytes (without waiting),
# so the fsync at commit finds little left to do: 256 MiB on a journaled ext4 loop went from
# 0.23-0.26 s to 0.21 s (hashing alone: 0.15 s).
_WRITEBACK_EVERY = 8 << 20

# Fault injection for crash tests: called with a step name ("synced": data fsynced, not yet
# linked; "linked": blob visible, ingest files not yet removed). Tests set it in a child process
# to SIGKILL themselves at that step. None in production.
_crash_hook: Callable[[str], None] | None = None


def _crash_point(step: str) -> None:
    if _crash_hook is not None:
        _crash_hook(step)



class IngestStatus(Frozen):
    """A resumable (ref'd) ingest, live or interrupted."""

    __slots__ = ("ref", "offset", "expected", "size", "started", "updated")
    ref: str
    offset: int  # bytes written so far
    expected: Digest | None
    size: int | None  # the descriptor's size, if given
    started: float  # time.time() when this ingest began (kept across resumes)
    updated: float  # last write (mtime of the partial data)


# Threads of this process holding a ref lock: a second ingest of the same ref on the same thread
# would wait for itself forever, so it is refused instead.
_held_refs: set[tuple[str, int]] = set()
_held_refs_lock = threading.Lock()


class ContentStore:
    """Blobs by sha256 on a local filesystem. See the module docstring for the model.

    ``durable=False`` skips every fsync (for throwaway stores in tests and benchmarks; a power
    loss may then leave a truncated blob under its name). Safe to use from several threads and
    processes at once; a ``Writer`` belongs to one thread.
    """

    def __init__(self, root: Path, *, durable: bool = True, sweep: bool = True) -> None:
        """Open (creating if needed) the store at ``root`` and, unless ``sweep=False``, sweep
        what dead writers left in ``ingest/``."""
        self.root = Path(root)
        self.durable = durable
        self._blobs = self.root / "blobs" / "sha256"
        self._ingest = self.root / "ingest"
        for d in (self.root, self.root / "blobs", self._blobs, self._ingest):
            self._mkdir(d)
        self._sweep_lock_path = self._ingest / "sweep.lock"
        if sweep:
            self.sweep()

    # -- reading --------------------------------------------------------------------------------

    def exists(self, d: Digest) -> bool:
        """Whether blob ``d`` is committed.

        Requires: nothing.  Effect: none.  Raises: InvalidInput (``d`` is not a sha256 digest).
        Repeat: yes.
        """
        return self._blob(d).is_file()

    def size(self, d: Digest) -> int:
        """Size in bytes of blob ``d``.

        Requires: nothing.  Effect: none.  Raises: NotFound, InvalidInput.  Repeat: yes.
        """
        try:
            return os.stat(self._blob(d)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {d} not found") from None

    def path(self, d: Digest) -> Path:
        """The file holding blob ``d``, for zero-copy readers (sendfile, copy_file_range).

        Requires: nothing.  Effect: none.  Raises: NotFound, InvalidInput.
        Repeat: yes; the path stays valid until ``delete(d)``. Never write to it.
        """
        p = self._blob(d)
        if not p.is_file():
            raise NotFound(f"blob {d} not found")
        return p

    def open(self, d: Digest) -> BinaryIO:
        """Open blob ``d`` for reading. The bytes are not re-verified: wrap the file in a
        ``VerifyingReader`` (or call ``verify``) where stored data must be checked.

        Requires: nothing.  Effect: an open file the caller closes (it stays readable even if
        the blob is deleted meanwhile).  Raises: NotFound, InvalidInput.  Repeat: yes.
        """
        try:
            return open(self._blob(d), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {d} not found") from None

    def read_bytes(self, d: Digest, max_size: int = 64 << 20) -> bytes:
        """The whole of a small blob (manifest, index, config), re-verified against its digest:
        these bytes are parsed as trusted JSON next, so a damaged file must not get through.

        Requires: nothing.  Effect: none.
        Raises: NotFound; InvalidInput (bigger than ``max_size``: a "config" of gigabytes is an
        attack or a mistake); Corrupt (stored bytes no longer match ``d``).
        Repeat: yes.
        """
        d = Digest(d)
        try:
            f = open(self._blob(d), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {d} not found") from None
        with f:
            n = os.fstat(f.fileno()).st_size
            if n > max_size:
                raise InvalidInput(f"blob {d} is {n} bytes, over the {max_size}-byte limit")
            data = f.read(max_size + 1)
        if len(data) > max_size:
            raise InvalidInput(f"blob {d} is over the {max_size}-byte limit")
        actual = Digest.of(data)
        if actual != d:
            raise Corrupt(f"blob {d}: stored bytes hash to {actual}")
        return data

    def walk(self) -> Iterator[tuple[Digest, int]]:
        """Every committed blob and its size, in no particular order. Names that are not a
        sha256 hex digest are skipped (never touched).

        Requires: nothing.  Effect: none.  Raises: nothing for a concurrent delete (that blob
        is skipped).  Repeat: yes.
        """
        with os.scandir(self._blobs) as it:
            for entry in it:
                name = entry.name
                if len(name) != 64 or name.strip("0123456789abcdef"):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if entry.is_file(follow_symlinks=False):
                    yield Digest.from_hex(name), st.st_size

    def hex_names(self) -> set[str]:
        """The hex part of every committed blob's name, without a stat per blob: the cheap
        listing a garbage collector compares with its live set (``walk`` gives sizes).

        Requires: nothing.  Effect: none.  Raises: nothing for concurrent changes.  Repeat: yes.
        """
        return {n for n in os.listdir(self._blobs) if len(n) == 64 and not n.strip("0123456789abcdef")}

    def verify(self, d: Digest) -> None:
        """Re-hash stored blob ``d`` (``lamina system check``).

        Requires: nothing.  Effect: none.
        Raises: NotFound; Corrupt (the bytes no longer hash to ``d``).  Repeat: yes.
        """
        d = Digest(d)
        with self.open(d) as f:
            actual, n = hash_stream(f)
        if actual != d:
            raise Corrupt(f"blob {d}: stored bytes ({n}) hash to {actual}")

    # -- removing -------------------------------------------------------------------------------

    def delete(self, d: Digest) -> None:
        """Remove blob ``d``. Readers that have it open keep reading their copy. The removal is
        not synced: after a power loss a deleted blob may come back, and GC deletes it again.

        Requires: nothing refers to ``d`` any more (the GC's job, not checked here).
        Effect: ``d`` is no longer stored.  Raises: InvalidInput.
        Repeat: deleting a missing blob is a no-op.
        """
        try:
            os.unlink(self._blob(d))
        except FileNotFoundError:
            pass

    # -- writing --------------------------------------------------------------------------------

    def ingest(
        self, expected: Digest | None = None, size: int | None = None, ref: str | None = None
    ) -> "Writer":
        """Start (or resume) writing a blob; use the result as a context manager.

        Requires: ``size`` >= 0 when given; ``ref`` a non-empty string when given, not already
        held by this thread.
        Effect: a ``Writer``. If ``expected`` is already stored, the writer is ``done``
        (``offset == size of the blob``; write nothing, ``commit()`` returns at once). With a
        ``ref`` this waits for any other writer of that ref, then resumes its partial data when
        ``expected`` and ``size`` equal the partial's (else starts over); ``offset`` says where.
        Raises: InvalidInput (bad arguments), Conflict (this thread already holds ``ref``).
        Repeat: a new writer each time; see resume above.
        """
        exp = Digest(expected) if expected is not None else None
        if size is not None and (not isinstance(size, int) or size < 0):
            raise InvalidInput(f"invalid size {size!r} for ingest of {exp or 'a blob'}")
        if ref is not None and (not isinstance(ref, str) or not ref or "\0" in ref or len(ref) > 4096):
            raise InvalidInput(f"invalid ingest ref {ref!r}")
        w = Writer(self, exp, size, ref)
        if exp is not None and self._set_done_if_stored(w):
            return w
        if ref is None:
            self._open_temp(w)
        else:
            self._open_ref(w)
        return w

    def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        """Store ``data``; return its digest.

        Requires: nothing.  Effect: the blob is stored.
        Raises: DigestMismatch (``expected`` given and different; nothing stored).
        Repeat: yes; storing an existing blob is a no-op that returns its digest.
        """
        actual = Digest.of(data)
        if expected is not None and Digest(expected) != actual:
            raise DigestMismatch(f"digest mismatch: expected {expected}, got {actual} ({len(data)} bytes)")
        with self.ingest(actual, len(data)) as w:
            if not w.done:
                w.write(data)
            return w.commit()

    def put_stream(
        self, stream: BinaryIO, expected: Digest | None = None, size: int | None = None
    ) -> Digest:
        """Store everything ``stream`` yields; return its digest. Reading, hashing and writing
        overlap (a hashing thread), so a large blob goes in at nearly the speed of sha256.

        Requires: a blocking, readable stream.
        Effect: the blob is stored. If ``expected`` is already stored, returns at once without
        reading ``stream``.
        Raises: DigestMismatch (digest or size differ; more bytes than ``size`` are detected as
        they arrive and the stream is not read further; nothing stored), whatever ``stream``
        raises (nothing stored).
        Repeat: yes.
        """
        with self.ingest(expected, size) as w:
            if not w.done:
                w.write_from(stream)
            return w.commit()

    def ingests(self) -> list[IngestStatus]:
        """The resumable (ref'd) ingests present, live or interrupted, sorted by ref. Ref-less
        ingests are anonymous and not listed.

        Requires: nothing.  Effect: none.  Raises: nothing for concurrent changes.  Repeat: yes.
        """
        out: list[IngestStatus] = []
        with os.scandir(self._ingest) as it:
            names = [e.name for e in it]
        for name in names:
            if not (name.startswith("ref-") and name.endswith(".json")):
                continue
            base = self._ingest / name[: -len(".json")]
            meta = _read_meta(base)
            if meta is None:
                continue
            try:
                st = os.stat(base.with_suffix(".data"))
                offset, updated = st.st_size, st.st_mtime
            except FileNotFoundError:
                offset, updated = 0, meta.started
            out.append(IngestStatus(meta.ref, offset, meta.expected, meta.size, meta.started, updated))
        out.sort(key=lambda s: s.ref)
        return out

    def abort(self, ref: str) -> None:
        """Drop the partial data of ingest ``ref``.

        Requires: no live writer holds ``ref``.  Effect: the ingest is gone from ``ingests()``.
        Raises: Conflict (a live writer holds it).
        Repeat: aborting an unknown ref is a no-op.
        """
        base = self._ref_base(ref)
        fd = _lock(base.with_suffix(".lock"), blocking=False)
        if fd is None:
            raise Conflict(f"ingest {ref!r} is in progress")
        _remove_ref_files(base, fd)

    def sweep(self) -> None:
        """Remove what dead writers left in ``ingest/``: temp files of ref-less ingests, and
        ref'd partials that cannot be resumed usefully (their blob is stored, their descriptor is
        unreadable, or they hold no bytes). Resumable partials stay (``abort`` drops them). Live
        writers are never touched: a file is only removed under its own flock.

        Requires: nothing.  Effect: as above.  Raises: nothing for concurrent ingests.
        Repeat: yes; called whenever a store is opened.
        """
        keys: set[str] = set()
        with Flock(self._sweep_lock_path, mode=_DATA_MODE):
            with os.scandir(self._ingest) as it:
                names = [e.name for e in it]
            for name in names:
                if name.startswith("tmp-"):
                    _remove_if_unlocked(self._ingest / name)
                elif name.startswith("ref-"):
                    keys.add(name[4:].split(".", 1)[0])
        for key in keys:
            self._sweep_ref(self._ingest / f"ref-{key}", key)

    # -- internals ------------------------------------------------------------------------------

    def _blob(self, d: Digest) -> Path:
        return self._blobs / Digest(d).hex

    def _ref_base(self, ref: str) -> Path:
        return self._ingest / f"ref-{_sha256(ref.encode()).hexdigest()}"

    def _mkdir(self, path: Path) -> None:
        try:
            path.mkdir()
        except FileExistsError:
            return
        if self.durable:
            fsync_dir(path.parent)

    def _set_done_if_stored(self, w: "Writer") -> bool:
        assert w.expected is not None
        try:
            n = os.stat(self._blob(w.expected)).st_size
        except FileNotFoundError:
            return False
        w.done = True
        w.offset = n
        w._limit = n
        return True

    def _open_temp(self, w: "Writer") -> None:
        # The shared sweep lock covers the moment between creating the file and locking it, so
        # a concurrent sweep never mistakes a newborn temp file for a dead writer's.
        with Flock(self._sweep_lock_path, shared=True, mode=_DATA_MODE):
            while True:
                path = self._ingest / f"tmp-{os.urandom(16).hex()}"
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _DATA_MODE)
                    break
                except FileExistsError:
                    continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        w._fd, w._path = fd, path

    def _open_ref(self, w: "Writer") -> None:
        assert w.ref is not None
        base = self._ref_base(w.ref)
        held = (base.name, threading.get_ident())
        with _held_refs_lock:
            if held in _held_refs:
                raise Conflict(f"ingest {w.ref!r} is already open in this thread")
            _held_refs.add(held)
        try:
            lock_fd = _lock(base.with_suffix(".lock"), blocking=True)
        except BaseException:
            with _held_refs_lock:
                _held_refs.discard(held)
            raise
        assert lock_fd is not None
        w._lock_fd, w._ref_base, w._held = lock_fd, base, held
        try:
            if w.expected is not None and self._set_done_if_stored(w):
                # another writer committed it while we waited: nothing of this ref is needed
                w._drop_ref_files()
                w._unhold()
                return
            data = base.with_suffix(".data")
            meta = _read_meta(base)
            if meta is not None and (meta.ref, meta.expected, meta.size) == (w.ref, w.expected, w.size) and data.exists():
                os.chmod(data, _DATA_MODE)  # a commit that failed after fchmod left it 0444
                fd = os.open(data, os.O_RDWR | os.O_CLOEXEC)
                w._fd, w._path = fd, data
                offset = _rehash(fd, w._hash)
                if w.size is None or offset <= w.size:
                    w.offset = w._flushed = offset
                    w.started = meta.started
                    return
                os.close(fd)
                w._fd = -1
                w._hash = _sha256()
            # start over
            w.started = time.time()
            _write_meta(base, w.ref, w.expected, w.size, w.started)
            _unlink(data)  # not truncate: a failed commit may have left it read-only
            w._fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _DATA_MODE)
            w._path = data
        except BaseException:
            w._release_fds()
            raise

    def _publish(self, fd: int, path: Path, d: Digest) -> None:
        """Make ``path`` (fd ``fd``, verified to hash to ``d``) the blob ``d``: fsync, read-only,
        hard-link into blobs/ (never replacing an existing blob), fsync the directory."""
        final = self._blob(d)
        if final.exists():
            return
        os.fchmod(fd, _BLOB_MODE)
        if self.durable:
            os.fsync(fd)
        _crash_point("synced")
        try:
            os.link(path, final)
        except FileExistsError:
            pass  # lost the race to an equal blob: ours is dropped by the caller; the winner
            # may not have synced the directory yet, so sync it before reporting success
        _crash_point("linked")
        if self.durable:
            fsync_dir(self._blobs)

    def _sweep_ref(self, base: Path, key: str) -> None:
        fd = _lock(base.with_suffix(".lock"), blocking=False)
        if fd is None:
            return  # a live writer
        meta = _read_meta(base)
        try:
            n = os.stat(base.with_suffix(".data")).st_size
        except FileNotFoundError:
            n = 0
        keep = (
            meta is not None
            and _sha256(meta.ref.encode()).hexdigest() == key
            and n > 0
            and (meta.size is None or n <= meta.size)
            and not (meta.expected is not None and self._blob(meta.expected).exists())
        )
        if keep:
            os.close(fd)
        else:
            _remove_ref_files(base, fd)


class Writer:
    """One ingest in progress; made by ``ContentStore.ingest``. Use it as a context manager.

    ``offset`` is the number of bytes already present (non-zero when a ref'd ingest resumes, or
    the blob's size when ``done``); write the bytes from there on. ``done`` is True when the blob
    is already stored: write nothing and ``commit()``.

    Leaving the ``with`` block without a commit discards the data, except that a ref'd ingest
    left by an exception other than ``DigestMismatch`` (a transport error, an interrupt) keeps
    its partial data for a later resume. A ``DigestMismatch`` always discards: the bytes are
    wrong, resuming from them could only fail again. Not thread-safe.
    """

    def __init__(self, store: ContentStore, expected: Digest | None, size: int | None, ref: str | None) -> None:
        self.expected = expected
        self.size = size
        self.ref = ref
        self.offset = 0
        self.done = False
        self.started = time.time()
        self._store = store
        self._limit = size
        self._hash = _sha256()
        self._fd = -1
        self._path: Path | None = None
        self._lock_fd = -1
        self._ref_base: Path | None = None
        self._held: tuple[str, int] | None = None
        self._closed = False
        self._broken = False
        self._digest: Digest | None = None
        self._flushed = 0  # bytes handed to the kernel's writeback (see _start_writeback)

    def __repr__(self) -> str:
        return f"<Writer {self._name()} offset={self.offset}{' done' if self.done else ''}>"

    @property
    def path(self) -> Path | None:
        """The file this ingest writes (None when ``done`` or closed). For reading only, e.g.
        to apply a layer while it downloads: the first ``offset`` bytes are written but not yet
        verified, so a reader must not act on them for good before ``commit`` succeeds."""
        return None if self._closed or self.done else self._path

    # -- writing --------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` (hashed and written before returning; the caller may reuse its buffer).

        Requires: the writer is open and not ``done``.
        Effect: ``offset`` grows by ``len(data)``.
        Raises: DigestMismatch (this would pass the expected size; nothing of it is written),
        OSError from the filesystem (the writer is then unusable; a ref'd partial stays
        resumable), Conflict (closed or unusable writer).
        Repeat: appends again.
        """
        self._check_usable()
        mv = memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        self._check_room(len(mv))
        try:
            _write_all(self._fd, mv)
        except BaseException:
            self._broken = True
            raise
        self._hash.update(mv)
        self.offset += len(mv)
        if self.offset - self._flushed >= _WRITEBACK_EVERY:
            self._start_writeback()

    def write_from(self, stream: BinaryIO) -> int:
        """Append everything ``stream`` yields until EOF; return the byte count. Large copies
        overlap reading and writing (this thread) with hashing (a helper thread, as hashlib
        releases the GIL), so the copy runs at about the speed of sha256 alone.

        Requires: as ``write``; ``stream`` is blocking and positioned at ``offset`` of the blob.
        Effect: as ``write``, chunk by chunk. Reads are capped at the remaining expected size
        plus one byte, so an oversized stream is stopped at once.
        Raises: DigestMismatch (more bytes than ``size``); what ``stream`` raises (the bytes
        before the failure are kept, and the writer stays usable: a caller may continue with
        another stream from ``offset``); as ``write``.
        Repeat: appends again.
        """
        self._check_usable()
        readinto = getattr(stream, "readinto", None)
        remaining = None if self._limit is None else self._limit - self.offset
        if readinto is None or (remaining is not None and remaining <= 2 * CHUNK):
            return self._copy_serial(stream, readinto)
        return self._copy_pipelined(readinto)

    def _want(self) -> int:
        if self._limit is None:
            return CHUNK
        return max(1, min(CHUNK, self._limit - self.offset + 1))

    def _copy_serial(self, stream: BinaryIO, readinto: Callable[[memoryview], int | None] | None) -> int:
        buf = memoryview(bytearray(CHUNK))
        total = 0
        while True:
            want = self._want()
            if readinto is not None:
                n = readinto(buf[:want])
                chunk = buf[:n] if n else None
            else:
                data = stream.read(want)
                n = None if data is None else len(data)
                chunk = memoryview(data) if n else None
            if n is None:
                raise Unsupported(f"ingest of {self._name()}: non-blocking streams are not supported")
            if chunk is None:
                return total
            self.write(chunk)
            total += n

    def _copy_pipelined(self, readinto: Callable[[memoryview], int | None]) -> int:
        # This thread reads a chunk into a free buffer, queues it for the hashing thread, writes
        # it to the file; a buffer returns to the free list once hashed (and it was written
        # before this thread asked for another buffer).
        import queue

        free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        work: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        for _ in range(_PIPELINE_BUFFERS):
            free.put(bytearray(CHUNK))
        h = self._hash

        def hasher() -> None:
            while True:
                item = work.get()
                if item is None:
                    return
                b, k = item
                h.update(memoryview(b)[:k])
                free.put(b)

        t = threading.Thread(target=hasher, name="lamina-ingest-hash", daemon=True)
        t.start()
        total = 0
        try:
            while True:
                buf = free.get()
                mv = memoryview(buf)
                n = readinto(mv[: self._want()])
                if n is None:
                    raise Unsupported(f"ingest of {self._name()}: non-blocking streams are not supported")
                if n == 0:
                    return total
                self._check_room(n)
                work.put((buf, n))
                try:
                    _write_all(self._fd, mv[:n])
                except BaseException:
                    self._broken = True
                    raise
                self.offset += n
                total += n
                if self.offset - self._flushed >= _WRITEBACK_EVERY:
                    self._start_writeback()
        finally:
            work.put(None)
            t.join()

    # -- finishing ------------------------------------------------------------------------------

    def commit(self) -> Digest:
        """Verify and store the blob; return its digest. Always closes the writer.

        Requires: the writer is open.
        Effect: checks ``offset == size`` and the digest against ``expected`` (when given),
        fsyncs the data, makes it read-only, links it to ``blobs/sha256/<hex>`` and fsyncs that
        directory; then removes the ingest's files. If the blob is already stored (another
        writer won), ours is discarded: success all the same.
        Raises: DigestMismatch (size or digest differ; the data is discarded, ref'd or not);
        OSError (disk trouble: a ref'd ingest's data is kept for resume); Conflict (the writer
        is closed or unusable).
        Repeat: after a successful commit, returns the same digest again.
        """
        if self._digest is not None:
            return self._digest
        self._check_usable()
        try:
            if self.size is not None and self.offset != self.size:
                what = "stored blob has" if self.done else "got"
                raise DigestMismatch(f"{self._name()}: expected {self.size} bytes, {what} {self.offset}")
            if self.done:
                assert self.expected is not None
                digest = self.expected
            else:
                digest = Digest.from_hex(self._hash.hexdigest())
                if self.expected is not None and digest != self.expected:
                    raise DigestMismatch(
                        f"digest mismatch: expected {self.expected}, got {digest} ({self.offset} bytes)"
                    )
                assert self._path is not None
                self._store._publish(self._fd, self._path, digest)
        except DigestMismatch:
            self.discard()
            raise
        except BaseException:
            self.close()
            raise
        self._digest = digest
        self.discard()  # the blob is linked (or was there): drop the ingest's own names
        return digest

    def discard(self) -> None:
        """Drop the data written so far (and a ref'd ingest's record) and close the writer.

        Requires: nothing.  Effect: nothing of this ingest remains.  Raises: nothing new.
        Repeat: a no-op once closed.
        """
        if self._closed:
            return
        try:
            if self._path is not None and self._ref_base is None:
                _unlink(self._path)  # under our flock, so sweep cannot race us
            self._drop_ref_files()
        finally:
            self._release_fds()

    def close(self) -> None:
        """Close without committing: a ref'd ingest keeps its partial data for a later resume;
        a ref-less one is discarded.

        Requires: nothing.  Effect: the writer is closed; the ref (if any) is free again.
        Raises: nothing new.  Repeat: a no-op once closed.
        """
        if self._closed:
            return
        if self._ref_base is None or self.done:
            self.discard()
        else:
            self._release_fds()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._closed:
            return
        if exc_type is None or issubclass(exc_type, DigestMismatch):
            self.discard()  # not committed, or wrong bytes: nothing may remain
        else:
            self.close()  # transport error or interrupt: a ref'd partial stays resumable

    def __del__(self) -> None:
        # A writer dropped without close: free the descriptors (and so the locks); its files are
        # left for sweep or a resume, which is what a crash would leave too.
        try:
            self._release_fds()
        except Exception:  # noqa: BLE001 - nothing to report to in a finaliser
            pass

    # -- internals ------------------------------------------------------------------------------

    def _name(self) -> str:
        if self.expected is not None:
            return str(self.expected)
        return f"ingest {self.ref!r}" if self.ref is not None else "ingest"

    def _check_usable(self) -> None:
        if self._closed:
            raise Conflict(f"writer for {self._name()} is closed")
        if self._broken:
            raise Conflict(f"writer for {self._name()} failed earlier; start a new ingest")

    def _check_room(self, n: int) -> None:
        if self._limit is not None and self.offset + n > self._limit:
            self._broken = True
            raise DigestMismatch(f"{self._name()}: more than the expected {self._limit} bytes")

    def _start_writeback(self) -> None:
        """Ask the kernel to start writing the bytes since the last call (durable stores only;
        advisory: commit's fsync is what guarantees durability)."""
        if self._store.durable and self._fd >= 0:
            start_writeback(self._fd, self._flushed, self.offset - self._flushed)
        self._flushed = self.offset

    def _drop_ref_files(self) -> None:
        if self._ref_base is not None and self._lock_fd >= 0:
            fd, self._lock_fd = self._lock_fd, -1
            _remove_ref_files(self._ref_base, fd)

    def _release_fds(self) -> None:
        self._closed = True
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        if self._lock_fd >= 0:
            fd, self._lock_fd = self._lock_fd, -1
            os.close(fd)
        self._unhold()

    def _unhold(self) -> None:
        if self._held is not None:
            with _held_refs_lock:
                _held_refs.discard(self._held)
            self._held = None


# -- file helpers -----------------------------------------------------------------------------------


def _lock(path: Path, blocking: bool) -> int | None:
    """Exclusive flock on ``path``, creating it; None if ``blocking`` is False and it is held.

    Lock files are removed by their holder (unlink, then close). A waiter may therefore wake up
    holding the lock of a file that is no longer at ``path``; it then tries again with the file
    now there, so two holders can never coexist.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _DATA_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            st = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        fst = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino):
            return fd
        os.close(fd)


def _remove_ref_files(base: Path, lock_fd: int) -> None:
    """Remove a ref'd ingest's files while holding its lock (``lock_fd``), lock file last."""
    try:
        _unlink(base.with_suffix(".data"))
        _unlink(base.with_suffix(".json"))
        _unlink(base.with_suffix(".lock"))
    finally:
        os.close(lock_fd)


def _remove_if_unlocked(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a live writer
        _unlink(path)
    finally:
        os.close(fd)


class _Meta(Frozen):
    __slots__ = ("ref", "expected", "size", "started")
    ref: str
    expected: Digest | None
    size: int | None
    started: float


def _read_meta(base: Path) -> _Meta | None:
    """A ref'd ingest's descriptor, validated (it is input like any other); None when missing
    or unreadable."""
    try:
        raw = json.loads(base.with_suffix(".json").read_bytes())
        ref, expected, size, started = raw["ref"], raw["expected"], raw["size"], raw["started"]
        if not isinstance(ref, str) or not isinstance(started, (int, float)) or isinstance(started, bool):
            return None
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            return None
        exp = Digest(expected) if expected is not None else None
    except (OSError, ValueError, KeyError, TypeError, InvalidInput):
        return None
    return _Meta(ref, exp, size, float(started))


def _write_meta(base: Path, ref: str, expected: Digest | None, size: int | None, started: float) -> None:
    # Written under the ref's lock; a torn write reads back as invalid and the ingest restarts.
    base.with_suffix(".json").write_text(
        json.dumps({"ref": ref, "expected": expected, "size": size, "started": started})
    )


def _rehash(fd: int, h: "hashlib._Hash") -> int:
    """Feed the file's bytes to ``h`` (restoring a resumed ingest's sha256 state); return the
    count and leave the offset at the end."""
    os.lseek(fd, 0, os.SEEK_SET)
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    total = 0
    while True:
        n = os.readv(fd, [buf])
        if n == 0:
            return total
        h.update(mv[:n])
        total += n


def _write_all(fd: int, mv: memoryview) -> None:
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


