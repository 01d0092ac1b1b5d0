"""The bench's own filesystems, cache dropping and clean-up of what a run leaves behind.

Why its own filesystems: the root filesystem of these machines is ext4 *without a journal*, and
creating thousands of files there after deleting thousands gets slower run after run
(MACHINE-NOTES). Every driver therefore runs on a filesystem the bench makes for the run: a
sparse image file in the work dir, ``mkfs``'d (ext4 with its journal and all inode tables
initialised up front, so no background ``ext4lazyinit`` runs during the measurements; btrfs for
the btrfs driver), attached to a loop device and mounted under the work dir. ``LoopFS.close``
undoes every step that was done, and ``sweep`` removes whatever a killed run left (mounts under
the work dir, loop devices backed by files in it), so a crash never poisons the next run.

This module does not import ``tests/`` (its ``loopfs.py`` is the tests' own); the idea is the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

MKFS_ARGS = {
    # lazy_*_init=0: initialise inode tables and journal at mkfs time, not in a kernel thread
    # that would write in the background while phases are timed.
    "ext4": ["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-i", "32768"],
    "btrfs": ["-q", "-f"],
    "xfs": ["-q", "-f"],
}
FS_TYPES = tuple(MKFS_ARGS)


class FsError(RuntimeError):
    """A filesystem step failed (mkfs, losetup, mount); the message names the command."""


def _run(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise FsError(f"{' '.join(argv)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()[:400]}")
    return p.stdout


def _unescape(field_: str) -> str:
    return (field_.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def mount_points() -> list[str]:
    """Every mount point of this mount namespace, in mount order."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return [_unescape(line.split(" ")[4]) for line in f if line.strip()]


def mounts_under(root: str | os.PathLike[str]) -> list[str]:
    """Mount points at or below ``root`` (resolved), in mount order."""
    r = os.path.realpath(root).rstrip("/")
    return [m for m in mount_points() if m == r or m.startswith(r + "/")]


def is_mounted(path: str | os.PathLike[str]) -> bool:
    return os.path.realpath(path) in mount_points()


def fstype_of(path: str | os.PathLike[str]) -> str:
    """The filesystem type of the mount holding ``path`` (longest matching mount point)."""
    target = os.path.realpath(path)
    best, fstype = "", ""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mp = _unescape(left.split(" ")[4])
            if (target == mp or target.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, fstype = mp, right.split(" ")[0]
    return fstype


def umount_tree(root: str | os.PathLike[str]) -> list[str]:
    """Unmount everything at or below ``root``, innermost first; a mount that stays busy is
    detached lazily. Returns the errors met (empty: clean)."""
    errors: list[str] = []
    for _ in range(50):
        mps = mounts_under(root)
        if not mps:
            return errors
        mp = mps[-1]
        p = subprocess.run(["umount", mp], capture_output=True, text=True)
        if p.returncode != 0:
            if "busy" in p.stderr:
                time.sleep(0.05)
                p = subprocess.run(["umount", "-l", mp], capture_output=True, text=True)
            if p.returncode != 0 and is_mounted(mp):
                errors.append(f"umount {mp}: {p.stderr.strip()}")
                return errors
    left = mounts_under(root)
    if left:
        errors.append(f"still mounted under {root}: {left}")
    return errors


def loop_devices_backed_by(directory: str | os.PathLike[str]) -> list[str]:
    """Loop devices whose backing file lies under ``directory`` (``losetup -J`` is not in every
    util-linux; the plain listing is parsed)."""
    d = os.path.realpath(directory).rstrip("/") + "/"
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    devs = []
    for line in out.splitlines():
        dev, _, rest = line.partition(":")
        start, end = rest.rfind("("), rest.rfind(")")
        if start < 0 or end < 0:
            continue
        backing = rest[start + 1:end].removesuffix(" (deleted)")
        if backing.startswith(d):
            devs.append(dev)
    return devs


def detach(device: str) -> str | None:
    """``losetup -d`` with a few retries (the kernel may hold the device a moment after umount).
    Returns an error message, or None."""
    msg = ""
    for _ in range(40):
        p = subprocess.run(["losetup", "-d", device], capture_output=True, text=True)
        if p.returncode == 0 or "No such device" in p.stderr:
            return None
        msg = p.stderr.strip()
        time.sleep(0.05)
    return f"losetup -d {device}: {msg}"


def sweep(work_dir: str | os.PathLike[str]) -> list[str]:
    """Remove what a previous (killed) run left under ``work_dir``: every mount below it and
    every loop device backed by a file below it. Never touches anything outside it."""
    if not os.path.isdir(work_dir):
        return []
    errors = umount_tree(work_dir)
    for dev in loop_devices_backed_by(work_dir):
        err = detach(dev)
        if err:
            errors.append(err)
    return errors


def loopfs_unavailable(fstype: str) -> str | None:
    """Why a loop ``fstype`` cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "loop filesystems need root"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control (loop driver missing)"
    for tool in ("losetup", "mount", "umount", f"mkfs.{fstype}"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    with open("/proc/filesystems", encoding="ascii") as f:
        known = {ln.split()[-1] for ln in f if ln.strip()}
    if fstype not in known:
        subprocess.run(["modprobe", "-q", fstype], capture_output=True, check=False)
        with open("/proc/filesystems", encoding="ascii") as f:
            known = {ln.split()[-1] for ln in f if ln.strip()}
        if fstype not in known:
            return f"kernel has no {fstype}"
    return None


@dataclass
class LoopFS:
    """One loop-backed filesystem. ``close`` undoes whatever was done; twice is harmless."""

    image: Path
    mountpoint: Path
    fstype: str
    size: int
    device: str | None = None
    errors: list[str] = field(default_factory=list)

    def close(self) -> None:
        try:
            self.errors += umount_tree(self.mountpoint)
        finally:
            try:
                if self.device:
                    err = detach(self.device)
                    if err:
                        self.errors.append(err)
                    self.device = None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    self.image.unlink()
                with contextlib.suppress(OSError):
                    self.mountpoint.rmdir()

    def __enter__(self) -> "LoopFS":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, object]:
        return {"fstype": self.fstype, "size": self.size, "device": self.device,
                "mkfs": " ".join(MKFS_ARGS.get(self.fstype, [])), "mountpoint": str(self.mountpoint)}


def make_loopfs(base: Path, fstype: str, size: int, name: str | None = None) -> LoopFS:
    """Create a sparse image in ``base``, mkfs it, attach and mount it at ``base/<name>``.
    On failure every step done so far is undone before the error propagates."""
    reason = loopfs_unavailable(fstype)
    if reason:
        raise FsError(f"cannot make a loop {fstype}: {reason}")
    base.mkdir(parents=True, exist_ok=True)
    stem = name or f"loop-{fstype}"
    fs = LoopFS(image=base / f"{stem}.img", mountpoint=base / stem, fstype=fstype, size=size)
    try:
        with contextlib.suppress(FileNotFoundError):
            fs.image.unlink()
        with open(fs.image, "xb") as f:
            f.truncate(size)  # sparse: costs disk only as it is written
        _run(f"mkfs.{fstype}", *MKFS_ARGS.get(fstype, []), str(fs.image))
        fs.device = _run("losetup", "--find", "--show", str(fs.image)).strip()
        fs.mountpoint.mkdir(exist_ok=True)
        _run("mount", "-t", fstype, fs.device, str(fs.mountpoint))
        return fs
    except BaseException:
        fs.close()
        raise


@contextlib.contextmanager
def loop_filesystem(base: Path, fstype: str, size: int, name: str | None = None) -> Iterator[LoopFS]:
    fs = make_loopfs(base, fstype, size, name)
    try:
        yield fs
    finally:
        fs.close()


# ---- caches ---------------------------------------------------------------------------------

_POSIX_FADV_DONTNEED = 4


def _fadvise_tree(roots: Iterable[str | os.PathLike[str]]) -> None:
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                try:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, _POSIX_FADV_DONTNEED)
                except OSError:
                    pass
                finally:
                    os.close(fd)


def drop_caches(roots: Iterable[str | os.PathLike[str]] = (), level: int = 3) -> str:
    """Make the next reads of ``roots`` cold. As root: ``sync`` then ``echo LEVEL >
    /proc/sys/vm/drop_caches`` (3: page cache, dentries and inodes). Where that is refused,
    ``posix_fadvise(DONTNEED)`` on every file under ``roots`` (page cache only; dentries stay
    warm). Returns the method used, which the results record."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as f:
            f.write(f"{level}\n")
        return f"drop_caches={level}"
    except OSError:
        _fadvise_tree(roots)
        return "fadvise"


def syncfs(path: str | os.PathLike[str]) -> None:
    """syncfs(2) on the filesystem holding ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), str(path))
    finally:
        os.close(fd)


def warm(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Read files (or every file under directories) once, so a timed phase reads its *source*
    from the page cache; returns bytes read."""
    n = 0
    buf = bytearray(1 << 20)
    for p in paths:
        p = os.fspath(p)
        files = [p] if not os.path.isdir(p) else [
            os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs]
        for path in files:
            try:
                with open(path, "rb", buffering=0) as f:
                    while True:
                        k = f.readinto(buf)
                        if not k:
                            break
                        n += k
            except OSError:
                continue
    return n


def rmtree(path: str | os.PathLike[str]) -> None:
    """Delete a tree the bench made; mounts below it are unmounted first (a tree holding a
    mount must never be deleted through the mount)."""
    if not os.path.lexists(path):
        return
    errors = umount_tree(path)
    if errors:
        raise FsError("; ".join(errors))
    try:
        shutil.rmtree(path)
    except OSError:
        if fstype_of(path) != "btrfs" or shutil.which("btrfs") is None:
            raise
        # read-only subvolumes (the btrfs driver's applied layers) refuse unlinks: clear the
        # flag on every subvolume root (inode 256 on btrfs), then delete again
        for dirpath, dirs, _ in os.walk(path):
            for d in dirs:
                full = os.path.join(dirpath, d)
                with contextlib.suppress(OSError):
                    if os.lstat(full).st_ino == 256:
                        subprocess.run(["btrfs", "property", "set", "-ts", full, "ro", "false"],
                                       capture_output=True, check=False)
        shutil.rmtree(path)
