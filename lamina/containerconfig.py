"""A container's configuration as Docker records it: the fields ``docker create`` sends (``Image``,
``Cmd``, ``Entrypoint``, ``Env``, ``WorkingDir``, ``User``, ``Hostname``, ``Labels``, and
``HostConfig`` with ``NetworkMode``, ``Memory``, ``NanoCpus``, ``PidsLimit``, ``Runtime``), merged
with the image's runtime defaults the way Docker's daemon merges them at create time
(moby ``daemon/commit.go`` ``merge``). The result is stored with the container, so the container
keeps meaning the same thing whatever later happens to its image, and the runtime reads one
complete record.

This lives in ``lamina`` (not the CLI) because the CLI's ``create`` and a future Engine API
daemon build the same record from the same options.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from graph.errors import InvalidInput

NETWORK_MODES = ("none", "host")
DEFAULT_NETWORK = "none"  # unlike Docker: a container is put on a bridge network only on request

_NETWORK_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")  # a bridge network (lamina.netconfig)
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,62})")
_RAM_RE = re.compile(r"(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?")
_RAM_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_memory(s: str) -> int:
    """Docker's ``RAMInBytes``: ``512m``, ``1g``, ``1.5GiB``, ``1048576`` (bytes); binary units."""
    m = _RAM_RE.fullmatch(s.strip()) if isinstance(s, str) else None
    if m is None:
        raise InvalidInput(f"invalid memory size {s!r}: want a number with an optional unit b, k, m, g, t")
    n = float(m.group(1)) * _RAM_UNITS[(m.group(2) or "").lower()]
    if n < 1 or n > (1 << 62):
        raise InvalidInput(f"invalid memory size {s!r}: out of range")
    return int(n)


def parse_cpus(s: str) -> int:
    """``--cpus 1.5`` as Docker's ``NanoCpus`` (1.5e9)."""
    try:
        v = float(s)
    except ValueError:
        raise InvalidInput(f"invalid --cpus {s!r}: want a number such as 0.5 or 2") from None
    if not math.isfinite(v) or v <= 0 or v > 1 << 20:
        raise InvalidInput(f"invalid --cpus {s!r}: must be a positive number")
    return int(round(v * 1e9))


def parse_env(items: Sequence[str], lookup: Any) -> list[str]:
    """``-e K=V`` entries; ``-e K`` takes K from ``lookup(K)`` (the caller's environment) and is
    dropped when unset, as the docker CLI does."""
    out: list[str] = []
    for item in items:
        key, eq, _value = item.partition("=")
        if not key or "\0" in item or any(ch.isspace() for ch in key):
            raise InvalidInput(f"invalid environment variable {item!r}: want KEY=VALUE")
        if eq:
            out.append(item)
        else:
            v = lookup(key)
            if v is not None:
                out.append(f"{key}={v}")
    return out


def user_config(
    image: str,
    *,
    cmd: Sequence[str] = (),
    entrypoint: str | None = None,
    env: Sequence[str] = (),
    workdir: str = "",
    user: str = "",
    hostname: str = "",
    network: str = DEFAULT_NETWORK,
    memory: int = 0,
    nano_cpus: int = 0,
    pids_limit: int | None = None,
    runtime: str | None = None,
) -> dict[str, Any]:
    """The record the user asked for, in the Engine API's ``ContainerCreate`` shape, validated.
    ``entrypoint=""`` resets the image's entrypoint; ``None`` keeps it."""
    if workdir and not workdir.startswith("/"):
        raise InvalidInput(f"invalid working directory {workdir!r}: it must be an absolute path")
    if hostname and not _HOSTNAME_RE.fullmatch(hostname):
        raise InvalidInput(f"invalid hostname {hostname!r}: letters, digits, '.' and '-', at most 63")
    if network not in NETWORK_MODES and not _NETWORK_RE.fullmatch(network or ""):
        raise InvalidInput(f"invalid network {network!r}: none, host, bridge or a network's name")
    if pids_limit is not None and pids_limit < -1:
        raise InvalidInput(f"invalid --pids-limit {pids_limit}: -1 or 0 (unlimited) or a positive number")
    for word in list(cmd) + [entrypoint or "", user, workdir]:
        if "\0" in word:
            raise InvalidInput("invalid argument: contains a NUL character")
    return {
        "Hostname": hostname,
        "User": user,
        "Env": list(env),
        "Cmd": list(cmd) if cmd else None,
        "Image": image,
        "WorkingDir": workdir,
        "Entrypoint": None if entrypoint is None else ([entrypoint] if entrypoint else []),
        "Labels": {},
        "HostConfig": {
            "NetworkMode": network,
            "Memory": memory,
            "NanoCpus": nano_cpus,
            "PidsLimit": pids_limit,
            "Runtime": runtime,
        },
    }


def merge(user: Mapping[str, Any], image: Mapping[str, Any]) -> dict[str, Any]:
    """The user's config with the image's runtime defaults filled in (Docker's rules):
    ``User``, ``WorkingDir``, ``StopSignal`` when empty; ``Env`` the user's then every image
    variable whose key the user did not set; ``Labels``, ``ExposedPorts``, ``Volumes`` unioned
    (the user's value wins); ``Entrypoint`` the image's unless given, and ``Cmd`` the image's
    only when the user gave neither a command nor an entrypoint."""
    out = dict(user)
    if not out.get("User"):
        out["User"] = image.get("User") or ""
    if not out.get("WorkingDir"):
        out["WorkingDir"] = image.get("WorkingDir") or ""
    if image.get("StopSignal") and not out.get("StopSignal"):
        out["StopSignal"] = image["StopSignal"]
    user_env = list(out.get("Env") or [])
    keys = {e.partition("=")[0] for e in user_env}
    out["Env"] = user_env + [e for e in (image.get("Env") or []) if e.partition("=")[0] not in keys]
    out["Labels"] = {**dict(image.get("Labels") or {}), **dict(out.get("Labels") or {})}
    for k in ("ExposedPorts", "Volumes"):
        merged = {**dict(image.get(k) or {}), **dict(out.get(k) or {})}
        if merged:
            out[k] = merged
    if not out.get("Entrypoint"):
        if not out.get("Cmd"):
            out["Cmd"] = list(image["Cmd"]) if image.get("Cmd") else None
        if out.get("Entrypoint") is None:
            out["Entrypoint"] = list(image["Entrypoint"]) if image.get("Entrypoint") else None
    return out
