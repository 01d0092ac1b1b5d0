"""Containers, runtime side: the state machine on top of ``graph``'s container records.

States (Docker's): ``created`` -> ``running`` <-> ``paused``; ``running`` -> ``exited``;
``exited`` -> ``running`` again with ``start``. ``graph`` keeps the record and its RW layer and
mirrors the state in its ``state`` column (``ps`` and ``rm`` read it); the details live in the
container's directory ``<root>/containers/<id>/``:

    config.json          the OCI bundle (written at create, rewritten at each start)
    state.json           pid, monitor pid and start time, started/finished times, exit code,
                         error, OOM kill, runtime, whether the rootfs is held (this module writes
                         it, under the directory's lock)
    exit.json            written once by the monitor when the container has exited
    <id>-json.log        output (runtime.logs)
    pid, runtime.log, monitor.log, hostname, hosts, resolv.conf

Every operation takes the container directory's ``flock`` and first *reconciles*: a container
recorded as running whose ``exit.json`` exists is recorded as exited (and unmounted); one whose
monitor is gone without an ``exit.json`` (killed, machine crash) is killed through the runtime,
its runtime state deleted, and recorded as exited (137, or 255 if it had ended unseen). A rootfs
held for a start that never completed is released. So a crash at any point is repaired by the
next command that looks at the container (``ps`` looks at all of them), and nothing stays
mounted or known to the runtime.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from drivers.sys.flock import Flock
from graph import Conflict, InvalidInput, LaminaError, NotFound
from runtime import bundle, cgroups, logs, rootfs, users
from runtime.network import setup as network  # bridge networks: attach at start, release at exit
from runtime.monitor import Attachment, Exit, Paths, read_exit, spawn, start_time
from runtime.oci import DEFAULT_RUNTIME, OCIRuntime, open_runtime, signal_number
from runtime.records import Record

if TYPE_CHECKING:
    from graph import Container, Store

ACTIVE = ("running", "paused")

# Timing points for the run benchmark (bench/micro/test_run_bench.py): a bench sets ``phase_hook``
# to a function taking the name of the step just finished. None in production (one check each).
phase_hook: Callable[[str], None] | None = None


def _phase(name: str) -> None:
    if phase_hook is not None:
        phase_hook(name)
STOP_TIMEOUT = 10
KILL_WAIT = 10.0
EXIT_UNKNOWN = 255
EXIT_KILLED = 128 + signal.SIGKILL


class State(Record):
    """What ``state.json`` holds (names as Docker's ``ContainerState``; times in ns)."""

    __slots__ = ("Status", "Pid", "MonitorPid", "MonitorStart", "StartedAt", "FinishedAt", "ExitCode",
                 "Error", "OOMKilled", "Runtime", "Rootfs", "RootfsHeld")
    _defaults = {"Status": "created", "Pid": 0, "MonitorPid": 0, "MonitorStart": 0, "StartedAt": 0,
                 "FinishedAt": 0, "ExitCode": 0, "Error": "", "OOMKilled": False, "Runtime": dict,
                 "Rootfs": "", "RootfsHeld": False}
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

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "State":
        return cls(**{k: d[k] for k in cls.__slots__ if k in d})

    def monitor_alive(self) -> bool:
        return self.MonitorPid > 0 and start_time(self.MonitorPid) == self.MonitorStart

    def runtime(self) -> OCIRuntime | None:
        return OCIRuntime.from_json(self.Runtime) if self.Runtime else None


# ---- the container's directory ---------------------------------------------------------------------
def paths_of(store: "Store", c: "Container") -> Paths:
    return Paths(str(store.root / "containers" / c.id), c.id)


def _state_path(p: Paths) -> str:
    return os.path.join(p.dir, "state.json")


def read_state(p: Paths, db_state: str = "created") -> State:
    try:
        with open(_state_path(p), encoding="utf-8") as f:
            return State.from_json(json.load(f))
    except FileNotFoundError:
        return State(Status=db_state if db_state in ("created", "exited") else "created")
    except (ValueError, TypeError):
        return State(Status="exited", ExitCode=EXIT_UNKNOWN, Error="state.json unreadable")


def _write_state(p: Paths, st: State) -> None:
    path = _state_path(p)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(st.as_dict(), f)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(p: Paths) -> Iterator[None]:
    """The container directory's exclusive ``flock`` (created if missing)."""
    os.makedirs(p.dir, mode=0o711, exist_ok=True)
    with Flock(p.dir):
        yield


def _runtime_for(store: "Store", c: "Container", requested: str | None) -> OCIRuntime:
    name = requested or (c.config.get("HostConfig") or {}).get("Runtime") or DEFAULT_RUNTIME
    return open_runtime(str(name), str(store.root / "runtime" / str(name)))


def _refresh(store: "Store", c: "Container") -> "Container | None":
    try:
        return store.containers.get(c.id)
    except NotFound:
        return None


def _set_db_state(store: "Store", c: "Container", status: str) -> "Container":
    if c.state != status:
        store.containers.set_state(c, status)
        return store.containers.get(c.id)
    return c


# ---- reconcile ---------------------------------------------------------------------------------------
def _release_rootfs(store: "Store", c: "Container", p: Paths, st: State) -> None:
    if st.RootfsHeld:
        store.containers.unmount(c)
        st.RootfsHeld = False
        _write_state(p, st)


def _record_exit(store: "Store", c: "Container", p: Paths, st: State, ex: Exit, error: str = "") -> "Container":
    st.Status = "exited"
    st.ExitCode = ex.code
    st.FinishedAt = ex.finished_ns
    st.OOMKilled = ex.oom_killed
    st.Error = error
    st.Pid = 0
    _write_state(p, st)
    network.release(store, c.id)
    _release_rootfs(store, c, p, st)
    return _set_db_state(store, c, "exited")


def _wait_gone(pid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if start_time(pid) is None:
            return True
        time.sleep(0.01)
    return start_time(pid) is None


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
            _wait_gone(int(rs.get("pid") or st.Pid or 0), KILL_WAIT)
            code, error = EXIT_KILLED, "the container's monitor died; the container was killed"
        with contextlib.suppress(LaminaError):
            rt.delete(c.id, force=True)
    elif st.Pid and start_time(st.Pid) is not None:
        with contextlib.suppress(OSError):
            os.kill(st.Pid, signal.SIGKILL)
    return _record_exit(store, c, p, st, Exit(code, time.time_ns(), False), error)


def _reconcile_locked(store: "Store", c: "Container", p: Paths) -> tuple["Container", State]:
    st = read_state(p, c.state)
    if st.Status in ACTIVE:
        ex = read_exit(p.exit)
        if ex is not None:
            c = _record_exit(store, c, p, st, ex)
        elif not st.monitor_alive():
            c = _recover_dead_monitor(store, c, p, st)
    elif st.RootfsHeld and not st.monitor_alive():
        _release_rootfs(store, c, p, st)  # a start that died half-way
    if c.state != st.Status and st.Status in ("created", "running", "paused", "exited"):
        c = _set_db_state(store, c, st.Status)
    return c, st


def reconcile(store: "Store", c: "Container") -> tuple["Container", State] | None:
    """Bring the record in line with reality (see the module docstring); the refreshed record
    and state, or None if the container is gone (an ``--rm`` container that exited is removed
    here, as Docker's daemon removes it when it exits).

    Requires: nothing. Effect: may kill a container whose monitor died, unmount, remove.
    Raises: LaminaError from the driver or runtime. Repeat: idempotent.
    """
    p = paths_of(store, c)
    with _locked(p):
        fresh = _refresh(store, c)
        if fresh is None:
            return None
        c, st = _reconcile_locked(store, fresh, p)
        if st.Status == "exited" and _auto_remove(c):
            _remove_locked(store, c, p, st, force=True)
            return None
    return c, st


def _auto_remove(c: "Container") -> bool:
    return bool((c.config.get("HostConfig") or {}).get("AutoRemove"))


def reconcile_all(store: "Store") -> None:
    """Reconcile every container that may need it (recorded active, holding its rootfs, or
    exited with ``--rm``), delete runtime state nobody owns, and remove container directories
    without a record (a crash inside ``rm``)."""
    sweep_runtime_state(store)
    known = set()
    for c in store.containers.list():
        known.add(c.id)
        p = paths_of(store, c)
        if c.state in ACTIVE or _holds_rootfs(p) or (c.state == "exited" and _auto_remove(c)):
            with contextlib.suppress(NotFound):
                reconcile(store, c)
    base = store.root / "containers"
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(base):
            if entry.is_dir() and len(entry.name) == 64 and entry.name not in known:
                if _exists(store, entry.name):
                    continue  # created after the listing above
                orphan = read_state(Paths(entry.path, entry.name))
                if not orphan.monitor_alive():
                    shutil.rmtree(entry.path, ignore_errors=True)
    network.sweep(store, lambda cid: _network_active(store, cid))


def _network_active(store: "Store", cid: str) -> bool:
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


def _holds_rootfs(p: Paths) -> bool:
    try:
        with open(_state_path(p), encoding="utf-8") as f:
            return bool(json.load(f).get("RootfsHeld"))
    except (OSError, ValueError, AttributeError):
        return False


def _kill_and_delete(rt: OCIRuntime, cid: str) -> None:
    rs = rt.state(cid)
    if rs is not None and rs.get("status") in ("running", "paused", "created"):
        with contextlib.suppress(Conflict):
            rt.kill(cid, signal.SIGKILL)
        if rs.get("status") == "paused":
            with contextlib.suppress(LaminaError):
                rt.resume(cid)
        _wait_gone(int(rs.get("pid") or 0), KILL_WAIT)
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
                with _locked(p):
                    st = read_state(p, c.state)
                    if st.monitor_alive() or st.Status in ACTIVE:
                        continue  # running, or for reconcile (which records the exit) to handle
                    _kill_and_delete(rt, cid)
                    gone.append(cid)
    return gone


# ---- create / start / run ------------------------------------------------------------------------------
def _prepare(store: "Store", c: "Container", p: Paths, rootfs_path: str, *, for_start: bool) -> dict[str, Any]:
    """Resolve, check and write the bundle for the container whose tree is at ``rootfs_path``.
    ``for_start``: also the checks that only matter when it runs now (the program exists) and the
    changes Docker makes to the tree at start (the working directory is created)."""
    cfg = c.config
    user = users.resolve_user(rootfs_path, str(cfg.get("User") or ""))
    doc = bundle.spec(cfg, container_id=c.id, rootfs=rootfs_path, user=user, etc_dir=p.dir,
                      swap_limit=cgroups.swap_limit_supported(), netns=network.netns_for(store, c))
    proc = doc["process"]
    cwd = proc["cwd"]
    if not cwd.startswith("/"):
        raise InvalidInput(f"container {c.name}: working directory {cwd!r} is not absolute")
    if for_start:
        env_path = next((e[5:] for e in proc["env"] if e.startswith("PATH=")), bundle.DEFAULT_PATH)
        if rootfs.find_executable(rootfs_path, proc["args"][0], env_path, cwd) is None:
            raise NotFound(f"container {c.name}: executable {proc['args'][0]!r} not found in the image"
                           + ("" if "/" in proc["args"][0] else f" (PATH={env_path})"))
        rootfs.make_dirs(rootfs_path, cwd)
        bundle.write_etc_files(p.dir, doc["hostname"], bundle.network_of(cfg))
    bundle.write(os.path.join(p.dir, "config.json"), doc)
    return doc


def create(store: "Store", image: str, *, name: str | None = None, config: dict[str, Any] | None = None) -> "Container":
    """Create a container (``docker create``): the record and RW layer (``graph``), and its
    bundle, validated against the image (user and group resolved, limits checked).

    Raises: NotFound (image), InvalidInput (bad user, group, limit, command), AlreadyExists
    (name). Effect on failure: nothing is left (the record is removed, nothing stays mounted).
    """
    c = store.create_container(image, name=name, config=config)
    p = paths_of(store, c)
    try:
        network.join_configured(store, c)
        with _locked(p):
            _write_state(p, State())
            path = store.containers.mount(c)
            try:
                _prepare(store, c, p, path, for_start=False)
            finally:
                store.containers.unmount(c)
    except BaseException:
        _discard(store, c, p)
        raise
    return c


def _discard(store: "Store", c: "Container", p: Paths) -> None:
    """Undo a create: record, RW layer, directory (errors on the way are not the user's)."""
    with contextlib.suppress(LaminaError, OSError):
        store.remove_container(c.id, force=True)
    shutil.rmtree(p.dir, ignore_errors=True)


class Running(Record):
    """A started container: the record, its state, and (if attached) the monitor's socket."""

    __slots__ = ("container", "state", "attachment")
    _defaults = {"attachment": None}
    container: "Container"
    state: State
    attachment: Attachment | None


def start(store: "Store", key: str, *, runtime: str | None = None, attach: bool = False,
          stdin: bool | int = False) -> Running:
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
    with _locked(p):
        fresh = _refresh(store, c)
        if fresh is None:
            raise NotFound(f"no such container: {key}")
        c, st = _reconcile_locked(store, fresh, p)
        if st.Status == "running":
            return Running(c, st)
        if st.Status == "paused":
            raise Conflict(f"container {c.name} is paused: unpause it instead")
        rt = _runtime_for(store, c, runtime)
        if os.path.isdir(os.path.join(rt.state_root, c.id)):
            rt.delete(c.id, force=True)  # left by a crash
        path = store.containers.mount(c)
        st.RootfsHeld, st.Rootfs = True, path
        _write_state(p, st)
        _phase("mount")
        try:
            _prepare(store, c, p, path, for_start=True)
            _phase("bundle")
            network.attach(store, c)
            _phase("network")
            att = spawn(p, rt, store_root=str(store.root), stdin=stdin)
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
                _release_rootfs(store, c, p, st)
            raise
        st.Status, st.Pid, st.Error = "running", info.pid, ""
        st.MonitorPid, st.MonitorStart = info.monitor_pid, info.monitor_start
        st.StartedAt, st.FinishedAt, st.ExitCode, st.OOMKilled = info.started_ns, 0, 0, False
        st.Runtime = rt.to_json()
        _write_state(p, st)
        c = _set_db_state(store, c, "running")
        _phase("recorded")
        network.started(store, c, info.monitor_pid)
    if not attach:
        att.detach()
        return Running(c, st)
    return Running(c, st, att)


def run(store: "Store", image: str, *, name: str | None = None, config: dict[str, Any] | None = None,
        runtime: str | None = None, attach: bool = True, stdin: bool | int = False) -> Running:
    """``docker run``: create and start in one go (one mount). On any failure before the
    container runs, the container is removed again: nothing is left."""
    c = store.create_container(image, name=name, config=config)
    _phase("create")
    p = paths_of(store, c)
    try:
        network.join_configured(store, c)
        with _locked(p):
            _write_state(p, State())
        return start(store, c.id, runtime=runtime, attach=attach, stdin=stdin)
    except BaseException:
        _discard(store, c, p)
        raise


def wait(store: "Store", running: Running, out: BinaryIO, err: BinaryIO) -> int:
    """Stream an attached container's output until it exits; record the exit (and remove the
    container if it was run with ``--rm``); the exit code. The runtime has deleted the container
    before its exit is reported, so nothing of a ``--rm`` container outlives the call (the
    monitor, told that its caller took over, exits right after)."""
    att = running.attachment
    if att is None:
        raise LaminaError("wait: container not attached")
    try:
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
        with _locked(p):
            fresh = _refresh(store, c)
            if fresh is not None:
                st = read_state(p, fresh.state)
                if _auto_remove(fresh):
                    _remove_locked(store, fresh, p, st, force=True)  # no need to record the exit first
                elif st.Status in ACTIVE:
                    _record_exit(store, fresh, p, st, ex)
        _phase("released")
    except BaseException:
        att.detach()  # interrupted, or our output went away: the monitor records the exit itself
        raise
    att.finish()
    _phase("finished")
    return ex.code


# ---- signals, pause ---------------------------------------------------------------------------------
def _active(store: "Store", key: str) -> tuple["Container", State, Paths]:
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
    c, st, _p = _active(store, key)
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


def stop(store: "Store", key: str, timeout: float = STOP_TIMEOUT) -> "Container":
    """``docker stop``: the stop signal (the image's ``StopSignal``, else SIGTERM), then SIGKILL
    after ``timeout`` seconds. A stopped container is left as it is."""
    c, st, p = _active(store, key)
    if st.Status not in ACTIVE:
        return c
    rt = st.runtime()
    assert rt is not None
    sig = signal_number(str(c.config.get("StopSignal") or "SIGTERM"))
    with contextlib.suppress(Conflict):
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


def pause(store: "Store", key: str) -> "Container":
    """Freeze every process of the container (cgroup freezer, through the runtime)."""
    c = store.containers.get(key)
    p = paths_of(store, c)
    with _locked(p):
        c, st = _reconcile_locked(store, c, p)
        if st.Status == "paused":
            raise Conflict(f"container {c.name} is already paused")
        if st.Status != "running":
            raise Conflict(f"container {c.name} is not running")
        rt = st.runtime()
        assert rt is not None
        rt.pause(c.id)
        st.Status = "paused"
        _write_state(p, st)
        return _set_db_state(store, c, "paused")


def unpause(store: "Store", key: str) -> "Container":
    c = store.containers.get(key)
    p = paths_of(store, c)
    with _locked(p):
        c, st = _reconcile_locked(store, c, p)
        if st.Status != "paused":
            raise Conflict(f"container {c.name} is not paused")
        rt = st.runtime()
        assert rt is not None
        rt.resume(c.id)
        st.Status = "running"
        _write_state(p, st)
        return _set_db_state(store, c, "running")


# ---- exec ------------------------------------------------------------------------------------------------
def exec_(store: "Store", key: str, argv: Sequence[str], *, env: Sequence[str] = (), workdir: str = "",
          user: str | None = None, detach: bool = False, stdin: bool = False,
          stdio: tuple[int | None, int | None, int | None] | None = None,
          started: Callable[[int], None] | None = None) -> int:
    """Run another process in a running container (``docker exec``), attached to this
    process's stdout and stderr (and stdin with ``stdin``); its exit code (0 with ``detach``).
    ``stdio``: file descriptors for the process's stdin, stdout and stderr instead (None: as
    above), for a caller that relays them (the daemon); ``started`` is called with the pid of
    the runtime's exec process once it runs.

    Raises: Conflict (not running, paused), NotFound (program), InvalidInput (user, workdir).
    """
    if not argv:
        raise InvalidInput("exec: no command given")
    if workdir and not workdir.startswith("/"):
        raise InvalidInput(f"exec: working directory {workdir!r} is not absolute")
    c, st, p = _active(store, key)
    if st.Status == "paused":
        raise Conflict(f"container {c.name} is paused: unpause it first")
    if st.Status != "running":
        raise Conflict(f"container {c.name} is not running")
    rt = st.runtime()
    assert rt is not None
    cfg = c.config
    who = users.resolve_user(st.Rootfs, str(user if user is not None else (cfg.get("User") or "")))
    hostname = bundle.hostname_of(cfg, c.id)
    proc = bundle.process(cfg, argv=argv, user=who, hostname=hostname, cwd=workdir or None, extra_env=env)
    env_path = next((e[5:] for e in proc["env"] if e.startswith("PATH=")), bundle.DEFAULT_PATH)
    if rootfs.find_executable(st.Rootfs, argv[0], env_path, proc["cwd"]) is None:
        raise NotFound(f"container {c.name}: executable {argv[0]!r} not found"
                       + ("" if "/" in argv[0] else f" (PATH={env_path})"))
    pf = os.path.join(p.dir, f"exec-{os.getpid()}-{time.monotonic_ns()}.json")
    bundle.write(pf, proc)
    try:
        cmd = rt.exec_command(c.id, pf, detach=detach)
        if stdio is not None and not detach:
            proc = rt.popen(cmd, stdin=subprocess.DEVNULL if stdio[0] is None else stdio[0],
                            stdout=stdio[1], stderr=stdio[2])
        else:
            proc = rt.popen(cmd, stdin=None if stdin else subprocess.DEVNULL,
                            stderr=subprocess.PIPE if detach else None)
        if started is not None:
            started(proc.pid)
        _out, said = proc.communicate()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pf)
    if detach and proc.returncode != 0:
        from runtime.oci import _message

        raise LaminaError(f"{rt.name} exec: {_message(said or b'') or f'exit status {proc.returncode}'}")
    return 0 if detach else proc.returncode


# ---- remove ----------------------------------------------------------------------------------------------
def _remove_locked(store: "Store", c: "Container", p: Paths, st: State, *, force: bool) -> None:
    rt = st.runtime()
    if rt is not None and not st.monitor_alive():
        with contextlib.suppress(LaminaError):
            rt.delete(c.id, force=True)
    network.release(store, c.id)
    _release_rootfs(store, c, p, st)
    store.remove_container(c.id, force=force)
    shutil.rmtree(p.dir, ignore_errors=True)


def remove(store: "Store", key: str, *, force: bool = False) -> "Container":
    """``docker rm``: a running (or paused) container is refused unless ``force``, which kills
    it first. Removes the record, RW layer, runtime state and directory.
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
        with contextlib.suppress(Conflict):
            rt.kill(c.id, signal.SIGKILL)
        if st.Status == "paused":
            with contextlib.suppress(LaminaError):
                rt.resume(c.id)
        _wait_exit(store, c, p, KILL_WAIT)
        got = reconcile(store, c)
        if got is None:
            return c
        c, st = got
    with _locked(p):
        fresh = _refresh(store, c)
        if fresh is None:
            return c
        if fresh.state not in ACTIVE and store.containers.mounted(fresh) and not force:
            raise Conflict(f"container {c.name} is mounted: umount it first or use -f")
        _remove_locked(store, fresh, p, read_state(p, fresh.state), force=force)
    return c


# ---- looking -------------------------------------------------------------------------------------------
def _rfc(ns: int) -> str:
    return logs.rfc3339nano(ns) if ns else "0001-01-01T00:00:00Z"


def inspect_state(st: State) -> dict[str, Any]:
    """Docker's ``State`` object."""
    return {
        "Status": st.Status,
        "Running": st.Status in ACTIVE,
        "Paused": st.Status == "paused",
        "Restarting": False,
        "OOMKilled": st.OOMKilled,
        "Dead": False,
        "Pid": st.Pid if st.Status in ACTIVE else 0,
        "ExitCode": st.ExitCode,
        "Error": st.Error,
        "StartedAt": _rfc(st.StartedAt),
        "FinishedAt": _rfc(st.FinishedAt),
    }


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
        "RestartCount": 0,
        "Runtime": (st.Runtime or {}).get("name")
        or (c.config.get("HostConfig") or {}).get("Runtime") or DEFAULT_RUNTIME,
    }


def cgroup_of(c: "Container") -> cgroups.Cgroup:
    return cgroups.expected(cgroups.mounts(), f"{bundle.CGROUP_PARENT}/{c.id}")


def stats(store: "Store", key: str) -> tuple["Container", cgroups.Stats | None]:
    """A usage sample of a running container (None for one that is not running)."""
    c, st, _p = _active(store, key)
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
