"""A container's directory ``<root>/containers/<id>/`` and its lock.

    config.json          the OCI bundle (written at create, rewritten at each start)
    state.json           the container's state (``runtime.state``)
    exit.json            written once by the monitor when the container has exited
    <id>-json.log        output (``runtime.logs``)
    pid, runtime.log, monitor.log, hostname, hosts, resolv.conf

Every operation on a container takes the directory's exclusive ``flock`` (``locked``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from drivers.sys.flock import Flock
from runtime.records import Record

if TYPE_CHECKING:
    from graph import Container, Store


class Paths(Record):
    """The files of a container's directory."""

    __slots__ = ("dir", "container_id")
    dir: str
    container_id: str

    @property
    def bundle(self) -> str:
        return self.dir

    @property
    def config(self) -> str:
        return os.path.join(self.dir, "config.json")

    @property
    def state(self) -> str:
        return os.path.join(self.dir, "state.json")

    @property
    def log(self) -> str:
        return os.path.join(self.dir, f"{self.container_id}-json.log")

    @property
    def pid(self) -> str:
        return os.path.join(self.dir, "pid")

    @property
    def exit(self) -> str:
        return os.path.join(self.dir, "exit.json")

    @property
    def runtime_log(self) -> str:
        return os.path.join(self.dir, "runtime.log")

    @property
    def monitor_log(self) -> str:
        return os.path.join(self.dir, "monitor.log")


def paths_of(store: "Store", c: "Container") -> Paths:
    # strings, not pathlib: ``ps`` calls this once per container
    return Paths(f"{os.fspath(store.root)}/containers/{c.id}", c.id)


@contextlib.contextmanager
def locked(p: Paths) -> Iterator[None]:
    """The container directory's exclusive ``flock`` (the directory is created if missing)."""
    os.makedirs(p.dir, mode=0o711, exist_ok=True)
    with Flock(p.dir):
        yield
