"""The reference store: names (``repo:tag``, ``repo@digest``) pointing at images.

Names are stored fully normalised (``docker.io/library/busybox:latest``), so ``busybox``,
``library/busybox`` and ``docker.io/library/busybox:latest`` are one name. A digest reference
(``repo@sha256:…``) names a *manifest* digest, as in Docker; it is recorded when an image is
pulled or loaded by digest, and resolves to the image that manifest describes.
"""

from __future__ import annotations

import time

from drivers.sys.record import Frozen
from graph.db import DB
from graph.digest import Digest, ImageID
from graph.errors import NotFound
from graph.oci.reference import Reference, parse_reference


class RefRecord(Frozen):
    __slots__ = ("name", "image_id", "manifest")
    name: str
    image_id: ImageID
    manifest: Digest | None

    @property
    def reference(self) -> Reference:
        return parse_reference(self.name)


class ReferenceStore:
    def __init__(self, db: DB) -> None:
        self.db = db

    def add(self, ref: Reference, image_id: ImageID, manifest: Digest | None = None) -> None:
        """Point ``ref`` at ``image_id`` (moving it if it pointed elsewhere, as ``docker tag``
        does). Repeat: idempotent."""
        with self.db.transaction() as c:
            c.execute(
                "INSERT INTO refs (name, image_id, manifest, created) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id,"
                " manifest = excluded.manifest, created = excluded.created",
                (str(ref), image_id, manifest, time.time()),
            )

    def get(self, ref: Reference) -> RefRecord:
        r = self.db.one("SELECT * FROM refs WHERE name = ?", (str(ref),))
        if r is None:
            raise NotFound(f"no such image: {ref.familiar()}")
        return RefRecord(r["name"], ImageID(Digest(r["image_id"])), Digest(r["manifest"]) if r["manifest"] else None)

    def remove(self, ref: Reference) -> RefRecord:
        rec = self.get(ref)
        with self.db.transaction() as c:
            c.execute("DELETE FROM refs WHERE name = ?", (str(ref),))
        return rec

    def list(self, image_id: ImageID | None = None) -> list[RefRecord]:
        if image_id is None:
            rows = self.db.query("SELECT * FROM refs ORDER BY name")
        else:
            rows = self.db.query("SELECT * FROM refs WHERE image_id = ? ORDER BY name", (image_id,))
        return [
            RefRecord(r["name"], ImageID(Digest(r["image_id"])), Digest(r["manifest"]) if r["manifest"] else None)
            for r in rows
        ]
