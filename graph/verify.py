"""Verify in the stream: readers that hash what passes through them.

Bytes from a registry, an archive or the content store are checked while they are consumed,
never by reading them twice. ``HashingReader`` is a tee: it hands the bytes on unchanged and
feeds them to sha256, counting them (the DiffID of a layer tar is computed this way while the
tar is applied). ``VerifyingReader`` adds the verdict: at end of stream the digest and size must
equal what a descriptor promised, or it raises ``DigestMismatch``; and it raises as soon as more
bytes arrive than the descriptor's size, so a hostile blob that is bigger than it claims is never
read to its end.

The verdict comes at EOF, so **a caller must drain the reader** (``drain()``) after its consumer
stops: a tar reader usually stops before the archive's trailing padding, and the padding is part
of the digest. The wrapped stream belongs to the caller: closing a reader (which ``io`` also does
when one is garbage-collected) leaves it open.

Hot path: reads go straight into the caller's buffer (``readinto`` on a memoryview) and the
slice is handed to hashlib's C ``update``, which drops the GIL for large buffers; there is no
per-byte Python work. Use reads of about 1 MiB (``CHUNK``).
"""

from __future__ import annotations

import io
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from graph.digest import Digest, sha256
from graph.errors import DigestMismatch, LaminaError, Unsupported

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK = 1 << 20
"""The read size these readers are tuned for (1 MiB)."""


class HashingReader(io.RawIOBase):
    """A tee over ``raw``: every byte read through it is returned unchanged and hashed.

    ``digest()`` and ``size`` describe the bytes read so far. Not thread-safe.
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._hash = sha256()
        self._count = 0
        self._limit: int | None = None  # a VerifyingReader caps reads at its size + 1
        self._raw_readinto = getattr(raw, "readinto", None)

    # -- what a caller asks -------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes read (and hashed) so far."""
        return self._count

    def digest(self) -> Digest:
        """sha256 of the bytes read so far."""
        return Digest.from_hex(self._hash.hexdigest())

    def readable(self) -> bool:
        return True

    def drain(self, chunk: int = CHUNK) -> int:
        """Read to EOF, discarding the bytes (they are still hashed); return how many there were.
        On a ``VerifyingReader`` this is what delivers the verdict."""
        buf = bytearray(chunk)
        total = 0
        while True:
            n = self.readinto(buf)
            if n is None:
                raise Unsupported("cannot drain a non-blocking stream")
            if n == 0:
                return total
            total += n

    # -- io.RawIOBase -------------------------------------------------------------------------

    def readinto(self, b: WriteableBuffer) -> int | None:
        self._check_usable()
        mv = memoryview(b)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        want = self._cap(len(mv))
        if want == 0:
            return 0
        n: int | None
        if self._raw_readinto is not None:
            n = self._raw_readinto(mv[:want])
            if n is None:
                return None
        else:
            data = self._raw.read(want)
            if data is None:
                return None
            n = len(data)
            mv[:n] = data
        if n:
            self._hash.update(mv[:n])
            self._count += n
        self._after(n)
        return n

    def read(self, size: int | None = -1) -> bytes | None:
        """Read up to ``size`` bytes (all, when negative). Hands the wrapped stream's own bytes
        object on, so no extra copy is made."""
        self._check_usable()
        if size is None or size < 0:
            return self.readall()
        want = self._cap(size)
        if want == 0:
            return b""
        data = self._raw.read(want)
        if data is None:
            return None
        if data:
            self._hash.update(data)
            self._count += len(data)
        self._after(len(data))
        return bytes(data) if not isinstance(data, bytes) else data

    def readall(self) -> bytes:
        parts: list[bytes] = []
        while True:
            data = self.read(CHUNK)
            if data is None:
                raise Unsupported("cannot read all of a non-blocking stream")
            if not data:
                return b"".join(parts)
            parts.append(data)

    # -- hooks for VerifyingReader ------------------------------------------------------------

    def _check_usable(self) -> None:
        if self.closed:
            raise ValueError("read from a closed reader")

    def _cap(self, want: int) -> int:
        return want

    def _after(self, n: int) -> None:
        """Called after each read of ``n`` bytes (0 = EOF)."""


class VerifyingReader(HashingReader):
    """A ``HashingReader`` that checks the bytes against a descriptor (``expected`` digest and,
    when known, ``size``).

    Raises ``DigestMismatch`` (one line naming expected and actual):
    - at EOF, when the digest or the byte count differ;
    - during a read, as soon as more than ``size`` bytes have arrived (reads are capped at the
      remaining size plus one byte, so at most one byte beyond the descriptor is ever read).
    After a mismatch every further read raises it again. ``verified`` is True once EOF was
    reached with everything matching.
    """

    def __init__(self, raw: BinaryIO, expected: Digest, size: int | None = None) -> None:
        super().__init__(raw)
        self.expected = Digest(expected)
        if size is not None and size < 0:
            raise ValueError(f"negative size {size} for {expected}")
        self.expected_size = size
        self._limit = size
        self.verified = False
        self._error: DigestMismatch | None = None

    def _check_usable(self) -> None:
        super()._check_usable()
        if self._error is not None:
            raise self._error

    def _cap(self, want: int) -> int:
        if self.verified:
            return 0
        if self._limit is None:
            return want
        return min(want, self._limit - self._count + 1)

    def _after(self, n: int) -> None:
        if self._limit is not None and self._count > self._limit:
            self._fail(f"{self.expected}: more than the expected {self._limit} bytes")
        if n == 0 and not self.verified:
            if self._limit is not None and self._count != self._limit:
                self._fail(f"{self.expected}: expected {self._limit} bytes, got {self._count}")
            actual = self.digest()
            if actual != self.expected:
                self._fail(f"digest mismatch: expected {self.expected}, got {actual} ({self._count} bytes)")
            self.verified = True

    def _fail(self, message: str) -> None:
        self._error = DigestMismatch(message)
        raise self._error


def hash_stream(stream: BinaryIO, chunk: int = CHUNK) -> tuple[Digest, int]:
    """sha256 and length of everything left in ``stream`` (read in ``chunk``-sized pieces)."""
    reader = HashingReader(stream)
    reader.drain(chunk)
    return reader.digest(), reader.size


class TeeReader(io.RawIOBase):
    """Bytes from ``raw`` handed on unchanged and copied into ``sink`` (a content-store writer,
    or None to only pass through): one read feeds the applier and the blob being stored."""

    def __init__(self, raw: BinaryIO, sink: Any | None) -> None:
        super().__init__()
        self._raw, self._sink = raw, sink
        self._readinto = getattr(raw, "readinto", None)  # a plain file-like object may lack it

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        if self._readinto is not None:
            n = self._readinto(mv) or 0
        else:
            data = self._raw.read(len(mv)) or b""
            n = len(data)
            mv[:n] = data
        if n and self._sink is not None:
            try:
                self._sink.write(mv[:n])
            except OSError as e:  # disk full, I/O error: the store's trouble, not the input's
                raise LaminaError(f"content store: cannot write blob: {e}") from e
        return n

    def drain(self) -> int:
        """Read (and copy) what is left; returns its byte count."""
        return drain(self)


def drain(stream: IO[bytes]) -> int:
    """Read ``stream`` to its end; returns how many bytes that was."""
    buf = bytearray(CHUNK)
    total = 0
    readinto = getattr(stream, "readinto", None)
    while True:
        if readinto is not None:
            n = readinto(buf)
        else:
            data = stream.read(CHUNK)
            n = len(data) if data else 0
        if not n:
            return total
        total += n
