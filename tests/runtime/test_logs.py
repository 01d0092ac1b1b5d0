"""Docker's json-file log: how output is cut into records, and reading it back (tail, follow)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from runtime import logs


def records(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_are_cut_at_newlines_per_stream(tmp_path: Path) -> None:
    p = tmp_path / "c-json.log"
    w = logs.LogWriter(str(p))
    w.feed("stdout", b"one\ntw")
    w.feed("stderr", b"err\n")
    w.feed("stdout", b"o\nthree")
    w.close()
    got = [(r["stream"], r["log"]) for r in records(p)]
    assert got == [("stdout", "one\n"), ("stderr", "err\n"), ("stdout", "two\n"), ("stdout", "three")]
    for r in records(p):
        assert set(r) == {"log", "stream", "time"}
        assert logs.parse_rfc3339(r["time"]) is not None and abs(logs.parse_rfc3339(r["time"]) - time.time()) < 60


def test_long_lines_are_split_and_bad_utf8_replaced(tmp_path: Path) -> None:
    p = tmp_path / "c-json.log"
    w = logs.LogWriter(str(p))
    w.feed("stdout", b"x" * (logs.MAX_LINE + 10) + b"\n")
    w.feed("stdout", b"\xff\xfe ok\n")
    w.close()
    texts = [r["log"] for r in records(p)]
    assert texts == ["x" * logs.MAX_LINE, "x" * 10 + "\n", "\ufffd\ufffd ok\n"]


def test_read_tail_and_damaged_records(tmp_path: Path) -> None:
    p = tmp_path / "c-json.log"
    w = logs.LogWriter(str(p))
    for i in range(5):
        w.feed("stdout", f"{i}\n".encode())
    w.close()
    with open(p, "a") as f:
        f.write("{not json}\n")
    assert [e.text for e in logs.read(str(p))] == ["0\n", "1\n", "2\n", "3\n", "4\n"]
    assert [e.text for e in logs.read(str(p), tail=2)] == ["3\n", "4\n"]
    assert [e.text for e in logs.read(str(p), tail=0)] == []
    assert list(logs.read(str(tmp_path / "missing.log"))) == []


def test_follow_waits_for_new_records_until_done(tmp_path: Path) -> None:
    p = tmp_path / "c-json.log"
    w = logs.LogWriter(str(p))
    w.feed("stdout", b"first\n")
    done = threading.Event()

    def writer() -> None:
        time.sleep(0.1)
        w.feed("stderr", b"second\n")
        time.sleep(0.1)
        w.feed("stdout", b"third\n")
        w.close()
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    got = [(e.stream, e.text) for e in logs.read(str(p), follow=True, done=done.is_set, poll=0.01)]
    t.join()
    assert got == [("stdout", "first\n"), ("stderr", "second\n"), ("stdout", "third\n")]


def test_rfc3339nano() -> None:
    assert logs.rfc3339nano(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert logs.parse_rfc3339("2023-11-14T22:13:20.5Z") == 1_700_000_000.5
    assert logs.parse_rfc3339("garbage") is None
