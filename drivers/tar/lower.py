"""The merged view of a stack of overlay-style diff dirs, for applying a layer on top of them.

Why: a union driver (overlay, fuse) applies a layer tar into an empty diff dir, but what the tar
means depends on the layers below: a parent the tar does not list must keep the mode, owner,
xattrs and times the lower layers give it; a hardlink may name a lower file; a parent component
may be a lower layer's symlink. The applier (``drivers.tar.apply``, OVERLAY mode) asks this view,
as the kernel's overlayfs would look a name up: top-down through the diff dirs, a whiteout (0/0
char device) hides the name below it, a non-directory hides everything below it, and a directory
merges with the directories below it down to the first opaque one.

Cost: one ``lstat`` per lower layer for each name asked about, cached per directory; nothing walks
a whole tree. The diff dirs are lamina's own (made by the applier) and are read-only here; a path
is only ever used inside a layer in which each of its components was seen to be a directory, so
no symlink inside a lower layer is followed.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import NamedTuple

OPAQUE_XATTR = b"trusted.overlay.opaque"
PRIVATE_XATTR = b"trusted.overlay."


class Found(NamedTuple):
    """A name as the lower layers show it: its stat, its path inside the layer that holds it,
    and that layer's diff dir."""

    st: os.stat_result
    path: bytes
    layer: bytes


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def _opaque(path: bytes) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.ENOENT):
            return False
        raise


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class LowerView:
    """Lookups in the merged view of ``dirs`` (diff dir paths, uppermost first)."""

    def __init__(self, dirs: list[str]) -> None:
        roots: list[bytes] = []
        for d in dirs:
            roots.append(os.fsencode(d))
            if _opaque(roots[-1]):
                break
        self._merge: dict[bytes, list[bytes]] = {b"": roots}  # real dir -> its layer dirs
        self._roots = roots

    def __bool__(self) -> bool:
        return bool(self._merge[b""])

    def find(self, parent: bytes, name: bytes) -> Found | None:
        """``name`` in directory ``parent`` (a symlink-free path of the merged view), or None
        (absent or whited out)."""
        layers = self._layers(parent)
        for i, d in enumerate(layers):
            path = d + b"/" + name
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if is_whiteout(st):
                return None
            if stat.S_ISDIR(st.st_mode):
                real = _join(parent, name)
                if real not in self._merge:
                    self._merge[real] = self._dir_layers(layers[i:], name)
            return Found(st, path, self._layer_of(d, parent))
        return None

    def _layer_of(self, d: bytes, parent: bytes) -> bytes:
        """The diff dir that ``d`` (directory ``parent`` inside one layer) belongs to."""
        if not parent:
            return d
        return d[:-(len(parent) + 1)]

    def _dir_layers(self, layers: list[bytes], name: bytes) -> list[bytes]:
        """The layer dirs that merge into directory ``name`` (a dir in ``layers[0]``)."""
        out: list[bytes] = []
        for d in layers:
            path = d + b"/" + name
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # a whiteout or a non-dir ends the merge
            out.append(path)
            if _opaque(path):
                break
        return out

    def _layers(self, real: bytes) -> list[bytes]:
        got = self._merge.get(real)
        if got is not None:
            return got
        parent, _, name = real.rpartition(b"/")
        f = self.find(parent, name)
        if f is None or not stat.S_ISDIR(f.st.st_mode):
            self._merge[real] = []  # not a dir below: nothing merges into it
        return self._merge[real]


def copy_xattrs(src: bytes, dst: int | bytes) -> None:
    """Copy ``src``'s xattrs (lamina's private overlay ones excepted) onto ``dst`` (an fd, or a
    path not followed)."""
    for key in os.listxattr(src, follow_symlinks=False):
        k = os.fsencode(key)
        if k.startswith(PRIVATE_XATTR):
            continue
        value = os.getxattr(src, k, follow_symlinks=False)
        if isinstance(dst, int):
            os.setxattr(dst, k, value)
        else:
            os.setxattr(dst, k, value, follow_symlinks=False)


def copy_data(src: bytes, dst_fd: int) -> None:
    """Copy a regular file's bytes (reflinked or in-kernel where the filesystem can)."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        left = os.fstat(fd).st_size
        while left > 0:
            try:
                n = os.copy_file_range(fd, dst_fd, left)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                n = os.sendfile(dst_fd, fd, None, left)
            if n == 0:
                break
            left -= n
    finally:
        os.close(fd)


__all__ = ["Found", "LowerView", "copy_data", "copy_xattrs", "is_whiteout"]
