"""The merged view of a stack of overlay-style diff dirs, for applying a layer on top of them.

Why: a union driver (overlay, fuse) applies a layer tar into an empty diff dir, but what the tar
means depends on the layers below: a parent the tar does not list must keep the mode, owner,
xattrs and times the lower layers give it; a hardlink may name a lower file; a parent component
may be a lower layer's symlink. The applier (``drivers.tar.apply``, OVERLAY mode) asks this view,
as the kernel's overlayfs would look a name up: top-down through the diff dirs, a whiteout (0/0
char device) hides the name below it, a non-directory hides everything below it, and a directory
merges with the directories below it down to the first opaque one.

Cost: nothing until the applier asks about a name; then one ``lstat`` per lower layer looked in,
top-down, stopping at the first that has the name (the layers that merge into a directory are
found as far down as a lookup needs, and cached); nothing walks a whole tree, and a deep stack
costs a lookup no more than the layers it passes. The diff dirs are lamina's own (made by the
applier) and are read-only here; a path is only ever used inside a layer in which each of its
components was seen to be a directory, so no symlink inside a lower layer is followed.
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


class _Merged:
    """The layer dirs that merge into one directory of the merged view, found lazily: a lookup
    stops at the first layer that has the name, so most lookups look at one or two layers, not
    at the whole chain (a deep stack would cost depth x depth lstats otherwise)."""

    __slots__ = ("dirs", "done", "name", "source", "next")

    def __init__(self, dirs: list[bytes], done: bool, name: bytes = b"",
                 source: "_Merged | None" = None, next: int = 0) -> None:
        self.dirs = dirs  # found so far, uppermost first
        self.done = done  # no more below (a non-dir, a whiteout, an opaque dir, the end)
        self.name = name  # this dir's name in its parent
        self.source = source  # the parent's merge, whose layers are searched for ``name``
        self.next = next  # index in ``source`` of the next layer to look in


class LowerView:
    """Lookups in the merged view of ``dirs`` (diff dir paths, or symlinks to them; uppermost
    first). Nothing is read until a lookup needs it: building a view costs nothing, so applying
    a layer that asks nothing of its lowers costs nothing either."""

    def __init__(self, dirs: list[str]) -> None:
        self._chain = dirs
        root = _Merged([], not dirs)
        self._merge: dict[bytes, _Merged] = {b"": root}  # real dir -> its layer dirs

    def __bool__(self) -> bool:
        return bool(self._chain)

    def find(self, parent: bytes, name: bytes) -> Found | None:
        """``name`` in directory ``parent`` (a symlink-free path of the merged view), or None
        (absent or whited out)."""
        m = self._layers(parent)
        i = 0
        while (d := self._nth(m, i)) is not None:
            path = d + b"/" + name
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                i += 1
                continue
            if is_whiteout(st):
                return None
            if stat.S_ISDIR(st.st_mode):
                real = _join(parent, name)
                if real not in self._merge:
                    self._merge[real] = _Merged([path], _opaque(path), name, m, i + 1)
            return Found(st, path, self._layer_of(d, parent))
        return None

    def _nth(self, m: _Merged, i: int) -> bytes | None:
        """The ``i``-th layer dir of merge ``m`` (looking further down only as far as needed),
        or None past its last."""
        while len(m.dirs) <= i and not m.done:
            if m.source is None:  # the root: the next diff dir of the chain
                d = os.fsencode(os.path.realpath(self._chain[len(m.dirs)]))
                m.dirs.append(d)
                m.done = _opaque(d) or len(m.dirs) == len(self._chain)
                continue
            below = self._nth(m.source, m.next)
            if below is None:
                m.done = True
                break
            m.next += 1
            path = below + b"/" + m.name
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                m.done = True  # a whiteout or a non-dir ends the merge
                break
            m.dirs.append(path)
            m.done = _opaque(path)
        return m.dirs[i] if i < len(m.dirs) else None

    def _layer_of(self, d: bytes, parent: bytes) -> bytes:
        """The diff dir that ``d`` (directory ``parent`` inside one layer) belongs to."""
        if not parent:
            return d
        return d[:-(len(parent) + 1)]

    def _layers(self, real: bytes) -> _Merged:
        got = self._merge.get(real)
        if got is not None:
            return got
        parent, _, name = real.rpartition(b"/")
        f = self.find(parent, name)
        if f is None or not stat.S_ISDIR(f.st.st_mode):
            self._merge[real] = _Merged([], True)  # not a dir below: nothing merges into it
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
