"""The image store: image configs by image ID, and the manifests known to describe them.

An image is its config (the JSON that lists the layers' DiffIDs and the runtime defaults); its ID
is the sha256 of the config bytes, so the same config pulled twice, or loaded from an archive and
pulled, is one image. The config bytes live in the content store; this module keeps one row per
image with the ChainID of its top layer (derived from the DiffIDs, checked to be registered), and
one row per manifest (bytes also in the content store) that was pulled or loaded for it, so
``save`` and ``push`` hand out the very bytes that came in.
"""

from __future__ import annotations

import sqlite3
import time

from drivers.sys.record import Frozen
from graph.content import ContentStore
from graph.db import DB
from graph.digest import ChainID, Digest, ImageID, chain_ids
from graph.errors import AlreadyExists, InvalidInput, NotFound
from graph import leases
from graph.layer_blobs import LayerBlobs
from graph.layers import LayerStore

TYPE_CHECKING = False
if TYPE_CHECKING:  # the config parser loads when a config is parsed (``lamina images`` reads one field)
    from typing import Any

    from graph.oci.formats import ImageConfig


class Image(Frozen):
    """An image as recorded: its ID, the ChainID of its top layer (None for no layers)."""

    __slots__ = ("id", "top_layer", "created")
    id: ImageID
    top_layer: ChainID | None
    created: float


class ManifestRecord(Frozen):
    __slots__ = ("digest", "media_type", "image_id", "parent_index")
    digest: Digest
    media_type: str
    image_id: ImageID
    parent_index: Digest | None


class ImageStore:
    def __init__(self, db: DB, content: ContentStore, layers: LayerStore, layer_blobs: LayerBlobs) -> None:
        self.db = db
        self.content = content
        self.layers = layers
        self.layer_blobs = layer_blobs

    @staticmethod
    def _row(r: sqlite3.Row) -> Image:
        top = r["top_layer"]
        return Image(
            id=ImageID(Digest(r["id"])),
            top_layer=ChainID(Digest(top)) if top else None,
            created=r["created"],
        )

    def create(self, config_raw: bytes, *, lease: str | None = None) -> Image:
        """Record an image from its config bytes.

        Requires: every layer the config lists is registered, in order.
        Effect: the config goes into the content store (verified), the image row is written.
        Raises: InvalidInput (config fails validation), NotFound (a layer is missing).
        Repeat: creating an existing image returns it unchanged.
        """
        from graph.oci.formats import parse_config

        cfg = parse_config(config_raw)
        chains = chain_ids(cfg.diff_ids)
        top = chains[-1] if chains else None
        if top is not None and not self.layers.exists(top):
            raise NotFound(f"image {cfg.id}: its top layer {top} is not registered")
        self.content.put_bytes(config_raw, expected=cfg.id)
        with self.db.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO images (id, top_layer, created) VALUES (?, ?, ?)",
                (cfg.id, top, time.time()),
            )
            if lease is not None:
                leases.hold(c, lease, "image", cfg.id)
        return self.get(cfg.id)

    def add_manifest(
        self,
        digest: Digest,
        media_type: str,
        image_id: ImageID,
        parent_index: Digest | None = None,
    ) -> None:
        """Record that the manifest (bytes already in the content store) describes the image."""
        if not self.content.exists(digest):
            raise NotFound(f"manifest blob {digest} is not in the content store")
        with self.db.transaction() as c:
            c.execute(
                "INSERT INTO manifests (digest, media_type, image_id, parent_index) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(digest) DO UPDATE SET parent_index = coalesce(excluded.parent_index, parent_index)",
                (digest, media_type, image_id, parent_index),
            )

    def has_manifest(self, digest: Digest) -> bool:
        return self.db.one("SELECT 1 FROM manifests WHERE digest = ?", (digest,)) is not None

    def image_of_manifest(self, digest: Digest) -> ImageID | None:
        """The image a recorded manifest describes (None: no such manifest row)."""
        r = self.db.one("SELECT image_id FROM manifests WHERE digest = ?", (digest,))
        return ImageID(Digest(r["image_id"])) if r is not None else None

    def remove_manifest(self, digest: Digest) -> None:
        """Forget a manifest row (the bytes stay in the content store until collected)."""
        with self.db.transaction() as c:
            c.execute("DELETE FROM manifests WHERE digest = ?", (digest,))

    def manifest_digests(self) -> set[str]:
        """Every recorded manifest and parent index digest (blobs a sweep must keep)."""
        live = {r["digest"] for r in self.db.query("SELECT digest FROM manifests")}
        live |= {r["parent_index"] for r in self.db.query(
            "SELECT parent_index FROM manifests WHERE parent_index IS NOT NULL")}
        return live

    def ids(self) -> set[str]:
        return {r["id"] for r in self.db.query("SELECT id FROM images")}

    def build_manifest(self, img: Image) -> bytes:
        """A canonical OCI manifest for an image from its recorded layer blobs (what push and
        save send for an image that came without one, e.g. from ``commit``)."""
        from graph.oci import formats

        cfg = self.config(img.id)
        layers = []
        for diff_id in cfg.diff_ids:
            found = self.layer_blobs.first(diff_id)
            if found is None:
                raise NotFound(f"image {img.id}: no stored blob for layer {diff_id}")
            digest, media_type = found
            layers.append(formats.Descriptor(media_type=media_type, digest=digest, size=self.content.size(digest)))
        config = formats.Descriptor(media_type=formats.MEDIA_OCI_CONFIG, digest=img.id, size=len(cfg.raw))
        return formats.build_manifest(config, layers, oci=True)

    def manifests(self, image_id: ImageID) -> list[ManifestRecord]:
        return [
            ManifestRecord(
                Digest(r["digest"]),
                r["media_type"],
                ImageID(Digest(r["image_id"])),
                Digest(r["parent_index"]) if r["parent_index"] else None,
            )
            for r in self.db.query(
                "SELECT * FROM manifests WHERE image_id = ? ORDER BY rowid", (image_id,)
            )
        ]

    def get(self, id: ImageID) -> Image:
        r = self.db.one("SELECT * FROM images WHERE id = ?", (id,))
        if r is None:
            raise NotFound(f"image {id} not found")
        return self._row(r)

    def exists(self, id: ImageID) -> bool:
        return self.db.one("SELECT 1 FROM images WHERE id = ?", (id,)) is not None

    def list(self) -> list[Image]:
        return [self._row(r) for r in self.db.query("SELECT * FROM images ORDER BY created DESC")]

    def config(self, id: ImageID) -> "ImageConfig":
        """The parsed config of an image (read from the content store)."""
        from graph.oci.formats import parse_config

        self.get(id)
        return parse_config(self.content.read_bytes(id))

    def created_text(self, id: ImageID) -> str | None:
        """The config's ``created`` field as written (RFC 3339), or None: what a listing shows,
        read without the full parse (``config``), which the config passed when it was stored."""
        import json

        self.get(id)
        created = json.loads(self.content.read_bytes(id)).get("created")
        return created if isinstance(created, str) else None

    def runtime_config(self, id: ImageID) -> dict[str, Any]:
        """The config's runtime object (``Env``, ``Cmd``, ``Entrypoint``, ...) as
        ``config(id).config`` gives it, read without the full parse, whose import and checks
        ``lamina run`` would pay at every start; the config passed that parse when it was stored
        (``create``). Anything but an object (or nothing) falls back to the full parse, which
        says what is wrong."""
        import json

        self.get(id)
        c = json.loads(self.content.read_bytes(id)).get("config")
        if c is None:
            return {}
        if not isinstance(c, dict):
            return self.config(id).config
        out = dict(c)
        for k in ("Entrypoint", "Cmd"):  # Docker's StrSlice: one string is a one-item list
            if isinstance(out.get(k), str):
                out[k] = [out[k]]
        return out

    def by_prefix(self, prefix: str) -> Image:
        """An image by (short) ID: ``sha256:abc…`` or ``abc…``; ambiguous prefixes refused."""
        hex_ = prefix[7:] if prefix.startswith("sha256:") else prefix
        if not hex_ or any(ch not in "0123456789abcdef" for ch in hex_):
            raise InvalidInput(f"not an image ID: {prefix!r}")
        rows = self.db.query(
            "SELECT * FROM images WHERE id >= ? AND id < ? LIMIT 2",
            ("sha256:" + hex_, "sha256:" + hex_ + "g"),
        )
        if not rows:
            raise NotFound(f"image {prefix} not found")
        if len(rows) > 1:
            raise AlreadyExists(f"image ID prefix {prefix} is ambiguous")
        return self._row(rows[0])

    def unrecord(self, id: ImageID) -> None:
        """Remove the image row (its manifest rows go with it), nothing else: the garbage
        collector (``graph.gc``) takes the layers and blobs this leaves unreferenced. Inside a
        caller's transaction it joins that transaction (``rmi``: refs and image row at once).
        Repeat: a no-op for a missing image."""
        with self.db.transaction() as c:
            c.execute("DELETE FROM images WHERE id = ?", (id,))

    def delete(self, id: ImageID) -> list[ChainID]:
        """Remove the image row (its manifest rows go with it) and release its layers.

        Requires: the caller has checked references and containers (``Store.rmi`` does).
        Returns the ChainIDs of layers that were removed.
        """
        img = self.get(id)
        with self.db.transaction() as c:
            c.execute("DELETE FROM images WHERE id = ?", (id,))
        return self.layers.release(img.top_layer) if img.top_layer else []
