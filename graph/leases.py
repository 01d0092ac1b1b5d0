"""Leases: what protects the objects an operation is creating (blobs, layers, images) from a
concurrent prune until a reference makes them reachable. Owner of the ``leases`` and
``lease_resources`` tables; other modules hold a resource through ``hold`` (inside their own
transaction, so the object and its lease appear together) and ask ``held``.

A lease names its process (pid); a lease of a process that died is dropped at the next open.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from typing import Callable, Iterator, Literal

from graph.db import DB

Kind = Literal["blob", "layer", "image"]


def hold(c: sqlite3.Connection, lease: str, kind: Kind, key: str) -> None:
    """Add ``key`` to the lease, in the caller's transaction ``c``."""
    c.execute("INSERT OR IGNORE INTO lease_resources (lease, kind, key) VALUES (?, ?, ?)", (lease, kind, key))


def holders(c: sqlite3.Connection | DB, kind: Kind, key: str) -> int:
    """How many leases hold ``key`` (in the caller's transaction, or on its own)."""
    sql = "SELECT count(*) AS n FROM lease_resources WHERE kind = ? AND key = ?"
    row = c.one(sql, (kind, key)) if isinstance(c, DB) else c.execute(sql, (kind, key)).fetchone()
    return int(row["n"]) if row is not None else 0


class Leases:
    """The leases of one store's database."""

    def __init__(self, db: DB) -> None:
        self.db = db

    @contextlib.contextmanager
    def lease(self) -> Iterator[str]:
        """A new lease for the block's life; yields its id."""
        lid = os.urandom(8).hex()
        with self.db.transaction() as c:
            c.execute("INSERT INTO leases (id, pid, created) VALUES (?, ?, ?)", (lid, os.getpid(), time.time()))
        try:
            yield lid
        finally:
            with self.db.transaction() as c:
                c.execute("DELETE FROM leases WHERE id = ?", (lid,))

    def hold(self, lease: str, kind: Kind, key: str) -> None:
        """Add ``key`` to the lease in a transaction of its own."""
        with self.db.transaction() as c:
            hold(c, lease, kind, key)

    def held(self, kind: Kind) -> set[str]:
        """Every key of ``kind`` some lease holds."""
        return {r["key"] for r in self.db.query("SELECT key FROM lease_resources WHERE kind = ?", (kind,))}

    def drop_dead(self, alive: Callable[[int], bool]) -> list[str]:
        """Drop the leases whose process is gone (``alive(pid)`` False); their resources go with
        them (ON DELETE CASCADE). Returns their ids; takes the write lock only if there are any."""
        dead = [r["id"] for r in self.db.query("SELECT id, pid FROM leases") if not alive(r["pid"])]
        if dead:
            with self.db.transaction() as c:
                c.executemany("DELETE FROM lease_resources WHERE lease = ?", [(d,) for d in dead])
                c.executemany("DELETE FROM leases WHERE id = ?", [(d,) for d in dead])
        return dead

    def live_starts(self, alive: Callable[[int], bool]) -> list[float]:
        """When each lease of a live process began (``time.time()``): the garbage collector keeps
        blobs younger than the oldest (``graph.gc``)."""
        return [r["created"] for r in self.db.query("SELECT pid, created FROM leases") if alive(r["pid"])]
