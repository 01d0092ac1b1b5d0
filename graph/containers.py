"""Container records, storage side: a container is a read-write layer on an image's top layer,
a name, and the configuration it was created with. Running it is ``runtime``'s job; this module
owns the record and the RW layer's life (create, mount, changes, diff, remove).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from typing import Any, BinaryIO

from drivers.base import CacheID, Change, HeldCounts
from drivers.sys.record import Frozen
from graph.db import DB
from graph.digest import ChainID, Digest, ImageID
from graph.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from graph.images import Image
from graph.layers import LayerStore

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_ADJ = "brave calm eager fancy gentle happy jolly keen lucid merry nimble proud quiet swift tidy vivid".split()
_NOUN = "ada babbage curie darwin euler fermi gauss hopper knuth lovelace noether pascal ritchie turing".split()


class Container(Frozen):
    __slots__ = ("id", "name", "image_id", "parent_layer", "cache_id", "config", "state", "created")
    _uncompared = frozenset({"config"})
    id: str
    name: str
    image_id: ImageID | None
    parent_layer: ChainID | None
    cache_id: CacheID
    config: dict[str, Any]
    state: str
    created: float


def _pick(words: list[str]) -> str:
    """A word chosen from the kernel's random bytes, as ``secrets.choice`` would (its import loads
    random, hmac and base64: milliseconds on every ``lamina run`` without ``--name``); the bias
    of 2**32 modulo a dozen words is nothing for a name."""
    return words[int.from_bytes(os.urandom(4), "little") % len(words)]


class ContainerStore:
    def __init__(self, db: DB, layers: LayerStore) -> None:
        self.db = db
        self.layers = layers

    @staticmethod
    def _row(r: sqlite3.Row) -> Container:
        return Container(
            id=r["id"],
            name=r["name"],
            image_id=ImageID(Digest(r["image_id"])) if r["image_id"] else None,
            parent_layer=ChainID(Digest(r["parent_layer"])) if r["parent_layer"] else None,
            cache_id=CacheID(r["cache_id"]),
            config=json.loads(r["config"]),
            state=r["state"],
            created=r["created"],
        )

    def _free_name(self) -> str:
        for _ in range(100):
            name = f"{_pick(_ADJ)}_{_pick(_NOUN)}_{os.urandom(2).hex()}"
            if self.db.one("SELECT 1 FROM containers WHERE name = ?", (name,)) is None:
                return name
        raise AlreadyExists("could not find a free container name")

    def create(self, image: Image, *, name: str | None = None, config: dict[str, Any] | None = None) -> Container:
        """Make a container: its RW layer on the image's top layer, then its record.

        Raises: InvalidInput (bad name), AlreadyExists (name taken), NotFound (image's layer).
        Effect: nothing is left behind on failure (the RW layer is pending until the row lands).
        """
        if name is not None and not _NAME_RE.match(name):
            raise InvalidInput(f"invalid container name {name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")
        if name is not None and self.db.one("SELECT 1 FROM containers WHERE name = ?", (name,)):
            raise AlreadyExists(f"container name {name!r} is already in use")
        cid = os.urandom(32).hex()
        name = name or self._free_name()
        rw = self.layers.create_rw(image.top_layer)
        try:
            with self.db.transaction() as c:
                c.execute(
                    "INSERT INTO containers (id, name, image_id, parent_layer, cache_id, config, state, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'created', ?)",
                    (cid, name, image.id, image.top_layer, rw, json.dumps(config or {}), time.time()),
                )
                self.layers.commit_rw(c, rw)
        except sqlite3.IntegrityError as e:
            self.layers.abort_rw(rw)
            raise AlreadyExists(f"container name {name!r} is already in use") from e
        except BaseException:
            self.layers.abort_rw(rw)
            raise
        return self.get(cid)

    def get(self, key: str) -> Container:
        """By full ID, name, or unique ID prefix (Docker's lookup order)."""
        r = self.db.one("SELECT * FROM containers WHERE id = ? OR name = ?", (key, key.lstrip("/")))
        if r is None and key and all(ch in "0123456789abcdef" for ch in key):
            rows = self.db.query(
                "SELECT * FROM containers WHERE id >= ? AND id < ? LIMIT 2", (key, key + "g")
            )
            if len(rows) > 1:
                raise Conflict(f"container ID prefix {key} is ambiguous")
            r = rows[0] if rows else None
        if r is None:
            raise NotFound(f"no such container: {key}")
        return self._row(r)

    def list(self) -> list[Container]:
        return [self._row(r) for r in self.db.query("SELECT * FROM containers ORDER BY created DESC")]

    def using_image(self, image_id: ImageID) -> list[Container]:
        return [self._row(r) for r in self.db.query("SELECT * FROM containers WHERE image_id = ?", (image_id,))]

    def set_state(self, c: Container, state: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE containers SET state = ? WHERE id = ?", (state, c.id))

    def rename(self, c: Container, name: str) -> Container:
        """Give the container a new name (``docker rename``).
        Raises: InvalidInput (bad name), AlreadyExists (name taken). Repeat: same name is a no-op."""
        if not _NAME_RE.match(name):
            raise InvalidInput(f"invalid container name {name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")
        if name == c.name:
            return c
        try:
            with self.db.transaction() as conn:
                conn.execute("UPDATE containers SET name = ? WHERE id = ?", (name, c.id))
        except sqlite3.IntegrityError as e:
            raise AlreadyExists(f"container name {name!r} is already in use") from e
        return self.get(c.id)

    def update_config(self, c: Container, config: dict[str, Any]) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE containers SET config = ? WHERE id = ?", (json.dumps(config), c.id))

    def mount(self, c: Container, *, keep: bool = False) -> str:
        """The container's merged rootfs, held for this process (released by ``unmount``, or
        when the process ends, crash or not); ``keep``: held until an ``unmount`` from any
        process (``lamina mount``, a started container)."""
        return self.layers.mount(c.cache_id, keep=keep)

    def unmount(self, c: Container) -> None:
        self.layers.unmount(c.cache_id)

    def mounted(self, c: Container) -> int:
        driver = self.layers.driver
        return driver.held_count(c.cache_id) if isinstance(driver, HeldCounts) else 0

    def changes(self, c: Container) -> list[Change]:
        return self.layers.changes(c.cache_id, c.parent_layer)

    def diff(self, c: Container) -> BinaryIO:
        return self.layers.diff(c.cache_id, c.parent_layer)

    def size(self, c: Container) -> int:
        return self.layers.diff_size(c.cache_id, c.parent_layer)

    def remove(self, c: Container, *, force: bool = False) -> None:
        """Delete the record and the RW layer, then release the layers it held.

        Raises: Conflict while mounted (``lamina mount``) or running, unless ``force``.
        """
        if c.state in ("running", "paused") and not force:
            raise Conflict(f"container {c.name} is {c.state}: stop it first or use -f")
        held = self.mounted(c)
        if held and not force:
            raise Conflict(f"container {c.name} is mounted ({held}x): umount it first or use -f")
        for _ in range(held):
            self.layers.unmount(c.cache_id)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM containers WHERE id = ?", (c.id,))
            self.layers.orphan_rw(conn, c.cache_id)
        self.layers.remove_rw(c.cache_id)
        if c.parent_layer is not None:
            self.layers.release(c.parent_layer)
