"""A container's network options as the Engine API records them, from the CLI's flags or a
``ContainerCreate`` body: ``HostConfig.NetworkMode``, ``HostConfig.PortBindings``,
``HostConfig.PublishAllPorts``, ``NetworkingConfig.EndpointsConfig`` (aliases, ``--ip``) and the
published ports added to ``ExposedPorts``. The CLI's ``create``/``run`` and the daemon build the
same record here; ``runtime.network`` carries it out.

``-p`` follows Docker (``nat.ParsePortSpec``): ``[IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]``,
ranges ``8000-8001:80-81``, ``[::1]`` for IPv6 host addresses; an empty ``HOST_PORT`` is any
free port. Unlike Docker, a binding without ``IP`` is on 127.0.0.1, not every address: a
published port is not open to the world unless the user says ``0.0.0.0``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from graph.errors import InvalidInput

DEFAULT_HOST_IP = "127.0.0.1"
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")


def _range(text: str, what: str, spec: str) -> list[int]:
    lo_s, dash, hi_s = text.partition("-")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if dash else lo
    except ValueError:
        raise InvalidInput(f"invalid {what} {text!r} in -p {spec!r}") from None
    if not 0 < lo <= hi <= 65535:
        raise InvalidInput(f"invalid {what} {text!r} in -p {spec!r}: 1-65535")
    return list(range(lo, hi + 1))


def parse_publish(specs: Sequence[str]) -> tuple[dict[str, list[dict[str, str]]], dict[str, dict[str, Any]]]:
    """``-p`` values -> (``PortBindings``, ``ExposedPorts`` entries). Raises InvalidInput."""
    bindings: dict[str, list[dict[str, str]]] = {}
    exposed: dict[str, dict[str, Any]] = {}
    for spec in specs:
        rest, _, proto = spec.partition("/")
        proto = proto.lower() or "tcp"
        if proto not in ("tcp", "udp"):
            raise InvalidInput(f"invalid protocol {proto!r} in -p {spec!r}: tcp or udp")
        host_ip = ""
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0 or rest[end + 1:end + 2] != ":":
                raise InvalidInput(f"invalid -p {spec!r}: want [IPv6]:HOST:CONTAINER")
            host_ip, rest = rest[1:end], rest[end + 2:]
            parts = rest.split(":")
            if len(parts) != 2:
                raise InvalidInput(f"invalid -p {spec!r}")
            host_port, ctr = parts
        else:
            parts = rest.split(":")
            if len(parts) == 1:
                host_port, ctr = "", parts[0]
            elif len(parts) == 2:
                host_port, ctr = parts
            elif len(parts) == 3:
                host_ip, host_port, ctr = parts
            else:
                raise InvalidInput(f"invalid -p {spec!r}: want [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]")
        if host_ip:
            try:
                ipaddress.ip_address(host_ip)
            except ValueError:
                raise InvalidInput(f"invalid host address {host_ip!r} in -p {spec!r}") from None
        ctr_ports = _range(ctr, "container port", spec)
        host_ports: list[int | None] = [None] * len(ctr_ports)
        if host_port:
            hp = _range(host_port, "host port", spec)
            if len(hp) != len(ctr_ports):
                raise InvalidInput(f"invalid -p {spec!r}: the host and container ranges differ in size")
            host_ports = list(hp)
        for cp, hp_ in zip(ctr_ports, host_ports):
            key = f"{cp}/{proto}"
            bindings.setdefault(key, []).append({"HostIp": host_ip or DEFAULT_HOST_IP,
                                                 "HostPort": str(hp_) if hp_ else ""})
            exposed[key] = {}
    return bindings, exposed


def network_config(*, network: str = "none", aliases: Sequence[str] = (), ip: str = "",
                   publish: Sequence[str] = (), publish_all: bool = False) -> dict[str, Any]:
    """The network part of a container record from ``--network``, ``--network-alias``,
    ``--ip``, ``-p`` and ``-P``: a dict with ``HostConfig`` fields and ``NetworkingConfig``
    (and ``ExposedPorts``) to merge into the record. Raises InvalidInput."""
    mode = network or "none"
    if mode == "default":
        mode = "bridge"
    if not _NAME_RE.match(mode):
        raise InvalidInput(f"invalid network {mode!r}: none, host, bridge or a network's name or ID")
    if mode in ("none", "host"):
        if aliases or ip:
            raise InvalidInput(f"--network-alias and --ip need a bridge network, not --network {mode}")
        if publish or publish_all:
            raise InvalidInput(f"published ports need a bridge network, not --network {mode}")
    if ip:
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise InvalidInput(f"invalid --ip {ip!r}: an IPv4 address") from None
    bindings, exposed = parse_publish(publish)
    out: dict[str, Any] = {"HostConfig": {"NetworkMode": mode}}
    if bindings:
        out["HostConfig"]["PortBindings"] = bindings
    if publish_all:
        out["HostConfig"]["PublishAllPorts"] = True
    if exposed:
        out["ExposedPorts"] = exposed
    if mode not in ("none", "host"):
        ep: dict[str, Any] = {}
        if aliases:
            ep["Aliases"] = list(aliases)
        if ip:
            ep["IPAMConfig"] = {"IPv4Address": ip}
        out["NetworkingConfig"] = {"EndpointsConfig": {mode: ep}}
    return out


def apply(record: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``network_config``'s result into a container record (``HostConfig`` merged key
    by key, ``ExposedPorts`` unioned)."""
    out = dict(record)
    hc = dict(out.get("HostConfig") or {})
    hc.update(part.get("HostConfig") or {})
    out["HostConfig"] = hc
    if part.get("ExposedPorts"):
        out["ExposedPorts"] = {**dict(out.get("ExposedPorts") or {}), **dict(part["ExposedPorts"])}
    if part.get("NetworkingConfig"):
        out["NetworkingConfig"] = dict(part["NetworkingConfig"])
    return out
