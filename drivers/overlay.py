"""The ``overlay`` graphdriver: each layer is a directory, stacked by the kernel's overlayfs.

On disk (``home`` is ``<root>/drivers/overlay``), after moby's overlay2 (the layout, and
everything that does not mount, is shared with the fuse driver: ``drivers/diffdirs.py``)::

    home/layers/<id>/diff/     the layer's own files, overlay-style: a deleted path is a 0/0 char
                               device, an opaque dir has ``trusted.overlay.opaque=y``. A container
                               layer writes here.
    home/layers/<id>/link      its short name; ``home/l/<link>`` is a symlink to its diff dir
    home/layers/<id>/lower     the parent chain as ``l/<link>:l/<link>:...``, uppermost first (no
                               file for a base layer): a mount reads one file, not one per ancestor
    home/layers/<id>/parent    the parent's cache-id (the native differ must know the real parent)
    home/layers/<id>/work/     overlayfs' work dir: container (RW) layers only; marks them RW
    home/layers/<id>/merged/   the mount point of ``get``
    home/layers/<id>/volatile  marker: this container layer mounts with ``volatile`` (see below)
    home/empty/                an empty dir: the bottom lower of stacks otherwise too short
    home/refs/<id>             ``get`` counts (``drivers.base.RefCounts``)
    home/probe.ok              ``supported()`` remembers a successful test mount here
    home/layers/<id>.<rand>.creating, home/layers/<id>.removing, home/.probe-*
                               temporary names ('.' is never part of a cache-id); swept on open

Layers live in ``layers/`` rather than in ``home`` itself (as in overlay2, whose ids are 64 hex
digits) because a cache-id may be any short name, such as ``l`` or ``empty``.

Mounting. ``get`` of a container layer mounts ``upperdir=<id>/diff,workdir=<id>/work`` over its
chain; ``get`` of a read-only layer mounts a *read-only* overlay of its own diff over its chain
(overlayfs wants at least two lowers without an upper, so a base layer gets ``home/empty`` under
it). We do not hand out a read-only layer's diff dir itself: a caller that wrote into it would
silently change a shared, content-addressed layer, and overlay whiteouts (0/0 char devices) would
show through. The mount costs about the same.

Where the kernel has it (Linux >= 6.8, probed once per process), lower dirs are passed one by one
with the new mount API (``fsconfig(lowerdir+)``); the only depth limit is then overlayfs' own
stack limit of 500 lower layers. Older kernels get ``mount(2)`` with a ``lowerdir=`` option
string, which must fit in one page: short ``l/<link>`` names relative to ``home`` keep it to
about 135 layers (Docker's overlay2 stops at 128 for this reason). ``create`` refuses a layer
that could not be mounted (``Unsupported``), so nothing is half made.

Options, on purpose:

* ``index=off``: the inode index makes hard links survive copy-up, but it ties the upper dir to
  the exact set of lower dirs (file handles), so layers could not be restacked or moved. Without
  it, copy-up of one name of a hard-linked lower file breaks the link (documented overlay
  behaviour; tests show it).
* ``metacopy=off``: with it a chmod copies up only metadata, and the upper holds a file that is
  not a file; a native diff would ship an empty file.
* ``redirect_dir=nofollow``: a renamed lower dir is copied (rename(2) gets EXDEV, ``mv`` copies),
  never recorded as a redirect xattr that only this kernel understands; and redirect xattrs that
  came in from elsewhere (a hostile tar) are not followed. (The brief said ``off``; with
  ``redirect_always_follow=Y``, the default, ``off`` means *follow* existing redirects, so
  ``nofollow`` is the strict form.)
* ``volatile``: only for container layers created with ``volatile=True`` (throw-away containers).
  It drops every sync of the upper, so a machine crash while mounted can lose or tear writes; the
  kernel marks the work dir (``work/work/incompat/volatile``) and refuses to mount it again. We
  sync the upper fs at unmount and only then clear the mark; a mark found at ``get`` therefore
  means the machine went down while mounted (or a ``put`` had to detach lazily while a process
  still held files open, so writes may have followed the sync), and ``get`` raises ``Corrupt``:
  remove the layer. Safe for ``run --rm`` style containers, wrong for anything to be committed.
* ``userxattr``: never; we run as root and want ``trusted.*`` xattrs, which unprivileged users
  cannot forge in a lower dir.

With these options the upper dir is an exact record of the layer's changes, so ``diff`` and
``changes`` read it directly (``tardiff.upper_changes``) instead of comparing two trees. They fall
back to comparing the mounted trees of layer and parent (``tardiff.tree_changes``) when the
caller asks for a diff against another layer than the real parent, or the driver was opened with
``naive_diff=True``, or the kernel would not take ``redirect_dir``/``metacopy`` off.

Layers of a stack are applied in order (no ``parallel_apply``): ``apply_diff`` writes only
``<id>/diff`` but reads the applied diff dirs below, as a copy-up would (implicit parents take
the lower dir's metadata, a hardlink to a lower file copies it up, a lower symlink met as a
parent is followed inside the rootfs: ``drivers.tar.lower``).

``get``/``put`` counts live on disk (``RefCounts``) because holders are separate processes. On
open, a mount under ``home`` with no count (a crash between mount and count) is unmounted and a
count with no mount (a reboot, a manual umount) is dropped; ``cleanup`` unmounts everything.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
from pathlib import Path

from drivers.sys import mount as mountapi
from drivers.base import CacheID
from drivers.diffdirs import LINK_LEN, DiffDirDriver, Layer, SweepLock, probe_once
from drivers.errors import Bug, Corrupt, Unsupported
from drivers.sys.durable import syncfs
from drivers.sys.record import Frozen

MAX_LOWER = 500
"""overlayfs' stack limit (``OVL_MAX_STACK`` in fs/overlayfs/params.h)."""

_OPTIONS = (("index", "off"), ("metacopy", "off"), ("redirect_dir", "nofollow"))
_TRUSTED_PROBE = "trusted.lamina.probe"
_BACKING_REFUSED = {"overlay": "overlayfs cannot use an overlay mount as upper dir",
                    "aufs": "overlayfs cannot stack on aufs",
                    "ecryptfs": "overlayfs cannot stack on ecryptfs"}


class KernelOverlay(Frozen):
    """What this kernel's overlayfs offers, probed once per process (``kernel_overlay()``)."""

    __slots__ = ("new_api", "lowerdir_plus", "options", "volatile", "exact_upper")
    new_api: bool  # fsopen/fsconfig/fsmount/move_mount work for overlay
    lowerdir_plus: bool  # fsconfig "lowerdir+" (Linux >= 6.8)
    options: tuple[tuple[str, str], ...]  # those of _OPTIONS the kernel knows
    volatile: bool  # the "volatile" flag (Linux >= 5.10)
    exact_upper: bool  # redirect_dir and metacopy can be turned off: the upper dir is a diff


def _probe_key(key: str, value: str | None) -> str:
    """"ok", "unknown" (the kernel has no such parameter) or "refused" (known, value refused)."""
    try:
        with mountapi.FsContext("overlay") as ctx:
            if value is None:
                ctx.set_flag(key)
            else:
                ctx.set_string(key, value)
        return "ok"
    except mountapi.MountError as e:
        return "unknown" if any("Unknown parameter" in line for line in e.log) else "refused"


@functools.cache
def kernel_overlay() -> KernelOverlay:
    """Probe overlayfs' abilities without mounting anything (fsconfig on a throw-away context).

    A kernel that does not know ``metacopy`` or ``redirect_dir`` has not got the feature, which is
    as good as "off"; one that knows the key but refuses our value (none we know of) makes the
    upper dir inexact, and diffs then compare trees. Without the new API (Linux < 5.2) we assume
    the options of 4.19 and no ``volatile``.
    """
    if not mountapi.new_api_available():
        return KernelOverlay(False, False, _OPTIONS, False, True)
    verdicts = {k: _probe_key(k, v) for k, v in _OPTIONS}
    known = tuple((k, v) for k, v in _OPTIONS if verdicts[k] == "ok")
    exact = all(verdicts[k] != "refused" for k in ("metacopy", "redirect_dir"))
    return KernelOverlay(True, _probe_key("lowerdir+", "/") == "ok", known,
                         _probe_key("volatile", None) == "ok", exact)


def supported(home: Path) -> str | None:
    """Why the overlay driver cannot work with ``home`` on this machine, or None if it can.

    Checks: overlay is a kernel filesystem (loading the module if need be); the backing fs of
    ``home`` can hold an overlay upper (not overlay itself); it stores ``trusted.*`` xattrs
    (opaque dirs and copy-up need them); and a real test mount (two lowers, upper, work, under
    ``home``) works and copies up a write. Leaves nothing mounted. The test mount's success is
    remembered in ``home/probe.ok`` (kernel release and device of ``home``), so the CLI, which
    probes on every start, pays for it once per kernel and filesystem.
    """
    if "overlay" not in mountapi.filesystems():
        try:
            mountapi.FsContext("overlay").close()  # fsopen asks the kernel to load the module
        except OSError:
            pass
        if "overlay" not in mountapi.filesystems():
            return "the kernel has no overlay filesystem (modprobe overlay)"
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create {home}: {e.strerror}"
    backing = mountapi.fstype_of(home)
    if backing in _BACKING_REFUSED:
        return f"{home} is on {backing}: {_BACKING_REFUSED[backing]}"
    return probe_once(home, lambda: _probe_mount(home, backing))


def _probe_mount(home: Path, backing: str) -> str | None:
    probe = home / f".probe-{os.urandom(4).hex()}"
    kernel = kernel_overlay()
    try:
        with SweepLock(home, exclusive=False):
            for d in ("lower1", "lower2", "upper", "work", "merged"):
                (probe / d).mkdir(parents=True)
            try:
                os.setxattr(probe / "upper", _TRUSTED_PROBE, b"y")
            except OSError as e:
                return (f"{backing} at {home} cannot store trusted.* xattrs ({e.strerror}); "
                        f"overlayfs needs them")
            (probe / "lower1" / "f").write_bytes(b"lower")
            try:
                _mount_overlay(str(probe / "merged"), [str(probe / "lower1"), str(probe / "lower2")],
                               str(probe / "upper"), str(probe / "work"), kernel,
                               volatile=False, legacy=not kernel.lowerdir_plus)
            except mountapi.MountError as e:
                return f"test mount under {home} refused: {e.kernel_message}"
            try:
                (probe / "merged" / "f").write_bytes(b"upper")
                if (probe / "upper" / "f").read_bytes() != b"upper" or \
                        (probe / "lower1" / "f").read_bytes() != b"lower":
                    return f"test mount under {home} did not copy up a write"
            finally:
                _umount(str(probe / "merged"))
    except OSError as e:
        return f"test of overlay under {home} failed: {e}"
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return None


# ---------------------------------------------------------------------------------------------
# mounting


def _legacy_data(lowers: list[str], upper: str | None, work: str | None,
                 options: tuple[tuple[str, str], ...], volatile: bool) -> str:
    parts = ["lowerdir=" + ":".join(lowers)]
    if upper is not None and work is not None:
        parts += [f"upperdir={upper}", f"workdir={work}"]
    parts += [f"{k}={v}" for k, v in options]
    if volatile:
        parts.append("volatile")
    return ",".join(parts)


def mount_options(lowers: list[str], upper: str | None, work: str | None,
                  kernel: KernelOverlay, volatile: bool = False) -> list[tuple[str, str | None]]:
    """The fsconfig calls for one overlay mount, in order: ``(key, value)``, value None for a
    flag. Public for the benchmark of option building."""
    calls: list[tuple[str, str | None]] = [("lowerdir+", p) for p in lowers]
    if upper is not None and work is not None:
        calls += [("upperdir", upper), ("workdir", work)]
    calls += list(kernel.options)
    if volatile:
        calls.append(("volatile", None))
    return calls


def _mount_overlay(target: str, lowers: list[str], upper: str | None, work: str | None,
                   kernel: KernelOverlay, volatile: bool, legacy: bool,
                   cwd: str | None = None) -> None:
    """Mount one overlay at ``target``; read-only when there is no upper. Raises MountError.

    New API: every value is one fsconfig string (at most 255 bytes each). Legacy: one mount(2)
    option string; when ``cwd`` is given the paths are relative to it and the mount runs from a
    thread with its own working directory (``mountapi.in_private_cwd``; Docker's mountFrom
    re-executes itself for this), since the option string is page-limited.
    """
    ro = upper is None
    if not legacy:
        with mountapi.FsContext("overlay") as ctx:
            for key, value in mount_options(lowers, upper, work, kernel, volatile):
                if value is None:
                    ctx.set_flag(key)
                else:
                    ctx.set_string(key, value)
            ctx.create()
            ctx.attach(target, mountapi.MOUNT_ATTR_RDONLY if ro else 0)
        return
    data = _legacy_data(lowers, upper, work, kernel.options, volatile)
    flags = mountapi.MS_RDONLY if ro else 0
    if cwd is None:
        mountapi.mount("overlay", target, "overlay", flags, data)
        return
    if len(data.encode()) >= mountapi.PAGE_SIZE:
        raise mountapi.MountError(errno.E2BIG, "mount", target,
                                  [f"e option string of {len(data)} bytes exceeds one page"])
    mountapi.in_private_cwd(cwd, lambda: mountapi.mount("overlay", target, "overlay", flags, data))


def _umount(target: str) -> bool:
    """Unmount; if something still holds the tree open, detach it lazily (as Docker's Put):
    the mount disappears from the namespace now and dies with its last user. Returns False
    when the detach was lazy (the filesystem may still be written)."""
    try:
        mountapi.umount(target)
    except mountapi.MountError as e:
        if e.errno == errno.EBUSY:
            mountapi.umount(target, mountapi.MNT_DETACH | mountapi.UMOUNT_NOFOLLOW)
            return False
        if e.errno != errno.EINVAL:  # EINVAL: not mounted (anymore)
            raise
    return True


class _ShortPaths:
    """Paths under ``home`` that fit fsconfig's 255 bytes: as they are if short enough, else
    through ``/proc/self/fd/<fd>/...`` of an O_PATH fd of ``home``. The kernel resolves each path
    when it is configured, so the fd is closed right after the mount (an fd kept open would pin
    the filesystem of ``home`` and make its umount busy)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.fd = -1

    def __enter__(self) -> "_ShortPaths":
        return self

    def opt(self, path: str | None) -> str | None:
        return None if path is None else self.path(path)

    def path(self, path: str) -> str:
        if len(path.encode()) <= mountapi.FSCONFIG_MAX_STRING:
            return path
        if self.fd < 0:
            self.fd = os.open(self.home, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self.fd}/{os.path.relpath(path, self.home)}"

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ---------------------------------------------------------------------------------------------
# the driver


_Layer = Layer  # the shared layer record (drivers.diffdirs)


class OverlayDriver(DiffDirDriver):
    """Graphdriver on kernel overlayfs (see the module docstring for layout and options).

    ``mount_api``: "auto" (``lowerdir+`` where the kernel has it, else mount(2)), "new" or
    "legacy" (force one; tests use this to cover both). ``naive_diff``: always diff by comparing
    mounted trees (the slow, general path).
    """

    name = "overlay"

    def __init__(self, home: Path, *, mount_api: str = "auto", naive_diff: bool = False) -> None:
        self._init_layout(home)
        try:  # one syscall; without trusted.* xattrs overlayfs mounts but cannot make opaque dirs
            os.setxattr(self.empty, _TRUSTED_PROBE, b"y")
        except OSError as e:
            raise Unsupported(f"overlay: {mountapi.fstype_of(self.home)} at {self.home} cannot "
                              f"store trusted.* xattrs ({e.strerror}); overlayfs needs them") from None
        self.kernel = kernel_overlay()
        if mount_api == "auto":
            self.legacy = not self.kernel.lowerdir_plus
        elif mount_api == "new":
            if not self.kernel.lowerdir_plus:
                raise Unsupported("overlay: this kernel has no fsconfig lowerdir+ (needs Linux >= 6.8)")
            self.legacy = False
        elif mount_api == "legacy":
            self.legacy = True
        else:
            raise Bug(f"overlay: unknown mount_api {mount_api!r}")
        self.native_diff = self.kernel.exact_upper and not naive_diff
        self._sweep(startup=True)

    # -- create --------------------------------------------------------------------------------

    def create(self, id: CacheID, parent: CacheID | None) -> None:
        """Make an empty read-only layer on ``parent`` (see ``GraphDriver.create``).

        Raises Unsupported if the stack would be deeper than a mount can take (500 lower layers
        with ``lowerdir+``; what fits a page with mount(2))."""
        self._create(id, parent, rw=False, volatile=False)

    def create_rw(self, id: CacheID, parent: CacheID | None, *, volatile: bool = False) -> None:
        """Make a container layer: a few mkdirs and three small files, nothing that scales with
        the image. ``volatile=True``: mount without syncs (throw-away containers only; a machine
        crash while mounted makes the layer unusable, see the module docstring)."""
        if volatile and not self.kernel.volatile:
            raise Unsupported("overlay: this kernel has no volatile mounts (needs Linux >= 5.10)")
        self._create(id, parent, rw=True, volatile=volatile)

    def _check_depth(self, id: CacheID, chain: list[str], rw: bool) -> None:
        n = len(chain) + (0 if rw else 1)  # lower dirs of this layer's own mount
        if n > MAX_LOWER:
            raise Unsupported(f"overlay layer {id} would stack {n} layers; overlayfs mounts at "
                              f"most {MAX_LOWER} lower layers")
        if self.legacy:
            lowers = [f"l/{k}" for k in (chain if rw else ["X" * LINK_LEN, *chain])]
            data = _legacy_data(lowers or ["empty"], f"layers/{id}/diff", f"layers/{id}/work",
                                self.kernel.options, False)
            if len(data.encode()) >= mountapi.PAGE_SIZE:
                raise Unsupported(f"overlay layer {id} would stack {n} layers; mount(2) takes "
                                  f"one page of options, enough for about 135 (Linux >= 6.8 "
                                  f"takes {MAX_LOWER} with the new mount API)")

    # -- mounting (the hooks of DiffDirDriver.get / put / remove) -------------------------------

    def _mounted(self, layer: _Layer) -> bool:
        return _is_mounted(layer.merged, layer.dir)

    def _unmount_leftover(self, id: CacheID, d: Path) -> None:
        if _is_mounted(d / "merged", d):
            _umount(str(d / "merged"))

    def _mount(self, layer: _Layer) -> None:
        lowers = self._lowers(layer)
        if len(lowers) > MAX_LOWER:
            raise Unsupported(f"overlay layer {layer.id} stacks {len(lowers)} layers; overlayfs "
                              f"mounts at most {MAX_LOWER} lower layers")
        if layer.volatile and (layer.work / "work" / "incompat" / "volatile").exists():
            raise Corrupt(f"overlay layer {layer.id} was mounted volatile when the machine went "
                          f"down; its writes may be lost: remove it")
        upper = str(layer.diff) if layer.rw else None
        work = str(layer.work) if layer.rw else None
        target = str(layer.merged)
        try:
            if not self.legacy:
                with _ShortPaths(self.home) as short:
                    _mount_overlay(target, [short.path(p) for p in lowers], short.opt(upper), short.opt(work),
                                   self.kernel, layer.volatile, False)
            else:
                self._mount_legacy(layer, lowers, upper, work)
        except mountapi.MountError as e:
            if _is_mounted(layer.merged, layer.dir):  # never leave a half-done get mounted
                _umount(target)
            raise self._refusal(layer, e) from e

    def _mount_legacy(self, layer: _Layer, lowers: list[str], upper: str | None,
                      work: str | None) -> None:
        data = _legacy_data(lowers, upper, work, self.kernel.options, layer.volatile)
        plain = not any(c in str(self.home) for c in ",:\\")
        if plain and len(data.encode()) < mountapi.PAGE_SIZE:
            _mount_overlay(str(layer.merged), lowers, upper, work, self.kernel, layer.volatile, True)
            return
        rel = [os.path.relpath(p, self.home) for p in lowers]
        rupper = f"layers/{layer.id}/diff" if upper else None
        rwork = f"layers/{layer.id}/work" if work else None
        _mount_overlay(f"layers/{layer.id}/merged", rel, rupper, rwork, self.kernel, layer.volatile,
                       True, cwd=str(self.home))

    def _refusal(self, layer: _Layer, e: mountapi.MountError) -> Exception:
        why = e.kernel_message
        if e.errno == errno.ENOENT:
            return Corrupt(f"overlay layer {layer.id}: a directory of its stack is missing ({e.step})")
        if not e.log:
            backing = mountapi.fstype_of(layer.diff)
            if backing in _BACKING_REFUSED:
                why += f"; {_BACKING_REFUSED[backing]} ({layer.dir} is on {backing})"
            else:
                why += " (the kernel's reason is in dmesg)"
        return Unsupported(f"overlay mount of layer {layer.id} refused: {why}")

    def _unmount(self, layer: _Layer) -> None:
        clean = _umount(str(layer.merged))
        if layer.volatile and clean:
            # The kernel synced nothing; make the writes durable, then lift the mark that would
            # make the next mount fail (it stands for "crashed while volatile"). After a lazy
            # detach a holder may still write, so the mark stays and the next get says Corrupt.
            syncfs(layer.diff)
            shutil.rmtree(layer.work / "work" / "incompat", ignore_errors=True)

    # -- status / cleanup ----------------------------------------------------------------------

    def status(self) -> dict[str, str]:
        layers = len(self.layer_ids())
        opts = ",".join(f"{k}={v}" for k, v in self.kernel.options)
        return {
            "backing_fs": mountapi.fstype_of(self.home),
            "layers": str(layers),
            "mounted": str(sum(1 for _ in self._mounts())),
            "mount_api": "fsconfig lowerdir+" if not self.legacy else "mount(2) lowerdir=",
            "max_depth": str(MAX_LOWER) if not self.legacy else "about 135",
            "options": opts,
            "volatile": "opt-in per container layer" if self.kernel.volatile else "unavailable",
            "native_diff": "yes" if self.native_diff else "no (tree comparison)",
            "parallel_apply": "no",
        }

    def cleanup(self) -> None:
        """Unmount every mount of this driver under ``home`` and drop all counts."""
        self._sweep(startup=False)

    def _umount_point(self, mount_point: str) -> None:
        _umount(mount_point)

    def _is_probe(self, m: mountapi.MountInfo) -> bool:
        return m.fstype == "overlay"


def _is_mounted(merged: Path, parent_dir: Path) -> bool:
    """A mount on ``merged``: its device differs from its parent dir's (overlay has its own
    anonymous device). One stat pair instead of reading mountinfo on every ``get``."""
    try:
        return os.stat(merged).st_dev != os.stat(parent_dir).st_dev
    except FileNotFoundError:
        return False


def open_driver(home: Path) -> OverlayDriver:
    """Factory for the registry in ``drivers/__init__.py``."""
    return OverlayDriver(home)
