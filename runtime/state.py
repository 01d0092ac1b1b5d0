"""What a container's directory says about it: ``state.json`` (``State``, written by the CLI
side under the directory's lock) and ``exit.json`` (``Exit``, written once by the monitor when
the container has exited).

States (Docker's): ``created`` -> ``running`` <-> ``paused``; ``running`` -> ``exited``;
``exited`` -> ``running`` again with ``start``. ``graph`` mirrors the state in its ``state``
column (``ps`` and ``rm`` read it); the details live here."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping
from typing import Any

from runtime.oci import OCIRuntime
from runtime.paths import Paths
from runtime.proc import start_time
from runtime.records import Record

ACTIVE = ("running", "paused")
EXIT_UNKNOWN = 255
EXIT_KILLED = 128 + signal.SIGKILL


class State(Record):
    """What ``state.json`` holds (names as Docker's ``ContainerState``; times in ns)."""

    __slots__ = ("Status", "Pid", "MonitorPid", "MonitorStart", "StartedAt", "FinishedAt", "ExitCode",
                 "Error", "OOMKilled", "Runtime", "Rootfs", "RootfsHeld", "RestartCount", "Restarting",
                 "Health")
    _defaults = {"Status": "created", "Pid": 0, "MonitorPid": 0, "MonitorStart": 0, "StartedAt": 0,
                 "FinishedAt": 0, "ExitCode": 0, "Error": "", "OOMKilled": False, "Runtime": dict,
                 "Rootfs": "", "RootfsHeld": False, "RestartCount": 0, "Restarting": False,
                 "Health": dict}
    Status: str
    Pid: int
    MonitorPid: int
    MonitorStart: int
    StartedAt: int
    FinishedAt: int
    ExitCode: int
    Error: str
    OOMKilled: bool
    Runtime: dict[str, Any]
    Rootfs: str
    RootfsHeld: bool
    RestartCount: int  # restarts by the monitor's restart policy since the last start
    Restarting: bool  # waiting for the next restart (the monitor's back-off)
    Health: dict[str, Any]  # Docker's State.Health (runtime.health), {} without a health check

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "State":
        return cls(**{k: d[k] for k in cls.__slots__ if k in d})

    def monitor_alive(self) -> bool:
        return self.MonitorPid > 0 and start_time(self.MonitorPid) == self.MonitorStart

    def runtime(self) -> OCIRuntime | None:
        return OCIRuntime.from_json(self.Runtime) if self.Runtime else None


def read_state(p: Paths, db_state: str = "created") -> State:
    try:
        with open(p.state, "rb", buffering=0) as f:  # bytes, unbuffered: ``ps`` reads one per container
            return State.from_json(json.loads(f.readall()))
    except FileNotFoundError:
        return State(Status=db_state if db_state in ("created", "exited") else "created")
    except (ValueError, TypeError):
        return State(Status="exited", ExitCode=EXIT_UNKNOWN, Error="state.json unreadable")


def write_json(path: str, doc: Mapping[str, Any]) -> None:
    """Replace a small JSON file whole (a reader sees the old or the new one)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def write_state(p: Paths, st: State) -> None:
    """Requires: the directory's lock (``runtime.paths.locked``)."""
    write_json(p.state, st.as_dict())


class Exit(Record):
    """How a container ended: exit code (128+N for signal N), when, whether OOM-killed."""

    __slots__ = ("code", "finished_ns", "oom_killed")
    code: int
    finished_ns: int
    oom_killed: bool

    def to_json(self) -> dict[str, Any]:
        return {"ExitCode": self.code, "FinishedAt": self.finished_ns, "OOMKilled": self.oom_killed}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Exit":
        return cls(int(d.get("ExitCode", 255)), int(d.get("FinishedAt", 0)), bool(d.get("OOMKilled", False)))


def read_exit(path: str) -> Exit | None:
    try:
        with open(path, encoding="utf-8") as f:
            return Exit.from_json(json.load(f))
    except (FileNotFoundError, ValueError, TypeError, AttributeError):
        return None
