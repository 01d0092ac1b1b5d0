"""The ``fuse`` graphdriver: overlayfs' semantics without overlayfs, in a helper process per mount.

For machines where the kernel's overlayfs cannot be used (nested containers, some rootless
setups, kernels without it), and the base for lazy pulling later. Layers are kept exactly as the
overlay driver keeps them (``drivers/diffdirs.py``: diff dirs with overlay whiteouts, a ``lower``
chain file, container layers with an upper ``diff`` and a ``work`` dir), so ``apply_diff``,
``diff``, ``changes`` and ``diff_size`` are the overlay driver's own, reading the upper dir
natively. Only mounting differs: ``get`` starts a helper (``python -m drivers.fuse.helper``) that
serves ``drivers.fuse.unionfs.UnionFS`` over FUSE on ``layers/<id>/merged``, and returns once the
mount is live; the helper outlives the calling process, so ``lamina mount`` in one CLI call and
a container started by another see the same rootfs.

Per layer, besides the diff-dir layout::

    home/layers/<id>/fuse.pid   the helper's ``<pid> <starttime>`` (written and removed by it)
    home/layers/<id>/fuse.log   the helper's stderr (why it failed or died), kept until the next
                                start
    home/probe.ok               ``supported()`` remembers a successful test mount

Lifecycle. ``get`` at count 0 (or with a count whose mount is missing or dead) unmounts whatever
is left at the mount point, starts a helper and waits for its "ready" (``READY_TIMEOUT``); counts
are kept on disk across processes (``RefCounts``), as the overlay driver does. ``put`` at the last
reference unmounts (``umount2`` as root, ``fusermount3 -u`` otherwise; lazily when something still
holds the tree, and the helper then serves the remaining users until they go) and waits for the
helper to exit (``STOP_TIMEOUT``); one that does not is killed: only that pid, after checking its
start time. Nothing waits on the helper without a timeout, and the driver never touches the mount
point itself (a stopped helper would make that hang): mounts are found in ``mountinfo`` and
helpers in ``/proc``.

A helper that died (crash, kill) leaves a dead mount: every access to it fails with ENOTCONN.
``check(id)`` reports that as ``Corrupt`` naming the helper's last words; ``get`` recovers by
unmounting the dead mount and starting a new helper (writes made before the crash are in the
upper dir; the writes in flight failed with ENOTCONN).

Reads: the kernel reads ahead up to ``READAHEAD_KB`` (set in sysfs after the mount; FUSE's
default of 128 KiB made a big file one request per 128 KiB).

Mount options: ``default_permissions`` (the kernel checks permissions from our attributes) and,
as root, ``allow_other`` (a container's users are not the mounter), ``dev`` and ``suid`` (a rootfs
has device nodes and set-id programs); read-only layers are mounted ``ro``.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from drivers.sys import mount as mountapi
from drivers.sys.proc import start_time
from drivers.base import CacheID
from drivers.diffdirs import DiffDirDriver, Layer, SweepLock, is_id, probe_once
from drivers.errors import Corrupt, NotFound, Unsupported

DEV_FUSE = "/dev/fuse"
READY_TIMEOUT = 30.0
"""Seconds ``get`` waits for a new helper's mount (a cold Python start can take a few)."""
STOP_TIMEOUT = 10.0
"""Seconds ``put`` waits for a helper to exit after a clean unmount before killing it."""
READAHEAD_KB = 1024
"""The mount's readahead window (see ``_set_readahead``)."""
FSTYPE = "fuse.lamina"
_TRUSTED_PROBE = "trusted.lamina.probe"
_PKG_PARENT = str(Path(__file__).resolve().parents[2])  # where ``-m drivers.fuse.helper`` imports from


def supported(home: Path) -> str | None:
    """Why the fuse driver cannot work with ``home`` here, or None if it can.

    Checks, in order: pyfuse3 and trio are installed; ``/dev/fuse`` exists and opens; the kernel
    has the fuse filesystem; we are root (the layers carry overlay whiteouts: ``trusted.*``
    xattrs and 0/0 devices); ``home`` stores ``trusted.*`` xattrs; a test mount of a FUSE
    filesystem works (remembered in ``home/probe.ok`` per kernel and filesystem of ``home``).
    Leaves nothing mounted.
    """
    for mod in ("pyfuse3", "trio"):
        if importlib.util.find_spec(mod) is None:
            return f"python module {mod} is not installed (pip install pyfuse3 trio; needs libfuse3)"
    if not os.path.exists(DEV_FUSE):
        return f"{DEV_FUSE} is missing (load the fuse module, or pass the device into this container)"
    try:
        os.close(os.open(DEV_FUSE, os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        return f"{DEV_FUSE} cannot be opened here: {e.strerror}"
    if "fuse" not in mountapi.filesystems():
        return "the kernel has no fuse filesystem"
    if os.geteuid() != 0:
        return ("the fuse driver needs root: its layers carry overlay whiteouts (trusted.overlay.* "
                "xattrs, 0/0 device nodes)")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create {home}: {e.strerror}"
    backing = mountapi.fstype_of(home)
    try:
        os.setxattr(home, _TRUSTED_PROBE, b"y")
    except OSError as e:
        return f"{backing} at {home} cannot store trusted.* xattrs ({e.strerror}); whiteouts need them"
    return probe_once(home, lambda: _probe_mount(home))


def _probe_mount(home: Path) -> str | None:
    """Mount a FUSE filesystem nobody serves and unmount it at once (no helper needed: the kernel
    queues the INIT request and the unmount aborts it)."""
    probe = home / f".probe-{secrets.token_hex(4)}"
    fd = -1
    try:
        with SweepLock(home, exclusive=False):
            probe.mkdir()
            fd = os.open(DEV_FUSE, os.O_RDWR | os.O_CLOEXEC)
            try:
                mountapi.mount("lamina-probe", probe, "fuse.lamina-probe",
                               mountapi.MS_NOSUID | mountapi.MS_NODEV,
                               f"fd={fd},rootmode=40000,user_id=0,group_id=0")
            except mountapi.MountError as e:
                return f"test mount of a FUSE filesystem under {home} refused: {e.strerror}"
            mountapi.umount(probe, mountapi.MNT_DETACH)
    except OSError as e:
        return f"test of FUSE under {home} failed: {e}"
    finally:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(probe, ignore_errors=True)
    return None


# ---------------------------------------------------------------------------------------------
# helper processes


def _alive(pid: int, start: int) -> bool:
    """Whether ``pid`` is still the process that started at ``start`` (and not a zombie)."""
    return start_time(pid) == start


def _wait_gone(pid: int, start: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for the process to end; True if it did."""
    try:
        pfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        pfd = -1
    deadline = time.monotonic() + timeout
    try:
        while _alive(pid, start):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if pfd >= 0:
                select.select([pfd], [], [], min(left, 0.5))
            else:
                time.sleep(min(left, 0.01))
        return True
    finally:
        if pfd >= 0:
            os.close(pfd)


class Helper:
    """The helper of one layer as its pid file names it."""

    def __init__(self, pid: int, start: int) -> None:
        self.pid, self.start = pid, start

    @staticmethod
    def of(layer: Layer) -> "Helper | None":
        try:
            pid, start = (int(x) for x in (layer.dir / "fuse.pid").read_text().split()[:2])
        except (OSError, ValueError):
            return None
        return Helper(pid, start)

    def alive(self) -> bool:
        return _alive(self.pid, self.start)

    def stop(self, timeout: float) -> None:
        """Wait for it to end; kill it (this pid only, if it is still the same process) if it
        does not within ``timeout``."""
        if _wait_gone(self.pid, self.start, timeout):
            return
        if _alive(self.pid, self.start):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            _wait_gone(self.pid, self.start, 5.0)


def _set_readahead(major_minor: str) -> None:
    """Let the kernel read ahead ``READAHEAD_KB`` on this mount (FUSE's default is 128 KiB, so a
    big file took one request per 128 KiB; libfuse takes requests of up to 1 MiB). Best effort:
    it is a speed-up, and only root may write the setting."""
    try:
        with open(f"/sys/class/bdi/{major_minor}/read_ahead_kb", "w") as f:
            f.write(str(READAHEAD_KB))
    except OSError:
        pass


def _pid_line(r: int) -> int:
    """A "pid N" line still unread in the ready pipe (non-blocking), or -1."""
    os.set_blocking(r, False)
    data = b""
    try:
        while chunk := os.read(r, 4096):
            data += chunk
    except BlockingIOError:
        pass
    for line in data.split(b"\n"):
        if line.startswith(b"pid "):
            try:
                return int(line[4:])
            except ValueError:
                pass
    return -1


def _last_words(layer: Layer) -> str:
    """The helper's last meaningful log line, for error messages."""
    try:
        lines = (layer.dir / "fuse.log").read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ", "^")):
            return line[-300:]
    return "none, its log is empty (killed by a signal?)"


# ---------------------------------------------------------------------------------------------
# the driver


class FuseDriver(DiffDirDriver):
    """Graphdriver on our own FUSE union filesystem (see the module docstring).

    ``ready_timeout`` / ``stop_timeout``: how long ``get`` waits for a helper's mount and ``put``
    for its exit (seconds). ``debug``: helpers log every request to their ``fuse.log``.
    """

    name = "fuse"

    def __init__(self, home: Path, *, ready_timeout: float = READY_TIMEOUT,
                 stop_timeout: float = STOP_TIMEOUT, debug: bool = False) -> None:
        self._init_layout(home)
        try:
            os.setxattr(self.empty, _TRUSTED_PROBE, b"y")
        except OSError as e:
            raise Unsupported(f"fuse: {mountapi.fstype_of(self.home)} at {self.home} cannot store "
                              f"trusted.* xattrs ({e.strerror}); overlay whiteouts need them") from None
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.debug = debug
        self._sweep(startup=True)

    # -- mount state -----------------------------------------------------------------------

    def _mount_entry(self, layer: Layer) -> mountapi.MountInfo | None:
        """Our mount on ``layer.merged``, from mountinfo (never by touching the mount point)."""
        target = str(layer.merged)
        found = None
        for m in mountapi.mountinfo():
            if m.mount_point == target:
                found = m
        return found

    def _mounted(self, layer: Layer) -> bool:
        m = self._mount_entry(layer)
        if m is None or not m.fstype.startswith("fuse"):
            return False
        h = Helper.of(layer)
        return h is not None and h.alive()

    def check(self, id: CacheID) -> None:
        """Raise ``Corrupt`` if the layer is held (``get``) but its mount is dead: its helper
        died, and every access to the tree fails with ENOTCONN. ``get`` recovers it (a new
        helper). NotFound if the layer does not exist; fine for an unheld layer."""
        layer = self._layer(id)
        if self.refs.count(id) == 0:
            return
        m = self._mount_entry(layer)
        if m is None:
            raise Corrupt(f"fuse layer {id} is held but not mounted (unmounted behind the "
                          f"driver's back); get it again to remount")
        if not self._mounted(layer):
            raise Corrupt(f"fuse layer {id}: its helper died and the mount at {layer.merged} is "
                          f"dead (ENOTCONN); get it again to restart it. Helper's last words: "
                          f"{_last_words(layer)}")

    # -- mount / unmount (the hooks of DiffDirDriver.get / put / remove) -----------------------

    def _mount(self, layer: Layer) -> None:
        if self._mount_entry(layer) is not None:
            self._unmount(layer)  # stale (no count) or dead (helper gone): clear the way
        for d, what in ((layer.merged, "mount point"), (layer.diff, "diff dir")):
            if not (d.is_dir() and not d.is_symlink()):
                raise Corrupt(f"fuse layer {layer.id}: its {what} {d} is not a directory")
        links = layer.chain if layer.rw else [layer.link, *layer.chain]
        lowers = [os.path.realpath(self._link_path(k)) for k in links]
        for p in lowers:
            if not os.path.isdir(p):
                raise Corrupt(f"fuse layer {layer.id}: a directory of its stack is missing ({p})")
        argv = [sys.executable, "-m", "drivers.fuse.helper", "--mountpoint", str(layer.merged),
                "--name", f"lamina:{layer.id}", "--pid-file", str(layer.dir / "fuse.pid")]
        if layer.rw:
            argv += ["--upper", str(layer.diff), "--work", str(layer.work)]
        for p in lowers:
            argv += ["--lower", p]
        for opt in self._options():
            argv += ["--option", opt]
        if self.debug:
            argv.append("--debug")
        (layer.dir / "fuse.pid").unlink(missing_ok=True)
        self._start(layer, argv)

    @staticmethod
    def _options() -> list[str]:
        opts = ["default_permissions"]
        if os.geteuid() == 0:
            opts += ["allow_other", "dev", "suid"]
        return opts

    def _start(self, layer: Layer, argv: list[str]) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = -1
        try:
            with open(layer.dir / "fuse.log", "wb") as log:
                p = subprocess.Popen([*argv, "--ready-fd", str(w)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=log, pass_fds=(w,),
                                     cwd=_PKG_PARENT, start_new_session=True)
            os.close(w)
            w = -1
            try:
                p.wait(timeout=self.ready_timeout)  # it detaches at once; the helper is its child
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise Unsupported(f"fuse helper for layer {layer.id} did not start within "
                                  f"{self.ready_timeout:g} s") from None
            status, pid = self._await_ready(layer, r)
            if status != "ready":
                raise Unsupported(f"fuse mount of layer {layer.id} failed: {status}")
            m = self._mount_entry(layer)
            if m is None:
                raise Corrupt(f"fuse helper for layer {layer.id} said ready but nothing is "
                              f"mounted at {layer.merged}")
            _set_readahead(m.major_minor)
        except BaseException:
            if w >= 0:
                os.close(w)
                w = -1
            self._abandon(layer, r, pid)
            r = -1
            raise
        finally:
            if r >= 0:
                os.close(r)
            if w >= 0:
                os.close(w)

    def _await_ready(self, layer: Layer, r: int) -> tuple[str, int]:
        """Read the helper's pipe until "ready", an error or the deadline; (status, pid)."""
        deadline = time.monotonic() + self.ready_timeout
        buf = b""
        pid = -1
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                word, _, rest = line.decode("utf-8", "replace").partition(" ")
                if word == "pid":
                    pid = int(rest)
                elif word == "ready":
                    return "ready", pid
                elif word == "error":
                    return rest, pid
            left = deadline - time.monotonic()
            if left <= 0:
                return f"no answer within {self.ready_timeout:g} s ({_last_words(layer)})", pid
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 4096)
            if not chunk:
                return f"the helper ended without a word ({_last_words(layer)})", pid
            buf += chunk

    def _abandon(self, layer: Layer, r: int, pid: int) -> None:
        """A start that failed: leave nothing mounted and no helper running. Closing our end of
        the pipe makes a helper that has not mounted yet give up by itself (its next word fails
        with EPIPE, and it unmounts what it mounted); one that told us its pid is killed, and
        whatever mount it left is taken down once it is gone."""
        if pid < 0:
            pid = _pid_line(r)
        os.close(r)
        if pid < 0:
            h = Helper.of(layer)
            pid = h.pid if h is not None else -1
        if pid > 0:
            start = start_time(pid)
            if start is not None:
                Helper(pid, start).stop(0.0)
        if self._mount_entry(layer) is not None:
            self._umount(layer.merged)
        (layer.dir / "fuse.pid").unlink(missing_ok=True)

    def _unmount(self, layer: Layer) -> None:
        """Unmount (lazily if busy) and see the helper gone; a no-op without a mount."""
        helper = Helper.of(layer)
        clean = True
        if self._mount_entry(layer) is not None:
            clean = self._umount(layer.merged)
        if helper is None:
            return
        if clean:
            helper.stop(self.stop_timeout)
            (layer.dir / "fuse.pid").unlink(missing_ok=True)
        # after a lazy detach the helper serves the remaining users and exits with the last one

    @staticmethod
    def _umount(target: Path) -> bool:
        """Unmount ``target``; False if it had to be detached lazily (still in use)."""
        if os.geteuid() != 0:
            p = subprocess.run(["fusermount3", "-u", "-q", str(target)], capture_output=True,
                               timeout=30)
            if p.returncode == 0:
                return True
            subprocess.run(["fusermount3", "-u", "-z", "-q", str(target)], capture_output=True,
                           timeout=30)
            return False
        try:
            mountapi.umount(target)
        except mountapi.MountError as e:
            if e.errno == errno.EBUSY:
                mountapi.umount(target, mountapi.MNT_DETACH | mountapi.UMOUNT_NOFOLLOW)
                return False
            if e.errno != errno.EINVAL:  # EINVAL: not mounted (any more)
                raise
        return True

    # -- status / cleanup ----------------------------------------------------------------------

    def status(self) -> dict[str, str]:
        mounted = dead = 0
        for m in self._mounts():
            rel = os.path.relpath(m.mount_point, self.home).split(os.sep)
            if len(rel) == 3 and rel[0] == "layers" and rel[2] == "merged" and is_id(rel[1]):
                mounted += 1
                try:
                    if not self._mounted(self._layer(CacheID(rel[1]))):
                        dead += 1
                except NotFound:
                    dead += 1
        return {
            "backing_fs": mountapi.fstype_of(self.home),
            "layers": str(len(self.layer_ids())),
            "mounted": str(mounted),
            "dead_mounts": str(dead),
            "helper": "python -m drivers.fuse.helper, one process per mount",
            "options": ",".join(self._options()),
            "native_diff": "yes",
            "parallel_apply": "no",
        }

    def cleanup(self) -> None:
        """Unmount every mount of this driver under ``home``, stop their helpers, drop all
        counts."""
        self._sweep(startup=False)

    def _umount_point(self, mount_point: str) -> None:
        self._umount(Path(mount_point))


def open_driver(home: Path) -> FuseDriver:
    """Factory for the registry in ``drivers/__init__.py``."""
    return FuseDriver(home)


__all__ = ["DEV_FUSE", "FSTYPE", "FuseDriver", "Helper", "READY_TIMEOUT", "STOP_TIMEOUT",
           "open_driver", "supported"]
