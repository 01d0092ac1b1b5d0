"""The wire between a container's monitor and an attached caller: frames of an 8-byte header
(kind, 3 zero bytes, big-endian length) and the payload, as Docker's attach stream multiplexes.

Monitor to caller: 1 stdout, 2 stderr, 16 hello (monitor pid and start time), 17 started, 18
failed, 19 exit (JSON payloads). Caller to monitor: 0 stdin (bytes for a terminal container's
pty), 20 resize (JSON ``{"h": rows, "w": cols}``), 21 done (the caller has recorded the exit:
the monitor then just exits)."""

from __future__ import annotations

import json
import socket
import struct

STDIN, STDOUT, STDERR = 0, 1, 2
HELLO, STARTED, FAILED, EXIT = 16, 17, 18, 19
RESIZE, DONE = 20, 21
HEADER = struct.Struct(">BxxxI")
MAX_FRAME = 1 << 20


def pack(kind: int, body: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(body)) + body


def resize_body(rows: int, cols: int) -> bytes:
    return json.dumps({"h": rows, "w": cols}).encode()


def send(sock: socket.socket | None, kind: int, body: bytes) -> socket.socket | None:
    """Send a frame; the socket, or None once the peer is gone."""
    if sock is None:
        return None
    try:
        sock.sendall(pack(kind, body))
        return sock
    except OSError:
        sock.close()
        return None


class Reader:
    """Frames out of a byte stream that arrives in pieces (``feed`` what ``recv`` gave)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= HEADER.size:
            kind, size = HEADER.unpack_from(self.buf)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes")
            if len(self.buf) < HEADER.size + size:
                break
            out.append((kind, bytes(self.buf[HEADER.size:HEADER.size + size])))
            del self.buf[:HEADER.size + size]
        return out
