"""The ``vfs`` graphdriver: every layer is a full copy of its parent (moby's vfs).

On disk (``home`` is ``<root>/drivers/vfs``)::

    home/dir/<id>/                   the layer's complete tree; ``get`` returns this path
    home/dir/.<id>-<rand>-tmp/       a copy being built by ``create``, renamed to ``<id>`` last
    home/dir/.<id>-<rand>-removing/  a layer being deleted by ``remove``
    home/copied/<id>                 made right after ``create`` copied the parent; holds the
                                     parent's cache-id; its ctime tells the differ which files
                                     the copy made and nobody touched since (see ``changes``)
    home/refs/<id>, home/refs.lock   ``get`` counts (``drivers.base.RefCounts``)
    home/sweep.lock                  see below

Why copies: it works on any filesystem that can hold the files (no mounts, no kernel features),
which makes vfs the reference every other driver is checked against, and the fallback where
nothing else works. Its price is space and ``create`` time: ``cp -a --reflink=auto`` shares the
data blocks on btrfs and XFS (reflinks) and copies them elsewhere.

Crash safety by names: a copy is built under a temporary name that starts with ``.`` (a cache-id
never does, so no layer can be mistaken for one) and renamed into place with
``RENAME_NOREPLACE`` only when complete; ``remove`` renames the layer away first and deletes
after. A crash leaves only dot-names, which the next open or ``cleanup`` sweeps. Creators and
removers hold ``home/sweep.lock`` shared while their temporary names exist; the sweep takes it
exclusive without waiting and skips its turn if anyone holds it, so it never deletes another
process's work in progress.

``diff``/``changes``/``diff_size`` compare the layer's tree with its parent's
(``drivers.tar.diff.tree_changes``). Trees unpacked from tars carry whole-second mtimes, for
which the differ must compare file contents; the ``copied/<id>`` marker spares that for every
file whose ctime shows it was not touched after the copy (a 100 MB layer: 0.4 s of reading
becomes none). ``apply_diff`` unpacks with whiteouts that delete
(``Whiteouts.REMOVE``). Durability is the caller's: the layer store syncs the filesystem
(``drivers.sys.durable.syncfs``) once before it records a layer, which is cheaper than syncing here per
copy.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

from drivers.tar import diff as tardiff
from drivers.base import CacheID, Change, LocalDriver, RefCounts, check_cache_id
from drivers.errors import AlreadyExists, Conflict, LaminaError, NotFound, Unsupported
from drivers.sys.flock import Flock
from drivers.sys.libc import RENAME_NOREPLACE, renameat2



def supported(home: Path) -> str | None:
    """vfs needs only a writable directory and ``cp`` (GNU coreutils, for ``-a --reflink``)."""
    if shutil.which("cp") is None:
        return "cp not found in PATH"
    p = Path(home)
    while not p.exists():
        if p.parent == p:
            return f"no existing parent directory for {home}"
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a directory"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    return None


def _rename_noreplace(src: str, dst: str) -> None:
    """rename(2) that fails with EEXIST instead of replacing an (empty) dir at ``dst``."""
    renameat2(src, dst, RENAME_NOREPLACE)


def _rmtree(path: str) -> None:
    """Delete a tree, also dirs without write permission (a non-root user's 0555 dirs);
    a tree that is already (partly) gone is fine."""

    def onerror(func: object, p: str, exc: tuple[type[BaseException], BaseException, object]) -> None:
        e = exc[1]
        if isinstance(e, FileNotFoundError):
            return
        if isinstance(e, PermissionError):
            parent = os.path.dirname(p)
            os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, onerror=onerror)
            else:
                os.unlink(p)
            return
        raise e

    shutil.rmtree(path, onerror=onerror)


def _SweepLock(path: Path, exclusive: bool) -> Flock:
    """``home/sweep.lock``, held shared by creators and removers and exclusively (without
    waiting) by the sweep; ``acquired`` says whether the lock was obtained."""
    return Flock(path, shared=not exclusive, wait=not exclusive)


class VfsDriver(LocalDriver):
    """The copy driver. ``home`` is created if missing. See the module docstring."""

    name = "vfs"

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.dir = self.home / "dir"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.copied = self.home / "copied"
        self.copied.mkdir(exist_ok=True)
        self.refs = RefCounts(self.home)
        self._sweep_lock = self.home / "sweep.lock"
        self.sweep()

    # -- paths -----------------------------------------------------------------------------------

    def _path(self, id: str) -> str:
        return str(self.dir / check_cache_id(id))

    def _existing(self, id: str) -> str:
        p = self._path(id)
        if not os.path.isdir(p):
            raise NotFound(f"vfs layer not found: {id}")
        return p

    def _temp(self, id: str, suffix: str) -> str:
        return str(self.dir / f".{id}-{os.urandom(4).hex()}-{suffix}")

    # -- lifecycle -------------------------------------------------------------------------------

    def create(self, id: CacheID, parent: CacheID | None) -> None:
        """Copy ``parent``'s tree (or make an empty dir) under a temporary name, then rename it
        to ``id``. See ``GraphDriver.create``."""
        final = self._path(id)
        src = self._existing(parent) if parent is not None else None
        if os.path.lexists(final):
            raise AlreadyExists(f"vfs layer already exists: {id}")
        with _SweepLock(self._sweep_lock, exclusive=False):
            tmp = self._temp(id, "tmp")
            try:
                if src is None:
                    os.mkdir(tmp, 0o755)
                    os.chmod(tmp, 0o755)  # not subject to the umask
                    self._forget_copy(id)
                else:
                    self._copy(src, tmp, id)
                    self._mark_copied(id, parent)  # type: ignore[arg-type]
                try:
                    _rename_noreplace(tmp, final)
                except OSError as e:
                    if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        raise AlreadyExists(f"vfs layer already exists: {id}") from None
                    raise
            except BaseException:
                if os.path.lexists(tmp):
                    _rmtree(tmp)
                raise

    def create_rw(self, id: CacheID, parent: CacheID | None) -> None:
        """A container layer is a copy like any other. See ``GraphDriver.create_rw``."""
        self.create(id, parent)

    @staticmethod
    def _copy(src: str, dst: str, id: str) -> None:
        # cp -a keeps modes, owners, times, hardlinks (within the copy), xattrs, devices, fifos;
        # --reflink=auto shares data blocks where the filesystem can. With -T and a new dst, dst
        # becomes the copy of src itself, root dir metadata (mode, owner, mtime, xattrs) included.
        import subprocess  # only copies start a program: not on every open

        p = subprocess.run(["cp", "-a", "--reflink=auto", "--no-target-directory", src, dst],
                           capture_output=True, text=True, errors="replace", check=False)
        if p.returncode != 0:
            msg = (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[0]
            if "No space left" in p.stderr:
                raise LaminaError(f"vfs: no space left to copy layer {id}: {msg}")
            if "Operation not supported" in p.stderr or "Operation not permitted" in p.stderr:
                raise Unsupported(f"vfs: cannot copy layer {id} here: {msg}")
            raise LaminaError(f"vfs: copying layer {id} failed: {msg}")

    def _mark_copied(self, id: str, parent: str) -> None:
        """A fresh file (new inode, so its ctime is now) naming the parent the copy came from,
        made after the clock ticked past the copy's last change."""
        self._forget_copy(id)
        tardiff.next_clock_tick()
        fd = os.open(self.copied / id, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, parent.encode())
        finally:
            os.close(fd)

    def _forget_copy(self, id: str) -> None:
        (self.copied / id).unlink(missing_ok=True)

    def _copied_before(self, id: str, parent: str | None) -> int | None:
        """The marker's ctime if ``id`` was copied from ``parent``, else None (no shortcut)."""
        if parent is None:
            return None
        try:
            fd = os.open(self.copied / id, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            if os.read(fd, 256) != parent.encode():
                return None
            return os.fstat(fd).st_ctime_ns
        finally:
            os.close(fd)

    def remove(self, id: CacheID) -> None:
        """Rename the layer to a ``-removing`` name (refused while held), then delete it.
        See ``GraphDriver.remove``."""
        final = self._path(id)
        with _SweepLock(self._sweep_lock, exclusive=False):
            # Under the refcount lock, so a concurrent ``get`` either sees the layer gone or
            # holds it before we look.
            with self.refs.locked():
                if not os.path.lexists(final):
                    return
                if self.refs.count(check_cache_id(id)) > 0:
                    raise Conflict(f"vfs layer {id} is in use ({self.refs.count(CacheID(id))} get)")
                doomed = self._temp(id, "removing")
                os.rename(final, doomed)
            self._forget_copy(id)
            _rmtree(doomed)

    def exists(self, id: CacheID) -> bool:
        return os.path.isdir(self._path(id))

    # -- get / put ------------------------------------------------------------------------------

    def get(self, id: CacheID) -> str:
        """The layer's own directory (nothing to mount); counts the reference on disk."""
        path = self._path(id)

        def check() -> None:
            if not os.path.isdir(path):
                raise NotFound(f"vfs layer not found: {id}")

        check()
        self.refs.increment(check_cache_id(id), on_first=check)
        return path

    def put(self, id: CacheID) -> None:
        """Drop one reference; a put at count 0 is a no-op."""
        self._existing(id)
        self.refs.decrement(check_cache_id(id))

    # -- data ------------------------------------------------------------------------------------

    def apply_diff(self, id: CacheID, parent: CacheID | None, tar: BinaryIO) -> int:
        """Unpack the tar into the layer's copy of its parent; whiteouts delete."""
        from drivers.tar.apply import Whiteouts, apply_tar

        path = self._existing(id)
        if parent is not None:
            self._existing(parent)
        return apply_tar(path, tar, Whiteouts.REMOVE)

    def _tree_changes(self, id: CacheID, parent: CacheID | None) -> tuple[str, list[Change]]:
        root = self._existing(id)
        proot = self._existing(parent) if parent is not None else None
        return root, tardiff.tree_changes(root, proot,
                                          copied_before_ns=self._copied_before(id, parent))

    def changes(self, id: CacheID, parent: CacheID | None) -> list[Change]:
        """Compare the layer's tree with the parent's (``tardiff.tree_changes``)."""
        return self._tree_changes(id, parent)[1]

    def diff(self, id: CacheID, parent: CacheID | None) -> BinaryIO:
        """The changes as an OCI layer tar stream. The stream holds a reference to the layer
        (as a ``get``) until it is closed, so the layer cannot be removed under a reader."""
        from drivers.naive_diff import diff_holding

        return diff_holding(self, id, *self._tree_changes(id, parent))

    def diff_size(self, id: CacheID, parent: CacheID | None) -> int:
        return tardiff.diff_size(*self._tree_changes(id, parent))

    # -- status / cleanup -------------------------------------------------------------------------

    def layer_ids(self) -> list[CacheID]:
        """Cache-ids of the layers (temporary dot-names excluded), sorted
        (``drivers.base.LayerListing``)."""
        return sorted(CacheID(e.name) for e in os.scandir(self.dir)
                      if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))

    layers = layer_ids

    def status(self) -> dict[str, str]:
        from drivers.sys import mount as mountapi

        try:
            fs = mountapi.fstype_of(self.home)
        except OSError:
            fs = "unknown"
        try:
            n = str(len(self.layer_ids()))
        except OSError:
            n = "unknown"
        try:
            held = str(sum(1 for _ in self.refs.held()))
        except OSError:
            held = "unknown"
        return {"driver": self.name, "home": str(self.home), "backing_fs": fs, "layers": n,
                "held": held, "copy": "cp -a --reflink=auto"}

    def leftovers(self) -> list[str]:
        """Temporary dot-names of interrupted creates and removes (``drivers.base.Sweeper``);
        none while some create or remove runs (their names cannot be told apart then)."""
        with _SweepLock(self._sweep_lock, exclusive=True) as lock:
            if not lock.acquired:
                return []
            return sorted(f"dir/{e.name}" for e in os.scandir(self.dir)
                          if e.name.startswith(".") and e.name.endswith(("-tmp", "-removing")))

    def sweep(self) -> list[str]:
        """Delete what interrupted ``create``s and ``remove``s left (dot-names), unless some
        create or remove is running right now (then next time). Returns the names deleted."""
        done: list[str] = []
        with _SweepLock(self._sweep_lock, exclusive=True) as lock:
            if not lock.acquired:
                return done
            for e in os.scandir(self.dir):
                if e.name.startswith(".") and e.name.endswith(("-tmp", "-removing")):
                    _rmtree(e.path)
                    done.append(e.name)
            for e in os.scandir(self.copied):   # markers of layers that never made it
                if not os.path.isdir(self.dir / e.name):
                    os.unlink(e.path)
                    done.append(f"copied/{e.name}")
        return done

    def cleanup(self) -> None:
        """Nothing is mounted; drop every reference count and sweep leftovers."""
        self.refs.reset()
        self.sweep()
