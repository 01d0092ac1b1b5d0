"""Container output in Docker's ``json-file`` format: one JSON object per line,
``{"log": "text\\n", "stream": "stdout", "time": "2024-01-02T03:04:05.123456789Z"}``.

The monitor writes (``LogWriter``): output is cut at newlines, as Docker's copier does; a line
longer than 16 KiB is written in pieces without the newline (``partial``), and what is left at
the end of a stream is written as it is. Each record goes to the file in one ``write`` on an
``O_APPEND`` descriptor, so a reader following the file never sees half a record from us (a
trailing line without its newline is held back by the reader until complete).

The CLI reads (``read``): ``--tail``, and ``follow`` until a caller-given test says the writer
is done.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Callable, Iterator

from runtime.records import Record

MAX_LINE = 16 * 1024  # Docker's bufio size for one log message
STREAMS = ("stdout", "stderr")


def rfc3339nano(ns: int) -> str:
    """Epoch nanoseconds as RFC 3339 UTC with nanoseconds (Docker's log and state times)."""
    secs, frac = divmod(ns, 1_000_000_000)
    t = time.gmtime(secs)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{frac:09d}Z"


def parse_rfc3339(s: str) -> float | None:
    """Epoch seconds from an RFC 3339 UTC time (``...Z``, any number of fraction digits)."""
    import calendar

    if not s or not s.endswith("Z"):
        return None
    main, _, frac = s[:-1].partition(".")
    try:
        secs = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return secs + (float("0." + frac) if frac.isdigit() else 0.0)


class LogWriter:
    """Appends a container's output to ``path`` as json-file records."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.pending: dict[str, bytearray] = {s: bytearray() for s in STREAMS}

    def _emit(self, stream: str, data: bytes) -> None:
        rec = {"log": data.decode("utf-8", errors="replace"), "stream": stream,
               "time": rfc3339nano(time.time_ns())}
        line = json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        try:
            os.write(self.fd, line)
        except OSError:
            pass  # a full disk must not stop the container: its output is dropped, as Docker does

    def feed(self, stream: str, data: bytes) -> None:
        """Add output of ``stream``; complete lines are written now."""
        buf = self.pending[stream]
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", start, start + MAX_LINE)
            if nl >= 0:
                self._emit(stream, bytes(buf[start:nl + 1]))
                start = nl + 1
            elif len(buf) - start >= MAX_LINE:  # no newline within 16 KiB: a partial record
                self._emit(stream, bytes(buf[start:start + MAX_LINE]))
                start += MAX_LINE
            else:
                break
        del buf[:start]

    def end(self, stream: str) -> None:
        """The stream closed: write what is left of its last line."""
        buf = self.pending[stream]
        if buf:
            self._emit(stream, bytes(buf))
            buf.clear()

    def close(self) -> None:
        for s in STREAMS:
            self.end(s)
        os.close(self.fd)


class Entry(Record):
    """One log record: stream (stdout or stderr), time (RFC 3339 with nanoseconds), text."""

    __slots__ = ("stream", "time", "text")
    stream: str
    time: str
    text: str


def _parse(line: bytes) -> Entry | None:
    try:
        d = json.loads(line)
        return Entry(str(d.get("stream", "stdout")), str(d.get("time", "")), str(d["log"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a damaged record is skipped, not fatal


def read(
    path: str,
    *,
    tail: int | None = None,
    follow: bool = False,
    done: Callable[[], bool] | None = None,
    poll: float = 0.05,
) -> Iterator[Entry]:
    """The records of a log file, oldest first: all, or the last ``tail``. With ``follow``, keep
    waiting for new records until ``done()`` is true (checked when no data is left; one more
    read then catches the last records)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        if tail is not None:
            last: collections.deque[Entry] = collections.deque(maxlen=max(tail, 0))
            partial = b""
            for line in f:
                if not line.endswith(b"\n"):
                    partial = line
                    break
                e = _parse(line)
                if e is not None:
                    last.append(e)
            yield from last
            carry = partial
        else:
            carry = b""
        while True:
            chunk = f.readline()
            if chunk:
                carry += chunk
                if carry.endswith(b"\n"):
                    e = _parse(carry)
                    carry = b""
                    if e is not None:
                        yield e
                continue
            if not follow:
                return
            if done is not None and done():
                # the writer is finished: whatever is in the file now is all there will be
                rest = f.read()
                for line in (carry + rest).splitlines(keepends=True):
                    if line.endswith(b"\n"):
                        e = _parse(line)
                        if e is not None:
                            yield e
                return
            time.sleep(poll)
