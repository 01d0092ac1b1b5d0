"""The wire between a container's monitor and an attached caller: frames of an 8-byte header
(kind, 3 zero bytes, big-endian length) and the payload, as Docker's attach stream multiplexes.

Monitor to caller: 1 stdout, 2 stderr, 16 hello (monitor pid and start time), 17 started, 18
failed, 19 exit (JSON payloads). Caller to monitor: the single byte ``D`` once the caller has
recorded the exit (the monitor then just exits)."""

from __future__ import annotations

import socket
import struct

STDOUT, STDERR = 1, 2
HELLO, STARTED, FAILED, EXIT = 16, 17, 18, 19
HEADER = struct.Struct(">BxxxI")
DONE = b"D"


def send(sock: socket.socket | None, kind: int, body: bytes) -> socket.socket | None:
    """Send a frame; the socket, or None once the peer is gone."""
    if sock is None:
        return None
    try:
        sock.sendall(HEADER.pack(kind, len(body)) + body)
        return sock
    except OSError:
        sock.close()
        return None
