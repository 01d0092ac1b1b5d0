"""Pull an image from a registry into a store: manifest -> platform -> config -> layers.

What happens
------------
1. **Resolve.** The reference's tag or digest is asked of each endpoint in turn (configured
   mirrors first, then the registry; ``graph.distribution.registry``); the first that answers serves the
   pull, and the ones after it stay as fallbacks for blobs a mirror lacks. The bytes are checked
   against the digest asked for (or the one the registry claims). An index (multi-platform) is
   resolved with ``formats.select_platform`` and the chosen manifest fetched by digest.
2. **Config.** Fetched (or found in the content store), verified against its descriptor, parsed,
   checked against the manifest (one layer per DiffID) and, when ``platform`` was given for a
   single-platform image, against the wanted platform.
3. **Plan.** For every layer: its ChainID registered *and* its blob recorded -> nothing to do
   ("exists"); ChainID registered but blob not stored -> fetch the blob and check its DiffID
   (so a later push hands out the very bytes); otherwise fetch (unless the blob is stored) and
   apply.
4. **Transfer and apply, overlapped.** Up to ``concurrency`` downloads run at once (``choose_concurrency``:
   3, or 8 for many tiny layers), each
   streaming its blob into a resumable content-store ingest (sha256 and size checked at commit;
   more bytes than the descriptor says are refused as they arrive). The applier reads the same
   bytes back from the ingest file as they land (a *spool*: downloads never wait for
   extraction), decompresses them (``graph.unpack``: ISA-L gzip, zstd, none) and feeds the
   driver while the DiffID is hashed. Drivers with ``parallel_apply`` (overlay: each layer its
   own directory) apply up to ``concurrency`` layers at once; others (vfs, btrfs: a layer starts
   as a copy of its parent) apply in order while later downloads run ahead. Layers are prepared,
   applied and committed through the layer store's two-phase register (``prepare`` /
   ``apply_prepared`` / ``commit_prepared``); commits happen in stack order, each only after its
   blob verified and its DiffID matched the config. There is one durability barrier per pull
   (``_Job._barrier``: every layer applied, one ``driver.sync()``, then the layer rows).
5. **Record.** Image row, manifest (and index) bytes, the manifest row, then the reference.

Two processes pulling the same image at once: a blob's ingest carries the ref
``pull-<digest>``, so the second process waits for the first one's download and then finds the
blob stored; and a per-ChainID lock (``<root>/locks/``, taken in stack order, so never in a
cycle) makes the second wait while the first applies a layer and then skip it. Each blob is
downloaded once, each layer applied once, and both pulls succeed.

All or nothing: everything happens under one ``Store.lease``; on any failure (or interrupt) the
layers this pull committed are released, prepared layers aborted, new manifest rows and images
removed, references restored, unreferenced blobs collected and partial downloads dropped (unless
``keep_partial``), so ``Store.check()`` is as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from drivers.base import CacheID
from drivers.base import ParallelApply
from graph.oci import formats
from graph.distribution import progress
from graph.digest import ChainID, DiffID, Digest, ImageID, chain_id
from graph.errors import Bug, DigestMismatch, InvalidInput, LaminaError, NotFound
from graph.oci.formats import Descriptor, ImageConfig, Index, Manifest, Platform
from graph.oci.reference import Reference, parse_reference
from graph.distribution.auth import Unauthorized
from graph.undo import Undo
from graph.distribution.registry import Cancel, Cancelled, RegistryClient, RegistryError, RegistryOptions, Repository
from graph.unpack import decompressed
from graph.verify import HashingReader

if TYPE_CHECKING:
    from graph.references import RefRecord
    from graph.store import Store

DEFAULT_CONCURRENCY = 3
MAX_CONCURRENCY = 32
# Many tiny layers: each blob's cost is a round trip and a file sync, not bytes, so more downloads
# at once overlap them. Measured here (deep-500, blobs of a few KB, journaled ext4 loop, load 8):
# 3 at once 5.6-6.8 s, 8 at once 4.0-4.3 s, 16 at once 5.0 s; deep-64: 1.0 s -> 0.6-0.9 s.
TINY_CONCURRENCY = 8
TINY_LAYER = 1 << 20  # a median layer blob below this makes an image "many tiny layers"


def choose_concurrency(manifest: Manifest) -> int:
    """Downloads at once when the caller names none: Docker's 3, or ``TINY_CONCURRENCY`` for an
    image of more than 3 layers whose median blob is under ``TINY_LAYER``."""
    sizes = sorted(d.size for d in manifest.layers)
    if len(sizes) > DEFAULT_CONCURRENCY and sizes[len(sizes) // 2] < TINY_LAYER:
        return TINY_CONCURRENCY
    return DEFAULT_CONCURRENCY


@dataclass
class PullResult:
    """What a pull did. ``digest`` is what the reference resolved to (an index's digest for a
    multi-platform image: Docker's "Digest:" line); ``manifest`` the platform manifest recorded
    for the image. ``new`` is False when the image was already complete in the store. ``timings``
    (seconds): ``resolve`` (manifests and config), ``layers`` (transfer + apply), ``record``,
    ``total``; ``layer_times`` per layer: download and apply spans relative to the start."""

    reference: Reference
    image_id: ImageID
    digest: Digest
    manifest: Digest
    endpoint: str
    new: bool
    downloaded: int = 0
    downloaded_bytes: int = 0
    existed: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    layer_times: list[dict[str, float]] = field(default_factory=list)


# ================================================================================ entry point


def pull(
    store: "Store",
    reference: str | Reference,
    *,
    options: RegistryOptions | None = None,
    client: RegistryClient | None = None,
    platform: Platform | None = None,
    concurrency: int | None = None,
    progress_fn: progress.ProgressFn | None = None,
    keep_partial: bool = False,
) -> PullResult:
    """Pull ``reference`` (``busybox``, ``127.0.0.1:5000/app:1``, ``repo@sha256:...``) into
    ``store``; see the module docstring.

    Requires: nothing (the store is open).
    Effect: blobs stored and verified, layers registered, image and manifest recorded, the
    reference (tag, or ``repo@digest`` for a pull by digest) points at the image. All or
    nothing.
    Raises: InvalidInput (bad reference, malformed manifest or config, bad tar), NotFound
    (repository, tag, blob, or no manifest for the platform), DigestMismatch (any bytes not what
    they claim: manifest, config, blob, DiffID, a blob bigger than its descriptor), Unsupported
    (schema 1, encrypted or non-distributable layers, unknown compression), Unauthorized,
    Unreachable, RegistryError (after retries).
    Repeat: pulling again fetches nothing that is present and returns ``new=False``.
    """
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    if concurrency is not None and not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidInput(f"concurrency must be 1..{MAX_CONCURRENCY}, got {concurrency}")
    own = client is None
    cli = client if client is not None else RegistryClient(options)
    report = progress.Reporter(progress_fn)
    undo = Undo()
    t0 = time.perf_counter()
    try:
        repo, top = _resolve(cli, ref)
        manifest, index = _select(repo, ref, top, platform)
        n = concurrency if concurrency is not None else choose_concurrency(manifest)
        job = _Job(store, repo, ref, manifest, index, report, n, undo, t0)
        with store.lease() as lease:
            job.lease = lease
            cfg = job.fetch_config(platform)
            t1 = time.perf_counter()
            job.run_layers(cfg)
            t2 = time.perf_counter()
            result = job.record(cfg, top.digest)
        t3 = time.perf_counter()
        result.timings = {"resolve": t1 - t0, "layers": t2 - t1, "record": t3 - t2, "total": t3 - t0}
        return result
    except BaseException:
        undo.rollback(store, keep_partial=keep_partial)
        raise
    finally:
        if own:
            cli.close()


# ================================================================================ resolve


def _resolve(client: RegistryClient, ref: Reference) -> tuple[Repository, Any]:
    """The first endpoint that serves the reference's manifest, and that manifest."""
    endpoints = client.endpoints(ref.domain, pull=True)
    reference = ref.digest or ref.tag or "latest"
    for i, ep in enumerate(endpoints):
        repo = client.repository(ref.path, ep, fallbacks=endpoints[i + 1:])
        try:
            return repo, repo.get_manifest(reference, first_contact=True)
        except (NotFound, Unauthorized, RegistryError, DigestMismatch, InvalidInput):
            if not ep.mirror:
                raise
            continue  # a mirror that lacks it, refuses, or is down: try the next endpoint
    raise Bug(f"no endpoint for {ref}")  # the origin is always last and raises


def _select(repo: Repository, ref: Reference, top: Any, platform: Platform | None) -> tuple[Manifest, Index | None]:
    doc = formats.parse_manifest_or_index(top.raw, top.media_type or None)
    if isinstance(doc, Manifest):
        doc.check_image()
        return doc, None
    want = platform or Platform.host()
    desc = formats.select_platform(doc, want)
    child = repo.get_manifest(desc.digest)
    if len(child.raw) != desc.size:
        raise DigestMismatch(f"{ref.name}@{desc.digest}: manifest has {len(child.raw)} bytes, its index says {desc.size}")
    m = formats.parse_manifest(child.raw, child.media_type or desc.media_type)
    m.check_image()
    return m, doc


# ================================================================================ the job


@dataclass
class _Item:
    """One layer of the pull."""

    index: int
    desc: Descriptor
    diff_id: DiffID
    chain: ChainID
    parent: ChainID | None
    compression: str
    what: str
    action: str = "apply"  # "exists" | "check" | "apply"
    stored: bool = False  # blob already in the content store
    spool: "_Spool | None" = None
    blob: "Future[Digest] | None" = None
    work: "Future[tuple[DiffID, int]] | None" = None
    cid: CacheID | None = None
    parent_cache: CacheID | None = None
    created: bool = False  # its reserved driver layer was made (LayerStore.create_reserved)
    lost: bool = False  # our prepared copy lost to an equal layer recorded meanwhile
    synced: bool = False  # the pull's barrier (_barrier) synced the filesystem after applying it
    lock: "_ChainLock | None" = None
    times: dict[str, float] = field(default_factory=dict)


class _Job:
    def __init__(
        self,
        store: "Store",
        repo: Repository,
        ref: Reference,
        manifest: Manifest,
        index: Index | None,
        report: progress.Reporter,
        concurrency: int,
        undo: Undo,
        t0: float,
    ) -> None:
        self.store = store
        self.repo = repo
        self.ref = ref
        self.manifest = manifest
        self.index = index
        self.report = report
        self.concurrency = concurrency
        self.undo = undo
        self.t0 = t0
        self.lease = ""
        self.cancel = Cancel()
        self.items: list[_Item] = []
        self.parallel = isinstance(store.driver, ParallelApply) and store.driver.parallel_apply
        self.downloaded = 0
        self.downloaded_bytes = 0
        self._count_lock = threading.Lock()
        self.locks_dir = store.root / "locks"
        # (diff_id, blob, media type, size) of committed layers: recorded in one transaction
        # (_record_blobs), not one each. A crash before it loses only the hint that the blob
        # holds the layer: a later pull then re-hashes the blob ("check") instead of skipping it.
        self.blob_rows: list[tuple[DiffID, Digest, str, int]] = []

    # -- config ----------------------------------------------------------------------------

    def fetch_config(self, platform: Platform | None) -> ImageConfig:
        desc = self.manifest.config
        if desc.size > formats.MAX_CONFIG_SIZE:
            raise InvalidInput(f"{self.ref.name}: config {desc.digest} is {desc.size} bytes, over the limit")
        self.store.lease_blob(self.lease, desc.digest)  # before looking: see graph.gc
        if not self.store.content.exists(desc.digest):
            ref = f"pull-{desc.digest}"
            self.undo.ingests.add(ref)
            with self.store.content.ingest(desc.digest, desc.size, ref=ref) as w:
                if not w.done:
                    self.repo.fetch_blob(desc.digest, desc.size, w, cancel=self.cancel)
                w.commit()
        raw = self.store.content.read_bytes(desc.digest, formats.MAX_CONFIG_SIZE)
        if len(raw) != desc.size:
            raise DigestMismatch(f"config {desc.digest}: {len(raw)} bytes, its descriptor says {desc.size}")
        cfg = formats.parse_config(raw)
        formats.check_manifest_config(self.manifest, cfg)
        if platform is not None and self.index is None:
            wanted = {p.key() for p in formats.platform_vector(platform)}
            if cfg.platform.key() not in wanted:
                raise NotFound(
                    f"{self.ref.familiar()} is for {cfg.platform}, which does not match the requested platform {platform}"
                )
        return cfg

    # -- plan ------------------------------------------------------------------------------

    def plan(self, cfg: ImageConfig) -> None:
        """Every layer's blob leased (one transaction, committed before looking: see graph.gc),
        then looked at, then every recorded layer held (one transaction). One WAL sync each,
        not one per layer: a 500-layer pull made 500 of each."""
        store = self.store
        parent: ChainID | None = None
        n = len(self.manifest.layers)
        with store.db.transaction():
            for desc in self.manifest.layers:
                store.lease_blob(self.lease, desc.digest)
        for i, (desc, diff_id) in enumerate(zip(self.manifest.layers, cfg.diff_ids)):
            chain = chain_id(parent, diff_id)
            item = _Item(
                index=i, desc=desc, diff_id=diff_id, chain=chain, parent=parent,
                compression=formats.layer_compression(desc.media_type),
                what=f"{self.ref.familiar()} layer {i + 1}/{n} ({desc.digest.hex[:12]})",
            )
            item.stored = store.content.exists(desc.digest)
            if item.stored and store.content.size(desc.digest) != desc.size:
                raise DigestMismatch(
                    f"{item.what}: blob {desc.digest} has {store.content.size(desc.digest)} bytes, "
                    f"the descriptor says {desc.size}"
                )
            self.items.append(item)
            parent = chain
        with store.db.transaction():  # held once this commits: a concurrent collection keeps them
            held = [store.lease_layer(self.lease, it.chain) for it in self.items]
        for it, h in zip(self.items, held):
            if h:
                it.action = "exists" if it.stored and self._recorded(it.diff_id, it.desc.digest) else "check"

    def _recorded(self, diff_id: DiffID, blob: Digest) -> bool:
        return self.store.layer_blobs.recorded(diff_id, blob)

    # -- transfer and apply ----------------------------------------------------------------

    def run_layers(self, cfg: ImageConfig) -> None:
        self.plan(cfg)
        work = [it for it in self.items if it.action != "exists"]
        for it in self.items:
            if it.action == "exists":
                self.report(it.desc.digest, progress.EXISTS, it.desc.size, it.desc.size)
            else:
                self.report(it.desc.digest, progress.WAITING, 0, it.desc.size)
        if not work:
            return
        dl = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="lamina-pull-dl")
        ap = ThreadPoolExecutor(max_workers=self.concurrency if self.parallel else 1, thread_name_prefix="lamina-pull-apply")
        try:
            for it in work:
                it.spool = _Spool()
                if it.stored:
                    it.spool.open(self.store.content.path(it.desc.digest), it.desc.size, complete=True)
                else:
                    it.blob = dl.submit(self._download, it)
            self._reserve(work)
            if self.parallel:
                for it in work:  # driver layers in stack order, each applied once made
                    self._create(it)
                    it.work = ap.submit(self._apply, it)
                self._barrier(work)
            else:  # one apply worker: each layer is made and applied after its parent
                for it in work:
                    it.work = ap.submit(self._create_and_apply, it)
                self._barrier(work)
            undo_mark = len(self.undo.layers)
            try:
                with self.store.layers.committing():  # every row in one transaction: one WAL sync
                    for it in self.items:
                        if it.action != "exists" or it.work is not None:
                            self._commit(it)
            except BaseException:
                del self.undo.layers[undo_mark:]  # rolled back with the transaction: nothing to undo
                raise
            self._record_blobs()
        except BaseException:
            self.cancel.set()
            with contextlib.suppress(Exception):
                self._record_blobs()  # what was committed keeps its blob hint (keep_partial)
            for it in work:
                if it.spool is not None:
                    it.spool.fail(Cancelled(f"{it.what}: cancelled"))
            raise
        finally:
            dl.shutdown(wait=True)
            ap.shutdown(wait=True)
            for it in self.items:
                if it.lock is not None:
                    it.lock.release()
                    it.lock = None
                if it.spool is not None:  # every layer's: an open fd keeps a deleted ingest alive
                    it.spool.close()
                    it.spool = None
            with contextlib.suppress(OSError):
                self.locks_dir.rmdir()  # only when empty: no other pull holds a lock
            unmade = [it.cid for it in self.items if it.cid is not None and not it.created]
            if unmade:  # reserved, never made: no data, only the pending rows (one transaction)
                with contextlib.suppress(LaminaError, OSError):
                    self.store.layers.unreserve(unmade)
            for it in reversed(self.items):  # children first
                if it.cid is None or not it.created:
                    continue
                if it.lost or not self.store.layers.records_cache_id(it.cid):
                    with contextlib.suppress(LaminaError, OSError):
                        self.store.layers.abort_prepared(it.cid)

    def _record_blobs(self) -> None:
        rows, self.blob_rows = self.blob_rows, []
        if rows:
            with self.store.db.transaction():  # the rows nest in one transaction: one WAL sync
                for row in rows:
                    self.store.record_layer_blob(*row)

    def _barrier(self, work: list[_Item]) -> None:
        """One durability barrier per pull (every driver): wait until every layer is applied,
        then one ``driver.sync()`` (syncfs of its filesystem); only then are layer rows committed (``_commit``
        with ``sync=False``), so no row is ever visible before its data is durable.

        Why it is safe: syncfs(2) flushes every dirty page and inode of the filesystem, so one
        call after the last apply covers all of them, exactly as one call per layer did; a layer
        row commits after it (SQLite FULL sync), and a crash before that commit leaves pending
        rows, which the next open rolls back as before. A layer that failed to apply is never
        committed, so the barrier waits for all and then lets ``_commit`` raise in stack order.
        What it costs: rows are committed after the last apply rather than as each finishes;
        what it saves: one syncfs per layer (each one also flushes what other layers are writing).
        """
        pending = [it.work for it in work if it.work is not None]
        while pending:  # in short slices, so Ctrl-C reaches the main thread (see result_of)
            wait(pending, timeout=0.1)
            pending = [f for f in pending if not f.done()]
        if any(it.action == "apply" and it.work is not None and it.work.exception() is None for it in work):
            self.store.driver.sync()
            for it in work:
                it.synced = True

    def _download(self, it: _Item) -> Digest:
        d = it.desc
        assert it.spool is not None
        ref = f"pull-{d.digest}"
        self.undo.ingests.add(ref)
        try:
            it.times["download_start"] = time.perf_counter() - self.t0
            with self.store.content.ingest(d.digest, d.size, ref=ref) as w:
                if w.done:  # another process stored it while we waited for the ref
                    it.spool.open(self.store.content.path(d.digest), d.size, complete=True)
                else:
                    it.spool.open(_writer_path(w), w.offset)
                    self.report(d.digest, progress.DOWNLOADING, w.offset, d.size)
                    start = w.offset
                    spool = it.spool

                    def on_bytes(n: int) -> None:
                        spool.grow(n)
                        self.report(d.digest, progress.DOWNLOADING, n, d.size)

                    def on_retry(reason: str) -> None:
                        self.report(d.digest, progress.RETRYING, w.offset, d.size, detail=reason)

                    self.repo.fetch_blob(d.digest, d.size, w, on_bytes=on_bytes, cancel=self.cancel,
                                         nondistributable=formats.is_nondistributable(d.media_type),
                                         on_retry=on_retry)
                    spool.grow(w.offset)
                    spool.complete()
                    self.report(d.digest, progress.VERIFYING, d.size, d.size)
                    with self._count_lock:
                        self.downloaded += 1
                        self.downloaded_bytes += w.offset - start
                digest = w.commit()  # leased by plan() before anything looked (no transaction here)
            it.times["download_end"] = time.perf_counter() - self.t0
            return digest
        except BaseException as e:
            it.spool.fail(e)
            raise

    def _parent_cache(self, it: _Item) -> CacheID | None:
        if it.index == 0:
            return None
        below = self.items[it.index - 1]
        if below.cid is not None and below.action == "apply":
            return below.cid
        return self.store.layers.get(below.chain).cache_id

    def _reserve(self, work: list[_Item]) -> None:
        """Before any driver layer is made: the chain locks in stack order (so never in a cycle),
        the layers another pull registered meanwhile held (and left alone: one transaction), and
        a pending row for every layer still to apply (``LayerStore.reserve``: one transaction, one
        WAL sync for the stack, where a 500-layer pull made 500). The rows are on disk before any data
        they describe; a crash after them leaves pending rows with no data, which ``recover``
        drops. Layers are then made one by one (``_create``) as they are applied."""
        todo = [it for it in work if it.action == "apply"]
        for it in todo:
            it.lock = _ChainLock.acquire(self.locks_dir, it.chain, self.cancel)
        with self.store.db.transaction():
            held = [self.store.lease_layer(self.lease, it.chain) for it in todo]
        for it, h in zip(todo, held):
            if h:  # another pull registered it meanwhile
                it.action = "check"
                assert it.lock is not None
                it.lock.release()
                it.lock = None
        todo = [it for it in todo if it.action == "apply"]
        for it, cid in zip(todo, self.store.layers.reserve(len(todo))):
            it.cid = cid
        for it in todo:
            it.parent_cache = self._parent_cache(it)

    def _create(self, it: _Item) -> None:
        if it.action == "apply":
            assert it.cid is not None
            self.store.layers.create_reserved(it.cid, it.parent_cache)
            it.created = True

    def _create_and_apply(self, it: _Item) -> tuple[DiffID, int]:
        below = self.items[it.index - 1] if it.index else None
        if self.cancel.is_set() or (below is not None and below.work is not None and below.work.exception() is not None):
            raise Cancelled(f"{it.what}: cancelled")
        self._create(it)
        return self._apply(it)

    def _apply(self, it: _Item) -> tuple[DiffID, int]:
        assert it.spool is not None
        d = it.desc
        reader = _SpoolReader(it.spool, lambda n: self.report(d.digest, progress.EXTRACTING, n, d.size))
        plain = decompressed(reader, it.compression, it.what)  # type: ignore[arg-type]
        it.times["apply_start"] = time.perf_counter() - self.t0
        try:
            if it.action == "apply":
                assert it.cid is not None
                result = self.store.layers.apply_prepared(it.cid, it.parent_cache, plain, expected_diff_id=it.diff_id)
            else:  # registered already: only prove the blob holds this DiffID
                h = HashingReader(plain)
                h.drain()
                if h.digest() != it.diff_id:
                    raise DigestMismatch(f"{it.what}: DiffID mismatch: expected {it.diff_id}, got {h.digest()}")
                result = (it.diff_id, 0)
        except DigestMismatch as e:
            raise DigestMismatch(f"{it.what}: {e}") from None
        it.times["apply_end"] = time.perf_counter() - self.t0
        return result

    def _commit(self, it: _Item) -> None:
        """Wait for the layer's blob and apply; record it (stack order)."""
        assert it.work is not None
        try:
            diff_id, size = result_of(it.work)
        except BaseException as apply_error:
            # the blob's own verdict explains more (wrong bytes beat "corrupt gzip")
            if it.blob is not None and not isinstance(apply_error, KeyboardInterrupt):
                try:
                    result_of(it.blob)
                except BaseException as blob_error:
                    if not isinstance(blob_error, Cancelled):
                        raise blob_error from None
            raise apply_error
        if it.blob is not None:
            blob = result_of(it.blob)
        else:
            blob = it.desc.digest  # plan() leased every layer's blob
        self.blob_rows.append((diff_id, blob, it.desc.media_type, it.desc.size))
        if it.action == "apply":
            assert it.cid is not None
            below = self.items[it.index - 1] if it.index else None
            if below is not None and below.lost:
                # built on a copy that lost to an equal layer: redo on the recorded one
                it.lost = True
                if not self.store.lease_layer(self.lease, it.chain):
                    with self.store.content.open(blob) as f:
                        plain = decompressed(f, it.compression, it.what)  # type: ignore[arg-type]
                        layer = self.store.layers.register(plain, it.parent, expected_diff_id=it.diff_id, lease=self.lease)
                    self.undo.layers.append(layer.chain_id)
            else:
                layer, ours = self.store.layers.commit_prepared(it.cid, it.parent, diff_id, size, lease=self.lease,
                                                                sync=not it.synced)
                if ours:
                    self.undo.layers.append(layer.chain_id)
                else:
                    it.lost = True
        if it.lock is not None:
            it.lock.release()
            it.lock = None
        self.report(it.desc.digest, progress.DONE, it.desc.size, it.desc.size)

    # -- record ----------------------------------------------------------------------------

    def record(self, cfg: ImageConfig, resolved: Digest) -> PullResult:
        store, undo = self.store, self.undo
        new = not store.images.exists(cfg.id)
        if new:
            undo.images.append(cfg.id)
        img = store.images.create(cfg.raw, lease=self.lease)
        parent_index = None
        if self.index is not None:
            store.lease_blob(self.lease, Digest.of(self.index.raw))  # before storing: see graph.gc
            parent_index = store.content.put_bytes(self.index.raw)
        store.lease_blob(self.lease, Digest.of(self.manifest.raw))
        mdigest = store.content.put_bytes(self.manifest.raw)
        if not store.images.has_manifest(mdigest):
            undo.manifests.append(mdigest)
            new = True
        store.images.add_manifest(mdigest, self.manifest.media_type, img.id, parent_index)
        target = self.ref.with_tag(None) if self.ref.digest is not None else self.ref
        try:
            before: RefRecord | None = store.refs.get(target)
        except NotFound:
            before = None
        if before is None or before.image_id != img.id:
            new = True
        undo.refs.append((target, before))
        store.refs.add(target, img.id, mdigest)
        return PullResult(
            reference=target, image_id=img.id, digest=resolved, manifest=mdigest,
            endpoint=str(self.repo.endpoint), new=new or self.downloaded > 0,
            downloaded=self.downloaded, downloaded_bytes=self.downloaded_bytes,
            existed=sum(1 for it in self.items if it.action == "exists"),
            layer_times=[dict(it.times) for it in self.items],
        )


# ================================================================================ rollback




# ================================================================================ spool


def result_of(future: "Future[Any]") -> Any:
    """``future.result()``, waited for in short slices: a signal (Ctrl-C) delivered to a worker
    thread does not wake a main thread blocked on a lock, so the main thread must look up now
    and then to run its handler."""
    while not future.done():
        wait([future], timeout=0.1)
    return future.result()


def _writer_path(w: Any) -> Path:
    """The file an ingest writes (read back by the applier while the download goes on)."""
    return Path(w.path)


class _Spool:
    """A blob's bytes as they land in a file, readable by another thread at the same time.

    The download thread ``open``s it on the ingest's file (or a stored blob: ``complete``),
    calls ``grow(n)`` as bytes are written and ``complete()`` at the end, or ``fail(e)``. A
    reader blocks until bytes beyond its position exist, the blob is complete (EOF) or failed.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._fd = -1
        self._avail = 0
        self._complete = False
        self._error: BaseException | None = None

    def open(self, path: Path, avail: int, *, complete: bool = False) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        with self._cond:
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = fd
            self._avail = avail
            self._complete = complete
            self._cond.notify_all()

    def grow(self, n: int) -> None:
        with self._cond:
            if n > self._avail:
                self._avail = n
                self._cond.notify_all()

    def complete(self) -> None:
        with self._cond:
            self._complete = True
            self._cond.notify_all()

    def fail(self, e: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = e
            self._cond.notify_all()

    def read_at(self, mv: memoryview, pos: int) -> int:
        with self._cond:
            while True:
                if self._error is not None:
                    raise Cancelled(f"download failed: {_one_line(self._error)}")
                if self._fd >= 0 and (self._avail > pos or self._complete):
                    break
                self._cond.wait()
            fd = self._fd
            want = min(len(mv), self._avail - pos)
        if want <= 0:
            return 0
        n = os.preadv(fd, [mv[:want]], pos)
        if n == 0:
            raise Bug("spool file shorter than the bytes written to it")
        return n

    def close(self) -> None:
        with self._cond:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class _SpoolReader(io.RawIOBase):
    """A reader over a ``_Spool`` from byte 0; ``on_bytes(pos)`` reports progress."""

    def __init__(self, spool: _Spool, on_bytes: Callable[[int], None]) -> None:
        super().__init__()
        self._spool = spool
        self._pos = 0
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        n = self._spool.read_at(mv, self._pos)
        self._pos += n
        if n:
            self._on_bytes(self._pos)
        return n


# ================================================================================ chain locks


class _ChainLock:
    """An exclusive lock on one ChainID across processes (a file in ``<root>/locks``), held
    from preparing a layer until it is committed. The holder removes the file before closing it;
    a waiter that wakes up on a removed file tries again (so two holders never coexist)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def acquire(cls, locks: Path, chain: ChainID, cancel: threading.Event) -> "_ChainLock":
        path = locks / f"layer-{chain.hex}.lock"
        while True:
            if cancel.is_set():
                raise Cancelled(f"waiting for layer {chain}: cancelled")
            locks.mkdir(exist_ok=True)  # in the loop: another pull may remove it when empty
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                continue
            try:
                while True:  # another pull is applying this layer: wait (polling, so that
                    try:     # Ctrl-C and the cancel flag are seen while we wait)
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if cancel.wait(0.05):
                            raise Cancelled(f"waiting for layer {chain}: cancelled") from None
                st = os.stat(path)
                fst = os.fstat(fd)
            except FileNotFoundError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            if (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino):
                return cls(path, fd)
            os.close(fd)

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


__all__ = ["DEFAULT_CONCURRENCY", "PullResult", "pull"]
