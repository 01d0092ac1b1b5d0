"""The metadata database: one SQLite file (``lamina.db``) for references, images, manifests,
layers, containers, leases and pending driver work. Every change of metadata is one transaction.

Settings, and why:

- ``journal_mode=WAL``: readers never block the writer nor each other, so a long ``lamina images``
  does not stall a pull in another process.
- ``synchronous=FULL``: in WAL mode ``NORMAL`` is durable against a *process* crash (a killed
  lamina loses nothing committed) but a *power loss* may roll back the last transactions. The
  store's crash recovery relies on intent rows (``pending``, ``leases``) being on disk *before*
  the driver data they describe is created; with ``NORMAL`` a power loss could keep the data and
  lose the row, leaking a layer directory nobody knows of, or forget a pull that was reported
  done. ``FULL`` syncs the WAL at each commit; lamina commits a handful of transactions per
  operation, so the cost is a few fsyncs of a few KiB each.
- ``foreign_keys=ON``: the schema's references are enforced (SQLite's default is off).
- ``busy_timeout`` 30 s and ``BEGIN IMMEDIATE``: writers take the write lock when the transaction
  begins, so two processes never both read and then fail to upgrade ("database is locked");
  the second one waits for the first.
- ``isolation_level=None``: the sqlite3 module issues no implicit BEGIN; ``transaction()`` does.

Schema versions live in ``PRAGMA user_version``. ``MIGRATIONS[i]`` moves version ``i`` to
``i + 1`` and runs in one transaction together with the version bump, so a migration is applied
whole or not at all, and two processes opening an old database at once migrate it once. A
database newer than this code is refused (``Unsupported``) rather than misread. Foreign keys
cannot be switched off inside a transaction: a future migration that rebuilds a table must keep
the constraints satisfied at each statement (or use ``PRAGMA defer_foreign_keys``).
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Sequence

from graph.errors import Bug, Unsupported

BUSY_TIMEOUT_MS = 30_000

_SCHEMA_V1 = """
CREATE TABLE layers (
  chain_id TEXT PRIMARY KEY, diff_id TEXT NOT NULL, parent TEXT REFERENCES layers(chain_id),
  cache_id TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, created REAL NOT NULL);
CREATE INDEX layers_parent ON layers(parent);
CREATE TABLE layer_blobs (   -- which compressed/uncompressed blobs hold a layer's tar (for push/save byte-identity)
  diff_id TEXT NOT NULL, blob TEXT NOT NULL, media_type TEXT NOT NULL, PRIMARY KEY (diff_id, blob));
CREATE TABLE images (
  id TEXT PRIMARY KEY,                    -- sha256 of config bytes (config blob is in the content store)
  top_layer TEXT REFERENCES layers(chain_id), created REAL NOT NULL);
CREATE TABLE manifests (                  -- manifests (and indexes) known to describe images; bytes in content store
  digest TEXT PRIMARY KEY, media_type TEXT NOT NULL, image_id TEXT REFERENCES images(id) ON DELETE CASCADE,
  parent_index TEXT);                     -- the index digest it was selected from, if any
CREATE TABLE refs (
  name TEXT PRIMARY KEY,                  -- normalised: docker.io/library/busybox:latest or ...@sha256:...
  image_id TEXT NOT NULL REFERENCES images(id), manifest TEXT, created REAL NOT NULL);
CREATE TABLE containers (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, image_id TEXT REFERENCES images(id),
  parent_layer TEXT REFERENCES layers(chain_id), cache_id TEXT NOT NULL UNIQUE,
  config TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'created', created REAL NOT NULL);
CREATE TABLE leases (                     -- protect objects being created from GC; owner pid for crash recovery
  id TEXT PRIMARY KEY, pid INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE lease_resources (lease TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
  kind TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (lease, kind, key));
CREATE TABLE pending (                    -- driver data created but not yet recorded: cache-ids to remove on open
  cache_id TEXT PRIMARY KEY, pid INTEGER NOT NULL, created REAL NOT NULL);
"""

# v2: networks (owner: graph.networks). A network's row and its endpoints (which container is
# attached, with which aliases and requested address; ``ip``/``mac``/``ifname`` set only while the
# container runs). Endpoints go with their container (ON DELETE CASCADE).
_SCHEMA_V2_NETWORKS = """
CREATE TABLE networks (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, driver TEXT NOT NULL,
  subnet TEXT UNIQUE, gateway TEXT, bridge TEXT UNIQUE, internal INTEGER NOT NULL DEFAULT 0,
  options TEXT NOT NULL DEFAULT '{}', labels TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL);
CREATE TABLE network_endpoints (
  network_id TEXT NOT NULL REFERENCES networks(id),
  container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
  aliases TEXT NOT NULL DEFAULT '[]', static_ip TEXT, ip TEXT, mac TEXT, ifname TEXT,
  joined REAL NOT NULL, PRIMARY KEY (network_id, container_id), UNIQUE (network_id, ip));
CREATE INDEX network_endpoints_container ON network_endpoints(container_id);
"""

MIGRATIONS: list[str] = [_SCHEMA_V1, _SCHEMA_V2_NETWORKS]
"""``MIGRATIONS[i]`` migrates schema version ``i`` to ``i + 1``. Append only; never edit one that
has shipped."""


def split_statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (``sqlite3.complete_statement`` decides, so a
    ``;`` inside a string, a comment or a trigger body does not split). ``executescript`` cannot
    be used for migrations: it commits any open transaction first."""
    out: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if _has_code(current):
                out.append(current.strip())
            current = ""
    if _has_code(current.rstrip(";")):
        raise Bug(f"incomplete SQL statement in migration: {current.strip()[:60]!r}")
    return out


def _has_code(sql: str) -> bool:
    """Whether ``sql`` holds anything but whitespace, ``--`` comments and semicolons."""
    for line in sql.splitlines():
        code = line.split("--", 1)[0].strip().strip(";").strip()
        if code:
            return True
    return False


class DB:
    """The metadata database at ``path`` (created and migrated to the newest schema on open).

    Thread-safe: one re-entrant lock serialises use of the connection, and a transaction holds
    it from BEGIN to COMMIT, so another thread's query never lands inside it. (Do not wait, inside
    a transaction, for a thread that needs the database.) Several processes may open one file.
    """

    def __init__(self, path: Path, *, migrations: Sequence[str] = MIGRATIONS) -> None:
        """Open or create the database and migrate it to ``len(migrations)``.

        Raises: Unsupported (the file's schema is newer than this code), sqlite3.Error (not a
        database, unreadable).
        """
        self.path = Path(path)
        self._migrations = list(migrations)
        self._lock = threading.RLock()
        self._depth = 0  # 0: no transaction; n: inside n nested transaction() blocks
        self.conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._check_version()
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise Unsupported(f"database {self.path}: cannot use WAL journal (got {mode!r})")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except BaseException:
            self.conn.close()
            raise

    # -- use --------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` when the block
        raises. Nested use opens a ``SAVEPOINT``: an exception leaving the inner block undoes only
        the inner block's changes (and goes on up, unless the outer block catches it).

        Requires: nothing.  Effect: the block's changes are committed together or not at all.
        Raises: what the block raises; sqlite3.OperationalError if the write lock is not free
        within the busy timeout.  Repeat: each use is its own transaction.
        """
        with self._lock:
            if self._depth == 0:
                self.conn.execute("BEGIN IMMEDIATE")
                self._depth = 1
                try:
                    yield self.conn
                    self.conn.execute("COMMIT")
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
                finally:
                    self._depth = 0
            else:
                name = f"lamina_sp{self._depth}"
                self.conn.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield self.conn
                    self.conn.execute(f"RELEASE {name}")
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute(f"ROLLBACK TO {name}")
                        self.conn.execute(f"RELEASE {name}")
                    raise
                finally:
                    self._depth -= 1

    def query(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """All rows of one statement (a consistent snapshot; inside a transaction, its view)."""
        with self._lock:
            return self.conn.execute(sql, args).fetchall()

    def one(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Row | None:
        """The first row of one statement, or None."""
        with self._lock:
            row: sqlite3.Row | None = self.conn.execute(sql, args).fetchone()
            return row

    @property
    def schema_version(self) -> int:
        """The schema version of the open file (``PRAGMA user_version``)."""
        with self._lock:
            return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection. Repeat: harmless."""
        with self._lock:
            if self._depth:
                raise Bug(f"database {self.path} closed inside a transaction")
            self.conn.close()

    def __enter__(self) -> "DB":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- schema -----------------------------------------------------------------------------------

    def _check_version(self) -> None:
        v = self.schema_version
        if v > len(self._migrations):
            raise Unsupported(
                f"database {self.path} has schema version {v}; this lamina knows up to "
                f"{len(self._migrations)} (upgrade lamina)"
            )

    def _migrate(self) -> None:
        for target in range(1, len(self._migrations) + 1):
            if self.schema_version >= target:
                continue
            with self.transaction() as c:
                # Re-read under the write lock: another process may have migrated meanwhile.
                v = int(c.execute("PRAGMA user_version").fetchone()[0])
                if v >= target:
                    continue
                for stmt in split_statements(self._migrations[v]):
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version = {v + 1}")
        self._check_version()  # a newer lamina may have migrated past us meanwhile
