"""``/etc/hosts`` and ``/etc/resolv.conf`` of a container on a bridge network.

Name resolution between containers is done with hosts entries kept current, not with an
embedded DNS server: every running member of a user-defined network has a line for every other
running member (``IP name aliases... short-id``), rewritten in all of them whenever one joins or
leaves. Why: no resolver process per network or per container to start, supervise and clean up
after a crash, nothing listening inside the container, and it works for any libc (static
busybox, glibc, musl) that reads ``/etc/hosts`` first. What it does not do that Docker's DNS
does: answer for a container that joined after a program cached its lookup, round-robin over
several containers with one alias, or forward other names to the host's resolvers itself (the
container queries them directly, from ``resolv.conf``).

The files are bound into the container (``runtime.bundle``), so an update rewrites the file in
place (same inode: a rename would leave the container looking at the old one).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence

BASE_HOSTS = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
              "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
              "ff02::2\tip6-allrouters\n")


def hosts(own: Sequence[tuple[str, Sequence[str]]], peers: Sequence[tuple[str, Sequence[str]]]) -> str:
    """The hosts file: localhost lines, the container's own addresses (``own``: (ip, names)),
    then one line per peer (ip, names)."""
    out = [BASE_HOSTS]
    seen: set[tuple[str, str]] = set()
    for ip, names in [*own, *peers]:
        uniq = [n for n in dict.fromkeys(names) if n and (ip, n) not in seen]
        seen.update((ip, n) for n in uniq)
        if uniq:
            out.append(f"{ip}\t{' '.join(uniq)}\n")
    return "".join(out)


def resolv_conf(host_text: str | None) -> str:
    """The host's ``resolv.conf`` without nameservers on loopback addresses (unreachable from
    the container's namespace), as Docker filters it. Unlike Docker, no public resolver is added
    when none is left: lamina sends no query to a server the user did not name."""
    lines = []
    for line in (host_text or "").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                if ipaddress.ip_address(words[1].split("%")[0]).is_loopback:
                    continue
            except ValueError:
                continue
        lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def write_in_place(path: str, text: str) -> None:
    """Rewrite ``path`` keeping its inode (it is bind-mounted into a running container):
    written over from the start, then cut to length, so a reader never sees an empty file."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], done)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
