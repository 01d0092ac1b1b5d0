"""Exec endpoints: ``/containers/{id}/exec`` (create), ``/exec/{id}/start`` (hijacked),
``/exec/{id}/json``, ``/exec/{id}/resize``.

Exec instances live in memory only (as in Docker, they do not survive the daemon). The process
runs through ``runtime.exec_`` with pipes for its output, which a relay thread turns into frames
of the multiplexed stream; its exit code is recorded before the stream ends, so a client that
inspects the exec right after the stream ends (``docker exec``) reads it. With ``Tty`` the
runtime hands the pty's master to the daemon, which relays it raw (``lamina.daemon.terminals``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import threading
from typing import TYPE_CHECKING, Any

from aiohttp import web

from graph.errors import Conflict, LaminaError, NotFound
from lamina.daemon import wire
from lamina.daemon.terminals import ExecTerminal, console_size
from lamina.daemon.wire import ApiError, Hijacked

if TYPE_CHECKING:
    from graph import Store
    from lamina.daemon.context import Daemon

KEEP = 512  # finished exec instances kept for inspection


class ExecInstance:
    def __init__(self, cid: str, body: dict[str, Any]) -> None:
        self.id = secrets.token_hex(32)
        self.container = cid
        self.cmd = [str(a) for a in body["Cmd"]]
        self.env = [str(e) for e in body.get("Env") or []]
        self.workdir = str(body.get("WorkingDir") or "")
        self.user = str(body["User"]) if body.get("User") else None
        self.stdin = bool(body.get("AttachStdin"))
        self.stdout = bool(body.get("AttachStdout", True))
        self.stderr = bool(body.get("AttachStderr", True))
        self.tty = bool(body.get("Tty"))
        self.terminal = ExecTerminal(console_size(body.get("ConsoleSize"))) if self.tty else None
        self.running = False
        self.started = False
        self.exit_code: int | None = None
        self.pid = 0

    def doc(self) -> dict[str, Any]:
        return {
            "ID": self.id, "Running": self.running, "ExitCode": self.exit_code, "Pid": self.pid,
            "ContainerID": self.container, "OpenStdin": self.stdin, "OpenStdout": self.stdout,
            "OpenStderr": self.stderr, "CanRemove": not self.running and self.started, "DetachKeys": "",
            "ProcessConfig": {"entrypoint": self.cmd[0], "arguments": self.cmd[1:], "privileged": False,
                              "tty": self.tty, "user": self.user or ""},
        }


def _table(d: "Daemon") -> dict[str, ExecInstance]:
    t = d.state.get("execs")
    if t is None:
        t = d.state["execs"] = {}
    return t


def _get(d: "Daemon", eid: str) -> ExecInstance:
    ex = _table(d).get(eid)
    if ex is None:
        raise ApiError(404, f"No such exec instance: {eid}")
    return ex


async def create(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    import runtime

    body = await wire.json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "want a JSON object")
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        body["Cmd"] = cmd = [cmd]
    if not cmd or not isinstance(cmd, list):
        raise ApiError(400, "No exec command specified")

    def look(store: "Store") -> str:
        c = store.containers.get(id)
        got = runtime.describe(store, c)
        if got is None:
            raise NotFound(f"no such container: {id}")
        if got[1].Status == "paused":
            raise Conflict(f"Container {got[0].id} is paused, unpause the container before exec")
        if got[1].Status != "running":
            raise Conflict(f"Container {got[0].id} is not running")
        return got[0].id

    cid = await d.call(look)
    ex = ExecInstance(cid, body)
    table = _table(d)
    if len(table) >= KEEP:
        for k in [k for k, v in table.items() if not v.running and v.started][: len(table) - KEEP + 1]:
            table.pop(k, None)
    table[ex.id] = ex
    d.events.emit("container", f"exec_create: {' '.join(ex.cmd)}", cid, {"execID": ex.id})
    return wire.json_response({"Id": ex.id}, 201)


def _relay(fds: dict[int, int], h: Hijacked | None) -> None:
    """Copy the pipes (fd -> stream kind) to the connection as frames until both close."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    open_fds = set(fds)
    while open_fds:
        for fd, _ev in poller.poll():
            data = os.read(fd, 65536)
            if not data:
                poller.unregister(fd)
                os.close(fd)
                open_fds.discard(fd)
                continue
            if h is not None:
                h.write(fds[fd], data)


def run_exec_tty(store: "Store", ex: ExecInstance, h: Hijacked) -> None:
    import runtime

    term = ex.terminal
    assert term is not None

    def started(pid: int) -> None:
        ex.pid, ex.running = pid, True

    code = 126
    try:
        code = runtime.exec_(store, ex.container, ex.cmd, env=ex.env, workdir=ex.workdir, user=ex.user,
                             tty=True, terminal=lambda master: term.relay(master, h, ex.stdin),
                             console_size=term.size, started=started)
    except LaminaError as e:
        code = 127 if isinstance(e, NotFound) else 126
        h.write(wire.STDOUT, (" ".join(str(e).split()) + "\r\n").encode())
    finally:
        ex.exit_code, ex.running = code, False


def run_exec(store: "Store", ex: ExecInstance, h: Hijacked | None) -> None:
    import runtime

    if ex.tty and h is not None:
        run_exec_tty(store, ex, h)
        return

    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    in_r = in_w = None
    if ex.stdin and h is not None:
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
    mine = [out_w, err_w] + ([in_r] if in_r is not None else [])

    def close_mine() -> None:
        while mine:
            with contextlib.suppress(OSError):
                os.close(mine.pop())

    def started(pid: int) -> None:
        ex.pid, ex.running = pid, True
        close_mine()  # the child has its copies: the relay sees the end when the process ends

    relay = threading.Thread(target=_relay, args=({out_r: wire.STDOUT, err_r: wire.STDERR}, h), daemon=True)
    relay.start()
    if in_w is not None and h is not None:
        threading.Thread(target=h.feed, args=(in_w,), daemon=True).start()
    code = 126
    try:
        code = runtime.exec_(store, ex.container, ex.cmd, env=ex.env, workdir=ex.workdir, user=ex.user,
                             stdio=(in_r, out_w, err_w), started=started)
    except LaminaError as e:
        close_mine()
        relay.join()
        code = 127 if isinstance(e, NotFound) else 126
        if h is not None:
            h.write(wire.STDERR, (" ".join(str(e).split()) + "\n").encode())
    else:
        relay.join()
    finally:
        close_mine()
        if in_w is not None and ex.pid == 0:
            with contextlib.suppress(OSError):
                os.close(in_w)
        ex.exit_code, ex.running = code, False


async def start(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    ex = _get(d, id)
    body = await wire.json_body(request, optional=True) or {}
    if ex.started:
        raise ApiError(409, f"exec {id} has already been started")
    ex.started = True
    if body.get("Detach"):
        await d.call(run_exec_detached, ex)
        return wire.no_content(200)
    size = console_size(body.get("ConsoleSize"))
    if ex.terminal is not None and size is not None:
        ex.terminal.resize(*size)
    resp, h = await wire.hijack(request, tty=ex.tty)
    try:
        await d.call(run_exec, ex, h)
    finally:
        h.close_write()
        h.close()
    d.events.emit("container", "exec_die", ex.container, {"execID": ex.id, "exitCode": str(ex.exit_code)})
    return resp


def run_exec_detached(store: "Store", ex: ExecInstance) -> None:
    import runtime

    runtime.exec_(store, ex.container, ex.cmd, env=ex.env, workdir=ex.workdir, user=ex.user, detach=True)
    ex.exit_code = None


async def inspect(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    return wire.json_response(_get(d, id).doc())


async def resize(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    ex = _get(d, id)
    rows, cols = wire.qint(request, "h", 0), wire.qint(request, "w", 0)
    if not rows or not cols or rows < 0 or cols < 0 or rows > 65535 or cols > 65535:
        raise ApiError(400, f"invalid terminal size {rows}x{cols}")
    if ex.terminal is not None:
        ex.terminal.resize(rows, cols)
    return wire.no_content(200)


ROUTES = [
    ("POST", r"/containers/(?P<id>[^/]+)/exec", create),
    ("POST", r"/exec/(?P<id>[^/]+)/start", start),
    ("POST", r"/exec/(?P<id>[^/]+)/resize", resize),
    ("GET", r"/exec/(?P<id>[^/]+)/json", inspect),
]
