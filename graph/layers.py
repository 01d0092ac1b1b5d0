"""The layer store: read-only layers keyed by ChainID, and containers' read-write layers.

The model (moby's ``layer`` package): a read-only layer is an applied tar on a parent; its
identity is its ChainID (the DiffIDs of it and every layer under it), so two images that share a
stack share its layers. The driver keeps the data under a random cache-id; only this module maps
ChainIDs to cache-ids.

Who needs a layer is *derived*, not counted: an image whose top it is, a layer whose parent it
is, a container on it, or a lease of an operation in flight. ``references`` counts those rows, and
``release`` removes a layer (and then its parents, in turn) only when the count is zero. A stored
counter could drift after a crash; a count of rows cannot.

Writes follow one rule (STYLE.md 5, 6): data first, metadata last, and every piece of driver
data that is not yet (or no longer) recorded has a row in ``pending`` from before it exists until
after it is gone. ``recover`` removes the data of pending rows whose process died, which rolls
back any interrupted register or release.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import types
from typing import BinaryIO, Callable, Iterator

from drivers.base import CacheID, Change, Driver, HeldCounts, KeptCounts, LayerListing, new_cache_id
from drivers.sys.proc import pid_alive
from drivers.sys.record import Frozen
from graph import leases
from graph.db import DB
from graph.digest import ChainID, DiffID, Digest, chain_id
from graph.errors import Bug, DigestMismatch, NotFound
from graph.verify import HashingReader


# Fault-injection points for crash tests: a test sets ``crash_hook`` to a function that kills
# the process when called with a chosen step name. None in production (one attribute check).
crash_hook: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if crash_hook is not None:
        crash_hook(name)


class Layer(Frozen):
    """A read-only layer as recorded."""

    __slots__ = ("chain_id", "diff_id", "parent", "cache_id", "size", "created")
    chain_id: ChainID
    diff_id: DiffID
    parent: ChainID | None
    cache_id: CacheID
    size: int
    created: float




class LayerStore:
    """Read-only layers by ChainID and read-write layers by cache-id, over one driver."""

    def __init__(self, db: DB, driver: Driver | Callable[[], Driver]) -> None:
        """``driver``: the driver, or a function that opens it on first use (a store opened
        for reading lists layers from its rows without opening the driver)."""
        self.db = db
        self._driver: Driver | None = None
        self._open: Callable[[], Driver] | None = None
        if isinstance(driver, (types.FunctionType, types.MethodType)):
            self._open = driver
        else:
            self._driver = driver

    @property
    def driver(self) -> Driver:
        if self._driver is None:
            assert self._open is not None
            self._driver = self._open()
        return self._driver

    # ---- lookups -------------------------------------------------------------------------
    @staticmethod
    def _row(r: object) -> Layer:
        return Layer(
            chain_id=ChainID(Digest(r["chain_id"])),  # type: ignore[index]
            diff_id=DiffID(Digest(r["diff_id"])),  # type: ignore[index]
            parent=ChainID(Digest(r["parent"])) if r["parent"] else None,  # type: ignore[index]
            cache_id=CacheID(r["cache_id"]),  # type: ignore[index]
            size=r["size"],  # type: ignore[index]
            created=r["created"],  # type: ignore[index]
        )

    def get(self, chain: ChainID) -> Layer:
        """The layer with this ChainID. Raises NotFound."""
        r = self.db.one("SELECT * FROM layers WHERE chain_id = ?", (chain,))
        if r is None:
            raise NotFound(f"layer {chain} not found")
        return self._row(r)

    def exists(self, chain: ChainID) -> bool:
        return self.db.one("SELECT 1 FROM layers WHERE chain_id = ?", (chain,)) is not None

    def list(self) -> list[Layer]:
        return [self._row(r) for r in self.db.query("SELECT * FROM layers ORDER BY created")]

    def stack(self, chain: ChainID | None) -> list[Layer]:
        """The layer and all its parents, bottom first."""
        out: list[Layer] = []
        while chain is not None:
            layer = self.get(chain)
            out.append(layer)
            chain = layer.parent
        out.reverse()
        return out

    def _cache(self, chain: ChainID | None) -> CacheID | None:
        return None if chain is None else self.get(chain).cache_id

    # ---- register ------------------------------------------------------------------------
    def _pending_add(self, cid: CacheID) -> None:
        with self.db.transaction() as c:
            c.execute(
                "INSERT INTO pending (cache_id, pid, created) VALUES (?, ?, ?)",
                (cid, os.getpid(), time.time()),
            )

    def _discard(self, cid: CacheID) -> None:
        """Remove driver data that no committed row points at, then its pending row. The removal
        is synced first: a power cut must not bring the data back with no row at all (an orphan
        ``check`` reports; tests/powercut found it once ``orphans`` became real)."""
        self.driver.remove(cid)
        self.driver.sync()
        with self.db.transaction() as c:
            c.execute("DELETE FROM pending WHERE cache_id = ?", (cid,))

    def register(
        self,
        tar: BinaryIO,
        parent: ChainID | None,
        *,
        expected_diff_id: DiffID | None = None,
        lease: str | None = None,
    ) -> Layer:
        """Apply an uncompressed layer tar on ``parent`` and record the layer.

        Requires: ``parent`` is registered (or None).
        Effect: the DiffID is hashed from the stream while the driver applies it; the data is
        synced before the row is written. If a layer with the resulting ChainID exists already
        (an equal stack, maybe registered by another process meanwhile), our copy is thrown away
        and the existing layer is returned: that is success. With ``lease``, the layer is also
        added to that lease so a concurrent prune cannot take it before an image points at it.
        Raises: NotFound (parent), DigestMismatch (``expected_diff_id`` differs; nothing kept),
        InvalidInput (hostile or malformed tar; nothing kept).
        Repeat: registering the same tar again returns the same layer.
        """
        parent_cid = self.get(parent).cache_id if parent is not None else None
        cid = self.prepare(parent_cid)
        try:
            diff_id, size = self.apply_prepared(cid, parent_cid, tar, expected_diff_id=expected_diff_id)
            layer, ours = self.commit_prepared(cid, parent, diff_id, size, lease=lease)
        except BaseException:
            self._discard(cid)
            raise
        if not ours:
            self._discard(cid)  # lost the race or a duplicate: the recorded layer wins
        return layer

    # ---- two-phase register (pulls: apply several layers of a stack at once) ---------------
    #
    # ``register`` in three steps a caller can interleave: ``prepare`` (pending row + empty
    # driver layer on a parent *cache-id*, which may itself be prepared and not yet applied on
    # drivers with ``parallel_apply``), ``apply_prepared`` (fill it, hashing the DiffID), and
    # ``commit_prepared`` once the parent's ChainID is recorded (the ChainID needs it). The
    # pending row exists from before the driver data until the row in ``layers`` replaces it
    # (or ``abort_prepared`` removes the data), so ``recover`` rolls back a crash at any step,
    # exactly as for ``register``.

    def prepare(self, parent_cache: CacheID | None) -> CacheID:
        """Phase 1: an empty read-only driver layer on ``parent_cache``, not yet recorded.

        Requires: ``parent_cache`` is a recorded layer's cache-id or one this process prepared
        (and has not aborted); None for a base layer.
        Effect: a pending row, then ``driver.create``. Returns the new cache-id.
        Raises: NotFound (parent data missing), Unsupported (driver limits); nothing is left.
        Repeat: each call makes a new layer.
        """
        cid = new_cache_id()
        self._pending_add(cid)
        self.create_reserved(cid, parent_cache)
        return cid

    def reserve(self, n: int) -> list[CacheID]:
        """``prepare``'s first half for ``n`` layers at once: ``n`` new cache-ids, their pending
        rows in one transaction (one WAL sync for a whole pull's stack, not one per layer).

        Requires: nothing.  Effect: pending rows, no driver data; ``create_reserved`` makes
        each layer (a cache-id never made is dropped by ``unreserve``, or by ``recover`` after a
        crash: a pending row with no data is just deleted).  Repeat: new cache-ids each time.
        """
        cids = [new_cache_id() for _ in range(n)]
        if cids:
            now, pid = time.time(), os.getpid()
            with self.db.transaction() as c:
                c.executemany("INSERT INTO pending (cache_id, pid, created) VALUES (?, ?, ?)",
                              [(cid, pid, now) for cid in cids])
            _step("register:reserved")
        return cids

    def create_reserved(self, cid: CacheID, parent_cache: CacheID | None) -> None:
        """``prepare``'s second half: the empty driver layer of a reserved cache-id on
        ``parent_cache``. Raises as ``prepare``; on failure the layer and its row are gone."""
        try:
            _step("register:pending")
            self.driver.create(cid, parent_cache)
            _step("register:created")
        except BaseException:
            self._discard(cid)
            raise

    def unreserve(self, cids: list[CacheID]) -> None:
        """Drop reserved cache-ids whose layers were never made (one transaction)."""
        with self.db.transaction() as c:
            c.executemany("DELETE FROM pending WHERE cache_id = ?", [(cid,) for cid in cids])

    @contextlib.contextmanager
    def committing(self) -> Iterator[None]:
        """``commit_prepared`` calls inside the block nest in one transaction: every row becomes
        visible (and durable: one WAL sync) together when the block ends, none if it raises.
        A crash inside leaves every layer pending, which ``recover`` rolls back as for one."""
        with self.db.transaction():
            yield
        _step("register:all-committed")

    def apply_prepared(
        self,
        cid: CacheID,
        parent_cache: CacheID | None,
        tar: BinaryIO,
        *,
        expected_diff_id: DiffID | None = None,
    ) -> tuple[DiffID, int]:
        """Phase 2: apply an uncompressed layer tar to a prepared layer; returns (DiffID, size).

        Requires: ``cid`` came from ``prepare(parent_cache)`` and was not applied; on a driver
        without ``parallel_apply`` the parent's data is complete (applied).
        Effect: the driver applies the tar while it is hashed; the stream is read to its end.
        Raises: DigestMismatch (``expected_diff_id`` differs), InvalidInput (hostile or
        malformed tar); the prepared layer is then unusable: ``abort_prepared`` it.
        Repeat: no; apply once.
        """
        reader = HashingReader(tar)
        size = self.driver.apply_diff(cid, parent_cache, reader)  # type: ignore[arg-type]
        reader.drain()
        _step("register:applied")
        diff_id = DiffID(reader.digest())
        if expected_diff_id is not None and diff_id != expected_diff_id:
            raise DigestMismatch(f"layer DiffID mismatch: expected {expected_diff_id}, got {diff_id}")
        return diff_id, size

    def commit_prepared(
        self,
        cid: CacheID,
        parent: ChainID | None,
        diff_id: DiffID,
        size: int,
        *,
        lease: str | None = None,
        sync: bool = True,
    ) -> tuple[Layer, bool]:
        """Phase 3: record an applied prepared layer as the child of ``parent``.

        Requires: ``parent`` is recorded (or None) and its data is the data ``cid`` was
        prepared on (the caller's business: the same ChainID means the same content).
        Effect: the driver's filesystem is synced (``sync=False``: the caller synced it after
        the last apply), then in one transaction the layer row replaces the pending row. If the
        ChainID is recorded already (another process won), nothing is written and the existing
        layer is returned with False: our data stays pending, and the caller must
        ``abort_prepared`` it once no prepared child still builds on it. With ``lease``, the
        layer joins the lease either way.
        Raises: NotFound (``parent`` not recorded); the prepared layer stays pending.
        Repeat: committing the same cid again returns the recorded layer with False.
        """
        chain = chain_id(parent, diff_id)
        if sync:
            self.driver.sync()
        _step("register:synced")
        with self.db.transaction() as c:
            if parent is not None and c.execute("SELECT 1 FROM layers WHERE chain_id = ?", (parent,)).fetchone() is None:
                raise NotFound(f"layer {chain}: parent {parent} is not registered")
            existing = c.execute("SELECT * FROM layers WHERE chain_id = ?", (chain,)).fetchone()
            if existing is None:
                c.execute(
                    "INSERT INTO layers (chain_id, diff_id, parent, cache_id, size, created)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (chain, diff_id, parent, cid, size, time.time()),
                )
                c.execute("DELETE FROM pending WHERE cache_id = ?", (cid,))
            if lease is not None:
                leases.hold(c, lease, "layer", chain)
        _step("register:committed")
        if existing is not None:
            return self._row(existing), False
        return self.get(chain), True

    def abort_prepared(self, cid: CacheID) -> None:
        """Throw away a prepared layer that was not recorded (failed, or lost to an equal one).

        Requires: no prepared layer that is still wanted was prepared on ``cid``.
        Effect: driver data removed, then the pending row.
        Raises: Conflict (driver refuses: mounted). Refuses with Bug a recorded cache-id.
        Repeat: a no-op for an unknown cid.
        """
        if self.db.one("SELECT 1 FROM layers WHERE cache_id = ?", (cid,)) is not None:
            raise Bug(f"abort_prepared: cache-id {cid} is a recorded layer")
        self._discard(cid)

    # ---- references and release -----------------------------------------------------------
    def hold(self, lease: str, chain: ChainID) -> bool:
        """Add an existing layer to ``lease``; False (and nothing held) if it is not recorded.
        One transaction, so True means a concurrent collection can no longer take it."""
        with self.db.transaction() as c:
            if c.execute("SELECT 1 FROM layers WHERE chain_id = ?", (chain,)).fetchone() is None:
                return False
            leases.hold(c, lease, "layer", chain)
        return True

    def unreferenced(self) -> list[ChainID]:
        """Layers nothing needs (``references`` == 0: no image on top, no child, no container,
        no lease), newest first: what the garbage collector releases."""
        # NOT IN over subqueries: SQLite builds each set once (the columns have no index, and
        # correlated NOT EXISTS made this quadratic: 1.8 ms at 200 layers)
        rows = self.db.query(
            "SELECT chain_id FROM layers WHERE"
            " chain_id NOT IN (SELECT top_layer FROM images WHERE top_layer IS NOT NULL)"
            " AND chain_id NOT IN (SELECT parent FROM layers WHERE parent IS NOT NULL)"
            " AND chain_id NOT IN (SELECT parent_layer FROM containers WHERE parent_layer IS NOT NULL)"
            " AND chain_id NOT IN (SELECT key FROM lease_resources WHERE kind = 'layer')"
            " ORDER BY created DESC"
        )
        return [ChainID(Digest(r["chain_id"])) for r in rows]

    def references(self, chain: ChainID) -> int:
        """Rows that need this layer: images on it, child layers, containers, leases."""
        r = self.db.one(
            "SELECT (SELECT count(*) FROM images WHERE top_layer = :c)"
            " + (SELECT count(*) FROM layers WHERE parent = :c)"
            " + (SELECT count(*) FROM containers WHERE parent_layer = :c)"
            " + (SELECT count(*) FROM lease_resources WHERE kind = 'layer' AND key = :c) AS n",
            {"c": chain},
        )
        assert r is not None
        return int(r["n"])

    def release(self, chain: ChainID) -> list[ChainID]:
        """Remove the layer if nothing needs it, then its parents while nothing needs them.

        Requires: nothing (a layer still needed is simply kept).
        Effect: for each removed layer, the row goes and its cache-id becomes pending in one
        transaction; then the driver data goes; then the pending row. A crash in between leaves a
        pending row that ``recover`` finishes.
        Raises: Conflict if the driver refuses (the layer is mounted).
        Repeat: releasing a missing layer returns [].
        Returns the ChainIDs removed, top first.
        """
        removed: list[ChainID] = []
        current: ChainID | None = chain
        while current is not None:
            with self.db.transaction() as c:
                row = c.execute("SELECT * FROM layers WHERE chain_id = ?", (current,)).fetchone()
                if row is None or self.references(current) > 0:
                    break
                c.execute("DELETE FROM layers WHERE chain_id = ?", (current,))
                c.execute(
                    "INSERT INTO pending (cache_id, pid, created) VALUES (?, ?, ?)",
                    (row["cache_id"], os.getpid(), time.time()),
                )
            _step("release:unrecorded")
            self._discard(CacheID(row["cache_id"]))
            removed.append(current)
            current = ChainID(Digest(row["parent"])) if row["parent"] else None
        return removed

    # ---- read-write layers -----------------------------------------------------------------
    def create_rw(self, parent: ChainID | None) -> CacheID:
        """Make a container layer on ``parent`` and return its cache-id.

        The cache-id is pending until the caller records the container (``commit_rw`` in the
        same transaction as the container row), so a crash in between leaves nothing behind.
        Raises: NotFound (parent).
        """
        parent_cid = self._cache(parent)
        cid = new_cache_id()
        self._pending_add(cid)
        try:
            _step("create_rw:pending")
            self.driver.create_rw(cid, parent_cid)
            # data first, metadata last: the container row that records this cache-id is synced
            # at commit, so the layer's names must be on disk before it (a power cut right after
            # ``create`` left a container whose RW layer was gone: tests/powercut)
            self.driver.sync()
            _step("create_rw:created")
        except BaseException:
            self._discard(cid)
            raise
        return cid

    def orphan_rw(self, conn: sqlite3.Connection, cid: CacheID) -> None:
        """Inside the caller's transaction (the one deleting the RW layer's owning row): the
        layer becomes pending, so a crash before ``remove_rw`` leaves it for ``recover``."""
        conn.execute("INSERT INTO pending (cache_id, pid, created) VALUES (?, ?, ?)", (cid, os.getpid(), time.time()))

    def commit_rw(self, conn: object, cid: CacheID) -> None:
        """Inside the caller's transaction: the RW layer is now owned by a recorded row."""
        conn.execute("DELETE FROM pending WHERE cache_id = ?", (cid,))  # type: ignore[attr-defined]

    def abort_rw(self, cid: CacheID) -> None:
        """Throw away a RW layer that never got recorded."""
        self._discard(cid)

    def remove_rw(self, cid: CacheID) -> None:
        """Inside no transaction: remove a RW layer whose owning row is already gone (the caller
        made it pending in that row's delete transaction)."""
        self._discard(cid)

    def mount(self, cid: CacheID, *, keep: bool = False) -> str:
        """The layer's merged tree (``driver.get``). The count is this process's and goes when
        it ends, crash or not; ``keep``: it stays until an ``unmount`` from any process."""
        path = self.driver.get(cid)
        if keep and isinstance(self.driver, KeptCounts):
            self.driver.keep(cid)
        return path

    def unmount(self, cid: CacheID) -> None:
        self.driver.put(cid)

    def changes(self, cid: CacheID, parent: ChainID | None) -> list[Change]:
        return self.driver.changes(cid, self._cache(parent))

    def diff(self, cid: CacheID, parent: ChainID | None) -> BinaryIO:
        return self.driver.diff(cid, self._cache(parent))

    def diff_size(self, cid: CacheID, parent: ChainID | None) -> int:
        return self.driver.diff_size(cid, self._cache(parent))

    # ---- crash recovery --------------------------------------------------------------------
    def recover(self) -> list[CacheID]:
        """Remove driver data of pending rows whose process is gone (an interrupted register,
        release or container create/remove). Returns the cache-ids removed."""
        done: list[CacheID] = []
        for r in self.db.query("SELECT cache_id, pid FROM pending"):
            if pid_alive(r["pid"]):
                continue
            cid = CacheID(r["cache_id"])
            still_used = self.db.one(
                "SELECT 1 FROM layers WHERE cache_id = ? UNION SELECT 1 FROM containers WHERE cache_id = ?",
                (cid, cid),
            )
            if still_used is not None:
                raise Bug(f"cache-id {cid} is both pending and recorded")
            # A crash may have left it held (mounted); nobody alive can be using a pending layer.
            while self._held(cid):
                self.driver.put(cid)
            self._discard(cid)
            done.append(cid)
        return done

    def interrupted(self) -> list[CacheID]:
        """Pending layers whose process is gone: what ``recover`` rolls back, damage while it
        has not (``Store.check``)."""
        return [CacheID(r["cache_id"]) for r in self.db.query("SELECT cache_id, pid FROM pending")
                if not pid_alive(r["pid"])]

    def in_flight(self) -> list[tuple[CacheID, int]]:
        """Pending layers of live processes, with their pids: operations in progress, a normal
        state (``Store.notes``)."""
        return [(CacheID(r["cache_id"]), int(r["pid"])) for r in self.db.query("SELECT cache_id, pid FROM pending")
                if pid_alive(r["pid"])]

    def records_cache_id(self, cid: CacheID) -> bool:
        """Whether a recorded layer has this cache-id (a prepared layer was committed)."""
        return self.db.one("SELECT 1 FROM layers WHERE cache_id = ?", (cid,)) is not None

    def _held(self, cid: CacheID) -> bool:
        return isinstance(self.driver, HeldCounts) and self.driver.held_count(cid) > 0

    def orphans(self) -> Iterator[CacheID]:
        """Driver layers that no row (layer, container, pending) knows: damage ``check`` reports."""
        if not isinstance(self.driver, LayerListing):
            raise Bug(f"driver {self.driver.name} cannot list its layers (drivers.base.LayerListing)")
        # Listing first, rows second: a creator writes its pending row before the data, so any
        # data listed here has its row by the time the rows are read (no live work looks orphaned).
        ids = self.driver.layer_ids()
        known = {r["cache_id"] for r in self.db.query(
            "SELECT cache_id FROM layers UNION SELECT cache_id FROM containers"
            " UNION SELECT cache_id FROM pending")}
        for cid in ids:
            if cid not in known:
                yield CacheID(cid)
