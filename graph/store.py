"""``Store``: one root directory, one driver, and the stores on top of them.

This is the library's front door (``graph.Store``). It opens or creates a root, binds it to one
graphdriver for life (layers made by one driver mean nothing to another), rolls back whatever an
interrupted operation left behind, and offers the task-level operations the CLI is made of: tag,
rmi, inspect, container create/commit/export/remove, check, prune, df. Image archives and
registries live in their own modules and work through this object.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import drivers
from drivers.base import GraphDriver
from drivers.fsync import fsync_dir
from graph.containers import Container, ContainerStore
from graph.content import ContentStore
from graph.db import DB
from graph.digest import ChainID, DiffID, Digest, ImageID, chain_ids
from graph.errors import Conflict, Corrupt, InvalidInput, LaminaError, NotFound, Unsupported
from graph.images import Image, ImageStore
from graph.layers import Layer, LayerStore, _pid_alive
from graph.refs import Reference, parse_reference
from graph.refstore import ReferenceStore

DRIVER_FILE = "driver"


@dataclass
class Problem:
    """One finding of ``Store.check`` (damage) or ``Store.notes`` (information: a normal state
    worth showing, such as a resumable download, never a reason to fail a check)."""

    kind: str
    object: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.object}: {self.detail}"


@dataclass
class PruneReport:
    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    reclaimed: int = 0


class Store:
    """An image and layer store rooted at one directory.

    ``Store(root, driver="overlay")`` opens (creating if needed). ``driver=None`` takes the driver
    the root was created with, else the machine's default. A root keeps its driver: opening it with
    another raises Conflict.
    """

    def __init__(self, root: str | os.PathLike[str], driver: str | None = None, **driver_options: Any) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "drivers").mkdir(exist_ok=True)
        (self.root / "containers").mkdir(exist_ok=True)
        self.driver_name = self._bind_driver(driver)
        self.db = DB(self.root / "lamina.db")
        try:
            self.content = ContentStore(self.root)
            self.driver: GraphDriver = drivers.open_driver(
                self.driver_name, self.root / "drivers" / self.driver_name, **driver_options
            )
            self.layers = LayerStore(self.db, self.driver)
            self.images = ImageStore(self.db, self.content, self.layers)
            self.refs = ReferenceStore(self.db)
            self.containers = ContainerStore(self.db, self.layers)
            self.recover()
        except BaseException:
            self.db.close()
            raise

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

    def recover(self) -> None:
        """Roll back what interrupted operations left: dead leases, pending driver data, partial
        ingests of dead writers."""
        with self.db.transaction() as c:
            for r in c.execute("SELECT id, pid FROM leases").fetchall():
                if not _pid_alive(r["pid"]):
                    c.execute("DELETE FROM leases WHERE id = ?", (r["id"],))
        self.layers.recover()
        self.content.sweep()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def lease(self) -> Iterator[str]:
        """Protect what an operation creates (blobs, layers, images) from a concurrent prune until
        it is reachable from a reference. A lease of a crashed process is dropped at next open."""
        lid = secrets.token_hex(8)
        with self.db.transaction() as c:
            c.execute("INSERT INTO leases (id, pid, created) VALUES (?, ?, ?)", (lid, os.getpid(), time.time()))
        try:
            yield lid
        finally:
            with self.db.transaction() as c:
                c.execute("DELETE FROM leases WHERE id = ?", (lid,))

    def lease_blob(self, lease: str, digest: Digest) -> None:
        with self.db.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO lease_resources (lease, kind, key) VALUES (?, 'blob', ?)",
                (lease, digest),
            )

    def lease_layer(self, lease: str, chain: ChainID) -> None:
        """Hold an existing layer for the lease's life (an operation that reuses a layer must not
        see a concurrent prune remove it before an image points at it)."""
        with self.db.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO lease_resources (lease, kind, key) VALUES (?, 'layer', ?)",
                (lease, chain),
            )

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
                r = self.db.one("SELECT image_id FROM manifests WHERE digest = ?", (ref.digest,))
                if r is not None:
                    return self.images.get(ImageID(Digest(r["image_id"])))
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
        image until its last container goes (``system prune`` then removes it).
        Returns Docker-style events ("Untagged: …", "Deleted: …").
        """
        img = self.resolve_image(name)
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
        for r in refs:
            self.refs.remove(r.reference)
            events.append(f"Untagged: {r.reference.familiar()}")
        if users:
            return events  # dangling until its containers are gone
        removed = self.images.delete(img.id)
        events.append(f"Deleted: {img.id}")
        events += [f"Deleted: {c}" for c in removed]
        self.gc_blobs()
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
        from graph import formats  # local: only commit needs the builders

        c = self.containers.get(container)
        if c.image_id is None or not self.images.exists(c.image_id):
            raise NotFound(f"container {c.name}: its image is gone; cannot derive a config")
        base_cfg = self.images.config(c.image_id)
        with self.lease() as lease:
            with self.containers.diff(c) as tar, self.content.ingest() as writer:
                tee = _TeeReader(tar, writer)
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
            img = self.images.create(new_raw, lease=lease)
            manifest_raw = self._manifest_for(img)
            mdigest = self.content.put_bytes(manifest_raw)
            self.images.add_manifest(mdigest, formats.MEDIA_OCI_MANIFEST, img.id)
            if ref:
                self.refs.add(parse_reference(ref), img.id)
        return img

    def pull(self, reference: str, **options: Any) -> Any:
        """Pull an image from a registry (``graph.pull.pull``; its keyword options)."""
        from graph.pull import pull

        return pull(self, reference, **options)

    def push(self, reference: str, **options: Any) -> Any:
        """Push an image to a registry (``graph.push.push``; its keyword options)."""
        from graph.push import push

        return push(self, reference, **options)

    def record_layer_blob(self, diff_id: DiffID, blob: Digest, media_type: str, size: int) -> None:
        del size  # the content store knows it
        with self.db.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO layer_blobs (diff_id, blob, media_type) VALUES (?, ?, ?)",
                (diff_id, blob, media_type),
            )

    def layer_blob(self, diff_id: DiffID) -> tuple[Digest, str] | None:
        """A stored blob holding this layer's tar (the first recorded), with its media type."""
        r = self.db.one(
            "SELECT blob, media_type FROM layer_blobs WHERE diff_id = ? ORDER BY rowid", (diff_id,)
        )
        for row in [r] if r is not None else []:
            if self.content.exists(Digest(row["blob"])):
                return Digest(row["blob"]), row["media_type"]
        return None

    def _manifest_for(self, img: Image) -> bytes:
        """An OCI manifest for an image from its recorded layer blobs (canonical JSON)."""
        from graph import formats

        cfg = self.images.config(img.id)
        layers = []
        for diff_id in cfg.diff_ids:
            found = self.layer_blob(diff_id)
            if found is None:
                raise NotFound(f"image {img.id}: no stored blob for layer {diff_id}")
            digest, media_type = found
            layers.append(formats.Descriptor(media_type=media_type, digest=digest, size=self.content.size(digest)))
        config = formats.Descriptor(
            media_type=formats.MEDIA_OCI_CONFIG, digest=img.id, size=len(cfg.raw)
        )
        return formats.build_manifest(config, layers, oci=True)

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
        c = self.containers.get(container)
        self.containers.remove(c, force=force)
        if c.image_id is not None and self.images.exists(c.image_id):
            if not self.refs.list(c.image_id) and not self.containers.using_image(c.image_id):
                # a dangling image kept only for this container (rmi -f): finish its removal
                self.images.delete(c.image_id)
                self.gc_blobs()
        return c

    # ---- maintenance ---------------------------------------------------------------------
    def _live_blobs(self) -> set[str]:
        live: set[str] = set()
        live |= {r["id"] for r in self.db.query("SELECT id FROM images")}
        live |= {r["digest"] for r in self.db.query("SELECT digest FROM manifests")}
        live |= {r["parent_index"] for r in self.db.query("SELECT parent_index FROM manifests WHERE parent_index IS NOT NULL")}
        live |= {
            r["blob"]
            for r in self.db.query(
                "SELECT blob FROM layer_blobs WHERE diff_id IN (SELECT diff_id FROM layers)"
            )
        }
        live |= {r["key"] for r in self.db.query("SELECT key FROM lease_resources WHERE kind = 'blob'")}
        return live

    def gc_blobs(self) -> list[str]:
        """Delete blobs nothing reachable needs (mark and sweep over the metadata)."""
        live = self._live_blobs()
        gone: list[str] = []
        for digest, _size in list(self.content.walk()):
            if digest not in live:
                self.content.delete(digest)
                gone.append(digest)
        with self.db.transaction() as c:
            c.execute("DELETE FROM layer_blobs WHERE diff_id NOT IN (SELECT diff_id FROM layers)")
        return gone

    def prune(self) -> PruneReport:
        """``system prune``: dangling images (no reference, no container), then unreferenced
        layers and blobs. Containers are left alone (stopped containers are the runtime's)."""
        rep = PruneReport()
        before = sum(s for _, s in self.content.walk()) + sum(layer.size for layer in self.layers.list())
        leased = {r["key"] for r in self.db.query("SELECT key FROM lease_resources WHERE kind = 'image'")}
        for img in self.images.list():
            if img.id in leased or self.refs.list(img.id) or self.containers.using_image(img.id):
                continue
            rep.layers += self.images.delete(img.id)
            rep.images.append(img.id)
        for layer in self.layers.list():  # layers orphaned by a crash between register and image
            if self.layers.references(layer.chain_id) == 0:
                rep.layers += self.layers.release(layer.chain_id)
        rep.blobs = self.gc_blobs()
        after = sum(s for _, s in self.content.walk()) + sum(layer.size for layer in self.layers.list())
        rep.reclaimed = max(0, before - after)
        return rep

    def df(self) -> dict[str, Any]:
        imgs = self.images.list()
        layers = self.layers.list()
        conts = self.containers.list()
        blobs = list(self.content.walk())
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
            problems.append(Problem("driver", cid, "layer data not known to the store"))
        for r in self.db.query("SELECT cache_id, pid FROM pending"):
            if not _pid_alive(r["pid"]):
                problems.append(Problem("pending", r["cache_id"], "interrupted operation not rolled back"))
        return problems

    def notes(self) -> list[Problem]:
        """What ``check`` shows as information, not damage: operations in flight in live
        processes, and resumable partial downloads (an interrupted pull resumes from them)."""
        out: list[Problem] = []
        for r in self.db.query("SELECT cache_id, pid FROM pending"):
            if _pid_alive(r["pid"]):
                out.append(Problem("pending", r["cache_id"], f"operation in flight (pid {r['pid']})"))
        for ing in self.content.ingests():
            out.append(Problem("ingest", str(ing.ref), f"partial ingest, resumable from byte {ing.offset}"))
        return out

    def layer_of(self, chain: ChainID) -> Layer:
        return self.layers.get(chain)


class _TeeReader(io.RawIOBase):
    """Pass bytes through to the reader and copy them into a content writer."""

    def __init__(self, raw: BinaryIO, writer: Any) -> None:
        self.raw = raw
        self.writer = writer

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.raw.readinto(b)  # type: ignore[attr-defined]
        if n:
            self.writer.write(memoryview(b)[:n])
        return n or 0

    def drain(self) -> None:
        buf = bytearray(1 << 20)
        while self.readinto(buf):
            pass
