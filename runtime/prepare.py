"""The bundle of a container about to be created or started: resolve, check and write
``config.json`` (``runtime.bundle`` builds the document; this module does what needs the
container's tree: the user from its passwd and group files, the program, the working
directory)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from graph import InvalidInput, NotFound
from runtime import bundle, cgroups, rootfs, security, users, volumes
from runtime.network import setup as network  # the container's network namespace, if it has one
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
                      swap_limit=cgroups.swap_limit_supported(), netns=network.netns_for(store, c))
    security.apply(doc, cfg, _group_add(rootfs_path, cfg))
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
        binds = {m["destination"] for m in doc["mounts"] if m.get("type") == "bind"}
        prog = proc["args"][0]
        in_mount = any(prog == t or prog.startswith(t.rstrip("/") + "/") for t in binds)
        if not in_mount and rootfs.find_executable(rootfs_path, proc["args"][0], env_path, cwd) is None:
            raise NotFound(f"container {c.name}: executable {proc['args'][0]!r} not found in the image"
                           + ("" if "/" in proc["args"][0] else f" (PATH={env_path})"))
        rootfs.make_dirs(rootfs_path, cwd)
        bundle.write_etc_files(p.dir, doc["hostname"], bundle.network_of(cfg))
        _etc_options(p.dir, cfg)
    bundle.write(p.config, doc)
    volumes.copied_done(store, c, copied)
    return doc


def _group_add(root: str, cfg: dict[str, Any]) -> list[int]:
    """``--group-add``: numbers, or names from the image's ``/etc/group``."""
    wanted = list((cfg.get("HostConfig") or {}).get("GroupAdd") or [])
    if not wanted:
        return []
    groups = {g.name: g.gid for g in users.parse_group(rootfs.read_file(root, "/etc/group") or b"")}
    out = []
    for g in wanted:
        if str(g).isdigit():
            out.append(int(g))
        elif g in groups:
            out.append(groups[g])
        else:
            raise InvalidInput(f"--group-add {g}: no such group in the image's /etc/group")
    return out


def _etc_options(etc_dir: str, cfg: dict[str, Any]) -> None:
    """``--dns``/``--dns-search``/``--dns-option`` write ``resolv.conf``; ``--add-host`` adds
    lines to ``hosts`` (Docker's order: its own entries first, then the extra hosts)."""
    hc = cfg.get("HostConfig") or {}
    dns, search, opts = hc.get("Dns") or [], hc.get("DnsSearch") or [], hc.get("DnsOptions") or []
    if dns or search or opts:
        lines = [f"nameserver {d}" for d in dns]
        if not dns:
            lines += [ln for ln in _read(os.path.join(etc_dir, "resolv.conf")).splitlines()
                      if ln.startswith("nameserver")]
        if search:
            lines.append("search " + " ".join(search))
        if opts:
            lines.append("options " + " ".join(opts))
        _write(os.path.join(etc_dir, "resolv.conf"), "\n".join(lines) + "\n")
    extra = hc.get("ExtraHosts") or []
    if extra:
        text = _read(os.path.join(etc_dir, "hosts"))
        add = []
        for e in extra:
            name, _, ip = str(e).partition(":")
            add.append(f"{ip}\t{name}")
        _write(os.path.join(etc_dir, "hosts"), text + "\n".join(add) + "\n")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
