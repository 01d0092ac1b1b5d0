"""A real filesystem of a chosen type (btrfs, ext4, xfs...) on a loop device, for tests and benches.

Why: the root filesystem here is ext4 without a journal (see MACHINE-NOTES), and a driver such as
btrfs needs its own filesystem anyway. Each ``LoopFS`` is a sparse image file in a temp dir,
``mkfs``'d, attached to a free loop device and mounted in that same temp dir; ``close`` (and the
context manager, also on error) undoes every step that was done: unmount (lazily if it stays busy),
detach the loop device, delete the image. Nothing is left behind, which ``leftovers`` checks;
``sweep`` removes what a killed process left under a directory (mounts, loop devices).

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

MKFS_ARGS = {
    # what every loop filesystem here is made with (lazy_*_init=0: inode tables and journal are
    # initialised by mkfs, not by a kernel thread writing in the background afterwards)
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


class LoopError(RuntimeError):
    """A step of making a loop filesystem failed (mkfs, losetup, mount); the message names the
    command and what it said."""


def _run(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise LoopError(f"{' '.join(argv)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()[:400]}")
    return p.stdout


def loop_devices_backed_by(directory: str | os.PathLike[str]) -> list[str]:
    """Loop devices whose backing file lies under ``directory`` (a killed run's leftovers are
    found this way; ``losetup -J`` is not in every util-linux, so the plain listing is parsed)."""
    d = os.path.realpath(directory).rstrip("/") + "/"
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    devs = []
    for line in out.splitlines():
        dev, _, rest = line.partition(":")
        start, end = rest.rfind("("), rest.rfind(")")
        if start < 0 or end < 0:
            continue
        if rest[start + 1:end].removesuffix(" (deleted)").startswith(d):
            devs.append(dev)
    return devs


def detach(device: str, timeout: float = 15.0) -> str | None:
    """``losetup -d device`` with retries (the kernel may hold the device a moment after the
    umount), then wait until it is really free: ``losetup -d`` of a device a filesystem still
    holds only marks it for auto-clear, and btrfs drops its last reference shortly after umount
    returns, so a leak check right after would see it. Returns an error line, or None.
    Repeat: harmless (a device already gone is not an error)."""
    msg = ""
    for _ in range(40):
        p = subprocess.run(["losetup", "-d", device], capture_output=True, text=True)
        if p.returncode == 0 or "No such device" in p.stderr:
            break
        msg = p.stderr.strip()
        time.sleep(0.05)
    else:
        return f"losetup -d {device}: {msg}"
    backing = Path("/sys/block") / Path(device).name / "loop" / "backing_file"
    deadline = time.monotonic() + timeout
    while backing.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if backing.exists():
        return f"{device} still attached {timeout:.0f} s after losetup -d"
    return None


def sweep(directory: str | os.PathLike[str]) -> list[str]:
    """Remove what a killed run left under ``directory``: every mount at or below it and every
    loop device backed by a file below it. Never touches anything outside it. Returns the
    errors met (empty: clean)."""
    if not os.path.isdir(directory):
        return []
    errors = mountapi.umount_tree(directory)
    for dev in loop_devices_backed_by(directory):
        err = detach(dev)
        if err:
            errors.append(err)
    return errors


@dataclass
class LoopFS:
    """One loop-backed filesystem. ``close`` undoes whatever was done; calling it twice is harmless."""

    image: Path
    mountpoint: Path
    fstype: str
    device: str | None = None
    mounted: bool = False
    errors: list[str] = field(default_factory=list)
    size: int = 0
    mkfs_args: tuple[str, ...] = ()

    def close(self) -> None:
        try:
            # a test may have left a bind mount inside; a busy mount is detached lazily, and
            # its loop device is auto-cleared when the last user goes
            self.errors += mountapi.umount_tree(self.mountpoint)
            self.mounted = False
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

    def describe(self) -> dict[str, object]:
        """What this filesystem is, for a record of where something ran (the bench's results)."""
        return {"fstype": self.fstype, "size": self.size, "device": self.device,
                "mkfs": " ".join(self.mkfs_args), "mountpoint": str(self.mountpoint)}

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
    args = (*MKFS_ARGS.get(fstype, []), *mkfs_args)
    fs = LoopFS(image=base / f"{stem}.img", mountpoint=base / stem, fstype=fstype,
                size=parse_size(size), mkfs_args=args)
    # an existing image is refused before anything is made: the clean-up below removes only
    # what this call created, never a file that was there before
    with open(fs.image, "xb") as f:
        try:
            f.truncate(fs.size)          # sparse: costs no disk until written
        except BaseException:
            fs.image.unlink()
            raise
    try:
        _run(f"mkfs.{fstype}", *args, str(fs.image))
        fs.device = _run("losetup", "--find", "--show", str(fs.image)).strip()
        fs.mountpoint.mkdir(exist_ok=True)
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
