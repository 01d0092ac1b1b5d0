"""Layer blobs to layer tars: decompression in the stream, shared by everything that turns a
stored or downloaded layer blob into an applied layer (``graph.distribution.pull``; ``graph.archive`` has the
same helper under ``_decompressed`` and can import this one instead).

``decompressed(stream, compression, what)`` reads ``stream`` (any blocking binary reader) and
yields the uncompressed tar: gzip through ISA-L (``isal.igzip``: about 2.5x stdlib zlib on these
machines), zstd through ``zstandard`` (across frames), ``none`` as is. Format errors of the
decompressors (zlib, ISA-L, zstd, truncated streams) come out as ``InvalidInput`` naming
``what`` and the compression, so the driver's tar applier, the layer store and the CLI see one
error family. The libraries are imported on first use (the CLI's start stays light).
"""

from __future__ import annotations

import contextlib
import io
import zlib
from typing import Any, BinaryIO

from graph.errors import InvalidInput, LaminaError, Unsupported

COMPRESSIONS = ("none", "gzip", "zstd")
_ZSTD_IN = 128 << 10  # compressed bytes per step: small outputs stay in cache (measured: as fast as stream_reader)


def _errors() -> tuple[type[BaseException], ...]:
    import zstandard
    from isal import isal_zlib

    return (OSError, EOFError, zlib.error, isal_zlib.error, zstandard.ZstdError)


class _Guarded(io.RawIOBase):
    """A decompressing reader whose format errors become ``InvalidInput`` naming the blob."""

    def __init__(self, inner: Any, what: str, compression: str) -> None:
        super().__init__()
        self._inner, self._what, self._compression = inner, what, compression
        self._errors = _errors()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            return self._inner.readinto(b) or 0
        except LaminaError:
            raise
        except self._errors as e:
            raise InvalidInput(f"{self._what}: corrupt {self._compression} data: {' '.join(str(e).split())}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._inner.close()
        super().close()


class _ZstdReader(io.RawIOBase):
    """zstd frames, one after another, decompressed. Unlike ``zstandard``'s ``stream_reader``
    (which ends quietly when the input stops inside a frame) a truncated stream is an error."""

    def __init__(self, raw: BinaryIO, what: str) -> None:
        import zstandard

        super().__init__()
        self._raw, self._what = raw, what
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._out = memoryview(b"")
        self._pos = 0
        self._in_frame = False
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        while self._pos >= len(self._out):
            if self._eof:
                return 0
            chunk = self._raw.read(_ZSTD_IN)
            if not chunk:
                if self._in_frame:
                    raise InvalidInput(f"{self._what}: corrupt zstd data: the stream ends inside a frame")
                self._eof = True
                return 0
            self._out, self._pos = memoryview(self._feed(chunk)), 0
        n = min(len(mv), len(self._out) - self._pos)
        mv[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n

    def _feed(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            self._in_frame = True
            out.append(self._obj.decompress(chunk))
            if not self._obj.eof:
                break
            self._in_frame = False  # a frame ended: what follows starts the next one
            chunk = self._obj.unused_data
            self._obj = self._dctx.decompressobj()
        return b"".join(out)


def decompressed(stream: BinaryIO, compression: str, what: str) -> BinaryIO:
    """``stream`` decompressed on the fly (see the module docstring).

    Requires: ``compression`` is one of ``COMPRESSIONS`` (``formats.layer_compression`` gives
    it for a media type).
    Effect: a reader; closing it leaves ``stream`` open.
    Raises: Unsupported (another compression); the reader raises InvalidInput on bad data.
    Repeat: a new reader each time.
    """
    if compression == "none":
        return stream
    if compression == "gzip":
        from isal import igzip

        inner: Any = igzip.IGzipFile(fileobj=stream, mode="rb")
    elif compression == "zstd":
        inner = _ZstdReader(stream, what)
    else:
        raise Unsupported(f"{what}: {compression} compression is not supported for layers")
    return _Guarded(inner, what, compression)  # type: ignore[return-value]


__all__ = ["COMPRESSIONS", "decompressed"]
