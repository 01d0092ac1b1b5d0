"""Packet-filter rules of bridge networks (``iptables``, the nf_tables one on Debian 12; there is
no ``nft`` binary by default): isolation between networks, and outbound NAT when asked for.

- Isolation: traffic routed from one lamina bridge to another is dropped (chains
  ``LAMINA-ISOLATION`` and ``LAMINA-ISOLATION-2`` hung off ``FORWARD``, Docker's two-stage
  scheme), so containers on different networks cannot reach each other even on a host where
  IP forwarding is on. Where forwarding is off (the default here), the kernel routes nothing
  between bridges anyway, and a host without ``iptables`` is still isolated.
- Outbound NAT (masquerade) is off by default. ``network create --opt masquerade=true`` adds
  ``POSTROUTING -s SUBNET ! -o BRIDGE -j MASQUERADE`` and switches IP forwarding on in the
  namespace lamina runs in (as Docker does for every bridge): then, and only then, containers
  of that network reach what the host reaches.

Every rule carries the comment ``lamina:<network id 12>``; ``remove`` deletes a network's rules.
Rules are made when the bridge is (``ensure`` is called at each start, and checks before it
adds, so a reboot that lost the rules gets them back at the next start).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

from graph import LaminaError, Unsupported

if TYPE_CHECKING:
    from graph import Network

ISO1, ISO2 = "LAMINA-ISOLATION", "LAMINA-ISOLATION-2"
TRUE = ("1", "true", "yes", "on")


def masquerade(n: "Network") -> bool:
    return str(n.options.get("masquerade", "")).lower() in TRUE


def _iptables() -> str | None:
    return shutil.which("iptables")


def _run(args: list[str], *, check: bool = True) -> bool:
    exe = _iptables()
    if exe is None:
        raise Unsupported("iptables is not installed (apt-get install iptables)")
    proc = subprocess.run([exe, "-w", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and check:
        raise LaminaError(f"iptables {' '.join(args)}: {proc.stderr.strip()}")
    return proc.returncode == 0


def _ensure_rule(table: str, chain: str, spec: list[str]) -> None:
    if not _run(["-t", table, "-C", chain, *spec], check=False):
        _run(["-t", table, "-A", chain, *spec])


def _ensure_chain(table: str, chain: str) -> None:
    if not _run(["-t", table, "-S", chain], check=False):
        _run(["-t", table, "-N", chain])


def _rules(n: "Network") -> list[tuple[str, str, list[str]]]:
    tag = ["-m", "comment", "--comment", f"lamina:{n.id[:12]}"]
    assert n.bridge
    rules = [("filter", ISO1, ["-i", n.bridge, "!", "-o", n.bridge, *tag, "-j", ISO2]),
             ("filter", ISO2, ["-o", n.bridge, *tag, "-j", "DROP"])]
    if masquerade(n):
        rules.append(("nat", "POSTROUTING", ["-s", str(n.subnet), "!", "-o", n.bridge, *tag, "-j", "MASQUERADE"]))
    return rules


def ensure(n: "Network") -> None:
    """The network's rules (isolation always where iptables exists; NAT if asked for).
    Raises Unsupported when masquerade is asked for and iptables is missing."""
    if _iptables() is None:
        if masquerade(n):
            raise Unsupported("masquerade=true needs iptables (apt-get install iptables)")
        return
    for chain in (ISO1, ISO2):
        _ensure_chain("filter", chain)
    _ensure_rule("filter", "FORWARD", ["-j", ISO1])
    for table, chain, spec in _rules(n):
        _ensure_rule(table, chain, spec)
    if masquerade(n):
        with open("/proc/sys/net/ipv4/ip_forward", "w", encoding="ascii") as f:
            f.write("1\n")


def remove(n: "Network") -> None:
    """Delete the network's rules (those that exist)."""
    if _iptables() is None or not n.bridge:
        return
    for table, chain, spec in _rules(n):
        while _run(["-t", table, "-D", chain, *spec], check=False):
            pass


def listing() -> str:
    """``iptables-save``-style text of lamina's rules (tests and ``--debug``)."""
    if _iptables() is None:
        return ""
    out = []
    for table in ("filter", "nat"):
        proc = subprocess.run([str(_iptables()), "-w", "-t", table, "-S"], capture_output=True, text=True, timeout=30)
        out += [ln for ln in proc.stdout.splitlines() if "lamina" in ln.lower()]
    return "\n".join(out)
