"""Which stored blobs hold a layer's tar: DiffID -> (blob digest, media type). Owner of the
``layer_blobs`` table. A push or save sends the very bytes a pull or load stored (byte
identity), so the compressed blob of each layer is remembered here, not recomputed."""

from __future__ import annotations

from graph.content import ContentStore
from graph.db import DB
from graph.digest import DiffID, Digest


class LayerBlobs:
    """The DiffID -> blob map of one store."""

    def __init__(self, db: DB, content: ContentStore) -> None:
        self.db = db
        self.content = content

    def record(self, diff_id: DiffID, blob: Digest, media_type: str) -> None:
        """Remember that ``blob`` (in the content store) holds the layer ``diff_id``."""
        with self.db.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO layer_blobs (diff_id, blob, media_type) VALUES (?, ?, ?)",
                (diff_id, blob, media_type),
            )

    def recorded(self, diff_id: DiffID, blob: Digest) -> bool:
        """Whether that pair is recorded (the blob itself may since have been collected)."""
        return self.db.one("SELECT 1 FROM layer_blobs WHERE diff_id = ? AND blob = ?", (diff_id, blob)) is not None

    def first(self, diff_id: DiffID) -> tuple[Digest, str] | None:
        """A stored blob holding this layer's tar (the first recorded that is still stored: an
        earlier one may have been collected), with its media type."""
        for r in self.db.query("SELECT blob, media_type FROM layer_blobs WHERE diff_id = ? ORDER BY rowid",
                               (diff_id,)):
            if self.content.exists(Digest(r["blob"])):
                return Digest(r["blob"]), r["media_type"]
        return None

    def forget(self, diff_id: DiffID, blob: Digest) -> None:
        with self.db.transaction() as c:
            c.execute("DELETE FROM layer_blobs WHERE diff_id = ? AND blob = ?", (diff_id, blob))

    def live(self) -> set[str]:
        """Blobs of layers that are still registered (what a blob sweep must keep)."""
        return {r["blob"] for r in self.db.query(
            "SELECT blob FROM layer_blobs WHERE diff_id IN (SELECT diff_id FROM layers)")}

    def prune(self, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Forget the rows of layers no longer registered, except rows whose blob is in ``keep``
        (leased blobs: a pull records the blob a moment before it records the layer). Takes the
        write lock only when there is something to forget."""
        rows = self.db.query("SELECT diff_id, blob FROM layer_blobs WHERE diff_id NOT IN (SELECT diff_id FROM layers)")
        doomed = [(r["diff_id"], r["blob"]) for r in rows if r["blob"] not in keep]
        if not doomed:
            return
        with self.db.transaction() as c:
            c.executemany("DELETE FROM layer_blobs WHERE diff_id = ? AND blob = ?"
                          " AND diff_id NOT IN (SELECT diff_id FROM layers)", doomed)
