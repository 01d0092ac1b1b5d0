"""Mounting from Python: the new mount API, mount(2)/umount(2) and /proc/self/mountinfo.

Why ctypes and not ``mount(8)``: a driver mounts on every ``get`` and a fork+exec of the mount
helper costs more than the mount itself; and the new mount API (Linux >= 5.2; overlayfs'
``lowerdir+`` key from 6.8) has no command-line front that passes lower dirs one at a time.

The new mount API in four calls::

    fd = fsopen("overlay")                 # an fs context; the kernel logs its complaints into it
    fsconfig(fd, SET_STRING, key, value)   # one option per call (no page-size option string)
    fsconfig(fd, CMD_CREATE)               # build the superblock
    mfd = fsmount(fd, attrs)               # a detached mount, referenced by an fd
    move_mount(mfd, "", AT_FDCWD, target, F_EMPTY_PATH)   # attach it

Both fds must be closed before the mount is unmounted again: an open fsmount fd pins the mount
and ``umount`` then fails with EBUSY. ``FsContext`` closes them as soon as the mount is attached.

Errors carry the kernel's own words: ``MountError.log`` holds the lines the filesystem wrote to
the context's log (``read(2)`` on the fsopen fd), e.g. ``overlay: too many lower directories,
limit is 500``. mount(2) has no such log (the kernel writes to dmesg only), so its errors carry
the errno alone.

Nothing here knows about lamina's errors or layers; the overlay driver (and any other driver with
mounts, e.g. fuse) builds on it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

from drivers.sys.libc import libc
from drivers.sys.record import Frozen

_libc = libc
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int

# Since Linux 5.1 every architecture numbers new syscalls alike (the "unified" table from 424 on),
# except alpha (+110) and the MIPS ABIs (offset bases), which we leave to mount(2).
_UNIFIED = {"open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
            "fspick": 433, "mount_setattr": 442}
_UNIFIED_ARCHES = {"x86_64", "amd64", "i386", "i486", "i586", "i686", "aarch64", "arm64", "armv6l",
                   "armv7l", "armv8l", "riscv64", "ppc64", "ppc64le", "s390x", "loongarch64"}
_ALPHA = {k: v + 110 for k, v in _UNIFIED.items()}


def _syscall_table(machine: str) -> dict[str, int] | None:
    if machine in _UNIFIED_ARCHES:
        return _UNIFIED
    if machine == "alpha":
        return _ALPHA
    return None


SYSCALLS: dict[str, int] | None = _syscall_table(os.uname().machine)  # platform.machine(), without platform's import

AT_FDCWD = -100

FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8

MNT_FORCE = 0x1
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# fsconfig(2) copies a string value with strndup_user(value, 256): longer values are refused.
FSCONFIG_MAX_STRING = 255
# mount(2) copies at most one page of option data.
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class MountError(OSError):
    """A mount call failed. ``errno`` as usual; ``log`` holds the filesystem's own messages
    (from the fs context log; empty for mount(2)); ``step`` names the call that failed."""

    def __init__(self, err: int, step: str, target: str, log: list[str] | None = None) -> None:
        self.step = step
        self.log = list(log or [])
        detail = "; ".join(self.log) if self.log else os.strerror(err)
        super().__init__(err, f"{step}: {detail}", target)

    @property
    def kernel_message(self) -> str:
        """The filesystem's error lines (``e ...``), prefix dropped; else the errno text."""
        errors = [line[2:] for line in self.log if line.startswith("e ")]
        return "; ".join(errors or self.log) or os.strerror(self.errno or 0)


def _check(ret: int, step: str, target: str, log: list[str] | None = None) -> int:
    if ret < 0:
        raise MountError(ctypes.get_errno(), step, target, log)
    return ret


def _b(s: str | os.PathLike[str] | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def new_api_available() -> bool:
    """Whether this kernel and architecture give us fsopen/fsconfig/fsmount/move_mount."""
    if SYSCALLS is None:
        return False
    try:
        fd = _fsopen("overlay") if _has_fs("overlay") else _fsopen("tmpfs")
    except MountError:
        return False
    os.close(fd)
    return True


def _has_fs(name: str) -> bool:
    return name in filesystems()


def filesystems() -> set[str]:
    """Filesystem types the kernel knows now (``/proc/filesystems``)."""
    with open("/proc/filesystems", encoding="ascii") as f:
        return {line.split()[-1] for line in f if line.strip()}


_fsconfig_call: Callable[[int, int, bytes | None, bytes | None, int], int]
if SYSCALLS is not None:
    # A typed function pointer to syscall(2) with fsconfig's signature: ctypes converts the
    # arguments itself, which is what makes one call per lower dir cheap.
    _fsconfig_proto = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_int, ctypes.c_uint,
                                       ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                       use_errno=True)
    _fsconfig_raw = _fsconfig_proto(("syscall", _libc))
    _FSCONFIG_NR = SYSCALLS["fsconfig"]

    def _fsconfig_call(fd: int, cmd: int, key: bytes | None, value: bytes | None, aux: int) -> int:
        return int(_fsconfig_raw(_FSCONFIG_NR, fd, cmd, key, value, aux))


def _fsopen(fstype: str) -> int:
    assert SYSCALLS is not None
    ret = _libc.syscall(ctypes.c_long(SYSCALLS["fsopen"]), ctypes.c_char_p(_b(fstype)),
                        ctypes.c_uint(FSOPEN_CLOEXEC))
    return _check(ret, "fsopen", fstype)


class FsContext:
    """One fsopen(2) context: configure, create, attach; always closes its fds.

    Requires: ``new_api_available()``.
    Use as a context manager; ``attach`` may be called once. Errors raise ``MountError`` with the
    context log read at the moment of failure.
    """

    def __init__(self, fstype: str) -> None:
        if SYSCALLS is None:
            raise MountError(errno.ENOSYS, "fsopen", fstype)
        self.fstype = fstype
        self.fd = _fsopen(fstype)
        self._log: list[str] = []

    def __enter__(self) -> "FsContext":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def log(self) -> list[str]:
        """Drain the context's message log ("e ..." errors, "w ..." warnings, "i ..." info).
        Messages already drained by a failing call are kept and returned again."""
        while self.fd >= 0:
            try:
                msg = os.read(self.fd, 4096)
            except OSError as e:
                if e.errno == errno.ENODATA:
                    break
                raise
            self._log.append(msg.decode("utf-8", "replace").rstrip("\n"))
        return list(self._log)

    def _fsconfig(self, cmd: int, key: bytes | None, value: bytes | None) -> None:
        ret = _fsconfig_call(self.fd, cmd, key, value, 0)
        if ret < 0:
            err = ctypes.get_errno()
            k = "" if key is None else key.decode("utf-8", "replace")
            step = "fsconfig create" if cmd == FSCONFIG_CMD_CREATE else (
                f"fsconfig {k}" if value is None else f"fsconfig {k}={os.fsdecode(value)}")
            raise MountError(err, step, self.fstype, self.log())

    def set_string(self, key: str, value: str | os.PathLike[str]) -> None:
        """``fsconfig(FSCONFIG_SET_STRING, key, value)``. Values over 255 bytes are refused by
        the kernel; we refuse them first with ENAMETOOLONG so the message is clear. (Called
        once per lower dir, so kept lean: about 2 us of Python per call.)"""
        v = os.fsencode(value)
        if len(v) > FSCONFIG_MAX_STRING:
            raise MountError(errno.ENAMETOOLONG, f"fsconfig {key}", os.fsdecode(v),
                             [f"e {key} value longer than {FSCONFIG_MAX_STRING} bytes"])
        self._fsconfig(FSCONFIG_SET_STRING, key.encode(), v)

    def set_flag(self, key: str) -> None:
        self._fsconfig(FSCONFIG_SET_FLAG, key.encode(), None)

    def create(self) -> None:
        self._fsconfig(FSCONFIG_CMD_CREATE, None, None)

    def attach(self, target: str | os.PathLike[str], attrs: int = 0) -> None:
        """fsmount + move_mount onto ``target``; both fds are closed before returning, so a
        later umount is not refused as busy."""
        assert SYSCALLS is not None
        t = os.fsdecode(target)
        ret = _libc.syscall(ctypes.c_long(SYSCALLS["fsmount"]), ctypes.c_int(self.fd),
                            ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attrs))
        if ret < 0:
            raise MountError(ctypes.get_errno(), "fsmount", t, self.log())
        mfd = int(ret)
        try:
            ret = _libc.syscall(ctypes.c_long(SYSCALLS["move_mount"]), ctypes.c_int(mfd),
                                ctypes.c_char_p(b""), ctypes.c_int(AT_FDCWD),
                                ctypes.c_char_p(_b(t)), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
            _check(ret, "move_mount", t, self.log())
        finally:
            os.close(mfd)  # a detached mount that was never attached dies with its fd
        self.close()


def mount(source: str, target: str | os.PathLike[str], fstype: str, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2). ``data`` over a page is refused here with E2BIG (the kernel would cut it)."""
    t = os.fsdecode(target)
    if data is not None and len(os.fsencode(data)) >= PAGE_SIZE:
        raise MountError(errno.E2BIG, "mount", t, [f"e option string longer than {PAGE_SIZE - 1} bytes"])
    ret = _libc.mount(_b(source), _b(t), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(ret, "mount", t)


def umount(target: str | os.PathLike[str], flags: int = UMOUNT_NOFOLLOW) -> None:
    """umount2(2). Raises ``MountError`` (EINVAL: not a mount point; EBUSY: in use)."""
    t = os.fsdecode(target)
    _check(_libc.umount2(_b(t), ctypes.c_int(flags)), "umount", t)


CLONE_FS = 0x200
_libc.unshare.argtypes = [ctypes.c_int]
_libc.unshare.restype = ctypes.c_int

T = TypeVar("T")


def in_private_cwd(cwd: str | os.PathLike[str], fn: Callable[[], T]) -> T:
    """Run ``fn`` with ``cwd`` as working directory without moving this process's.

    A short-lived thread detaches its filesystem context (``unshare(CLONE_FS)``: cwd, root and
    umask become its own), changes into ``cwd`` and calls ``fn``; relative paths in ``fn`` (a
    mount(2) option string of ``l/<link>`` names) resolve from there while every other thread
    keeps its cwd. Costs a thread start (~0.1 ms), not a fork of the whole process.
    Exceptions of ``fn`` (and of the chdir) are raised in the caller.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            if _libc.unshare(CLONE_FS) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare(CLONE_FS): {os.strerror(err)}")
            os.chdir(cwd)
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, name="lamina-private-cwd")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


class MountInfo(Frozen):
    """One line of ``/proc/self/mountinfo`` (fields as proc(5) names them)."""

    __slots__ = ("mount_id", "parent_id", "major_minor", "root", "mount_point", "mount_options", "fstype", "source", "super_options")
    mount_id: int
    parent_id: int
    major_minor: str
    root: str
    mount_point: str
    mount_options: str
    fstype: str
    source: str
    super_options: str

    def super_option(self, key: str) -> str | None:
        """Value of ``key=value`` in the superblock options; "" for a bare flag; None if absent."""
        for opt in _split_options(self.super_options):
            k, sep, v = opt.partition("=")
            if k == key:
                return v if sep else ""
        return None


def _split_options(s: str) -> Iterator[str]:
    # overlay escapes commas inside paths as "\,"; keep them inside one option.
    cur: list[str] = []
    esc = False
    for ch in s:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            cur.append(ch)
            esc = True
        elif ch == ",":
            yield "".join(cur)
            cur = []
        else:
            cur.append(ch)
    if cur:
        yield "".join(cur)


def _unescape(s: str) -> str:
    # proc(5): space, tab, newline and backslash in paths appear as \040 \011 \012 \134.
    if "\\" not in s:
        return s
    out = bytearray()
    raw = os.fsencode(s)
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 3 < len(raw) and all(0x30 <= c <= 0x37 for c in raw[i + 1:i + 4]):
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def parse_mountinfo(text: str) -> list[MountInfo]:
    """Parse the text of a mountinfo file; robust to optional fields of any number."""
    result = []
    for line in text.splitlines():
        if not line:
            continue
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        f = left.split(" ")
        r = right.split(" ")
        if len(f) < 6 or len(r) < 3:
            continue
        result.append(MountInfo(
            mount_id=int(f[0]), parent_id=int(f[1]), major_minor=f[2], root=_unescape(f[3]),
            mount_point=_unescape(f[4]), mount_options=f[5], fstype=r[0], source=_unescape(r[1]),
            super_options=" ".join(r[2:])))
    return result


def mountinfo() -> list[MountInfo]:
    """The mounts this process sees, in mount order."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def mounts_under(root: str | os.PathLike[str]) -> list[MountInfo]:
    """Mounts at or below ``root`` (resolved), innermost last as mounted."""
    r = os.path.realpath(root)
    prefix = r.rstrip("/") + "/"
    return [m for m in mountinfo() if m.mount_point == r or m.mount_point.startswith(prefix)]


def umount_tree(root: str | os.PathLike[str], busy_for: float = 1.0) -> list[str]:
    """Unmount every mount at or below ``root``, innermost first (a test or a killed run may
    have left mounts inside mounts). A mount still busy after ``busy_for`` seconds of retries
    (a process holds a file in it) is detached lazily (``MNT_DETACH``: gone from the namespace
    now; the kernel finishes when the last user goes, and a loop device is freed then).
    Returns the errors met, one line each; empty means nothing is mounted there any more.
    Repeat: harmless (nothing mounted: nothing to do)."""
    errors: list[str] = []
    busy_since: float | None = None
    while True:
        left = mounts_under(root)
        if not left:
            return errors
        mp = left[-1].mount_point
        try:
            umount(mp)
            busy_since = None
            continue
        except MountError as e:
            err = e
        if err.errno == errno.EBUSY:
            now = time.monotonic()
            busy_since = now if busy_since is None else busy_since
            if now - busy_since < busy_for:
                time.sleep(0.05)
                continue
            try:
                umount(mp, UMOUNT_NOFOLLOW | MNT_DETACH)
                continue
            except MountError as e:
                err = e
        if err.errno == errno.EINVAL and not is_mount_point(mp):
            continue  # it went meanwhile (with a parent detached lazily)
        errors.append(f"umount {mp}: {err.strerror}")
        return errors


def is_mount_point(path: str | os.PathLike[str]) -> bool:
    p = os.path.realpath(path)
    return any(m.mount_point == p for m in mountinfo())


def fstype_of(path: str | os.PathLike[str]) -> str:
    """The filesystem type holding ``path`` (the deepest mount containing it)."""
    p = os.path.realpath(path)
    best: MountInfo | None = None
    for m in mountinfo():
        mp = m.mount_point
        if p == mp or p.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mount_point):
                best = m
    return best.fstype if best else ""
