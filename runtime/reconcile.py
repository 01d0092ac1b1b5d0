"""Reconcile: bring a container's record in line with reality, so a crash at any point is
repaired by the next command that looks at the container (``ps`` looks at all of them).

A container recorded as running whose ``exit.json`` exists is recorded as exited (and
unmounted); one whose monitor is gone without an ``exit.json`` (killed, machine crash) is killed
through the runtime, its runtime state deleted, and recorded as exited (137, or 255 if it had
ended unseen). A rootfs held for a start that never completed is released. Runtime state that no
live monitor owns is deleted (``sweep_runtime_state``), and container directories without a
record (a crash inside ``rm``) are removed. Nothing stays mounted or known to the runtime.

Every function here takes (or requires) the container directory's lock (``runtime.paths``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import time
from typing import TYPE_CHECKING

from graph import Conflict, LaminaError, NotFound
from runtime import volumes as rvolumes
from runtime.network import setup as network  # bridge networks: attach at start, release at exit
from runtime.oci import DEFAULT_RUNTIME, OCIRuntime, open_runtime
from runtime.paths import Paths, locked, paths_of
from runtime.proc import start_time, wait_gone
from runtime.state import (ACTIVE, EXIT_KILLED, EXIT_UNKNOWN, Exit, State, read_exit,
                           read_state, write_state)

if TYPE_CHECKING:
    from graph import Container, Store

KILL_WAIT = 10.0


def runtime_for(store: "Store", c: "Container", requested: str | None) -> OCIRuntime:
    name = requested or (c.config.get("HostConfig") or {}).get("Runtime") or DEFAULT_RUNTIME
    return open_runtime(str(name), str(store.root / "runtime" / str(name)))


def refresh(store: "Store", c: "Container") -> "Container | None":
    try:
        return store.containers.get(c.id)
    except NotFound:
        return None


def set_db_state(store: "Store", c: "Container", status: str) -> "Container":
    if c.state != status:
        store.containers.set_state(c, status)
        return store.containers.get(c.id)
    return c


# ---- reconcile ---------------------------------------------------------------------------------------
def release_rootfs(store: "Store", c: "Container", p: Paths, st: State) -> None:
    if st.RootfsHeld:
        store.containers.unmount(c)
        st.RootfsHeld = False
        write_state(p, st)


def record_exit(store: "Store", c: "Container", p: Paths, st: State, ex: Exit, error: str = "") -> "Container":
    st.Status = "exited"
    st.ExitCode = ex.code
    st.FinishedAt = ex.finished_ns
    st.OOMKilled = ex.oom_killed
    st.Error = error
    st.Pid = 0
    write_state(p, st)
    network.release(store, c.id)
    release_rootfs(store, c, p, st)
    return set_db_state(store, c, "exited")


def _recover_dead_monitor(store: "Store", c: "Container", p: Paths, st: State) -> "Container":
    """The monitor died while the container was running: kill it, forget it, record it."""
    rt = st.runtime()
    code, error = EXIT_UNKNOWN, "the container's monitor died; its exit code is unknown"
    if rt is not None:
        rs = None
        with contextlib.suppress(LaminaError):
            rs = rt.state(c.id)
        if rs is not None and rs.get("status") in ("running", "paused", "created"):
            with contextlib.suppress(LaminaError):
                rt.kill(c.id, signal.SIGKILL)
            if rs.get("status") == "paused":
                with contextlib.suppress(LaminaError):
                    rt.resume(c.id)
            wait_gone(int(rs.get("pid") or st.Pid or 0), KILL_WAIT)
            code, error = EXIT_KILLED, "the container's monitor died; the container was killed"
        with contextlib.suppress(LaminaError):
            rt.delete(c.id, force=True)
    elif st.Pid and start_time(st.Pid) is not None:
        with contextlib.suppress(OSError):
            os.kill(st.Pid, signal.SIGKILL)
    return record_exit(store, c, p, st, Exit(code, time.time_ns(), False), error)


def reconcile_locked(store: "Store", c: "Container", p: Paths) -> tuple["Container", State]:
    st = read_state(p, c.state)
    if st.Status in ACTIVE:
        ex = read_exit(p.exit)
        if ex is not None:
            c = record_exit(store, c, p, st, ex)
        elif not st.monitor_alive():
            c = _recover_dead_monitor(store, c, p, st)
    elif st.RootfsHeld and not st.monitor_alive():
        release_rootfs(store, c, p, st)  # a start that died half-way
    if c.state != st.Status and st.Status in ("created", "running", "paused", "exited"):
        c = set_db_state(store, c, st.Status)
    return c, st


def reconcile(store: "Store", c: "Container") -> tuple["Container", State] | None:
    """Bring the record in line with reality (see the module docstring); the refreshed record
    and state, or None if the container is gone (an ``--rm`` container that exited is removed
    here, as Docker's daemon removes it when it exits).

    Requires: nothing. Effect: may kill a container whose monitor died, unmount, remove.
    Raises: LaminaError from the driver or runtime. Repeat: idempotent.
    """
    p = paths_of(store, c)
    with locked(p):
        fresh = refresh(store, c)
        if fresh is None:
            return None
        c, st = reconcile_locked(store, fresh, p)
        if st.Status == "exited" and auto_remove(c):
            remove_locked(store, c, p, st, force=True, volumes=True)
            return None
    return c, st


def auto_remove(c: "Container") -> bool:
    return bool((c.config.get("HostConfig") or {}).get("AutoRemove"))


def reconcile_all(store: "Store") -> None:
    """Reconcile every container that may need it (recorded active, holding its rootfs, or
    exited with ``--rm``), delete runtime state nobody owns, and remove container directories
    without a record (a crash inside ``rm``)."""
    list_reconciled(store)


def list_reconciled(store: "Store") -> list[tuple["Container", State]]:
    """``reconcile_all``, and every container left with its state (newest first, as
    ``store.containers.list``): one listing and one state read per container, so ``ps`` pays
    for each container once (the daemon's ``docker ps``, ``lamina ps``)."""
    sweep_runtime_state(store)
    known = set()
    out: list[tuple["Container", State]] = []
    for c in store.containers.list():
        known.add(c.id)
        p = paths_of(store, c)
        st = read_state(p, c.state)
        if c.state in ACTIVE or st.Status in ACTIVE or st.RootfsHeld or (c.state == "exited" and auto_remove(c)):
            try:
                got = reconcile(store, c)
            except NotFound:
                continue
            if got is None:
                continue  # gone: an --rm container that had exited, or removed meanwhile
            c, st = got
        out.append((c, st))
    _remove_orphans(store, known)
    return out


def _remove_orphans(store: "Store", known: set[str]) -> None:
    """Container directories without a record (a crash inside ``rm``), then bridge networks'
    leftovers nobody runs."""
    base = store.root / "containers"
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(base):
            if entry.is_dir() and len(entry.name) == 64 and entry.name not in known:
                if _exists(store, entry.name):
                    continue  # created after the listing above
                orphan = read_state(Paths(entry.path, entry.name))
                if not orphan.monitor_alive():
                    shutil.rmtree(entry.path, ignore_errors=True)
    network.sweep(store, lambda cid: network_active(store, cid))


def network_active(store: "Store", cid: str) -> bool:
    """For the network sweep: whether the container runs, or is busy (its lock is held: a
    start in progress has set up its network before it is recorded as running)."""
    p = Paths(str(store.root / "containers" / cid), cid)
    try:
        fd = os.open(p.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        st = read_state(p)
        return st.Status in ACTIVE and st.monitor_alive()
    finally:
        os.close(fd)


def _exists(store: "Store", cid: str) -> bool:
    try:
        return store.containers.get(cid).id == cid
    except NotFound:
        return False


def _kill_and_delete(rt: OCIRuntime, cid: str) -> None:
    rs = rt.state(cid)
    if rs is not None and rs.get("status") in ("running", "paused", "created"):
        with contextlib.suppress(Conflict):
            rt.kill(cid, signal.SIGKILL)
        if rs.get("status") == "paused":
            with contextlib.suppress(LaminaError):
                rt.resume(cid)
        wait_gone(int(rs.get("pid") or 0), KILL_WAIT)
    rt.delete(cid, force=True)


def sweep_runtime_state(store: "Store") -> list[str]:
    """Delete (killing first) runtime state of containers that do not run under a live
    monitor: left by a crash. Returns the IDs deleted.

    The runtime's directories are listed before the records are read: a container's record
    exists before its runtime state, so a container being started right now is always found,
    and its lock (held by ``start``) keeps the sweep off it until its monitor is recorded."""
    gone: list[str] = []
    rroot = store.root / "runtime"
    if not rroot.is_dir():
        return gone
    listing: dict[str, list[str]] = {}
    for entry in os.scandir(rroot):
        if entry.is_dir():
            ids = [e.name for e in os.scandir(entry.path) if e.is_dir() and not e.name.startswith(".")]
            if ids:
                listing[entry.name] = ids
    for name, ids in listing.items():
        try:
            rt = open_runtime(name, str(rroot / name))
        except LaminaError:
            continue
        for cid in ids:
            try:
                c = store.containers.get(cid)
            except NotFound:
                c = None
            except Conflict:
                continue
            if c is not None and c.id != cid:
                c = None  # cid was only a prefix of another container's ID: not this one
            with contextlib.suppress(LaminaError):
                if c is None:
                    _kill_and_delete(rt, cid)
                    gone.append(cid)
                    continue
                p = paths_of(store, c)
                with locked(p):
                    st = read_state(p, c.state)
                    if st.monitor_alive() or st.Status in ACTIVE:
                        continue  # running, or for reconcile (which records the exit) to handle
                    _kill_and_delete(rt, cid)
                    gone.append(cid)
    return gone



# ---- remove ----------------------------------------------------------------------------------------------
def remove_locked(store: "Store", c: "Container", p: Paths, st: State, *, force: bool,
                  volumes: bool = False) -> None:
    """Remove a stopped container: runtime state, rootfs hold, record and RW layer, directory;
    with ``volumes`` its anonymous volumes too (``rm -v``, and ``--rm`` as Docker does).
    Requires: the directory's lock."""
    rt = st.runtime()
    if rt is not None and not st.monitor_alive():
        with contextlib.suppress(LaminaError):
            rt.delete(c.id, force=True)
    network.release(store, c.id)
    release_rootfs(store, c, p, st)
    anonymous = rvolumes.anonymous_of(store, c) if volumes else []
    store.remove_container(c.id, force=force)
    shutil.rmtree(p.dir, ignore_errors=True)
    rvolumes.forget(store, anonymous)  # one another container still uses stays

