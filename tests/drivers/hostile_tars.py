"""Build layer tars in code, friendly or hostile, for the tar applier's tests.

``LayerTar`` writes entries through ``tarfile`` (which writes whatever names and targets it is
given, ``..`` and absolute ones included); the ``*_header`` functions craft raw blocks for what
``tarfile`` will not write (a PAX path that is not UTF-8 without ``hdrcharset``, bad checksums).
Names may be ``str`` or ``bytes``; bytes go into the tar as they are.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass

BLOCK = 512
MTIME = 1_700_000_000


def _s(name: str | bytes) -> str:
    return os.fsdecode(name) if isinstance(name, bytes) else name


class LayerTar:
    """An in-memory layer tar, one method per entry type; ``bytes()`` closes and returns it."""

    def __init__(self, format: int = tarfile.PAX_FORMAT) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=format, encoding="utf-8",
                                 errors="surrogateescape")

    def _add(self, name: str | bytes, type: bytes, *, mode: int, uid: int = 0, gid: int = 0,
             mtime: int = MTIME, data: bytes = b"", linkname: str | bytes = "",
             xattrs: dict[str, bytes] | None = None, pax: dict[str, str] | None = None,
             uname: str = "", gname: str = "", devmajor: int = 0,
             devminor: int = 0) -> LayerTar:
        ti = tarfile.TarInfo(_s(name))
        ti.type = type
        ti.mode = mode
        ti.uid, ti.gid, ti.uname, ti.gname = uid, gid, uname, gname
        ti.mtime = mtime
        ti.linkname = _s(linkname)
        ti.devmajor, ti.devminor = devmajor, devminor
        headers = dict(pax or {})
        for key, value in (xattrs or {}).items():
            headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
        ti.pax_headers = headers
        ti.size = len(data) if type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
        self._tar.addfile(ti, io.BytesIO(data) if ti.size else None)
        return self

    def file(self, name: str | bytes, data: bytes = b"", mode: int = 0o644, **kw) -> LayerTar:
        return self._add(name, tarfile.REGTYPE, mode=mode, data=data, **kw)

    def dir(self, name: str | bytes, mode: int = 0o755, **kw) -> LayerTar:
        return self._add(name, tarfile.DIRTYPE, mode=mode, **kw)

    def symlink(self, name: str | bytes, target: str | bytes, **kw) -> LayerTar:
        return self._add(name, tarfile.SYMTYPE, mode=0o777, linkname=target, **kw)

    def hardlink(self, name: str | bytes, target: str | bytes, **kw) -> LayerTar:
        return self._add(name, tarfile.LNKTYPE, mode=0o644, linkname=target, **kw)

    def fifo(self, name: str | bytes, mode: int = 0o644, **kw) -> LayerTar:
        return self._add(name, tarfile.FIFOTYPE, mode=mode, **kw)

    def chardev(self, name: str | bytes, major: int, minor: int, mode: int = 0o600,
                **kw) -> LayerTar:
        return self._add(name, tarfile.CHRTYPE, mode=mode, devmajor=major, devminor=minor, **kw)

    def blockdev(self, name: str | bytes, major: int, minor: int, mode: int = 0o600,
                 **kw) -> LayerTar:
        return self._add(name, tarfile.BLKTYPE, mode=mode, devmajor=major, devminor=minor, **kw)

    def whiteout(self, path: str) -> LayerTar:
        """``.wh.<name>`` next to ``path``: deletes ``path`` in lower layers."""
        parent, _, name = path.rpartition("/")
        return self.file(f"{parent}/.wh.{name}" if parent else f".wh.{name}", mode=0o600)

    def opaque(self, directory: str) -> LayerTar:
        """``.wh..wh..opq`` inside ``directory``: hides what lower layers have there."""
        return self.file(f"{directory}/.wh..wh..opq" if directory else ".wh..wh..opq")

    def bytes(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


def ustar_header(name: bytes, *, typeflag: bytes = b"0", size: int = 0, mode: int = 0o644,
                 linkname: bytes = b"", uid: int = 0, gid: int = 0, mtime: int = MTIME,
                 devmajor: int = 0, devminor: int = 0, checksum: int | None = None) -> bytes:
    """One raw ustar header block (name up to 100 bytes); ``checksum`` overrides the real one."""
    assert len(name) <= 100 and len(linkname) <= 100

    def octal(value: int, width: int) -> bytes:
        return b"%0*o\0" % (width - 1, value)

    h = bytearray(BLOCK)
    h[0:len(name)] = name
    h[100:108] = octal(mode, 8)
    h[108:116] = octal(uid, 8)
    h[116:124] = octal(gid, 8)
    h[124:136] = octal(size, 12)
    h[136:148] = octal(mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[157:157 + len(linkname)] = linkname
    h[257:265] = b"ustar\x0000"
    h[329:337] = octal(devmajor, 8)
    h[337:345] = octal(devminor, 8)
    real = sum(h)
    h[148:156] = b"%06o\0 " % (real if checksum is None else checksum)
    return bytes(h)


def pax_header(records: dict[bytes, bytes], name: bytes = b"PaxHeader") -> bytes:
    """A PAX extended header ('x') for the next entry, with raw byte records."""
    body = b""
    for key, value in records.items():
        rec = b" " + key + b"=" + value + b"\n"
        digits = len(b"%d" % len(rec))
        while len(b"%d" % (len(rec) + digits)) != digits:  # the length counts its own digits
            digits += 1
        body += b"%d" % (len(rec) + digits) + rec
    return ustar_header(name, typeflag=b"x", size=len(body)) + pad(body)


def fix_checksums(tar: bytearray) -> bytearray:
    """Recompute the checksum of every block that looks like a ustar header, so that mutated
    headers reach the parser's field handling instead of failing the checksum."""
    for at in range(0, len(tar) - BLOCK + 1, BLOCK):
        block = tar[at:at + BLOCK]
        if block[257:262] == b"ustar":
            block[148:156] = b" " * 8
            tar[at + 148:at + 156] = b"%06o\0 " % sum(block)
    return tar


def pad(data: bytes) -> bytes:
    """Data followed by zeros up to the next block."""
    return data + b"\0" * (-len(data) % BLOCK)


def end_of_archive() -> bytes:
    return b"\0" * (2 * BLOCK)


@dataclass(frozen=True)
class Node:
    """What one path under a tree is, for comparing trees (hardlinks share ``inode_group``)."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    digest: str
    mtime_ns: int | None
    link: bytes | None
    rdev: int
    xattrs: tuple[tuple[str, bytes], ...]
    inode_group: bytes


def tree_state(root: str | bytes, *, times: bool = True, dir_times: bool = True,
               xattrs: bool = True) -> dict[bytes, Node]:
    """Every path under ``root`` (relative, bytes; b"." for root) described without following
    links; content as sha256."""
    root_b = os.fsencode(root)
    out: dict[bytes, Node] = {}
    first_path: dict[tuple[int, int], bytes] = {}

    def visit(rel: bytes) -> None:
        full = os.path.join(root_b, rel) if rel != b"." else root_b
        st = os.lstat(full)
        kind = stat.S_IFMT(st.st_mode)
        digest = ""
        link = None
        if stat.S_ISREG(kind):
            with open(full, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        elif stat.S_ISLNK(kind):
            link = os.readlink(full)
        xa: tuple[tuple[str, bytes], ...] = ()
        if xattrs and not stat.S_ISLNK(kind):
            xa = tuple(sorted((k, os.getxattr(full, k, follow_symlinks=False))
                              for k in os.listxattr(full, follow_symlinks=False)))
        group = first_path.setdefault((st.st_dev, st.st_ino), rel)
        mtime = st.st_mtime_ns if times and (dir_times or not stat.S_ISDIR(kind)) else None
        out[rel] = Node(
            kind={stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                  stat.S_IFCHR: "chr", stat.S_IFBLK: "blk", stat.S_IFIFO: "fifo"}.get(kind, "?"),
            mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
            size=st.st_size if not stat.S_ISDIR(kind) else 0, digest=digest,
            mtime_ns=mtime if not stat.S_ISLNK(kind) else None, link=link,
            rdev=st.st_rdev if stat.S_ISCHR(kind) or stat.S_ISBLK(kind) else 0, xattrs=xa,
            inode_group=group if st.st_nlink > 1 and not stat.S_ISDIR(kind) else b"")
        if stat.S_ISDIR(kind):
            for name in sorted(os.listdir(full)):
                visit(os.path.join(rel, name) if rel != b"." else name)

    visit(b".")
    return out
