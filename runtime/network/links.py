"""Links through iproute2: bridges, veth pairs, addresses and routes, each step a line of one
``ip -batch -`` (one process for the host's side, one inside the container's namespace).

Why ``ip`` and not pyroute2 (in-process netlink): measured here, one container's links cost
3.5-4 ms as two ``ip -batch`` processes, and 12-21 ms with pyroute2 0.9.7, which also adds
about 125 ms of import to every command that touches the network. ``ip`` is in every Debian
(iproute2) and its errors are the ones users know.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from typing import Any

from graph import LaminaError, Unsupported

IP = "ip"
TIMEOUT = 30.0
_FAILED = re.compile(r"Command failed -:(\d+)")


def _run(args: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([IP, *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT)
    except FileNotFoundError:
        raise Unsupported("iproute2's ip is not installed (apt-get install iproute2)") from None


def batch(lines: Sequence[str], *, tolerate: Sequence[tuple[int, str]] = ()) -> None:
    """Run ``lines`` as one ``ip -force -batch -`` (in this thread's network namespace).
    ``tolerate``: (line number from 1, message) failures that are fine (``File exists`` of a
    bridge that is there). Raises LaminaError with ip's message for any other failure."""
    proc = _run(["-force", "-batch", "-"], "\n".join(lines) + "\n")
    if proc.returncode == 0:
        return
    errs = proc.stderr.splitlines()
    bad = []
    for i, line in enumerate(errs):
        m = _FAILED.search(line)
        if not m:
            continue
        n = int(m.group(1))
        msg = errs[i - 1].strip() if i > 0 else ""
        if not any(n == tn and tm in msg for tn, tm in tolerate):
            bad.append(f"{lines[n - 1] if 0 < n <= len(lines) else '?'}: {msg}")
    if bad or not any(_FAILED.search(ln) for ln in errs):
        raise LaminaError(f"ip: {'; '.join(bad) or proc.stderr.strip() or f'exit status {proc.returncode}'}")


def host_side(bridge: str, gateway_cidr: str, veths: Sequence[tuple[str, str, str, str]]) -> None:
    """Make sure the bridge exists with its gateway address and is up, then for each
    (host name, container-side name, MAC, namespace path) a veth pair with one end on the
    bridge and the other in the namespace."""
    lines = [f"link add name {bridge} type bridge", f"addr replace {gateway_cidr} dev {bridge}",
             f"link set {bridge} up"]
    for host_if, peer, mac, netns_path in veths:
        lines += [f"link add name {host_if} type veth peer name {peer} address {mac} netns {netns_path}",
                  f"link set {host_if} master {bridge} up"]
    batch(lines, tolerate=[(1, "File exists")])


def container_side(ifname: str, ip_cidr: str, gateway: str | None) -> None:
    """Inside the container's namespace (``netns.entered``): loopback up, the address, the
    interface up, and the default route via ``gateway`` (None: no default route)."""
    lines = ["link set lo up", f"addr add {ip_cidr} dev {ifname}", f"link set {ifname} up"]
    if gateway:
        lines.append(f"route add default via {gateway} dev {ifname}")
    batch(lines)


def ensure_bridge(bridge: str, gateway_cidr: str) -> None:
    host_side(bridge, gateway_cidr, [])


def delete(names: Sequence[str]) -> None:
    """Delete links by name; ones already gone are fine."""
    if names:
        batch([f"link del {n}" for n in names],
              tolerate=[(i + 1, m) for i in range(len(names)) for m in ("Cannot find device", "No such device")])


def links() -> list[dict[str, Any]]:
    """Every link of this namespace (``ip -j link show``: ifname, master, link_type, ...)."""
    proc = _run(["-j", "link", "show"])
    if proc.returncode != 0:
        raise LaminaError(f"ip link show: {proc.stderr.strip()}")
    try:
        doc = json.loads(proc.stdout or "[]")
    except ValueError:
        raise LaminaError("ip -j link show: unreadable answer") from None
    return [d for d in doc if isinstance(d, dict)]
