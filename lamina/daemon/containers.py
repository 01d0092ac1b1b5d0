"""Container endpoints: create, list, inspect, start, stop, restart, kill, pause, unpause, wait,
logs, attach (hijacked), remove, rename, prune, stats, top, changes, export, archive, commit.

``docker run`` without ``-d`` is create, attach, wait, start: the attach arrives before the
container runs, so the daemon parks the hijacked connection (``Board.pending``) and the start
that follows starts the container attached (``runtime.start(attach=True)``), streaming the
monitor's frames to the connection and recording the exit (``runtime.wait``), which also removes
an ``--rm`` container. ``wait`` answers its headers at once (the client starts the container
only after that, so no exit is missed) and its body when the condition holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import stat as statmod
import tarfile
import threading
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from graph.errors import Conflict, InvalidInput, NotFound
from lamina.daemon import wire
from lamina.daemon.terminals import Session, Sink, console_size
from lamina.daemon.wire import ApiError, Hijacked
from runtime.rootfs import resolve

if TYPE_CHECKING:
    from graph import Container, Store
    from lamina.daemon.context import Daemon

ACTIVE = ("running", "paused")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Board:
    """In-memory facts about containers this daemon drives: attach connections waiting for a
    start, and exit codes it saw (a removed ``--rm`` container has no state left to read)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[str, list[tuple[Hijacked, asyncio.Future[None]]]] = {}
        self.exits: dict[str, tuple[int, int]] = {}  # id -> (exit code, when seen, ns)
        self.streaming: set[str] = set()
        self.stdin: dict[str, Hijacked] = {}  # a pending attach that also carries stdin
        self.sessions: dict[str, Session] = {}  # running terminal containers (lamina.daemon.terminals)
        self.changed: dict[str, asyncio.Event] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def notify(self, cid: str) -> None:
        loop = self.loop
        if loop is None:
            return

        def setit() -> None:
            ev = self.changed.get(cid)
            if ev is not None:
                ev.set()

        loop.call_soon_threadsafe(setit)


def board(d: "Daemon") -> Board:
    b = d.state.get("containers")
    if b is None:
        b = d.state["containers"] = Board()
        b.loop = d.loop
    return b


# ---- create ---------------------------------------------------------------------------------------
def _network_mode(hc: dict[str, Any]) -> str:
    """``HostConfig.NetworkMode``; the clients send ``default`` (or nothing) when the user gave no
    ``--network``, which is lamina's default network (``none``, README: unlike Docker's bridge, a
    container joins a bridge only when asked, so no command makes one in the host's namespace)."""
    from lamina.containerconfig import DEFAULT_NETWORK

    m = str(hc.get("NetworkMode") or "")
    return DEFAULT_NETWORK if m in ("", "default") else m


def _publish_specs(bindings: Any) -> list[str]:
    """``HostConfig.PortBindings`` as ``-p`` specs, so the daemon and the CLI parse (and validate)
    ports in one place (``lamina.netconfig.parse_publish``). A binding without ``HostIp`` is on
    127.0.0.1, as ``lamina run -p`` (Docker's is every address)."""
    if not isinstance(bindings, dict):
        raise InvalidInput("HostConfig.PortBindings must be an object")
    specs = []
    for key, items in bindings.items():
        port, _, proto = str(key).partition("/")
        for b in items or [{}]:
            if not isinstance(b, dict):
                raise InvalidInput(f"HostConfig.PortBindings[{key!r}] must be a list of objects")
            ip, hp = str(b.get("HostIp") or ""), str(b.get("HostPort") or "")
            host = f"[{ip}]" if ":" in ip else ip
            spec = f"{host}:{hp}:{port}" if ip else (f"{hp}:{port}" if hp else port)
            specs.append(f"{spec}/{proto or 'tcp'}")
    return specs


def _network_part(body: dict[str, Any], hc: dict[str, Any]) -> dict[str, Any]:
    """The record's network fields from a create body, built by ``lamina.netconfig`` as the CLI's
    ``--network/--network-alias/--ip/-p/-P`` are: ``NetworkMode``, ``PortBindings``,
    ``PublishAllPorts`` and the mode's ``NetworkingConfig.EndpointsConfig`` entry."""
    from lamina import netconfig

    mode = _network_mode(hc)
    nc = body.get("NetworkingConfig") or {}
    eps = (nc.get("EndpointsConfig") if isinstance(nc, dict) else None) or {}
    if not isinstance(eps, dict) or not all(isinstance(v, dict) or v is None for v in eps.values()):
        raise InvalidInput("NetworkingConfig.EndpointsConfig must be an object of objects")
    asked = str(hc.get("NetworkMode") or "") or "default"  # the docker CLI names it as the user did
    others = sorted(k for k in eps if k not in (mode, asked))
    if others:
        raise InvalidInput(f"NetworkingConfig names network {others[0]!r} but NetworkMode is {asked!r}: "
                           "lamina joins one network at create (use network connect for more)")
    ep = eps.get(mode) or eps.get(asked) or {}
    aliases = ep.get("Aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise InvalidInput("EndpointsConfig Aliases must be a list of strings")
    ip = str(((ep.get("IPAMConfig") or {}).get("IPv4Address")) or "")
    return netconfig.network_config(network=mode, aliases=aliases, ip=ip,
                                    publish=_publish_specs({} if hc.get("PortBindings") is None else hc["PortBindings"]),
                                    publish_all=bool(hc.get("PublishAllPorts")))


def build_config(d: "Daemon", store: "Store", body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from lamina import containerconfig as cc

    image = body.get("Image")
    if not isinstance(image, str) or not image:
        raise InvalidInput("config: Image is required")
    hc = body.get("HostConfig")
    hc = {} if hc is None else hc
    if not isinstance(hc, dict):
        raise InvalidInput("HostConfig must be an object")
    img = store.resolve_image(image)
    image_cfg = store.images.config(img.id).config
    ep = body.get("Entrypoint")
    if isinstance(ep, str):
        ep = [ep]
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    for name, v in (("Cmd", cmd), ("Entrypoint", ep), ("Env", body.get("Env"))):
        if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            raise InvalidInput(f"{name} must be a list of strings")
    pids = hc.get("PidsLimit")
    user = cc.user_config(
        image, cmd=cmd or (), entrypoint=None, env=list(body.get("Env") or []),
        workdir=str(body.get("WorkingDir") or ""), user=str(body.get("User") or ""),
        hostname=str(body.get("Hostname") or ""), network=_network_mode(hc),
        memory=int(hc.get("Memory") or 0), nano_cpus=int(hc.get("NanoCpus") or 0),
        pids_limit=int(pids) if pids is not None else None,
        runtime=str(hc.get("Runtime") or d.cfg.runtime or "") or None,
    )
    user["Entrypoint"] = ep  # a list as the API gives it ([] resets the image's)
    if body.get("Labels"):
        user["Labels"] = {str(k): str(v) for k, v in dict(body["Labels"]).items()}
    for k in ("StopSignal", "ExposedPorts", "Volumes", "AttachStdin", "AttachStdout", "AttachStderr",
              "OpenStdin", "StdinOnce", "Domainname"):
        if body.get(k) is not None:
            user[k] = body[k]
    for k in ("Healthcheck", "StopTimeout"):
        if body.get(k) is not None:
            user[k] = body[k]
    user["Tty"] = bool(body.get("Tty"))
    user["HostConfig"]["AutoRemove"] = bool(hc.get("AutoRemove"))
    # The record is Docker's Config + HostConfig, as `lamina run` writes it (lamina/runopts.py):
    # these fields are kept as the client sent them and validated by runtime.spec.parse when the
    # container is created, so the CLI and the daemon honour them the same way.
    for k in _HOST_CONFIG_PASSED:
        if hc.get(k) not in (None, [], {}, "", False, 0):
            user["HostConfig"][k] = hc[k]
    from lamina import netconfig

    user = netconfig.apply(user, _network_part(body, hc))
    return str(img.id), cc.merge(user, image_cfg)


_HOST_CONFIG_PASSED = (
    "Binds", "Mounts", "Tmpfs", "RestartPolicy", "SecurityOpt", "CapAdd", "CapDrop", "Privileged",
    "ReadonlyRootfs", "Ulimits", "Init", "ShmSize", "Devices", "GroupAdd", "ExtraHosts", "Dns",
    "DnsSearch", "DnsOptions", "ConsoleSize",
)


def _create(store: "Store", d: "Daemon", body: dict[str, Any], name: str | None) -> "Container":
    import runtime

    image_id, cfg = build_config(d, store, body)
    return runtime.create(store, image_id, name=name, config=cfg)


async def create(d: "Daemon", request: web.Request) -> web.StreamResponse:
    body = await wire.json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "want a JSON object")
    name = request.query.get("name") or None
    try:
        c = await d.call(_create, d, body, name)
    except (ValueError, TypeError, AttributeError) as e:  # a field of the wrong type
        raise ApiError(400, f"invalid container config: {e}") from None
    except NotFound as e:
        if "image" in str(e).lower():
            raise ApiError(404, f"No such image: {body.get('Image')}") from None
        # the API's 404 here means "no such image" (the docker CLI pulls on it); anything else
        # missing (a network) is a bad parameter, as the API documents create's 400
        raise ApiError(400, str(e)) from None
    d.events.emit("container", "create", c.id, {"name": c.name, "image": str(body.get("Image"))})
    return wire.json_response({"Id": c.id, "Warnings": []}, 201)


# ---- list, inspect --------------------------------------------------------------------------------
def _command(c: "Container") -> str:
    argv = list(c.config.get("Entrypoint") or []) + list(c.config.get("Cmd") or [])
    return " ".join(argv)


def _status_text(c: "Container", st: Any) -> str:
    from lamina.cli.ps import status_of

    return status_of(c, st)


def list_containers(store: "Store", *, all_: bool, flt: dict[str, list[str]], size: bool = False,
                    limit: int | None = None) -> list[dict[str, Any]]:
    import runtime as rc

    out = []
    for c, st in rc.list_reconciled(store):
        state = st.Status if st.Status in ("created", "running", "paused", "exited") else c.state
        if not all_ and state not in ACTIVE and not flt.get("status") and not flt.get("exited"):
            continue
        if not _match(c, state, st, flt):
            continue
        item: dict[str, Any] = {
            "Id": c.id, "Names": ["/" + c.name], "Image": c.config.get("Image") or str(c.image_id or ""),
            "ImageID": str(c.image_id or ""), "Command": _command(c), "Created": int(c.created),
            "Ports": [], "Labels": dict(c.config.get("Labels") or {}), "State": state,
            "Status": _status_text(c, st),
            "HostConfig": {"NetworkMode": (c.config.get("HostConfig") or {}).get("NetworkMode") or "none"},
            "NetworkSettings": {"Networks": {}}, "Mounts": [],
        }
        if item["HostConfig"]["NetworkMode"] != "none":
            item["Ports"], item["NetworkSettings"]["Networks"] = _ps_network(store, c)
        if size:
            with contextlib.suppress(Exception):
                item["SizeRw"] = store.containers.size(c)
        out.append(item)
        if limit is not None and limit > 0 and len(out) >= limit:
            break
    return out


def _ps_network(store: "Store", c: "Container") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``ps``'s ``Ports`` (Docker's list form, exposed-only ports without a public side) and
    ``NetworkSettings.Networks`` from the same settings ``inspect`` shows."""
    from runtime.network import api

    ns = api.settings(store, c)
    ports: list[dict[str, Any]] = []
    for key, binds in sorted((ns.get("Ports") or {}).items()):
        port, _, proto = key.partition("/")
        if not binds:
            ports.append({"PrivatePort": int(port), "Type": proto})
        for b in binds or []:
            ports.append({"IP": b.get("HostIp", ""), "PrivatePort": int(port),
                          "PublicPort": int(b.get("HostPort") or 0), "Type": proto})
    return ports, dict(ns.get("Networks") or {})


def _match(c: "Container", state: str, st: Any, flt: dict[str, list[str]]) -> bool:
    for key, wanted in flt.items():
        if not wanted:
            continue
        if key == "status" and state not in wanted:
            return False
        if key == "id" and not any(c.id.startswith(w) for w in wanted):
            return False
        if key == "name" and not any(w.lstrip("/") in c.name for w in wanted):
            return False
        if key == "exited" and (state != "exited" or str(st.ExitCode) not in wanted):
            return False
        if key == "label":
            labels = dict(c.config.get("Labels") or {})
            for w in wanted:
                k, eq, v = w.partition("=")
                if k not in labels or (eq and labels[k] != v):
                    return False
        if key == "ancestor":
            img = str(c.image_id or "")
            if not any(w == c.config.get("Image") or img.startswith(w) or img.removeprefix("sha256:").startswith(w)
                       for w in wanted):
                return False
    return True


async def list_(d: "Daemon", request: web.Request) -> web.StreamResponse:
    flt = wire.filters(request)
    wire.check_filters(flt, {"status", "id", "name", "label", "ancestor", "exited", "before", "since",
                             "network", "volume", "health", "isolation", "publish", "expose", "is-task"})
    got = await d.call(list_containers, all_=wire.qbool(request, "all"), flt=flt,
                       size=wire.qbool(request, "size"), limit=wire.qint(request, "limit"))
    return wire.json_response(got)


def inspect_doc(store: "Store", key: str, size: bool = False) -> dict[str, Any]:
    from lamina.cli.inspect import container_json

    c = store.containers.get(key)
    doc = container_json(store, c, size=size)
    doc["Config"].setdefault("Tty", False)
    doc["Config"].setdefault("OpenStdin", False)
    doc["Config"].setdefault("AttachStdout", True)
    doc["Config"].setdefault("AttachStderr", True)
    doc["Config"].setdefault("Labels", {})
    gd = doc.get("GraphDriver") or {}
    gd["Data"] = {k: str(v) for k, v in (gd.get("Data") or {}).items() if v is not None}  # Go: map of strings
    hc = doc["HostConfig"]
    hc.setdefault("AutoRemove", False)
    hc.setdefault("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0})
    hc.setdefault("LogConfig", {"Type": "json-file", "Config": {}})
    hc.setdefault("Binds", None)
    doc.update({
        "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "", "ExecIDs": None,
        "Mounts": [],
    })
    ns = doc.setdefault("NetworkSettings", {})  # runtime.network.api.settings, as `lamina inspect`
    for k, v in (("Bridge", ""), ("SandboxID", ""), ("Ports", {}), ("Networks", {}), ("IPAddress", ""),
                 ("Gateway", ""), ("MacAddress", ""), ("SandboxKey", "")):
        if ns.get(k) is None:
            ns[k] = v
    return doc


async def inspect(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    return wire.json_response(await d.call(inspect_doc, id, wire.qbool(request, "size")))


# ---- start, stop, kill, pause ---------------------------------------------------------------------
def _run_attached(d: "Daemon", cid: str, running: Any, conns: list[tuple[Hijacked, "asyncio.Future[None] | None"]],
                  session: Session | None = None) -> None:
    """Stream an attached start to its connections and record the exit (``runtime.wait``). A
    terminal container's ``session`` shares ``conns``: attaches that come later join it."""
    import runtime

    b = board(d)
    assert d.loop is not None
    lock = session.lock if session is not None else threading.Lock()
    code: int | None = None
    try:
        code = runtime.wait(d.store(), running, Sink(conns, wire.STDOUT, lock, d.loop), Sink(conns, wire.STDERR, lock, d.loop),  # type: ignore[arg-type]
                            window=False)
    except Exception:  # noqa: BLE001 - the monitor records the exit itself when we fail
        logging.getLogger("lamina.daemon").exception("attached run of %s", cid[:12])
    finally:
        if session is not None:
            conns = session.end()
        with b.lock:
            if code is not None:
                b.exits[cid] = (code, time.time_ns())
            b.streaming.discard(cid)
            if b.sessions.get(cid) is session:
                b.sessions.pop(cid, None)
        if code is not None:
            d.events.emit("container", "die", cid, {"exitCode": str(code)})
        for h, fut in conns:
            h.close_write()
            h.close()
            assert d.loop is not None
            if fut is not None:
                d.loop.call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))
        b.notify(cid)


def _start(store: "Store", d: "Daemon", key: str) -> tuple[str, bool]:
    """Start; (id, whether it was already running)."""
    import runtime

    c = store.containers.get(key)
    got = runtime.describe(store, c)
    if got is None:
        raise NotFound(f"no such container: {key}")
    c, st = got
    if st.Status == "running":
        return c.id, True
    b = board(d)
    with b.lock:
        conns = b.pending.pop(c.id, [])
        b.exits.pop(c.id, None)
        feeder = b.stdin.pop(c.id, None) if conns else None
    hc = c.config.get("HostConfig") or {}
    rt = hc.get("Runtime") or d.cfg.runtime
    tty = bool(c.config.get("Tty"))
    stdin: bool | int = False
    pipe_w = -1
    if feeder is not None and c.config.get("OpenStdin") and not tty:  # a terminal's keys go through the monitor
        stdin, pipe_w = os.pipe2(os.O_CLOEXEC)
    try:
        r = runtime.start(store, c.id, runtime=rt, attach=bool(conns) or tty, stdin=stdin,
                          console_size=console_size(hc.get("ConsoleSize")) if tty else None)
    except BaseException:
        if pipe_w >= 0:
            os.close(pipe_w)
        if conns:
            with b.lock:
                b.pending.setdefault(c.id, []).extend(conns)
                if feeder is not None:
                    b.stdin[c.id] = feeder
        raise
    finally:
        if not isinstance(stdin, bool):
            os.close(stdin)  # the monitor has its copy
    if pipe_w >= 0 and feeder is not None:
        threading.Thread(target=feeder.feed, args=(pipe_w,), daemon=True, name="lamina-stdin").start()
    if tty and r.attachment is not None:
        assert d.loop is not None
        live: list[tuple[Hijacked, asyncio.Future[None] | None]] = list(conns)
        session = Session(r.attachment, live, d.loop)
        with b.lock:
            b.streaming.add(c.id)
            b.sessions[c.id] = session
        if feeder is not None and c.config.get("OpenStdin"):
            session.keys_from(feeder)
        d.pool.submit(_run_attached, d, c.id, r, live, session)
    elif conns:
        with b.lock:
            b.streaming.add(c.id)
        d.pool.submit(_run_attached, d, c.id, r, conns)
    return c.id, False


async def start(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    cid, already = await d.call(_start, d, id)
    if already:
        return wire.no_content(304)
    d.events.emit("container", "start", cid)
    board(d).notify(cid)
    return wire.no_content(204)


async def stop(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    import runtime

    t = wire.qint(request, "t")
    if t is None:
        t = wire.qint(request, "timeout")

    def do(store: "Store") -> tuple[str, bool]:
        c = store.containers.get(id)
        got = runtime.describe(store, c)
        if got is None or got[1].Status not in ACTIVE:
            return c.id, False
        runtime.stop(store, c.id, timeout=float(t) if t is not None and t >= 0 else None)  # None: the record's StopTimeout
        return c.id, True

    cid, did = await d.call(do)
    if not did:
        return wire.no_content(304)
    d.events.emit("container", "stop", cid)
    board(d).notify(cid)
    return wire.no_content(204)


async def restart(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    import runtime

    t = wire.qint(request, "t")

    def do(store: "Store") -> str:
        c = store.containers.get(id)
        runtime.stop(store, c.id, timeout=float(t if t is not None and t >= 0 else 10))
        return c.id

    cid = await d.call(do)
    await d.call(_start, d, cid)
    d.events.emit("container", "restart", cid)
    board(d).notify(cid)
    return wire.no_content(204)


def _gone_or_exited(store: "Store", key: str, timeout: float) -> bool:
    import runtime

    end = time.monotonic() + timeout
    while True:
        try:
            got = runtime.describe(store, store.containers.get(key))
        except NotFound:
            return True
        if got is None or got[1].Status not in ACTIVE:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)


def _kill(store: "Store", key: str, sig: str) -> "Container":
    """Docker's kill: a container that is not running is a conflict; SIGKILL returns once the
    container has exited (so a second kill right after says "not running", as Docker does)."""
    import runtime
    from graph.errors import LaminaError

    try:
        c = runtime.kill(store, key, sig)
    except Conflict:
        raise
    except LaminaError:
        # it was exiting while we looked: the runtime no longer knows it
        if _gone_or_exited(store, key, 2.0):
            raise Conflict(f"container {key} is not running") from None
        raise
    if runtime.signal_number(sig) == signal.SIGKILL:
        _gone_or_exited(store, key, 10.0)
    return c


async def kill(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    import runtime

    sig = request.query.get("signal") or "KILL"
    c = await d.call(_kill, id, sig)
    d.events.emit("container", "kill", c.id, {"signal": sig})
    board(d).notify(c.id)
    return wire.no_content(204)


async def pause(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    import runtime

    c = await d.call(lambda s: runtime.pause(s, id))
    d.events.emit("container", "pause", c.id)
    return wire.no_content(204)


async def unpause(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    import runtime

    c = await d.call(lambda s: runtime.unpause(s, id))
    d.events.emit("container", "unpause", c.id)
    return wire.no_content(204)


# ---- wait -----------------------------------------------------------------------------------------
def _look(store: "Store", cid: str) -> tuple[bool, str, int, int]:
    """(exists, status, exit code, finished ns), reconciled."""
    import runtime

    try:
        c = store.containers.get(cid)
    except NotFound:
        return False, "removed", 0, 0
    got = runtime.describe(store, c)
    if got is None:
        return False, "removed", 0, 0
    st = got[1]
    return True, st.Status, st.ExitCode, st.FinishedAt


async def wait(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    cond = request.query.get("condition") or "not-running"
    if cond not in ("not-running", "next-exit", "removed"):
        raise ApiError(400, f"invalid condition {cond!r}")
    cid = await d.call(lambda s: s.containers.get(id).id)
    b = board(d)
    ev = b.changed.setdefault(cid, asyncio.Event())
    t0 = time.time_ns()
    resp = await wire.stream(request)
    await resp.drain()
    code = 0
    last_code = 0
    try:
        while True:
            ev.clear()
            exists, status, code, finished = await d.call(_look, cid)
            if exists:
                last_code = code
            with b.lock:
                daemon_code = b.exits.get(cid)
                ours = cid in b.streaming
            if ours and (not exists or status not in ACTIVE):
                # our own attached run is recording the exit (and removing an --rm container):
                # its exit code comes with the notification
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ev.wait(), 0.1)
                continue
            fresh_daemon_exit = daemon_code is not None and daemon_code[1] >= t0
            if cond == "not-running" and (not exists or status not in ACTIVE):
                break
            if cond == "next-exit" and (not exists or fresh_daemon_exit
                                        or (status == "exited" and finished >= t0)):
                break
            if cond == "removed" and not exists:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ev.wait(), 0.1)
    finally:
        pass
    with b.lock:
        final = b.exits.get(cid)
    if not exists:
        code = final[0] if final is not None else last_code
    await resp.write(json.dumps({"StatusCode": code, "Error": None}).encode() + b"\n")
    await resp.write_eof()
    return resp


# ---- logs, attach ---------------------------------------------------------------------------------
def _parse_since(v: str | None) -> float | None:
    if not v or v == "0":
        return None
    try:
        return float(v)
    except ValueError:
        raise ApiError(400, f"invalid time {v!r}") from None


def _entry_time(rfc: str) -> float:
    from lamina.daemon.images import unix_time

    # whole seconds are enough for since/until (Docker's CLI sends seconds.nanoseconds)
    return float(unix_time(rfc))


def _stream_logs(store: "Store", key: str, out: Any, *, stdout: bool, stderr: bool, follow: bool,
                 tail: int | None, timestamps: bool, since: float | None, until: float | None,
                 raw: bool = False) -> None:
    """The log entries to ``out`` in frames of the multiplexed stream, or as they are with
    ``raw`` (a terminal container's: one stream, as Docker sends it)."""
    import runtime

    for e in runtime.log_entries(store, key, follow=follow, tail=tail):
        if e.stream == "stdout" and not stdout or e.stream == "stderr" and not stderr:
            continue
        if since is not None or until is not None:
            t = _entry_time(e.time)
            if since is not None and t < int(since):
                continue
            if until is not None and t > until:
                break
        data = e.text.encode()
        if timestamps:
            data = f"{e.time} ".encode() + data
        out.write(data if raw else wire.frame(wire.STDERR if e.stream == "stderr" else wire.STDOUT, data))


async def logs(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    stdout, stderr = wire.qbool(request, "stdout"), wire.qbool(request, "stderr")
    if not stdout and not stderr:
        raise ApiError(400, "you must choose at least one stream")
    tail_s = request.query.get("tail", "all")
    tail: int | None = None
    if tail_s and tail_s != "all":
        try:
            tail = max(0, int(tail_s))
        except ValueError:
            raise ApiError(400, f"invalid tail {tail_s!r}") from None
    cid, tty = await d.call(lambda s: _id_tty(s.containers.get(id)))
    resp = await wire.stream(request, wire.RAW_STREAM if tty else wire.MULTIPLEXED)
    assert d.loop is not None
    w = wire.ThreadWriter(d.loop, resp)
    try:
        await d.call(_stream_logs, cid, w, stdout=stdout, stderr=stderr, follow=wire.qbool(request, "follow"),
                     tail=tail, timestamps=wire.qbool(request, "timestamps"),
                     since=_parse_since(request.query.get("since")), until=_parse_since(request.query.get("until")),
                     raw=tty)
    except (ConnectionResetError, RuntimeError):
        return resp
    await resp.write_eof()
    return resp


def _id_tty(c: "Container") -> tuple[str, bool]:
    return c.id, bool(c.config.get("Tty"))


def _describe(store: "Store", key: str) -> tuple[str, str, bool]:
    """(id, status, whether it has a terminal), reconciled."""
    import runtime

    c = store.containers.get(key)
    got = runtime.describe(store, c)
    if got is None:
        raise NotFound(f"no such container: {key}")
    return got[0].id, got[1].Status, bool(got[0].config.get("Tty"))


async def attach(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    cid, status, tty = await d.call(_describe, id)
    stream_ = wire.qbool(request, "stream")
    with_logs = wire.qbool(request, "logs")
    resp, h = await wire.hijack(request, tty=tty)
    assert d.loop is not None
    try:
        if with_logs:
            w = _HijackWriter(h)
            await d.call(_stream_logs, cid, w, stdout=wire.qbool(request, "stdout"), stderr=wire.qbool(request, "stderr"),
                         follow=False, tail=None, timestamps=False, since=None, until=None, raw=tty)
        if not stream_:
            return resp
        b = board(d)
        with b.lock:
            session = b.sessions.get(cid)
        if session is not None:  # a terminal container this daemon drives: output from now on, keys
            fut_s: asyncio.Future[None] = d.loop.create_future()
            if session.add(h, fut_s, stdin=wire.qbool(request, "stdin")):
                await fut_s
                return resp
        if status in ("created", "exited"):
            fut: asyncio.Future[None] = d.loop.create_future()
            b = board(d)
            with b.lock:
                b.pending.setdefault(cid, []).append((h, fut))
                if wire.qbool(request, "stdin"):
                    b.stdin[cid] = h
            try:
                await fut
            finally:
                with b.lock:
                    lst = b.pending.get(cid, [])
                    b.pending[cid] = [p for p in lst if p[1] is not fut]
                    if b.stdin.get(cid) is h:
                        del b.stdin[cid]
            return resp
        # running: follow its output from now on
        await d.call(_stream_logs, cid, _HijackWriter(h), stdout=wire.qbool(request, "stdout"),
                     stderr=wire.qbool(request, "stderr"), follow=True, tail=0, timestamps=False,
                     since=None, until=None, raw=tty)
        return resp
    finally:
        h.close_write()
        h.close()


class _HijackWriter:
    """A ``write`` of whole frames (as ``_stream_logs`` makes them) to a hijacked connection."""

    def __init__(self, h: Hijacked) -> None:
        self.h = h

    def write(self, framed: bytes) -> int:
        if self.h.closed:
            raise ConnectionResetError("client gone")
        try:
            self.h.sock.sendall(framed)
        except OSError:
            self.h.closed = True
            raise ConnectionResetError("client gone") from None
        return len(framed)


async def resize(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    """``/containers/{id}/resize?h=ROWS&w=COLS``: the pty of a terminal container this daemon
    drives (``lamina.daemon.terminals``); a running container without one is left as it is."""
    rows, cols = wire.qint(request, "h", 0), wire.qint(request, "w", 0)
    if not rows or not cols or rows < 0 or cols < 0 or rows > 65535 or cols > 65535:
        raise ApiError(400, f"invalid terminal size {rows}x{cols}")
    cid, status, _tty = await d.call(_describe, id)
    if status not in ACTIVE:
        raise ApiError(409, f"Container {cid} is not running")
    b = board(d)
    with b.lock:
        session = b.sessions.get(cid)
    if session is not None:
        session.resize(rows, cols)
    return wire.no_content(200)


# ---- remove, rename, prune ------------------------------------------------------------------------
async def remove(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    import runtime

    force = wire.qbool(request, "force")
    c = await d.call(lambda s: runtime.remove(s, id, force=force))
    d.events.emit("container", "destroy", c.id, {"name": c.name})
    board(d).notify(c.id)
    return wire.no_content(204)


async def rename(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    name = request.query.get("name")
    if not name:
        raise ApiError(400, "name is required")

    def do(store: "Store") -> "Container":
        return store.containers.rename(store.containers.get(id), name.lstrip("/"))

    c = await d.call(do)
    d.events.emit("container", "rename", c.id, {"name": c.name})
    return wire.no_content(204)


def _prune(store: "Store") -> dict[str, Any]:
    import runtime

    gone, reclaimed = [], 0
    for c, st in runtime.list_reconciled(store):
        if st.Status in ACTIVE:
            continue
        with contextlib.suppress(Exception):
            size = store.containers.size(c)
            runtime.remove(store, c.id)
            gone.append(c.id)
            reclaimed += size
    return {"ContainersDeleted": gone or None, "SpaceReclaimed": reclaimed}


async def prune(d: "Daemon", request: web.Request) -> web.StreamResponse:
    got = await d.call(_prune)
    for cid in got["ContainersDeleted"] or []:
        d.events.emit("container", "destroy", cid)
    return wire.json_response(got)


# ---- stats, top -----------------------------------------------------------------------------------
def _system_cpu_ns() -> int:
    with open("/proc/stat", encoding="ascii") as f:
        parts = f.readline().split()[1:8]
    return sum(int(p) for p in parts) * 1_000_000_000 // CLK_TCK


def _sample(store: "Store", key: str) -> tuple["Container", Any, int]:
    import runtime

    c, s = runtime.stats(store, key)
    return c, s, _system_cpu_ns()


def stats_doc(c: "Container", s: Any, sys_ns: int, pre: Any, pre_sys: int) -> dict[str, Any]:
    ncpu = os.cpu_count() or 1

    def cpu(x: Any, sysn: int) -> dict[str, Any]:
        return {"cpu_usage": {"total_usage": (x.cpu_ns or 0) if x else 0, "usage_in_kernelmode": 0,
                              "usage_in_usermode": 0},
                "system_cpu_usage": sysn, "online_cpus": ncpu,
                "throttling_data": {"periods": 0, "throttled_periods": (x.throttled_periods or 0) if x else 0,
                                    "throttled_time": 0}}

    mem: dict[str, Any] = {}
    if s is not None and s.memory is not None:
        mem = {"usage": s.memory, "limit": s.memory_limit or _mem_total(),
               "stats": {"total_inactive_file": s.memory_cache or 0, "inactive_file": s.memory_cache or 0},
               "failcnt": s.oom_kills or 0}
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000000Z"
    return {
        "read": now, "preread": now if pre is not None else "0001-01-01T00:00:00Z",
        "pids_stats": {"current": s.pids or 0, **({"limit": s.pids_limit} if s and s.pids_limit else {})} if s else {},
        "blkio_stats": {"io_service_bytes_recursive": None, "io_serviced_recursive": None},
        "num_procs": 0, "storage_stats": {},
        "cpu_stats": cpu(s, sys_ns), "precpu_stats": cpu(pre, pre_sys) if pre is not None else {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "memory_stats": mem, "name": "/" + c.name, "id": c.id,
    }


def _mem_total() -> int:
    from lamina.daemon.hostinfo import mem_total as total

    return total()


async def stats(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    streaming = wire.qbool(request, "stream", True)
    one_shot = wire.qbool(request, "one-shot")
    c, s, sysn = await d.call(_sample, id)
    if not streaming:
        pre, pre_sys = None, 0
        if not one_shot and s is not None:
            await asyncio.sleep(0.5)
            pre, pre_sys = s, sysn
            c, s, sysn = await d.call(_sample, id)
        return wire.json_response(stats_doc(c, s, sysn, pre, pre_sys))
    resp = await wire.stream(request)
    pre, pre_sys = None, 0
    try:
        while True:
            await resp.write(json.dumps(stats_doc(c, s, sysn, pre, pre_sys)).encode() + b"\n")
            if s is None:
                break
            await asyncio.sleep(1.0)
            pre, pre_sys = s, sysn
            c, s, sysn = await d.call(_sample, id)
    except (ConnectionResetError, NotFound):
        return resp
    await resp.write_eof()
    return resp


def _procs(store: "Store", key: str) -> list[int]:
    import runtime
    from runtime import inspection as rc

    c = store.containers.get(key)
    got = runtime.describe(store, c)
    if got is None or got[1].Status not in ACTIVE:
        raise Conflict(f"container {key} is not running")
    cg = rc.cgroup_of(got[0])
    dirs = [p for p in [*cg.v1.values(), *([cg.v2] if getattr(cg, "v2", None) else [])] if p]
    for d in dirs:
        try:
            with open(os.path.join(d, "cgroup.procs"), encoding="ascii") as f:
                return sorted(int(x) for x in f.read().split())
        except OSError:
            continue
    return [got[1].Pid] if got[1].Pid else []


def _proc_row(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    ppid = rest[1]
    ticks = int(rest[11]) + int(rest[12])
    secs = ticks // CLK_TCK
    t = f"{secs // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"
    name = data[data.find("(") + 1:data.rfind(")")]
    return [str(uid), str(pid), ppid, "0", "", "?", t, cmd or f"[{name}]"]


async def top(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    pids = await d.call(_procs, id)
    rows = [r for r in (_proc_row(p) for p in pids) if r is not None]
    return wire.json_response({"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
                               "Processes": rows})


# ---- changes, export, archive, commit -------------------------------------------------------------
async def changes(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    def do(store: "Store") -> list[dict[str, Any]]:
        c = store.containers.get(id)
        return [{"Path": ch.path, "Kind": int(ch.kind)} for ch in sorted(store.containers.changes(c), key=lambda x: x.path)]

    return wire.json_response(await d.call(do) or None)


async def export(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    cid = await d.call(lambda s: s.containers.get(id).id)
    resp = await wire.stream(request, "application/x-tar")
    assert d.loop is not None
    w = wire.ThreadWriter(d.loop, resp)
    try:
        await d.call(lambda s: s.export(cid, w))  # type: ignore[arg-type]
    except Exception:
        assert request.transport is not None
        request.transport.close()
        raise
    await resp.write_eof()
    d.events.emit("container", "export", cid)
    return resp


class _Rootfs:
    """The container's merged tree, mounted for the block (the mount is refcounted, so a running
    container's own mount is shared, not doubled)."""

    def __init__(self, store: "Store", key: str) -> None:
        self.store = store
        self.c = store.containers.get(key)

    def __enter__(self) -> str:
        return self.store.containers.mount(self.c)

    def __exit__(self, *exc: object) -> None:
        self.store.containers.unmount(self.c)


def _go_mode(st: os.stat_result) -> int:
    """A stat's mode as Go's ``os.FileMode`` (what the docker CLI decodes)."""
    m = statmod.S_IMODE(st.st_mode) & 0o777
    if statmod.S_ISDIR(st.st_mode):
        m |= 1 << 31
    elif statmod.S_ISLNK(st.st_mode):
        m |= 1 << 27
    elif statmod.S_ISFIFO(st.st_mode):
        m |= 1 << 25
    elif statmod.S_ISSOCK(st.st_mode):
        m |= 1 << 24
    elif statmod.S_ISCHR(st.st_mode):
        m |= (1 << 26) | (1 << 21)
    elif statmod.S_ISBLK(st.st_mode):
        m |= 1 << 26
    if st.st_mode & statmod.S_ISUID:
        m |= 1 << 23
    if st.st_mode & statmod.S_ISGID:
        m |= 1 << 22
    if st.st_mode & statmod.S_ISVTX:
        m |= 1 << 20
    return m


def _path_stat(root: str, path: str) -> tuple[str, dict[str, Any]]:
    real = resolve(root, path, follow_last=False)
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        raise NotFound(f"Could not find the file {path} in container") from None
    link = ""
    if statmod.S_ISLNK(st.st_mode):
        link = os.readlink(real)
        # docker cp follows a final symlink for the copy: stat says what the link is
    name = os.path.basename(path.rstrip("/")) or "/"
    return real, {"name": name, "size": st.st_size, "mode": _go_mode(st),
                  "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)), "linkTarget": link}


def _stat_header(doc: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


async def archive_head(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    path = request.query.get("path")
    if not path:
        raise ApiError(400, "path is required")

    def do(store: "Store") -> dict[str, Any]:
        with _Rootfs(store, id) as root:
            return _path_stat(root, path)[1]

    doc = await d.call(do)
    return web.Response(status=200, headers={"X-Docker-Container-Path-Stat": _stat_header(doc)})


def _write_archive(store: "Store", key: str, path: str, out: Any, started: "threading.Event",
                   header: list[dict[str, Any]]) -> None:
    with _Rootfs(store, key) as root:
        real, doc = _path_stat(root, path)
        if doc["linkTarget"] and not path.endswith("/."):
            real = resolve(root, path)  # copy what the link points at, named as the link
            if not os.path.lexists(real):
                raise NotFound(f"Could not find the file {path} in container")
        header.append(doc)
        started.set()
        name = os.path.basename(path.rstrip("/")) or "."
        if path.endswith("/.") or path.endswith("/./"):
            name = "."
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            tf.add(real, arcname=name, recursive=True)


async def archive_get(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    path = request.query.get("path")
    if not path:
        raise ApiError(400, "path is required")

    def stat_only(store: "Store") -> dict[str, Any]:
        with _Rootfs(store, id) as root:
            return _path_stat(root, path)[1]

    doc = await d.call(stat_only)  # 404 before the stream starts
    resp = await wire.stream(request, "application/x-tar", {"X-Docker-Container-Path-Stat": _stat_header(doc)})
    assert d.loop is not None
    w = wire.ThreadWriter(d.loop, resp)
    try:
        await d.call(_write_archive, id, path, w, threading.Event(), [])
    except Exception:
        assert request.transport is not None
        request.transport.close()
        raise
    await resp.write_eof()
    return resp


def _extract(store: "Store", key: str, path: str, tar_path: str) -> None:
    with _Rootfs(store, key) as root:
        dest = resolve(root, path)
        if not os.path.isdir(dest):
            if os.path.lexists(dest):
                raise InvalidInput(f"extraction point is not a directory: {path}")
            raise NotFound(f"Could not find the file {path} in container")
        try:
            with tarfile.open(tar_path, mode="r:*") as tf:
                # the "data" filter refuses absolute names, "..", links leaving the target and
                # device files; the target's own symlinks cannot lead out (real paths checked)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest, filter="data")
                else:  # Python before 3.11.4 (Debian 12's 3.11.2) has no extraction filters
                    tf.extractall(dest, members=_checked_members(tf, dest))
        except tarfile.TarError as e:
            raise InvalidInput(f"bad archive: {e}") from None


def _checked_members(tf: tarfile.TarFile, dest: str) -> list[tarfile.TarInfo]:
    """The "data" filter's refusals, for a Python without it: absolute names, ``..`` out of
    ``dest``, links whose target leaves ``dest``, device files; setuid/setgid bits dropped."""
    top = os.path.realpath(dest)

    def inside(p: str) -> bool:
        return os.path.commonpath([top, os.path.realpath(p)]) == top

    out = []
    for m in tf.getmembers():
        name = m.name
        if os.path.isabs(name) or not inside(os.path.join(top, name)):
            raise tarfile.TarError(f"{m.name!r} would be extracted outside the destination")
        if m.isdev():
            raise tarfile.TarError(f"{m.name!r} is a device file")
        if m.issym():
            target = os.path.join(top, os.path.dirname(name), m.linkname)
            if os.path.isabs(m.linkname) or not inside(target):
                raise tarfile.TarError(f"{m.name!r} links outside the destination")
        if m.islnk() and (os.path.isabs(m.linkname) or not inside(os.path.join(top, m.linkname))):
            raise tarfile.TarError(f"{m.name!r} links outside the destination")
        m.mode &= 0o1777
        out.append(m)
    return out


async def archive_put(d: "Daemon", request: web.Request, id: str) -> web.StreamResponse:
    path = request.query.get("path")
    if not path:
        raise ApiError(400, "path is required")
    root = await d.call(lambda s: (s.containers.get(id), str(s.root))[1])
    tmp = await wire.spool_body(request, root)
    try:
        await d.call(_extract, id, path, tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return wire.no_content(200)


async def commit(d: "Daemon", request: web.Request) -> web.StreamResponse:
    cont = request.query.get("container")
    if not cont:
        raise ApiError(400, "container is required")
    body = await wire.json_body(request, optional=True)
    repo = request.query.get("repo") or ""
    tag_ = request.query.get("tag") or ""
    ref = f"{repo}:{tag_ or 'latest'}" if repo else None
    changes = None
    if isinstance(body, dict) and body:
        keep = ("Cmd", "Entrypoint", "Env", "WorkingDir", "User", "Labels", "ExposedPorts", "StopSignal", "Volumes")
        changes = {k: body[k] for k in keep if body.get(k) is not None}
        changes = changes or None
    for change in request.query.getall("changes", []):
        changes = dict(changes or {})
        _apply_change(changes, change)

    def do(store: "Store") -> str:
        img = store.commit(cont, ref, message=request.query.get("comment") or "",
                           author=request.query.get("author") or "", changes=changes)
        return str(img.id)

    iid = await d.call(do)
    d.events.emit("container", "commit", cont, {"image": ref or iid})
    return wire.json_response({"Id": iid}, 201)


def _apply_change(changes: dict[str, Any], line: str) -> None:
    """One Dockerfile-like ``--change`` line (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL)."""
    word, _, rest = line.strip().partition(" ")
    word = word.upper()
    rest = rest.strip()

    def argv() -> list[str]:
        if rest.startswith("["):
            v = json.loads(rest)
            return [str(x) for x in v]
        return ["/bin/sh", "-c", rest]

    if word == "CMD":
        changes["Cmd"] = argv()
    elif word == "ENTRYPOINT":
        changes["Entrypoint"] = argv()
    elif word == "ENV":
        k, eq, v = rest.partition("=")
        if not eq:
            k, _, v = rest.partition(" ")
        changes.setdefault("Env", []).append(f"{k.strip()}={v.strip()}")
    elif word == "WORKDIR":
        changes["WorkingDir"] = rest
    elif word == "USER":
        changes["User"] = rest
    elif word == "LABEL":
        k, _, v = rest.partition("=")
        changes.setdefault("Labels", {})[k.strip()] = v.strip().strip('"')
    else:
        raise ApiError(400, f"unsupported change {word}")


ROUTES = [
    ("POST", r"/containers/create", create),
    ("GET", r"/containers/json", list_),
    ("POST", r"/containers/prune", prune),
    ("POST", r"/commit", commit),
    ("GET", r"/containers/(?P<id>[^/]+)/json", inspect),
    ("POST", r"/containers/(?P<id>[^/]+)/start", start),
    ("POST", r"/containers/(?P<id>[^/]+)/stop", stop),
    ("POST", r"/containers/(?P<id>[^/]+)/restart", restart),
    ("POST", r"/containers/(?P<id>[^/]+)/kill", kill),
    ("POST", r"/containers/(?P<id>[^/]+)/pause", pause),
    ("POST", r"/containers/(?P<id>[^/]+)/unpause", unpause),
    ("POST", r"/containers/(?P<id>[^/]+)/wait", wait),
    ("GET", r"/containers/(?P<id>[^/]+)/logs", logs),
    ("POST", r"/containers/(?P<id>[^/]+)/attach", attach),
    ("POST", r"/containers/(?P<id>[^/]+)/resize", resize),
    ("POST", r"/containers/(?P<id>[^/]+)/rename", rename),
    ("GET", r"/containers/(?P<id>[^/]+)/stats", stats),
    ("GET", r"/containers/(?P<id>[^/]+)/top", top),
    ("GET", r"/containers/(?P<id>[^/]+)/changes", changes),
    ("GET", r"/containers/(?P<id>[^/]+)/export", export),
    ("HEAD", r"/containers/(?P<id>[^/]+)/archive", archive_head),
    ("GET", r"/containers/(?P<id>[^/]+)/archive", archive_get),
    ("PUT", r"/containers/(?P<id>[^/]+)/archive", archive_put),
    ("DELETE", r"/containers/(?P<id>[^/]+)", remove),
]
