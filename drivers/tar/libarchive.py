"""The libarchive tar parser of the layer applier: ``load()`` binds libarchive (through
libarchive-c, imported on first use) with our own prototypes, ``LibarchiveReader`` implements
``drivers.tar.entry.Reader`` over it. libarchive parses ustar, pax and GNU tars (sparse files,
long names) in C and hands out data blocks that are ``pwrite``n straight from its buffer.

Names are bytes: libarchive hands UTF-8 names over NFC-normalised, so a non-ASCII name is read
again from the raw header bytes (``header_names``).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import stat
from typing import Any, BinaryIO, Callable, Iterator, NamedTuple

from drivers.errors import Unsupported
from drivers.tar.entry import CHUNK, HARDLINK, Header, drain, malformed

__all__ = ["Lib", "LibarchiveReader", "header_names", "load"]

_OK, _EOF, _WARN = 0, 1, -20
_READ_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.POINTER(ctypes.c_void_p))


class Lib(NamedTuple):
    archive: ctypes.CDLL
    pwrite: Callable[..., int]


@functools.cache
def load() -> Lib | None:
    """libarchive with our own prototypes (a private CDLL handle, so libarchive-c's own
    prototypes and error checks stay as they are), and libc's pwrite; None if unavailable."""
    try:
        from libarchive import ffi  # libarchive-c: finds the shared library
        lib = ctypes.CDLL(ffi.libarchive_path)
    except (ImportError, OSError, AttributeError):
        return None
    p, i, ll, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_size_t
    protos: dict[str, tuple[list[type], type | None]] = {
        "archive_read_new": ([], p),
        "archive_read_support_format_tar": ([p], i),
        "archive_read_support_format_empty": ([p], i),
        "archive_read_open": ([p, p, p, _READ_CALLBACK, p], i),
        "archive_read_next_header": ([p, ctypes.POINTER(p)], i),
        "archive_read_data_block": ([p, ctypes.POINTER(p), ctypes.POINTER(sz),
                                     ctypes.POINTER(ll)], i),
        "archive_read_free": ([p], i),
        "archive_error_string": ([p], ctypes.c_char_p),
        "archive_read_header_position": ([p], ll),
        "archive_entry_pathname": ([p], ctypes.c_char_p),
        "archive_entry_hardlink": ([p], ctypes.c_char_p),
        "archive_entry_symlink": ([p], ctypes.c_char_p),
        "archive_entry_filetype": ([p], ctypes.c_uint),
        "archive_entry_mode": ([p], ctypes.c_uint),
        "archive_entry_size": ([p], ll),
        "archive_entry_uid": ([p], ll),
        "archive_entry_gid": ([p], ll),
        "archive_entry_mtime": ([p], ll),
        "archive_entry_mtime_nsec": ([p], ctypes.c_long),
        "archive_entry_atime": ([p], ll),
        "archive_entry_atime_nsec": ([p], ctypes.c_long),
        "archive_entry_atime_is_set": ([p], i),
        "archive_entry_rdevmajor": ([p], ctypes.c_uint),
        "archive_entry_rdevminor": ([p], ctypes.c_uint),
        "archive_entry_xattr_reset": ([p], i),
        "archive_entry_xattr_next": ([p, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(p),
                                      ctypes.POINTER(sz)], i),
    }
    try:
        for fname, (args, res) in protos.items():
            f = getattr(lib, fname)
            f.argtypes = args
            f.restype = res
        from drivers.sys.libc import libc

        pwrite = libc.pwrite
    except AttributeError:
        return None
    pwrite.argtypes = [i, p, sz, ll]
    pwrite.restype = ctypes.c_ssize_t
    return Lib(lib, pwrite)


class LibarchiveReader:
    """Headers and data from libarchive (tar formats only: ustar, pax, GNU incl. sparse and
    long names), fed from the caller's stream through a read callback, so the caller's hashing
    wrapper sees every byte. Data blocks are pwritten from libarchive's buffer without a copy."""

    def __init__(self, lib: Lib, stream: BinaryIO) -> None:
        self._lib = lib.archive
        self._pwrite = lib.pwrite
        self._stream = stream
        # two buffers, used in turn: the chunk before the current one stays intact, so the raw
        # header bytes of the current entry can be read again (``_raw_names``)
        self._bufs: tuple[Any, ...] = (_buffer(), _buffer())
        self._chunks: list[tuple[int, int, int]] = []  # (stream offset, buffer index, length)
        self._pos = 0  # stream bytes handed to libarchive so far
        self._readinto = getattr(stream, "readinto", None)
        self._error: BaseException | None = None
        self._callback = _READ_CALLBACK(self._read)
        self._entry = ctypes.c_void_p()
        self._block, self._block_size, self._offset = (ctypes.c_void_p(), ctypes.c_size_t(),
                                                       ctypes.c_longlong())
        self._block_args = (ctypes.byref(self._block), ctypes.byref(self._block_size),
                            ctypes.byref(self._offset))
        self._a = self._lib.archive_read_new()
        if not self._a:
            raise MemoryError("archive_read_new")
        self._lib.archive_read_support_format_tar(self._a)
        self._lib.archive_read_support_format_empty(self._a)
        if self._lib.archive_read_open(self._a, None, None, self._callback, None) != _OK:
            err = self._failure()
            self.close()
            raise err

    def _read(self, _archive: int, _context: int, out: Any) -> int:
        """libarchive's read callback: one chunk of the caller's stream (0 at its end)."""
        try:
            i = 1 - self._chunks[-1][1] if self._chunks else 0
            buf = self._bufs[i]
            if self._readinto is not None:
                n = self._readinto(buf) or 0
            else:
                data = self._stream.read(CHUNK)
                n = len(data)
                ctypes.memmove(buf, data, n)
            self._chunks = [*self._chunks[-1:], (self._pos, i, n)]
            self._pos += n
            out[0] = ctypes.addressof(buf)
            return n
        except BaseException as e:  # noqa: BLE001 - re-raised in Python once libarchive returns
            self._error = e
            return -1

    def _failure(self) -> BaseException:
        if self._error is not None:
            return self._error
        msg = self._lib.archive_error_string(self._a)
        return malformed(msg.decode("utf-8", "replace") if msg else "unreadable")

    def __iter__(self) -> Iterator[Header]:
        lib, a, entry_p = self._lib, self._a, self._entry
        ref = ctypes.byref(entry_p)
        next_header, pathname, hardlink = (lib.archive_read_next_header,
                                           lib.archive_entry_pathname, lib.archive_entry_hardlink)
        filetype, size, mode = (lib.archive_entry_filetype, lib.archive_entry_size,
                                lib.archive_entry_mode)
        uid, gid, mtime, mtime_ns = (lib.archive_entry_uid, lib.archive_entry_gid,
                                     lib.archive_entry_mtime, lib.archive_entry_mtime_nsec)
        atime_is_set, xattr_reset = lib.archive_entry_atime_is_set, lib.archive_entry_xattr_reset
        while True:
            r = next_header(a, ref)
            if r == _EOF:
                return
            if r != _OK and r != _WARN:  # WARN: e.g. a name libarchive could not transcode
                raise self._failure()
            e = entry_p.value
            name = pathname(e)
            if name is None:
                raise malformed("entry without a name")
            link = hardlink(e)
            if link is not None:
                kind = HARDLINK
            else:
                kind = filetype(e)
                if kind == stat.S_IFLNK:
                    link = lib.archive_entry_symlink(e)
            devmajor = devminor = 0
            if kind == stat.S_IFCHR or kind == stat.S_IFBLK:
                devmajor, devminor = lib.archive_entry_rdevmajor(e), lib.archive_entry_rdevminor(e)
            if not name.isascii() or (link is not None and not link.isascii()):
                # libarchive hands UTF-8 names over NFC-normalised: two names that differ only
                # in normalisation would become one. Names are bytes: take them from the header.
                name, raw_link = self._raw_names(lib.archive_read_header_position(a))
                if link is not None:
                    link = raw_link
            atime = None
            if atime_is_set(e):
                atime = (lib.archive_entry_atime(e) * 1_000_000_000
                         + lib.archive_entry_atime_nsec(e))
            yield Header(name, kind, size(e), mode(e) & 0o7777, uid(e), gid(e),
                          mtime(e) * 1_000_000_000 + mtime_ns(e), atime, link, devmajor,
                          devminor, self._xattrs(e) if xattr_reset(e) else [])

    def _raw_names(self, pos: int) -> tuple[bytes, bytes]:
        """The entry's path and link target as its header bytes say (pax ``path``/``linkpath``,
        GNU ``L``/``K`` records, ustar prefix + name), from the retained chunks; ``pos`` is the
        stream offset where the entry's headers start."""
        if not self._chunks or pos < self._chunks[0][0]:
            raise Unsupported("a tar entry with a non-ASCII name has headers over 1 MiB")
        data = b"".join(ctypes.string_at(ctypes.addressof(self._bufs[i]), n)
                        for _, i, n in self._chunks)
        try:
            return header_names(memoryview(data)[pos - self._chunks[0][0]:])
        except (ValueError, IndexError):
            raise malformed("unreadable extended header") from None

    def _xattrs(self, e: int) -> list[tuple[bytes, bytes]]:
        """The entry's xattrs (SCHILY.xattr.* and LIBARCHIVE.xattr.* records); the caller has
        just reset libarchive's xattr iterator."""
        out = []
        key, value, size = ctypes.c_char_p(), ctypes.c_void_p(), ctypes.c_size_t()
        args = (ctypes.byref(key), ctypes.byref(value), ctypes.byref(size))
        while self._lib.archive_entry_xattr_next(e, *args) == _OK:
            raw = ctypes.string_at(value.value, size.value) if size.value else b""
            out.append((key.value or b"", raw))
        return out

    def write_data(self, fd: int) -> int:
        read_block, a, args = self._lib.archive_read_data_block, self._a, self._block_args
        block, block_size, offset = self._block, self._block_size, self._offset
        pwrite = self._pwrite
        end = 0
        while True:
            r = read_block(a, *args)
            if r == _EOF:
                return end
            if r != _OK and r != _WARN:
                raise self._failure()
            n, off, ptr = block_size.value, offset.value, block.value
            if not n:
                continue
            while n:
                w = pwrite(fd, ptr, n, off)
                if w <= 0:
                    code = ctypes.get_errno() if w < 0 else errno.EIO
                    raise OSError(code, os.strerror(code))
                n -= w
                off += w
                ptr += w
            end = max(end, off)

    def close(self) -> None:
        if self._a:
            self._lib.archive_read_free(self._a)
            self._a = None
        if self._bufs and len(_FREE_BUFFERS) < _KEEP_BUFFERS:  # libarchive holds none of them now
            _FREE_BUFFERS.extend(self._bufs)
        self._bufs = ()

    def drain(self) -> None:
        drain(self._stream)


_FREE_BUFFERS: list[Any] = []
"""Chunk buffers of closed readers, for the next one: allocating and zeroing two fresh 1 MiB
buffers cost about 0.5 ms per layer, which was most of applying a small layer (``make
bench-quick``, materialise of deep-8 on overlay). list.pop/extend are atomic, so threads that
apply layers in parallel share it safely."""
_KEEP_BUFFERS = 4


def _buffer() -> Any:
    try:
        return _FREE_BUFFERS.pop()
    except IndexError:
        return ctypes.create_string_buffer(CHUNK)


def header_names(data: memoryview) -> tuple[bytes, bytes]:
    """Path and link target of the tar entry whose header blocks start ``data``."""
    path: bytes | None = None
    link: bytes | None = None
    off = 0
    while off + 512 <= len(data):
        blk = bytes(data[off:off + 512])
        kind = blk[156:157]
        if kind not in (b"x", b"L", b"K", b"g"):
            if path is None:
                path = blk[0:100].split(b"\0", 1)[0]
                prefix = blk[345:500].split(b"\0", 1)[0] if blk[257:262] == b"ustar" else b""
                if prefix:
                    path = prefix + b"/" + path
            if link is None:
                link = blk[157:257].split(b"\0", 1)[0]
            return path, link
        raw_size = blk[124:136]
        size = (int.from_bytes(raw_size[1:], "big") if raw_size[0] & 0x80
                else int(raw_size.split(b"\0", 1)[0].strip() or b"0", 8))
        body = bytes(data[off + 512:off + 512 + size])
        if len(body) < size:
            break
        if kind == b"x":
            i = 0
            while i < len(body):
                sp = body.index(b" ", i)
                n = int(body[i:sp])
                key, _, value = body[sp + 1:i + n - 1].partition(b"=")
                if key == b"path":
                    path = value
                elif key == b"linkpath":
                    link = value
                i += n
        elif kind == b"L":
            path = body.split(b"\0", 1)[0]
        elif kind == b"K":
            link = body.split(b"\0", 1)[0]
        off += 512 + (size + 511) // 512 * 512
    raise Unsupported("a tar entry with a non-ASCII name has headers over 1 MiB")
