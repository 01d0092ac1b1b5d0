"""The btrfs graphdriver: one subvolume per layer, snapshots for children.

Model
-----
Every layer is a subvolume ``<home>/subvolumes/<cache-id>``. A layer with no parent is an empty
subvolume; a child layer (``create``) and a container layer (``create_rw``) are snapshots of
their parent's subvolume, so they start as the parent's whole tree at the cost of one b-tree root
(a fresh snapshot uses ~16 KiB, whatever the parent's size) and only what they change later takes
space. ``get`` mounts nothing: the subvolume *is* the merged tree, so ``get``/``put`` only keep
the on-disk refcount that ``remove`` checks.

Read-only layers: ``apply_diff`` sets the subvolume's read-only flag when it has applied the tar
(``BTRFS_IOC_SUBVOL_SETFLAGS``), so an image layer cannot be changed by accident afterwards
(writes fail with EROFS, also for root). Snapshots of a read-only layer are writable (btrfs makes
a writable snapshot unless asked otherwise), which is exactly what a child or container layer
needs. A layer that was created but never applied stays writable.

The kernel is reached through ioctls (``drivers/btrfs_ioctl.py``), never through the ``btrfs``
program: creating, snapshotting, deleting and flagging a subvolume are one syscall each.

Crash safety by names: a new subvolume is made as ``subvolumes/.tmp-<id>``, configured (quota
limit), then renamed to ``<id>`` with RENAME_NOREPLACE; ``remove`` renames ``<id>`` to
``.removing-<id>`` before deleting. A creator holds an exclusive ``flock`` on
``creating/<id>.lock`` from before its temp subvolume exists until after it is renamed or
deleted, so a temp subvolume whose lock can be taken without waiting belongs to a dead creator
(the kernel drops a dead process's flocks): opening the driver, ``cleanup`` and ``sweep``
delete exactly those, and a live concurrent creator's temp name is never touched, however many
creates run meanwhile. ``cleanup`` also finishes ``.removing-*`` names.

Removal deletes nested subvolumes too (a container may create subvolumes inside its rootfs, as
moby's btrfs driver allows): the nested ones are found with a tree search of the root tree
(ROOT_REF items) and deleted by id, deepest first. As root, deleting needs no mount option
(``user_subvol_rm_allowed`` is only for unprivileged users).

Diffs use btrfs generation numbers
----------------------------------
A snapshot shares its source's inodes, with the same inode numbers. Every inode item records
the transaction (``transid``) that last changed it, and a snapshot records the transaction it was
taken in (``otransid``). So in a layer that is a snapshot of ``parent`` (and ``parent`` has not
changed since, which its read-only flag guarantees), an inode whose ``transid`` is not newer than
the snapshot's ``otransid`` is byte-for-byte the parent's. ``changes`` finds the changed inodes
with one ``TREE_SEARCH`` restricted to tree blocks written after the snapshot (``find-new``), and
compares file contents only for those; for every other path a metadata look is enough. See
``_changes_native``.

Container size limits (qgroups)
-------------------------------
``create_rw(id, parent, size_limit=N)`` (or the driver option ``size``) puts a limit of N bytes on
the *exclusive* usage of the layer's qgroup ``0/<subvolume id>``: what the container writes
itself (data and the metadata blocks it rewrites), not the image below it — the same meaning as
overlay's upper-dir quota. A write past it fails with EDQUOT. Needs quotas enabled on the
filesystem (``enable_quota``, ``init_loop_btrfs(..., quota=True)`` or ``btrfs quota enable``);
otherwise ``create_rw`` with a limit raises Unsupported and creates nothing. Simple quotas
(Linux >= 6.7) are preferred when this driver enables them: they charge extents to the subvolume
that wrote them and avoid full qgroups' back-reference walks.

The driver home must be on btrfs. ``supported(home)`` says why not; ``init_loop_btrfs`` makes a
loop-backed btrfs for machines without one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping

from drivers import btrfs_ioctl as ioc
from drivers.sys import mount as mountapi
from drivers.base import CacheID, Change, ChangeKind, LocalDriver, RefCounts, check_cache_id
from drivers.errors import (AlreadyExists, Bug, Conflict, InvalidInput, LaminaError, NotFound,
                            Unsupported)
from drivers.sys.durable import syncfs
from drivers.sys.flock import Flock
from drivers.sys.libc import RENAME_NOREPLACE, renameat2

NAME = "btrfs"
_TMP = ".tmp-"
_REMOVING = ".removing-"

# Fault injection for crash tests (drivers cannot import graph's hook): called with a step name,
# "btrfs:snapshotted" between making the temp subvolume and renaming it. None in production.
crash_hook: Callable[[str], None] | None = None

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(size: str | int) -> int:
    """``"20G"``, ``"512M"``, ``"1GiB"``, ``"4096"`` -> bytes (binary units)."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size <= 0:
            raise InvalidInput(f"invalid size: {size!r}")
        return size
    s = str(size).strip().upper()
    for suffix in ("IB", "B"):
        if s.endswith(suffix) and len(s) > len(suffix) and s[-len(suffix) - 1] in _SIZE_UNITS:
            s = s[:-len(suffix)]
            break
    unit = s[-1] if s and s[-1] in _SIZE_UNITS and not s[-1].isdigit() else ""
    num = s[:-1] if unit else s
    if not num.isdigit() or int(num) <= 0:
        raise InvalidInput(f"invalid size: {size!r} (expected a number with K, M, G or T)")
    return int(num) * _SIZE_UNITS[unit]


def _rename_noreplace(dir_fd: int, old: str, new: str) -> None:
    renameat2(old, new, RENAME_NOREPLACE, dir_fd=dir_fd)


def _existing_ancestor(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def supported(home: str | os.PathLike[str]) -> str | None:
    """Why the btrfs driver cannot keep layers at ``home`` (None when it can).

    ``home`` need not exist yet: the filesystem of its nearest existing ancestor decides.
    """
    try:
        with open("/proc/filesystems", encoding="ascii") as f:
            if not any(line.split()[-1] == "btrfs" for line in f if line.strip()):
                return "the kernel has no btrfs support (modprobe btrfs)"
    except OSError:
        pass
    where = _existing_ancestor(Path(home))
    try:
        if not ioc.is_btrfs(where):
            fstype = mountapi.fstype_of(where) or "an unknown filesystem"
            return (f"{home} is on {fstype}, not btrfs; run `lamina system btrfs-init --size 20G` "
                    f"or mkfs.btrfs a device and mount it at {home}")
    except OSError as e:
        return f"cannot inspect {where}: {e.strerror}"
    if os.geteuid() != 0:
        return "the btrfs driver needs root (subvolume deletion and tree searches need CAP_SYS_ADMIN)"
    return None


def _translate(e: OSError, what: str) -> LaminaError:
    """Map a kernel errno to lamina's classes; the message names the object and the cause."""
    cause = os.strerror(e.errno) if e.errno else str(e)
    if e.errno == errno.EEXIST:
        return AlreadyExists(f"{what}: already exists")
    if e.errno == errno.ENOENT:
        return NotFound(f"{what}: not found")
    if e.errno in (errno.EBUSY, errno.ENOTEMPTY, errno.ETXTBSY):
        return Conflict(f"{what}: busy ({cause})")
    if e.errno in (errno.EDQUOT, errno.ENOSPC):
        return Conflict(f"{what}: {cause}")
    if e.errno == errno.EROFS:
        return Conflict(f"{what}: read-only")
    if e.errno in (errno.EPERM, errno.EACCES, errno.ENOTTY, errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL):
        return Unsupported(f"{what}: {cause}")
    return LaminaError(f"{what}: {cause}")


class BtrfsDriver(LocalDriver):
    """A graphdriver keeping each layer as a btrfs subvolume (see the module docstring).

    ``size``: default size limit of container layers (``create_rw``), e.g. "10G"; None: none.
    """

    name = NAME

    def __init__(self, home: str | os.PathLike[str], *, size: str | int | None = None) -> None:
        self.home = Path(home)
        reason = supported(self.home)
        if reason:
            raise Unsupported(reason)
        self.default_size_limit = parse_size(size) if size else None
        self.subvolumes = self.home / "subvolumes"
        self.subvolumes.mkdir(parents=True, exist_ok=True)
        self.refs = RefCounts(self.home)
        self._creating = self.home / "creating"
        self._creating.mkdir(exist_ok=True)
        self._pending_qgroups = self.home / "qgroups-pending"
        self.sweep()

    # --- paths and facts ------------------------------------------------------------------------

    def _path(self, id: CacheID) -> Path:
        return self.subvolumes / check_cache_id(id)

    def exists(self, id: CacheID) -> bool:
        try:
            return ioc.is_subvolume(self._path(id))
        except FileNotFoundError:
            return False

    def _need(self, id: CacheID, what: str = "layer") -> Path:
        p = self._path(id)
        if not self.exists(id):
            raise NotFound(f"btrfs {what} {id}: not found")
        return p

    def subvolume_info(self, id: CacheID) -> ioc.SubvolInfo:
        """Kernel facts about a layer's subvolume (id, generation, read-only, uuid, parent uuid)."""
        with ioc.opendir(self._need(id)) as fd:
            return ioc.subvol_info(fd)

    def is_readonly(self, id: CacheID) -> bool:
        with ioc.opendir(self._need(id)) as fd:
            return ioc.is_readonly(fd)

    # --- create ---------------------------------------------------------------------------------

    def create(self, id: CacheID, parent: CacheID | None) -> None:
        """A read-only layer to be: an empty subvolume, or a writable snapshot of ``parent``.

        Requires: ``id`` is new; ``parent`` exists (or is None).
        Effect: ``subvolumes/<id>`` exists with ``parent``'s tree; ``apply_diff`` fills it and
        makes it read-only.
        Raises: AlreadyExists (id taken), NotFound (parent), Conflict (no space, quota), Unsupported.
        Repeat: a second call raises AlreadyExists; a failed call leaves no subvolume.
        """
        self._create(id, parent, None)

    def create_rw(self, id: CacheID, parent: CacheID | None, size_limit: int | str | None = None) -> None:
        """A container layer: a writable snapshot of ``parent`` (empty subvolume without one).

        Requires: as ``create``; with a ``size_limit`` (or the driver option ``size``), quotas
        enabled on the filesystem.
        Effect: as ``create``; with a limit, the layer's own writes beyond it fail with EDQUOT.
        Raises: AlreadyExists, NotFound, Unsupported (quota not enabled), InvalidInput (bad size).
        Repeat: raises AlreadyExists; a failed call leaves no subvolume.
        """
        limit = parse_size(size_limit) if size_limit is not None else self.default_size_limit
        self._create(id, parent, limit)

    def _create(self, id: CacheID, parent: CacheID | None, size_limit: int | None) -> None:
        check_cache_id(id)
        if parent is not None:
            check_cache_id(parent)
        if size_limit is not None:
            status = self.quota_status()
            if status is None or not status.enabled:
                raise Unsupported(
                    f"btrfs layer {id}: a size limit needs quotas, which are not enabled on the "
                    f"btrfs at {self.home}; run `btrfs quota enable {self.home}` first")
        tmp = _TMP + id
        with self._creator_lock(id), ioc.opendir(self.subvolumes) as dfd:
            if self.exists(id):
                raise AlreadyExists(f"btrfs layer {id}: already exists")
            made = False
            try:
                try:
                    if parent is None:
                        ioc.subvol_create(dfd, tmp)
                    else:
                        with ioc.opendir(self._need(parent, "parent layer")) as pfd:
                            ioc.snapshot(pfd, dfd, tmp)
                except OSError as e:
                    raise _translate(e, f"btrfs layer {id}") from e
                made = True
                if crash_hook is not None:
                    crash_hook("btrfs:snapshotted")
                if size_limit is not None:
                    with ioc.opendir(self.subvolumes / tmp) as tfd:
                        info = ioc.subvol_info(tfd)
                        try:
                            ioc.qgroup_limit(tfd, info.id, max_excl=size_limit)
                        except OSError as e:
                            raise _translate(e, f"btrfs layer {id}: qgroup limit") from e
                try:
                    _rename_noreplace(dfd, tmp, id)
                except OSError as e:
                    raise _translate(e, f"btrfs layer {id}") from e
                made = False
            finally:
                if made:
                    self._delete_subvolume(dfd, tmp)

    # --- remove ---------------------------------------------------------------------------------

    def remove(self, id: CacheID) -> None:
        """Delete the layer's subvolume and every subvolume nested in it.

        Requires: nobody holds it (``get`` count 0).
        Effect: renamed to ``.removing-<id>`` (so a crash leaves a name ``cleanup`` finishes),
        then deleted by id, nested subvolumes first; its qgroup is dropped where quotas are on.
        Raises: Conflict (held by ``get``, or the subvolume is busy: mounted somewhere); then the
        layer keeps its name (nested subvolumes already deleted stay deleted).
        Repeat: removing a missing layer is a no-op.
        """
        check_cache_id(id)
        if self.refs.count(id) > 0:
            raise Conflict(f"btrfs layer {id}: in use ({self.refs.count(id)} get without put)")
        removing = _REMOVING + id
        path = self._path(id)
        if os.path.lexists(path):
            # Before anything else: a mount on the layer would also hide what it is.
            busy = _mounts_of(path)
            if busy:
                raise Conflict(f"btrfs layer {id}: busy, mounted at {busy[0]}")
        with ioc.opendir(self.subvolumes) as dfd:
            if self.exists(id):
                try:
                    _rename_noreplace(dfd, id, removing)
                except OSError as e:
                    if e.errno == errno.EEXIST:   # an earlier remove crashed midway: finish it
                        self._delete_subvolume(dfd, removing)
                        _rename_noreplace(dfd, id, removing)
                    else:
                        raise _translate(e, f"btrfs layer {id}") from e
            elif not os.path.lexists(self.subvolumes / removing):
                return
            try:
                self._delete_subvolume(dfd, removing)
            except Conflict:
                with contextlib.suppress(OSError):
                    _rename_noreplace(dfd, removing, id)
                raise
        self._retry_pending_qgroups()

    def _delete_subvolume(self, dfd: int, name: str) -> None:
        """Delete ``subvolumes/<name>`` and its nested subvolumes; a plain directory left by
        something else is removed as a tree. Raises Conflict when the kernel says busy."""
        path = self.subvolumes / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not (stat.S_ISDIR(st.st_mode) and st.st_ino == ioc.FIRST_FREE_OBJECTID):
            raise Bug(f"btrfs: {path} is not a subvolume")
        quota = self.quota_status()
        ids: list[int] = []
        try:
            with ioc.opendir(path) as sfd:
                info = ioc.subvol_info(sfd)
                ids = self._subvolume_tree(sfd, info.id)
            for sid in ids:   # deepest first
                try:
                    ioc.subvol_delete_by_id(dfd, sid)
                except OSError as e:
                    if e.errno != errno.ENOENT:     # ENOENT: a concurrent cleanup was first
                        raise
        except OSError as e:
            raise _translate(e, f"btrfs subvolume {name}") from e
        if quota is not None and quota.enabled:
            self._drop_qgroups(dfd, ids)

    @staticmethod
    def _subvolume_tree(fd: int, root_id: int) -> list[int]:
        """``root_id`` and every subvolume nested below it, children before parents."""
        out: list[int] = []
        for child in ioc.child_subvolumes(fd, root_id):
            out += BtrfsDriver._subvolume_tree(fd, child.id)
        out.append(root_id)
        return out

    def _drop_qgroups(self, fd: int, ids: list[int]) -> None:
        # A deleted subvolume's qgroup can only go once the cleaner has dropped the subvolume's
        # tree (EBUSY until then); remember those and retry on later removes and on cleanup.
        pending = []
        for sid in ids:
            try:
                ioc.qgroup_destroy(fd, sid)
            except OSError as e:
                if e.errno == errno.EBUSY:
                    pending.append(sid)
                # ENOENT: no qgroup (gone already, or simple quotas removed it); others: ignore,
                # a stale qgroup costs only accounting.
        if pending:
            with Flock(self._pending_qgroups.with_suffix(".lock")):
                with open(self._pending_qgroups, "a", encoding="ascii") as f:
                    f.write("".join(f"{sid}\n" for sid in pending))

    def _retry_pending_qgroups(self) -> None:
        if not self._pending_qgroups.exists():
            return
        with Flock(self._pending_qgroups.with_suffix(".lock")):
            try:
                ids = [int(x) for x in self._pending_qgroups.read_text().split()]
            except (OSError, ValueError):
                ids = []
            left = []
            with ioc.opendir(self.subvolumes) as fd:
                for sid in dict.fromkeys(ids):
                    try:
                        ioc.qgroup_destroy(fd, sid)
                    except OSError as e:
                        if e.errno == errno.EBUSY:
                            left.append(sid)
            if left:
                tmp = self._pending_qgroups.with_suffix(".tmp")
                tmp.write_text("".join(f"{sid}\n" for sid in left))
                os.replace(tmp, self._pending_qgroups)
            else:
                self._pending_qgroups.unlink(missing_ok=True)

    # --- get / put ------------------------------------------------------------------------------

    def get(self, id: CacheID) -> str:
        """The layer's subvolume path; takes one reference (nothing is mounted).

        Requires: the layer exists.  Effect: refcount + 1 on disk.  Raises: NotFound.
        Repeat: each call takes one more reference and returns the same path.
        """
        path = self._need(id)
        self.refs.increment(id)
        return str(path)

    def put(self, id: CacheID) -> None:
        """Release one reference taken by ``get``.

        Requires: the layer exists.  Effect: refcount - 1.  Raises: NotFound.
        Repeat: a put at count 0 is a no-op.
        """
        self._need(id)
        self.refs.decrement(id)

    # --- apply / diff ---------------------------------------------------------------------------

    def apply_diff(self, id: CacheID, parent: CacheID | None, tar: BinaryIO) -> int:
        """Apply an OCI layer tar to a layer made by ``create``, then make it read-only.

        Requires: ``id`` was created on ``parent`` and not yet applied.
        Effect: reads ``tar`` to EOF, applies it (whiteouts delete what they name), commits the
        filesystem transaction, sets the subvolume read-only; returns the bytes of file content
        written.
        Raises: NotFound, Conflict (the layer is read-only: already applied), InvalidInput
        (hostile tar), Unsupported. On error the layer stays writable, for the caller to remove.
        Repeat: a second apply raises Conflict.
        """
        from drivers.tar.apply import Whiteouts, apply_tar

        path = self._need(id)
        with ioc.opendir(path) as fd:
            info = ioc.subvol_info(fd)
            if parent is not None:
                with ioc.opendir(self._need(parent, "parent layer")) as pfd:
                    if ioc.subvol_info(pfd).uuid != info.parent_uuid:
                        raise Conflict(f"btrfs layer {id} is not a snapshot of {parent}")
            elif info.parent_uuid is not None:
                raise Conflict(f"btrfs layer {id} was created on a parent, not as a base layer")
            if info.readonly:
                raise Conflict(f"btrfs layer {id}: read-only (already applied)")
            try:
                n = apply_tar(str(path), tar, Whiteouts.REMOVE)
                syncfs(path)
                ioc.set_readonly(fd, True)
            except OSError as e:
                raise _translate(e, f"btrfs layer {id}: apply") from e
        return n

    def changes(self, id: CacheID, parent: CacheID | None) -> list[Change]:
        """The paths the layer added, modified or deleted against ``parent``, sorted by path.

        When the layer is a snapshot of ``parent`` and ``parent`` has not changed since, btrfs
        generations tell which inodes can differ (``_changes_native``); otherwise (another
        parent, no parent) the generic tree comparison. Both give the same list.
        Requires: both exist.  Effect: none.  Raises: NotFound.  Repeat: yes.
        """
        path = self._need(id)
        ppath = self._need(parent, "parent layer") if parent is not None else None
        if ppath is not None:
            native = self._changes_native(path, ppath)
            if native is not None:
                return native
        from drivers.tar.diff import tree_changes

        return tree_changes(str(path), str(ppath) if ppath is not None else None)

    def generic_changes(self, id: CacheID, parent: CacheID | None) -> list[Change]:
        """``changes`` by plain tree comparison, ignoring generations (for tests and the bench)."""
        from drivers.tar.diff import tree_changes

        path = self._need(id)
        ppath = self._need(parent, "parent layer") if parent is not None else None
        return tree_changes(str(path), str(ppath) if ppath is not None else None)

    def _changes_native(self, path: Path, ppath: Path) -> list[Change] | None:
        """``tree_changes(path, ppath)`` computed with btrfs generations, or None when they do
        not apply (the layer is not a snapshot of ``ppath``, or ``ppath`` changed since).

        Why it is the same list: in a snapshot, an inode whose item's ``transid`` is not newer
        than the snapshot's ``otransid`` is the source's inode, same number, same metadata,
        xattrs and bytes (any change to data, metadata, xattrs or links rewrites the inode item
        in the transaction that makes it). And a directory whose inode is unchanged has the same
        names pointing to the same inodes (adding, removing or renaming an entry updates the
        directory's inode). So:

        1. commit (so delayed inode updates are in the b-tree) and search the layer's tree for
           inode items newer than ``otransid``, visiting only tree blocks written since then;
        2. mark every ancestor directory of those inodes, following their back references;
        3. walk both trees as ``tree_changes`` does, but never descend into an unchanged,
           unmarked directory, and never compare an entry that is the same unchanged inode on
           both sides (no xattr reads, no content reads). Everything else goes through the
           generic comparison, so the rules are exactly ``tree_changes``'.

        The cost is the changed part of the tree plus the directories on the way to it,
        independent of the image's size; the generic differ reads every same-size file whose
        mtime has whole seconds (every file unpacked from a tar) byte by byte.
        """
        from drivers.tar import diff as tardiff

        with ioc.opendir(path) as fd, ioc.opendir(ppath) as pfd:
            ioc.sync(fd)
            info, pinfo = ioc.subvol_info(fd), ioc.subvol_info(pfd)
            if info.parent_uuid != pinfo.uuid or pinfo.ctransid > info.otransid:
                return None
            changed, refs = ioc.changed_inodes_and_refs(fd, info.otransid)
            dirty = _ancestor_dirs(fd, refs)
            dev, pdev = os.fstat(fd).st_dev, os.fstat(pfd).st_dev

        root = str(path)
        if ioc.FIRST_FREE_OBJECTID not in changed and ioc.FIRST_FREE_OBJECTID not in dirty:
            return []
        out: list[Change] = []
        stack: list[tuple[str, str | None, str]] = [(root, str(ppath), "/")]
        while stack:
            new_dir, old_dir, rel = stack.pop()
            new = tardiff.scan_dir(new_dir)
            old = tardiff.scan_dir(old_dir) if old_dir is not None else {}
            for name, (npath, nst) in new.items():
                cpath = rel + name
                o = old.pop(name, None)
                if o is None:
                    out.append(Change(cpath, ChangeKind.ADDED))
                    if stat.S_ISDIR(nst.st_mode):
                        stack.append((npath, None, cpath + "/"))
                    continue
                opath, ost = o
                same = (nst.st_ino == ost.st_ino and nst.st_dev == dev and ost.st_dev == pdev
                        and nst.st_ino not in changed)
                if not same and tardiff.entries_differ(npath, nst, opath, ost):
                    out.append(Change(cpath, ChangeKind.MODIFIED))
                if stat.S_ISDIR(nst.st_mode):
                    if same and nst.st_ino not in dirty:
                        continue        # nothing below it changed
                    stack.append((npath, opath if stat.S_ISDIR(ost.st_mode) else None, cpath + "/"))
            for name in old:
                out.append(Change(rel + name, ChangeKind.DELETED))
        return tardiff.with_changed_parents(out)

    def diff(self, id: CacheID, parent: CacheID | None) -> BinaryIO:
        """The layer's changes against ``parent`` as an OCI layer tar stream, holding a ``get``
        of the layer until it is closed (as every driver's diff: ``naive_diff.diff_holding``).

        Requires: both exist.  Effect: none.  Raises: NotFound.  Repeat: yes; caller closes.
        """
        from drivers.naive_diff import diff_holding

        return diff_holding(self, id, str(self._path(id)), self.changes(id, parent))

    def diff_size(self, id: CacheID, parent: CacheID | None) -> int:
        """Bytes of regular-file content added or changed against ``parent`` (each inode once).

        Requires: both exist.  Effect: none.  Raises: NotFound.  Repeat: yes.
        """
        from drivers.tar.diff import diff_size

        changes = self.changes(id, parent)
        return diff_size(str(self._path(id)), changes)

    # --- status / cleanup / quota ---------------------------------------------------------------

    def layer_ids(self) -> list[CacheID]:
        return sorted(CacheID(n) for n in os.listdir(self.subvolumes)
                      if not n.startswith(".") and self.exists(CacheID(n)))

    def quota_status(self) -> ioc.QuotaStatus | None:
        """The filesystem's quota state (None: quotas never enabled)."""
        with ioc.opendir(self.subvolumes) as fd:
            return ioc.quota_status(fd)

    def enable_quota(self, simple: bool | None = None) -> str:
        """Enable quotas on the whole filesystem holding ``home`` and wait for the initial scan.

        ``simple=None`` tries simple quotas first (Linux >= 6.7) and falls back to full qgroups.
        Returns the mode in force ("simple" or "full"). Raises Unsupported if the kernel refuses.
        Repeat: harmless when quotas are already on (keeps the mode in force).
        """
        with ioc.opendir(self.subvolumes) as fd:
            return enable_quota_fd(fd, simple)

    def layer_usage(self, id: CacheID) -> ioc.QgroupInfo | None:
        """Referenced and exclusive bytes of the layer's qgroup, as of a fresh commit (None when
        quotas are off)."""
        with ioc.opendir(self._need(id)) as fd:
            ioc.sync(fd)
            return ioc.qgroup_info(fd, ioc.subvol_info(fd).id)

    def status(self) -> dict[str, str]:
        """Backing filesystem, layer count, quota state, filesystem usage. Never raises."""
        out: dict[str, str] = {"driver": NAME, "home": str(self.home)}
        try:
            out["backing_fs"] = mountapi.fstype_of(self.home) or "unknown"
            src = [m.source for m in mountapi.mountinfo()
                   if m.mount_point == _mount_point_of(self.home)]
            if src:
                out["device"] = src[-1]
            ids = self.layer_ids()
            out["layers"] = str(len(ids))
            ro = 0
            for i in ids:
                with contextlib.suppress(OSError):
                    ro += self.is_readonly(i)
            out["read_only_layers"] = str(ro)
            q = self.quota_status()
            if q is None or not q.enabled:
                out["quota"] = "disabled"
            else:
                out["quota"] = ("enabled (simple)" if q.simple else "enabled (full)") + \
                    (", inconsistent: rescan needed" if q.inconsistent else "")
            vfs = os.statvfs(self.home)
            total, free = vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize
            out["fs_size"] = str(total)
            out["fs_used"] = str(total - vfs.f_bfree * vfs.f_frsize)
            out["fs_free"] = str(free)
            out["diff"] = "btrfs generations (find-new) for a snapshot of its parent, else tree comparison"
            if self.default_size_limit:
                out["size_limit"] = str(self.default_size_limit)
        except (OSError, LaminaError) as e:
            out["error"] = str(e)
        return out

    def cleanup(self) -> None:
        """Drop all refcounts (nothing is mounted by this driver) and finish interrupted work:
        delete ``.removing-*`` subvolumes, ``.tmp-*`` subvolumes of dead creators (``sweep``)
        and qgroups that could not be dropped at ``remove``.

        Requires: nothing.  Raises: nothing for a clean state.  Repeat: harmless.
        """
        self.refs.reset()
        with ioc.opendir(self.subvolumes) as dfd:
            for n in os.listdir(self.subvolumes):
                if n.startswith(_REMOVING):
                    with contextlib.suppress(Conflict):
                        self._delete_subvolume(dfd, n)
        self.sweep()
        self._retry_pending_qgroups()

    # --- temp names of creators (drivers.base.Sweeper) ------------------------------------------

    @contextlib.contextmanager
    def _creator_lock(self, id: CacheID) -> Iterator[None]:
        """Hold ``creating/<id>.lock`` while ``.tmp-<id>`` may exist (see the module docstring)."""
        path = self._creating / f"{id}.lock"
        fd = _lock_file(path, blocking=True)
        assert fd is not None
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)

    def leftovers(self) -> list[str]:
        """``subvolumes/.tmp-<id>`` names whose creator is dead (its lock is free), relative
        to ``home``. Never raises for concurrent creates."""
        out = []
        for n in sorted(os.listdir(self.subvolumes)):
            if not n.startswith(_TMP):
                continue
            fd = _lock_file(self._creating / f"{n[len(_TMP):]}.lock", blocking=False, create=False)
            if fd is not None or not (self._creating / f"{n[len(_TMP):]}.lock").exists():
                out.append(f"subvolumes/{n}")
            if fd is not None:
                os.close(fd)
        return out

    def sweep(self) -> list[str]:
        """Delete the temp subvolumes of dead creators (and their lock files); a live creator's
        are left alone. Returns the names deleted, relative to ``home``.

        Requires: nothing.  Effect: as above.  Raises: nothing for concurrent creates (a busy
        leftover stays for the next sweep).  Repeat: yes; run on every open.
        """
        done: list[str] = []
        names = [n for n in os.listdir(self.subvolumes) if n.startswith(_TMP)]
        with ioc.opendir(self.subvolumes) as dfd:
            for n in names:
                id = n[len(_TMP):]
                path = self._creating / f"{id}.lock"
                fd = _lock_file(path, blocking=False)
                if fd is None:
                    continue    # its creator is alive and working
                try:
                    if os.path.lexists(self.subvolumes / n):
                        try:
                            self._delete_subvolume(dfd, n)
                        except (Conflict, Bug):
                            continue
                        done.append(f"subvolumes/{n}")
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                finally:
                    os.close(fd)
        for lock in os.listdir(self._creating):     # locks of creators that died before making
            if lock.endswith(".lock") and not os.path.lexists(self.subvolumes / (_TMP + lock[:-5])):
                fd = _lock_file(self._creating / lock, blocking=False, create=False)
                if fd is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._creating / lock)
                    os.close(fd)
        return done


def _lock_file(path: Path, *, blocking: bool, create: bool = True) -> int | None:
    """An exclusive flock on ``path`` (created if missing and ``create``); None if another
    process holds it (not ``blocking``) or it does not exist (not ``create``). Lock files are
    unlinked by their holder before it closes them, so a waiter that wakes on an unlinked file
    retries on the file now at ``path``."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            st = os.stat(path)
        except BlockingIOError:
            os.close(fd)
            return None
        except FileNotFoundError:
            os.close(fd)
            if not create:
                return None
            continue
        except BaseException:
            os.close(fd)
            raise
        if st.st_ino == os.fstat(fd).st_ino:
            return fd
        os.close(fd)


def _ancestor_dirs(fd: int, refs: Mapping[int, list[tuple[int, str]]]) -> set[int]:
    """Inode numbers of every directory above the given inodes (``refs``: inode -> all its
    (parent, name) back references), up to the subvolume's root (256). Parents not in ``refs``
    are looked up (INODE_REF / INODE_EXTREF)."""
    dirty: set[int] = set()
    todo = [i for i in refs if i != ioc.FIRST_FREE_OBJECTID]
    while todo:
        ino = todo.pop()
        names = refs[ino] if ino in refs else ioc.inode_refs(fd, ino)
        for parent, _name in names:
            if parent not in dirty:
                dirty.add(parent)
                if parent != ioc.FIRST_FREE_OBJECTID:
                    todo.append(parent)
    return dirty


def _mounts_of(path: Path) -> list[str]:
    """Mount points that show ``path`` or something below it (bind mounts of the layer made
    elsewhere, e.g. by a runtime) or that sit on or inside it. The kernel refuses to delete a
    subvolume only when something is mounted on its very root; a bind mount of it elsewhere
    would go on showing a deleted tree, and mounts inside would be orphaned, so the driver
    refuses those too."""
    p = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    parent = os.path.dirname(p)
    mounts = mountapi.mountinfo()
    home = None     # the mount holding the layer's directory entry (not one on the layer)
    for m in mounts:
        if (parent == m.mount_point or parent.startswith(m.mount_point.rstrip("/") + "/")) and \
                (home is None or len(m.mount_point) >= len(home.mount_point)):
            home = m
    out = []
    if home is not None:
        rel = home.root.rstrip("/") + "/" + os.path.relpath(p, home.mount_point)
        rel = os.path.normpath(rel)
        for m in mounts:
            if m is home:
                continue
            if m.major_minor == home.major_minor and (m.root == rel or m.root.startswith(rel + "/")):
                out.append(m.mount_point)
            elif m.mount_point == p or m.mount_point.startswith(p + "/"):
                out.append(m.mount_point)
    return out


def _mount_point_of(path: str | os.PathLike[str]) -> str:
    """The mount point of the deepest mount holding ``path``."""
    p = os.path.realpath(path)
    best = ""
    for m in mountapi.mountinfo():
        mp = m.mount_point
        if (p == mp or p.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
            best = mp
    return best


def enable_quota_fd(fd: int, simple: bool | None = None) -> str:
    """Enable quotas on the filesystem of ``fd`` (see ``BtrfsDriver.enable_quota``)."""
    status = ioc.quota_status(fd)
    if status is not None and status.enabled:
        return "simple" if status.simple else "full"
    modes = [True, False] if simple is None else [simple]
    last: OSError | None = None
    for s in modes:
        try:
            ioc.quota_enable(fd, simple=s)
        except OSError as e:
            last = e
            continue
        if not s:
            ioc.quota_rescan_wait(fd)
        return "simple" if s else "full"
    assert last is not None
    raise Unsupported(f"btrfs: enabling quotas failed: {os.strerror(last.errno or 0)}")


# --- a loop-backed btrfs for machines without one ----------------------------------------------

@dataclass(frozen=True)
class LoopBtrfs:
    """A btrfs in a sparse image file, attached to a loop device and mounted.

    The loop device is set to auto-clear: unmounting the filesystem frees it. Nothing of this
    survives a reboot by itself; ``fstab_line`` is the line that makes it permanent.
    """

    image: Path
    device: str
    mountpoint: Path
    created: bool       # False when an existing image was attached again

    def fstab_line(self) -> str:
        return f"{self.image} {self.mountpoint} btrfs loop 0 0"


def _run(argv: list[str], what: str) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise Unsupported(f"{what}: {argv[0]} not installed (Debian: btrfs-progs, util-linux)") from e
    if p.returncode != 0:
        msg = (p.stderr.strip() or p.stdout.strip()).splitlines()
        raise LaminaError(f"{what}: {argv[0]} failed: {msg[-1] if msg else f'exit {p.returncode}'}")
    return p.stdout


def _has_btrfs_magic(image: Path) -> bool:
    try:
        with open(image, "rb") as f:
            f.seek(0x10000 + 0x40)          # primary superblock at 64 KiB, magic at offset 0x40
            return f.read(8) == b"_BHRfS_M"
    except OSError:
        return False


def init_loop_btrfs(root: str | os.PathLike[str], size: str | int, *, quota: bool = False,
                    image: str | os.PathLike[str] | None = None) -> LoopBtrfs:
    """Give lamina root ``root`` a btrfs for the btrfs driver: a sparse image file
    ``<root>/btrfs.img`` of ``size`` (``"20G"``), ``mkfs.btrfs``, ``losetup``, mounted at
    ``<root>/drivers/btrfs`` (the driver's home). With ``quota``, quotas are enabled (simple where
    the kernel has them) so container layers can have size limits.

    Requires: root; ``<root>/drivers/btrfs`` absent or an empty directory.
    Effect: as above. An existing image that holds a btrfs is attached and mounted again without
    mkfs (after a reboot); the sparse image takes disk space only as layers fill it.
    Raises: AlreadyExists (a btrfs is mounted there already), Conflict (the mount point holds
    files; the image exists but is not btrfs), InvalidInput (size), Unsupported (not root, no
    btrfs, tools missing). On any error everything this call did is undone.
    Repeat: the second call raises AlreadyExists.
    """
    root = Path(os.path.abspath(root))
    nbytes = parse_size(size)
    if nbytes < 128 << 20:
        raise InvalidInput(f"btrfs image size {size!r}: at least 128M is needed")
    img = Path(image) if image is not None else root / "btrfs.img"
    mnt = root / "drivers" / NAME
    if os.geteuid() != 0:
        raise Unsupported("init_loop_btrfs: needs root (losetup, mount)")
    if mountapi.is_mount_point(mnt):
        raise AlreadyExists(f"{mnt}: a filesystem is mounted there already "
                            f"({mountapi.fstype_of(mnt)})")
    if mnt.exists() and (not mnt.is_dir() or any(mnt.iterdir())):
        raise Conflict(f"{mnt}: exists and is not an empty directory; mounting would hide it")
    reuse = img.exists()
    if reuse and not _has_btrfs_magic(img):
        raise Conflict(f"{img}: exists and holds no btrfs; remove it or pass another image path")

    undo: list[tuple[str, object]] = []
    try:
        if not reuse:
            img.parent.mkdir(parents=True, exist_ok=True)
            with open(img, "xb") as f:
                undo.append(("unlink", img))
                f.truncate(nbytes)
            _run(["mkfs.btrfs", "-q", "-f", str(img)], f"mkfs.btrfs {img}")
        device = _run(["losetup", "--find", "--show", str(img)], f"losetup {img}").strip()
        undo.append(("detach", device))
        if not mnt.exists():
            mnt.mkdir(parents=True)
            undo.append(("rmdir", mnt))
        try:
            mountapi.mount(device, mnt, "btrfs")
        except OSError as e:
            raise Unsupported(f"mount {device} on {mnt}: {os.strerror(e.errno or 0)}") from e
        undo.append(("umount", mnt))
        # Detaching a loop device that is in use only marks it auto-clear: it goes away by itself
        # when the filesystem is unmounted, so there is nothing else to tear down later.
        _run(["losetup", "-d", device], f"losetup -d {device}")
        undo = [u for u in undo if u[0] != "detach"]
        if quota:
            with ioc.opendir(mnt) as fd:
                enable_quota_fd(fd, None)
        return LoopBtrfs(img, device, mnt, created=not reuse)
    except BaseException:
        for kind, obj in reversed(undo):
            with contextlib.suppress(Exception):
                if kind == "umount":
                    mountapi.umount(str(obj))
                elif kind == "detach":
                    subprocess.run(["losetup", "-d", str(obj)], capture_output=True, check=False)
                elif kind == "rmdir":
                    os.rmdir(str(obj))
                elif kind == "unlink":
                    os.unlink(str(obj))
        raise


def remove_loop_btrfs(root: str | os.PathLike[str], delete_image: bool = False) -> None:
    """Undo ``init_loop_btrfs``: unmount ``<root>/drivers/btrfs`` (the loop device clears
    itself) and, with ``delete_image``, delete ``<root>/btrfs.img``.

    Raises: Conflict (still busy: a process has files open there). Repeat: harmless.
    """
    root = Path(os.path.abspath(root))
    mnt = root / "drivers" / NAME
    if mountapi.is_mount_point(mnt):
        devices = _loop_devices_of(root / "btrfs.img")
        try:
            mountapi.umount(mnt)
        except OSError as e:
            raise Conflict(f"umount {mnt}: {os.strerror(e.errno or 0)}") from e
        # btrfs drops its last reference to the device a moment after umount returns, and only
        # then does auto-clear detach it; a caller that re-attaches the image or checks for
        # leaks must see the end state (seen: still attached 1 s later on a loaded machine).
        deadline = time.monotonic() + 15.0
        while any(d.exists() for d in devices) and time.monotonic() < deadline:
            time.sleep(0.02)
    if delete_image:
        (root / "btrfs.img").unlink(missing_ok=True)


def _loop_devices_of(image: Path) -> list[Path]:
    """The ``backing_file`` sysfs entries of the loop devices attached to ``image``."""
    want = os.path.realpath(image)
    found = []
    for entry in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if entry.read_text().strip().removesuffix(" (deleted)") == want:
                found.append(entry)
    return found


def open_driver(home: str | os.PathLike[str], **options: str) -> BtrfsDriver:
    """Factory for the driver registry (``size=`` is the only option)."""
    return BtrfsDriver(home, **options)
