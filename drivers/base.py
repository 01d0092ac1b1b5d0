"""The graphdriver protocol: how lamina turns layers into filesystems.

The model
---------
A driver keeps *layers*, each a directory tree named by a **cache-id** (random hex the layer store
picks; a driver never sees a digest). A layer has at most one **parent**; its content is the
parent's content plus its own changes. **Read-only layers** are made by ``create`` and filled once
by ``apply_diff``; **RW layers** (``create_rw``) are a container's writable top, on a read-only
parent. ``get`` makes a layer's *merged* tree available at a path and returns it (a mount for
union drivers, a plain directory for copy drivers); ``put`` releases it. ``get``/``put`` are
**refcounted across processes** (the CLI is many short processes: ``lamina mount`` and ``lamina
umount`` are two of them), so the count lives on disk in the driver's home (``RefCounts``), and
the mount is torn down when it drops to zero. A count is its process's and ends with it (a crash
leaves none behind) unless the process hands it over with ``keep`` (``KeptCounts``), as ``lamina
mount`` and a container's start do.

Vocabulary: ``id`` is always the layer's own cache-id, ``parent`` its parent's cache-id or
``None``. A "tar" is an uncompressed OCI layer tar (whiteouts ``.wh.<name>``, opaque dirs
``.wh..wh..opq``); the caller compresses, decompresses and hashes, the driver only moves files.

Worked example::

    d = drivers.open_driver("overlay", home)
    d.create("a1", None);  d.apply_diff("a1", None, open("base.tar", "rb"))
    d.create("b2", "a1");  d.apply_diff("b2", "a1", open("app.tar", "rb"))
    d.create_rw("c3", "b2")
    root = d.get("c3")            # merged view of a1 + b2 + c3's writable top
    ...                           # a container writes under root
    d.put("c3")                   # unmounted: nobody else holds it
    tar = d.diff("c3", "b2")      # what the container changed, as an OCI layer tar

Every method below says what must be true before (*Requires*), what it does (*Effect*), what it
raises (*Raises*, always a ``drivers.errors`` class) and what a repeat does (*Repeat*).
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, NewType, Protocol, runtime_checkable

from drivers.errors import InvalidInput
from drivers.sys.durable import syncfs
from drivers.sys.flock import Flock
from drivers.sys.proc import start_time
from drivers.sys.record import Frozen

CacheID = NewType("CacheID", str)


def new_cache_id() -> CacheID:
    """A fresh random cache-id (32 hex digits). Random on purpose: a layer's on-disk name must
    not be derivable from its content, or a crashed half-written copy could be mistaken for it."""
    return CacheID(os.urandom(16).hex())


def check_cache_id(id: str) -> CacheID:
    """Refuse anything that is not a plain name: a cache-id becomes a path component."""
    if not id or len(id) > 128 or not all(c.isalnum() or c in "-_" for c in id):
        raise InvalidInput(f"invalid cache-id: {id!r}")
    return CacheID(id)


class ChangeKind(enum.IntEnum):
    """Kinds of change, numbered as Docker's API numbers them (0 modified, 1 added, 2 deleted)."""

    MODIFIED = 0
    ADDED = 1
    DELETED = 2


class Change(Frozen):
    """One changed path, absolute within the layer ("/etc/passwd")."""

    __slots__ = ("path", "kind")
    _ordered = True
    path: str
    kind: ChangeKind

    def __str__(self) -> str:
        return f"{'CAD'[self.kind]} {self.path}"


@runtime_checkable
class GraphDriver(Protocol):
    """The layer half of a graphdriver (moby's ``ProtoDriver``): layers made, mounted, removed.
    See the module docstring for the model."""

    name: str
    home: Path

    def create(self, id: CacheID, parent: CacheID | None) -> None:
        """Make an empty read-only layer on ``parent``.

        Requires: ``id`` is new; ``parent`` exists (or is None).
        Effect: the layer exists and shows ``parent``'s content; fill it with ``apply_diff``.
        Raises: AlreadyExists (id taken), NotFound (parent), Unsupported.
        Repeat: a second call with the same id raises AlreadyExists.
        """
        ...

    def create_rw(self, id: CacheID, parent: CacheID | None) -> None:
        """Make a container's writable layer on ``parent``.

        Requires: as ``create``.
        Effect: as ``create``; the layer is meant for ``get`` and writes, not ``apply_diff``.
        Raises: AlreadyExists, NotFound, Unsupported.
        Repeat: raises AlreadyExists.
        """
        ...

    def remove(self, id: CacheID) -> None:
        """Delete the layer's data.

        Requires: nobody holds it (``get`` count 0) and no layer has it as parent (the layer store
        guarantees the latter; drivers such as btrfs snapshots do not depend on it).
        Effect: the data is gone; a crash midway leaves a name ``cleanup`` or the next ``remove``
        finishes.
        Raises: Conflict (still held by ``get``).
        Repeat: removing a missing layer is a no-op (so crash recovery can call it blindly).
        """
        ...

    def get(self, id: CacheID) -> str:
        """Make the layer's merged tree available and return its absolute path.

        Requires: the layer exists.
        Effect: refcount + 1 (on disk, across processes; this process's until ``keep``);
        mounts on the 0 -> 1 step.
        Raises: NotFound, Unsupported (kernel refused the mount; message names the cause).
        Repeat: each call takes one more reference and returns the same path.
        """
        ...

    def put(self, id: CacheID) -> None:
        """Release one reference taken by ``get``.

        Requires: the layer exists.
        Effect: refcount - 1; unmounts on the 1 -> 0 step.
        Raises: NotFound.
        Repeat: a put at count 0 is a no-op (it may follow a crash that lost the count).
        """
        ...

    def exists(self, id: CacheID) -> bool:
        """Whether the layer's data exists. Never raises for a well-formed id."""
        ...

    def status(self) -> dict[str, str]:
        """Facts a user needs: backing filesystem, layer count, options in force. Never raises."""
        ...

    def cleanup(self) -> None:
        """Release every mount this driver made (all refcounts dropped).

        Requires: nothing.  Effect: nothing of this driver stays mounted.  Raises: nothing for
        an already clean state.  Repeat: yes, harmless.
        """
        ...

    def sync(self) -> None:
        """Make every layer's data durable (the store syncs before it records a layer).

        Requires: nothing.  Effect: data written so far reaches the disk (``syncfs`` of the
        driver's filesystem for the drivers here).  Raises: OSError from the kernel.
        Repeat: yes, cheap when nothing is dirty.
        """
        ...


@runtime_checkable
class DiffDriver(Protocol):
    """The file half (moby's ``DiffDriver``): layer tars in and out. A driver without a native
    way to diff gets ``drivers.naive_diff.NaiveDiff``, which compares the trees ``get`` returns."""

    def apply_diff(self, id: CacheID, parent: CacheID | None, tar: BinaryIO) -> int:
        """Apply an uncompressed OCI layer tar to a layer made by ``create``.

        Requires: ``id`` was created on ``parent`` and not yet applied or mounted.
        Effect: reads ``tar`` to its very end (the caller hashes the stream for the DiffID) and
        applies it; returns the layer's own size in bytes (as ``diff_size``).
        Raises: InvalidInput (malformed or hostile tar: path escape, link escape, retyping the
        root), Unsupported (an entry the filesystem cannot hold). On error the layer is left
        for the caller to ``remove``.
        Repeat: not idempotent; apply once.
        """
        ...

    def diff(self, id: CacheID, parent: CacheID | None) -> BinaryIO:
        """The layer's changes against ``parent`` as an OCI layer tar stream.

        Requires: both exist; the layer is not being written.
        Effect: none on the layer. The bytes are deterministic for a given tree, so applying
        them elsewhere and diffing again yields the same tar (and DiffID).
        Raises: NotFound.
        Repeat: yes; the caller closes the stream.
        """
        ...

    def changes(self, id: CacheID, parent: CacheID | None) -> list[Change]:
        """The paths the layer added, modified or deleted against ``parent``, sorted by path.

        Requires: both exist.  Effect: none.  Raises: NotFound.  Repeat: yes.
        """
        ...

    def diff_size(self, id: CacheID, parent: CacheID | None) -> int:
        """Bytes of regular-file content the layer adds or changes against ``parent``.

        Requires: both exist.  Effect: none.  Raises: NotFound.  Repeat: yes.
        """
        ...


@runtime_checkable
class Driver(GraphDriver, DiffDriver, Protocol):
    """A complete driver: what ``drivers.open_driver`` returns and the layer store uses."""


# ---- optional abilities: one small protocol each, found with ``isinstance`` ---------------------


@runtime_checkable
class ParallelApply(Protocol):
    """``apply_diff`` of a layer never reads its parent's data, so a pull may apply a stack's
    layers at once, in any order. (No driver has it now: overlay and fuse read the applied
    layers below, as a copy-up would; see ``drivers.tar.lower``.)"""

    parallel_apply: bool


@runtime_checkable
class HeldCounts(Protocol):
    """The driver counts ``get``s on disk and can say how many are outstanding."""

    def held_count(self, id: CacheID) -> int:
        """``get`` calls on ``id`` not yet matched by a ``put`` (0 for an unknown id)."""
        ...


@runtime_checkable
class KeptCounts(Protocol):
    """A ``get``'s count belongs to the process that took it and dies with it (a crash inside
    ``create`` leaves no count behind); ``keep`` hands one over so that it outlives the process,
    for a mount meant to stay (``lamina mount``, a started container's rootfs)."""

    def keep(self, id: CacheID) -> None:
        """Requires: this process holds a ``get`` on ``id``.  Effect: that count stays until a
        ``put`` from any process.  Raises: nothing.  Repeat: hands over one more (if held)."""
        ...


@runtime_checkable
class LayerListing(Protocol):
    """The driver can list the layers it holds: what lets ``system check`` find driver data no
    metadata row knows (an orphan), and ``system prune`` remove it. A separate protocol checked
    with ``isinstance``: a ``getattr`` on a misspelt name made the orphan check silently dead."""

    def layer_ids(self) -> list[str]:
        """Cache-ids of every layer whose data this driver holds, complete or not (a layer
        directory missing some of its files is listed: it is data to account for).

        Requires: nothing.  Effect: none.
        Raises: nothing for a concurrent create or remove (a layer that appears or vanishes
        meanwhile may or may not be listed).
        Repeat: yes. Temporary names of creates and removes in flight (or interrupted) are
        never listed: they are the driver's own crash debris, swept by the driver.
        """
        ...


@runtime_checkable
class Sweeper(Protocol):
    """A driver whose creates and removes use temporary names, and that can tell the ones an
    interrupted operation left (debris) from the ones a live operation is working on.

    The driver sweeps its debris by itself when it is opened; ``system check`` reports what is
    still there (``leftovers``) and ``system prune`` removes it (``sweep``).
    """

    def leftovers(self) -> list[str]:
        """Paths, relative to the driver's home, of temporary data that no live create or
        remove owns.

        Requires: nothing.  Effect: none.  Raises: nothing for concurrent work.
        Repeat: yes. A live operation's temporary names are never listed.
        """
        ...

    def sweep(self) -> list[str]:
        """Delete what ``leftovers`` lists (never a live operation's data); return the paths.

        Requires: nothing.  Effect: as above.  Raises: nothing for concurrent work (what is
        busy stays for the next sweep).  Repeat: yes, harmless.
        """
        ...


class LocalDriver:
    """What the drivers here share: data under ``home`` on a local filesystem, ``get`` counts
    in ``self.refs`` (``RefCounts``). Gives them ``sync``, ``HeldCounts`` and ``KeptCounts``."""

    home: Path
    refs: "RefCounts"

    def held_count(self, id: CacheID) -> int:
        """``get`` calls on ``id`` not yet matched by a ``put`` (``HeldCounts``)."""
        return self.refs.count(id)

    def keep(self, id: CacheID) -> None:
        """This process's ``get`` on ``id`` outlives it (``KeptCounts``)."""
        self.refs.keep(id)

    def sync(self) -> None:
        """``syncfs`` of the filesystem holding ``home`` (``GraphDriver.sync``): one flush of
        everything applied, far cheaper than an fsync per file."""
        syncfs(self.home)


class RefCounts:
    """Per-layer ``get`` counts kept in ``<home>/refs/<id>``, one small file per held layer,
    updated under an exclusive ``flock`` of ``<home>/refs.lock``.

    On disk because the holders are separate processes. Each count belongs to a **holder**: the
    process that took it (its pid and start time, so a reused pid is another holder) or, once
    handed over with ``keep``, nobody in particular (``lamina mount``, a started container's
    rootfs: released by a later ``put`` from any process). A process that dies holding counts
    (a power cut, SIGKILL inside ``create``) holds nothing any more: its counts are not counted
    and go at the next change of that layer's counts; what it had mounted is a mount with no
    count, which the drivers' sweeps and ``remove`` undo. ``reset`` (called by ``cleanup``
    after unmounting) drops them all.

    The file holds one ``<holder> <count>`` line per holder (``kept`` for the handed-over
    ones; a bare number, from before holders, counts as kept).
    """

    KEPT = "kept"

    def __init__(self, home: Path) -> None:
        self.dir = home / "refs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_path = home / "refs.lock"
        self._me: tuple[int, str] = (-1, "")

    def locked(self) -> Flock:
        """Hold the counts' lock, for a driver that must check a count and act atomically
        (remove refuses a held layer; get verifies a standing count still has its mount)."""
        return Flock(self._lock_path)

    # ---- holders -------------------------------------------------------------------------
    def _holder(self) -> str:
        """This process as a holder: ``<pid>:<start time>`` (computed again after a fork)."""
        pid = os.getpid()
        if self._me[0] != pid:
            self._me = (pid, f"{pid}:{start_time(pid)}")
        return self._me[1]

    @classmethod
    def _live(cls, holder: str) -> bool:
        if holder == cls.KEPT:
            return True
        pid, _, start = holder.partition(":")
        try:
            return str(start_time(int(pid))) == start
        except ValueError:
            return False

    def _read(self, id: CacheID) -> dict[str, int]:
        """The live holders of ``id`` and their counts (dead ones left out)."""
        try:
            text = (self.dir / id).read_text()
        except FileNotFoundError:
            return {}
        holders: dict[str, int] = {}
        for line in text.splitlines():
            holder, _, n = line.strip().rpartition(" ")
            holder = holder or self.KEPT  # a bare count: the format before holders
            if n.isdigit() and int(n) > 0 and self._live(holder):
                holders[holder] = holders.get(holder, 0) + int(n)
        return holders

    def _write(self, id: CacheID, holders: dict[str, int]) -> None:
        p = self.dir / id
        lines = "".join(f"{h} {n}\n" for h, n in sorted(holders.items()) if n > 0)
        if not lines:
            p.unlink(missing_ok=True)
            return
        tmp = self.dir / f".{id}.tmp"
        tmp.write_text(lines)
        os.replace(tmp, p)

    # ---- the counts ----------------------------------------------------------------------
    def count(self, id: CacheID) -> int:
        """Outstanding ``get``s on ``id`` by live holders (kept ones included)."""
        return sum(self._read(id).values())

    def set(self, id: CacheID, n: int) -> None:
        """Replace the counts of ``id`` by ``n`` kept ones (0 removes them all); the caller holds
        ``locked()``."""
        self._write(id, {self.KEPT: n})

    def add(self, id: CacheID) -> int:
        """One more count for this process (dead holders' counts dropped); the caller holds
        ``locked()``. Returns the new total."""
        holders = self._read(id)
        me = self._holder()
        holders[me] = holders.get(me, 0) + 1
        self._write(id, holders)
        return sum(holders.values())

    def remove(self, id: CacheID) -> int:
        """One count less: this process's own if it has one, else a kept one, else another live
        holder's (a ``put`` may follow a ``get`` of another process); none at 0. The caller
        holds ``locked()``. Returns the new total."""
        holders = self._read(id)
        if holders:
            me = self._holder()
            victim = me if me in holders else self.KEPT if self.KEPT in holders else min(holders)
            holders[victim] -= 1
        self._write(id, holders)
        return sum(holders.values())

    def keep(self, id: CacheID) -> None:
        """Hand one of this process's counts on ``id`` over to no process in particular: it
        outlives this process and goes with a later ``put`` from any process (``lamina mount``,
        a started container's rootfs). Nothing happens if this process holds none."""
        with self.locked():
            holders = self._read(id)
            me = self._holder()
            if holders.get(me, 0) > 0:
                holders[me] -= 1
                holders[self.KEPT] = holders.get(self.KEPT, 0) + 1
                self._write(id, holders)

    def held(self) -> Iterator[CacheID]:
        """The ids with a count above zero."""
        for p in self.dir.iterdir():
            if not p.name.startswith(".") and self.count(CacheID(p.name)) > 0:
                yield CacheID(p.name)

    def reset(self) -> None:
        """Drop every count (after ``cleanup`` unmounted everything)."""
        for p in list(self.dir.iterdir()):
            if not p.name.startswith("."):
                p.unlink(missing_ok=True)

    def increment(self, id: CacheID, on_first: Callable[[], None] | None = None) -> int:
        """Add one for this process; run ``on_first`` (the mount) under the lock on the 0 -> 1
        step. If it raises, the count is not changed."""
        with self.locked():
            if on_first is not None and self.count(id) == 0:
                on_first()
            return self.add(id)

    def decrement(self, id: CacheID, on_last: Callable[[], None] | None = None) -> int:
        """Take one away (see ``remove``); run ``on_last`` (the unmount) under the lock on the
        1 -> 0 step. A decrement at 0 is a no-op and returns 0."""
        with self.locked():
            n = self.count(id)
            if n == 0:
                return 0
            if n == 1 and on_last is not None:
                on_last()
            return self.remove(id)

