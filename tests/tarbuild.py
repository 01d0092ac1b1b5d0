"""Build layer tars in code for tests: small, explicit, deterministic."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field


@dataclass
class E:
    """One tar entry. ``kind``: file, dir, symlink, link, fifo, char, block, whiteout, opaque."""

    name: str
    data: bytes = b""
    kind: str = "file"
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    target: str = ""
    mtime: int = 1_700_000_000
    xattrs: dict[str, str] = field(default_factory=dict)
    major: int = 0
    minor: int = 0


def make_tar(entries: list[E]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            name = e.name
            if e.kind == "whiteout":
                head, _, tail = name.rpartition("/")
                name = (head + "/" if head else "") + ".wh." + tail
            elif e.kind == "opaque":
                name = name.rstrip("/") + "/.wh..wh..opq"
            ti = tarfile.TarInfo(name)
            ti.uid, ti.gid, ti.mtime = e.uid, e.gid, e.mtime
            ti.uname = ti.gname = ""
            if e.xattrs:
                ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            kinds = {
                "file": tarfile.REGTYPE, "whiteout": tarfile.REGTYPE, "opaque": tarfile.REGTYPE,
                "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "link": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
            }
            ti.type = kinds[e.kind]
            ti.mode = e.mode if e.mode is not None else (0o755 if e.kind == "dir" else 0o644)
            if e.kind in ("symlink", "link"):
                ti.linkname = e.target
            if e.kind in ("char", "block"):
                ti.devmajor, ti.devminor = e.major, e.minor
            if ti.type == tarfile.REGTYPE:
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()
