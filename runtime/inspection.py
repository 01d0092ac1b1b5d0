"""Looking at containers: Docker's ``State`` object, the runtime's fields of ``inspect``,
usage samples, the log."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from runtime import cgroups, logs, volumes
from runtime.lifecycle import active, cgroup_of
from runtime.oci import DEFAULT_RUNTIME
from runtime.paths import paths_of
from runtime.reconcile import reconcile
from runtime.state import ACTIVE, State, read_state

if TYPE_CHECKING:
    from graph import Container, Store


def _rfc(ns: int) -> str:
    return logs.rfc3339nano(ns) if ns else "0001-01-01T00:00:00Z"


def inspect_state(st: State) -> dict[str, Any]:
    """Docker's ``State`` object (with ``Health`` when the container has a health check)."""
    out = {
        "Status": st.Status,
        "Running": st.Status in ACTIVE,
        "Paused": st.Status == "paused",
        "Restarting": st.Restarting and st.Status in ACTIVE,
        "OOMKilled": st.OOMKilled,
        "Dead": False,
        "Pid": st.Pid if st.Status in ACTIVE else 0,
        "ExitCode": st.ExitCode,
        "Error": st.Error,
        "StartedAt": _rfc(st.StartedAt),
        "FinishedAt": _rfc(st.FinishedAt),
    }
    if st.Health:
        out["Health"] = dict(st.Health)
    return out


def describe(store: "Store", c: "Container") -> tuple["Container", State] | None:
    """The reconciled record and state (None if it went away meanwhile)."""
    return reconcile(store, c)


def extra_inspect(store: "Store", c: "Container") -> dict[str, Any]:
    """The runtime's fields of ``inspect``: paths of the log and the bundle's files."""
    p = paths_of(store, c)
    st = read_state(p, c.state)
    return {
        "LogPath": p.log,
        "ResolvConfPath": os.path.join(p.dir, "resolv.conf"),
        "HostnamePath": os.path.join(p.dir, "hostname"),
        "HostsPath": os.path.join(p.dir, "hosts"),
        "RestartCount": st.RestartCount,
        "Mounts": volumes.inspect_mounts(store, c),
        "Runtime": (st.Runtime or {}).get("name")
        or (c.config.get("HostConfig") or {}).get("Runtime") or DEFAULT_RUNTIME,
    }


def stats(store: "Store", key: str) -> tuple["Container", cgroups.Stats | None]:
    """A usage sample of a running container (None for one that is not running)."""
    c, st, _p = active(store, key)
    if st.Status not in ACTIVE:
        return c, None
    return c, cgroups.stats(cgroup_of(c))


def log_entries(store: "Store", key: str, *, follow: bool = False, tail: int | None = None) -> Iterator[logs.Entry]:
    """The container's output records; ``follow`` waits for more while it runs."""
    c = store.containers.get(key)
    p = paths_of(store, c)

    def done() -> bool:
        if os.path.exists(p.exit):
            return True
        st = read_state(p, c.state)
        return st.Status not in ACTIVE or not st.monitor_alive()

    return logs.read(p.log, tail=tail, follow=follow, done=done)
