"""A fault-injecting HTTP reverse proxy on 127.0.0.1, in front of a test registry.

``run_fault_proxy(upstream_host)`` forwards every request to ``upstream_host`` (``127.0.0.1:PORT``)
with its ``Host`` header unchanged, so the registry builds its upload ``Location`` URLs on the
proxy's address. Rules, tried in the order added, change what a matching request gets:

- ``Fault.drop(pattern, after=N)``: the upstream's status and headers, then N bytes of the body,
  then the connection is cut (a dropped download);
- ``Fault.status(pattern, 503)``: an error answer without asking upstream;
- ``Fault.corrupt(pattern, offset=K)``: the body with byte K flipped (wrong bytes, right length);
- ``Fault.replace(pattern, body, content_type=...)``: a canned body (a crafted manifest, a blob
  bigger than its descriptor), without ``Docker-Content-Digest``;
- ``Fault.delay(pattern, seconds)``: forwarded normally after a pause (to make two clients
  overlap);
- ``Fault.stall(pattern, after=N, seconds=S)``: N bytes of the body, then nothing for S seconds
  (or until the proxy stops), then the rest (a client to kill or interrupt mid-download);
- each with ``times`` (how many matching requests it hits; -1: all) and ``method``.

``log`` records (method, path, status, Range header) of every request the proxy answered;
``count(method, pattern)`` counts them. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Fault:
    pattern: str
    kind: str
    method: str | None = "GET"
    times: int = 1
    after: int = 0
    code: int = 503
    offset: int = 0
    body: bytes = b""
    content_type: str = "application/octet-stream"
    seconds: float = 0.0
    hits: int = 0

    @classmethod
    def drop(cls, pattern: str, after: int = 0, *, times: int = 1, method: str | None = "GET") -> "Fault":
        return cls(pattern, "drop", method, times, after=after)

    @classmethod
    def status(cls, pattern: str, code: int = 503, *, times: int = 1, method: str | None = "GET") -> "Fault":
        return cls(pattern, "status", method, times, code=code)

    @classmethod
    def corrupt(cls, pattern: str, offset: int = 0, *, times: int = 1, method: str | None = "GET") -> "Fault":
        return cls(pattern, "corrupt", method, times, offset=offset)

    @classmethod
    def replace(cls, pattern: str, body: bytes, *, content_type: str = "application/octet-stream",
                times: int = -1, method: str | None = "GET") -> "Fault":
        return cls(pattern, "replace", method, times, body=body, content_type=content_type)

    @classmethod
    def delay(cls, pattern: str, seconds: float, *, times: int = -1, method: str | None = "GET") -> "Fault":
        return cls(pattern, "delay", method, times, seconds=seconds)

    @classmethod
    def stall(cls, pattern: str, after: int, seconds: float, *, times: int = 1, method: str | None = "GET") -> "Fault":
        return cls(pattern, "stall", method, times, after=after, seconds=seconds)

    def matches(self, method: str, path: str) -> bool:
        if self.times != -1 and self.hits >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return re.search(self.pattern, path) is not None


@dataclass
class FaultProxy:
    host: str
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, int, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)  # set when a stall begins

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.log.clear()

    def count(self, method: str, pattern: str, status: int | None = None) -> int:
        with self.lock:
            return sum(1 for m, p, s, _ in self.log
                       if m == method and re.search(pattern, p) and (status is None or s == status))

    def _take(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.matches(method, path):
                    f.hits += 1
                    return f
        return None

    def _record(self, method: str, path: str, status: int, rng: str | None) -> None:
        with self.lock:
            self.log.append((method, path, status, rng))


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline().strip():
                            pass
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _handle(self) -> None:
            method, path = self.command, self.path
            body = self._body()
            fault = proxy._take(method, path)
            rng = self.headers.get("Range")
            if fault is not None and fault.kind == "status":
                payload = b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}'
                proxy._record(method, path, fault.code, rng)  # before the answer: a client that has it sees it counted
                self.send_response(fault.code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(payload)
                return
            if fault is not None and fault.kind == "replace":
                proxy._record(method, path, 200, rng)
                self.send_response(200)
                self.send_header("Content-Type", fault.content_type)
                self.send_header("Content-Length", str(len(fault.body)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(fault.body)
                return
            if fault is not None and fault.kind == "delay":
                time.sleep(fault.seconds)
            conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if body or method in ("PUT", "POST", "PATCH"):
                    headers["Content-Length"] = str(len(body))
                conn.request(method, path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read() if method != "HEAD" else b""
                proxy._record(method, path, resp.status, rng)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if method == "HEAD" else str(len(data))
                if length is not None:
                    self.send_header("Content-Length", length)
                self.end_headers()
                if method == "HEAD":
                    return
                if fault is not None and fault.kind == "corrupt" and data:
                    k = min(fault.offset, len(data) - 1)
                    data = data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1:]
                if fault is not None and fault.kind == "stall":
                    self.wfile.write(data[: fault.after])
                    self.wfile.flush()
                    proxy.stalled.set()
                    proxy.stopping.wait(fault.seconds)
                    data = data[fault.after:]
                if fault is not None and fault.kind == "drop":
                    self.wfile.write(data[: fault.after])
                    self.wfile.flush()
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up (cancelled downloads, cut connections) are the point here


@contextlib.contextmanager
def run_fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """Start a proxy to ``upstream`` (``host:port``) on a free port of 127.0.0.1."""
    server = _Server(("127.0.0.1", 0), _handler(FaultProxy("", upstream)))
    proxy = FaultProxy(f"127.0.0.1:{server.server_address[1]}", upstream)
    server.RequestHandlerClass = _handler(proxy)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
