"""One tar entry as the layer applier sees it (``Header``) and what a tar parser gives it
(``Reader``): the contract both parsers implement, ``drivers.tar.libarchive`` (libarchive, the
fast one) and ``drivers.tar.tarfile_reader`` (the stdlib ``tarfile`` twin). The applier
(``drivers.tar.apply``) and both parsers import this module; neither parser imports the applier.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator, NamedTuple, Protocol

from drivers.errors import InvalidInput

__all__ = ["CHUNK", "HARDLINK", "Header", "Reader", "drain", "malformed"]

HARDLINK = 0  # Header.kind of a hardlink; every other kind is an S_IF* file type
CHUNK = 1 << 20  # bytes per read from the caller's stream


class Header(NamedTuple):
    """One tar entry as the applier needs it, whichever parser read it."""

    name: bytes  # the header's bytes (not yet cleaned: a directory's may end in "/")
    kind: int  # stat.S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, or HARDLINK
    size: int
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int | None
    link: bytes | None  # symlink target or hardlink target
    devmajor: int
    devminor: int
    xattrs: list[tuple[bytes, bytes]]


class Reader(Protocol):
    """What the applier needs from a tar parser. Malformed input raises InvalidInput
    ("malformed layer tar: ..."); an error of the caller's stream propagates unchanged."""

    def __iter__(self) -> Iterator[Header]:
        """The entries' headers in tar order."""
        ...

    def write_data(self, fd: int) -> int:
        """Write the current regular file's data into ``fd`` at its offsets (holes left as
        holes); return the end offset of the last data written."""
        ...

    def close(self) -> None:
        """Free the parser (not the caller's stream)."""
        ...

    def drain(self) -> None:
        """Read the caller's stream to its end (the bytes after the end-of-archive marker)."""
        ...


def malformed(why: str) -> InvalidInput:
    return InvalidInput("malformed layer tar: " + " ".join(why.split()))


def drain(stream: BinaryIO) -> None:
    while stream.read(CHUNK):
        pass
