"""``Store``: one root directory, one driver, and the stores on top of them.

This is the library's front door (``graph.Store``). It opens or creates a root, binds it to one
graphdriver for life (layers made by one driver mean nothing to another), rolls back whatever an
interrupted operation left behind, and offers the task-level operations the CLI is made of: tag,
rmi, inspect, container create/commit/export/remove, check, prune, df. Image archives and
registries live in their own modules and work through this object.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, ContextManager

import drivers
from drivers.base import Driver, Sweeper
from drivers.sys.durable import fsync_dir
from drivers.sys.record import Record
from graph.content import ContentStore
from graph.db import DB
from graph.digest import ChainID, DiffID, Digest, ImageID, chain_ids
from graph.errors import Conflict, Corrupt, InvalidInput, LaminaError, NotFound, Unsupported
from graph.images import Image, ImageStore
from graph.gc import OPEN_BUDGET, PARTIAL_MAX_AGE, Collector, GCReport, expire_partials, stale_partials
from graph.layer_blobs import LayerBlobs
from graph.layers import Layer, LayerStore
from graph.oci.reference import Reference, parse_reference
from graph.references import ReferenceStore
from graph.verify import TeeReader

TYPE_CHECKING = False
if TYPE_CHECKING:  # containers, volumes and leases load when first used (Store's lazy open)
    from graph.containers import Container, ContainerStore
    from graph.leases import Leases
    from graph.volumes import VolumeStore

DRIVER_FILE = "driver"

# Fault injection for crash tests (see graph.layers.crash_hook): "rmi:untagged" (inside rmi's
# transaction, so a kill there undoes it), "rmi:committed" (before the collection).
crash_hook: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if crash_hook is not None:
        crash_hook(name)


class Problem(Record):
    """One finding of ``Store.check`` (damage) or ``Store.notes`` (information: a normal state
    worth showing, such as a resumable download, never a reason to fail a check)."""

    __slots__ = ("kind", "object", "detail")
    kind: str
    object: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.object}: {self.detail}"


class PruneReport(Record):
    __slots__ = ("containers", "images", "layers", "blobs", "orphans", "partials", "reclaimed")
    _defaults = {"containers": list, "images": list, "layers": list, "blobs": list, "orphans": list, "partials": list, "reclaimed": 0}
    containers: list[str]
    images: list[str]
    layers: list[str]
    blobs: list[str]
    orphans: list[str]  # driver data no row knew, and driver debris
    partials: list[str]  # partial downloads dropped
    reclaimed: int


class Store:
    """An image and layer store rooted at one directory.

    ``Store(root, driver="overlay")`` opens (creating if needed). ``driver=None`` takes the driver
    the root was created with, else the machine's default. A root keeps its driver: opening it with
    another raises Conflict.

    ``recover=False`` opens for reading without the recovery (``recover``): the driver is then
    opened on first use, and the container, volume and lease tables are made (and their modules
    imported) on first use too, so ``lamina images`` reads its rows without opening a driver.
    Nothing an interrupted operation left is visible to a reader (an image, layer or reference
    row exists only once committed); the next open that recovers finishes it.
    """

    def __init__(self, root: str | os.PathLike[str], driver: str | None = None, *, recover: bool = True,
                 **driver_options: Any) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "drivers").mkdir(exist_ok=True)
        (self.root / "containers").mkdir(exist_ok=True)
        self.driver_name = self._bind_driver(driver)
        self.db = DB(self.root / "lamina.db")
        try:
            self.content = ContentStore(self.root)
            self._driver_options = driver_options
            for lazy in ("leases", "containers", "volumes"):  # __init__ again: no table of the old db
                self.__dict__.pop(lazy, None)
            self.layers = LayerStore(self.db, self._open_driver)
            self.layer_blobs = LayerBlobs(self.db, self.content)
            self.images = ImageStore(self.db, self.content, self.layers, self.layer_blobs)
            self.refs = ReferenceStore(self.db)
            if recover:
                self.layers.driver  # noqa: B018 - opened now: Unsupported at open, as before
                self.recover()
        except BaseException:
            self.db.close()
            raise

    def _open_driver(self) -> Driver:
        return drivers.open_driver(self.driver_name, self.root / "drivers" / self.driver_name, **self._driver_options)

    @property
    def driver(self) -> Driver:
        return self.layers.driver

    @functools.cached_property
    def leases(self) -> "Leases":
        from graph.leases import Leases

        return Leases(self.db)

    @functools.cached_property
    def containers(self) -> "ContainerStore":
        from graph.containers import ContainerStore

        return ContainerStore(self.db, self.layers)

    @functools.cached_property
    def volumes(self) -> "VolumeStore":
        from graph.volumes import VolumeStore

        return VolumeStore(self.db, self.root / "volumes")

    # ---- life ----------------------------------------------------------------------------
    def _bind_driver(self, wanted: str | None) -> str:
        path = self.root / DRIVER_FILE
        try:
            bound = path.read_text().strip()
        except FileNotFoundError:
            bound = ""
        if bound:
            if wanted and wanted != bound:
                raise Conflict(
                    f"store {self.root} uses driver {bound!r}, not {wanted!r}; use another --root"
                )
            return bound
        name = wanted or drivers.default_driver(self.root / "drivers", per_driver=True)
        # bind only a driver that can run here: a typo or an unsupported driver must not poison
        # a new root (NotFound for an unknown name, Unsupported with the probe's reason)
        reason = drivers.supported(name, self.root / "drivers" / name)
        if reason is not None:
            raise Unsupported(f"graph driver {name} cannot run here: {reason}")
        tmp = path.with_name(f".{DRIVER_FILE}.{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())  # a power cut must not leave the binding empty (tests/powercut)
        os.replace(tmp, path)
        fsync_dir(self.root)
        return name

    def recover(self, budget: float | None = OPEN_BUDGET) -> GCReport:
        """Finish what interrupted operations left: temp files of dead ingests, then a garbage
        collection (``graph.gc``: dead leases, pending driver data, unreferenced layers and
        blobs, stale pull locks), stopped after ``budget`` seconds of removal work; volumes whose
        creating or removing process died."""
        self.content.sweep()
        self.volumes.recover()
        return self.gc(budget)

    def gc(self, budget: float | None = None) -> GCReport:
        """Collect garbage (``graph.gc.Collector.collect``); safe at any time, also while other
        processes use the store. ``budget``: stop after that many seconds (None: to the end)."""
        return Collector(self).collect(budget)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lease(self) -> ContextManager[str]:
        """Protect what an operation creates (blobs, layers, images) from a concurrent prune until
        it is reachable from a reference (``graph.leases``). A lease of a crashed process is
        dropped at next open."""
        return self.leases.lease()

    def lease_blob(self, lease: str, digest: Digest) -> None:
        self.leases.hold(lease, "blob", digest)

    def lease_layer(self, lease: str, chain: ChainID) -> bool:
        """Hold an existing layer for the lease's life (an operation that reuses a layer must not
        see a concurrent prune remove it before an image points at it). Returns whether the
        layer exists: checked in the same transaction, so True means it is held."""
        return self.layers.hold(lease, chain)

    # ---- images --------------------------------------------------------------------------
    def resolve_image(self, name: str) -> Image:
        """An image by reference (``busybox``, ``repo@sha256:…``) or by (short) image ID."""
        if not name:
            raise InvalidInput("empty image name")
        ref: Reference | None
        try:
            ref = parse_reference(name)
        except InvalidInput:
            ref = None
        if ref is not None:
            with contextlib.suppress(NotFound):
                return self.images.get(self.refs.get(ref).image_id)
            if ref.digest is not None:
                described = self.images.image_of_manifest(ref.digest)
                if described is not None:
                    return self.images.get(described)
        hexish = name[7:] if name.startswith("sha256:") else name
        if hexish and all(ch in "0123456789abcdef" for ch in hexish):
            return self.images.by_prefix(name)
        raise NotFound(f"no such image: {name}")

    def tag(self, source: str, target: str) -> Reference:
        img = self.resolve_image(source)
        ref = parse_reference(target)
        if ref.digest is not None:
            raise InvalidInput(f"refusing to create a tag with a digest reference: {target}")
        self.refs.add(ref, img.id)
        return ref

    def rmi(self, name: str, *, force: bool = False) -> list[str]:
        """Docker's ``rmi``: untag a reference; delete the image when no reference is left.

        An image given by ID with several references is refused unless ``force``. An image used by
        a container is refused unless ``force``; forced, it is untagged and kept as a dangling
        image (as Docker: ``image prune`` or ``rmi <id>`` removes it once no container uses it).
        The removal is a roll-forward: the references and the image row go in one transaction
        (what a user sees is then done), and the garbage collector removes the layers, driver
        data and blobs this left unreferenced; a crash after the transaction is finished by the
        next store open or ``rmi``/``prune``. A name that resolves to nothing still runs the
        collector (finishing an earlier interrupted removal) before NotFound is raised.
        Returns Docker-style events ("Untagged: …", "Deleted: …").
        """
        try:
            img = self.resolve_image(name)
        except NotFound:
            self.gc()
            raise
        events: list[str] = []
        refs = self.refs.list(img.id)
        by_ref: Reference | None = None
        with contextlib.suppress(InvalidInput):
            candidate = parse_reference(name)
            if any(r.name == str(candidate) for r in refs):
                by_ref = candidate
        users = self.containers.using_image(img.id)
        if by_ref is not None and len(refs) > 1:
            self.refs.remove(by_ref)
            return [f"Untagged: {by_ref.familiar()}"]
        if by_ref is None and len(refs) > 1 and not force:
            raise Conflict(
                f"image {img.id.hex[:12]} is referenced in {len(refs)} repositories (use -f)"
            )
        if users and not force:
            raise Conflict(
                f"image {img.id.hex[:12]} is used by container {users[0].name} (use -f)"
            )
        with self.db.transaction():  # the user-visible step, whole or not at all
            for r in refs:
                self.refs.remove(r.reference)
                events.append(f"Untagged: {r.reference.familiar()}")
            _step("rmi:untagged")
            if not users:  # else dangling: kept until pruned or removed by id
                self.images.unrecord(img.id)
                events.append(f"Deleted: {img.id}")
        _step("rmi:committed")
        if users:
            return events
        events += [f"Deleted: {chain}" for chain in self.gc().layers]
        return events

    def inspect_image(self, name: str) -> dict[str, Any]:
        """Docker-like ``inspect`` output for an image."""
        img = self.resolve_image(name)
        cfg = self.images.config(img.id)
        raw = json.loads(cfg.raw)
        refs = self.refs.list(img.id)
        layers = self.layers.stack(img.top_layer)
        return {
            "Id": img.id,
            "RepoTags": [r.reference.familiar() for r in refs if r.reference.digest is None],
            "RepoDigests": sorted(
                {f"{r.reference.name}@{m.digest}" for r in refs for m in self.images.manifests(img.id)}
            ),
            "Created": raw.get("created"),
            "Architecture": raw.get("architecture"),
            "Os": raw.get("os"),
            "Variant": raw.get("variant"),
            "Config": raw.get("config", {}),
            "Size": sum(layer.size for layer in layers),
            "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in layers]},
            "Layers": [
                {"DiffID": layer.diff_id, "ChainID": layer.chain_id, "Size": layer.size} for layer in layers
            ],
            "Manifests": [
                {"Digest": m.digest, "MediaType": m.media_type, "Index": m.parent_index}
                for m in self.images.manifests(img.id)
            ],
            "GraphDriver": {"Name": self.driver_name},
        }

    # ---- containers ----------------------------------------------------------------------
    def create_container(
        self, image: str, *, name: str | None = None, config: dict[str, Any] | None = None
    ) -> Container:
        img = self.resolve_image(image)
        cfg = dict(config or {})
        cfg.setdefault("Image", image)
        return self.containers.create(img, name=name, config=cfg)

    def commit(
        self,
        container: str,
        ref: str | None = None,
        *,
        message: str = "",
        author: str = "",
        changes: dict[str, Any] | None = None,
    ) -> Image:
        """Turn a container's changes into a new image on its image (``docker commit``).

        The diff tar is applied as a new read-only layer and kept in the content store as an
        uncompressed layer blob, so ``save`` and ``push`` hand out the same bytes later.
        """
        from graph.oci import formats  # local: only commit needs the builders

        c = self.containers.get(container)
        if c.image_id is None or not self.images.exists(c.image_id):
            raise NotFound(f"container {c.name}: its image is gone; cannot derive a config")
        base_cfg = self.images.config(c.image_id)
        with self.lease() as lease:
            with self.containers.diff(c) as tar, self.content.ingest() as writer:
                tee = TeeReader(tar, writer)
                layer = self.layers.register(tee, c.parent_layer, lease=lease)
                tee.drain()
                blob = writer.commit()
            self.lease_blob(lease, blob)
            if blob != layer.diff_id:
                raise Corrupt(f"commit: stored diff {blob} differs from applied DiffID {layer.diff_id}")
            self.record_layer_blob(layer.diff_id, blob, formats.MEDIA_OCI_LAYER, self.content.size(blob))
            new_raw = formats.build_config(
                base_cfg, layer.diff_id, created_by=f"lamina commit {c.name}",
                comment=message, author=author, config_changes=changes,
            )
            self.lease_blob(lease, Digest.of(new_raw))  # before storing: see graph.gc
            img = self.images.create(new_raw, lease=lease)
            manifest_raw = self.images.build_manifest(img)
            self.lease_blob(lease, Digest.of(manifest_raw))
            mdigest = self.content.put_bytes(manifest_raw)
            self.images.add_manifest(mdigest, formats.MEDIA_OCI_MANIFEST, img.id)
            if ref:
                self.refs.add(parse_reference(ref), img.id)
        return img

    def record_layer_blob(self, diff_id: DiffID, blob: Digest, media_type: str, size: int) -> None:
        """``graph.layer_blobs``: ``blob`` holds the layer ``diff_id`` (``size``: the content
        store knows it)."""
        del size
        self.layer_blobs.record(diff_id, blob, media_type)

    def layer_blob(self, diff_id: DiffID) -> tuple[Digest, str] | None:
        """A stored blob holding this layer's tar (the first recorded), with its media type."""
        return self.layer_blobs.first(diff_id)

    def export(self, container: str, out: BinaryIO) -> int:
        """Write the container's whole merged filesystem as a tar (``docker export``)."""
        import tarfile

        c = self.containers.get(container)
        path = self.containers.mount(c)
        try:
            n = 0
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
                for dirpath, dirnames, filenames in os.walk(path):
                    dirnames.sort()
                    for entry in sorted(dirnames + filenames):
                        full = os.path.join(dirpath, entry)
                        arc = os.path.relpath(full, path)
                        info = tf.gettarinfo(full, arcname=arc)
                        info.uname = info.gname = ""
                        if info.isreg():
                            with open(full, "rb") as f:
                                tf.addfile(info, f)
                        else:
                            tf.addfile(info)
                        n += 1
            return n
        finally:
            self.containers.unmount(c)

    def remove_container(self, container: str, *, force: bool = False) -> Container:
        """Remove a container and its layer. Its image stays, even with no name left (an
        untagged load, an ``rmi -f``): a user's image goes only by ``rmi`` or a prune, as with
        Docker."""
        c = self.containers.get(container)
        self.containers.remove(c, force=force)
        self.gc()
        return c

    # ---- maintenance ---------------------------------------------------------------------
    def gc_blobs(self) -> list[str]:
        """Collect garbage (``gc``) and return the blobs deleted (kept for rollback callers)."""
        return [str(d) for d in self.gc().blobs]

    def prune(self, *, partial_age: float | None = PARTIAL_MAX_AGE) -> PruneReport:
        """``system prune``: dangling images (no reference, no container), then everything the
        garbage collector takes (unreferenced layers and blobs), driver data no row knows and
        driver debris (``orphans``), and partial downloads not written to for ``partial_age``
        seconds (None: all) that no live writer holds. Containers are left alone (stopped
        containers are the runtime's)."""
        rep = PruneReport()
        self._prune_dangling(rep)
        collector = Collector(self)
        g = collector.collect()
        rep.layers += [str(c) for c in g.layers]
        rep.blobs += [str(d) for d in g.blobs]
        rep.reclaimed += g.reclaimed
        for cid in collector.remove_orphans():
            rep.orphans.append(f"{self.driver_name}: {cid}")
        if isinstance(self.driver, Sweeper):
            rep.orphans += [f"{self.driver_name}: {n}" for n in self.driver.sweep()]
        for ref, size in expire_partials(self, partial_age):
            rep.partials.append(ref)
            rep.reclaimed += size
        return rep

    def dangling(self) -> list[ImageID]:
        """Images with no reference (Docker's ``dangling=true``), used by a container or not."""
        return [img.id for img in self.images.list() if not self.refs.list(img.id)]

    def prune_images(self) -> PruneReport:
        """``image prune``: dangling images no container uses, then what the garbage collector
        takes because of them (their layers and blobs)."""
        rep = PruneReport()
        self._prune_dangling(rep)
        g = self.gc()
        rep.layers += [str(c) for c in g.layers]
        rep.blobs += [str(d) for d in g.blobs]
        rep.reclaimed += g.reclaimed
        return rep

    def _prune_dangling(self, rep: PruneReport) -> None:
        leased = self.leases.held("image")
        for img in self.images.list():
            if img.id in leased or self.refs.list(img.id) or self.containers.using_image(img.id):
                continue
            self.images.unrecord(img.id)
            rep.images.append(img.id)

    def df(self) -> dict[str, Any]:
        imgs = self.images.list()
        layers = self.layers.list()
        conts = self.containers.list()
        blobs = list(self.content.walk())
        partials = self.content.ingests()
        used_layers: set[str] = set()
        for img in imgs:
            used_layers |= {layer.chain_id for layer in self.layers.stack(img.top_layer)}
        return {
            "images": {"count": len(imgs), "active": len({c.image_id for c in conts})},
            "layers": {
                "count": len(layers),
                "size": sum(layer.size for layer in layers),
                "reclaimable": sum(layer.size for layer in layers if layer.chain_id not in used_layers),
            },
            "containers": {"count": len(conts), "size": sum(self._safe_size(c) for c in conts)},
            "blobs": {"count": len(blobs), "size": sum(s for _, s in blobs)},
            "partials": {
                "count": len(partials),
                "size": sum(i.offset for i in partials),
                "reclaimable": sum(i.offset for i in stale_partials(self, PARTIAL_MAX_AGE)),
            },
            "driver": self.driver.status(),
        }

    def _safe_size(self, c: Container) -> int:
        try:
            return self.containers.size(c)
        except LaminaError:
            return 0

    def check(self, *, verify_blobs: bool = True) -> list[Problem]:
        """Verify every blob and the metadata's consistency. An empty list means healthy."""
        problems: list[Problem] = []
        if verify_blobs:
            for digest, _ in self.content.walk():
                try:
                    self.content.verify(digest)
                except Corrupt as e:
                    problems.append(Problem("blob", digest, str(e)))
        for layer in self.layers.list():
            if not self.driver.exists(layer.cache_id):
                problems.append(Problem("layer", layer.chain_id, f"driver data {layer.cache_id} missing"))
            if layer.parent is not None and not self.layers.exists(layer.parent):
                problems.append(Problem("layer", layer.chain_id, f"parent {layer.parent} missing"))
        for img in self.images.list():
            if not self.content.exists(img.id):
                problems.append(Problem("image", img.id, "config blob missing"))
                continue
            try:
                cfg = self.images.config(img.id)
            except LaminaError as e:
                problems.append(Problem("image", img.id, f"config unreadable: {e}"))
                continue
            chains = chain_ids(cfg.diff_ids)
            if (chains[-1] if chains else None) != img.top_layer:
                problems.append(Problem("image", img.id, "top layer does not match config diff_ids"))
            for ch in chains:
                if not self.layers.exists(ChainID(ch)):
                    problems.append(Problem("image", img.id, f"layer {ch} missing"))
            for m in self.images.manifests(img.id):
                if not self.content.exists(m.digest):
                    problems.append(Problem("manifest", m.digest, "blob missing"))
        for c in self.containers.list():
            if not self.driver.exists(c.cache_id):
                problems.append(Problem("container", c.name, f"RW layer {c.cache_id} missing"))
        for cid in self.layers.orphans():
            problems.append(Problem("driver", cid, f"layer data not known to the store: {self._data_path(cid)}"))
        if isinstance(self.driver, Sweeper):
            for name in self.driver.leftovers():
                problems.append(Problem("driver", name, f"left by an interrupted operation: {self.driver.home / name}"))
        for cid in self.layers.interrupted():
            problems.append(Problem("pending", cid, "interrupted operation not rolled back"))
        return problems

    def notes(self) -> list[Problem]:
        """What ``check`` shows as information, not damage: operations in flight in live
        processes, and resumable partial downloads (an interrupted pull resumes from them)."""
        out: list[Problem] = []
        for cid, pid in self.layers.in_flight():
            out.append(Problem("pending", cid, f"operation in flight (pid {pid})"))
        for ing in self.content.ingests():
            out.append(Problem("ingest", str(ing.ref), f"partial ingest, resumable from byte {ing.offset}"))
        return out

    def _data_path(self, cid: str) -> str:
        """Where the driver keeps ``cid`` (for messages): its first ``home/<dir>/<cid>``."""
        for sub in sorted(self.driver.home.iterdir()):
            if sub.is_dir() and os.path.lexists(sub / cid):
                return str(sub / cid)
        return str(self.driver.home / cid)

    def layer_of(self, chain: ChainID) -> Layer:
        return self.layers.get(chain)
