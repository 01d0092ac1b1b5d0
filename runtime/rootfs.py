"""Paths inside a container's root filesystem, looked up from the host without leaving it.

An image is hostile input: ``/etc/passwd`` may be a symlink to ``/../../etc/shadow`` of the host,
``/bin`` a link to ``/proc/self/root``. Every lookup here resolves a container path component by
component under the root, the way the kernel would inside the container (``..`` stops at the
root, an absolute symlink target restarts at the root, at most 40 links), so a result is always a
host path under ``root``. Used before the container runs (the image cannot change meanwhile), and
by the daemon's ``docker cp`` (``lamina.daemon.containers``) on a mounted tree, where a running
container could race a lookup as it can Docker's own (``FollowSymlinkInScope``).
"""

from __future__ import annotations

import errno
import os
import stat

from graph import InvalidInput

MAX_LINKS = 40


def resolve(root: str, path: str, *, follow_last: bool = True) -> str:
    """The host path of container path ``path`` under ``root`` (which need not exist in full).

    Requires: ``root`` is an absolute, existing directory.
    Effect: none (reads links only).
    Raises: InvalidInput (more than 40 symlinks: a loop).
    Repeat: pure for an unchanged tree.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = os.path.join(root, *done, part)
        try:
            st = os.lstat(here)
        except (FileNotFoundError, NotADirectoryError):
            done.append(part)
            continue
        if stat.S_ISLNK(st.st_mode) and (parts or follow_last):
            links += 1
            if links > MAX_LINKS:
                raise InvalidInput(f"too many levels of symbolic links resolving {path} in the container")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return os.path.join(root, *done)


def read_file(root: str, path: str, limit: int = 1 << 20) -> bytes | None:
    """The content of a regular file in the container (at most ``limit`` bytes); None if absent
    or not a regular file (a directory, a device, a FIFO: reading those could block or lie)."""
    host = resolve(root, path)
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR, errno.ENXIO):
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            b = os.read(fd, min(left, 1 << 16))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def is_dir(root: str, path: str) -> bool:
    """Whether a container path names a directory (links resolved under the root)."""
    return os.path.isdir(resolve(root, path))


def find_executable(root: str, name: str, path_env: str, cwd: str = "/") -> str | None:
    """Where the container's ``execvp(name)`` would find a program, as a container path; None
    if nowhere. A name with a slash is taken as a path (relative to ``cwd``); else each PATH entry
    is tried in order, as the runtimes do."""
    if "/" in name:
        candidates = [name if name.startswith("/") else os.path.join(cwd, name)]
    else:
        candidates = [os.path.join(d, name) if d.startswith("/") else os.path.join(cwd, d, name)
                      for d in path_env.split(":")]
    for c in candidates:
        host = resolve(root, c)
        try:
            st = os.stat(host)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return c
    return None


def make_dirs(root: str, path: str, mode: int = 0o755) -> None:
    """``mkdir -p`` of a container path (Docker creates a missing working directory); links on
    the way are resolved under the root, so nothing is created outside it.

    Raises: InvalidInput if a component exists and is not a directory.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    current = "/"
    for part in parts:
        current = os.path.join(current, part)
        host = resolve(root, current)
        try:
            os.mkdir(host, mode)
        except FileExistsError:
            if not os.path.isdir(host):
                raise InvalidInput(f"{current} exists in the container and is not a directory") from None
