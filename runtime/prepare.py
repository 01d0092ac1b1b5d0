"""The bundle of a container about to be created or started: resolve, check and write
``config.json`` (``runtime.bundle`` builds the document; this module does what needs the
container's tree: the user from its passwd and group files, the program, the working
directory)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from drivers.errors import InvalidInput, NotFound
from runtime import bundle, cgroups, rootfs, users, volumes
from runtime.paths import Paths

if TYPE_CHECKING:
    from graph import Container, Store


def prepare(store: "Store", c: "Container", p: Paths, rootfs_path: str, *, for_start: bool,
            console_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Resolve, check and write the bundle for the container whose tree is at ``rootfs_path``.
    ``for_start``: also the checks that only matter when it runs now (the program exists) and the
    changes Docker makes to the tree at start (the working directory and mount points are
    created, new volumes filled from the image: ``runtime.volumes``)."""
    cfg = c.config
    user = users.resolve_user(rootfs_path, str(cfg.get("User") or ""))
    doc = bundle.spec(cfg, container_id=c.id, rootfs=rootfs_path, user=user, etc_dir=p.dir,
                      swap_limit=cgroups.swap_limit_supported())
    proc = doc["process"]
    if proc.get("terminal") and console_size:
        proc["consoleSize"] = {"height": console_size[0], "width": console_size[1]}
    cwd = proc["cwd"]
    if not cwd.startswith("/"):
        raise InvalidInput(f"container {c.name}: working directory {cwd!r} is not absolute")
    user_mounts, copied = volumes.oci_mounts(store, c, rootfs_path, for_start=for_start)
    targets = {m["destination"] for m in user_mounts}
    doc["mounts"] = [m for m in doc["mounts"] if m["destination"] not in targets] + user_mounts
    if for_start:
        env_path = next((e[5:] for e in proc["env"] if e.startswith("PATH=")), bundle.DEFAULT_PATH)
        in_mount = any(proc["args"][0].startswith(t.rstrip("/") + "/") for t in targets)
        if not in_mount and rootfs.find_executable(rootfs_path, proc["args"][0], env_path, cwd) is None:
            raise NotFound(f"container {c.name}: executable {proc['args'][0]!r} not found in the image"
                           + ("" if "/" in proc["args"][0] else f" (PATH={env_path})"))
        rootfs.make_dirs(rootfs_path, cwd)
        bundle.write_etc_files(p.dir, doc["hostname"], bundle.network_of(cfg))
    bundle.write(p.config, doc)
    volumes.copied_done(store, c, copied)
    return doc
