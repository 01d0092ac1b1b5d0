"""A power-cut simulator: a FUSE pass-through filesystem that tracks which of the writes it
passes through are *durable* by POSIX rules, and on a "power cut" keeps only those.

Why FUSE and not a replayed operation log: the kernel here has no device-mapper (no dm-flakey,
no dm-log-writes); an op log replayed in prefixes (ALICE, CrashMonkey) needs a recorder (strace or
this same FUSE layer) *and* a replayer that re-implements every call's semantics. A pass-through
that keeps a durable shadow of the tree needs only the second half once: the live tree is the
real backing directory (so lamina sees real filesystem semantics, errors included), and the
durable state is a small model beside it, advanced only by the calls that make things durable.

The model (strict POSIX, what ext4/xfs guarantee at the least):

- A file's data and metadata (mode, owner, times, xattrs) become durable at ``fsync``/``fdatasync``
  of that file; until then the durable version is what it was at the last one (a file never synced
  is durable as an *empty* file once its name is: moby's zero-length files after power loss).
- A name (create, mkdir, link, symlink, rename, unlink, rmdir) becomes durable when its directory
  is fsynced: the directory's whole entry list is taken as durable at that moment. A new
  subdirectory is durable empty until it is fsynced itself. A symlink's target is durable with it.
- ``syncfs``/``sync`` make everything durable. The kernel sends a FUSE server nothing for
  ``syncfs(2)`` (FUSE_SYNCFS exists since Linux 5.15 but is only enabled for virtiofs, and pyfuse3
  has no handler for it): see ``harness.SYNCFS_XATTR`` for how lamina's one syncfs path is observed.
- Anything else (rename without a directory fsync, writes without fsync, the ``-shm`` file of
  SQLite that is only mmapped) is lost at a cut.

Durable state per inode (backing ``st_ino``; the backing is a tmpfs, whose inode numbers are never
reused): a ``Record`` with, for a directory, its durable entries; for a file, where its durable
bytes are (``LIVE``: the backing file still holds exactly them; a shadow copy taken before the
first write after the durable moment; ``EMPTY``); for a symlink, the target. Copy-on-write keeps
fsync cheap: a sync sets ``LIVE`` and drops the shadow; a write, truncate, or the removal of the
last name of a ``LIVE`` file first copies the durable bytes aside.

Control (from the test, through extended attributes on any node, so each request is ordered with
lamina's own): ``user.powercut.cut_at`` (cut before the Nth mutating request from now; 0: never),
``user.powercut.syncfs`` (a syncfs happened), ``user.powercut.materialize`` (write the durable
tree to the given path), and ``user.powercut.status`` (read: JSON with the request counts and
whether the cut happened), ``user.powercut.kill_pgid`` (SIGKILL this process group at the cut). After a cut every request fails with EIO: the machine is off.

Run: ``python -m tests.powercut.simfs BACKING MOUNTPOINT SHADOW READY_FD``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import stat
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
from pyfuse3 import FUSEError

CONTROL = b"user.powercut."
LIVE = "live"
EMPTY = "empty"
_AT_EMPTY_PATH = 0x1000
_AT_SYMLINK_NOFOLLOW = 0x100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


@dataclass
class Record:
    """The durable version of one inode."""

    kind: str  # "dir", "file", "symlink", "other" (devices, fifos, sockets)
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    rdev: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    entries: dict[bytes, int] = field(default_factory=dict)  # dirs: name -> ino
    data: str = EMPTY  # files: LIVE, EMPTY or a shadow path
    target: bytes = b""  # symlinks


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _errno(e: OSError) -> FUSEError:
    return FUSEError(e.errno or errno.EIO)


class SimFS(pyfuse3.Operations):
    """Pass-through to ``backing`` with a durable model (see the module docstring)."""

    supports_dot_lookup = False

    def __init__(self, backing: str, shadow: str) -> None:
        super().__init__()
        self.backing = backing
        self.shadow = shadow
        os.makedirs(shadow, exist_ok=True)
        st = os.lstat(backing)
        self.root_ino = st.st_ino
        self.fds: dict[int, int] = {self.root_ino: os.open(backing, os.O_PATH)}  # ino -> O_PATH fd
        self.lookups: Counter[int] = Counter()
        self.fh_ino: dict[int, int] = {}  # open file/dir handle -> ino
        self.records: dict[int, Record] = {}
        self.ops: Counter[str] = Counter()  # mutating requests by kind, since mount
        self.count = 0  # mutating requests since cut_at was set
        self.cut_at = 0
        self.cut = False
        self.cut_op = ""
        self.kill_pgid = 0
        self.shadow_seq = 0
        self.sync_all()  # what is there at mount is durable (the test synced it)

    # ---- inode numbers -------------------------------------------------------------------
    def _ino(self, fuse_ino: int) -> int:
        return self.root_ino if fuse_ino == pyfuse3.ROOT_INODE else fuse_ino

    def _fuse(self, ino: int) -> int:
        return pyfuse3.ROOT_INODE if ino == self.root_ino else ino

    def _fd(self, fuse_ino: int) -> int:
        try:
            return self.fds[self._ino(fuse_ino)]
        except KeyError:
            raise FUSEError(errno.ESTALE) from None

    def _proc(self, fuse_ino: int) -> str:
        return f"/proc/self/fd/{self._fd(fuse_ino)}"

    def _attrs(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = self._fuse(st.st_ino)
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size", "st_blksize",
                     "st_blocks", "st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
            setattr(e, name, getattr(st, name))
        e.generation = 0
        e.entry_timeout = 10
        e.attr_timeout = 10
        return e

    def _remember(self, parent_fd: int, name: bytes) -> pyfuse3.EntryAttributes:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if st.st_ino not in self.fds:
            self.fds[st.st_ino] = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=parent_fd)
        self.lookups[st.st_ino] += 1
        return self._attrs(st)

    # ---- the durable model ---------------------------------------------------------------
    def _mutating(self, what: str) -> None:
        """Count a mutating request; the cut happens before the ``cut_at``-th one is applied."""
        if self.cut:
            raise FUSEError(errno.EIO)
        self.count += 1
        if self.cut_at and self.count >= self.cut_at:
            self.cut = True
            self.cut_op = what
            if self.kill_pgid:  # the machine stops here: lamina runs no error path
                with _suppress():
                    os.killpg(self.kill_pgid, 9)
            raise FUSEError(errno.EIO)
        self.ops[what] += 1

    def _alive(self) -> None:
        if self.cut:
            raise FUSEError(errno.EIO)

    def _record_of(self, path: str | int, st: os.stat_result | None = None, *, dir_fd: int | None = None,
                   name: bytes | None = None) -> Record:
        """A new record describing the inode as it is now (data ``LIVE`` for files)."""
        if st is None:
            st = os.fstat(path) if isinstance(path, int) else os.lstat(path)
        kind = _kind(st.st_mode)
        rec = Record(kind, stat.S_IMODE(st.st_mode) | stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid,
                     st.st_atime_ns, st.st_mtime_ns, st.st_rdev)
        if kind == "file":
            rec.data = LIVE
        if kind == "symlink":
            rec.target = os.readlink(name, dir_fd=dir_fd) if name is not None else os.readlink(path)  # type: ignore[arg-type]
        elif kind in ("file", "dir") and not isinstance(path, int):
            with _suppress():
                for x in os.listxattr(path):  # files and dirs only: following is right
                    rec.xattrs[x] = os.getxattr(path, x)
        return rec

    def _drop_shadow(self, rec: Record | None) -> None:
        if rec is not None and rec.data not in (LIVE, EMPTY):
            with _suppress():
                os.unlink(rec.data)

    def _preserve(self, ino: int) -> None:
        """Before the backing file ``ino`` changes or loses its last name: keep its durable bytes."""
        rec = self.records.get(ino)
        if rec is None or rec.kind != "file" or rec.data != LIVE:
            return
        self.shadow_seq += 1
        dst = os.path.join(self.shadow, f"{ino}-{self.shadow_seq}")
        src = os.open(f"/proc/self/fd/{self.fds[ino]}", os.O_RDONLY) if ino in self.fds else None
        if src is None:
            raise FUSEError(errno.EIO)  # cannot happen: a written or unlinked inode was looked up
        try:
            with open(dst, "wb") as out:
                shutil.copyfileobj(os.fdopen(os.dup(src), "rb"), out, 1 << 20)
        finally:
            os.close(src)
        rec.data = dst

    def _sync_file(self, ino: int) -> None:
        old = self.records.get(ino)
        fd = self.fds[ino]
        rec = self._record_of(f"/proc/self/fd/{fd}", os.fstat(fd))
        if old is not None and old.kind == "dir":
            rec.entries = old.entries
        self._drop_shadow(old)
        self.records[ino] = rec

    def _sync_dir(self, ino: int) -> None:
        """fsyncdir: the entry list is durable now; inodes it names that have no record yet are
        durable as they are (a file: empty; a directory: with no entries)."""
        fd = self.fds[ino]
        entries: dict[bytes, int] = {}
        dfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in os.listdir(dfd):
                n = os.fsencode(name)
                st = os.stat(n, dir_fd=dfd, follow_symlinks=False)
                entries[n] = st.st_ino
                if st.st_ino not in self.records:
                    rec = self._record_of(os.path.join(f"/proc/self/fd/{dfd}", name), st, dir_fd=dfd, name=n)
                    if rec.kind == "file":
                        rec.data = EMPTY
                    self.records[st.st_ino] = rec
        finally:
            os.close(dfd)
        rec = self.records.get(ino)
        if rec is None:
            rec = self._record_of(f"/proc/self/fd/{fd}", os.fstat(fd))
            self.records[ino] = rec
        rec.entries = entries

    def sync_all(self) -> None:
        """syncfs: the whole live tree is durable; records of unreachable inodes are dropped."""
        old = self.records
        self.records = {}
        for dirpath, dirnames, filenames in os.walk(self.backing):
            dst = os.lstat(dirpath)
            rec = self._record_of(dirpath, dst)
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                rec.entries[os.fsencode(name)] = st.st_ino
                # not "name in filenames": os.walk lists a symlink to a directory in dirnames
                if not stat.S_ISDIR(st.st_mode) and st.st_ino not in self.records:
                    self.records[st.st_ino] = self._record_of(p, st)
            self.records[dst.st_ino] = rec
        for r in old.values():
            self._drop_shadow(r)

    def materialize(self, dest: str) -> dict[str, int]:
        """Write the durable tree to ``dest`` (a new directory): what a reboot would find."""
        done: dict[int, str] = {}
        counts: Counter[str] = Counter()
        root = self.records[self.root_ino]
        os.mkdir(dest)
        self._apply_meta(dest, root)
        stack = [(dest, root)]
        dirs_meta: list[tuple[str, Record]] = [(dest, root)]
        while stack:
            path, rec = stack.pop()
            for name, ino in sorted(rec.entries.items()):
                child = self.records.get(ino)
                p = os.path.join(path, os.fsdecode(name))
                if child is None:  # a durable entry's inode gets its record with it: a model bug
                    raise RuntimeError(f"simfs: durable entry {p} has no record (inode {ino})")
                if ino in done and child.kind != "dir":
                    os.link(done[ino], p, follow_symlinks=False)
                    continue
                done[ino] = p
                counts[child.kind] += 1
                if child.kind == "dir":
                    os.mkdir(p)
                    stack.append((p, child))
                    dirs_meta.append((p, child))
                elif child.kind == "symlink":
                    os.symlink(child.target, p)
                    os.lchown(p, child.uid, child.gid)
                elif child.kind == "other":
                    os.mknod(p, child.mode, child.rdev)
                    self._apply_meta(p, child)
                else:
                    if child.data == LIVE:
                        shutil.copyfile(f"/proc/self/fd/{self.fds[ino]}" if ino in self.fds
                                        else self._find_live(ino), p, follow_symlinks=True)
                    elif child.data == EMPTY:
                        open(p, "wb").close()
                        counts["empty-file"] += 1
                    else:
                        shutil.copyfile(child.data, p)
                    self._apply_meta(p, child)
        for p, rec in reversed(dirs_meta):
            self._apply_meta(p, rec)
        return dict(counts)

    def _find_live(self, ino: int) -> str:
        for dirpath, _dirs, files in os.walk(self.backing):
            for f in files:
                p = os.path.join(dirpath, f)
                if os.lstat(p).st_ino == ino:
                    return p
        raise FileNotFoundError(f"live inode {ino}")

    @staticmethod
    def _apply_meta(p: str, rec: Record) -> None:
        for k, v in rec.xattrs.items():
            with _suppress():
                os.setxattr(p, k, v)
        os.chown(p, rec.uid, rec.gid)
        os.chmod(p, stat.S_IMODE(rec.mode))
        os.utime(p, ns=(rec.atime_ns, rec.mtime_ns))

    # ---- control -------------------------------------------------------------------------
    def _control(self, name: bytes, value: bytes) -> None:
        what = name[len(CONTROL):]
        if what == b"cut_at":
            self.cut_at = int(value)
            self.count = 0
        elif what == b"kill_pgid":
            self.kill_pgid = int(value)
        elif what == b"syncfs":
            self._mutating("syncfs")
            self.sync_all()
        elif what == b"materialize":
            self.last_materialized = self.materialize(os.fsdecode(value))
        else:
            raise FUSEError(errno.EINVAL)

    def _status(self) -> bytes:
        return json.dumps({"cut": self.cut, "cut_op": self.cut_op, "count": self.count, "ops": dict(self.ops),
                           "materialized": getattr(self, "last_materialized", None)}).encode()

    # ---- requests ------------------------------------------------------------------------
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        self._alive()
        try:
            return self._remember(self._fd(parent_inode), name)
        except OSError as e:
            raise _errno(e) from None

    async def forget(self, inode_list: Any) -> None:
        for fuse_ino, n in inode_list:
            ino = self._ino(fuse_ino)
            self.lookups[ino] -= n
            if self.lookups[ino] <= 0 and ino != self.root_ino:
                del self.lookups[ino]
                fd = self.fds.pop(ino, None)
                if fd is not None:
                    os.close(fd)

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if inode != pyfuse3.ROOT_INODE:  # the root stays readable, so the control channel works after a cut
            self._alive()
        try:
            return self._attrs(os.fstat(self._fd(inode)))
        except OSError as e:
            raise _errno(e) from None

    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        self._mutating("setattr")
        ino = self._ino(inode)
        fd = self._fd(inode)
        try:
            st = os.fstat(fd)
            is_link = stat.S_ISLNK(st.st_mode)
            if fields.update_size:
                self._preserve(ino)
                if fh is not None:
                    os.ftruncate(fh, attr.st_size)
                else:
                    os.truncate(f"/proc/self/fd/{fd}", attr.st_size)
            if fields.update_mode and not is_link:
                os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(attr.st_mode))
            if fields.update_uid or fields.update_gid:
                uid = attr.st_uid if fields.update_uid else -1
                gid = attr.st_gid if fields.update_gid else -1
                if _libc.fchownat(fd, b"", uid, gid, _AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            if fields.update_atime or fields.update_mtime:
                a = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
                m = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
                if not is_link:
                    os.utime(f"/proc/self/fd/{fd}", ns=(a, m))
            return self._attrs(os.fstat(fd))
        except OSError as e:
            raise _errno(e) from None

    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        self._alive()
        try:
            return os.readlink(b"", dir_fd=self._fd(inode))
        except OSError as e:
            raise _errno(e) from None

    async def opendir(self, inode: int, ctx: Any = None) -> int:
        self._alive()
        return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        self._alive()
        fd = self._fd(fh)
        try:
            dfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY)
            try:
                names = sorted(os.listdir(dfd))
            finally:
                os.close(dfd)
            for i, name in enumerate(names[start_id:], start_id + 1):
                n = os.fsencode(name)
                try:
                    st = os.stat(n, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not pyfuse3.readdir_reply(token, n, self._attrs(st), i):
                    return
                if st.st_ino not in self.fds:
                    self.fds[st.st_ino] = os.open(n, os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
                self.lookups[st.st_ino] += 1
        except OSError as e:
            raise _errno(e) from None

    async def releasedir(self, fh: int) -> None:
        pass

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self._mutating("fsyncdir")
        self._sync_dir(self._ino(fh))

    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        self._alive()
        sv = os.statvfs(self.backing)
        d = pyfuse3.StatvfsData()
        for a in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
                  "f_favail", "f_namemax"):
            setattr(d, a, getattr(sv, a))
        return d

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        self._mutating("mkdir")
        pfd = self._fd(parent_inode)
        try:
            os.mkdir(name, stat.S_IMODE(mode), dir_fd=pfd)
            self._own(pfd, name, ctx)
            return self._new(pfd, name)
        except OSError as e:
            raise _errno(e) from None

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> pyfuse3.EntryAttributes:
        self._mutating("mknod")
        pfd = self._fd(parent_inode)
        try:
            os.mknod(name, mode, rdev, dir_fd=pfd)
            self._own(pfd, name, ctx)
            return self._new(pfd, name)
        except OSError as e:
            raise _errno(e) from None

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        self._mutating("symlink")
        pfd = self._fd(parent_inode)
        try:
            os.symlink(target, name, dir_fd=pfd)
            self._own(pfd, name, ctx)
            return self._new(pfd, name)
        except OSError as e:
            raise _errno(e) from None

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any) -> tuple[Any, Any]:
        self._mutating("create")
        pfd = self._fd(parent_inode)
        try:
            fh = os.open(name, (flags | os.O_CREAT) & ~os.O_NOFOLLOW, stat.S_IMODE(mode), dir_fd=pfd)
            self._own(pfd, name, ctx)
            attrs = self._new(pfd, name)
        except OSError as e:
            raise _errno(e) from None
        self.fh_ino[fh] = attrs.st_ino if attrs.st_ino != pyfuse3.ROOT_INODE else self.root_ino
        return pyfuse3.FileInfo(fh=fh), attrs

    def _own(self, pfd: int, name: bytes, ctx: Any) -> None:
        if ctx is not None and (ctx.uid != 0 or ctx.gid != 0):
            os.chown(name, ctx.uid, ctx.gid, dir_fd=pfd, follow_symlinks=False)

    def _new(self, pfd: int, name: bytes) -> pyfuse3.EntryAttributes:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        stale = self.records.pop(st.st_ino, None)
        if stale is not None:  # the backing reused an inode number: the model would be wrong
            print(f"simfs: inode {st.st_ino} reused by the backing filesystem", file=sys.stderr)
            raise FUSEError(errno.EIO)
        return self._remember(pfd, name)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        self._mutating("link")
        pfd = self._fd(new_parent_inode)
        try:
            os.link(self._proc(inode), new_name, dst_dir_fd=pfd, follow_symlinks=True)
            return self._remember(pfd, new_name)
        except OSError as e:
            raise _errno(e) from None

    def _before_last_name_goes(self, pfd: int, name: bytes) -> None:
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            if st.st_ino not in self.fds:
                self.fds[st.st_ino] = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=pfd)
                self._preserve(st.st_ino)
                os.close(self.fds.pop(st.st_ino))
            else:
                self._preserve(st.st_ino)

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self._mutating("unlink")
        pfd = self._fd(parent_inode)
        try:
            self._before_last_name_goes(pfd, name)
            os.unlink(name, dir_fd=pfd)
        except OSError as e:
            raise _errno(e) from None

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self._mutating("rmdir")
        try:
            os.rmdir(name, dir_fd=self._fd(parent_inode))
        except OSError as e:
            raise _errno(e) from None

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: Any) -> None:
        self._mutating("rename")
        old, new = self._fd(parent_inode_old), self._fd(parent_inode_new)
        try:
            if not flags:
                self._before_last_name_goes(new, name_new)
            if _libc.renameat2(old, name_old, new, name_new, flags) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        except OSError as e:
            raise _errno(e) from None

    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        self._alive()
        ino = self._ino(inode)
        try:
            if flags & os.O_TRUNC:
                self._mutating("truncate")
                self._preserve(ino)
            fh = os.open(self._proc(inode), flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW))
        except OSError as e:
            raise _errno(e) from None
        self.fh_ino[fh] = ino
        return pyfuse3.FileInfo(fh=fh)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        self._alive()
        try:
            return os.pread(fh, size, off)
        except OSError as e:
            raise _errno(e) from None

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._mutating("write")
        self._preserve(self.fh_ino[fh])
        try:
            return os.pwrite(fh, buf, off)
        except OSError as e:
            raise _errno(e) from None

    async def flush(self, fh: int) -> None:
        pass

    async def release(self, fh: int) -> None:
        self.fh_ino.pop(fh, None)
        os.close(fh)

    async def fsync(self, fh: int, datasync: bool) -> None:
        self._mutating("fdatasync" if datasync else "fsync")
        self._sync_file(self.fh_ino[fh])

    # ---- xattrs (and the control channel) ------------------------------------------------
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        if name.startswith(CONTROL):
            self._control(name, value)
            return
        self._mutating("setxattr")
        try:
            os.setxattr(self._proc(inode), name, value)
        except OSError as e:
            raise _errno(e) from None

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        if name == CONTROL + b"status":
            return self._status()
        self._alive()
        try:
            return os.getxattr(self._proc(inode), name)
        except OSError as e:
            raise _errno(e) from None

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        self._alive()
        try:
            return [os.fsencode(x) for x in os.listxattr(self._proc(inode))]
        except OSError as e:
            raise _errno(e) from None

    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        self._mutating("removexattr")
        try:
            os.removexattr(self._proc(inode), name)
        except OSError as e:
            raise _errno(e) from None


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, e: Any, tb: Any) -> bool:
        return et is not None and issubclass(et, OSError)


def main(argv: list[str]) -> int:
    backing, mountpoint, shadow, ready_fd = argv[0], argv[1], argv[2], int(argv[3])
    os.umask(0)
    from drivers.fuse.session import serve

    fs = SimFS(backing, shadow)

    def ready() -> None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)

    serve(fs, mountpoint, {"fsname=powercut", "subtype=powercut", "default_permissions", "dev", "suid"},
          on_ready=ready)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
