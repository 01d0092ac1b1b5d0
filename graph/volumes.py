"""Volumes, storage side: Docker's ``local`` volume store beside the graph. A volume is a
directory ``<root>/volumes/<name>/_data`` that containers mount (``runtime`` mounts it), plus a
row in ``lamina.db``; this module owns the ``volumes`` and ``volume_users`` tables.

Named volumes are created by ``lamina volume create`` or on first use by ``-v NAME:/path``;
anonymous ones (``-v /path``, an image's ``Volumes``) get a random 64-hex name and go with
``rm -v`` or ``volume prune``. A volume that a container references (any state: Docker counts a
stopped container too) cannot be removed: ``Conflict``.

Crash discipline, as for layers: the row comes first, in state ``creating`` with the pid making
it, then the directory, then the row becomes ``ready``; removal marks the row ``removing`` (only
if nothing uses it), deletes the directory, then the row. ``recover`` (called when the store
opens) finishes both for rows whose pid is dead, so a crash never leaves a half-made volume
that looks ready or a directory nobody knows of.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

from drivers.sys.proc import pid_alive
from drivers.sys.record import Frozen
from graph.db import DB
from graph.errors import Conflict, InvalidInput, NotFound

# Docker's volume name rule (moby volume/local: ``[a-zA-Z0-9][a-zA-Z0-9_.-]+``)
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
DRIVER = "local"




def check_name(name: str) -> str:
    """A volume name as Docker accepts it; InvalidInput otherwise (a ``/`` would be a path)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or len(name) > 255:
        raise InvalidInput(f"invalid volume name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, "
                           "at least 2 characters (a path must start with /)")
    return name


class Volume(Frozen):
    __slots__ = ("name", "mountpoint", "created", "anonymous", "labels", "options", "driver")
    _defaults = {"driver": DRIVER}
    _uncompared = frozenset({"labels", "options"})
    name: str
    mountpoint: str  # the directory containers see (``.../_data``)
    created: float
    anonymous: bool
    labels: dict[str, str]
    options: dict[str, str]
    driver: str


class VolumeStore:
    def __init__(self, db: DB, root: Path) -> None:
        self.db = db
        self.root = root  # <store>/volumes

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _row(self, r: sqlite3.Row) -> Volume:
        return Volume(name=r["name"], mountpoint=str(self._dir(r["name"]) / "_data"), created=r["created"],
                      anonymous=bool(r["anonymous"]), labels=json.loads(r["labels"]),
                      options=json.loads(r["options"]), driver=r["driver"])

    # ---- create --------------------------------------------------------------------------------
    def create(self, name: str | None = None, *, labels: dict[str, str] | None = None,
               anonymous: bool = False) -> tuple[Volume, bool]:
        """The volume ``name`` (made now if missing) and whether this call made it; ``name=None``
        makes an anonymous volume with a random name.

        Requires: nothing. Effect: a row and ``<name>/_data`` (mode 0755, root's).
        Raises: InvalidInput (name), Conflict (being removed or made by another process).
        Repeat: a second create of a ready name returns it (Docker does the same).
        """
        if name is None:
            import secrets  # here: it loads random, hmac and base64, which opening a store does not need

            name, anonymous = secrets.token_hex(32), True
        check_name(name)
        with self.db.transaction() as c:
            r = c.execute("SELECT * FROM volumes WHERE name = ?", (name,)).fetchone()
            if r is not None:
                if r["state"] == "ready":
                    return self._row(r), False
                if pid_alive(r["pid"]):
                    raise Conflict(f"volume {name} is being {'created' if r['state'] == 'creating' else 'removed'}")
                c.execute("DELETE FROM volumes WHERE name = ?", (name,))  # a dead one's: redo it
            c.execute("INSERT INTO volumes (name, driver, labels, options, anonymous, state, pid, created) "
                      "VALUES (?, ?, ?, '{}', ?, 'creating', ?, ?)",
                      (name, DRIVER, json.dumps(labels or {}), int(anonymous), os.getpid(), time.time()))
        d = self._dir(name)
        try:
            shutil.rmtree(d, ignore_errors=True)  # a dead creator's leftovers
            self.root.mkdir(mode=0o701, exist_ok=True)
            d.mkdir(mode=0o701)
            (d / "_data").mkdir(mode=0o755)
            with self.db.transaction() as c:
                c.execute("UPDATE volumes SET state = 'ready', pid = 0 WHERE name = ?", (name,))
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            with self.db.transaction() as c:
                c.execute("DELETE FROM volumes WHERE name = ? AND state = 'creating'", (name,))
            raise
        return self.get(name), True

    # ---- look ----------------------------------------------------------------------------------
    def get(self, name: str) -> Volume:
        r = self.db.one("SELECT * FROM volumes WHERE name = ? AND state = 'ready'", (name,))
        if r is None:
            raise NotFound(f"no such volume: {name}")
        return self._row(r)

    def list(self) -> list[Volume]:
        return [self._row(r) for r in self.db.query("SELECT * FROM volumes WHERE state = 'ready' ORDER BY name")]

    def users(self, name: str) -> list[str]:
        """IDs of the containers that reference the volume."""
        return [r["container"] for r in self.db.query(
            "SELECT container FROM volume_users WHERE volume = ? ORDER BY container", (name,))]

    def in_use(self) -> set[str]:
        return {r["volume"] for r in self.db.query("SELECT DISTINCT volume FROM volume_users")}

    def of_container(self, container_id: str) -> list[Volume]:
        """The volumes a container references."""
        return [self._row(r) for r in self.db.query(
            "SELECT v.* FROM volumes v JOIN volume_users u ON u.volume = v.name "
            "WHERE u.container = ? ORDER BY v.name", (container_id,))]

    def size(self, name: str) -> int:
        """Bytes of the files in the volume (apparent sizes, each hard-linked inode once)."""
        total, seen = 0, set()
        for dirpath, dirnames, filenames in os.walk(self.get(name).mountpoint):
            for n in dirnames + filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, n))
                except OSError:
                    continue
                if not stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
        return total

    # ---- use -----------------------------------------------------------------------------------
    def attach(self, name: str, container_id: str) -> None:
        """Record that a container references the volume (it then cannot be removed).
        Raises: NotFound (no such ready volume or container). Repeat: idempotent."""
        with self.db.transaction() as c:
            if c.execute("SELECT 1 FROM volumes WHERE name = ? AND state = 'ready'", (name,)).fetchone() is None:
                raise NotFound(f"no such volume: {name}")
            try:
                c.execute("INSERT OR IGNORE INTO volume_users (volume, container) VALUES (?, ?)", (name, container_id))
            except sqlite3.IntegrityError:
                raise NotFound(f"no such container: {container_id}") from None

    # ---- remove --------------------------------------------------------------------------------
    def remove(self, name: str, *, force: bool = False) -> None:
        """Delete a volume and its data. ``force``: a missing volume is no error (Docker's
        ``volume rm -f``); a volume in use is refused all the same.

        Raises: NotFound, Conflict (in use, with the containers' short IDs). Repeat: NotFound.
        """
        with self.db.transaction() as c:
            r = c.execute("SELECT state FROM volumes WHERE name = ?", (name,)).fetchone()
            if r is None or r["state"] != "ready":
                if force:
                    return
                raise NotFound(f"no such volume: {name}")
            users = [u["container"] for u in c.execute(
                "SELECT container FROM volume_users WHERE volume = ? ORDER BY container", (name,))]
            if users:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(u[:12] for u in users)}]")
            c.execute("UPDATE volumes SET state = 'removing', pid = ? WHERE name = ?", (os.getpid(), name))
        self._finish_remove(name)

    def _finish_remove(self, name: str) -> None:
        shutil.rmtree(self._dir(name), ignore_errors=True)
        with self.db.transaction() as c:
            c.execute("DELETE FROM volumes WHERE name = ? AND state = 'removing'", (name,))

    def prune(self, *, all_named: bool = False) -> tuple[list[str], int]:
        """Remove unused volumes: anonymous ones, and named ones too with ``all_named`` (Docker
        23+ ``volume prune`` and ``-a``). The names removed and the bytes freed."""
        used = self.in_use()
        removed, freed = [], 0
        for v in self.list():
            if v.name in used or not (v.anonymous or all_named):
                continue
            size = self.size(v.name)
            try:
                self.remove(v.name)
            except (Conflict, NotFound):
                continue  # taken or removed meanwhile
            removed.append(v.name)
            freed += size
        return removed, freed

    # ---- crash recovery ------------------------------------------------------------------------
    def recover(self) -> None:
        """Finish creates and removes whose process died (see the module docstring)."""
        for r in self.db.query("SELECT name, state, pid FROM volumes WHERE state != 'ready'"):
            if pid_alive(r["pid"]):
                continue
            shutil.rmtree(self._dir(r["name"]), ignore_errors=True)
            with self.db.transaction() as c:
                c.execute("DELETE FROM volumes WHERE name = ? AND state = ? AND pid = ?",
                          (r["name"], r["state"], r["pid"]))
