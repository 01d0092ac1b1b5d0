"""Published ports (``-p``, ``-P``) by a userland proxy: one small process per container that
listens on the host's addresses and relays TCP connections and UDP datagrams to the
container's address on its bridge.

Why a proxy and not nftables/iptables DNAT (Docker does both): Debian 12 has no ``nft`` binary
by default (``iptables`` 1.8.9 is the nf_tables one), and the default host address here is
``127.0.0.1``, which DNAT reaches only with ``route_localnet=1`` on the host, a sysctl that
opens the host's loopback to its neighbours. A proxy needs no sysctl and no firewall rule,
reports a port in use at once (the sockets are bound before the container starts), and cannot
be leaked by a crash: it exits when the container's monitor does (it waits on the monitor's
pidfd), and the kernel closes its sockets. The cost is a copy through user space per byte and
the loss of the client's address (the container sees the bridge's gateway as the peer).

The proxy is forked from the command that starts the container (no new interpreter), twice, so
it is nobody's zombie; one thread waits for connections and the monitor, two per connection
copy bytes.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from graph import Conflict, InvalidInput

DEFAULT_HOST_IP = "127.0.0.1"
UDP_IDLE = 60.0
BUF = 65536


class Binding:
    """One published port: ``proto`` tcp|udp, the host address and port (0: any free one),
    the container's port."""

    __slots__ = ("proto", "host_ip", "host_port", "port")

    def __init__(self, proto: str, host_ip: str, host_port: int, port: int) -> None:
        self.proto, self.host_ip, self.host_port, self.port = proto, host_ip, host_port, port

    def key(self) -> str:
        return f"{self.port}/{self.proto}"

    def __repr__(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.port}/{self.proto}"


def bindings_of(config: Mapping[str, Any]) -> list[Binding]:
    """The bindings a container record asks for: ``HostConfig.PortBindings`` (Docker's shape,
    ``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}``; an empty ``HostIp`` is 127.0.0.1 and
    an empty ``HostPort`` any free port) and, with ``PublishAllPorts``, every ``ExposedPorts``
    entry not bound otherwise, on 127.0.0.1 and a free port. Raises InvalidInput."""
    hc = config.get("HostConfig") or {}
    out: list[Binding] = []
    seen: set[str] = set()
    for key, items in (hc.get("PortBindings") or {}).items():
        port, proto = _port_key(str(key))
        seen.add(f"{port}/{proto}")
        for item in items or [{}]:
            host_ip = str((item or {}).get("HostIp") or DEFAULT_HOST_IP)
            hp = str((item or {}).get("HostPort") or "0")
            try:
                ipaddress.ip_address(host_ip)
                host_port = int(hp)
            except ValueError:
                raise InvalidInput(f"invalid port binding {host_ip}:{hp}->{key}") from None
            if not 0 <= host_port <= 65535:
                raise InvalidInput(f"invalid host port {hp} for {key}")
            out.append(Binding(proto, host_ip, host_port, port))
    if hc.get("PublishAllPorts"):
        for key in sorted(config.get("ExposedPorts") or {}):
            port, proto = _port_key(str(key))
            if f"{port}/{proto}" not in seen:
                out.append(Binding(proto, DEFAULT_HOST_IP, 0, port))
    return out


def _port_key(key: str) -> tuple[int, str]:
    port_s, _, proto = key.partition("/")
    proto = proto or "tcp"
    try:
        port = int(port_s)
    except ValueError:
        raise InvalidInput(f"invalid container port {key!r}") from None
    if proto not in ("tcp", "udp") or not 0 < port <= 65535:
        raise InvalidInput(f"invalid container port {key!r}: want PORT[/tcp|udp]")
    return port, proto


def bind_all(bindings: Sequence[Binding]) -> list[tuple[socket.socket, Binding]]:
    """Bind (and for TCP listen on) every host address; the sockets with the bindings' actual
    ports. Raises Conflict (Docker's "port is already allocated") with nothing left open."""
    out: list[tuple[socket.socket, Binding]] = []
    try:
        for b in bindings:
            fam = socket.AF_INET6 if ":" in b.host_ip else socket.AF_INET
            kind = socket.SOCK_STREAM if b.proto == "tcp" else socket.SOCK_DGRAM
            s = socket.socket(fam, kind)
            out.append((s, b))
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((b.host_ip, b.host_port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise Conflict(f"Bind for {b.host_ip}:{b.host_port} failed: port is already allocated") from None
                raise Conflict(f"cannot publish {b}: {e.strerror}") from None
            if kind == socket.SOCK_STREAM:
                s.listen(128)
            out[-1] = (s, Binding(b.proto, b.host_ip, s.getsockname()[1], b.port))
    except BaseException:
        for s, _ in out:
            s.close()
        raise
    return out


def spawn_proxy(bound: Sequence[tuple[socket.socket, Binding]], target_ip: str, watch_pid: int) -> int:
    """Fork the proxy for ``bound`` (relaying to ``target_ip``), which exits when the process
    ``watch_pid`` (the container's monitor) does or on SIGTERM; its pid. The caller keeps its
    copies of the sockets and should close them."""
    pidfd = os.pidfd_open(watch_pid)
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.write(w, str(os.getpid()).encode())
            os.close(w)
            keep = {pidfd, *(s.fileno() for s, _ in bound)}
            _quiet(keep)
            _set_name(b"lamina-proxy")
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _serve(bound, target_ip, pidfd)
        except BaseException:  # noqa: BLE001 - a forked child must never return into the caller
            pass
        os._exit(0)
    os.close(w)
    os.close(pidfd)
    try:
        data = b""
        while True:
            chunk = os.read(r, 32)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    if not data:
        raise OSError("the port proxy did not start")
    return int(data)


def _set_name(name: bytes) -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME: ps shows it


def _quiet(keep: set[int]) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    keep = keep | {0, 1, 2}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


# ---- the proxy ----------------------------------------------------------------------------------
def _serve(bound: Sequence[tuple[socket.socket, Binding]], target_ip: str, pidfd: int) -> None:
    sel = selectors.DefaultSelector()
    sel.register(pidfd, selectors.EVENT_READ, None)
    udp: dict[int, _Udp] = {}
    for s, b in bound:
        s.setblocking(False)
        if b.proto == "tcp":
            sel.register(s, selectors.EVENT_READ, ("tcp", b))
        else:
            u = _Udp(s, (target_ip, b.port))
            udp[s.fileno()] = u
            sel.register(s, selectors.EVENT_READ, ("udp", u))
    while True:
        for key, _ in sel.select(timeout=UDP_IDLE / 4):
            if key.data is None:
                return  # the monitor is gone: so is the container
            kind, obj = key.data
            if kind == "tcp":
                with contextlib.suppress(OSError):
                    conn, _addr = key.fileobj.accept()  # type: ignore[union-attr]
                    threading.Thread(target=_relay_tcp, args=(conn, (target_ip, obj.port)), daemon=True).start()
            else:
                obj.from_client()
        for u in udp.values():
            u.expire()


def _relay_tcp(client: socket.socket, target: tuple[str, int]) -> None:
    client.setblocking(True)
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    t = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    t.start()
    _pump(client, upstream)
    t.join()
    client.close()
    upstream.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until EOF, then pass the EOF on (half-close)."""
    try:
        while True:
            data = src.recv(BUF)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class _Udp:
    """UDP: one connected socket toward the container per client address, answers sent back
    from the listening socket; idle flows closed after ``UDP_IDLE`` seconds."""

    def __init__(self, listen: socket.socket, target: tuple[str, int]) -> None:
        self.listen = listen
        self.target = target
        self.flows: dict[Any, tuple[socket.socket, list[float]]] = {}

    def from_client(self) -> None:
        try:
            data, addr = self.listen.recvfrom(BUF)
        except OSError:
            return
        flow = self.flows.get(addr)
        if flow is None:
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                up.connect(self.target)
            except OSError:
                up.close()
                return
            flow = (up, [time.monotonic()])
            self.flows[addr] = flow
            threading.Thread(target=self._back, args=(addr, up, flow[1]), daemon=True).start()
        flow[1][0] = time.monotonic()
        with contextlib.suppress(OSError):
            flow[0].send(data)

    def _back(self, addr: Any, up: socket.socket, last: list[float]) -> None:
        up.settimeout(UDP_IDLE / 4)
        while addr in self.flows:
            try:
                data = up.recv(BUF)
            except (TimeoutError, ConnectionRefusedError):
                continue  # an ICMP "port unreachable" for an earlier datagram: not the end of the flow
            except OSError:
                break
            last[0] = time.monotonic()
            with contextlib.suppress(OSError):
                self.listen.sendto(data, addr)

    def expire(self) -> None:
        now = time.monotonic()
        for addr, (up, last) in list(self.flows.items()):
            if now - last[0] > UDP_IDLE:
                del self.flows[addr]
                up.close()
