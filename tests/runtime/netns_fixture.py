"""A network namespace of the test's own, entered by the test process for the test's length.

``own_netns`` makes ``lt-<random>`` (``ip netns add``), brings its loopback up, and moves the
pytest process's main thread into it (``setns``): every lamina call in the test, in-process or
as a child process, then makes its bridges, veths, addresses, rules and listening sockets in
there, and no packet can leave (the namespace has no interface but ``lo`` and what lamina
makes). On the way out the thread goes back, the namespace is deleted (also when the test
failed), and the host's links, addresses, packet-filter rules and ``ip_forward`` are compared
with what they were before: any difference fails the test.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

CLONE_NEWNET = 0x40000000


def _out(*argv: str) -> str:
    if shutil.which(argv[0]) is None:
        return ""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30).stdout


def host_snapshot() -> dict[str, str]:
    """What lamina could change in a network namespace (this thread's)."""
    with open("/proc/sys/net/ipv4/ip_forward", encoding="ascii") as f:
        fwd = f.read()
    return {
        "links": _out("ip", "-o", "link", "show"),
        "addrs": _out("ip", "-o", "addr", "show"),
        "routes": _out("ip", "route", "show"),
        "filter": _out("iptables", "-w", "-S"),
        "nat": _out("iptables", "-w", "-t", "nat", "-S"),
        "ip_forward": fwd,
    }


@pytest.fixture
def own_netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network tests need root and iproute2")
    libc = ctypes.CDLL(None, use_errno=True)
    before = host_snapshot()
    name = f"lt-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    entered = False
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the test's namespace")
            entered = True
        finally:
            os.close(fd)
        yield name
    finally:
        if entered and libc.setns(back, CLONE_NEWNET) != 0:
            os.write(2, b"cannot return to the host network namespace\n")
            os._exit(70)
        os.close(back)
        subprocess.run(["ip", "netns", "del", name], timeout=30)
    after = host_snapshot()
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"the host's network namespace changed: {changed}\n" + "\n".join(
        f"{k}:\n--- before\n{before[k]}\n+++ after\n{after[k]}" for k in changed)
