"""Apply an uncompressed OCI layer tar onto a directory: the heart of layer materialisation.

What it does
------------
``apply_tar(root, stream, whiteouts)`` reads a layer tar and makes its entries exist under
``root`` the way Docker's ``archive.UnpackLayer`` does: an entry replaces whatever was at its path
(a directory over a directory merges and takes the new metadata), a missing parent directory is
made (0755, root-owned), metadata is numeric uid/gid, mode incl. setuid/setgid/sticky (applied
after chown, which clears them), PAX xattrs and ns mtimes; directory times are set at the end,
deepest first, and directories that existed before keep their times unless the tar names them.
Whiteouts follow the driver's layout (``Whiteouts``): full-tree drivers delete (REMOVE), diff-dir
drivers record overlayfs whiteouts (OVERLAY). With OVERLAY the applier writes an empty diff dir but
sees the merged view of the applied diff dirs below (``drivers.tar.lower``), so that the merged
result is the one REMOVE gives on a full copy: a parent the tar leaves implicit is copied up with
the lower dir's mode, owner, xattrs and times; a hardlink to a lower file copies it up (its other
visible names too, so the group stays one inode) and links to the copy; a lower symlink met as a
parent is followed inside the rootfs, as REMOVE follows one in the tree; whiteouts of names nothing
below has make nothing. A directory entry over an existing directory takes the entry's xattrs
only (both modes). Names are bytes: libarchive's NFC-normalised UTF-8 names are replaced by the
raw header bytes (``drivers.tar.libarchive``). It returns the sum of the regular files' sizes and
reads ``stream`` to its very end, because the caller hashes that stream for the DiffID.

Threat model
------------
The tar is hostile: anybody can push an image. It must never make, change or remove anything
outside ``root``, even for a moment, and must not be able to make lamina follow a link out:

* Names are normalised (leading ``/`` and ``./`` dropped, ``//`` collapsed); a ``..`` component is
  refused (InvalidInput naming the entry). Names are bytes end to end (non-UTF-8 is fine).
* Only the *parent* of an entry is resolved, and only through directory fds opened with
  ``O_NOFOLLOW`` one component at a time, starting at a fd of ``root``. A symlink met as a parent
  component (``lib -> usr/lib`` or ``lib -> /usr/lib`` or ``x -> ../../..``) is resolved as if
  ``root`` were ``/`` (a ``..`` at the top stays at the top), so it can only ever land inside
  ``root``; a loop, or a parent that is not a directory, is refused. Every create, link, chown,
  chmod, utime, mknod and unlink is then relative to that parent fd and never follows the final
  component, so an entry may itself be a symlink (made verbatim, never followed).
* Hardlink targets are resolved the same way and linked without following; they must exist
  inside ``root`` and must not be a directory or the entry itself.
* Whiteouts resolve their parent the same way; removal walks by fd and never follows a link.
  Nothing may retype or remove ``root`` itself (a root entry may only be a directory).
* ``trusted.overlay.*`` xattrs in the tar are dropped: overlayfs would obey them and lamina owns
  that namespace. Other xattrs than user.*, trusted.*, security.* and POSIX ACLs are refused.
* A malformed tar (bad checksum, truncated entry, garbage) is InvalidInput ("malformed layer
  tar: ..."). Failures of the machine (disk full, I/O error) stay OSError. On any error the
  layer is half-written and the caller removes it.

Not handled: AUFS hardlink dirs (``.wh..wh.plnk``, skipped like all ``.wh..wh.*`` names at the
top, so links into them fail as "target not found"); concurrent changes to ``root`` by others
while applying (the layer is private to its applier until it is registered). libarchive hands
PAX (UTF-8) names over in the process locale's charset: identical bytes under UTF-8 and C/POSIX
locales (it falls back to the raw bytes), re-encoded under other 8-bit locales.

Speed: libarchive (C) parses the tar and hands out data blocks that are written with ``pwrite``
straight from its buffer; Python only makes per-entry decisions with dir-fd-relative syscalls,
caching the parent fds (most entries share a parent). ``TarApplierPy`` is the same applier over
the stdlib ``tarfile`` (the ``_py`` twin, used when libarchive cannot be loaded).

Modules: this one holds the applier's rules; the parsers are ``drivers.tar.libarchive`` and
``drivers.tar.tarfile_reader``, both giving ``drivers.tar.entry.Header``s through the
``drivers.tar.entry.Reader`` protocol.
"""

from __future__ import annotations

import collections
import enum
import errno
import os
import stat
import time
from typing import BinaryIO, Callable, NamedTuple

from drivers.errors import Bug, InvalidInput, NotFound, Unsupported
from drivers.tar import libarchive
from drivers.tar.entry import HARDLINK, Header, Reader
from drivers.tar.lower import Found, LowerView, copy_data, copy_xattrs
from drivers.tar.tarfile_reader import TarfileReader

__all__ = ["Whiteouts", "apply_tar", "apply_tar_py", "TarApplier", "TarApplierPy"]


class Whiteouts(enum.Enum):
    """How OCI whiteouts land on disk; picked by the driver's layout."""

    REMOVE = "remove"
    """Full-tree drivers (vfs, btrfs): ``.wh.<name>`` deletes ``<name>`` (the whole tree beneath);
    ``.wh..wh..opq`` empties its directory of everything lower layers put there. Entries of this
    same layer survive both, whatever their order in the tar."""
    OVERLAY = "overlay"
    """Diff-dir drivers (overlay, fuse): ``.wh.<name>`` becomes a 0/0 char device ``<name>``;
    ``.wh..wh..opq`` becomes xattr ``trusted.overlay.opaque=y`` on its directory; a directory
    of this layer that replaces a whiteout, or that a later whiteout names, is made opaque. (A
    tar entry that *is* a 0/0 char device stays one, and overlayfs reads it as a whiteout, as
    with Docker.)"""


WH_PREFIX = b".wh."
WH_OPAQUE = b".wh..wh..opq"
WH_META = b".wh..wh."  # AUFS metadata names (plnk, aufs, orph): skipped at the top, as Docker does
OPAQUE_XATTR = b"trusted.overlay.opaque"

_XATTR_ALLOWED = (b"user.", b"trusted.", b"security.", b"system.posix_acl_access",
                  b"system.posix_acl_default")
_NO_ID = 2**32 - 1  # (uid_t)-1
_MAX_SYMLINKS = 40  # as the kernel's MAXSYMLINKS: a longer chain is a loop
_MAX_DIR_FDS = 128  # parent dir fds kept open (LRU); tar order makes the working set small
CHUNK = 1 << 20  # bytes per read from the caller's stream
_ENVIRONMENT = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EMFILE, errno.ENFILE,
                errno.ENOMEM}  # the machine failed, not the tar: these stay OSError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def apply_tar(root: str, stream: BinaryIO, whiteouts: Whiteouts = Whiteouts.REMOVE,
              lowers: list[str] | None = None) -> int:
    """Apply the layer tar read from ``stream`` onto the existing directory ``root``.

    Requires: ``root`` exists (REMOVE: a full copy of the parent layer; OVERLAY: an empty diff
    dir) and nobody else writes to it meanwhile.
    Effect: the layer's entries exist under ``root``; ``stream`` is read to its end (on success).
    Returns the sum of the sizes of the regular files in the tar (Docker's layer size).
    Raises: InvalidInput (malformed or hostile tar, naming the entry), Unsupported (an entry this
    filesystem or this process cannot hold), OSError (disk full, I/O error). On error ``root`` is
    half-written and the caller removes it.
    OVERLAY: ``lowers`` are the diff dirs (or symlinks to them) of the layers below, uppermost
    first (complete: applied already); the layer is applied as the kernel would copy up into an
    upper dir over them (``drivers.tar.lower``, which reads only what a lookup needs): a parent the tar leaves implicit takes the lower dir's mode, owner,
    xattrs and times; a hardlink to a lower file copies that file up and links to the copy; a
    parent component that is a lower symlink is followed inside the rootfs, as with REMOVE.
    Repeat: not idempotent; apply a layer once onto a fresh directory.
    """
    applier = TarApplier if libarchive.load() is not None else TarApplierPy
    if not TEST_SLOWDOWN:
        return applier(root, whiteouts, lowers).apply(stream)
    t0 = time.perf_counter()
    size = applier(root, whiteouts, lowers).apply(stream)
    time.sleep(TEST_SLOWDOWN * (time.perf_counter() - t0))
    return size


TEST_SLOWDOWN = 0.0
"""TEST-ONLY knob of the bench's sensitivity measurement (bench/instrument.py): at 0.25 every
``apply_tar`` takes 25% longer (it sleeps for a quarter of the time it took). Always 0 outside
that measurement, where it costs one comparison per layer. Set only by ``bench.worker`` (from
``LAMINA_BENCH_SLOWDOWN_APPLY``, on the A/B side that asks for it): library code reads no
environment."""


def apply_tar_py(root: str, stream: BinaryIO, whiteouts: Whiteouts = Whiteouts.REMOVE,
                 lowers: list[str] | None = None) -> int:
    """``apply_tar`` with the stdlib ``tarfile`` parser (the pure-Python twin); same contract."""
    return TarApplierPy(root, whiteouts, lowers).apply(stream)



class _Dir(NamedTuple):
    """A directory inside root: an open fd and its symlink-free path from root (b"" is root)."""

    fd: int
    real: bytes


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


class TarApplier:
    """Applies one layer tar onto ``root``; one instance per layer (the per-layer state is which
    paths this layer wrote, the directory times to set at the end and the parent fd cache).

    ``apply`` drives three parts: the parser (``_open_reader``: headers and data blocks), the
    per-entry handlers (``_file``, ``_directory``, ``_symlink``, ``_hardlink``, ``_node``, ``_whiteout``)
    and the scoped lookup (``_lookup``/``_walk``), which is the only way a path becomes an fd.
    """

    def __init__(self, root: str, whiteouts: Whiteouts, lowers: list[str] | None = None) -> None:
        self._root_path = root
        self._whiteouts = whiteouts
        self._lower = LowerView(lowers or [])  # OVERLAY: the merged view of the layers below
        self._opaque: set[bytes] = set()  # OVERLAY: real paths of dirs this layer made opaque
        self._root = _Dir(-1, b"")
        self._fds: collections.OrderedDict[bytes, int] = collections.OrderedDict()  # real -> fd
        self._alias: dict[bytes, bytes] = {}  # lexical dir path -> real path
        self._pin = -1  # fd of the current entry's parent: never evicted mid-entry
        self._upper: set[bytes] = set()  # real paths written by this layer + their ancestors
        self._copied: set[bytes] = set()  # OVERLAY: real paths copied up from below, not written
        self._seen: set[bytes] = set()  # dirs whose original times are saved, or made here
        self._saved_times: dict[bytes, tuple[int, int, int]] = {}  # real -> (atime, mtime, ino)
        self._dir_times: dict[bytes, tuple[int, int, int]] = {}  # dirs the tar names
        self._size = 0
        self._entry_name = b""
        self._used = False

    # ----------------------------------------------------------------------------- driving
    def _open_reader(self, stream: BinaryIO) -> Reader:
        lib = libarchive.load()
        if lib is None:
            raise Unsupported("libarchive cannot be loaded; use TarApplierPy")
        return libarchive.LibarchiveReader(lib, stream)

    def apply(self, stream: BinaryIO) -> int:
        """Apply the tar in ``stream`` (see ``apply_tar``, whose contract this is)."""
        if self._used:
            raise Bug("TarApplier.apply called twice; use one applier per layer")
        self._used = True
        try:
            fd = os.open(self._root_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"layer root {self._root_path!r} does not exist") from None
        self._root = _Dir(fd, b"")
        reader: Reader | None = None
        try:
            self._save_times(self._root, os.fstat(fd))
            reader = self._open_reader(stream)
            for header in reader:
                self._entry_name = header.name
                try:
                    self._entry(header, reader)
                except OSError as e:
                    raise self._os_error(e) from e
                except (OverflowError, ValueError) as e:  # e.g. a time or id out of range
                    raise self._refuse(str(e)) from None
            self._entry_name = b"(directory times)"
            try:
                self._finish_times()
            except OSError as e:
                raise self._os_error(e) from e
        finally:
            if reader is not None:
                reader.close()
            self._close_all()
        assert reader is not None
        reader.drain()
        return self._size

    def _entry(self, h: Header, reader: Reader) -> None:
        name = self._clean(h.name)
        if not (0 <= h.uid < _NO_ID and 0 <= h.gid < _NO_ID):  # chown would read -1 as "keep"
            raise self._refuse(f"uid/gid {h.uid}/{h.gid} out of range")
        parent, _, base = name.rpartition(b"/")
        if name.startswith(WH_META) and name != WH_OPAQUE:
            return
        if base.startswith(WH_PREFIX):
            return self._whiteout(h, parent, base)
        if not name:
            return self._root_entry(h)
        pdir = self._lookup(parent, create=True)
        assert pdir is not None
        self._pin = pdir.fd
        kind = h.kind
        if kind == stat.S_IFREG:
            self._file(h, pdir, base, reader)
        elif kind == stat.S_IFDIR:
            self._directory(h, pdir, base)
        elif kind == stat.S_IFLNK:
            self._symlink(h, pdir, base)
        elif kind == HARDLINK:
            self._hardlink(h, pdir, base)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            self._node(h, pdir, base)
        else:
            raise self._refuse(f"unsupported entry type {kind:#o}")
        self._mark_upper(_join(pdir.real, base))

    # ---------------------------------------------------------------------------- entries
    def _file(self, h: Header, pdir: _Dir, base: bytes, reader: Reader) -> None:
        fd = self._create(pdir, base, lambda: os.open(base, _NEW_FILE, 0o600, dir_fd=pdir.fd))
        try:
            end = reader.write_data(fd)
            if end != h.size:  # sparse file ending in a hole (or a sparse map past the size)
                os.ftruncate(fd, h.size)
            os.fchown(fd, h.uid, h.gid)
            os.fchmod(fd, h.mode)
            self._set_xattrs(h, fd)
            os.utime(fd, ns=self._times(h))
        finally:
            os.close(fd)
        self._size += h.size

    def _directory(self, h: Header, pdir: _Dir, base: bytes) -> None:
        real = _join(pdir.real, base)
        opaque = False
        made = True  # False: a directory was there already (merge)
        try:
            os.mkdir(base, 0o700, dir_fd=pdir.fd)
            self._seen.add(real)
        except FileExistsError:
            st = os.stat(base, dir_fd=pdir.fd, follow_symlinks=False)
            made = not stat.S_ISDIR(st.st_mode)
            if made:
                # a dir replacing an overlay whiteout, or a non-dir this layer wrote over a
                # lower dir, must hide that dir's content, as REMOVE (which deleted it) does
                opaque = self._whiteouts is Whiteouts.OVERLAY and (
                    _is_whiteout_device(st) or self._lower_shows_dir(pdir.real, base))
                self._clear(pdir, base)
                os.mkdir(base, 0o700, dir_fd=pdir.fd)
                self._seen.add(real)
        d = self._walk(pdir, [base], create=False)
        assert d is not None
        os.fchown(d.fd, h.uid, h.gid)
        os.fchmod(d.fd, h.mode)
        if not made:  # a dir over a dir: its xattrs are the entry's, no others
            self._drop_xattrs(d.fd, {k for k, _ in h.xattrs})
        self._set_xattrs(h, d.fd)
        if opaque:
            self._make_opaque(d.fd, real)
        atime, mtime = self._times(h)
        self._dir_times[real] = (atime, mtime, os.fstat(d.fd).st_ino)

    def _root_entry(self, h: Header) -> None:
        if h.kind != stat.S_IFDIR:
            raise self._refuse("refusing to retype the layer root")
        os.fchown(self._root.fd, h.uid, h.gid)
        os.fchmod(self._root.fd, h.mode)
        self._set_xattrs(h, self._root.fd)
        atime, mtime = self._times(h)
        self._dir_times[b""] = (atime, mtime, os.fstat(self._root.fd).st_ino)

    def _symlink(self, h: Header, pdir: _Dir, base: bytes) -> None:
        if not h.link:
            raise self._refuse("symlink with an empty target")
        target = h.link
        self._create(pdir, base, lambda: os.symlink(target, base, dir_fd=pdir.fd))
        os.chown(base, h.uid, h.gid, dir_fd=pdir.fd, follow_symlinks=False)
        self._set_xattrs(h, lambda: _proc_path(pdir.fd, base))
        os.utime(base, ns=self._times(h), dir_fd=pdir.fd, follow_symlinks=False)

    def _node(self, h: Header, pdir: _Dir, base: bytes) -> None:
        device = os.makedev(h.devmajor, h.devminor) if h.kind != stat.S_IFIFO else 0
        try:
            self._create(pdir, base,
                         lambda: os.mknod(base, h.kind | 0o600, device, dir_fd=pdir.fd))
        except PermissionError:
            raise Unsupported(f"layer entry {self._shown()}: this process may not make device "
                              f"nodes") from None
        os.chown(base, h.uid, h.gid, dir_fd=pdir.fd, follow_symlinks=False)
        os.chmod(base, h.mode, dir_fd=pdir.fd, follow_symlinks=False)
        self._set_xattrs(h, lambda: _proc_path(pdir.fd, base))
        os.utime(base, ns=self._times(h), dir_fd=pdir.fd, follow_symlinks=False)

    def _hardlink(self, h: Header, pdir: _Dir, base: bytes) -> None:
        target = self._clean(h.link or b"")
        if not target:
            raise self._refuse("hardlink to the layer root")
        tparent, _, tbase = target.rpartition(b"/")
        tdir = self._lookup(tparent, create=False)
        if tdir is None:
            raise self._refuse(f"hardlink target {os.fsdecode(target)!r} not found")
        if _join(tdir.real, tbase) == _join(pdir.real, base):
            raise self._refuse("hardlink to itself")
        tfd = os.dup(tdir.fd)  # survives cache eviction while the destination is cleared
        try:
            if self._whiteouts is Whiteouts.OVERLAY:
                try:
                    tst = os.stat(tbase, dir_fd=tfd, follow_symlinks=False)
                    if _is_whiteout_device(tst):
                        raise self._refuse(f"hardlink target {os.fsdecode(target)!r} not found")
                except FileNotFoundError:  # a lower file: link to its copy, as a copy-up would
                    self._copy_up(_Dir(tfd, tdir.real), tbase)
            self._create(pdir, base, lambda: os.link(tbase, base, src_dir_fd=tfd,
                                                     dst_dir_fd=pdir.fd, follow_symlinks=False))
        except FileNotFoundError:
            raise self._refuse(f"hardlink target {os.fsdecode(target)!r} not found") from None
        except PermissionError:  # link(2) says EPERM for a directory
            raise self._refuse(f"hardlink target {os.fsdecode(target)!r} is a directory") from None
        finally:
            os.close(tfd)

    def _whiteout(self, h: Header, parent: bytes, base: bytes) -> None:
        overlay = self._whiteouts is Whiteouts.OVERLAY
        name = base[len(WH_PREFIX):]
        if name in (b"", b".", b".."):
            raise self._refuse("whiteout without a name")
        pdir = self._lookup(parent, create=False)
        if pdir is None:  # nothing there to delete
            return
        self._pin = pdir.fd
        if base == WH_OPAQUE:
            if overlay:
                self._make_opaque(pdir.fd, pdir.real)
            else:
                self._prune(pdir)
            return
        try:
            st = os.stat(name, dir_fd=pdir.fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if overlay:
            real = _join(pdir.real, name)
            if st is not None and real not in self._upper:  # copied up, not written: as lower
                self._clear(pdir, name)
                self._copied.discard(real)
                st = None
            if st is None:
                if self._lower_find(pdir.real, name) is None:
                    return  # nothing below to hide
                os.mknod(name, stat.S_IFCHR, 0, dir_fd=pdir.fd)
                os.chown(name, h.uid, h.gid, dir_fd=pdir.fd, follow_symlinks=False)
            elif stat.S_ISDIR(st.st_mode):  # this layer wrote into it: keep that, hide lower
                d = self._walk(pdir, [name], create=False)
                assert d is not None
                self._make_opaque(d.fd, d.real)
            return  # a non-dir this layer wrote hides the lower one already
        if st is None:
            return
        real = _join(pdir.real, name)
        if real not in self._upper:
            self._clear(pdir, name)
        elif stat.S_ISDIR(st.st_mode):  # this layer wrote into it: remove only the lower rest
            d = self._walk(pdir, [name], create=False)
            assert d is not None
            self._prune(d)

    # ------------------------------------------------------------------- entry helpers
    def _create(self, pdir: _Dir, base: bytes, make: Callable[[], int | None]) -> int | None:
        """Run ``make`` (which creates ``base`` in ``pdir`` exclusively); if something is there
        already, remove it (the tree, for a directory) and run ``make`` again."""
        try:
            return make()
        except FileExistsError:
            self._clear(pdir, base)
            return make()

    def _clear(self, pdir: _Dir, name: bytes) -> None:
        """Remove ``name`` in ``pdir`` whatever it is, never following a link."""
        try:
            os.unlink(name, dir_fd=pdir.fd)
        except FileNotFoundError:
            return
        except IsADirectoryError:
            _rmtree(pdir.fd, name)
            self._forget(_join(pdir.real, name))
            return
        self._alias.clear()  # it may have been a symlink that a cached lookup went through

    def _prune(self, top: _Dir) -> None:
        """REMOVE: empty ``top`` of everything this layer did not write, keeping this layer's
        entries (and descending into this layer's directories to prune them too)."""
        todo = [top.real]
        while todo:
            real = todo.pop()
            d = top if real == top.real else self._lookup(real, create=False)
            if d is None:
                continue
            with os.scandir(d.fd) as it:
                children = [(os.fsencode(e.name), e.is_dir(follow_symlinks=False)) for e in it]
            for name, is_dir in children:
                child = _join(real, name)
                if child in self._upper:
                    if is_dir:
                        todo.append(child)
                elif is_dir:
                    _rmtree(d.fd, name)
                    self._forget(child)
                else:
                    os.unlink(name, dir_fd=d.fd)
                    self._alias.clear()

    def _mark_upper(self, real: bytes) -> None:
        upper = self._upper
        while real and real not in upper:
            upper.add(real)
            real = real.rpartition(b"/")[0]

    def _times(self, h: Header) -> tuple[int, int]:
        return (h.atime_ns if h.atime_ns is not None else h.mtime_ns), h.mtime_ns

    def _set_xattrs(self, h: Header, target: int | bytes | Callable[[], bytes]) -> None:
        if not h.xattrs:
            return
        if callable(target):
            target = target()
        for key, value in h.xattrs:
            if key.startswith(b"trusted.overlay."):
                continue
            if not key.startswith(_XATTR_ALLOWED) or key in _XATTR_ALLOWED[:3]:
                raise self._refuse(f"xattr {os.fsdecode(key)!r} is not a user, trusted, "
                                   f"security or POSIX ACL xattr")
            self._setxattr(target, key, value)

    def _setxattr(self, target: int | bytes, key: bytes, value: bytes) -> None:
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise Unsupported(f"layer entry {self._shown()}: this filesystem cannot hold "
                                  f"xattr {os.fsdecode(key)!r}") from None
            raise

    def _finish_times(self) -> None:
        """Set directory times last (writing children changed them), deepest first: the tar's
        times for dirs it names, the original times for dirs that existed before."""
        self._pin = -1
        times = dict(self._saved_times)
        times.update(self._dir_times)
        for real in sorted(times, key=lambda r: r.count(b"/"), reverse=True):
            atime, mtime, ino = times[real]
            try:
                d = self._lookup(real, create=False)
            except InvalidInput:  # a later entry made a file of it (or of a parent)
                continue
            if d is None:
                continue
            st = os.fstat(d.fd)
            if st.st_ino == ino and stat.S_ISDIR(st.st_mode):  # still the dir we meant
                os.utime(d.fd, ns=(atime, mtime))

    # -------------------------------------------------------------------- scoped lookup
    def _clean(self, raw: bytes) -> bytes:
        """Normalise a tar name: relative, no empty or '.' components; refuse '..'."""
        parts = [p for p in raw.split(b"/") if p and p != b"."]
        if b".." in parts:
            raise self._refuse("'..' in path")
        return b"/".join(parts)

    def _lookup(self, path: bytes, create: bool) -> _Dir | None:
        """The directory that normalised ``path`` names, resolved inside root as if root were
        '/'; missing directories are made when ``create`` (else None). The fd is borrowed from
        the cache: use it before the next lookup (the current entry's parent is pinned)."""
        if not path:
            return self._root
        real = self._alias.get(path)
        if real is not None:
            fd = self._fds.get(real)
            if fd is not None:
                self._fds.move_to_end(real)
                return _Dir(fd, real)
        d = self._walk(self._root, path.split(b"/"), create)
        if d is not None:
            self._alias[path] = d.real
        return d

    def _walk(self, start: _Dir, parts: list[bytes], create: bool) -> _Dir | None:
        """Step from ``start`` through ``parts`` one component at a time with O_NOFOLLOW; a
        symlink's target is pushed in its place (absolute ones restart at root), '..' goes to
        the real parent and stops at root."""
        todo = parts[::-1]
        cur = start
        hops = 0
        while todo:
            part = todo.pop()
            if part in (b"", b"."):
                continue
            if part == b"..":
                cur = self._real_dir(cur.real.rpartition(b"/")[0])
                continue
            real = _join(cur.real, part)
            fd = self._fds.get(real)
            if fd is not None:
                self._fds.move_to_end(real)
                cur = _Dir(fd, real)
                continue
            got = self._open_child(cur, part, real, create)
            if got is None:
                return None
            if isinstance(got, bytes):  # a symlink: resolve its target in its place, scoped
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise self._refuse("too many levels of symbolic links in its parent")
                if got.startswith(b"/"):
                    cur = self._root
                todo.extend(reversed(got.split(b"/")))
                continue
            cur = self._remember(real, got)
        return cur

    def _open_child(self, cur: _Dir, part: bytes, real: bytes, create: bool) -> int | bytes | None:
        """fd of directory ``part`` in ``cur``; its target if it is a symlink; None if missing
        (and not ``create``). Anything else there is refused."""
        try:
            fd = os.open(part, _DIR_FLAGS, dir_fd=cur.fd)
        except FileNotFoundError:
            if self._lower:
                return self._lower_child(cur, part, real, create)
            if not create:
                return None
            return self._new_dir(cur, part, real)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = os.stat(part, dir_fd=cur.fd, follow_symlinks=False)
            if self._whiteouts is Whiteouts.OVERLAY and _is_whiteout_device(st):
                if not create:  # this layer whited it out: nothing is there
                    return None
                os.unlink(part, dir_fd=cur.fd)  # a dir where a whiteout was: hides the lower
                fd = self._new_dir(cur, part, real)
                self._make_opaque(fd, real)
                return fd
            if not stat.S_ISLNK(st.st_mode):
                raise self._refuse(f"parent {os.fsdecode(real)!r} is not a directory") from None
            target = os.readlink(part, dir_fd=cur.fd)
            if not target:
                raise self._refuse(f"parent {os.fsdecode(real)!r} is an empty symlink") from None
            return target
        if real not in self._seen:
            self._save_times(_Dir(fd, real), os.fstat(fd))
        return fd

    def _new_dir(self, cur: _Dir, part: bytes, real: bytes) -> int:
        """An implicit parent nothing below shows: 0755, root-owned."""
        os.mkdir(part, 0o755, dir_fd=cur.fd)
        fd = os.open(part, _DIR_FLAGS, dir_fd=cur.fd)
        os.fchown(fd, 0, 0)  # not the group a setgid parent would hand down
        os.fchmod(fd, 0o755)  # whatever the umask
        self._seen.add(real)
        return fd

    def _lower_child(self, cur: _Dir, part: bytes, real: bytes, create: bool) -> int | bytes | None:
        """OVERLAY: ``part`` is not in the upper; what the layers below show decides. A lower
        dir is copied up (mode, owner, xattrs, times: the kernel's copy-up), a lower symlink is
        followed (its target), a lower non-dir is refused as with REMOVE, nothing is made
        fresh (``create``) or None."""
        found = self._lower_find(cur.real, part)
        if found is None:
            return self._new_dir(cur, part, real) if create else None
        st = found.st
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(found.path)
            if not target:
                raise self._refuse(f"parent {os.fsdecode(real)!r} is an empty symlink")
            return target
        if not stat.S_ISDIR(st.st_mode):
            raise self._refuse(f"parent {os.fsdecode(real)!r} is not a directory")
        os.mkdir(part, 0o700, dir_fd=cur.fd)
        fd = os.open(part, _DIR_FLAGS, dir_fd=cur.fd)
        os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        copy_xattrs(found.path, fd)
        self._seen.add(real)
        self._copied.add(real)
        self._saved_times[real] = (st.st_atime_ns, st.st_mtime_ns, os.fstat(fd).st_ino)
        return fd

    def _copy_up(self, pdir: _Dir, base: bytes) -> bool:
        """OVERLAY: copy the non-directory the lower layers show at ``base`` in ``pdir`` into the
        upper (data, mode, owner, xattrs, times), for a hardlink to name it; False if they show
        none there."""
        found = self._lower_find(pdir.real, base)
        if found is None or stat.S_ISDIR(found.st.st_mode):
            return False
        self._copy_node(pdir, base, found)
        self._copied.add(_join(pdir.real, base))
        if found.st.st_nlink > 1:
            self._copy_links(_join(pdir.real, base), found)
        return True

    def _copy_links(self, copy: bytes, found: Found) -> None:
        """The lower inode just copied up to ``copy`` has other names in its layer: those the
        merged view still shows are linked to the copy too, so the hardlink group stays whole
        (the walk of that one layer happens only for a hardlinked copy-up)."""
        ino, dev = found.st.st_ino, found.st.st_dev
        names: list[bytes] = []
        for top, dirs, files in os.walk(found.layer):
            for n in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
                full = os.path.join(top, n)
                st = os.lstat(full)
                if st.st_ino == ino and st.st_dev == dev:
                    names.append(os.path.relpath(full, found.layer))
        for name in names:
            if name == copy:
                continue
            parent, _, base = name.rpartition(b"/")
            pdir = self._lookup(parent, create=False)
            if pdir is None or pdir.real != parent:
                continue  # not where the merged view has it
            try:
                os.stat(base, dir_fd=pdir.fd, follow_symlinks=False)
                continue  # this layer put something there
            except FileNotFoundError:
                pass
            f = self._lower_find(parent, base)
            if f is None or f.st.st_ino != ino or f.st.st_dev != dev:
                continue  # hidden by a layer in between
            cparent, _, cbase = copy.rpartition(b"/")
            cdir = os.dup(self._real_dir(cparent).fd)
            try:
                os.link(cbase, base, src_dir_fd=cdir, dst_dir_fd=pdir.fd, follow_symlinks=False)
            finally:
                os.close(cdir)
            self._copied.add(name)

    def _copy_node(self, pdir: _Dir, base: bytes, found: Found) -> None:
        """Make a copy of the lower non-directory ``found`` at ``base`` in ``pdir``."""
        st, src = found.st, found.path
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFREG:
            fd = os.open(base, _NEW_FILE, 0o600, dir_fd=pdir.fd)
            try:
                copy_data(src, fd)
                os.fchown(fd, st.st_uid, st.st_gid)
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                copy_xattrs(src, fd)
                os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(fd)
            return
        if kind == stat.S_IFLNK:
            os.symlink(os.readlink(src), base, dir_fd=pdir.fd)
        else:
            os.mknod(base, kind | 0o600, st.st_rdev, dir_fd=pdir.fd)
        os.chown(base, st.st_uid, st.st_gid, dir_fd=pdir.fd, follow_symlinks=False)
        if kind != stat.S_IFLNK:
            os.chmod(base, stat.S_IMODE(st.st_mode), dir_fd=pdir.fd, follow_symlinks=False)
        copy_xattrs(src, _proc_path(pdir.fd, base))
        os.utime(base, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=pdir.fd,
                 follow_symlinks=False)

    def _make_opaque(self, fd: int, real: bytes) -> None:
        """OVERLAY: directory ``real`` hides what the layers below have there, including what
        was copied up from them into it (only this layer's own entries stay)."""
        self._setxattr(fd, OPAQUE_XATTR, b"y")
        self._opaque.add(real)
        under = real + b"/" if real else b""
        for path in sorted((p for p in self._copied if p.startswith(under)), key=len):
            if path not in self._copied:
                continue  # went with a copied dir above it
            self._copied.discard(path)
            if path in self._upper:
                continue
            parent, _, name = path.rpartition(b"/")
            pdir = self._lookup(parent, create=False)
            if pdir is not None:
                self._clear(pdir, name)
            below = path + b"/"
            self._copied -= {p for p in self._copied if p.startswith(below)}

    def _lower_find(self, parent: bytes, name: bytes) -> Found | None:
        """What the layers below show at ``name`` in ``parent``, unless an upper dir on the way
        is opaque (then: nothing)."""
        if not self._lower:
            return None
        p = parent
        while True:
            if p in self._opaque:
                return None
            if not p:
                break
            p = p.rpartition(b"/")[0]
        return self._lower.find(parent, name)

    def _lower_shows_dir(self, parent: bytes, name: bytes) -> bool:
        found = self._lower_find(parent, name)
        return found is not None and stat.S_ISDIR(found.st.st_mode)

    def _drop_xattrs(self, fd: int, keep: set[bytes]) -> None:
        for key in os.listxattr(fd):
            k = os.fsencode(key)
            if k not in keep and not k.startswith(b"trusted.overlay."):
                os.removexattr(fd, k)

    def _real_dir(self, real: bytes) -> _Dir:
        """The dir at a symlink-free path (from the cache, or walked again from root)."""
        if not real:
            return self._root
        fd = self._fds.get(real)
        if fd is not None:
            return _Dir(fd, real)
        d = self._walk(self._root, real.split(b"/"), create=False)
        if d is None:
            raise self._refuse(f"parent {os.fsdecode(real)!r} vanished while resolving")
        return d

    def _remember(self, real: bytes, fd: int) -> _Dir:
        fds = self._fds
        fds[real] = fd
        while len(fds) > _MAX_DIR_FDS:
            old, old_fd = fds.popitem(last=False)
            if old_fd == self._pin:
                fds[old] = old_fd  # back to the young end
                continue
            os.close(old_fd)
        return _Dir(fd, real)

    def _save_times(self, d: _Dir, st: os.stat_result) -> None:
        self._seen.add(d.real)
        self._saved_times[d.real] = (st.st_atime_ns, st.st_mtime_ns, st.st_ino)

    def _forget(self, removed: bytes) -> None:
        """Directory ``removed`` is gone: close the cached fds at or under it, and drop every
        alias (one may have gone through it). Other cached fds stay right: their keys are real
        paths, which no removal elsewhere changes."""
        self._alias.clear()
        under = removed + b"/"
        for real in [r for r in self._fds if r == removed or r.startswith(under)]:
            os.close(self._fds.pop(real))

    def _close_all(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._alias.clear()
        if self._root.fd >= 0:
            os.close(self._root.fd)
            self._root = _Dir(-1, b"")

    # --------------------------------------------------------------------------- errors
    def _shown(self) -> str:
        return repr(os.fsdecode(self._entry_name))

    def _refuse(self, why: str) -> InvalidInput:
        return InvalidInput(f"layer entry {self._shown()}: {why}")

    def _os_error(self, e: OSError) -> Exception:
        if e.errno in _ENVIRONMENT:
            return e
        return self._refuse(e.strerror or str(e))


class TarApplierPy(TarApplier):
    """``TarApplier`` over the stdlib ``tarfile`` stream parser: the pure-Python twin (no
    libarchive needed, slower on data; the same tests run on both)."""

    def _open_reader(self, stream: BinaryIO) -> Reader:
        return TarfileReader(stream)


def _is_whiteout_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _proc_path(dir_fd: int, name: bytes) -> bytes:
    """A path to ``name`` in an open dir for the calls that have no *at form (lsetxattr)."""
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


def _rmtree(parent_fd: int, name: bytes) -> None:
    """Remove directory ``name`` in ``parent_fd`` and everything beneath, by fd, never following
    a link, without recursion (hostile trees may be thousands deep) and with one dir fd open."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    stack: list[tuple[bytes, list[bytes]]] = [(name, [os.fsencode(n) for n in os.listdir(fd)])]
    try:
        while stack:
            dname, names = stack[-1]
            if names:
                child = names.pop()
                try:
                    os.unlink(child, dir_fd=fd)
                except IsADirectoryError:
                    sub = os.open(child, _DIR_FLAGS, dir_fd=fd)
                    os.close(fd)
                    fd = sub
                    stack.append((child, [os.fsencode(n) for n in os.listdir(fd)]))
                continue
            stack.pop()
            if stack:
                up = os.open(b"..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = up
                os.rmdir(dname, dir_fd=fd)
            else:
                os.close(fd)
                fd = -1
                os.rmdir(dname, dir_fd=parent_fd)
    finally:
        if fd >= 0:
            os.close(fd)
