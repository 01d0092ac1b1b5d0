"""A real filesystem of a chosen type (btrfs, ext4, xfs...) on a loop device, for tests and benches.

Why: the root filesystem here is ext4 without a journal (see MACHINE-NOTES), and a driver such as
btrfs needs its own filesystem anyway. Each ``LoopFS`` is a sparse image file in a temp dir,
``mkfs``'d, attached to a free loop device and mounted in that same temp dir; ``close`` (and the
context manager, also on error) undoes every step that was done: unmount (lazily if it stays busy),
detach the loop device, delete the image. Nothing is left behind, which ``leftovers`` checks.

Use::

    from drivers.sys.loop import loop_filesystem, loopfs_skip_reason

    with loop_filesystem(tmp_path, "btrfs", size="512M") as fs:
        fs.mountpoint      # Path of the mounted filesystem

(tests: the fixtures ``loop_btrfs`` / ``loop_ext4`` in ``tests/loopfs.py``). Needs root, /dev/loop-control, the kernel filesystem and its ``mkfs.<type>``;
``loopfs_skip_reason(fstype)`` says what is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from drivers.sys import mount as mountapi

_MKFS_ARGS = {
    "btrfs": ["-q", "-f"],
    "ext4": ["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
    "xfs": ["-q", "-f"],
}

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(size: str | int) -> int:
    """``"512M"`` -> bytes (binary units K, M, G, T; a bare number is bytes)."""
    if isinstance(size, int):
        return size
    s = size.strip().upper().removesuffix("B").removesuffix("I")
    unit = s[-1] if s and s[-1] in _SIZE_UNITS else ""
    num = s[:-1] if unit else s
    if not num.isdigit():
        raise ValueError(f"invalid size: {size!r}")
    return int(num) * _SIZE_UNITS[unit]


def _kernel_has(fstype: str) -> bool:
    try:
        with open("/proc/filesystems", encoding="ascii") as f:
            if any(line.split()[-1] == fstype for line in f if line.strip()):
                return True
    except OSError:
        return False
    # Not loaded yet: a module may still exist; modprobe quietly (harmless if built in / absent).
    subprocess.run(["modprobe", "-q", fstype], check=False, capture_output=True)
    with open("/proc/filesystems", encoding="ascii") as f:
        return any(line.split()[-1] == fstype for line in f if line.strip())


def loopfs_skip_reason(fstype: str = "btrfs") -> str | None:
    """Why a loop ``fstype`` cannot be made here, or None if it can."""
    if os.geteuid() != 0:
        return "loop filesystems need root"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control (loop driver missing)"
    for tool in ("losetup", "mount", "umount", f"mkfs.{fstype}"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not _kernel_has(fstype):
        return f"kernel has no {fstype}"
    return None


def _run(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def _is_mounted(path: Path) -> bool:
    return mountapi.is_mount_point(os.path.realpath(path))


@dataclass
class LoopFS:
    """One loop-backed filesystem. ``close`` undoes whatever was done; calling it twice is harmless."""

    image: Path
    mountpoint: Path
    fstype: str
    device: str | None = None
    mounted: bool = False
    errors: list[str] = field(default_factory=list)

    def close(self) -> None:
        try:
            if self.mounted or _is_mounted(self.mountpoint):
                self._umount_all()
            self.mounted = False
        finally:
            try:
                if self.device:
                    self._detach()
                    self._wait_detached()
                    self.device = None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    self.image.unlink()
                with contextlib.suppress(OSError):
                    self.mountpoint.rmdir()

    def _umount_all(self) -> None:
        # Unmount whatever sits on (or under) the mount point, innermost first; a test may have
        # left a bind mount. If a mount stays busy (a process holds a file), detach it lazily:
        # the kernel finishes when the last user goes, and the loop device is auto-cleared then.
        for _ in range(20):
            if not _is_mounted(self.mountpoint):
                return
            p = subprocess.run(["umount", "-R", str(self.mountpoint)], capture_output=True, text=True)
            if p.returncode == 0:
                continue
            if "busy" in p.stderr:
                time.sleep(0.05)
                continue
            self.errors.append(p.stderr.strip())
            break
        if _is_mounted(self.mountpoint):
            subprocess.run(["umount", "-R", "-l", str(self.mountpoint)], capture_output=True)

    def _detach(self) -> None:
        assert self.device is not None
        for _ in range(20):
            p = subprocess.run(["losetup", "-d", self.device], capture_output=True, text=True)
            if p.returncode == 0 or "No such device" in p.stderr or "No such device or address" in p.stderr:
                return
            time.sleep(0.05)
        self.errors.append(f"losetup -d {self.device}: {p.stderr.strip()}")

    def _wait_detached(self, timeout: float = 15.0) -> None:
        """``losetup -d`` of a device the filesystem still holds only marks it for auto-clear;
        btrfs drops its last reference to the device shortly after umount returns. Wait for the
        detach to finish so the caller's leak check sees the real end state."""
        assert self.device is not None
        backing = Path("/sys/block") / Path(self.device).name / "loop" / "backing_file"
        deadline = time.monotonic() + timeout
        while backing.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if backing.exists():
            self.errors.append(f"{self.device} still attached {timeout:.0f} s after losetup -d")

    def __enter__(self) -> "LoopFS":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_loop_filesystem(base: Path, fstype: str = "btrfs", size: str | int = "512M",
                         mkfs_args: Iterable[str] = (), mount_options: str | None = None,
                         name: str | None = None) -> LoopFS:
    """Create, attach and mount a loop filesystem under ``base``; the caller must ``close`` it.
    On any failure everything done so far is undone before the error propagates."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stem = name or f"loop-{fstype}"
    fs = LoopFS(image=base / f"{stem}.img", mountpoint=base / stem, fstype=fstype)
    try:
        with open(fs.image, "xb") as f:
            f.truncate(parse_size(size))          # sparse: costs no disk until written
        _run(f"mkfs.{fstype}", *_MKFS_ARGS.get(fstype, []), *mkfs_args, str(fs.image))
        fs.device = _run("losetup", "--find", "--show", str(fs.image)).strip()
        fs.mountpoint.mkdir()
        argv = ["mount", "-t", fstype]
        if mount_options:
            argv += ["-o", mount_options]
        _run(*argv, fs.device, str(fs.mountpoint))
        fs.mounted = True
        return fs
    except BaseException:
        fs.close()
        raise


@contextlib.contextmanager
def loop_filesystem(base: Path, fstype: str = "btrfs", size: str | int = "512M",
                    mkfs_args: Iterable[str] = (), mount_options: str | None = None,
                    name: str | None = None) -> Iterator[LoopFS]:
    """``make_loop_filesystem`` as a context manager: torn down on exit, also on error."""
    fs = make_loop_filesystem(base, fstype, size, mkfs_args, mount_options, name)
    try:
        yield fs
    finally:
        fs.close()


def leftovers(images: Iterable[Path], mountpoints: Iterable[Path] = ()) -> list[str]:
    """What is still attached or mounted of the given images / mount points: the lines of
    ``losetup -a`` naming one of ``images`` and mountinfo entries at or under ``mountpoints``.
    An empty list means clean."""
    imgs = [os.path.realpath(p) for p in images]
    mps = [os.path.realpath(p) for p in mountpoints]
    found: list[str] = []
    if imgs:
        out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
        found += [ln for ln in out.splitlines() if any(f"({i})" in ln or f"({i} (deleted))" in ln for i in imgs)]
    if mps:
        for m in mps:
            found += [f"{mi.mount_point} ({mi.fstype} from {mi.source})" for mi in mountapi.mounts_under(m)]
    return found
