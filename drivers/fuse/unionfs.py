"""The union filesystem of the fuse driver: overlayfs' semantics, served from Python by pyfuse3.

What it presents
----------------
The merged view of a stack of diff dirs, exactly as the kernel's overlayfs presents them with the
options the overlay driver uses (``index=off,metacopy=off,redirect_dir=nofollow``):

* ``lowers`` (topmost first) are read-only diff dirs in the overlay layout: a 0/0 character device
  is a whiteout, ``trusted.overlay.opaque=y`` makes a dir opaque. With ``oci_whiteouts`` the
  lowers may also hold OCI whiteouts as files (a layer tar extracted as it is, as lazy pulling
  will): ``.wh.<name>`` hides ``<name>`` in the layers below it, ``.wh..wh..opq`` makes its dir
  opaque, and ``.wh.*`` names are never shown. (Off for the driver's own layers, which are
  overlay-style: it costs a second ``lstat`` per layer on a lookup that misses.) ``upper`` (a container layer's
  diff dir) takes every change, recorded in the same layout, so the overlay driver's native
  differ (``tardiff.upper_changes``) reads it unchanged. Without an upper the view is read-only
  (the mount is ``ro``).
* lookup goes top-down; a whiteout hides the name below it, a non-dir hides everything below it,
  a dir merges with the dirs below it down to the first opaque one. readdir merges the same way
  (each name once, whited-out names never).
* copy-up: a lower file is copied into the upper before anything changes it (open for writing,
  truncate, chmod, chown, utimes, set/remove xattr, link, rename), with its owner, mode, times and
  xattrs; its parent dirs are copied up first (without their entries), and the parent's times are
  restored afterwards, as overlayfs does. Data is copied with ``copy_file_range`` (reflinks where
  the filesystem has them). An ``open(O_TRUNC)`` copies no data.
* unlink and rmdir of something a lower layer shows leave a whiteout in the upper; a dir made
  where a whiteout was is opaque; rmdir of an upper dir whose merged view is empty removes its
  whiteouts with it. Replacements are atomic (a staged object in the layer's ``work`` dir is
  renamed, or exchanged, into place), so a crash never shows a lower file again.
* rename of files (copied up first) and of dirs that live only in the upper; renaming a dir that
  a lower layer contributes to fails with EXDEV (``redirect_dir=nofollow``: ``mv`` then copies).
  A name a lower layer shows is whited out behind the moved entry (``RENAME_WHITEOUT``); a dir
  moved over a lower dir is made opaque. ``RENAME_EXCHANGE`` is not supported (EINVAL).
* hard links: names of one inode share an inode number. Copy-up of one name of a hard-linked
  lower file breaks the link (the other names keep the lower file), as overlayfs without
  ``index`` does. Links made through the mount are real links in the upper.
* inode numbers are the real inode numbers of the backing files (all layers live on one
  filesystem, so they are unique), as overlayfs reports them on a single filesystem: a lower file
  copied up keeps its number (unless it had several links); a merged dir shows its topmost lower
  dir's number. They are stable while mounted, also after the kernel forgets an inode.
* mknod of a 0/0 char device is refused (EPERM), as overlayfs refuses to make a whiteout.
* xattrs: overlayfs' own (``trusted.overlay.*`` on the layers) are not shown; an xattr of that
  name set through the mount is *escaped*, as overlayfs (Linux >= 6.7) escapes it for nested
  overlays: ``trusted.overlay.X`` is stored as ``trusted.overlay.overlay.X`` and shown as
  ``trusted.overlay.X`` again. Copy-up copies every xattr but overlayfs' own.

Known differences from overlayfs
--------------------------------
``RENAME_EXCHANGE`` (EINVAL here); POSIX ACLs are stored and copied but not enforced (the kernel
checks permissions from mode bits under ``default_permissions``); a dir removed while a process
holds it (its cwd) answers ENOENT rather than the stat of a deleted dir; atime is not updated on
reads (lower files are read ``O_NOATIME``); a copy-up of a big file holds up every other request
of this mount until it is done (one request at a time).

How it is fast
--------------
* Lookups and attributes are cached by the kernel for a day (entry and attr timeouts); misses are
  cached too (negative entries). Nothing changes the layers behind our back: the lowers never
  change while mounted, and the upper changes only through this filesystem.
* readdir is readdirplus: one request lists a dir with every entry's attributes, so a walk needs
  no lookups. Merged listings of dirs without an upper part are computed once and kept (the
  lowers never change); dirs with an upper part are listed afresh at each ``opendir``.
* Files are opened with ``keep_cache`` (the kernel's page cache survives close and reopen);
  the file handle is the backing fd itself, so a read is one ``preadv`` into a buffer kept for
  all reads (no allocation per request). Lower files are opened
  ``O_NOATIME``. ``flush`` is left unimplemented (ENOSYS), which makes the kernel stop sending it.
* Big reads and writes: libfuse negotiates 1 MiB requests (``max_pages``), writes are big_writes,
  and the driver raises the mount's readahead to 1 MiB.

pyfuse3 ties a node's FUSE id to the inode number it reports (``EntryAttributes.st_ino`` sets
both). Overlay semantics need them apart (two names of a hard-linked lower file are two nodes
with one inode number), so ``session.InodeNumbers`` writes the reported number into the attribute
struct behind the id, after checking at start-up that pyfuse3's object layout is the one expected.
If it is not, numbers are the node ids and lower hard links show as separate inodes (logged).
Mounting and the request loop are in ``drivers.fuse.session``.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from typing import Any, Callable, Concatenate, Coroutine, ParamSpec, Sequence, TypeVar

import pyfuse3
from pyfuse3 import EntryAttributes, FileInfo, FUSEError, RequestContext, SetattrFields, StatvfsData

from drivers.fuse.session import InodeNumbers
from drivers.sys.libc import renameat2

log = logging.getLogger("lamina.fuse")

TIMEOUT = 86400.0
"""Entry and attribute validity for the kernel's caches, in seconds (see "How it is fast")."""

OPAQUE_XATTR = b"trusted.overlay.opaque"
OCI_PREFIX = b".wh."                     # with oci_whiteouts: .wh.<name> hides <name> below
OCI_OPAQUE = b".wh..wh..opq"             # ... and makes its dir opaque
PRIVATE = b"trusted.overlay."          # overlayfs' own xattrs on the layers
ESCAPED = b"trusted.overlay.overlay."  # how the layers hold a trusted.overlay.* of a user
_S_IFMT = stat.S_IFMT
_S_IFDIR = stat.S_IFDIR
_S_IFCHR = stat.S_IFCHR
_S_IFREG = stat.S_IFREG
_LOWER_OPEN = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0)
# open flags we never pass on to the backing file: creation is ours; O_APPEND because the kernel
# already puts appends at the end (the offsets it sends are right); O_DIRECT because the backing
# file sits under the kernel's FUSE page cache anyway.
_NOFOLLOW = os.O_CLOEXEC | os.O_NOFOLLOW  # the kernel resolves symlinks; we never follow one
_STRIP = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_APPEND | getattr(os, "O_DIRECT", 0)
_RENAME_EXCHANGE = 2
_RENAME_WHITEOUT = 4

def _renameat2(old: bytes, new: bytes, flags: int) -> None:
    try:
        renameat2(old, new, flags)
    except OSError as e:
        e.filename = old  # as before: the error names the source
        raise


# ---------------------------------------------------------------------------------------------
# nodes


class Node:
    """One inode the kernel knows (or may learn of): its FUSE id, the inode number it reports,
    and where it is. A dir is identified by its merged path and has the list of layers that
    contribute to it; a non-dir by its backing file (the layer index and its names)."""

    __slots__ = ("id", "ino", "is_dir", "parent", "name", "path", "dirs", "layer", "key",
                 "aliases", "lookups", "pathfd", "listing", "fhs")

    def __init__(self, id: int, ino: int, is_dir: bool, parent: "Node | None", name: bytes) -> None:
        self.id = id
        self.ino = ino
        self.is_dir = is_dir
        self.parent = parent          # the dir of the primary name (dirs: their only name)
        self.name = name
        self.path = b""               # dirs: merged path ("" for the root, "/etc", ...)
        self.dirs: list[int] = []     # dirs: contributing layers, topmost first
        self.layer = 0                # non-dirs: index of the backing layer
        self.key: tuple[Any, ...] | None = None  # non-dirs: key in UnionFS.files
        self.aliases: list[tuple[Node, bytes]] = []  # non-dirs: other names seen
        self.lookups = 0
        self.pathfd = -1              # O_PATH fd kept when the last known name went away
        self.listing: dict[bytes, Rec] | None = None  # dirs without upper: merged entries
        self.fhs: set[int] | None = None  # non-dirs: open backing fds (reopened on copy-up)


class Rec:
    """One entry of a merged listing: the topmost layer holding it, its stat there, and for a dir
    the contributing layers."""

    __slots__ = ("layer", "st", "dirs")

    def __init__(self, layer: int, st: os.stat_result, dirs: list[int] | None) -> None:
        self.layer = layer
        self.st = st
        self.dirs = dirs


P = ParamSpec("P")
R = TypeVar("R")


def _op(fn: Callable[Concatenate["UnionFS", P], R]) -> Callable[Concatenate["UnionFS", P], Coroutine[Any, Any, R]]:
    """Turn a synchronous handler into pyfuse3's async one: OSError becomes its errno, anything
    unexpected is logged and becomes EIO (an exception must never reach pyfuse3's loop, which
    would end the filesystem)."""

    async def handler(self: "UnionFS", /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(self, *args, **kwargs)
        except FUSEError:
            raise
        except OSError as e:
            raise FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("fuse %s%r failed", fn.__name__, args[:3])
            raise FUSEError(errno.EIO) from None

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


def _err(code: int) -> FUSEError:
    return FUSEError(code)


# ---------------------------------------------------------------------------------------------
# the filesystem


class UnionFS(pyfuse3.Operations):
    """The merged view of ``lowers`` (topmost first) under ``upper`` (None: read-only).

    ``work`` is a directory on the upper's filesystem for staging (required with an upper; its
    content is ours and is cleared at start). All paths are real directories (no symlinks to
    resolve at each call)."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, lowers: Sequence[str], upper: str | None = None, work: str | None = None,
                 *, oci_whiteouts: bool = False) -> None:
        super().__init__()
        self.oci = oci_whiteouts
        if upper is not None and work is None:
            raise ValueError("an upper dir needs a work dir")
        self.rw = upper is not None
        roots = ([upper] if upper is not None else []) + list(lowers)
        if not roots:
            raise ValueError("no layers")
        self.roots: list[bytes] = [os.fsencode(os.path.realpath(p)).rstrip(b"/") for p in roots]
        self.work = os.fsencode(os.path.realpath(work)) if work is not None else b""
        self.first_lower = 1 if self.rw else 0
        self.numbers = InodeNumbers()
        if not self.numbers.usable:
            log.warning("inode numbers are node ids (pyfuse3 layout check failed: %s)", self.numbers.why)
        self._ids = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._tmp = itertools.count()
        self._dirfhs = itertools.count(1)
        self.nodes: dict[int, Node] = {}
        self.dirs: dict[bytes, Node] = {}            # merged path -> dir node
        self.files: dict[tuple[Any, ...], Node] = {}  # backing identity -> non-dir node
        self.origin: dict[int, int] = {}             # upper ino -> number it reports (copy-up)
        self.dirhandles: dict[int, tuple[Node, list[tuple[bytes, Rec]]]] = {}
        self.fh_nodes: dict[int, Node] = {}
        self._readbuf = memoryview(bytearray(1 << 20))
        if self.rw:
            self._clear_work()
        root = Node(pyfuse3.ROOT_INODE, 0, True, None, b"")
        root.dirs = self._root_dirs()
        root.ino = self._dir_ino(root.dirs, b"")
        root.lookups = 1 << 62  # the kernel never forgets the root
        self.root = root
        self.nodes[root.id] = root
        self.dirs[b""] = root

    # -- helpers: layers --------------------------------------------------------------------

    def _root_dirs(self) -> list[int]:
        out = []
        for i, r in enumerate(self.roots):
            out.append(i)
            if self._opaque(r):
                break
        return out

    def _clear_work(self) -> None:
        """The work dir holds only what a crash left mid-staging: remove it."""
        for name in os.listdir(self.work):
            _rmtree(self.work + b"/" + name)

    def _opaque(self, real: bytes) -> bool:
        try:
            if os.getxattr(real, OPAQUE_XATTR, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
        return self.oci and os.path.lexists(real + b"/" + OCI_OPAQUE)

    def _oci_gone(self, i: int, dirpath: bytes, name: bytes) -> bool:
        """Whether lower layer ``i`` has an OCI whiteout file for ``name`` (only with
        ``oci_whiteouts``; the upper is always overlay-style)."""
        return self.oci and i >= self.first_lower and \
            os.path.lexists(self.roots[i] + dirpath + b"/" + OCI_PREFIX + name)

    @staticmethod
    def _whiteout(st: os.stat_result) -> bool:
        return st.st_rdev == 0 and _S_IFMT(st.st_mode) == _S_IFCHR

    def _dir_ino(self, dirs: list[int], path: bytes) -> int:
        """A dir's number: its topmost lower dir's (stable across copy-up), else the upper's."""
        for i in dirs:
            if i >= self.first_lower:
                return os.lstat(self.roots[i] + path).st_ino
        return os.lstat(self.roots[dirs[0]] + path).st_ino

    def _tmpname(self) -> bytes:
        return self.work + b"/#%d" % next(self._tmp)

    # -- helpers: nodes ---------------------------------------------------------------------

    def _node(self, id: int) -> Node:
        try:
            return self.nodes[id]
        except KeyError:
            raise _err(errno.ESTALE) from None

    def _real(self, n: Node) -> bytes:
        """The backing path of a node (its topmost real dir, for a dir)."""
        if n.is_dir:
            if not n.dirs:
                raise _err(errno.ENOENT)  # removed while the kernel still held it
            return self.roots[n.dirs[0]] + n.path
        if n.parent is None:
            if n.pathfd >= 0:
                return b"/proc/self/fd/%d" % n.pathfd
            raise _err(errno.ENOENT)
        return self.roots[n.layer] + n.parent.path + b"/" + n.name

    def _stat(self, n: Node) -> os.stat_result:
        if not n.is_dir and n.parent is None and n.pathfd >= 0:
            return os.stat(n.pathfd)
        return os.lstat(self._real(n))

    def _entry(self, n: Node, st: os.stat_result) -> EntryAttributes:
        e = EntryAttributes()
        e.st_ino = n.id
        if self.numbers.usable:
            self.numbers.set(e, n.ino)
        e.generation = 0
        e.entry_timeout = TIMEOUT
        e.attr_timeout = TIMEOUT
        e.st_mode = st.st_mode
        e.st_nlink = 1 if n.is_dir and len(n.dirs) > 1 else st.st_nlink
        e.st_uid = st.st_uid
        e.st_gid = st.st_gid
        e.st_rdev = st.st_rdev
        e.st_size = st.st_size
        e.st_blksize = st.st_blksize
        e.st_blocks = st.st_blocks
        e.st_atime_ns = st.st_atime_ns
        e.st_mtime_ns = st.st_mtime_ns
        e.st_ctime_ns = st.st_ctime_ns
        return e

    def _negative(self) -> EntryAttributes:
        e = EntryAttributes()
        e.st_ino = 0
        e.entry_timeout = TIMEOUT
        return e

    def _find(self, p: Node, name: bytes) -> Rec | None:
        """``name`` in the merged dir ``p`` (see the module docstring), or None."""
        if p.listing is not None:
            return p.listing.get(name)
        if self.oci and name.startswith(OCI_PREFIX):
            return None  # OCI whiteout files are markers, never entries
        path = p.path + b"/" + name
        found: Rec | None = None
        last = p.dirs[-1] if p.dirs else -1
        for i in p.dirs:
            rp = self.roots[i] + path
            try:
                st = os.lstat(rp)
            except (FileNotFoundError, NotADirectoryError):
                if self._oci_gone(i, p.path, name):
                    break
                continue
            if st.st_rdev == 0 and _S_IFMT(st.st_mode) == _S_IFCHR:
                break
            if found is None:
                if _S_IFMT(st.st_mode) != _S_IFDIR:
                    return Rec(i, st, None)
                found = Rec(i, st, [i])
            elif _S_IFMT(st.st_mode) != _S_IFDIR:
                break
            else:
                assert found.dirs is not None
                found.dirs.append(i)
            if i != last and (self._opaque(rp) or self._oci_gone(i, p.path, name)):
                break
        return found

    def _lower_shows(self, p: Node, name: bytes) -> bool:
        """Whether a lower layer of dir ``p`` shows ``name`` (then removing or moving it needs a
        whiteout in the upper)."""
        path = p.path + b"/" + name
        for i in p.dirs:
            if i < self.first_lower:
                continue
            try:
                st = os.lstat(self.roots[i] + path)
            except (FileNotFoundError, NotADirectoryError):
                if self._oci_gone(i, p.path, name):
                    return False
                continue
            return not self._whiteout(st)
        return False

    def _node_for(self, p: Node, name: bytes, rec: Rec) -> Node:
        """The node of entry ``name`` of dir ``p`` (made if new)."""
        st = rec.st
        if rec.dirs is not None:
            path = p.path + b"/" + name
            n = self.dirs.get(path)
            if n is not None:
                return n
            n = Node(next(self._ids), 0, True, p, name)
            n.path = path
            n.dirs = list(rec.dirs)
            n.ino = st.st_ino if rec.layer >= self.first_lower or len(rec.dirs) == 1 else \
                self._dir_ino(rec.dirs, path)
            self.dirs[path] = n
            self.nodes[n.id] = n
            return n
        if rec.layer < self.first_lower:
            key: tuple[Any, ...] = (0, st.st_ino)
            ino = self.origin.get(st.st_ino, st.st_ino)
        elif self.rw:
            key = (2, p.path + b"/" + name)  # a lower name: each is copied up on its own
            ino = st.st_ino
        else:
            key = (1, st.st_dev, st.st_ino)  # read-only: the names of one inode are one node
            ino = st.st_ino
        n = self.files.get(key)
        if n is not None:
            if n.parent is None:  # had lost its last known name
                n.parent, n.name = p, name
            elif (n.parent is not p or n.name != name) and (p, name) not in n.aliases:
                n.aliases.append((p, name))
            return n
        n = Node(next(self._ids), ino, False, p, name)
        n.layer = rec.layer
        n.key = key
        self.files[key] = n
        self.nodes[n.id] = n
        return n

    def _drop(self, n: Node) -> None:
        """The kernel forgot ``n`` (or never learned of it)."""
        self.nodes.pop(n.id, None)
        if n.is_dir:
            if self.dirs.get(n.path) is n:
                del self.dirs[n.path]
        elif n.key is not None and self.files.get(n.key) is n:
            del self.files[n.key]
        if n.pathfd >= 0:
            os.close(n.pathfd)
            n.pathfd = -1

    def _listing(self, d: Node) -> list[tuple[bytes, Rec]]:
        """The merged entries of dir ``d``; kept on the node while no upper contributes."""
        if d.listing is not None:
            return list(d.listing.items())
        if not d.dirs:
            raise _err(errno.ENOENT)
        recs: dict[bytes, Rec | None] = {}
        open_dirs: dict[bytes, bool] = {}  # dir entries still collecting lower contributors
        last = d.dirs[-1]
        for i in d.dirs:
            base = self.roots[i] + d.path
            markers: list[bytes] = []
            oci = self.oci and i >= self.first_lower
            with os.scandir(base) as it:
                for e in it:
                    name = os.fsencode(e.name)
                    if oci and name.startswith(OCI_PREFIX):
                        if not name.startswith(b".wh..wh."):  # .wh..wh..opq: see _opaque
                            markers.append(name[len(OCI_PREFIX):])
                        continue
                    if name in recs:
                        rec = recs[name]
                        if rec is None or rec.dirs is None or not open_dirs.get(name):
                            continue
                        st = e.stat(follow_symlinks=False)
                        prev = self.roots[rec.dirs[-1]] + d.path + b"/" + name
                        if _S_IFMT(st.st_mode) != _S_IFDIR or self._opaque(prev):
                            open_dirs[name] = False
                            continue
                        rec.dirs.append(i)
                        continue
                    st = e.stat(follow_symlinks=False)
                    if st.st_rdev == 0 and _S_IFMT(st.st_mode) == _S_IFCHR:
                        recs[name] = None
                    elif _S_IFMT(st.st_mode) == _S_IFDIR:
                        recs[name] = Rec(i, st, [i])
                        open_dirs[name] = i != last
                    else:
                        recs[name] = Rec(i, st, None)
            for name in markers:  # an OCI whiteout hides the name in the layers below this one
                if name not in recs:
                    recs[name] = None
                else:
                    open_dirs[name] = False
        out = [(k, v) for k, v in recs.items() if v is not None]
        if not (self.rw and d.dirs[0] == 0):
            d.listing = dict(out)
        return out

    # -- helpers: copy-up and upper ------------------------------------------------------------

    def _check_rw(self) -> None:
        if not self.rw:
            raise _err(errno.EROFS)

    def _upper_dir(self, d: Node) -> bytes:
        """Make sure dir ``d`` exists in the upper (copying up its parents first); its path."""
        if not d.dirs:
            raise _err(errno.ENOENT)
        up = self.roots[0] + d.path
        if d.dirs[0] == 0:
            return up
        assert d.parent is not None  # the root always has an upper part
        pup = self._upper_dir(d.parent)
        src = self.roots[d.dirs[0]] + d.path
        st = os.lstat(src)
        pst = os.lstat(pup)
        tmp = self._tmpname()
        os.mkdir(tmp, 0o700)
        try:
            self._copy_meta(src, tmp, st, is_link=False)
            os.rename(tmp, up)
        except BaseException:
            _remove_quietly(tmp)
            raise
        os.utime(pup, ns=(pst.st_atime_ns, pst.st_mtime_ns))
        d.dirs.insert(0, 0)
        d.listing = None
        return up

    def _copy_meta(self, src: bytes, dst: bytes | int, st: os.stat_result, is_link: bool) -> None:
        """Owner, mode, xattrs (but overlay's own) and times of ``src`` onto ``dst``; in this
        order, because chown clears set-id bits and security.capability."""
        follow = not is_link
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=follow)
        if not is_link:
            os.chmod(dst, stat.S_IMODE(st.st_mode))
        try:
            names = os.listxattr(src, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            names = []
        for name in names:
            b = os.fsencode(name)
            if b.startswith(PRIVATE) and not b.startswith(ESCAPED):
                continue
            try:
                value = os.getxattr(src, name, follow_symlinks=False)
            except OSError as e:
                if e.errno == errno.ENODATA:
                    continue
                raise
            os.setxattr(dst, name, value, follow_symlinks=follow)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=follow)

    def _copy_up(self, n: Node, data: bool = True) -> None:
        """Copy the lower file of ``n`` into the upper (see the module docstring)."""
        if n.layer == 0:
            return
        self._check_rw()
        p = n.parent
        if p is None:
            raise _err(errno.ENOENT)
        pup = self._upper_dir(p)
        src = self.roots[n.layer] + p.path + b"/" + n.name
        dst = pup + b"/" + n.name
        st = os.lstat(src)
        pst = os.lstat(pup)
        tmp = self._tmpname()
        fmt = _S_IFMT(st.st_mode)
        try:
            if fmt == _S_IFREG:
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    if data and st.st_size:
                        _copy_data(src, out, st.st_size)
                    self._copy_meta(src, out, st, is_link=False)
                finally:
                    os.close(out)
            elif fmt == stat.S_IFLNK:
                os.symlink(os.readlink(src), tmp)
                self._copy_meta(src, tmp, st, is_link=True)
            else:
                os.mknod(tmp, st.st_mode, st.st_rdev)
                self._copy_meta(src, tmp, st, is_link=False)
            os.rename(tmp, dst)
        except BaseException:
            _remove_quietly(tmp)
            raise
        os.utime(pup, ns=(pst.st_atime_ns, pst.st_mtime_ns))
        new = os.lstat(dst)
        if n.key is not None and self.files.get(n.key) is n:
            del self.files[n.key]
        n.layer = 0
        n.key = (0, new.st_ino)
        if st.st_nlink == 1:
            self.origin[new.st_ino] = n.ino  # keeps its number, as overlayfs (origin) does
        else:
            n.ino = new.st_ino  # a broken hard link: a new inode, a new number
        self.files[n.key] = n
        if n.fhs:
            for fh in n.fhs:  # readers opened before the copy-up now read the upper file
                fd = os.open(dst, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.dup2(fd, fh)
                finally:
                    os.close(fd)

    def _writable(self, n: Node) -> bytes:
        """The upper path of ``n``, copied up first if need be."""
        if n.is_dir:
            return self._upper_dir(n)
        self._copy_up(n)
        return self._real(n)

    def _owner(self, p: Node, ctx: RequestContext, mode: int, is_dir: bool) -> tuple[int, int, int]:
        """uid, gid and mode of a new entry in ``p``: the caller's, or the dir's group and
        set-gid bit where the dir is set-gid (the kernel's ``inode_init_owner``)."""
        gid = ctx.gid
        pst = os.lstat(self._real(p))
        if pst.st_mode & stat.S_ISGID:
            gid = pst.st_gid
            if is_dir:
                mode |= stat.S_ISGID
        return ctx.uid, gid, mode

    def _place(self, p: Node, name: bytes, make: Callable[[bytes], None],
               dir_over_whiteout: bool = False) -> tuple[bytes, bool]:
        """Create a new entry ``name`` in ``p``'s upper dir with ``make(path)``: directly where
        nothing is, or staged and renamed over a whiteout (exchanged, for a dir, which is then
        made opaque). Returns the path and whether a whiteout was replaced."""
        self._check_rw()
        if self._find(p, name) is not None:
            raise _err(errno.EEXIST)
        pup = self._upper_dir(p)
        dst = pup + b"/" + name
        try:
            st = os.lstat(dst)
        except FileNotFoundError:
            try:
                make(dst)
            except FileExistsError:
                raise  # not ours to remove
            except BaseException:
                _remove_quietly(dst)  # half made (owner or mode not set): not shown
                raise
            return dst, False
        if not self._whiteout(st):
            raise _err(errno.EEXIST)  # an upper entry the merged view does not show: damaged
        tmp = self._tmpname()
        make(tmp)
        try:
            if dir_over_whiteout:
                os.setxattr(tmp, OPAQUE_XATTR, b"y")
                _renameat2(tmp, dst, _RENAME_EXCHANGE)
                os.unlink(tmp)  # the whiteout, now in work
            else:
                os.rename(tmp, dst)
        except BaseException:
            _remove_quietly(tmp)
            raise
        return dst, True

    def _whiteout_over(self, path: bytes) -> None:
        """Replace the upper entry at ``path`` (a non-dir) with a whiteout, atomically."""
        tmp = self._tmpname()
        os.mknod(tmp, _S_IFCHR, 0)
        try:
            os.rename(tmp, path)
        except BaseException:
            _remove_quietly(tmp)
            raise

    def _new_node(self, p: Node, name: bytes, path: bytes) -> tuple[Node, os.stat_result]:
        st = os.lstat(path)
        if _S_IFMT(st.st_mode) == _S_IFDIR:
            rec = Rec(0, st, [0])
        else:
            rec = Rec(0, st, None)
        p.listing = None
        n = self._node_for(p, name, rec)
        n.lookups += 1
        return n, st

    def _unname(self, n: Node, p: Node, name: bytes, nlink_before: int) -> None:
        """Name ``name`` in ``p`` of non-dir ``n`` is gone (unlinked, or replaced by a rename).
        A lower file keeps its name as its path: the lower layer still has it, and an open file
        of it goes on reading it."""
        if n.layer != 0:
            pass
        elif n.parent is p and n.name == name:
            if n.aliases:
                n.parent, n.name = n.aliases.pop()
            else:
                n.parent = None
        else:
            try:
                n.aliases.remove((p, name))
            except ValueError:
                pass
        gone = n.layer != 0 or nlink_before <= 1
        if gone and n.key is not None and self.files.get(n.key) is n:
            del self.files[n.key]  # its number may be reused by a new upper file
            n.key = None

    def _keep_reachable(self, n: Node | None, p: Node, name: bytes, real: bytes) -> None:
        """Before the last known name of a node the kernel holds goes away, keep an O_PATH fd
        of it: an open file that was unlinked must still answer getattr."""
        if n is None or n.lookups <= 0 or n.pathfd >= 0:
            return
        if n.aliases or not (n.parent is p and n.name == name):
            return
        n.pathfd = os.open(real, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)

    def _existing_node(self, p: Node, name: bytes, rec: Rec) -> Node | None:
        if rec.dirs is not None:
            return self.dirs.get(p.path + b"/" + name)
        st = rec.st
        if rec.layer < self.first_lower:
            return self.files.get((0, st.st_ino))
        if self.rw:
            return self.files.get((2, p.path + b"/" + name))
        return self.files.get((1, st.st_dev, st.st_ino))

    # -- requests: lookup, attributes -----------------------------------------------------

    @_op
    def lookup(self, parent_id: int, name: bytes, ctx: RequestContext) -> EntryAttributes:
        p = self._node(parent_id)
        if name == b".":
            n = p
        elif name == b"..":
            n = p.parent or p
        else:
            rec = self._find(p, name)
            if rec is None:
                return self._negative()
            n = self._node_for(p, name, rec)
            if rec.dirs is not None or n.layer == rec.layer:
                n.lookups += 1
                return self._entry(n, rec.st)
        n.lookups += 1
        return self._entry(n, self._stat(n))

    @_op
    def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for id, count in inode_list:
            n = self.nodes.get(id)
            if n is None:
                continue
            n.lookups -= count
            if n.lookups <= 0:
                self._drop(n)

    @_op
    def getattr(self, id: int, ctx: RequestContext) -> EntryAttributes:
        n = self._node(id)
        return self._entry(n, self._stat(n))

    @_op
    def setattr(self, id: int, attr: EntryAttributes, fields: SetattrFields, fh: int | None,
                ctx: RequestContext) -> EntryAttributes:
        n = self._node(id)
        self._check_rw()
        if n.is_dir:
            path = self._upper_dir(n)
        else:
            self._copy_up(n, data=not (fields.update_size and attr.st_size == 0))
            path = self._real(n)
        st = self._stat(n)
        is_link = stat.S_ISLNK(st.st_mode)
        if fields.update_size:
            if fh is not None:
                os.ftruncate(fh, attr.st_size)
            else:
                os.truncate(path, attr.st_size)
        if fields.update_uid or fields.update_gid:
            os.chown(path, attr.st_uid if fields.update_uid else -1,
                     attr.st_gid if fields.update_gid else -1, follow_symlinks=False)
        if fields.update_mode and not is_link:
            os.chmod(path, stat.S_IMODE(attr.st_mode))
        if fields.update_atime or fields.update_mtime:
            cur = os.lstat(path)
            os.utime(path, ns=(attr.st_atime_ns if fields.update_atime else cur.st_atime_ns,
                               attr.st_mtime_ns if fields.update_mtime else cur.st_mtime_ns),
                     follow_symlinks=False)
        return self._entry(n, self._stat(n))

    @_op
    def readlink(self, id: int, ctx: RequestContext) -> bytes:
        return os.readlink(self._real(self._node(id)))

    @_op
    def statfs(self, ctx: RequestContext) -> StatvfsData:
        s = os.statvfs(self.roots[0])
        out = StatvfsData()
        for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
                  "f_favail", "f_namemax"):
            setattr(out, k, getattr(s, k))
        return out

    # -- requests: files -------------------------------------------------------------------

    @_op
    def open(self, id: int, flags: int, ctx: RequestContext) -> FileInfo:
        n = self._node(id)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            self._check_rw()
            if n.layer != 0:
                self._copy_up(n, data=not flags & os.O_TRUNC)
            fd = self._open_real(n, flags & ~_STRIP)
        elif n.layer >= self.first_lower:
            try:
                fd = self._open_real(n, _LOWER_OPEN)
            except PermissionError:  # O_NOATIME is for the owner (or root) only
                fd = self._open_real(n, os.O_RDONLY)
        else:
            fd = self._open_real(n, flags & ~_STRIP)
        if self.rw:  # only a read-write view copies up, and must reopen readers then
            if n.fhs is None:
                n.fhs = set()
            n.fhs.add(fd)
            self.fh_nodes[fd] = n
        return FileInfo(fh=fd, keep_cache=True)

    def _open_real(self, n: Node, flags: int) -> int:
        if n.pathfd >= 0 and n.parent is None:  # unlinked: reopen the inode through its fd
            return os.open(b"/proc/self/fd/%d" % n.pathfd, (flags & ~os.O_NOFOLLOW) | os.O_CLOEXEC)
        return os.open(self._real(n), flags | _NOFOLLOW)

    @_op
    def read(self, fh: int, off: int, size: int) -> memoryview:  # type: ignore[override]
        # Into one buffer kept for all reads: a fresh bytes object of 128 KiB (the usual request)
        # is an mmap, page faults and an munmap each time, more than the read itself. pyfuse3
        # copies the reply out before it reads the next request, so the buffer is free again;
        # it takes any buffer (PyObject_GetBuffer), though its stub says bytes.
        if size > len(self._readbuf):
            self._readbuf = memoryview(bytearray(size))
        n = os.preadv(fh, [self._readbuf[:size]], off)
        return self._readbuf[:n]

    @_op
    def write(self, fh: int, off: int, buf: bytes) -> int:
        return os.pwrite(fh, buf, off)

    @_op
    def release(self, fh: int) -> None:
        n = self.fh_nodes.pop(fh, None)
        if n is not None and n.fhs is not None:
            n.fhs.discard(fh)
        os.close(fh)

    @_op
    def fsync(self, fh: int, datasync: bool) -> None:
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)

    @_op
    def create(self, parent_id: int, name: bytes, mode: int, flags: int,
               ctx: RequestContext) -> tuple[FileInfo, EntryAttributes]:
        p = self._node(parent_id)
        uid, gid, mode = self._owner(p, ctx, mode, is_dir=False)
        fds: list[int] = []

        def make(path: bytes) -> None:
            acc = flags & os.O_ACCMODE
            fd = os.open(path, acc | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | (flags & os.O_SYNC),
                         stat.S_IMODE(mode))
            fds.append(fd)
            os.fchown(fd, uid, gid)
            if mode & 0o7000:
                os.fchmod(fd, stat.S_IMODE(mode))

        try:
            path, _ = self._place(p, name, make)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        fd = fds[0]
        n, st = self._new_node(p, name, path)
        n.fhs = {fd}
        self.fh_nodes[fd] = n
        return FileInfo(fh=fd, keep_cache=True), self._entry(n, st)

    # -- requests: making and removing names ---------------------------------------------------

    @_op
    def mkdir(self, parent_id: int, name: bytes, mode: int, ctx: RequestContext) -> EntryAttributes:
        p = self._node(parent_id)
        uid, gid, mode = self._owner(p, ctx, mode, is_dir=True)

        def make(path: bytes) -> None:
            os.mkdir(path, stat.S_IMODE(mode))
            os.chown(path, uid, gid)
            if mode & 0o7000:
                os.chmod(path, stat.S_IMODE(mode))

        path, _ = self._place(p, name, make, dir_over_whiteout=True)
        n, st = self._new_node(p, name, path)
        return self._entry(n, st)

    @_op
    def mknod(self, parent_id: int, name: bytes, mode: int, rdev: int,
              ctx: RequestContext) -> EntryAttributes:
        if stat.S_ISCHR(mode) and rdev == 0:
            raise _err(errno.EPERM)  # that would be a whiteout (overlayfs refuses it too)
        p = self._node(parent_id)
        uid, gid, mode = self._owner(p, ctx, mode, is_dir=False)

        def make(path: bytes) -> None:
            os.mknod(path, mode, rdev)
            os.chown(path, uid, gid, follow_symlinks=False)
            if mode & 0o7000:
                os.chmod(path, stat.S_IMODE(mode))

        path, _ = self._place(p, name, make)
        n, st = self._new_node(p, name, path)
        return self._entry(n, st)

    @_op
    def symlink(self, parent_id: int, name: bytes, target: bytes,
                ctx: RequestContext) -> EntryAttributes:
        p = self._node(parent_id)
        uid, gid, _ = self._owner(p, ctx, 0o777, is_dir=False)

        def make(path: bytes) -> None:
            os.symlink(target, path)
            os.chown(path, uid, gid, follow_symlinks=False)

        path, _ = self._place(p, name, make)
        n, st = self._new_node(p, name, path)
        return self._entry(n, st)

    @_op
    def link(self, id: int, parent_id: int, name: bytes, ctx: RequestContext) -> EntryAttributes:
        n = self._node(id)
        if n.is_dir:
            raise _err(errno.EPERM)
        p = self._node(parent_id)
        self._check_rw()
        if self._find(p, name) is not None:
            raise _err(errno.EEXIST)
        self._copy_up(n)
        src = self._real(n)
        path, _ = self._place(p, name, lambda path: os.link(src, path, follow_symlinks=False))
        p.listing = None
        if (p, name) not in n.aliases and not (n.parent is p and n.name == name):
            if n.parent is None:
                n.parent, n.name = p, name
            else:
                n.aliases.append((p, name))
        n.lookups += 1
        return self._entry(n, os.lstat(path))

    @_op
    def unlink(self, parent_id: int, name: bytes, ctx: RequestContext) -> None:
        p = self._node(parent_id)
        self._check_rw()
        rec = self._find(p, name)
        if rec is None:
            raise _err(errno.ENOENT)
        if rec.dirs is not None:
            raise _err(errno.EISDIR)
        n = self._existing_node(p, name, rec)
        if rec.layer == 0:
            real = self.roots[0] + p.path + b"/" + name
            self._keep_reachable(n, p, name, real)
            if self._lower_shows(p, name):
                self._whiteout_over(real)
            else:
                os.unlink(real)
        else:
            pup = self._upper_dir(p)
            os.mknod(pup + b"/" + name, _S_IFCHR, 0)
        if n is not None:
            self._unname(n, p, name, rec.st.st_nlink)
        p.listing = None

    @_op
    def rmdir(self, parent_id: int, name: bytes, ctx: RequestContext) -> None:
        p = self._node(parent_id)
        self._check_rw()
        rec = self._find(p, name)
        if rec is None:
            raise _err(errno.ENOENT)
        if rec.dirs is None:
            raise _err(errno.ENOTDIR)
        path = p.path + b"/" + name
        d = self.dirs.get(path)
        probe = d if d is not None else Node(0, 0, True, p, name)
        if d is None:
            probe.path, probe.dirs = path, rec.dirs
        if self._listing(probe):
            raise _err(errno.ENOTEMPTY)
        lower = self._lower_shows(p, name)
        if rec.dirs[0] == 0:
            real = self.roots[0] + path
            if lower:
                tmp = self._tmpname()
                os.mknod(tmp, _S_IFCHR, 0)
                try:
                    _renameat2(tmp, real, _RENAME_EXCHANGE)
                except BaseException:
                    _remove_quietly(tmp)
                    raise
                _rmtree(tmp)  # the old upper dir (whiteouts only), now in work
            else:
                _rmtree(real)
        else:
            pup = self._upper_dir(p)
            os.mknod(pup + b"/" + name, _S_IFCHR, 0)
        if d is not None:
            del self.dirs[path]
            d.dirs = []
            d.listing = None
        p.listing = None

    @_op
    def rename(self, p1_id: int, name1: bytes, p2_id: int, name2: bytes, flags: int,
               ctx: RequestContext) -> None:
        if flags & ~pyfuse3.RENAME_NOREPLACE:
            raise _err(errno.EINVAL)
        p1, p2 = self._node(p1_id), self._node(p2_id)
        self._check_rw()
        src = self._find(p1, name1)
        if src is None:
            raise _err(errno.ENOENT)
        dst = self._find(p2, name2)
        if dst is not None and flags & pyfuse3.RENAME_NOREPLACE:
            raise _err(errno.EEXIST)
        if p1 is p2 and name1 == name2:
            return
        if dst is not None and src.layer == 0 == dst.layer and src.dirs is None and \
                dst.dirs is None and src.st.st_ino == dst.st.st_ino:
            return  # two names of one inode: rename(2) leaves both
        path1, path2 = p1.path + b"/" + name1, p2.path + b"/" + name2
        moving_dir = src.dirs is not None
        if moving_dir:
            assert src.dirs is not None
            if src.dirs != [0]:
                raise _err(errno.EXDEV)  # a lower dir moves by copy (redirect_dir=nofollow)
            if dst is not None:
                if dst.dirs is None:
                    raise _err(errno.ENOTDIR)
                probe = self.dirs.get(path2) or Node(0, 0, True, p2, name2)
                if not probe.dirs:
                    probe.path, probe.dirs = path2, dst.dirs
                if self._listing(probe):
                    raise _err(errno.ENOTEMPTY)
        elif dst is not None and dst.dirs is not None:
            raise _err(errno.EISDIR)
        n = self._existing_node(p1, name1, src)
        if not moving_dir:
            if n is None:
                n = self._node_for(p1, name1, src)
            if n.layer != 0:
                self._copy_up(n)
        old_dst = self._existing_node(p2, name2, dst) if dst is not None else None
        up1 = self._upper_dir(p1)
        up2 = self._upper_dir(p2)
        real1, real2 = up1 + b"/" + name1, up2 + b"/" + name2
        whiteout_src = self._lower_shows(p1, name1)
        lower_dst = self._lower_shows(p2, name2)
        try:
            dst_upper: os.stat_result | None = os.lstat(real2)
        except FileNotFoundError:
            dst_upper = None
        if old_dst is not None and not old_dst.is_dir and dst is not None and dst.layer == 0:
            self._keep_reachable(old_dst, p2, name2, real2)
        if moving_dir:
            if dst_upper is not None and stat.S_ISDIR(dst_upper.st_mode):
                for entry in os.listdir(real2):  # whiteouts only: its merged view is empty
                    _rmtree(real2 + b"/" + entry)
            if lower_dst:
                os.setxattr(real1, OPAQUE_XATTR, b"y")
            if dst_upper is not None and not stat.S_ISDIR(dst_upper.st_mode):
                # a dir cannot replace a non-dir (the whiteout there): swap them, then the
                # whiteout, now at the source, stays there if a lower shows the old name
                _renameat2(real1, real2, _RENAME_EXCHANGE)
                if not whiteout_src:
                    os.unlink(real1)
            else:
                _renameat2(real1, real2, _RENAME_WHITEOUT if whiteout_src else 0)
        else:
            _renameat2(real1, real2, _RENAME_WHITEOUT if whiteout_src else 0)
        # bookkeeping
        if old_dst is not None:
            if old_dst.is_dir:
                if self.dirs.get(path2) is old_dst:
                    del self.dirs[path2]
                old_dst.dirs = []
            else:
                assert dst is not None
                self._unname(old_dst, p2, name2, dst.st.st_nlink)
        if moving_dir:
            d = self.dirs.pop(path1, None)
            prefix = path1 + b"/"
            for k in [k for k in self.dirs if k.startswith(prefix)]:
                c = self.dirs.pop(k)
                c.path = path2 + k[len(path1):]
                self.dirs[c.path] = c
            if d is not None:
                d.path, d.parent, d.name = path2, p2, name2
                d.dirs = [0]
                d.listing = None
                self.dirs[path2] = d
        elif n is not None:
            if n.lookups <= 0:
                self._drop(n)  # made only for this rename; the kernel does not know it
            elif n.parent is p1 and n.name == name1:
                n.parent, n.name = p2, name2
            else:
                try:
                    n.aliases.remove((p1, name1))
                except ValueError:
                    pass
                n.aliases.append((p2, name2))
        p1.listing = None
        p2.listing = None

    # -- requests: dirs ---------------------------------------------------------------------

    @_op
    def opendir(self, id: int, ctx: RequestContext) -> int:
        d = self._node(id)
        if not d.is_dir:
            raise _err(errno.ENOTDIR)
        fh = next(self._dirfhs)
        self.dirhandles[fh] = (d, self._listing(d))
        return fh

    @_op
    def readdir(self, fh: int, start: int, token: pyfuse3.ReaddirToken) -> None:
        # positions: 0 ".", 1 "..", 2 + k the k-th merged entry; an entry's next id is its
        # position + 1, where a later call resumes
        d, recs = self.dirhandles[fh]
        if start < 2:
            if self.numbers.usable:  # "." and ".." need a number without a node
                for pos in range(start, 2):
                    e = EntryAttributes()
                    e.st_ino = 0  # no node: the kernel takes no reference for . and ..
                    self.numbers.set(e, (d if pos == 0 else d.parent or d).ino)
                    e.st_mode = _S_IFDIR | 0o755
                    if not pyfuse3.readdir_reply(token, b"." * (pos + 1), e, pos + 1):
                        return
            start = 2
        for pos in range(start, len(recs) + 2):
            name, rec = recs[pos - 2]
            n = self._node_for(d, name, rec)
            st = rec.st if rec.dirs is not None or n.layer == rec.layer else self._stat(n)
            if not pyfuse3.readdir_reply(token, name, self._entry(n, st), pos + 1):
                if n.lookups <= 0:
                    self._drop(n)
                return
            n.lookups += 1

    @_op
    def releasedir(self, fh: int) -> None:
        self.dirhandles.pop(fh, None)

    @_op
    def fsyncdir(self, fh: int, datasync: bool) -> None:
        d, _ = self.dirhandles[fh]
        if self.rw and d.dirs and d.dirs[0] == 0:
            fd = os.open(self.roots[0] + d.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- requests: xattrs -------------------------------------------------------------------

    @_op
    def getxattr(self, id: int, name: bytes, ctx: RequestContext) -> bytes:
        return os.getxattr(self._real(self._node(id)), _escape(name), follow_symlinks=False)

    @_op
    def listxattr(self, id: int, ctx: RequestContext) -> list[bytes]:
        names = os.listxattr(self._real(self._node(id)), follow_symlinks=False)
        out = []
        for x in names:
            b = os.fsencode(x)
            if b.startswith(ESCAPED):
                out.append(PRIVATE + b[len(ESCAPED):])
            elif not b.startswith(PRIVATE):
                out.append(b)
        return out

    @_op
    def setxattr(self, id: int, name: bytes, value: bytes, ctx: RequestContext) -> None:
        n = self._node(id)
        self._check_rw()
        os.setxattr(self._writable(n), _escape(name), value, follow_symlinks=False)

    @_op
    def removexattr(self, id: int, name: bytes, ctx: RequestContext) -> None:
        n = self._node(id)
        self._check_rw()
        real = _escape(name)
        os.getxattr(self._real(n), real, follow_symlinks=False)  # ENODATA before any copy-up
        os.removexattr(self._writable(n), real, follow_symlinks=False)


# ---------------------------------------------------------------------------------------------
# small helpers


def _escape(name: bytes) -> bytes:
    """The layers' name of an xattr the mount shows as ``name``."""
    if name.startswith(PRIVATE):
        return PRIVATE + name[len(b"trusted."):]  # trusted.overlay.X -> trusted.overlay.overlay.X
    return name


def _copy_data(src: bytes, out: int, size: int) -> None:
    fd = os.open(src, _LOWER_OPEN)
    try:
        left = size
        while left > 0:
            n = os.copy_file_range(fd, out, min(left, 1 << 30))
            if n == 0:
                break
            left -= n
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.lseek(fd, 0, os.SEEK_SET)
        os.lseek(out, 0, os.SEEK_SET)
        os.ftruncate(out, 0)
        while chunk := os.read(fd, 1 << 20):
            os.write(out, chunk)
    finally:
        os.close(fd)


def _remove_quietly(path: bytes) -> None:
    try:
        _rmtree(path)
    except OSError:
        pass


def _rmtree(path: bytes) -> None:
    try:
        os.unlink(path)
        return
    except IsADirectoryError:
        pass
    except FileNotFoundError:
        return
    for top, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(top, name))
        for name in dirs:
            q = os.path.join(top, name)
            if os.path.islink(q):
                os.unlink(q)
            else:
                os.rmdir(q)
    os.rmdir(path)


__all__ = ["Node", "Rec", "TIMEOUT", "UnionFS"]
