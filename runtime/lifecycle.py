"""Container lifecycle, what the CLI calls: create, start, run, wait, kill, stop, pause,
unpause, remove (Docker's verbs, Docker's state machine: ``runtime.state``).

Every operation takes the container directory's ``flock`` and first reconciles
(``runtime.reconcile``), so it acts on the container as it really is. A container runs under its
monitor (``runtime.monitor``); an attached caller streams its output through the monitor's
socket (``runtime.attach``) and records the exit itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from graph import Conflict, LaminaError, NotFound
from runtime import bundle, cgroups, health, restart, spec, volumes
from runtime.network import setup as network  # bridge networks: join at create, attach at start
from runtime.attach import Attachment
from runtime.monitor import Options, spawn
from runtime.oci import signal_number
from runtime.paths import Paths, locked, paths_of
from runtime.prepare import prepare
from runtime.reconcile import (KILL_WAIT, auto_remove, reconcile, reconcile_locked, record_exit, refresh,
                               release_rootfs, remove_locked, runtime_for, set_db_state)
from runtime.records import Record
from runtime.state import ACTIVE, EXIT_UNKNOWN, State, read_state, write_state

if TYPE_CHECKING:
    from graph import Container, Store

# Timing points for the run benchmark (bench/micro/test_run_bench.py): a bench sets ``phase_hook``
# to a function taking the name of the step just finished. None in production (one check each).
phase_hook: Callable[[str], None] | None = None


def _phase(name: str) -> None:
    if phase_hook is not None:
        phase_hook(name)


STOP_TIMEOUT = 10


# ---- create / start / run ------------------------------------------------------------------------------
def create(store: "Store", image: str, *, name: str | None = None, config: dict[str, Any] | None = None) -> "Container":
    """Create a container (``docker create``): the record and RW layer (``graph``), and its
    bundle, validated against the image (user and group resolved, limits checked).

    Raises: NotFound (image), InvalidInput (bad user, group, limit, command), AlreadyExists
    (name). Effect on failure: nothing is left (the record is removed, nothing stays mounted).
    """
    c, made = _new(store, image, name, config)
    p = paths_of(store, c)
    try:
        with locked(p):
            write_state(p, State())
            path = store.containers.mount(c)
            try:
                prepare(store, c, p, path, for_start=False)
            finally:
                store.containers.unmount(c)
    except BaseException:
        _discard(store, c, p, made)
        raise
    return c


def _new(store: "Store", image: str, name: str | None, config: dict[str, Any] | None) -> tuple["Container", list[str]]:
    """The record, RW layer and volumes of a new container; the names of volumes made for it.
    The record is validated first (``runtime.spec``): bad input leaves nothing behind."""
    sp = spec.parse(config or {})
    volumes.check_sources(sp)
    c = store.create_container(image, name=name, config=config)
    made: list[str] = []
    try:
        c, made = volumes.attach(store, c, sp)
        network.join_configured(store, c)
        return c, made
    except BaseException:
        _discard(store, c, paths_of(store, c), made)
        raise


def _discard(store: "Store", c: "Container", p: Paths, made: list[str]) -> None:
    """Undo a create: record, RW layer, directory, the volumes made for it (errors on the way
    are not the user's)."""
    with contextlib.suppress(LaminaError, OSError):
        store.remove_container(c.id, force=True)
    shutil.rmtree(p.dir, ignore_errors=True)
    volumes.forget(store, made)


class Running(Record):
    """A started container: the record, its state, and (if attached) the monitor's socket."""

    __slots__ = ("container", "state", "attachment")
    _defaults = {"attachment": None}
    container: "Container"
    state: State
    attachment: Attachment | None


def start(store: "Store", key: str, *, runtime: str | None = None, attach: bool = False,
          stdin: bool | int = False, console_size: tuple[int, int] | None = None) -> Running:
    """Start a created or exited container (``docker start``); a running one is left as it is.

    Effect: rootfs mounted (held until exit), bundle rewritten, monitor and container started;
    returns once the container's process runs. With ``attach`` the caller must ``wait`` (or
    detach) the returned attachment.
    Raises: NotFound (container; the program in the image), InvalidInput (user, limits),
    Conflict (paused), Unsupported (runtime missing), LaminaError (the runtime's refusal);
    then nothing stays mounted and the container keeps its previous state.
    """
    c = store.containers.get(key)
    p = paths_of(store, c)
    with locked(p):
        fresh = refresh(store, c)
        if fresh is None:
            raise NotFound(f"no such container: {key}")
        c, st = reconcile_locked(store, fresh, p)
        if st.Status == "running":
            return Running(c, st)
        if st.Status == "paused":
            raise Conflict(f"container {c.name} is paused: unpause it instead")
        rt = runtime_for(store, c, runtime)
        if os.path.isdir(os.path.join(rt.state_root, c.id)):
            rt.delete(c.id, force=True)  # left by a crash
        path = store.containers.mount(c, keep=True)  # released by whoever sees it stop
        st.RootfsHeld, st.Rootfs = True, path
        write_state(p, st)
        _phase("mount")
        try:
            prepare(store, c, p, path, for_start=True, console_size=console_size)
            _phase("bundle")
            sp = spec.parse(c.config)
            check = health.parse(c.config)
            opts = Options(tty=sp.tty, restart=sp.restart, max_retries=sp.max_retries,
                           health=check.to_json() if check else None)
            network.attach(store, c)
            _phase("network")
            att = spawn(p, rt, store_root=str(store.root), stdin=stdin, options=opts)
            _phase("spawn")
            try:
                info = att.handshake()
                _phase("started")
            except BaseException as e:
                att.detach()
                if not isinstance(e, LaminaError) and att.monitor_pid:
                    # interrupted: the container must not run unrecorded (the sweep deletes it)
                    with contextlib.suppress(OSError):
                        os.kill(att.monitor_pid, signal.SIGKILL)
                raise
        except BaseException as e:
            st.Error = str(e) if isinstance(e, LaminaError) else st.Error
            with contextlib.suppress(LaminaError, OSError):
                network.release(store, c.id)
            with contextlib.suppress(LaminaError, OSError):
                release_rootfs(store, c, p, st)
            raise
        st.Status, st.Pid, st.Error = "running", info.pid, ""
        st.MonitorPid, st.MonitorStart = info.monitor_pid, info.monitor_start
        st.StartedAt, st.FinishedAt, st.ExitCode, st.OOMKilled = info.started_ns, 0, 0, False
        st.RestartCount, st.Restarting = 0, False
        st.Health = {"Status": "starting", "FailingStreak": 0, "Log": []} if health.parse(c.config) else {}
        st.Runtime = rt.to_json()
        write_state(p, st)
        c = set_db_state(store, c, "running")
        _phase("recorded")
        network.started(store, c, info.monitor_pid)
    if not attach:
        att.detach()
        return Running(c, st)
    return Running(c, st, att)


def run(store: "Store", image: str, *, name: str | None = None, config: dict[str, Any] | None = None,
        runtime: str | None = None, attach: bool = True, stdin: bool | int = False,
        console_size: tuple[int, int] | None = None) -> Running:
    """``docker run``: create and start in one go (one mount). On any failure before the
    container runs, the container is removed again: nothing is left."""
    c, made = _new(store, image, name, config)
    _phase("create")
    p = paths_of(store, c)
    try:
        with locked(p):
            write_state(p, State())
        return start(store, c.id, runtime=runtime, attach=attach, stdin=stdin, console_size=console_size)
    except BaseException:
        _discard(store, c, p, made)
        raise


def wait(store: "Store", running: Running, out: BinaryIO, err: BinaryIO, *, tty_stdin: int | None = None,
         window: bool = True) -> int:
    """Stream an attached container's output until it exits; record the exit (and remove the
    container if it was run with ``--rm``); the exit code. The runtime has deleted the container
    before its exit is reported, so nothing of a ``--rm`` container outlives the call (the
    monitor, told that its caller took over, exits right after). A terminal container's output
    is one stream (to ``out``); ``tty_stdin``: an fd whose bytes go to its pty (``-i -t``);
    ``window``: its window size follows this process's terminal (SIGWINCH, so the main thread
    only; a caller in another thread passes False and uses ``attachment.resize``)."""
    att = running.attachment
    if att is None:
        raise LaminaError("wait: container not attached")
    try:
        if running.container.config.get("Tty"):
            ex = att.stream_tty(out, tty_stdin, window=window)
        else:
            ex = att.stream(out, err)
        if ex is None:  # the monitor died: reconcile kills what is left and records it
            att.wait_gone()
            att.detach()
            got = reconcile(store, running.container)
            if got is None:
                return EXIT_UNKNOWN
            return got[1].ExitCode if got[1].Status == "exited" else EXIT_UNKNOWN
        _phase("exited")
        c = running.container
        p = paths_of(store, c)
        with locked(p):
            fresh = refresh(store, c)
            if fresh is not None:
                st = read_state(p, fresh.state)
                if auto_remove(fresh):
                    remove_locked(store, fresh, p, st, force=True, volumes=True)  # no need to record the exit first
                elif st.Status in ACTIVE:
                    record_exit(store, fresh, p, st, ex)
        _phase("released")
    except BaseException:
        att.detach()  # interrupted, or our output went away: the monitor records the exit itself
        raise
    att.finish()
    _phase("finished")
    return ex.code


# ---- signals, pause ---------------------------------------------------------------------------------
def active(store: "Store", key: str) -> tuple["Container", State, Paths]:
    c = store.containers.get(key)
    got = reconcile(store, c)
    if got is None:
        raise NotFound(f"no such container: {key}")
    c, st = got
    return c, st, paths_of(store, c)


def kill(store: "Store", key: str, sig: str | int = "KILL") -> "Container":
    """Send a signal to the container's init (``docker kill -s``).
    Raises: Conflict if it is not running; InvalidInput for an unknown signal."""
    n = signal_number(sig)
    c, st, _p = active(store, key)
    if st.Status not in ACTIVE:
        raise Conflict(f"container {c.name} is not running")
    rt = st.runtime()
    assert rt is not None
    rt.kill(c.id, n)
    if st.Status == "paused" and n == signal.SIGKILL:
        with contextlib.suppress(LaminaError):
            rt.resume(c.id)  # a frozen task dies only once thawed (cgroup v1)
    return c


def _wait_exit(store: "Store", c: "Container", p: Paths, timeout: float) -> bool:
    """Wait until the monitor reports the exit (or is gone); True if it did in time."""
    end = time.monotonic() + timeout
    st = read_state(p, c.state)
    while True:
        if os.path.exists(p.exit) or not st.monitor_alive():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)


def stop(store: "Store", key: str, timeout: float | None = None) -> "Container":
    """``docker stop``: the stop signal (the image's ``StopSignal``, else SIGTERM), then SIGKILL
    after ``timeout`` seconds (None: the record's ``StopTimeout``, else 10). A stopped container
    is left as it is."""
    c, st, p = active(store, key)
    if timeout is None:
        t = c.config.get("StopTimeout")
        timeout = float(t) if isinstance(t, int) and t >= 0 else STOP_TIMEOUT
    if st.Status not in ACTIVE:
        return c
    rt = st.runtime()
    assert rt is not None
    restart.request_stop(p)  # no restart policy brings it back
    sig = signal_number(str(c.config.get("StopSignal") or "SIGTERM"))
    with contextlib.suppress(Conflict, NotFound):  # NotFound: between two runs of a restart policy
        rt.kill(c.id, sig)
    if st.Status == "paused":
        with contextlib.suppress(LaminaError):
            rt.resume(c.id)
    if not _wait_exit(store, c, p, timeout):
        with contextlib.suppress(Conflict):
            rt.kill(c.id, signal.SIGKILL)
        _wait_exit(store, c, p, KILL_WAIT)
    got = reconcile(store, c)
    return got[0] if got is not None else c


def cgroup_of(c: "Container") -> cgroups.Cgroup:
    """The container's cgroup (the ``cgroupsPath`` its bundle gives the runtime)."""
    return cgroups.expected(cgroups.mounts(), f"{bundle.CGROUP_PARENT}/{c.id}")


def pause(store: "Store", key: str) -> "Container":
    """Freeze every process of the container (cgroup freezer, through the runtime)."""
    c = store.containers.get(key)
    p = paths_of(store, c)
    with locked(p):
        c, st = reconcile_locked(store, c, p)
        if st.Status == "paused":
            raise Conflict(f"container {c.name} is already paused")
        if st.Status != "running":
            raise Conflict(f"container {c.name} is not running")
        rt = st.runtime()
        assert rt is not None
        rt.pause(c.id)
        cgroups.wait_frozen(cgroup_of(c))
        st.Status = "paused"
        write_state(p, st)
        return set_db_state(store, c, "paused")


def unpause(store: "Store", key: str) -> "Container":
    c = store.containers.get(key)
    p = paths_of(store, c)
    with locked(p):
        c, st = reconcile_locked(store, c, p)
        if st.Status != "paused":
            raise Conflict(f"container {c.name} is not paused")
        rt = st.runtime()
        assert rt is not None
        rt.resume(c.id)
        cgroups.wait_frozen(cgroup_of(c), want=False)
        st.Status = "running"
        write_state(p, st)
        return set_db_state(store, c, "running")



def remove(store: "Store", key: str, *, force: bool = False, volumes: bool = False) -> "Container":
    """``docker rm``: a running (or paused) container is refused unless ``force``, which kills
    it first. Removes the record, RW layer, runtime state and directory; with ``volumes``
    (``rm -v``) its anonymous volumes (not the named ones, as Docker).
    Raises: Conflict (running without force; mounted with ``lamina mount`` without force)."""
    c = store.containers.get(key)
    got = reconcile(store, c)
    if got is None:
        return c  # an --rm container that had exited: already gone
    c, st = got
    p = paths_of(store, c)
    if st.Status in ACTIVE:
        if not force:
            raise Conflict(f"container {c.name} is {st.Status}: stop it first or use -f")
        rt = st.runtime()
        assert rt is not None
        restart.request_stop(p)
        with contextlib.suppress(Conflict, NotFound):
            rt.kill(c.id, signal.SIGKILL)
        if st.Status == "paused":
            with contextlib.suppress(LaminaError):
                rt.resume(c.id)
        _wait_exit(store, c, p, KILL_WAIT)
        got = reconcile(store, c)
        if got is None:
            return c
        c, st = got
    with locked(p):
        fresh = refresh(store, c)
        if fresh is None:
            return c
        if fresh.state not in ACTIVE and store.containers.mounted(fresh) and not force:
            raise Conflict(f"container {c.name} is mounted: umount it first or use -f")
        remove_locked(store, fresh, p, read_state(p, fresh.state), force=force, volumes=volumes)
    return c

