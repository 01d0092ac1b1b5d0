"""The garbage collector: removal is a roll-forward, and this module finishes it.

Why
---
Removing an image touches three stores (metadata, driver data, blobs) that cannot share one
transaction. So the user-visible step of a removal is one SQLite transaction (``rmi``: the
references and the image row go together; ``rm``: the container row), and everything that
step leaves unreferenced is *garbage*, collected here by mark and sweep, the way containerd's
GC collects what no lease or reference holds. A removal killed at any point after its
transaction is finished by the next collection; before it, nothing happened. Collection is safe
at any time and from any number of processes at once, so it runs on store open (bounded), and
after ``rmi``, ``rm`` and ``prune`` (to the end).

Roots (what is live)
--------------------
- every ``images`` row: its config blob, its top layer (and so, through ``parent``, every layer
  below), its ``manifests`` rows and their index digests;
- every ``containers`` row: its parent layer and its RW layer (cache-id);
- every live lease (``leases`` row whose process is alive): its ``lease_resources`` (blobs,
  layers, images) and, for blobs, anything linked into ``blobs/`` since the oldest live lease
  began (see *Concurrent writers*);
- every ``pending`` row of a live process: driver data a create or remove is working on;
- ``layer_blobs`` rows of live layers: the blobs that hold those layers' tars.

What is collected
-----------------
1. leases of dead processes (their resources go with them);
2. driver data of ``pending`` rows of dead processes (``LayerStore.recover``: an interrupted
   register, release, container create or remove);
3. layers nothing references (no image on top, no child, no container, no live lease): each is
   unrecorded and its data removed through a pending row (``LayerStore.release``), so a crash
   midway is step 2 of the next run; parents follow while they become unreferenced;
4. ``layer_blobs`` rows of layers that are gone (unless a live lease holds the blob);
5. blobs no root reaches;
6. chain-lock files of dead pulls (``locks/layer-*.lock`` whose flock nobody holds).

Not collected here: driver data that no row knows at all (an *orphan*: damage, never crash
debris, because every writer records a pending row before it creates data) is reported by
``system check`` and removed only by ``system prune`` (``orphans``); partial downloads are
kept for resuming and expire through ``system prune`` (``expire_partials``); each driver sweeps
its own temporary names when it is opened.

Concurrent writers
------------------
A writer makes things that are not reachable yet: a pull has stored a blob but not recorded its
layer; a commit has applied a layer but not made its image. The rules that keep them:

- *Leases first.* Every operation that creates blobs, layers or images runs under
  ``Store.lease()``, whose row is committed before the operation writes anything. A layer joins
  the lease in the same transaction that records it; a blob or layer the operation *reuses*
  joins it before the operation relies on it (``Store.lease_blob`` / ``lease_layer`` before the
  existence check, so either the GC ran first and the writer sees the blob gone, or the lease is
  there when the GC marks).
- *New blobs are younger than their lease.* A blob is linked into ``blobs/`` (which sets its
  ctime) after its writer's lease began, and leased by digest only afterwards. The GC keeps every
  blob whose ctime is not older than the oldest live lease (minus ``CTIME_SLACK`` for clock
  granularity); a blob linked by a writer is thus kept until that writer's lease ends, by which
  time its roots are recorded.
- *Mark and sweep of blobs under the write lock.* The blob sweep holds the database's write lock
  (``BEGIN IMMEDIATE``) from reading the roots to the last unlink, so no lease can begin between
  the mark and the sweep: a lease that exists is seen, one that does not cannot own a blob yet.
- Layers are rows: ``release`` re-checks the references inside its transaction, and driver data
  in flight has a pending row from before it exists. Two collectors racing each remove what the
  other has not; every removal is idempotent.

Bounded runs
------------
Collection costs a few queries and one ``scandir`` of ``blobs/sha256`` when there is nothing to
do (the check runs without the write lock; the lock is taken only when something is
collectable). Removing driver data can take long (a layer with thousands of files), so a
``budget`` in seconds stops a run between two removals; what is left stays garbage for the next
run. The open-time run uses ``OPEN_BUDGET``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from drivers.base import CacheID
from graph.digest import ChainID, Digest
from graph.errors import Conflict, LaminaError
from drivers.sys.proc import pid_alive
from drivers.sys.record import Record

if TYPE_CHECKING:
    from graph.content import ContentStore, IngestStatus
    from graph.db import DB
    from graph.images import ImageStore
    from graph.layer_blobs import LayerBlobs
    from graph.layers import LayerStore
    from graph.leases import Leases


class Store(Protocol):
    """What the collector needs of ``graph.store.Store`` (a protocol: the store imports this
    module, so this module must not import the store)."""

    root: Path
    db: "DB"
    driver: Any
    content: "ContentStore"
    layers: "LayerStore"
    images: "ImageStore"
    layer_blobs: "LayerBlobs"
    leases: "Leases"

OPEN_BUDGET = 0.25
"""Seconds of removal work the collection on store open may do (the rest waits for the next run)."""

CTIME_SLACK = 2.0
"""Seconds a blob's ctime may lie before its lease's start and still count as the lease's (file
timestamps come from the kernel's coarse clock, a tick behind ``time.time()``)."""

PARTIAL_MAX_AGE = 24 * 3600.0
"""``system prune`` removes partial downloads not written to for this long (Docker's builder
prune has no such thing; containerd expires ingests after a day by default as well)."""

# Fault injection for crash tests (as ``graph.layers.crash_hook``): called with a step name.
crash_hook: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if crash_hook is not None:
        crash_hook(name)


class GCReport(Record):
    """What one collection removed. ``complete`` is False when the budget ran out first."""

    __slots__ = ("leases", "recovered", "layers", "blobs", "reclaimed", "locks", "complete")
    _defaults = {"leases": list, "recovered": list, "layers": list, "blobs": list, "reclaimed": 0, "locks": list, "complete": True}
    leases: list[str]
    recovered: list[CacheID]
    layers: list[ChainID]
    blobs: list[Digest]
    reclaimed: int
    locks: list[str]
    complete: bool


class Collector:
    """Mark and sweep over one store (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- the whole run ---------------------------------------------------------------------
    def collect(self, budget: float | None = None) -> GCReport:
        """Collect garbage until done or ``budget`` seconds are spent.

        Requires: nothing (safe with concurrent lamina processes and threads).
        Effect: steps 1-6 of the module docstring, in that order.
        Raises: Conflict only from a driver that refuses to remove a layer it holds mounted
        (that layer is skipped and stays garbage); nothing for concurrent work.
        Repeat: yes; a second run right after finds nothing.
        """
        deadline = None if budget is None else time.monotonic() + budget
        rep = GCReport()
        rep.leases = self.drop_dead_leases()
        rep.recovered = self.store.layers.recover()
        _step("gc:recovered")
        rep.complete = self.collect_layers(rep, deadline)
        _step("gc:layers")
        self.drop_layer_blob_rows()
        if rep.complete:
            rep.complete = self.collect_blobs(rep, deadline)
        _step("gc:blobs")
        rep.locks = sweep_chain_locks(self.store.root / "locks")
        return rep

    # ---- 1. leases -------------------------------------------------------------------------
    def drop_dead_leases(self) -> list[str]:
        """Delete leases whose process is gone (their resources go with them)."""
        return self.store.leases.drop_dead(pid_alive)

    # ---- 3. layers -------------------------------------------------------------------------
    def unreferenced_layers(self) -> list[ChainID]:
        """Layers nothing needs (``LayerStore.unreferenced``), newest first."""
        return self.store.layers.unreferenced()

    def collect_layers(self, rep: GCReport, deadline: float | None) -> bool:
        """Release every unreferenced layer (and the parents that become so). False if the
        deadline passed first."""
        for chain in self.unreferenced_layers():
            if deadline is not None and time.monotonic() > deadline:
                return False
            sizes = {layer.chain_id: layer.size for layer in self.store.layers.stack(chain)} \
                if self.store.layers.exists(chain) else {}
            try:
                gone = self.store.layers.release(chain)
            except Conflict:
                continue  # mounted by someone (lamina mount of a dangling layer?): next time
            rep.layers += gone
            rep.reclaimed += sum(sizes.get(c, 0) for c in gone)
        return True

    # ---- 4. layer_blobs rows ---------------------------------------------------------------
    def drop_layer_blob_rows(self) -> None:
        """Forget which blob held a layer once the layer is gone, unless a live lease holds the
        blob (a pull records the blob a moment before it records the layer)."""
        self.store.layer_blobs.prune(keep=self.store.leases.held("blob"))

    # ---- 5. blobs --------------------------------------------------------------------------
    def _live_blobs(self) -> set[str]:
        st = self.store
        return st.images.ids() | st.images.manifest_digests() | st.layer_blobs.live() | st.leases.held("blob")

    def _young_cutoff(self) -> float | None:
        """Blobs with a ctime at or after this may belong to a live lease's writer (None: no
        live lease, nothing is protected by age)."""
        starts = self.store.leases.live_starts(pid_alive)
        return min(starts) - CTIME_SLACK if starts else None

    def _candidates(self) -> list[tuple[Digest, int]]:
        """Unreachable blobs (with their sizes) not young enough to be a live writer's. Names
        are compared as sets first; only the unreachable ones are looked at (stat)."""
        blobs = self.store.content
        names = blobs.hex_names()
        if not names:
            return []
        dead = names - {d[len("sha256:"):] for d in self._live_blobs()}
        if not dead:
            return []
        cutoff = self._young_cutoff()
        out = []
        for hex_ in sorted(dead):
            digest = Digest.from_hex(hex_)
            try:
                st = os.stat(blobs.path(digest))
            except (OSError, LaminaError):
                continue  # deleted meanwhile
            if cutoff is not None and st.st_ctime >= cutoff:
                continue
            out.append((digest, st.st_size))
        return out

    def collect_blobs(self, rep: GCReport, deadline: float | None) -> bool:
        """Delete blobs no root reaches. The check runs first without the write lock; only
        when it finds garbage is the mark repeated and the sweep done under the lock."""
        if not self._candidates():
            return True
        with self.store.db.transaction():  # BEGIN IMMEDIATE: no lease can begin until the sweep ends
            for digest, size in self._candidates():
                if deadline is not None and time.monotonic() > deadline:
                    return False
                self.store.content.delete(digest)
                _step("gc:blob")
                rep.blobs.append(digest)
                rep.reclaimed += size
        return True

    # ---- orphans (prune only) --------------------------------------------------------------
    def remove_orphans(self) -> list[CacheID]:
        """Remove driver layers no row knows (``LayerStore.orphans``). Only ``system prune``
        calls this: an orphan is damage that ``system check`` should get to report first."""
        gone = []
        for cid in list(self.store.layers.orphans()):
            try:
                self.store.driver.remove(cid)
            except LaminaError:
                continue
            gone.append(cid)
        return gone


# ---- partial downloads ----------------------------------------------------------------------
def stale_partials(store: Store, max_age: float | None) -> list["IngestStatus"]:
    """Resumable partial downloads not written to for ``max_age`` seconds (None: all of them),
    live or not (``expire_partials`` skips live ones)."""
    now = time.time()
    return [i for i in store.content.ingests() if max_age is None or now - i.updated >= max_age]


def expire_partials(store: Store, max_age: float | None = PARTIAL_MAX_AGE) -> list[tuple[str, int]]:
    """Drop partial downloads older than ``max_age`` (None: every one) that no live writer holds
    (its flock decides: ``ContentStore.abort`` refuses a held ref). Returns (ref, bytes) dropped."""
    out = []
    for ing in stale_partials(store, max_age):
        try:
            store.content.abort(ing.ref)
        except Conflict:
            continue  # a live writer is resuming it right now
        out.append((ing.ref, ing.offset))
    return out


# ---- chain locks of pulls -------------------------------------------------------------------
def sweep_chain_locks(locks: Path) -> list[str]:
    """Remove ``locks/layer-*.lock`` files no process holds (a pull killed while it held one).

    How a dead holder is told from a live one: by the lock itself. A live pull holds an
    exclusive ``flock`` on its file from acquiring to releasing; if a non-blocking ``flock``
    succeeds here, nobody holds it, and the file is unlinked while we hold it (the pull's own
    release protocol: a waiter that then wakes on the unlinked file sees that the path no longer
    names its inode and retries on a fresh file). Returns the names removed.
    """
    try:
        names = [n for n in os.listdir(locks) if n.startswith("layer-") and n.endswith(".lock")]
    except FileNotFoundError:
        return []
    gone = []
    for name in names:
        path = locks / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live pull holds it
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.unlink(path)
                gone.append(name)
        finally:
            os.close(fd)
    # only when empty, as a pull leaves it; also when a killed pull left it empty (after its
    # last unlink, before its rmdir): a pull that makes it again meanwhile retries (_ChainLock)
    with contextlib.suppress(OSError):
        os.rmdir(locks)
    return gone


__all__ = ["CTIME_SLACK", "Collector", "GCReport", "OPEN_BUDGET", "PARTIAL_MAX_AGE", "expire_partials",
           "pid_alive", "stale_partials", "sweep_chain_locks"]
