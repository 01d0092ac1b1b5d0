"""What every API handler gets: the ``Daemon`` (configuration, worker pool with per-thread
stores, and the little the daemon keeps in memory), the API version range, and the routing
table's shape. The handler modules import this, never ``server`` (which imports them)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aiohttp import web

from lamina.daemon.config import DaemonConfig
from lamina.daemon.eventlog import EventLog

if TYPE_CHECKING:
    from graph import Store

API_MIN = (1, 41)
API_MAX = (1, 45)
API_VERSION = "1.45"
MIN_API_VERSION = "1.41"
WORKERS = 64

Handler = Callable[..., Awaitable[web.StreamResponse]]


class Daemon:
    """What handlers share: the configuration, the worker pool with per-thread stores, and the
    little the daemon keeps in memory (events, exec instances, attach connections waiting for a
    start, exit codes of containers it saw end)."""

    def __init__(self, cfg: DaemonConfig) -> None:
        self.cfg = cfg
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="lamina-api")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._local = threading.local()
        self._stores: list[Store] = []
        self._stores_lock = threading.Lock()
        self.events = EventLog()
        self.started = time.time()
        self.ident = ""
        self.state: dict[str, Any] = {}  # per API group, keyed by module name
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []

    # ---- stores and threads --------------------------------------------------------------------
    def store(self) -> "Store":
        """This worker thread's store."""
        s = getattr(self._local, "store", None)
        if s is None:
            from graph import Store

            s = Store(self.cfg.root, driver=self.cfg.driver)
            self._local.store = s
            with self._stores_lock:
                self._stores.append(s)
        return s

    async def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run ``fn(store, *args, **kw)`` in a worker thread."""
        assert self.loop is not None
        return await self.loop.run_in_executor(self.pool, lambda: fn(self.store(), *args, **kw))

    async def blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in a worker thread (no store)."""
        assert self.loop is not None
        return await self.loop.run_in_executor(self.pool, lambda: fn(*args))

    def close_stores(self) -> None:
        with self._stores_lock:
            for s in self._stores:
                with contextlib.suppress(Exception):
                    s.close()
            self._stores.clear()

    # ---- routing --------------------------------------------------------------------------------
    def add_routes(self, table: list[tuple[str, str, Handler]]) -> None:
        for method, pattern, handler in table:
            self.routes.append((method, re.compile(pattern), handler))
