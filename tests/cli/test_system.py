"""``lamina system df | prune | check``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Archives, Lamina


def _df(lamina: Lamina) -> dict:
    return json.loads(lamina("system", "df", "--format", "json").out)


def test_df_table_and_json(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    r = loaded("system", "df")
    assert r.lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [line.split()[0] for line in r.lines[1:7]] == ["Images", "Containers", "Local", "Layers", "Blobs", "Partials"]
    assert r.lines[-1] == "Driver: vfs"
    df = _df(loaded)
    assert list(df) == ["Images", "Containers", "Blobs", "Layers", "Volumes", "Partials", "Driver"]
    assert df["Volumes"] == {"Total": 0, "Active": 0, "Size": 0, "Reclaimable": 0}
    assert df["Partials"] == {"Total": 0, "Active": None, "Size": 0, "Reclaimable": 0}
    assert df["Images"]["Total"] == 1 and df["Images"]["Active"] == 1 and df["Images"]["Reclaimable"] == 0
    assert df["Containers"] == {"Total": 1, "Active": 0, "Size": 0, "Reclaimable": 0}
    assert df["Layers"]["Total"] == 3 and df["Blobs"]["Total"] == 5  # 3 layers, config, manifest
    assert df["Images"]["Size"] == df["Layers"]["Size"] > 8192
    assert df["Driver"]["Name"] == "vfs"


def test_prune_removes_dangling_images_only(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    root = Path(loaded("mount", "c").out.strip())
    (root / "extra.txt").write_text("extra\n")
    loaded("umount", "c")
    dangling = loaded("commit", "c").out.strip()
    r = loaded("system", "prune", "-f")
    assert "Deleted Images:" in r.out and f"deleted: {dangling}" in r.lines
    assert r.lines[-1].startswith("Total reclaimed space: ") and r.lines[-1] != "Total reclaimed space: 0B"
    assert _df(loaded)["Images"]["Total"] == 1  # app:1.0 stays (named, and in use)
    again = loaded("system", "prune", "-f")
    assert again.lines == ["Total reclaimed space: 0B"]
    loaded.check_clean()


def test_prune_asks_first(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    loaded("commit", "c")
    r = loaded("system", "prune", input=b"n\n", expect=1)
    assert "Are you sure" in r.err and r.err_lines[-1] == "lamina: system prune has been cancelled"
    r = loaded("system", "prune", input=b"", expect=1)  # no answer at all
    assert r.err_lines[-1] == "lamina: system prune has been cancelled"
    assert _df(loaded)["Images"]["Total"] == 2
    r = loaded("system", "prune", input=b"y\n")
    assert "Deleted Images:" in r.out
    assert _df(loaded)["Images"]["Total"] == 1


def test_check_ok(loaded: Lamina) -> None:
    assert loaded("system", "check").out == "ok\n"
    assert loaded("system", "check", "--quick").out == "ok\n"
    assert json.loads(loaded("system", "check", "--format", "json").out) == []


def test_check_reports_a_damaged_blob(loaded: Lamina, archives: Archives) -> None:
    blob = loaded.root / "blobs/sha256" / archives.app.layers[0].digest.removeprefix("sha256:")
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = loaded("system", "check", expect=6)
    assert any(archives.app.layers[0].digest in line and line.startswith("blob:") for line in r.lines)
    assert r.err_lines == [f"lamina: store {loaded.root} has 1 problem"]
    problems = json.loads(loaded("system", "check", "--format", "json", expect=6).out)
    assert [(p["Kind"], p["Object"]) for p in problems] == [("blob", archives.app.layers[0].digest)]
    # --quick does not re-hash blobs
    assert loaded("system", "check", "--quick").out == "ok\n"


def test_check_reports_missing_layer_data(loaded: Lamina) -> None:
    import shutil

    dirs = [p for p in (loaded.root / "drivers/vfs/dir").iterdir()]
    assert len(dirs) == 3
    shutil.rmtree(dirs[0])
    r = loaded("system", "check", "--quick", expect=6)
    assert any(line.startswith("layer:") and "missing" in line for line in r.lines), r.out
    assert len(r.err_lines) == 1


def test_check_shows_a_resumable_partial_ingest_as_information(loaded: Lamina) -> None:
    """A download interrupted mid-blob (what a killed pull leaves: a ref'd partial) is a normal
    state a later pull resumes from: check says so on an ``info:`` line and exits 0 (issue 19.1)."""
    from graph import Store
    from graph.digest import Digest

    data = b"x" * 10_000
    with Store(loaded.root) as store:
        w = store.content.ingest(Digest.of(data), len(data), ref="pull-test-partial")
        w.write(data[:4000])
        w.close()  # as after a transport error: the partial stays for resume
    for args in (("system", "check"), ("system", "check")):  # twice: a check changes nothing
        r = loaded(*args)
        assert r.lines[0] == "ok", r.out
        assert r.lines[1:] == ["info: ingest: pull-test-partial: partial ingest, resumable from byte 4000"]
    rows = json.loads(loaded("system", "check", "--format", "json").out)
    assert [(p["Kind"], p["Severity"]) for p in rows] == [("ingest", "info")]


def test_check_names_orphaned_driver_data_and_prune_removes_it(loaded: Lamina) -> None:
    """Driver data no metadata row knows (issue 14, item 6): ``check`` exits non-zero naming
    the path, ``prune`` removes it."""
    orphan = loaded.root / "drivers" / "vfs" / "dir" / ("ab" * 16)
    orphan.mkdir()
    (orphan / "junk").write_text("junk\n")
    r = loaded("system", "check", expect=6)
    assert r.err_lines[-1].startswith("lamina: ")
    assert str(orphan) in r.out and r.out.startswith(f"driver: {orphan.name}: ")
    r = loaded("system", "prune", "-f")
    assert "Deleted Driver Data:" in r.out and f"deleted: vfs: {orphan.name}" in r.lines
    assert not orphan.exists()
    assert loaded("system", "check").out == "ok\n"


def test_partials_have_their_own_df_line_and_expire_by_prune(loaded: Lamina) -> None:
    import os

    import hashlib

    ingest = loaded.root / "ingest"  # a partial download as a killed pull leaves it
    base = ingest / f"ref-{hashlib.sha256(b'pull-x').hexdigest()}"
    base.with_suffix(".json").write_text(json.dumps(
        {"ref": "pull-x", "expected": None, "size": None, "started": 1.0}))
    base.with_suffix(".data").write_bytes(b"p" * 5000)
    data = base.with_suffix(".data")
    df = _df(loaded)["Partials"]
    assert df == {"Total": 1, "Active": None, "Size": 5000, "Reclaimable": 0}  # young: kept
    assert [line.split()[0] for line in loaded("system", "df").lines[1:7]][-1] == "Partials"  # after Images, Containers, Local Volumes, Layers, Blobs
    loaded("system", "prune", "-f")
    assert data.exists()
    os.utime(data, (1, 1))  # last written long ago
    assert _df(loaded)["Partials"]["Reclaimable"] == 5000
    r = loaded("system", "prune", "-f")
    assert "deleted: pull-x" in r.lines and not data.exists()
    assert _df(loaded)["Partials"]["Total"] == 0
    loaded("system", "prune", "-f", "--partials-older-than", "soon", expect=125)
