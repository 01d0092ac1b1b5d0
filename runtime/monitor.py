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
   exit), replaces itself with ``python -m runtime.cleanup ROOT ID`` (``runtime.cleanup``), a
   fresh interpreter that opens the store and records the exit: state exited, rootfs
   unmounted, removed if ``--rm``.

If the monitor is killed, the container goes on without it; the next lamina command that looks
at the container notices (pid and start time in ``state.json`` no longer match) and kills and
deletes the container, so a dead monitor leaks nothing (``runtime.reconcile``).

The caller's end of the socket is ``runtime.attach``; the frames are ``runtime.frames``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any

from graph import LaminaError
from runtime import logs
from runtime.attach import Attachment, reap_children
from runtime import restart
from runtime import tty as ttys
from runtime.frames import DONE, EXIT, FAILED, HELLO, RESIZE, STARTED, STDERR, STDIN, STDOUT, Reader, send
from runtime.oci import OCIRuntime, load_libc, log_error, message_of
from runtime.paths import Paths
from runtime.proc import start_time
from runtime.records import Record
from runtime.state import EXIT_UNKNOWN, Exit, write_json

PR_SET_CHILD_SUBREAPER = 36
PR_SET_NAME = 15
DRAIN_AFTER_EXIT = 5.0  # seconds to wait for the pipes to close after init exited
TAKEOVER_TIMEOUT = 300.0  # an attached caller that neither answers nor goes away: clean up alone


class Options(Record):
    """What the monitor does besides running the container once: ``tty`` (the runtime makes a
    pty and sends its master over the console socket), ``restart`` (Docker's RestartPolicy
    ``Name`` and ``MaximumRetryCount``), ``restart_count`` (restarts already done before this
    start: Docker keeps counting across ``start``s only within one run, so normally 0)."""

    __slots__ = ("tty", "restart", "max_retries", "health")
    _defaults = {"tty": False, "restart": "no", "max_retries": 0, "health": None}
    tty: bool
    restart: str
    max_retries: int
    health: dict[str, Any] | None  # runtime.health.Check as JSON


def spawn(paths: Paths, rt: OCIRuntime, *, store_root: str, stdin: bool | int = False,
          options: Options | None = None) -> Attachment:
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
    reap_children()
    opts = options or Options()
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
            code = _monitor_main(paths, rt, store_root, child_sock.fileno(), False if opts.tty else stdin, opts)
        except BaseException:  # noqa: BLE001 - a forked child must never return into the caller
            try:
                import traceback  # only on this failure: not at every run's start-up

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
def _keep_only(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _monitor_main(paths: Paths, rt: OCIRuntime, store_root: str, sock_fd: int, stdin: bool | int,
                  opts: Options) -> int:
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

    load_libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # init becomes ours if the runtime dies
    load_libc().prctl(PR_SET_NAME, b"lamina-monitor", 0, 0, 0)  # what ps -o comm and top show
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

    client: socket.socket | None = socket.socket(fileno=sock_fd)
    me = os.getpid()
    client = send(client, HELLO, json.dumps({"pid": me, "start": start_time(me) or 0}).encode())
    for stale in (paths.exit, restart.stop_marker(paths)):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    policy = restart.Policy(opts.restart, opts.max_retries)
    reader = Reader()
    count = 0
    while True:
        ex, run = _run_once(paths, rt, cin, wake_r, client, reader, opts.tty, first=count == 0, health=opts.health)
        client = run.client if run is not None else client
        if ex is None:
            if count == 0:
                send(client, FAILED, json.dumps({"error": f"{rt.name}: {run.failure() if run else 'failed'}"}).encode())
                return 0
            ex = Exit(EXIT_UNKNOWN, time.time_ns(), False)  # a restart that could not start: stop here
            break
        if not policy.should_restart(ex.code, count, restart.stop_requested(paths)):
            break
        count += 1
        if not restart.wait_backoff(paths, policy.delay(count, run.ran_for())):
            break  # stop asked during the back-off
        restart.record_restart(paths, count, ex)
    os.close(cin)
    client = send(client, EXIT, json.dumps(ex.to_json()).encode())  # an attached caller first
    try:  # last: once exit.json exists, the runtime has forgotten the container
        write_json(paths.exit, ex.to_json())
    except FileNotFoundError:
        pass  # the attached caller removed the container (--rm) meanwhile
    taken_over = False
    if client is not None:
        try:
            client.settimeout(TAKEOVER_TIMEOUT)
            while not taken_over:
                data = client.recv(4096)
                if not data:
                    break
                taken_over = any(kind == DONE for kind, _ in reader.feed(data))
        except (OSError, ValueError):
            pass
    if not taken_over:
        _exec_cleanup(store_root, paths.container_id)
    return 0


def _run_once(paths: Paths, rt: OCIRuntime, cin: int, wake_r: int, client: socket.socket | None,
              reader: Reader, tty: bool, *, first: bool,
              health: dict[str, Any] | None = None) -> "tuple[Exit | None, _Run | None]":
    """One life of the container: the runtime's ``run``, output to the log (and the caller),
    until the container has exited and the runtime has forgotten it. (None, run) if the runtime
    failed before the container started."""
    import subprocess

    from runtime import bundle, cgroups

    for stale in (paths.pid, paths.runtime_log):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    try:  # before the container exists: an OOM kill in its first milliseconds is seen too
        oom: Any = cgroups.OOMWatch(cgroups.mounts(), f"{bundle.CGROUP_PARENT}/{paths.container_id}")
    except OSError:
        oom = None
    listener = ttys.listen_console(paths.dir) if tty else None
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    cmd = rt.run_command(paths.container_id, paths.bundle, paths.pid, paths.runtime_log,
                         console_socket=ttys.CONSOLE_SOCKET if tty else None)
    try:
        proc = rt.popen(cmd, stdin=cin, stdout=out_w, stderr=err_w, close_fds=True)
    except (OSError, subprocess.SubprocessError) as e:
        if oom is not None:
            oom.discard()
        if listener is not None:
            listener.close()
        os.close(out_w)
        os.close(err_w)
        if first:
            send(client, FAILED, json.dumps({"error": f"cannot run {rt.binary}: {e}"}).encode())
        print(f"monitor: cannot run {rt.binary}: {e}", file=sys.stderr)
        return None, None
    os.close(out_w)
    os.close(err_w)
    run = _Run(paths, rt, proc, out_r, err_r, wake_r, client, oom, listener=listener, reader=reader,
               detached=tty and rt.detaches_for_console(), first=first, health=health)
    ex = run.loop()
    proc.returncode = 0  # reaped by us: Popen must not wait for it again
    if listener is not None:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(paths.dir, ttys.CONSOLE_SOCKET))
    if ex is None and oom is not None:
        oom.discard()
    if os.path.isdir(os.path.join(rt.state_root, paths.container_id)):
        try:  # the runtime died before its own clean-up (or it ran detached: runc with a tty)
            rt.delete(paths.container_id, force=True)
        except LaminaError as e:
            print(f"monitor: {e}", file=sys.stderr)
    return ex, run


class _Run:
    """The monitor's event loop over one run of the runtime: start (the pid file appears),
    output (to the log and an attached caller), OOM events, and the end (the runtime exits with
    the container's status; if the runtime itself dies, init, re-parented to us, is waited for)."""

    PID_POLL_MS = 1

    def __init__(self, paths: Paths, rt: OCIRuntime, proc: Any, out_r: int, err_r: int, wake_r: int,
                 client: socket.socket | None, oom: Any, *, listener: socket.socket | None = None,
                 reader: Reader | None = None, detached: bool = False, first: bool = True,
                 health: dict[str, Any] | None = None) -> None:
        self.paths, self.rt, self.proc = paths, rt, proc
        self.client = client
        self.listener = listener  # the console socket (tty): the runtime sends the pty master
        self.master: int | None = None
        self.pending_size: tuple[int, int] | None = None
        self.reader = reader or Reader()
        self.detached = detached  # the runtime exits once the container runs (runc with a tty)
        self.first = first
        self.started_at = time.monotonic()
        self.health_check = health
        self.health: Any = None  # runtime.health.Runner once the container runs
        self.reaped: dict[int, int] = {}
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
        if listener is not None:
            self.poller.register(listener.fileno(), select.POLLIN)

    def ran_for(self) -> float:
        """Seconds since this run began (Docker resets the back-off after 10 s up)."""
        return time.monotonic() - self.started_at

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
        if self.first:
            self.client = send(self.client, STARTED, json.dumps({"pid": pid, "started": time.time_ns()}).encode())
        else:
            restart.record_started(self.paths, pid)
        if self.health_check and pid:
            from runtime import health

            if not self.first:
                health.reset(self.paths)
            self.health = health.Runner(self.paths, self.rt, health.Check.from_json(self.health_check), self.reaped)
        self.log = logs.LogWriter(self.paths.log)
        for kind, data in self.early:  # after STARTED: the caller's handshake reads no output
            self._output(kind, data)
        self.early.clear()

    def failure(self) -> str:
        said = b"".join(d for s, d in self.early if s == STDERR).decode("utf-8", errors="replace")
        code = os.waitstatus_to_exitcode(self.runtime_status or 0)
        return log_error(self.paths.runtime_log) or message_of(said.encode()) or f"exit status {code}"

    # -- output -----------------------------------------------------------------------------------
    def _output(self, kind: int, data: bytes) -> None:
        if self.log is None:
            self.early.append((kind, data))
            return
        self.log.feed("stdout" if kind == STDOUT else "stderr", data)
        if self.client is not None:
            self.client = send(self.client, kind, data)

    def _read(self, fd: int) -> None:
        name, kind = self.streams[fd]
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: a pty master once every slave end is closed
            data = b""
        if data:
            self._output(kind, data)
            return
        self.poller.unregister(fd)
        os.close(fd)
        del self.streams[fd]
        if fd == self.master:
            self.master = None
        if self.log is not None and name not in (n for n, _k in self.streams.values()):
            self.log.end(name)

    def _console(self) -> None:
        """The runtime connects to the console socket and sends the pty master."""
        assert self.listener is not None
        self.poller.unregister(self.listener.fileno())
        try:
            fd = ttys.receive_master(self.listener)
        except OSError as e:
            print(f"monitor: console socket: {e}", file=sys.stderr)
            return
        finally:
            self.listener.close()
            self.listener = None
        self.master = fd
        self.streams[fd] = ("stdout", STDOUT)  # a terminal has one output stream
        self.poller.register(fd, select.POLLIN)
        if self.pending_size is not None:
            with contextlib.suppress(OSError):
                ttys.set_window_size(fd, *self.pending_size)

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
            else:
                self.reaped[pid] = st  # a health check's exec, say

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
            elif self.runtime_status is not None and not self.detached:
                timeout = 10  # the runtime died, init lives on: look for it now and then
            else:
                timeout = None
            if self.health is not None and self.runtime_status is None and deadline is None:
                wait = self.health.timeout_ms()
                timeout = wait if timeout is None else min(timeout, wait)
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
                elif self.listener is not None and fd == self.listener.fileno():
                    self._console()
            if self.init is None and self.runtime_status is None:
                pid = self._read_pid()
                if pid is not None:
                    self._started(pid)
            if self.health is not None and self.runtime_status is None:
                self.health.tick()
        if self.health is not None:
            self.health.close()
            self.health = None
        for fd in list(self.streams):
            self.poller.unregister(fd)
            os.close(fd)
            self.streams.pop(fd)
        if self.log is not None:
            self.log.close()
        self._reap()  # init may be a zombie not yet collected (we saw it gone before its SIGCHLD)
        if self.detached and self.init_status is None and self.init:
            end = time.monotonic() + 1.0
            while self.init_status is None and time.monotonic() < end:
                try:
                    pid, st = os.waitpid(self.init, os.WNOHANG)
                except ChildProcessError:
                    break  # not ours after all
                if pid:
                    self.init_status = st
                else:
                    time.sleep(0.005)
        status = self.runtime_status or 0
        if self.detached and self.init_status is not None:
            status = self.init_status  # the runtime left once the container ran: init's status
        elif os.WIFSIGNALED(status) and self.init_status is not None:
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
        """Frames from the caller: keys for the pty, window sizes (``runtime.frames``)."""
        assert self.client is not None
        try:
            data = self.client.recv(65536)
            frames = self.reader.feed(data) if data else []
        except (OSError, ValueError):
            data, frames = b"", []
        for kind, body in frames:
            if kind == STDIN and self.master is not None:
                with contextlib.suppress(OSError):
                    os.write(self.master, body)
            elif kind == RESIZE:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    d = json.loads(body)
                    self.pending_size = (int(d["h"]), int(d["w"]))
                if self.master is not None and self.pending_size is not None:
                    with contextlib.suppress(OSError):
                        ttys.set_window_size(self.master, *self.pending_size)
        if not data:  # the caller went away: go on detached
            self.poller.unregister(self.client.fileno())
            self.client.close()
            self.client = None


def _exec_cleanup(store_root: str, container_id: str) -> None:
    """Become ``python -m runtime.cleanup ROOT ID`` (a fresh interpreter: nothing of the
    caller's state, such as its database connection, is used after a fork)."""
    code_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": code_dir}
    os.execve(sys.executable, [sys.executable, "-m", "runtime.cleanup", store_root, container_id], env)
