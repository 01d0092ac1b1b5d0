"""The per-container monitor: a small process that owns a running container (conmon's job).

``spawn`` forks it from the CLI (one fork and ``setsid``: a session of its own, re-parented to
init when the CLI exits; no new interpreter is started, which keeps ``run`` fast; the cost is
memory, about 15 MB private per running container, against conmon's one or two). The monitor:

1. makes itself a child subreaper, then runs ``<runtime> run`` in the foreground with the
   container's stdout and stderr on two pipes (and stdin from ``/dev/null``, or the caller's
   with ``-i``); the runtime creates, starts, waits for and deletes the container, and exits
   with its status;
2. tells the caller ``started`` (init's pid, from the runtime's pid file) or ``failed`` (the
   runtime's error, from its log);
3. copies the pipes into ``<id>-json.log`` (Docker's json-file format) and, while a caller is
   attached, to the caller as frames; watches the cgroup for the OOM killer while it exists;
4. when the runtime has exited, tells an attached caller the exit (exit code, 128+N for signal
   N, finish time, OOM kill), deletes runtime state the runtime left (only if it died itself;
   init is then re-parented to the monitor and waited for), then writes ``exit.json`` (so
   whoever sees ``exit.json`` knows the runtime has forgotten the container);
5. if no attached caller took over the bookkeeping (the caller sends ``D`` once it recorded the
   exit), replaces itself with ``python -m runtime.monitor cleanup ROOT ID``, a fresh
   interpreter that opens the store and records the exit (``runtime.containers.reconcile``):
   state exited, rootfs unmounted, removed if ``--rm``.

If the monitor is killed, the container goes on without it; the next lamina command that looks
at the container notices (pid and start time in ``state.json`` no longer match) and kills and
deletes the container, so a dead monitor leaks nothing (``runtime.containers``).

Frames on the caller's socket: an 8-byte header (kind, 3 zero bytes, big-endian length) and the
payload, as Docker's attach stream multiplexes. Kinds: 1 stdout, 2 stderr, 16 hello (monitor pid
and start time), 17 started, 18 failed, 19 exit (JSON payloads).
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from typing import Any, BinaryIO

from graph import LaminaError
from runtime import logs
from runtime.oci import OCIRuntime, log_error
from runtime.records import Record

STDOUT, STDERR = 1, 2
HELLO, STARTED, FAILED, EXIT = 16, 17, 18, 19
HEADER = struct.Struct(">BxxxI")
DONE = b"D"
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NAME = 15
DRAIN_AFTER_EXIT = 5.0  # seconds to wait for the pipes to close after init exited
START_TIMEOUT = 120.0
TAKEOVER_TIMEOUT = 300.0  # an attached caller that neither answers nor goes away: clean up alone


class Paths(Record):
    """The files of a container's directory that the monitor writes."""

    __slots__ = ("dir", "container_id")
    dir: str
    container_id: str

    @property
    def bundle(self) -> str:
        return self.dir

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


class Started(Record):
    """The container runs: init's pid, when, and the monitor's identity (pid, start time)."""

    __slots__ = ("pid", "started_ns", "monitor_pid", "monitor_start")
    pid: int
    started_ns: int
    monitor_pid: int
    monitor_start: int


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


def start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), None if
    it does not exist or is a zombie: with its pid, an identity that pid reuse cannot fake."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    if not rest or rest[0] == b"Z":
        return None
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


# ---- the caller's side ---------------------------------------------------------------------------
class Attachment:
    """The CLI's end of the monitor's socket."""

    def __init__(self, sock: socket.socket, paths: Paths) -> None:
        self.sock = sock
        self.paths = paths
        self.monitor_pid = 0
        self.monitor_start = 0
        self.child = 0  # the monitor is our child until we exit: reap it if it ends first

    def _recv_exact(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def frame(self) -> tuple[int, bytes] | None:
        head = self._recv_exact(HEADER.size)
        if head is None:
            return None
        kind, size = HEADER.unpack(head)
        body = self._recv_exact(size) if size else b""
        if body is None:
            return None
        return kind, body

    def _monitor_failure(self) -> str:
        try:
            with open(self.paths.monitor_log, encoding="utf-8", errors="replace") as f:
                lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
        except OSError:
            lines = []
        return lines[-1] if lines else "it exited without a word"

    def handshake(self, timeout: float = START_TIMEOUT) -> Started:
        """Wait until the container runs. Raises LaminaError with the runtime's message if it
        could not start it."""
        self.sock.settimeout(timeout)
        try:
            while True:
                got = self.frame()
                if got is None:
                    raise LaminaError(f"container {self.paths.container_id[:12]}: the monitor failed: "
                                      f"{self._monitor_failure()}")
                kind, body = got
                if kind == HELLO:
                    d = json.loads(body)
                    self.monitor_pid, self.monitor_start = int(d["pid"]), int(d["start"])
                elif kind == FAILED:
                    raise LaminaError(json.loads(body)["error"])
                elif kind == STARTED:
                    d = json.loads(body)
                    return Started(int(d["pid"]), int(d["started"]), self.monitor_pid, self.monitor_start)
        except TimeoutError:
            raise LaminaError(f"container {self.paths.container_id[:12]}: not started after {timeout:.0f} s") from None
        finally:
            self.sock.settimeout(None)

    def stream(self, out: BinaryIO, err: BinaryIO) -> Exit | None:
        """Copy the container's output until it exits; its exit, or None if the monitor went
        away without saying (killed: the container may run on; ``reconcile`` decides)."""
        while True:
            got = self.frame()
            if got is None:
                return None
            kind, body = got
            if kind == STDOUT:
                out.write(body)
                out.flush()
            elif kind == STDERR:
                err.write(body)
                err.flush()
            elif kind == EXIT:
                return Exit.from_json(json.loads(body))

    def wait_gone(self, timeout: float = 10.0) -> None:
        """After the socket closed without an exit: wait until the monitor has really ended
        (its socket closes before it is dead, and a dying monitor still looks alive)."""
        if self.child:
            try:
                os.waitpid(self.child, 0)  # ours: the kernel says when
            except ChildProcessError:
                pass
            self.child = 0
            return
        end = time.monotonic() + timeout
        while self.monitor_pid and start_time(self.monitor_pid) is not None and time.monotonic() < end:
            time.sleep(0.01)

    def detach(self) -> None:
        """Leave the container to the monitor (it records the exit itself)."""
        self.sock.close()
        self.reap()

    def finish(self) -> None:
        """The caller recorded the exit: tell the monitor, which then just exits (the runtime has
        deleted the container before the exit was reported, so nothing of it is left)."""
        try:
            self.sock.sendall(DONE)
        except OSError:
            pass
        finally:
            self.sock.close()
            self.reap()

    def reap(self) -> None:
        """Collect the monitor's exit status once it has ended (no zombie while we live on):
        now if it is over, else at the next ``spawn`` of this process."""
        if self.child:
            with _unreaped_lock:
                _unreaped.append(self.child)
            self.child = 0
        _reap_children()


_unreaped: list[int] = []
_unreaped_lock = threading.Lock()  # the daemon starts and reaps monitors from many threads


def _reap_children() -> None:
    with _unreaped_lock:
        for pid in list(_unreaped):
            try:
                done = os.waitpid(pid, os.WNOHANG)[0] != 0
            except ChildProcessError:
                done = True
            if done:
                _unreaped.remove(pid)


def spawn(paths: Paths, rt: OCIRuntime, *, store_root: str, stdin: bool | int = False) -> Attachment:
    """Start the monitor (and through it the container) in the background; the caller then
    calls ``handshake`` on the returned attachment, and ``stream`` or ``detach``.

    Requires: the bundle is written in ``paths.dir``; the rootfs is mounted.
    Effect: a forked process in a session of its own (``setsid``: no terminal, no signals from
    the caller's terminal) that outlives the caller, re-parented to init when the caller exits;
    its stdio is /dev/null and ``monitor.log`` (its own errors), so it never holds the caller's
    terminal or pipes (except stdin with ``stdin=True``, handed to the container; an int is a
    file descriptor handed instead, such as a pipe the daemon feeds from its client). One fork, not
    the classic two: the second would only spare the caller a zombie for the rest of its own
    short life (``finish`` reaps it), and each fork of a Python process costs milliseconds.
    """
    _reap_children()
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    rt.preexec()  # load libc before forking
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            parent_sock.close()
            os.setsid()
            code = _monitor_main(paths, rt, store_root, child_sock.fileno(), stdin)
        except BaseException:  # noqa: BLE001 - a forked child must never return into the caller
            try:
                traceback.print_exc()
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    child_sock.close()
    att = Attachment(parent_sock, paths)
    att.child = pid
    return att


# ---- the monitor ---------------------------------------------------------------------------------
def _send(sock: socket.socket | None, kind: int, body: bytes) -> socket.socket | None:
    """Send a frame; the socket, or None once the caller is gone."""
    if sock is None:
        return None
    try:
        sock.sendall(HEADER.pack(kind, len(body)) + body)
        return sock
    except OSError:
        sock.close()
        return None


def _keep_only(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _write_json(path: str, doc: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def _monitor_main(paths: Paths, rt: OCIRuntime, store_root: str, sock_fd: int, stdin: bool | int) -> int:
    gc.disable()  # objects inherited from the caller must not be finalised here
    devnull = os.open(os.devnull, os.O_RDWR)
    errlog = os.open(paths.monitor_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    if stdin is True:
        cin = os.dup(0)
    elif stdin is False:
        cin = os.dup(devnull)
    else:
        cin = os.dup(stdin)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(errlog, 2)
    _keep_only({0, 1, 2, sock_fd, cin})
    sys.stdout = sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - tracebacks to monitor.log
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from runtime.oci import _lib

    _lib().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # init becomes ours if the runtime dies
    _lib().prctl(PR_SET_NAME, b"lamina-monitor", 0, 0, 0)  # what ps -o comm and top show
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

    client: socket.socket | None = socket.socket(fileno=sock_fd)
    me = os.getpid()
    client = _send(client, HELLO, json.dumps({"pid": me, "start": start_time(me) or 0}).encode())
    for stale in (paths.pid, paths.exit, paths.runtime_log):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass

    import subprocess

    from runtime import bundle, cgroups

    try:  # before the container exists: an OOM kill in its first milliseconds is seen too
        oom: Any = cgroups.OOMWatch(cgroups.mounts(), f"{bundle.CGROUP_PARENT}/{paths.container_id}")
    except OSError:
        oom = None
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        proc = rt.popen(rt.run_command(paths.container_id, paths.bundle, paths.pid, paths.runtime_log),
                        stdin=cin, stdout=out_w, stderr=err_w, close_fds=True)
    except (OSError, subprocess.SubprocessError) as e:
        if oom is not None:
            oom.discard()
        _send(client, FAILED, json.dumps({"error": f"cannot run {rt.binary}: {e}"}).encode())
        return 0
    os.close(out_w)
    os.close(err_w)
    os.close(cin)
    run = _Run(paths, rt, proc, out_r, err_r, wake_r, client, oom)
    ex = run.loop()
    proc.returncode = 0  # reaped by us: Popen must not wait for it again
    client = run.client
    if ex is None:  # the runtime failed before the container started
        if oom is not None:
            oom.discard()
        if os.path.isdir(os.path.join(rt.state_root, paths.container_id)):
            try:
                rt.delete(paths.container_id, force=True)
            except LaminaError:
                pass
        _send(client, FAILED, json.dumps({"error": f"{rt.name}: {run.failure()}"}).encode())
        return 0
    client = _send(client, EXIT, json.dumps(ex.to_json()).encode())  # an attached caller first
    if os.path.isdir(os.path.join(rt.state_root, paths.container_id)):
        try:  # the runtime died before its own clean-up
            rt.delete(paths.container_id, force=True)
        except LaminaError as e:
            print(f"monitor: {e}", file=sys.stderr)
    try:  # last: once exit.json exists, the runtime has forgotten the container
        _write_json(paths.exit, ex.to_json())
    except FileNotFoundError:
        pass  # the attached caller removed the container (--rm) meanwhile
    taken_over = False
    if client is not None:
        try:
            client.settimeout(TAKEOVER_TIMEOUT)
            taken_over = client.recv(1) == DONE
        except OSError:
            pass
    if not taken_over:
        _exec_cleanup(store_root, paths.container_id)
    return 0


class _Run:
    """The monitor's event loop over one run of the runtime: start (the pid file appears),
    output (to the log and an attached caller), OOM events, and the end (the runtime exits with
    the container's status; if the runtime itself dies, init, re-parented to us, is waited for)."""

    PID_POLL_MS = 1

    def __init__(self, paths: Paths, rt: OCIRuntime, proc: Any, out_r: int, err_r: int, wake_r: int,
                 client: socket.socket | None, oom: Any) -> None:
        self.paths, self.rt, self.proc = paths, rt, proc
        self.client = client
        self.wake_r = wake_r
        self.streams = {out_r: ("stdout", STDOUT), err_r: ("stderr", STDERR)}
        self.early: list[tuple[int, bytes]] = []  # output before the start is known
        self.log: logs.LogWriter | None = None
        self.init: int | None = None
        self.runtime_status: int | None = None
        self.init_status: int | None = None
        self.oom = oom
        self.poller = select.poll()
        for fd in (out_r, err_r, wake_r):
            self.poller.register(fd, select.POLLIN)
        if oom is not None and oom.fd >= 0:
            self.poller.register(oom.fd, oom.events)
        if client is not None:
            self.poller.register(client.fileno(), select.POLLIN)

    # -- start ------------------------------------------------------------------------------------
    def _read_pid(self) -> int | None:
        try:
            with open(self.paths.pid, "rb") as f:
                text = f.read().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def _started(self, pid: int) -> None:
        self.init = pid
        self.client = _send(self.client, STARTED, json.dumps({"pid": pid, "started": time.time_ns()}).encode())
        self.log = logs.LogWriter(self.paths.log)
        for kind, data in self.early:  # after STARTED: the caller's handshake reads no output
            self._output(kind, data)
        self.early.clear()

    def failure(self) -> str:
        said = b"".join(d for s, d in self.early if s == STDERR).decode("utf-8", errors="replace")
        from runtime.oci import _message

        code = os.waitstatus_to_exitcode(self.runtime_status or 0)
        return log_error(self.paths.runtime_log) or _message(said.encode()) or f"exit status {code}"

    # -- output -----------------------------------------------------------------------------------
    def _output(self, kind: int, data: bytes) -> None:
        if self.log is None:
            self.early.append((kind, data))
            return
        self.log.feed("stdout" if kind == STDOUT else "stderr", data)
        if self.client is not None:
            self.client = _send(self.client, kind, data)

    def _read(self, fd: int) -> None:
        name, kind = self.streams[fd]
        data = os.read(fd, 65536)
        if data:
            self._output(kind, data)
            return
        self.poller.unregister(fd)
        os.close(fd)
        del self.streams[fd]
        if self.log is not None:
            self.log.end(name)

    # -- children ---------------------------------------------------------------------------------
    def _reap(self) -> None:
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.proc.pid:
                self.runtime_status = st
            elif self.init is not None and pid == self.init:
                self.init_status = st

    def _init_gone(self) -> bool:
        return self.init is None or self.init_status is not None or start_time(self.init) is None

    # -- the loop ----------------------------------------------------------------------------------
    def loop(self) -> Exit | None:
        """Run until the container is over; its exit, or None if it never started."""
        deadline: float | None = None
        while True:
            if self.runtime_status is not None and self.init is None:
                pid = self._read_pid()  # a container quicker than our first look
                if pid is None and os.waitstatus_to_exitcode(self.runtime_status) != 0:
                    return None
                self._started(pid or 0)
            over = self.runtime_status is not None and self._init_gone()
            if over and deadline is None:
                deadline = time.monotonic() + DRAIN_AFTER_EXIT
            if over and not self.streams:
                break
            if deadline is not None:
                timeout: float | None = max(0.0, deadline - time.monotonic()) * 1000
                if timeout == 0:
                    break
            elif self.init is None:
                timeout = self.PID_POLL_MS
            elif self.runtime_status is not None:
                timeout = 10  # the runtime died, init lives on: look for it now and then
            else:
                timeout = None
            for fd, _ev in self.poller.poll(timeout):
                if fd in self.streams:
                    self._read(fd)
                elif fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self._reap()
                elif self.oom is not None and fd == self.oom.fd:
                    if not self.oom.check() and not self.oom.v1:
                        self.poller.unregister(fd)  # v2: the file is gone (v1 counts on)
                elif self.client is not None and fd == self.client.fileno():
                    self._client_input()
            if self.init is None and self.runtime_status is None:
                pid = self._read_pid()
                if pid is not None:
                    self._started(pid)
        for fd in list(self.streams):
            self.poller.unregister(fd)
            os.close(fd)
            self.streams.pop(fd)
        if self.log is not None:
            self.log.close()
        status = self.runtime_status or 0
        if os.WIFSIGNALED(status) and self.init_status is not None:
            status = self.init_status  # the runtime was killed; init's own end is the truth
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            code = 128 - code
        oom = False
        if self.oom is not None:
            oom = code == 128 + signal.SIGKILL and self.oom.oom_killed()
            self.oom.close()
        return Exit(code, time.time_ns(), oom)

    def _client_input(self) -> None:
        assert self.client is not None
        try:
            data = self.client.recv(1)
        except OSError:
            data = b""
        if not data:  # the caller went away: go on detached
            self.poller.unregister(self.client.fileno())
            self.client.close()
            self.client = None


def _exec_cleanup(store_root: str, container_id: str) -> None:
    """Become ``python -m runtime.monitor cleanup ROOT ID`` (a fresh interpreter: nothing of the
    caller's state, such as its database connection, is used after a fork)."""
    import runtime

    code_dir = os.path.dirname(os.path.dirname(os.path.abspath(runtime.__file__)))
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": code_dir}
    os.execve(sys.executable, [sys.executable, "-m", "runtime.monitor", "cleanup", store_root, container_id], env)


def cleanup_main(store_root: str, container_id: str) -> int:
    """Record a container's exit in the store (what an attached caller does itself)."""
    from graph import Store
    from graph import NotFound
    from runtime import containers

    with Store(store_root) as store:
        try:
            c = store.containers.get(container_id)
        except NotFound:
            return 0
        containers.reconcile(store, c)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "cleanup":
        return cleanup_main(argv[1], argv[2])
    print("usage: python -m runtime.monitor cleanup ROOT CONTAINER_ID", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
