"""The stdlib ``tarfile`` parser of the layer applier (the pure-Python twin of
``drivers.tar.libarchive``, used when libarchive cannot be loaded, and by ``TarApplierPy``):
``TarfileReader`` implements ``drivers.tar.entry.Reader`` over ``tarfile`` in stream mode."""

from __future__ import annotations

import base64
import binascii
import os
import stat
import tarfile
import urllib.parse
from typing import BinaryIO, Iterator

from drivers.tar.entry import CHUNK, HARDLINK, Header, drain, malformed

__all__ = ["TarfileReader", "pax_time", "tarfile_xattrs"]

_TARFILE_KINDS = {
    tarfile.REGTYPE: stat.S_IFREG, tarfile.AREGTYPE: stat.S_IFREG, tarfile.CONTTYPE: stat.S_IFREG,
    tarfile.GNUTYPE_SPARSE: stat.S_IFREG, tarfile.DIRTYPE: stat.S_IFDIR,
    tarfile.SYMTYPE: stat.S_IFLNK, tarfile.LNKTYPE: HARDLINK, tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK, tarfile.FIFOTYPE: stat.S_IFIFO,
}


class _StrictTarInfo(tarfile.TarInfo):
    """``tarfile`` ends an archive quietly at a bad header after the first (bad checksum,
    half a block); this notes why on the TarFile, so that the reader can refuse it."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except (tarfile.EmptyHeaderError, tarfile.EOFHeaderError):
            raise  # a zero block (the end marker) or the end of the stream at a boundary
        except tarfile.HeaderError as e:
            tar.lamina_bad_header = str(e) or type(e).__name__  # type: ignore[attr-defined]
            raise


class TarfileReader:
    """Headers and data from the stdlib ``tarfile`` in stream mode (``r|``)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._member: tarfile.TarInfo | None = None
        try:
            self._tar = tarfile.open(fileobj=stream, mode="r|", encoding="utf-8",
                                     errors="surrogateescape", tarinfo=_StrictTarInfo)
        except tarfile.ReadError as e:
            if "empty file" in str(e):  # a 0-byte layer is an empty layer
                self._tar = None
            else:
                raise malformed(str(e)) from None

    def __iter__(self) -> Iterator[Header]:
        tar = self._tar
        if tar is None:
            return
        while True:
            try:
                m = tar.next()
            except (tarfile.TarError, EOFError, ValueError, OverflowError) as e:
                raise malformed(str(e) or type(e).__name__) from None
            if m is None:
                bad = getattr(tar, "lamina_bad_header", None)
                if bad is not None:
                    raise malformed(bad)
                return
            tar.members.clear()  # tarfile keeps every member otherwise; we need only this one
            kind = _TARFILE_KINDS.get(m.type, stat.S_IFREG)  # POSIX: unknown types are files
            self._member = m
            name = os.fsencode(m.name)
            link = os.fsencode(m.linkname) if kind in (HARDLINK, stat.S_IFLNK) else None
            xattrs = tarfile_xattrs(m.pax_headers)
            mtime = pax_time(m.pax_headers.get("mtime")) or int(m.mtime) * 1_000_000_000
            yield Header(name, kind, m.size, m.mode & 0o7777, m.uid, m.gid, mtime,
                          pax_time(m.pax_headers.get("atime")), link, m.devmajor, m.devminor,
                          xattrs)

    def write_data(self, fd: int) -> int:
        """Read the member's stored bytes straight from tarfile's stream (a sparse member's
        data regions are stored back to back) and pwrite each region at its offset."""
        assert self._tar is not None and self._member is not None
        m, tar = self._member, self._tar
        regions = m.sparse if m.sparse is not None else [(0, m.size)]
        stored = tar.offset - m.offset_data  # the member's data blocks, padding included
        if sum(length for _, length in regions) > stored:
            raise malformed(f"sparse map of {m.name!r} is larger than its data")
        src = tar.fileobj
        end = 0
        try:
            src.seek(m.offset_data)
            for pos, left in regions:
                while left:
                    data = src.read(min(left, CHUNK))
                    if not data:
                        raise malformed(f"truncated data of {m.name!r}")
                    os.pwrite(fd, data, pos)
                    pos += len(data)
                    left -= len(data)
                    end = max(end, pos)  # empty regions (map terminators) write nothing
        except (tarfile.TarError, EOFError, ValueError) as e:
            raise malformed(str(e) or type(e).__name__) from None
        return end

    def close(self) -> None:
        pass  # the caller owns the stream

    def drain(self) -> None:
        drain(self._stream)


def tarfile_xattrs(pax: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Xattrs from PAX records as GNU tar/star (``SCHILY.xattr.<name>=<raw>``) and bsdtar
    (``LIBARCHIVE.xattr.<url-quoted name>=<base64>``) write them."""
    out = []
    for key, value in pax.items():
        if key.startswith("SCHILY.xattr."):
            out.append((os.fsencode(key[13:]), value.encode("utf-8", "surrogateescape")))
        elif key.startswith("LIBARCHIVE.xattr."):
            try:
                raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise malformed(f"bad base64 in PAX record {key!r}") from None
            out.append((urllib.parse.unquote_to_bytes(key[17:]), raw))
    return out


def pax_time(value: str | None) -> int | None:
    """A PAX time ("1700000000.123456789") in ns, exactly (no float rounding)."""
    if not value:
        return None
    try:
        sec, _, frac = value.partition(".")
        neg = sec.startswith("-")
        ns = abs(int(sec)) * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
        return -ns if neg else ns
    except ValueError:
        return None
