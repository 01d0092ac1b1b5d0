"""The btrfs ioctls the btrfs driver needs, called through ``fcntl.ioctl`` (no ``btrfs`` program).

Why ioctls: a layer operation is one syscall (snapshot, delete, set read-only) where the
``btrfs`` program is a fork + exec + its own start-up per layer (see the bench,
``bench/micro/test_btrfs_bench.py``, for both measured side by side).

Structures are laid out by hand with ``struct`` from ``linux/btrfs.h`` and ``btrfs_tree.h`` (the
sizes and request numbers below were checked against the kernel headers with a C compiler; the
tests check the layouts again). Items returned by ``TREE_SEARCH`` are the on-disk, little-endian
structures.

Every function takes an open file descriptor (``O_RDONLY | O_DIRECTORY`` of a directory on the
btrfs in question; ``opendir`` gives one) and raises ``OSError`` with the kernel's errno: the
driver maps errnos to lamina errors, this module knows nothing of layers.

Kernel facts this module relies on (Linux >= 5.7 for SNAP_DESTROY_V2 by id, >= 4.18 for
GET_SUBVOL_INFO, >= 3.16 for TREE_SEARCH_V2):

- a snapshot is writable unless ``readonly=True`` is asked, also when its source is read-only;
- deleting a subvolume needs CAP_SYS_ADMIN (or the ``user_subvol_rm_allowed`` mount option for
  others) and fails with ENOTEMPTY while it contains other subvolumes, EBUSY while it is a mount
  point (or bind-mounted), EPERM while a swap file is active in it;
- ``TREE_SEARCH`` sees the in-memory b-tree; inode updates still sitting in btrfs' delayed-inode
  queue are not in it until a transaction commit: call ``sync`` (BTRFS_IOC_SYNC) first when the
  answer must include the latest writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import struct
import uuid
from dataclasses import dataclass
from typing import Iterator

from drivers.sys.libc import libc as _libc

# --- request numbers (asm-generic ioctl encoding, as on x86, arm, riscv) ------------------------

_IOC_WRITE = 1
_IOC_READ = 2
MAGIC = 0x94


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (MAGIC << 8) | nr


def _io(nr: int) -> int:
    return _ioc(0, nr, 0)


def _iow(nr: int, size: int) -> int:
    return _ioc(_IOC_WRITE, nr, size)


def _ior(nr: int, size: int) -> int:
    return _ioc(_IOC_READ, nr, size)


def _iowr(nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, size)


VOL_ARGS_SIZE = 4096            # struct btrfs_ioctl_vol_args / _v2
SUBVOL_INFO_SIZE = 504          # struct btrfs_ioctl_get_subvol_info_args
SEARCH_KEY_SIZE = 104           # struct btrfs_ioctl_search_key
SEARCH_HEADER_SIZE = 32         # struct btrfs_ioctl_search_header
INO_LOOKUP_SIZE = 4096          # struct btrfs_ioctl_ino_lookup_args

IOC_SYNC = _io(8)
IOC_SNAP_CREATE = _iow(1, VOL_ARGS_SIZE)
IOC_SUBVOL_CREATE = _iow(14, VOL_ARGS_SIZE)
IOC_SNAP_DESTROY = _iow(15, VOL_ARGS_SIZE)
IOC_TREE_SEARCH_V2 = _iowr(17, SEARCH_KEY_SIZE + 8)
IOC_INO_LOOKUP = _iowr(18, INO_LOOKUP_SIZE)
IOC_SNAP_CREATE_V2 = _iow(23, VOL_ARGS_SIZE)
IOC_SUBVOL_CREATE_V2 = _iow(24, VOL_ARGS_SIZE)
IOC_SUBVOL_GETFLAGS = _ior(25, 8)
IOC_SUBVOL_SETFLAGS = _iow(26, 8)
IOC_QUOTA_CTL = _iowr(40, 16)
IOC_QGROUP_CREATE = _iow(42, 16)
IOC_QGROUP_LIMIT = _ior(43, 48)     # _IOR by history: the kernel reads the argument anyway
IOC_QUOTA_RESCAN = _iow(44, 64)
IOC_QUOTA_RESCAN_WAIT = _io(46)
IOC_GET_SUBVOL_INFO = _ior(60, SUBVOL_INFO_SIZE)
IOC_SNAP_DESTROY_V2 = _iow(63, VOL_ARGS_SIZE)

# --- flags and keys -----------------------------------------------------------------------------

SUBVOL_RDONLY = 1 << 1
SUBVOL_QGROUP_INHERIT = 1 << 2
SUBVOL_SPEC_BY_ID = 1 << 4
ROOT_SUBVOL_RDONLY = 1 << 0     # the same flag as stored in the root item (GET_SUBVOL_INFO)

QUOTA_CTL_ENABLE = 1
QUOTA_CTL_DISABLE = 2
QUOTA_CTL_ENABLE_SIMPLE_QUOTA = 4

QGROUP_LIMIT_MAX_RFER = 1 << 0
QGROUP_LIMIT_MAX_EXCL = 1 << 1

QGROUP_STATUS_FLAG_ON = 1 << 0
QGROUP_STATUS_FLAG_RESCAN = 1 << 1
QGROUP_STATUS_FLAG_INCONSISTENT = 1 << 2
QGROUP_STATUS_FLAG_SIMPLE_MODE = 1 << 3

ROOT_TREE_OBJECTID = 1
QUOTA_TREE_OBJECTID = 8
FS_TREE_OBJECTID = 5
FIRST_FREE_OBJECTID = 256       # the root directory of every subvolume has this inode number

INODE_ITEM_KEY = 1
INODE_REF_KEY = 12
INODE_EXTREF_KEY = 13
ROOT_REF_KEY = 156
QGROUP_STATUS_KEY = 240
QGROUP_INFO_KEY = 242
QGROUP_LIMIT_KEY = 244

SUPER_MAGIC = 0x9123683E        # statfs f_type of btrfs

U64 = (1 << 64) - 1
NAME_MAX = 255                  # BTRFS_VOL_NAME_MAX: a subvolume name



# --- small helpers ------------------------------------------------------------------------------

@contextlib.contextmanager
def opendir(path: str | os.PathLike[str]) -> Iterator[int]:
    """An ``O_RDONLY|O_DIRECTORY|O_NOFOLLOW`` fd of ``path``, closed on exit: what the ioctls take."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        yield fd
    finally:
        os.close(fd)


def statfs_type(path: str | os.PathLike[str]) -> int:
    """statfs(2)'s ``f_type`` (``os.statvfs`` does not return it)."""
    buf = ctypes.create_string_buffer(256)   # struct statfs is 120 bytes on 64-bit Linux
    if _libc.statfs(os.fsencode(path), buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), os.fsdecode(path))
    # f_type is the first member: a long (__fsword_t) on every Linux ABI.
    (ftype,) = struct.unpack_from("l", buf.raw, 0)
    return ftype & 0xFFFFFFFF


def is_btrfs(path: str | os.PathLike[str]) -> bool:
    return statfs_type(path) == SUPER_MAGIC


def is_subvolume(path: str | os.PathLike[str]) -> bool:
    """A directory on btrfs whose inode is 256 is the root of a subvolume (or a snapshot)."""
    st = os.lstat(path)
    return st.st_ino == FIRST_FREE_OBJECTID and (st.st_mode & 0o170000) == 0o040000 and is_btrfs(path)


def _name_bytes(name: str, limit: int) -> bytes:
    b = os.fsencode(name)
    if not b or b"/" in b or b"\0" in b or b in (b".", b"..") or len(b) > limit:
        raise ValueError(f"invalid subvolume name: {name!r}")
    return b


def _vol_args_v2(fd: int = 0, flags: int = 0, name: bytes = b"", subvolid: int = 0) -> bytearray:
    # struct btrfs_ioctl_vol_args_v2 {
    #   __s64 fd; __u64 transid; __u64 flags;
    #   union { struct { __u64 size; struct btrfs_qgroup_inherit *qgroup_inherit; }; __u64 unused[4]; };
    #   union { char name[4040]; __u64 devid; __u64 subvolid; };
    # }
    buf = bytearray(VOL_ARGS_SIZE)
    struct.pack_into("=qQQ", buf, 0, fd, 0, flags)
    if subvolid:
        struct.pack_into("=Q", buf, 56, subvolid)
    else:
        buf[56:56 + len(name)] = name
    return buf


# --- subvolumes ---------------------------------------------------------------------------------

def subvol_create(dir_fd: int, name: str) -> None:
    """Create an empty subvolume ``name`` in the directory ``dir_fd`` (SUBVOL_CREATE_V2).

    Raises OSError: EEXIST (name taken), ENAMETOOLONG, EROFS (``dir_fd`` is in a read-only
    subvolume), EDQUOT/ENOSPC. Atomic: on error nothing is created.
    """
    buf = _vol_args_v2(name=_name_bytes(name, NAME_MAX))
    fcntl.ioctl(dir_fd, IOC_SUBVOL_CREATE_V2, buf)


def snapshot(src_fd: int, dir_fd: int, name: str, readonly: bool = False) -> None:
    """Snapshot the subvolume open as ``src_fd`` to ``name`` in the directory ``dir_fd``
    (SNAP_CREATE_V2). The snapshot is writable unless ``readonly``, whatever the source is.

    Raises OSError: EEXIST, EINVAL (``src_fd`` is not a subvolume root), EXDEV (other fs),
    EROFS, EDQUOT/ENOSPC. Atomic: on error nothing is created.
    """
    buf = _vol_args_v2(fd=src_fd, flags=SUBVOL_RDONLY if readonly else 0,
                       name=_name_bytes(name, NAME_MAX))
    fcntl.ioctl(dir_fd, IOC_SNAP_CREATE_V2, buf)


def subvol_delete(dir_fd: int, name: str) -> None:
    """Delete the subvolume ``name`` in the directory ``dir_fd`` (SNAP_DESTROY_V2 by name).

    Raises OSError: ENOENT, EINVAL (not a subvolume), ENOTEMPTY (holds nested subvolumes),
    EBUSY (mounted somewhere), EPERM.
    """
    buf = _vol_args_v2(name=_name_bytes(name, NAME_MAX))
    fcntl.ioctl(dir_fd, IOC_SNAP_DESTROY_V2, buf)


def subvol_delete_by_id(fd: int, subvolid: int) -> None:
    """Delete subvolume number ``subvolid`` of the filesystem holding ``fd`` (SPEC_BY_ID): no
    path needed, so a nested subvolume found by a tree search can be removed directly."""
    if subvolid < FIRST_FREE_OBJECTID:
        raise ValueError(f"refusing to delete subvolume id {subvolid}")
    buf = _vol_args_v2(flags=SUBVOL_SPEC_BY_ID, subvolid=subvolid)
    fcntl.ioctl(fd, IOC_SNAP_DESTROY_V2, buf)


def get_flags(fd: int) -> int:
    buf = bytearray(8)
    fcntl.ioctl(fd, IOC_SUBVOL_GETFLAGS, buf)
    return struct.unpack("=Q", buf)[0]


def set_readonly(fd: int, readonly: bool = True) -> None:
    """Set or clear the subvolume's read-only flag (SUBVOL_SETFLAGS). ``fd`` is its root dir."""
    flags = get_flags(fd)
    new = (flags | SUBVOL_RDONLY) if readonly else (flags & ~SUBVOL_RDONLY)
    if new != flags:
        fcntl.ioctl(fd, IOC_SUBVOL_SETFLAGS, struct.pack("=Q", new))


def is_readonly(fd: int) -> bool:
    return bool(get_flags(fd) & SUBVOL_RDONLY)


def sync(fd: int) -> None:
    """Commit the current transaction (BTRFS_IOC_SYNC): afterwards TREE_SEARCH sees every write."""
    fcntl.ioctl(fd, IOC_SYNC)


@dataclass(frozen=True)
class SubvolInfo:
    """What GET_SUBVOL_INFO tells about the subvolume an fd is in."""

    id: int
    name: str
    parent_id: int          # the subvolume holding this one (0 for the top level)
    dirid: int              # inode of the directory holding it, in ``parent_id``
    generation: int         # latest transaction that changed it
    flags: int              # root item flags: bit 0 is BTRFS_ROOT_SUBVOL_RDONLY
    uuid: uuid.UUID
    parent_uuid: uuid.UUID | None   # the source, for a snapshot
    ctransid: int           # last change
    otransid: int           # creation: for a snapshot, the generation its source was copied at

    @property
    def readonly(self) -> bool:
        return bool(self.flags & ROOT_SUBVOL_RDONLY)


def subvol_info(fd: int) -> SubvolInfo:
    buf = bytearray(SUBVOL_INFO_SIZE)
    fcntl.ioctl(fd, IOC_GET_SUBVOL_INFO, buf)
    treeid = struct.unpack_from("=Q", buf, 0)[0]
    name = bytes(buf[8:8 + 256]).split(b"\0", 1)[0]
    parent_id, dirid, generation, flags = struct.unpack_from("=QQQQ", buf, 264)
    u, pu = bytes(buf[296:312]), bytes(buf[312:328])
    ctransid, otransid = struct.unpack_from("=QQ", buf, 344)
    return SubvolInfo(
        id=treeid, name=os.fsdecode(name), parent_id=parent_id, dirid=dirid,
        generation=generation, flags=flags, uuid=uuid.UUID(bytes=u),
        parent_uuid=uuid.UUID(bytes=pu) if any(pu) else None, ctransid=ctransid, otransid=otransid)


def ino_lookup(fd: int, objectid: int, treeid: int = 0) -> str:
    """Path of inode ``objectid`` in subvolume ``treeid`` (0: the one ``fd`` is in), relative to
    that subvolume's root, with a trailing "/" ("" for the root itself). Follows the inode's
    first back reference only. Needs CAP_SYS_ADMIN."""
    buf = bytearray(INO_LOOKUP_SIZE)
    struct.pack_into("=QQ", buf, 0, treeid, objectid)
    fcntl.ioctl(fd, IOC_INO_LOOKUP, buf)
    return os.fsdecode(bytes(buf[16:]).split(b"\0", 1)[0])


# --- tree search --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One b-tree item a search returned: its key, the transid of the leaf holding it, its data."""

    objectid: int
    type: int
    offset: int
    transid: int
    data: bytes


def tree_search(fd: int, tree_id: int, min_key: tuple[int, int, int] = (0, 0, 0),
                max_key: tuple[int, int, int] = (U64, 255, U64), min_transid: int = 0,
                max_transid: int = U64, types: frozenset[int] | None = None,
                buf_size: int = 64 * 1024) -> Iterator[Item]:
    """Every item of tree ``tree_id`` (0: the subvolume ``fd`` is in) with a key between
    ``min_key`` and ``max_key`` (compared as whole (objectid, type, offset) keys, as the kernel
    does), in key order, skipping tree blocks last written before ``min_transid``; only items
    of ``types`` when given (the others are skipped without copying their data).

    The ``min_transid`` skip is what makes a ``find-new`` cheap: only blocks rewritten since a
    generation are visited. Needs CAP_SYS_ADMIN.
    """
    lo = list(min_key)
    buf = bytearray(SEARCH_KEY_SIZE + 8 + buf_size)
    header = struct.Struct("=QQQII")
    while True:
        # struct btrfs_ioctl_search_key: tree_id, min/max objectid, min/max offset,
        # min/max transid (u64 x7), min/max type, nr_items (u32 x3), unused (u32), unused1-4
        struct.pack_into("=QQQQQQQIII", buf, 0, tree_id, lo[0], max_key[0], lo[2], max_key[2],
                         min_transid, max_transid, lo[1], max_key[1], 0xFFFFFFFF)
        struct.pack_into("=Q", buf, SEARCH_KEY_SIZE, buf_size)
        fcntl.ioctl(fd, IOC_TREE_SEARCH_V2, buf)
        nr = struct.unpack_from("=I", buf, 64)[0]
        if nr == 0:
            return
        pos = SEARCH_KEY_SIZE + 8
        objectid = typ = offset = 0
        for _ in range(nr):
            transid, objectid, offset, typ, length = header.unpack_from(buf, pos)
            pos += SEARCH_HEADER_SIZE
            if types is None or typ in types:
                yield Item(objectid, typ, offset, transid, bytes(buf[pos:pos + length]))
            pos += length
        # Next key after the last one returned: offset + 1, carrying into type, then objectid.
        o, t, f = objectid, typ, offset
        if f < U64:
            f += 1
        elif t < 255:
            t, f = t + 1, 0
        elif o < U64:
            o, t, f = o + 1, 0, 0
        else:
            return
        if (o, t, f) > tuple(max_key):
            return
        lo = [o, t, f]


@dataclass(frozen=True)
class InodeItem:
    """The fields of ``struct btrfs_inode_item`` the differ uses."""

    ino: int
    generation: int     # transaction that created the inode
    transid: int        # last transaction that changed it (data, metadata, xattrs, links)
    size: int
    nlink: int
    mode: int


def parse_inode_item(ino: int, data: bytes) -> InodeItem:
    generation, transid, size = struct.unpack_from("<QQQ", data, 0)
    nlink, _uid, _gid, mode = struct.unpack_from("<IIII", data, 40)
    return InodeItem(ino, generation, transid, size, nlink, mode)


def changed_inodes(fd: int, since: int) -> dict[int, InodeItem]:
    """Inodes of the subvolume ``fd`` is in that were created or changed in a transaction after
    ``since`` (``find-new``): the INODE_ITEMs whose ``transid`` is newer, found by searching
    only the tree blocks rewritten after ``since``. Call ``sync`` first to include recent writes.
    Removed inodes are absent by nature; their directory's inode is changed instead.
    """
    return changed_inodes_and_refs(fd, since)[0]


_REF_TYPES = frozenset((INODE_ITEM_KEY, INODE_REF_KEY, INODE_EXTREF_KEY))


def changed_inodes_and_refs(fd: int, since: int) -> tuple[dict[int, InodeItem], dict[int, list[tuple[int, str]]]]:
    """``changed_inodes`` plus every (parent dir inode, name) of each of them.

    The names come from the same search where it saw them all (an inode's back references sit
    next to its inode item, so the rewritten leaf usually holds them; "all" means as many as the
    inode's link count); the rest are looked up one inode at a time (``inode_refs``).
    """
    items: dict[int, InodeItem] = {}
    refs: dict[int, list[tuple[int, str]]] = {}
    for it in tree_search(fd, 0, min_transid=since + 1, types=_REF_TYPES):
        if it.type == INODE_ITEM_KEY:
            item = parse_inode_item(it.objectid, it.data)
            if item.transid > since:
                items[it.objectid] = item
        else:
            refs.setdefault(it.objectid, []).extend(_parse_refs(it))
    out: dict[int, list[tuple[int, str]]] = {}
    for ino, item in items.items():
        have = refs.get(ino, [])
        is_dir = (item.mode & 0o170000) == 0o040000
        complete = len(have) == (1 if is_dir else item.nlink)
        out[ino] = have if complete else inode_refs(fd, ino)
    return items, out


def _parse_refs(it: Item) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    d, pos = it.data, 0
    if it.type == INODE_REF_KEY:            # {u64 index; u16 name_len; name}*, parent = offset
        while pos + 10 <= len(d):
            (n,) = struct.unpack_from("<H", d, pos + 8)
            out.append((it.offset, os.fsdecode(d[pos + 10:pos + 10 + n])))
            pos += 10 + n
    elif it.type == INODE_EXTREF_KEY:       # {u64 parent; u64 index; u16 name_len; name}*
        while pos + 18 <= len(d):
            parent, _idx, n = struct.unpack_from("<QQH", d, pos)
            out.append((parent, os.fsdecode(d[pos + 18:pos + 18 + n])))
            pos += 18 + n
    return out


def inode_refs(fd: int, ino: int) -> list[tuple[int, str]]:
    """Every (parent directory inode, name) of inode ``ino`` in the subvolume ``fd`` is in: all
    hard links, from INODE_REF and INODE_EXTREF items."""
    out: list[tuple[int, str]] = []
    for it in tree_search(fd, 0, (ino, INODE_REF_KEY, 0), (ino, INODE_EXTREF_KEY, U64),
                          types=_REF_TYPES):
        out += _parse_refs(it)
    return out


@dataclass(frozen=True)
class RootRef:
    """A subvolume inside another: its id, the directory inode holding it and its name there."""

    parent_id: int
    id: int
    dirid: int
    name: str


def child_subvolumes(fd: int, parent_id: int) -> list[RootRef]:
    """Subvolumes whose directory entry is inside subvolume ``parent_id`` (ROOT_REF items of the
    root tree). Only direct children; recurse for the rest. Needs CAP_SYS_ADMIN."""
    out = []
    for it in tree_search(fd, ROOT_TREE_OBJECTID, (parent_id, ROOT_REF_KEY, 0),
                          (parent_id, ROOT_REF_KEY, U64)):
        if it.type != ROOT_REF_KEY or it.objectid != parent_id:
            continue
        dirid, _seq, n = struct.unpack_from("<QQH", it.data, 0)
        out.append(RootRef(parent_id, it.offset, dirid, os.fsdecode(it.data[18:18 + n])))
    return out


def delete_recursive(fd: int, subvolid: int) -> int:
    """Delete subvolume ``subvolid`` and every subvolume nested inside it, deepest first, by id.
    Returns how many were deleted. Read-only nested ones are deleted too (as root, the RO flag
    does not prevent deletion)."""
    n = 0
    for child in child_subvolumes(fd, subvolid):
        n += delete_recursive(fd, child.id)
    subvol_delete_by_id(fd, subvolid)
    return n + 1


# --- quotas -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuotaStatus:
    flags: int

    @property
    def enabled(self) -> bool:
        return bool(self.flags & QGROUP_STATUS_FLAG_ON)

    @property
    def simple(self) -> bool:
        return bool(self.flags & QGROUP_STATUS_FLAG_SIMPLE_MODE)

    @property
    def inconsistent(self) -> bool:
        return bool(self.flags & QGROUP_STATUS_FLAG_INCONSISTENT)


def quota_status(fd: int) -> QuotaStatus | None:
    """The filesystem's quota status item, or None when quotas were never enabled (no quota
    tree: the search fails with ENOENT)."""
    try:
        for it in tree_search(fd, QUOTA_TREE_OBJECTID, (0, QGROUP_STATUS_KEY, 0),
                              (0, QGROUP_STATUS_KEY, U64)):
            if it.type == QGROUP_STATUS_KEY:
                _version, _gen, flags = struct.unpack_from("<QQQ", it.data, 0)
                return QuotaStatus(flags)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return None


def quota_enable(fd: int, simple: bool = False) -> None:
    """Turn quotas on for the whole filesystem. ``simple`` asks for simple quotas (Linux >= 6.7:
    extents are charged to the subvolume that wrote them, no back-reference walks)."""
    buf = bytearray(struct.pack("=QQ", QUOTA_CTL_ENABLE_SIMPLE_QUOTA if simple else QUOTA_CTL_ENABLE, 0))
    fcntl.ioctl(fd, IOC_QUOTA_CTL, buf)


def quota_disable(fd: int) -> None:
    fcntl.ioctl(fd, IOC_QUOTA_CTL, bytearray(struct.pack("=QQ", QUOTA_CTL_DISABLE, 0)))


def quota_rescan_wait(fd: int) -> None:
    fcntl.ioctl(fd, IOC_QUOTA_RESCAN_WAIT)


def qgroup_limit(fd: int, qgroupid: int, max_rfer: int | None = None,
                 max_excl: int | None = None) -> None:
    """Set the limits of qgroup ``qgroupid`` (a subvolume's own qgroup is "0/<id>", i.e. its id).
    A write that would push the group past a limit fails with EDQUOT."""
    flags = (QGROUP_LIMIT_MAX_RFER if max_rfer is not None else 0) | \
            (QGROUP_LIMIT_MAX_EXCL if max_excl is not None else 0)
    # struct btrfs_ioctl_qgroup_limit_args { __u64 qgroupid; struct btrfs_qgroup_limit {
    #   __u64 flags, max_rfer, max_excl, rsv_rfer, rsv_excl; } lim; }
    buf = bytearray(struct.pack("=QQQQQQ", qgroupid, flags, max_rfer or 0, max_excl or 0, 0, 0))
    fcntl.ioctl(fd, IOC_QGROUP_LIMIT, buf)


def qgroup_destroy(fd: int, qgroupid: int) -> None:
    """Remove qgroup ``qgroupid`` (QGROUP_CREATE with create=0)."""
    fcntl.ioctl(fd, IOC_QGROUP_CREATE, bytearray(struct.pack("=QQ", 0, qgroupid)))


@dataclass(frozen=True)
class QgroupInfo:
    qgroupid: int
    rfer: int       # bytes the subvolume references
    excl: int       # bytes only it references


def qgroup_info(fd: int, qgroupid: int) -> QgroupInfo | None:
    """Accounted usage of one qgroup as of the last commit (``sync`` first), or None."""
    try:
        for it in tree_search(fd, QUOTA_TREE_OBJECTID, (0, QGROUP_INFO_KEY, qgroupid),
                              (0, QGROUP_INFO_KEY, qgroupid)):
            if it.type == QGROUP_INFO_KEY and it.offset == qgroupid:
                _gen, rfer, _rc, excl, _ec = struct.unpack_from("<QQQQQ", it.data, 0)
                return QgroupInfo(qgroupid, rfer, excl)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return None


def qgroup_limits(fd: int, qgroupid: int) -> tuple[int, int] | None:
    """(max_rfer, max_excl) set on a qgroup (0 where unset), or None if it has no limit item."""
    try:
        for it in tree_search(fd, QUOTA_TREE_OBJECTID, (0, QGROUP_LIMIT_KEY, qgroupid),
                              (0, QGROUP_LIMIT_KEY, qgroupid)):
            if it.type == QGROUP_LIMIT_KEY and it.offset == qgroupid:
                flags, max_rfer, max_excl = struct.unpack_from("<QQQ", it.data, 0)
                return (max_rfer if flags & QGROUP_LIMIT_MAX_RFER else 0,
                        max_excl if flags & QGROUP_LIMIT_MAX_EXCL else 0)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return None
