"""A pure-Python model of the OCI layer changeset rules: the specification the drivers are
checked against (``tests/drivers/test_differential.py``).

Why a model: drivers are compared with each other, but "all drivers agree" can also mean "all
drivers are wrong the same way". The model says what applying a stack of layers *means*, in a
few lines per rule, with nothing shared with the drivers' code. Rules (image-spec
``layer.md``, with the choices lamina makes where the spec is silent):

* Names are bytes; a leading ``/`` or ``./`` and empty components are dropped; ``..`` refuses
  the layer.
* Parents are resolved inside the rootfs: a symlink met as a parent component (whichever layer
  made it) is followed as if the rootfs were ``/`` (``..`` stops at the top); more than 40 hops
  (a loop) or a parent that is not a directory refuses the layer. A missing parent is made
  (0755, root:root, no xattrs); an existing one keeps everything it had.
* An entry replaces whatever is at its path (a directory: the whole tree beneath). A directory
  over a directory merges: children stay, the metadata (mode, owner, xattrs) is the entry's.
* A hardlink names an existing non-directory (resolved like a parent, its last component not
  followed), of this layer or a lower one, other than itself; it shares that inode.
* Whiteouts (``.wh.<name>``, ``.wh..wh..opq``) act on the lower layers only: ``.wh.x`` removes
  ``x`` unless this layer wrote it (if this layer wrote into directory ``x``, only what lower
  layers put there goes); ``.wh..wh..opq`` empties its directory of what lower layers put
  there. Whiteouts of missing names do nothing and make nothing.
* The root entry of the tree is the driver's (not compared); directory mtimes are not compared
  (every entry made in a directory changes it).

``apply_stack`` gives the walk the drivers must show (``tree_snapshot`` format of
``tests.drivers.conformance``, with mtimes), or ``Refused(layer index)``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any

from tests.drivers.conformance import Entry as Snap

MAX_HOPS = 40


@dataclass(frozen=True)
class E:
    """One layer tar entry. ``kind``: file dir symlink link fifo char block whiteout opaque;
    ``target`` is a symlink's target or a hardlink's target path; ``mtime`` in ns."""

    kind: str
    path: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    target: bytes = b""
    mtime: int = 1_700_000_000_000_000_000
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    rdev: tuple[int, int] = (0, 0)

    def __repr__(self) -> str:
        """Only the fields that differ from the defaults (failing stacks stay readable);
        long data is shown by its size and hash."""
        out = [repr(self.kind), repr(self.path)]
        for f in ("mode", "uid", "gid", "data", "target", "mtime", "xattrs", "rdev"):
            v = getattr(self, f)
            if v != E.__dataclass_fields__[f].default:
                if f == "data" and len(v) > 64:
                    out.append(f"data=<{len(v)} bytes sha256:{hashlib.sha256(v).hexdigest()[:12]}>")
                else:
                    out.append(f"{f}={oct(v) if f == 'mode' else repr(v)}")
        return f"E({', '.join(out)})"


@dataclass(eq=False)
class Inode:
    kind: str  # f d l c b p
    mode: int
    uid: int
    gid: int
    mtime: int
    data: bytes = b""
    target: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    xattrs: dict[bytes, bytes] = field(default_factory=dict)


class Refused(Exception):
    """The layer at ``index`` is not applicable (every driver must refuse it too)."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(f"layer {index}: {why}")
        self.index, self.why = index, why


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


class Tree:
    """A rootfs: symlink-free relative path -> inode (b"" is the root dir)."""

    def __init__(self) -> None:
        self.nodes: dict[bytes, Inode] = {b"": Inode("d", 0o755, 0, 0, 0)}

    def remove(self, path: bytes) -> None:
        self.nodes.pop(path, None)
        under = path + b"/"
        for p in [p for p in self.nodes if p.startswith(under)]:
            del self.nodes[p]

    def resolve(self, path: bytes, create: bool) -> bytes | None:
        """The real path of directory ``path`` (symlinks followed inside the rootfs); missing
        dirs made when ``create``, else None. Raises ValueError (loop, not a directory)."""
        todo = [p for p in reversed(path.split(b"/"))]
        cur, hops = b"", 0
        while todo:
            part = todo.pop()
            if part in (b"", b"."):
                continue
            if part == b"..":
                cur = cur.rpartition(b"/")[0]
                continue
            real = _join(cur, part)
            node = self.nodes.get(real)
            if node is None:
                if not create:
                    return None
                node = self.nodes[real] = Inode("d", 0o755, 0, 0, 0)
            if node.kind == "l":
                hops += 1
                if hops > MAX_HOPS:
                    raise ValueError("too many levels of symbolic links")
                if node.target.startswith(b"/"):
                    cur = b""
                todo.extend(reversed(node.target.split(b"/")))
                continue
            if node.kind != "d":
                raise ValueError(f"parent {real!r} is not a directory")
            cur = real
        return cur


def clean(name: bytes) -> bytes:
    parts = [p for p in name.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise ValueError("'..' in path")
    return b"/".join(parts)


def apply_layer(tree: Tree, entries: list[E]) -> None:
    """Apply one layer's entries in tar order (see the module docstring). Raises ValueError."""
    upper: set[bytes] = set()  # real paths this layer wrote, with their ancestors

    def mark(real: bytes) -> None:
        while real and real not in upper:
            upper.add(real)
            real = real.rpartition(b"/")[0]

    def prune(d: bytes) -> None:  # remove what lower layers put under d, keep this layer's
        under = d + b"/" if d else b""
        for p in [p for p in tree.nodes if p.startswith(under) and p != d]:
            if p in tree.nodes and p not in upper:
                tree.remove(p)

    for e in entries:
        name = clean(e.path)
        parent, _, base = name.rpartition(b"/")
        if e.kind == "whiteout":
            pdir = tree.resolve(parent, create=False)
            real = None if pdir is None else _join(pdir, base)
            if real is None or real not in tree.nodes:
                continue
            if real not in upper:
                tree.remove(real)
            elif tree.nodes[real].kind == "d":
                prune(real)
            continue
        if e.kind == "opaque":
            d = tree.resolve(name, create=False)
            if d is not None:
                prune(d)
            continue
        pdir = tree.resolve(parent, create=True)
        assert pdir is not None
        real = _join(pdir, base)
        old = tree.nodes.get(real)
        if e.kind == "link":
            tname = clean(e.target)
            tparent, _, tbase = tname.rpartition(b"/")
            tdir = tree.resolve(tparent, create=False)
            if tdir is None or not tname:
                raise ValueError("hardlink target not found")
            tpath = _join(tdir, tbase)
            if tpath == real:
                raise ValueError("hardlink to itself")
            tree.remove(real)
            target = tree.nodes.get(tpath)
            if target is None:
                raise ValueError("hardlink target not found")
            if target.kind == "d":
                raise ValueError("hardlink target is a directory")
            tree.nodes[real] = target
        elif e.kind == "dir" and old is not None and old.kind == "d":
            old.mode, old.uid, old.gid, old.xattrs = e.mode, e.uid, e.gid, dict(e.xattrs)
        else:
            kind = {"file": "f", "dir": "d", "symlink": "l", "fifo": "p", "char": "c",
                    "block": "b"}[e.kind]
            tree.remove(real)
            tree.nodes[real] = Inode(kind, 0o777 if kind == "l" else e.mode, e.uid, e.gid,
                                     e.mtime, e.data, e.target, e.rdev, dict(e.xattrs))
        mark(real)


def apply_stack(layers: list[list[E]]) -> dict[str, Any] | Refused:
    """The walk of the rootfs that ``layers`` (bottom first) make, or Refused(index)."""
    tree = Tree()
    for i, entries in enumerate(layers):
        try:
            apply_layer(tree, entries)
        except ValueError as e:
            return Refused(i, str(e))
    return snapshot(tree)


def snapshot(tree: Tree) -> dict[str, Any]:
    """``tree_snapshot(root, mtimes=True)`` of the tree, the root left out."""
    names: dict[int, list[bytes]] = {}
    for p, n in tree.nodes.items():
        if n.kind != "d":
            names.setdefault(id(n), []).append(p)
    out: dict[str, Any] = {}
    for p, n in tree.nodes.items():
        if not p:
            continue
        key = "/" + os.fsdecode(p)
        group = names.get(id(n), [])
        e = Snap(type=n.kind, mode=n.mode, uid=n.uid, gid=n.gid,
                 size=len(n.data) if n.kind == "f" else 0,
                 sha256=hashlib.sha256(n.data).hexdigest() if n.kind == "f" else "",
                 target=os.fsdecode(n.target) if n.kind == "l" else "",
                 rdev=n.rdev if n.kind in "cb" else (0, 0),
                 xattrs=tuple(sorted((os.fsdecode(k), v) for k, v in n.xattrs.items())),
                 link_group=min("/" + os.fsdecode(q) for q in group) if len(group) > 1 else "")
        out[key] = e if n.kind == "d" else (e, n.mtime)
    return out


# ------------------------------------------------------------------------------- layer tars
_KINDS = {"file": tarfile.REGTYPE, "whiteout": tarfile.REGTYPE, "opaque": tarfile.REGTYPE,
          "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "link": tarfile.LNKTYPE,
          "fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE}


def layer_tar(entries: list[E]) -> bytes:
    """The PAX tar of one layer (names and xattrs as raw bytes, ns mtimes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tf:
        for e in entries:
            name = e.path
            if e.kind == "whiteout":
                head, _, tail = name.rpartition(b"/")
                name = _join(head, b".wh." + tail)
            elif e.kind == "opaque":
                name = _join(name.rstrip(b"/"), b".wh..wh..opq")
            ti = tarfile.TarInfo(os.fsdecode(name))
            ti.type = _KINDS[e.kind]
            ti.uid, ti.gid, ti.mode = e.uid, e.gid, e.mode
            ti.uname = ti.gname = ""
            ti.mtime = e.mtime // 1_000_000_000
            pax = {"mtime": f"{e.mtime // 1_000_000_000}.{e.mtime % 1_000_000_000:09d}"}
            for k, v in e.xattrs:
                pax["SCHILY.xattr." + os.fsdecode(k)] = v.decode("utf-8", "surrogateescape")
            ti.pax_headers = pax
            if e.kind in ("symlink", "link"):
                ti.linkname = os.fsdecode(e.target)
            if e.kind in ("char", "block"):
                ti.devmajor, ti.devminor = e.rdev
            if ti.type == tarfile.REGTYPE:
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()
