"""The daemon's life and its front: listeners, routing with the ``/v1.xx/`` prefix and version
negotiation, Docker's error bodies, worker threads, reconciliation on start, clean stop.

Library: aiohttp's server (``web.UnixSite``, ``web.TCPSite``, ``StreamResponse``). It is
asyncio-native and well kept, serves unix sockets directly, streams responses with back-pressure,
bounds request lines and headers in its parser, and its HTTP parser already understands
``Upgrade: tcp`` (the request's remaining bytes are kept for the upgraded protocol), which is the
one thing Docker's attach and exec need that a WSGI server cannot give.

Concurrency: the event loop only parses, routes and streams. Every store or runtime call runs in
a worker thread with that thread's own ``Store`` (opened once per thread, like one CLI process
each: the store's locks are ``flock``s, which work between open files as between processes), so
a long pull never blocks ``docker ps``. A handler's exception becomes an HTTP error; nothing a
request does can stop the daemon.

Stop: SIGTERM or SIGINT closes the listeners and exits. Containers keep running under their
monitors (Docker's live restore): an attached client's stream ends, and the monitor, seeing its
caller gone, records the exit itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import re
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from graph.errors import AlreadyExists, Conflict, InvalidInput, LaminaError, NotFound, Unsupported
from lamina.daemon import wire
from lamina.daemon.config import DaemonConfig, parse_host
from lamina.daemon.context import API_MAX, API_MIN, API_VERSION, MIN_API_VERSION, Daemon
from lamina.daemon.wire import ApiError

if TYPE_CHECKING:
    from graph import Store

log = logging.getLogger("lamina.daemon")

VERSION_RE = re.compile(r"/v(\d+)\.(\d+)(/.*)")
MAX_FIELD = 64 << 10  # X-Registry-Auth holds base64 JSON credentials: a few KiB at most
MAX_HEADERS = 100

def dispatcher(d: Daemon) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def dispatch(request: web.Request) -> web.StreamResponse:
            path = request.path
            m = VERSION_RE.fullmatch(path)
            version = API_MAX
            if m is not None:
                version = (int(m.group(1)), int(m.group(2)))
                path = m.group(3)
                if version > API_MAX:
                    return wire.error_response(400, f"client version {version[0]}.{version[1]} is too new. "
                                                    f"Maximum supported API version is {API_VERSION}")
                if version < API_MIN:
                    return wire.error_response(400, f"client version {version[0]}.{version[1]} is too old. "
                                                    f"Minimum supported API version is {MIN_API_VERSION}, "
                                                    "please upgrade your client to a newer version")
            request["api_version"] = version
            allowed = False
            for method, rx, handler in d.routes:
                mm = rx.fullmatch(path)
                if mm is None:
                    continue
                if method != request.method and not (method == "GET" and request.method == "HEAD"):
                    allowed = True
                    continue
                try:
                    return await handler(d, request, **mm.groupdict())
                except ApiError as e:
                    return wire.error_response(e.status, e.message)
                except LaminaError as e:
                    return wire.error_response(status_of(e), _one_line(str(e)) or type(e).__name__)
                except (ConnectionResetError, BrokenPipeError, asyncio.CancelledError):
                    raise
                except web.HTTPException:
                    raise
                except OSError as e:
                    log.warning("%s %s: %s", request.method, request.path, e)
                    return wire.error_response(500, _one_line(f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")))
                except Exception as e:  # noqa: BLE001 - a request never takes the daemon down
                    log.exception("%s %s failed", request.method, request.path)
                    return wire.error_response(500, _one_line(f"{type(e).__name__}: {e}"))
            if allowed:
                return wire.error_response(405, "method not allowed")
            return wire.error_response(404, "page not found")

    return dispatch


def status_of(e: LaminaError) -> int:
    """The HTTP status Docker gives the error's class."""
    from graph.distribution.auth import Unauthorized

    if isinstance(e, NotFound):
        return 404
    if isinstance(e, (AlreadyExists, Conflict)):
        return 409
    if isinstance(e, Unauthorized):
        return 401
    if isinstance(e, (InvalidInput, Unsupported)):
        return 400
    return 500


def _one_line(s: str) -> str:
    return " ".join(s.split())


# ---- app and listeners -----------------------------------------------------------------------------
def build_app(d: Daemon) -> web.Application:
    from lamina.daemon import auth, containers, events, execs, images, networks, system

    for module in (system, images, containers, execs, events, auth, networks):
        d.add_routes(module.ROUTES)

    @web.middleware
    async def headers(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        resp = await handler(request)
        if not resp.prepared:
            resp.headers["Api-Version"] = API_VERSION
            resp.headers["Server"] = f"lamina/{_version()} (linux)"
            resp.headers["Docker-Experimental"] = "false"
            resp.headers["Ostype"] = "linux"
        return resp

    # client_max_size bounds request.read(); every handler reads bodies itself, bounded (wire)
    app = web.Application(middlewares=[headers], client_max_size=wire.MAX_JSON, handler_args={
        "max_field_size": MAX_FIELD, "max_headers": MAX_HEADERS, "max_line_size": 16 << 10,
    })
    app.router.add_route("*", "/{tail:.*}", dispatcher(d))
    return app


def _version() -> str:
    from lamina import __version__

    return __version__


def _docker_gid() -> int:
    try:
        return grp.getgrnam("docker").gr_gid
    except KeyError:
        return 0


def _prepare_socket_path(path: str) -> None:
    """Make the socket's directory; remove a stale socket (nobody answers on it), refuse to take
    over one that a live daemon serves."""
    os.makedirs(os.path.dirname(path) or "/", mode=0o755, exist_ok=True)
    if not os.path.lexists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise Conflict(f"another daemon is listening on {path}")


async def serve(d: Daemon, ready: Callable[[], None] | None = None) -> None:
    d.loop = asyncio.get_running_loop()
    d.events.loop = d.loop
    app = build_app(d)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    unix_paths: list[str] = []
    for url in d.cfg.hosts:
        kind, host, port = parse_host(url)
        if kind == "unix":
            _prepare_socket_path(host)
            old = os.umask(0o117)
            try:
                site: web.BaseSite = web.UnixSite(runner, host)
                await site.start()
            finally:
                os.umask(old)
            os.chown(host, 0, _docker_gid())
            os.chmod(host, 0o660)
            unix_paths.append(host)
        else:
            site = web.TCPSite(runner, host, port)
            await site.start()
        log.info("listening on %s", url)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        d.loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    await stop.wait()
    log.info("stopping")
    for p in unix_paths:
        with contextlib.suppress(OSError):
            os.unlink(p)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(runner.cleanup(), 3.0)


def reconcile(d: Daemon) -> None:
    """Bring the store in line with reality before serving (containers that ended or whose
    monitor died while no daemon ran; runtime state nobody owns)."""
    import runtime

    store = d.store()
    runtime.reconcile_all(store)
    d.ident = _ident(store)


def _ident(store: "Store") -> str:
    """A stable ID for this root (Docker's ``ID`` in ``/info``), kept in the root."""
    path = store.root / "daemon-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        import secrets

        ident = secrets.token_hex(16)
        tmp = path.with_name(f".daemon-id.{os.getpid()}")
        tmp.write_text(ident + "\n")
        os.replace(tmp, path)
        return ident


def main(cfg: DaemonConfig) -> int:
    """Run the daemon until SIGTERM; the exit code."""
    logging.basicConfig(level={"warn": "WARNING", "fatal": "CRITICAL"}.get(cfg.log_level, cfg.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0:
        log.warning("not running as root: containers will not start")
    d = Daemon(cfg)
    d.pool.submit(reconcile, d).result()
    try:
        asyncio.run(serve(d, ready=lambda: log.info("API %s-%s ready", MIN_API_VERSION, API_VERSION)))
    finally:
        d.close_stores()
    logging.shutdown()
    # Worker threads may still be streaming an attached container (runtime.wait blocks): do not
    # wait for them. Their monitors see the connection go and finish the bookkeeping themselves.
    os._exit(0)


__all__ = ["API_VERSION", "Daemon", "main"]
