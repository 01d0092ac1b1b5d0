"""The bench's own filesystems, cache dropping and clean-up of what a run leaves behind.

Why its own filesystems: the root filesystem of these machines is ext4 *without a journal*, and
creating thousands of files there after deleting thousands gets slower run after run
(MACHINE-NOTES). Every driver therefore runs on a filesystem the bench makes for the run: a
sparse image file in the work dir, ``mkfs``'d (ext4 with its journal and all inode tables
initialised up front, so no background ``ext4lazyinit`` runs during the measurements; btrfs for
the btrfs driver), attached to a loop device and mounted under the work dir. ``LoopFS.close``
undoes every step that was done, and ``sweep`` removes whatever a killed run left (mounts under
the work dir, loop devices backed by files in it), so a crash never poisons the next run.

The mount, loop and durability work is the bottom layer's (``drivers.sys.mount``, ``.loop``,
``.durable``, which the tests' ``tests/loopfs.py`` uses too); this module only adds the bench's
mkfs options and its cache handling.

Two kinds of caller: the runner (always this checkout, with this checkout's ``drivers``) makes
and sweeps the loop filesystems; the workers call ``rmtree``, ``umount_tree``, ``warm``,
``drop_caches``, ``syncfs``, ``fstype_of`` and ``mounts_under`` with the ``drivers`` of the
revision they measure, which in an A/B run may be an older base (``bench/revs.py``). So at
import and in those functions this module uses only names of ``drivers.sys`` that every base
since the bottom layer has; ``tests/bench/test_fs.py`` runs them against such a base.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Iterator

from drivers.sys import loop as sysloop
from drivers.sys import mount as sysmount
from drivers.sys.durable import syncfs  # noqa: F401 - the bench's name for it

try:
    from drivers.sys.mount import umount_tree as _umount_tree
except ImportError:  # a worker measuring an A/B base from before it (revision 714c715 and older)
    _umount_tree = None

EXTRA_MKFS_ARGS = {
    "ext4": ["-i", "32768"],  # fewer inode tables to initialise: mkfs of a 16 GiB image in ~1 s
}
FS_TYPES = ("ext4", "btrfs", "xfs")
LoopFS = sysloop.LoopFS
loopfs_unavailable = sysloop.loopfs_skip_reason
"""Why a loop ``fstype`` cannot be made here (None: it can)."""


class FsError(RuntimeError):
    """A filesystem step of the bench failed; the message says which."""


def mounts_under(root: str | os.PathLike[str]) -> list[str]:
    """Mount points at or below ``root`` (resolved), in mount order."""
    return [m.mount_point for m in sysmount.mounts_under(root)]


def is_mounted(path: str | os.PathLike[str]) -> bool:
    return sysmount.is_mount_point(path)


def fstype_of(path: str | os.PathLike[str]) -> str:
    """The filesystem type of the mount holding ``path`` (longest matching mount point)."""
    return sysmount.fstype_of(path)


def umount_tree(root: str | os.PathLike[str]) -> list[str]:
    """Unmount everything at or below ``root``, innermost first; a mount that stays busy is
    detached lazily. Returns the errors met (empty: clean). ``drivers.sys.mount.umount_tree``;
    a worker measuring an A/B base from before it detaches each mount lazily at once."""
    if _umount_tree is not None:
        return _umount_tree(root)
    for m in reversed(sysmount.mounts_under(root)):  # with the primitives such a base has
        with contextlib.suppress(OSError):
            sysmount.umount(m.mount_point, sysmount.UMOUNT_NOFOLLOW | sysmount.MNT_DETACH)
    left = mounts_under(root)
    return [f"still mounted under {root}: {left}"] if left else []


def loop_devices_backed_by(directory: str | os.PathLike[str]) -> list[str]:
    """Loop devices whose backing file lies under ``directory`` (runner side)."""
    return sysloop.loop_devices_backed_by(directory)


def sweep(work_dir: str | os.PathLike[str]) -> list[str]:
    """Remove what a previous (killed) run left under ``work_dir``: every mount below it and
    every loop device backed by a file below it (runner side). Never touches anything outside."""
    return sysloop.sweep(work_dir)


def make_loopfs(base: Path, fstype: str, size: int, name: str | None = None) -> LoopFS:
    """Create a sparse image in ``base``, mkfs it with the bench's options, attach and mount it
    at ``base/<name>`` (runner side). On failure every step done so far is undone before the
    error propagates; an image a killed run left under that name is replaced."""
    reason = loopfs_unavailable(fstype)
    if reason:
        raise FsError(f"cannot make a loop {fstype}: {reason}")
    stem = name or f"loop-{fstype}"
    with contextlib.suppress(FileNotFoundError):
        (Path(base) / f"{stem}.img").unlink()
    return sysloop.make_loop_filesystem(base, fstype, size, EXTRA_MKFS_ARGS.get(fstype, ()), name=stem)


@contextlib.contextmanager
def loop_filesystem(base: Path, fstype: str, size: int, name: str | None = None) -> Iterator[LoopFS]:
    fs = make_loopfs(base, fstype, size, name)
    try:
        yield fs
    finally:
        fs.close()


# ---- caches ---------------------------------------------------------------------------------

_POSIX_FADV_DONTNEED = os.POSIX_FADV_DONTNEED


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
