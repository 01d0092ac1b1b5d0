"""What every API group needs from HTTP: Docker's error bodies, query parameters as Docker reads
them, bounded JSON bodies, bodies streamed to disk, streamed responses written from worker
threads, and hijacked connections (``Upgrade: tcp``) in Docker's multiplexed stream format.

Bounds: a JSON body is read only up to ``MAX_JSON`` bytes (a 1 GiB body is refused with 413
after reading that much, never buffered whole); bodies that are archives (``images/load``,
``archive`` PUT) are copied to a temporary file in the store's root in 1 MiB pieces.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import tempfile
from collections.abc import Mapping
from typing import Any

from aiohttp import web

MAX_JSON = 4 << 20  # a create body is a few KiB; Docker's largest documents are well below this
CHUNK = 1 << 20
STDIN, STDOUT, STDERR = 0, 1, 2
FRAME = struct.Struct(">BxxxI")
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"


class ApiError(Exception):
    """An answer other than success: HTTP status and Docker's ``{"message": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=json.dumps({"message": message}).encode() + b"\n",
                        content_type="application/json")


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(obj).encode() + b"\n", content_type="application/json")


def no_content(status: int = 204) -> web.Response:
    return web.Response(status=status)


# ---- query parameters ------------------------------------------------------------------------------
def qbool(request: web.Request, name: str, default: bool = False) -> bool:
    """Docker's boolean query value: absent -> default; ``""``, ``0``, ``false``, ``no`` -> False."""
    v = request.query.get(name)
    if v is None:
        return default
    return v.strip().lower() not in ("", "0", "false", "no", "off")


def qint(request: web.Request, name: str, default: int | None = None) -> int | None:
    v = request.query.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ApiError(400, f"invalid value for {name}: {v!r} is not an integer") from None


def filters(request: web.Request) -> dict[str, list[str]]:
    """``filters={"status":{"running":true}}`` (or the old ``{"status":["running"]}``) as
    ``{"status": ["running"]}``."""
    raw = request.query.get("filters")
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ApiError(400, f"invalid filters: {raw!r} is not JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "invalid filters: want a JSON object")
    out: dict[str, list[str]] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out[str(k)] = [str(x) for x, on in v.items() if on]
        elif isinstance(v, list):
            out[str(k)] = [str(x) for x in v]
        else:
            raise ApiError(400, f"invalid filter {k!r}")
    return out


def check_filters(f: Mapping[str, list[str]], known: set[str]) -> None:
    for k in f:
        if k not in known:
            raise ApiError(400, f"invalid filter '{k}'")


# ---- bodies ----------------------------------------------------------------------------------------
async def json_body(request: web.Request, *, optional: bool = False) -> Any:
    """The request's JSON document, read at most ``MAX_JSON`` bytes. Raises ApiError 413 for a
    larger body, 400 for one that is not JSON."""
    if request.content_length is not None and request.content_length > MAX_JSON:
        raise ApiError(413, f"request body too large: {request.content_length} bytes (limit {MAX_JSON})")
    buf = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        buf += chunk
        if len(buf) > MAX_JSON:
            raise ApiError(413, f"request body too large (limit {MAX_JSON} bytes)")
    if not buf.strip():
        if optional:
            return None
        raise ApiError(400, "missing request body")
    try:
        return json.loads(bytes(buf))
    except ValueError as e:
        raise ApiError(400, f"invalid JSON: {e}") from None


async def spool_body(request: web.Request, directory: str) -> str:
    """Copy the body to a new temporary file in ``directory``; its path (the caller removes it)."""
    fd, path = tempfile.mkstemp(prefix=".daemon-upload-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.content.iter_chunked(CHUNK):
                f.write(chunk)
    except BaseException:
        os.unlink(path)
        raise
    return path


# ---- streamed responses from worker threads ------------------------------------------------------
class ThreadWriter:
    """A binary file-like ``write`` for worker threads that sends to a prepared StreamResponse
    through the event loop (each write waits until aiohttp took it: back-pressure)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, resp: web.StreamResponse) -> None:
        self.loop = loop
        self.resp = resp

    def write(self, data: bytes | bytearray | memoryview) -> int:
        b = bytes(data)
        if b:
            asyncio.run_coroutine_threadsafe(self.resp.write(b), self.loop).result()
        return len(b)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True


class JsonLines:
    """Docker's progress stream: one JSON object per line, from any thread."""

    def __init__(self, writer: ThreadWriter) -> None:
        self.writer = writer

    def send(self, obj: Mapping[str, Any]) -> None:
        self.writer.write(json.dumps(obj).encode() + b"\r\n")


async def stream(request: web.Request, content_type: str = "application/json",
                 headers: Mapping[str, str] | None = None) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers=dict(headers or {}))
    resp.content_type = content_type
    await resp.prepare(request)
    return resp


def frame(kind: int, data: bytes) -> bytes:
    """One frame of Docker's multiplexed stream: stream kind, 3 zero bytes, length, payload."""
    return FRAME.pack(kind, len(data)) + data


# ---- hijacked connections --------------------------------------------------------------------------
class Hijacked:
    """A connection taken over after ``101 UPGRADED`` (or, for a client that did not ask to
    upgrade, after a 200 with a raw-stream body closed by the end of the connection). Worker
    threads write and read it directly with blocking calls on a duplicate of its socket; the
    event loop stops reading it."""

    def __init__(self, sock: socket.socket, early: bytes, tty: bool) -> None:
        self.sock = sock
        self.early = early  # client bytes that arrived with the request (stdin)
        self.tty = tty
        self.closed = False

    def write(self, kind: int, data: bytes) -> bool:
        """Send output (a frame, or the bytes as they are for a terminal); False once the
        client is gone."""
        if self.closed or not data:
            return not self.closed
        try:
            self.sock.sendall(data if self.tty else frame(kind, data))
            return True
        except OSError:
            self.closed = True
            return False

    def read(self, n: int = 65536) -> bytes:
        """Client input (stdin); b"" at its end."""
        if self.early:
            b, self.early = self.early, b""
            return b
        try:
            return self.sock.recv(n)
        except OSError:
            return b""

    def feed(self, fd: int) -> None:
        """Copy client input (stdin) into ``fd`` until the client closes its side or ``fd``
        fails (the process went); then close ``fd``. Blocking: a worker thread's job."""
        try:
            while True:
                data = self.read()
                if not data:
                    break
                os.write(fd, data)
        except OSError:
            pass
        finally:
            try:
                os.close(fd)
            except OSError:
                pass

    def close_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


async def hijack(request: web.Request, *, tty: bool = False) -> tuple[web.StreamResponse, Hijacked]:
    """Answer ``101 UPGRADED`` (``Upgrade: tcp``) and hand the connection to the caller.

    The response object must be returned by the handler once the caller is done with the
    connection (aiohttp then closes it)."""
    upgrade = request.headers.get("Upgrade", "").lower() == "tcp"
    ctype = RAW_STREAM if tty else MULTIPLEXED
    if upgrade:
        resp = web.StreamResponse(status=101, reason="UPGRADED",
                                  headers={"Connection": "Upgrade", "Upgrade": "tcp", "Content-Type": ctype})
    else:
        resp = web.StreamResponse(status=200, headers={"Content-Type": ctype})
        resp.force_close()
        # the body is the rest of the connection, not chunks: aiohttp's switch for that (the one
        # WebSocketResponse uses) is private
        resp._length_check = False  # type: ignore[attr-defined]
    await resp.prepare(request)
    await resp.drain()
    transport = request.transport
    assert transport is not None
    transport.pause_reading()
    raw = transport.get_extra_info("socket")
    sock = socket.socket(fileno=os.dup(raw.fileno()))
    sock.setblocking(True)
    proto: Any = request.protocol
    early = b""
    tail = getattr(proto, "_message_tail", b"")  # bytes after the request, kept by aiohttp
    if isinstance(tail, (bytes, bytearray)) and tail:
        early = bytes(tail)
        proto._message_tail = b""
    resp.force_close()
    return resp, Hijacked(sock, early, tty)
