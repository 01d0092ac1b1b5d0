"""Health checks (Docker's ``HEALTHCHECK`` / ``--health-cmd``), run by the container's monitor.

Every ``Interval`` the monitor runs the test in the container (the runtime's ``exec``, with the
container's own process settings from ``config.json``), kills it after ``Timeout``, and records
the result in ``state.json`` (``Health``: ``Status`` starting|healthy|unhealthy, ``FailingStreak``,
the last 5 results in ``Log``), as Docker's ``State.Health``. ``Retries`` failures in a row make
the container unhealthy; failures during ``StartPeriod`` do not count until a check succeeded.
Defaults as Docker's: 30 s, 30 s, 3 retries, no start period.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from graph import InvalidInput
from runtime import logs
from runtime.oci import OCIRuntime
from runtime.paths import Paths, locked
from runtime.records import Record
from runtime.state import read_state, write_state

NS = 1_000_000_000
DEFAULT_INTERVAL = 30 * NS
DEFAULT_TIMEOUT = 30 * NS
DEFAULT_RETRIES = 3
MIN_INTERVAL = NS // 1000  # Docker's minimum (1 ms) for interval, timeout and start period
LOG_KEEP = 5
OUTPUT_LIMIT = 4096


class Check(Record):
    """A parsed ``Config.Healthcheck``: argv to run, seconds, retries."""

    __slots__ = ("argv", "interval", "timeout", "retries", "start_period")
    argv: list[str]
    interval: float
    timeout: float
    retries: int
    start_period: float

    def to_json(self) -> dict[str, Any]:
        return self.as_dict()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Check":
        return cls(**{k: d[k] for k in cls.__slots__})


def _duration(hc: Mapping[str, Any], key: str, default: int) -> float:
    v = hc.get(key)
    if v in (None, 0):
        return default / NS
    if not isinstance(v, int) or isinstance(v, bool) or v < MIN_INTERVAL:
        raise InvalidInput(f"invalid healthcheck {key} {v!r}: nanoseconds, at least 1 ms")
    return v / NS


def parse(config: Mapping[str, Any]) -> Check | None:
    """The record's health check, None without one (or with ``NONE``). Raises InvalidInput."""
    hc = config.get("Healthcheck")
    if not hc:
        return None
    if not isinstance(hc, Mapping):
        raise InvalidInput("invalid Healthcheck: want an object")
    test = hc.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
        raise InvalidInput("invalid Healthcheck.Test: want a list of strings")
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL" and len(test) == 2:
        argv = ["/bin/sh", "-c", test[1]]
    elif test[0] == "CMD" and len(test) > 1:
        argv = test[1:]
    else:
        raise InvalidInput(f"invalid Healthcheck.Test {test!r}: want [\"CMD\", ...], [\"CMD-SHELL\", cmd] or [\"NONE\"]")
    retries = hc.get("Retries") or DEFAULT_RETRIES
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise InvalidInput(f"invalid healthcheck retries {retries!r}")
    return Check(argv, _duration(hc, "Interval", DEFAULT_INTERVAL), _duration(hc, "Timeout", DEFAULT_TIMEOUT),
                 retries, _duration(hc, "StartPeriod", 0) if hc.get("StartPeriod") else 0.0)


def _record(p: Paths, started_ns: int, code: int, output: str, check: Check, in_start_period: bool) -> None:
    with locked(p):
        st = read_state(p, "running")
        h = dict(st.Health or {"Status": "starting", "FailingStreak": 0, "Log": []})
        entry = {"Start": logs.rfc3339nano(started_ns), "End": logs.rfc3339nano(time.time_ns()),
                 "ExitCode": code, "Output": output}
        h["Log"] = (list(h.get("Log") or []) + [entry])[-LOG_KEEP:]
        if code == 0:
            h["Status"], h["FailingStreak"] = "healthy", 0
        elif not (in_start_period and h.get("Status") == "starting"):
            h["FailingStreak"] = int(h.get("FailingStreak") or 0) + 1
            if h["FailingStreak"] >= check.retries:
                h["Status"] = "unhealthy"
        st.Health = h
        write_state(p, st)


def reset(p: Paths) -> None:
    """A (re)started container's health is ``starting`` again."""
    with locked(p):
        st = read_state(p, "running")
        st.Health = {"Status": "starting", "FailingStreak": 0, "Log": []}
        write_state(p, st)


class Runner:
    """The monitor's side: ``timeout_ms`` says when it wants to be woken, ``tick`` starts a due
    check or collects a finished (or overdue) one. Never blocks the monitor's loop."""

    def __init__(self, paths: Paths, rt: OCIRuntime, check: Check, reaped: dict[int, int]) -> None:
        self.paths, self.rt, self.check = paths, rt, check
        self.reaped = reaped  # exit statuses the monitor's own waitpid(-1) collected
        self.began = time.monotonic()
        self.next_at = self.began + check.interval
        self.proc: Any = None
        self.out: Any = None
        self.started_at = 0.0
        self.started_ns = 0
        self.pf = os.path.join(paths.dir, "health-process.json")

    def timeout_ms(self) -> float:
        now = time.monotonic()
        if self.proc is not None:
            return 20.0  # a check is running: look at it soon
        return max(0.0, (self.next_at - now) * 1000)

    def tick(self) -> None:
        now = time.monotonic()
        if self.proc is not None:
            if self.proc.pid in self.reaped:
                code = os.waitstatus_to_exitcode(self.reaped.pop(self.proc.pid))
                self.proc.returncode = code
            else:
                code = self.proc.poll()
            if code is None and now - self.started_at < self.check.timeout:
                return
            if code is None:
                self.proc.kill()
                self.proc.wait()
                self._done(-1, f"Health check exceeded timeout ({self.check.timeout:g}s)")
            else:
                self.out.seek(0)
                self._done(code, self.out.read(OUTPUT_LIMIT).decode("utf-8", errors="replace"))
            return
        if now >= self.next_at:
            self._start()

    def _start(self) -> None:
        try:
            with open(self.paths.config, encoding="utf-8") as f:
                proc = dict(json.load(f)["process"])
        except (OSError, ValueError, KeyError):
            self.next_at = time.monotonic() + self.check.interval
            return
        proc["args"] = list(self.check.argv)
        proc["terminal"] = False
        proc.pop("consoleSize", None)
        with open(self.pf, "w", encoding="utf-8") as f:
            json.dump(proc, f)
        import tempfile

        self.out = tempfile.TemporaryFile(dir=self.paths.dir)
        self.started_at, self.started_ns = time.monotonic(), time.time_ns()
        try:
            self.proc = self.rt.popen(self.rt.exec_command(self.paths.container_id, self.pf),
                                      stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT)
        except OSError as e:
            self.proc = None
            self._done(-1, f"cannot run the health check: {e}")

    def _done(self, code: int, output: str) -> None:
        in_start = time.monotonic() - self.began < self.check.start_period
        self.proc = None
        if self.out is not None:
            self.out.close()
            self.out = None
        with contextlib.suppress(OSError):
            _record(self.paths, self.started_ns or time.time_ns(), code, output, self.check, in_start)
        self.next_at = time.monotonic() + self.check.interval

    def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self.out is not None:
            self.out.close()
            self.out = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.pf)
