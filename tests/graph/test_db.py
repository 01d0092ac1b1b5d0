"""graph/db.py: the SQLite metadata database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from graph.db import DB, MIGRATIONS, split_statements
from graph.errors import Bug, Unsupported

REPO = Path(__file__).resolve().parents[2]

TABLES = {
    "layers": ["chain_id", "diff_id", "parent", "cache_id", "size", "created"],
    "layer_blobs": ["diff_id", "blob", "media_type"],
    "images": ["id", "top_layer", "created"],
    "manifests": ["digest", "media_type", "image_id", "parent_index"],
    "refs": ["name", "image_id", "manifest", "created"],
    "containers": ["id", "name", "image_id", "parent_layer", "cache_id", "config", "state", "created"],
    "leases": ["id", "pid", "created"],
    "lease_resources": ["lease", "kind", "key"],
    "pending": ["cache_id", "pid", "created"],
    "networks": ["id", "name", "driver", "subnet", "gateway", "bridge", "internal", "options", "labels", "created"],
    "network_endpoints": ["network_id", "container_id", "aliases", "static_ip", "ip", "mac", "ifname", "joined"],
}


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    d = DB(tmp_path / "lamina.db")
    try:
        yield d
    finally:
        d.close()


def _layer(db: DB, chain: str, parent: str | None = None) -> None:
    with db.transaction() as c:
        c.execute(
            "INSERT INTO layers (chain_id, diff_id, parent, cache_id, size, created) VALUES (?, ?, ?, ?, 0, 0)",
            (chain, chain, parent, "cache-" + chain),
        )


def test_migrates_a_new_file_to_the_newest_schema(db: DB) -> None:
    assert db.schema_version == len(MIGRATIONS)
    for table, columns in TABLES.items():
        assert [r["name"] for r in db.query(f"PRAGMA table_info({table})")] == columns
    assert db.one("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'layers_parent'")


def test_settings(db: DB, tmp_path: Path) -> None:
    assert db.one("PRAGMA journal_mode")[0] == "wal"  # type: ignore[index]
    assert db.one("PRAGMA synchronous")[0] == 2  # type: ignore[index]  # FULL
    assert db.one("PRAGMA foreign_keys")[0] == 1  # type: ignore[index]
    assert db.one("PRAGMA busy_timeout")[0] == 30_000  # type: ignore[index]
    _layer(db, "a")
    assert (tmp_path / "lamina.db-wal").exists()
    # WAL is a property of the file: another connection sees it too
    other = sqlite3.connect(tmp_path / "lamina.db")
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_reopen_is_idempotent(tmp_path: Path) -> None:
    with DB(tmp_path / "x.db") as db:
        _layer(db, "a")
    for _ in range(2):
        with DB(tmp_path / "x.db") as db:
            assert db.schema_version == len(MIGRATIONS)
            assert [r["chain_id"] for r in db.query("SELECT chain_id FROM layers")] == ["a"]


def test_refuses_a_newer_database(tmp_path: Path) -> None:
    with DB(tmp_path / "x.db") as db:
        db.conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(Unsupported, match=f"schema version {len(MIGRATIONS) + 1}"):
        DB(tmp_path / "x.db")


def test_stepwise_migration_and_failed_migration_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with DB(path) as db:
        _layer(db, "a")
    good = "ALTER TABLE layers ADD COLUMN note TEXT; CREATE TABLE extra (k TEXT PRIMARY KEY);"
    bad = "CREATE TABLE half (x); INSERT INTO nowhere VALUES (1);"
    with pytest.raises(sqlite3.OperationalError):
        DB(path, migrations=[*MIGRATIONS, good, bad])
    with DB(path, migrations=[*MIGRATIONS, good]) as db:
        # the good one was applied and kept; the bad one left nothing behind
        assert db.schema_version == len(MIGRATIONS) + 1
        assert db.one("SELECT name FROM sqlite_master WHERE name = 'half'") is None
        assert db.one("SELECT note FROM layers WHERE chain_id = 'a'")["note"] is None  # type: ignore[index]
        assert db.one("SELECT 1 FROM sqlite_master WHERE name = 'extra'")
    with pytest.raises(Unsupported):
        DB(path)  # the old code now meets a newer file


def test_rollback_on_exception(db: DB) -> None:
    with pytest.raises(RuntimeError):
        with db.transaction() as c:
            c.execute("INSERT INTO leases VALUES ('l1', 1, 0)")
            raise RuntimeError("boom")
    assert db.query("SELECT * FROM leases") == []
    assert not db.conn.in_transaction


def test_nested_transactions_are_savepoints(db: DB) -> None:
    with db.transaction() as c:
        c.execute("INSERT INTO leases VALUES ('outer', 1, 0)")
        with pytest.raises(RuntimeError):
            with db.transaction() as c2:
                c2.execute("INSERT INTO leases VALUES ('inner', 1, 0)")
                raise RuntimeError("undo the inner block only")
        with db.transaction() as c3:
            c3.execute("INSERT INTO leases VALUES ('inner2', 1, 0)")
            with db.transaction() as c4:
                c4.execute("INSERT INTO leases VALUES ('deepest', 1, 0)")
    assert sorted(r["id"] for r in db.query("SELECT id FROM leases")) == ["deepest", "inner2", "outer"]


def test_failure_in_an_inner_block_undoes_everything_when_not_caught(db: DB) -> None:
    with pytest.raises(RuntimeError):
        with db.transaction() as c:
            c.execute("INSERT INTO leases VALUES ('outer', 1, 0)")
            with db.transaction() as c2:
                c2.execute("INSERT INTO leases VALUES ('inner', 1, 0)")
                raise RuntimeError("boom")
    assert db.query("SELECT * FROM leases") == []


def test_foreign_keys_are_enforced(db: DB) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        _layer(db, "child", parent="no-such-parent")
    with pytest.raises(sqlite3.IntegrityError):
        with db.transaction() as c:
            c.execute("INSERT INTO refs VALUES ('docker.io/library/x:latest', 'sha256:none', NULL, 0)")
    # ON DELETE CASCADE: a lease's resources go with it
    with db.transaction() as c:
        c.execute("INSERT INTO leases VALUES ('l', 1, 0)")
        c.execute("INSERT INTO lease_resources VALUES ('l', 'blob', 'sha256:x')")
        c.execute("DELETE FROM leases WHERE id = 'l'")
    assert db.query("SELECT * FROM lease_resources") == []


def test_close_inside_a_transaction_is_a_bug(db: DB) -> None:
    with pytest.raises(Bug):
        with db.transaction():
            db.close()


def test_threads_share_one_db(db: DB) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                with db.transaction() as c:
                    c.execute("INSERT INTO pending VALUES (?, ?, 0)", (f"{t}-{i}", t))
                    assert c.execute("SELECT COUNT(*) FROM pending WHERE pid = ?", (t,)).fetchone()[0] == i + 1
                db.query("SELECT COUNT(*) FROM pending")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert db.one("SELECT COUNT(*) AS n FROM pending")["n"] == 200  # type: ignore[index]


WRITER = r"""
import sys
from pathlib import Path
from graph.db import DB
path, me, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.stdin.readline()  # start together
db = DB(Path(path))  # on a fresh file, every process creates, sets WAL and migrates at once
for i in range(n):
    with db.transaction() as c:
        # read, then write: a deferred BEGIN would fail to upgrade ("database is locked") and
        # a lost update would show in the final count
        row = c.execute("SELECT pid FROM leases WHERE id = 'counter'").fetchone()
        if row is None:
            c.execute("INSERT INTO leases VALUES ('counter', 1, 0)")
        else:
            c.execute("UPDATE leases SET pid = ? WHERE id = 'counter'", (row[0] + 1,))
        c.execute("INSERT INTO pending VALUES (?, ?, 0)", (f"{me}-{i}", i))
    db.query("SELECT COUNT(*) FROM pending")  # readers between the writes
db.close()
print("ok", flush=True)
"""


@pytest.mark.parametrize("fresh", [True, False])
def test_processes_write_concurrently_without_lock_errors(tmp_path: Path, fresh: bool) -> None:
    path = tmp_path / "lamina.db"
    if not fresh:
        DB(path).close()
    n, k = 150, 4
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(i), str(n)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        for i in range(k)
    ]
    try:
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for (out, err), p in zip(outs, procs):
        assert p.returncode == 0, err
        assert out.strip() == "ok"
    with DB(path) as db:
        assert db.schema_version == len(MIGRATIONS)
        assert db.one("SELECT pid FROM leases WHERE id = 'counter'")[0] == n * k  # type: ignore[index]
        assert db.one("SELECT COUNT(*) FROM pending")[0] == n * k  # type: ignore[index]


def test_split_statements() -> None:
    script = """
    CREATE TABLE a (x TEXT DEFAULT 'semi;colon');  -- a comment; with a semicolon
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
      UPDATE a SET x = 'y;' WHERE x = 'z';
    END;
    -- trailing comment only
    """
    parts = split_statements(script)
    assert len(parts) == 2
    assert "CREATE TRIGGER" in parts[1] and parts[1].endswith("END;")
    conn = sqlite3.connect(":memory:")
    try:
        for stmt in parts:
            conn.execute(stmt)  # each piece is one valid statement
        conn.execute("INSERT INTO a VALUES ('z')")
        assert conn.execute("SELECT x FROM a").fetchone()[0] == "y;"
    finally:
        conn.close()
    with pytest.raises(Bug):
        split_statements("CREATE TABLE b (x DEFAULT 'unterminated")
