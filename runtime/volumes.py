"""A container's mounts, runtime side: volumes made and recorded at create, mount points and
Docker's copy-up at start, and the OCI ``mounts`` entries.

At create (``attach``) each volume mount gets its volume: a named one is made if missing, an
anonymous one is made with a random name; the container is recorded as a user of each
(``graph.volumes``: a volume in use cannot be removed), and the resolved list is kept in the
container's record as ``MountPoints`` (so an anonymous volume is the same one at every start).

At start (``oci_mounts``) every target is resolved *inside the rootfs* (``runtime.rootfs``:
``..`` stops at the root, symlinks of the image are followed as the container would follow
them, never out of it) before anything on the host is touched: the mount point is created
there, a new volume is filled from the image's content at that path (copy-up, once), and the
resolved path is what the runtime is given. So an image with ``/data -> ../../../../etc`` and
``-v vol:/data`` copies the image's own ``/etc`` into ``vol``, never the host's, and the mount
lands inside the rootfs (the runc CVE-2021-30465 class; the runtimes also resolve inside the
root themselves). A target below another mount of the container is left for the runtime to
resolve through that mount.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import subprocess
from typing import TYPE_CHECKING, Any

from graph import InvalidInput, LaminaError, NotFound
from runtime import rootfs
from runtime.spec import BIND, TMPFS, VOLUME, Mount, Spec

if TYPE_CHECKING:
    from graph import Container, Store

MOUNT_POINTS = "MountPoints"  # key of the container's record


def check_sources(sp: Spec) -> None:
    """Bind sources ``--mount`` names must exist (``-v`` creates them at start, as Docker).
    Raises InvalidInput with Docker's words."""
    for m in sp.mounts:
        if m.type == BIND and not m.create_source and not os.path.exists(m.source):
            raise InvalidInput(f'invalid mount config for type "bind": bind source path does not exist: {m.source}')


def attach(store: "Store", c: "Container", sp: Spec) -> tuple["Container", list[str]]:
    """Make and record the container's volumes (see the module docstring); the refreshed
    record and the names of the volumes this call created (for the caller's undo).
    Raises: InvalidInput (a volume name), Conflict (a volume being removed)."""
    created: list[str] = []
    points: list[dict[str, Any]] = []
    try:
        for m in sp.mounts:
            d = m.to_json()
            if m.type == VOLUME:
                v, new = store.volumes.create(m.source or None)
                if new:
                    created.append(v.name)
                store.volumes.attach(v.name, c.id)
                d["source"] = v.name
                d["anonymous"] = v.anonymous
            points.append(d)
        cfg = dict(c.config)
        cfg[MOUNT_POINTS] = points
        store.containers.update_config(c, cfg)
    except BaseException:
        forget(store, created)
        raise
    return store.containers.get(c.id), created


def forget(store: "Store", names: list[str]) -> None:
    """Remove volumes (errors ignored: another container may have taken one meanwhile)."""
    for name in names:
        with contextlib.suppress(LaminaError):
            store.volumes.remove(name)


def anonymous_of(store: "Store", c: "Container") -> list[str]:
    return [v.name for v in store.volumes.of_container(c.id) if v.anonymous]


def mount_points(c: "Container") -> list[Mount]:
    return [Mount.from_json(d) for d in c.config.get(MOUNT_POINTS) or []]


def _depth(m: Mount) -> int:
    return m.target.count("/")


def _under(path: str, parent: str) -> bool:
    return path.startswith(parent.rstrip("/") + "/")


def _copy_up(src: str, dst: str) -> None:
    """Fill the empty volume directory ``dst`` with the image's directory ``src`` (content,
    owners, modes, times, links as links: ``cp -a``), and give ``dst`` ``src``'s owner and
    mode, as Docker does."""
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, st.st_mode & 0o7777)
    if not os.listdir(src):
        return
    proc = subprocess.run(["cp", "-a", "--", src + "/.", dst + "/"], capture_output=True)
    if proc.returncode != 0:
        raise LaminaError(f"copying the image's {src} into a volume: "
                          f"{proc.stderr.decode(errors='replace').strip() or proc.returncode}")


def oci_mounts(store: "Store", c: "Container", root: str, *, for_start: bool) -> tuple[list[dict[str, Any]], list[int]]:
    """The OCI ``mounts`` entries for the container's mounts over the tree at ``root``, and the
    indexes of ``MountPoints`` whose copy-up was done now (the caller records them as done).
    ``for_start``: create missing bind sources (``-v``) and mount points, copy up.
    Raises: NotFound (a volume is gone), InvalidInput (a bind source missing)."""
    points = mount_points(c)
    order = sorted(range(len(points)), key=lambda i: _depth(points[i]))
    out: list[dict[str, Any]] = []
    copied: list[int] = []
    placed: list[str] = []
    for i in order:
        m = points[i]
        if m.type == VOLUME:
            try:
                source = store.volumes.get(m.source).mountpoint
            except NotFound:
                raise NotFound(f"container {c.name}: volume {m.source} is gone") from None
        elif m.type == BIND:
            source = m.source
            if not os.path.exists(source):
                if not (m.create_source and for_start):
                    if for_start:
                        raise InvalidInput(f'invalid mount config for type "bind": bind source path does not exist: {source}')
                else:
                    os.makedirs(source, mode=0o755, exist_ok=True)
        else:
            source = "tmpfs"
        nested = any(_under(m.target, t) or m.target == t for t in placed)
        placed.append(m.target)
        if nested:
            dest = m.target  # below another mount: the runtime resolves it through that mount
        else:
            host = rootfs.resolve(root, m.target)
            if os.path.normpath(host) == os.path.normpath(root):
                raise InvalidInput(f"container {c.name}: mount target {m.target} resolves to / in the image")
            dest = "/" + os.path.relpath(host, root)
            if for_start:
                is_file = m.type == BIND and os.path.exists(source) and not os.path.isdir(source)
                if is_file:
                    rootfs.make_dirs(root, posixpath.dirname(dest))
                    if not os.path.lexists(host):
                        os.close(os.open(host, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
                else:
                    existed = os.path.isdir(host)
                    rootfs.make_dirs(root, dest)
                    if m.type == VOLUME and m.copy and existed and not os.listdir(source):
                        _copy_up(host, source)
                    if m.type == VOLUME and m.copy:
                        copied.append(i)
        if m.type == TMPFS:
            entry = {"destination": dest, "type": "tmpfs", "source": "tmpfs",
                     "options": list(m.options) + (["ro"] if m.readonly else [])}
        else:
            opts = ["rbind"] + (list(m.options) if m.type == BIND else ["rprivate"])
            entry = {"destination": dest, "type": "bind", "source": source,
                     "options": opts + (["ro"] if m.readonly else [])}
        out.append(entry)
    return out, copied


def copied_done(store: "Store", c: "Container", indexes: list[int]) -> None:
    """Record that the volumes at ``indexes`` of ``MountPoints`` have had their copy-up
    (Docker copies into a volume at its first mount only)."""
    if not indexes:
        return
    cfg = dict(c.config)
    points = [dict(d) for d in cfg.get(MOUNT_POINTS) or []]
    for i in indexes:
        points[i]["copy"] = False
    cfg[MOUNT_POINTS] = points
    store.containers.update_config(c, cfg)


def inspect_mounts(store: "Store", c: "Container") -> list[dict[str, Any]]:
    """Docker's ``Mounts`` of ``docker inspect``."""
    out = []
    for m in mount_points(c):
        d: dict[str, Any] = {"Type": m.type, "Destination": m.target, "Mode": "ro" if m.readonly else "",
                             "RW": not m.readonly, "Propagation": m.options[0] if m.type == BIND and m.options else ""}
        if m.type == VOLUME:
            d["Name"] = m.source
            d["Driver"] = "local"
            with contextlib.suppress(NotFound):
                d["Source"] = store.volumes.get(m.source).mountpoint
            d["Mode"] = "z" if not m.readonly else "ro"
        elif m.type == BIND:
            d["Source"] = m.source
        else:
            d["Source"] = ""
        out.append(d)
    return out
