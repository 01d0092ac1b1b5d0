"""Diff-dir layers: the on-disk layout and data operations shared by union drivers.

The ``overlay`` driver (the kernel's overlayfs) and the ``fuse`` driver (our own union filesystem
in a helper process) keep layers the same way, after moby's overlay2, and differ only in how a
stack of them is mounted. Everything that does not mount lives here: the layout, ``create``,
``remove``, ``exists``, ``apply_diff``, ``changes``, ``diff``, ``diff_size``, the refcounted
``get``/``put`` frame, and the sweep of temporary names. A subclass supplies the mount
(``_mount``, ``_unmount``, ``_mounted``) and may refuse stacks it cannot mount (``_check_depth``).

On disk (``home`` is ``<root>/drivers/<name>``)::

    home/layers/<id>/diff/     the layer's own files, overlay-style: a deleted path is a 0/0 char
                               device, an opaque dir has ``trusted.overlay.opaque=y``. A container
                               layer writes here.
    home/layers/<id>/link      its short name; ``home/l/<link>`` is a symlink to its diff dir
    home/layers/<id>/lower     the parent chain as ``l/<link>:l/<link>:...``, uppermost first (no
                               file for a base layer): a mount reads one file, not one per ancestor
    home/layers/<id>/parent    the parent's cache-id (the native differ must know the real parent)
    home/layers/<id>/work/     container (RW) layers only; marks them RW (overlayfs' work dir;
                               the fuse driver stages copy-ups and new files there)
    home/layers/<id>/merged/   the mount point of ``get``
    home/empty/                an empty dir: the bottom lower of stacks otherwise too short
    home/refs/<id>             ``get`` counts (``drivers.base.RefCounts``)
    home/layers/<id>.<rand>.creating, home/layers/<id>.removing, home/.probe-*
                               temporary names ('.' is never part of a cache-id); swept on open

Because the layout is one, the upper dir of a container layer is an exact record of its changes
under both drivers (overlay whiteouts, opaque xattrs, no redirects, no metacopy), and ``diff`` and
``changes`` read it directly (``tardiff.upper_changes``). They fall back to comparing the mounted
trees of layer and parent (``tardiff.tree_changes``) when the caller asks for a diff against
another layer than the real parent, or when the subclass says the upper is not exact
(``native_diff`` False).
"""

from __future__ import annotations

import base64
import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from drivers.base import CacheID, Change, LocalDriver, RefCounts, check_cache_id
from drivers.errors import AlreadyExists, Conflict, NotFound
from drivers.sys import mount as mountapi
from drivers.sys.flock import Flock
from drivers.sys.record import Frozen

LINK_LEN = 26  # 16 random bytes in base32, as overlay2's ``l/`` names


def SweepLock(home: Path, exclusive: bool) -> Flock:
    """``home/sweep.lock``: creators hold it shared while a temporary name exists; the open
    sweep takes it exclusive (non-blocking) so it never deletes another process's work
    (``acquired`` says whether it got it)."""
    return Flock(home / "sweep.lock", shared=not exclusive, wait=not exclusive)


def probe_once(home: Path, probe: Callable[[], str | None]) -> str | None:
    """``probe()`` (a test mount: None if it worked, else why not), remembered in
    ``home/probe.ok`` for this kernel and this filesystem, so that only the first open of a home
    pays for it; a failure is not remembered (the next open tries again)."""
    stamp = f"{os.uname().release} {os.stat(home).st_dev}\n"
    try:
        if (home / "probe.ok").read_text() == stamp:
            return None
    except OSError:
        pass
    why = probe()
    if why is None:
        tmp = home / f".probe-ok-{os.urandom(4).hex()}"
        tmp.write_text(stamp)
        os.replace(tmp, home / "probe.ok")
    return why


class Layer(Frozen):
    """One layer as its files describe it (``DiffDirDriver._layer``)."""

    __slots__ = ("id", "dir", "link", "chain", "parent", "rw", "volatile")
    id: CacheID
    dir: Path
    link: str
    chain: list[str]  # parents' links, uppermost first
    parent: CacheID | None
    rw: bool
    volatile: bool

    @property
    def diff(self) -> Path:
        return self.dir / "diff"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def merged(self) -> Path:
        return self.dir / "merged"


class DiffDirDriver(LocalDriver):
    """The shared part of the diff-dir drivers (see the module docstring). Subclasses set
    ``name`` and implement ``_mount``, ``_unmount`` and ``_mounted``; ``__init__`` of the
    subclass calls ``_init_layout`` first."""

    name = "diffdirs"
    # Not ``drivers.base.ParallelApply``: ``apply_diff`` of layer N reads the applied layers
    # below it (implicit parents, hardlinks to lower files and lower symlinks met as parents
    # depend on them: ``drivers.tar.lower``), so a stack is applied in order.

    home: Path
    layers: Path
    empty: Path
    refs: RefCounts
    native_diff: bool = True

    def _init_layout(self, home: Path) -> None:
        self.home = Path(os.path.realpath(home))
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "l").mkdir(exist_ok=True)
        self._links = f"{self.home}/l"  # a string: a 500-layer stack joins it 500 times per apply
        self.layers = self.home / "layers"
        self.layers.mkdir(exist_ok=True)
        self.empty = self.home / "empty"
        self.empty.mkdir(exist_ok=True)
        self.refs = RefCounts(self.home)

    # -- hooks ---------------------------------------------------------------------------------

    def _mount(self, layer: Layer) -> None:
        """Mount ``layer``'s merged tree on ``layer.merged``; nothing stays mounted on error."""
        raise NotImplementedError

    def _unmount(self, layer: Layer) -> None:
        """Unmount ``layer.merged`` (lazily if busy); a no-op if nothing is mounted there."""
        raise NotImplementedError

    def _mounted(self, layer: Layer) -> bool:
        """Whether a working mount of ``layer`` is in place (so ``get`` may hand it out)."""
        raise NotImplementedError

    def _check_depth(self, id: CacheID, chain: list[str], rw: bool) -> None:
        """Refuse (Unsupported) a stack this driver could not mount; default: any depth."""

    # -- layout helpers ------------------------------------------------------------------------

    def _dir(self, id: CacheID) -> Path:
        return self.layers / check_cache_id(id)

    def _layer(self, id: CacheID) -> Layer:
        d = self._dir(id)
        try:
            link = (d / "link").read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{self.name} layer {id} not found") from None
        try:
            lower = (d / "lower").read_text().strip()
        except FileNotFoundError:
            lower = ""
        try:
            parent: CacheID | None = CacheID((d / "parent").read_text().strip())
        except FileNotFoundError:
            parent = None
        chain = [p[2:] for p in lower.split(":")] if lower else []
        return Layer(CacheID(id), d, link, chain, parent, (d / "work").is_dir(),
                     (d / "volatile").exists())

    def _link_path(self, link: str) -> str:
        return f"{self._links}/{link}"  # not pathlib: called once per lower layer per apply and mount

    def _lowers(self, layer: Layer) -> list[str]:
        """Lower dirs of ``layer``'s mount, uppermost first, as absolute ``home/l/<link>`` paths
        (a read-only layer's own diff dir is its topmost lower); padded with ``home/empty`` to
        overlayfs' minimum (one lower under an upper, two without)."""
        links = layer.chain if layer.rw else [layer.link, *layer.chain]
        lowers = [self._link_path(k) for k in links]
        need = 1 if layer.rw else 2
        if len(lowers) < need:
            lowers.append(str(self.empty))
        return lowers

    def _diff_dirs(self, links: list[str]) -> list[str]:
        return [os.path.realpath(self._link_path(k)) for k in links]

    def layer_ids(self) -> list[CacheID]:
        """Every layer directory, complete or not (see ``drivers.base.LayerListing``):
        ``*.creating`` / ``*.removing`` names hold a '.', which a cache-id never does."""
        try:
            return sorted(CacheID(e.name) for e in os.scandir(self.layers)
                          if is_id(e.name) and e.is_dir(follow_symlinks=False))
        except OSError:
            return []

    # -- create / remove -----------------------------------------------------------------------

    def create(self, id: CacheID, parent: CacheID | None) -> None:
        """Make an empty read-only layer on ``parent`` (see ``GraphDriver.create``)."""
        self._create(id, parent, rw=False, volatile=False)

    def create_rw(self, id: CacheID, parent: CacheID | None) -> None:
        """Make a container layer: a few mkdirs and three small files, nothing that scales with
        the image."""
        self._create(id, parent, rw=True, volatile=False)

    def _create(self, id: CacheID, parent: CacheID | None, rw: bool, volatile: bool) -> None:
        final = self._dir(id)
        if final.exists():
            raise AlreadyExists(f"{self.name} layer {id} already exists")
        chain: list[str] = []
        if parent is not None:
            p = self._layer(parent)
            chain = [p.link, *p.chain]
        self._check_depth(id, chain, rw)
        link = base64.b32encode(os.urandom(16)).decode()[:LINK_LEN]
        tmp = self.layers / f"{id}.{os.urandom(4).hex()}.creating"  # racing creators: own names
        with SweepLock(self.home, exclusive=False):
            try:
                tmp.mkdir()
                (tmp / "diff").mkdir(0o755)
                (tmp / "merged").mkdir(0o700)
                if rw:
                    (tmp / "work").mkdir(0o700)
                (tmp / "link").write_text(link)
                if chain:
                    (tmp / "lower").write_text(":".join(f"l/{k}" for k in chain))
                    (tmp / "parent").write_text(str(parent))
                if volatile:
                    (tmp / "volatile").write_text("")
                os.symlink(f"../layers/{id}/diff", self._link_path(link))
                try:
                    os.rename(tmp, final)
                except OSError as e:
                    os.unlink(self._link_path(link))
                    if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        raise AlreadyExists(f"{self.name} layer {id} already exists") from None
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        # No fsync of l/ and layers/ here (two per layer: a third of a 500-layer pull's create
        # time): the store syncs the driver's filesystem (``sync``: syncfs, which covers these
        # directory entries) before any row that records this layer commits, and a crash before
        # that leaves a pending row whose data ``recover`` removes, whatever part of it survived
        # (a dangling l/ link is swept). tests/powercut cuts power at every write of create.

    def remove(self, id: CacheID) -> None:
        """Delete the layer (see ``GraphDriver.remove``); a stale mount with no count is
        unmounted first. Raises Conflict while ``get`` holds it."""
        d = self._dir(id)
        with self.refs.locked():
            if self.refs.count(id) > 0:
                raise Conflict(f"{self.name} layer {id} is mounted ({self.refs.count(id)} holders)")
            if not d.exists():
                return
            self._unmount_leftover(id, d)
            try:
                link = (d / "link").read_text().strip()
            except FileNotFoundError:
                link = ""
            gone = self.layers / f"{id}.removing"
            shutil.rmtree(gone, ignore_errors=True)
            os.rename(d, gone)
        if link:
            try:
                os.unlink(self._link_path(link))
            except FileNotFoundError:
                pass
        rmtree(gone)

    def _unmount_leftover(self, id: CacheID, d: Path) -> None:
        """``remove`` of an unheld layer: undo a mount a crash left on ``d/merged``."""
        try:
            layer = self._layer(id)
        except NotFound:
            return
        self._unmount(layer)

    def exists(self, id: CacheID) -> bool:
        return (self._dir(id) / "link").is_file()

    # -- get / put -----------------------------------------------------------------------------

    def get(self, id: CacheID) -> str:
        """Mount the layer's merged tree (container layers read-write, others read-only) and
        return its path; refcounted across processes (see ``GraphDriver.get``). A count whose
        mount is gone (a reboot, someone's umount, a dead helper) mounts again, so the bare
        mount point is never handed out (writes would land in an empty dir)."""
        layer = self._layer(id)
        with self.refs.locked():
            if self.refs.count(id) == 0 or not self._mounted(layer):
                self._mount(layer)
            self.refs.add(id)
        return str(layer.merged)

    def put(self, id: CacheID) -> None:
        """Release one ``get``; unmount at zero (lazily if something still holds the tree open).
        A put at count 0 is a no-op."""
        layer = self._layer(id)
        with self.refs.locked():
            n = self.refs.count(id)
            if n == 0:
                return
            if n == 1:
                self._unmount(layer)
            self.refs.remove(id)

    # -- data ----------------------------------------------------------------------------------

    def apply_diff(self, id: CacheID, parent: CacheID | None, tar: BinaryIO) -> int:
        """Extract an OCI layer tar into ``<id>/diff`` with overlay whiteouts, as the kernel
        would copy up over the parent chain (which must be applied); returns bytes of file
        content written."""
        from drivers.tar.apply import Whiteouts, apply_tar

        layer = self._layer(id)
        if layer.parent != parent:
            raise Conflict(f"{self.name} layer {id} was created on {layer.parent}, not {parent}")
        if self.refs.count(id) > 0:
            raise Conflict(f"{self.name} layer {id} is mounted; apply_diff needs it unmounted")
        # the links, not their resolved paths: the applier resolves only the lowers it looks in
        lowers = [self._link_path(k) for k in layer.chain]
        return apply_tar(str(layer.diff), tar, Whiteouts.OVERLAY, lowers)

    def _native(self, layer: Layer, parent: CacheID | None) -> bool:
        return self.native_diff and layer.parent == parent

    def changes(self, id: CacheID, parent: CacheID | None) -> list[Change]:
        """Paths the layer changed against ``parent``, sorted (native: read from the upper dir)."""
        layer = self._layer(id)
        if parent is not None:
            self._layer(parent)  # NotFound
        if self._native(layer, parent):
            from drivers.tar.diff import upper_changes

            return upper_changes(str(layer.diff), self._diff_dirs(layer.chain))
        from drivers.tar.diff import tree_changes

        with MountedPair(self, id, parent) as (root, proot):
            return tree_changes(root, proot)

    def diff(self, id: CacheID, parent: CacheID | None) -> BinaryIO:
        """The layer's changes as an OCI layer tar, produced as it is read (overlay whiteouts
        become ``.wh.`` entries, opaque dirs ``.wh..wh..opq``). The naive path keeps both trees
        mounted until the stream is closed."""
        from drivers.tar.diff import diff_stream, tree_changes, upper_changes

        layer = self._layer(id)
        if parent is not None:
            self._layer(parent)
        if self._native(layer, parent):
            ch = upper_changes(str(layer.diff), self._diff_dirs(layer.chain))
            return diff_stream(str(layer.diff), ch, whiteout_root=str(layer.diff))
        pair = MountedPair(self, id, parent)
        root, proot = pair.__enter__()
        try:
            return diff_stream(root, tree_changes(root, proot),
                               on_close=lambda: pair.__exit__(None, None, None))
        except BaseException:
            pair.__exit__(None, None, None)
            raise

    def diff_size(self, id: CacheID, parent: CacheID | None) -> int:
        """Bytes of regular-file content added or modified against ``parent`` (a hard-linked
        inode counts once)."""
        from drivers.tar.diff import diff_size, tree_changes

        layer = self._layer(id)
        if parent is not None:
            self._layer(parent)
        if self._native(layer, parent):
            return diff_size(str(layer.diff), self.changes(id, parent))
        with MountedPair(self, id, parent) as (root, proot):
            return diff_size(root, tree_changes(root, proot))

    # -- sweeping ------------------------------------------------------------------------------

    def _mounts(self) -> Iterator[mountapi.MountInfo]:
        """The mounts below ``home`` (not on it), in mount order."""
        home = os.path.realpath(self.home)
        for m in mountapi.mounts_under(home):
            if m.mount_point != home:
                yield m

    def _umount_point(self, mount_point: str) -> None:
        """Unmount whatever is mounted at ``mount_point`` (lazily if busy)."""
        raise NotImplementedError

    def _is_probe(self, m: mountapi.MountInfo) -> bool:
        """Whether ``m`` (on a ``.probe-*`` name) is a probe mount of this driver's."""
        return True

    def _sweep(self, startup: bool) -> None:
        """Reconcile mounts with counts. ``startup``: only what a crash left inconsistent (a
        mount no live holder counts, a count with no mount) and temporary names; else
        everything."""
        with self.refs.locked():
            mounted: set[CacheID] = set()
            for m in reversed(list(self._mounts())):
                rel = os.path.relpath(m.mount_point, self.home).split(os.sep)
                if len(rel) == 3 and rel[0] == "layers" and rel[2] == "merged" and is_id(rel[1]):
                    id = CacheID(rel[1])
                    if startup and self.refs.count(id) > 0:
                        mounted.add(id)  # a live holder, or a dead mount the next get recovers
                        continue
                    try:
                        layer = self._layer(id)
                    except NotFound:
                        self._umount_point(m.mount_point)
                        continue
                    self._unmount(layer)
                elif rel[0].startswith(".probe-") and self._is_probe(m) and not startup:
                    self._umount_point(m.mount_point)  # at startup: a concurrent probe's, maybe
                # else: something mounted inside a rootfs (a container's /proc) goes with it
            for id in list(self.refs.held()):
                if not startup or id not in mounted:
                    self.refs.set(id, 0)
        if startup:
            self._sweep_names(self._unmount_under)

    def _unmount_under(self, p: Path) -> None:
        for m in reversed(mountapi.mounts_under(p)):
            self._umount_point(m.mount_point)

    def leftovers(self) -> list[str]:
        """``*.creating`` / ``*.removing`` names of interrupted creates and removes, relative to
        ``home`` (``drivers.base.Sweeper``); none while a create runs (they cannot be told
        apart then)."""
        with SweepLock(self.home, exclusive=True) as lock:
            if not lock.acquired:
                return []
            return sorted(os.path.relpath(p, self.home) for p in [*self.home.iterdir(), *self.layers.iterdir()]
                          if p.name.endswith((".creating", ".removing")))

    def sweep(self) -> list[str]:
        """Delete what ``leftovers`` lists (with any mount below it); return those names."""
        before = self.leftovers()
        self._sweep(startup=True)
        return [n for n in before if not os.path.lexists(self.home / n)]

    def _sweep_names(self, unmount_under: Callable[[Path], None]) -> None:
        """Remove what interrupted creates and removes left (``*.creating``, ``*.removing``,
        ``.probe-*``, dangling ``l/`` links), unless another process is creating right now.
        ``unmount_under(path)`` first releases any mount below such a leftover."""
        with SweepLock(self.home, exclusive=True) as lock:
            if not lock.acquired:
                return  # another process is creating; its leftovers wait for the next open
            for p in [*self.home.iterdir(), *self.layers.iterdir()]:
                if p.name.endswith((".creating", ".removing")) or p.name.startswith(".probe-"):
                    unmount_under(p)
                    rmtree(p)
            for link in (self.home / "l").iterdir():
                if not link.exists():  # dangling: its layer is gone (a crash inside remove)
                    link.unlink(missing_ok=True)


class MountedPair:
    """``get`` of a layer and its parent (or an empty dir) for tree comparison; ``put`` on exit."""

    def __init__(self, drv: DiffDirDriver, id: CacheID, parent: CacheID | None) -> None:
        self.drv, self.id, self.parent = drv, id, parent
        self.held: list[CacheID] = []

    def __enter__(self) -> tuple[str, str]:
        try:
            root = self.drv.get(self.id)
            self.held.append(self.id)
            proot = str(self.drv.empty)
            if self.parent is not None:
                proot = self.drv.get(self.parent)
                self.held.append(self.parent)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return root, proot

    def __exit__(self, *exc: object) -> None:
        while self.held:
            self.drv.put(self.held.pop())


def is_id(name: str) -> bool:
    """Whether ``name`` is a well-formed cache-id (a layer dir, not a temporary name)."""
    try:
        check_cache_id(name)
        return True
    except Exception:
        return False


def rmtree(path: Path) -> None:
    """Remove a file or a tree; a name that vanished meanwhile is fine, other errors raise."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return

    def onerror(func: object, p: str, exc: tuple[type[BaseException], BaseException, object]) -> None:
        if not isinstance(exc[1], FileNotFoundError):
            raise exc[1]

    shutil.rmtree(path, onerror=onerror)


__all__ = ["DiffDirDriver", "LINK_LEN", "Layer", "MountedPair", "SweepLock", "is_id", "probe_once", "rmtree"]
