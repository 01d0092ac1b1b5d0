"""``lamina commit``: a container's changes become a new image on top of its image."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Archives, Lamina


def _write(lamina: Lamina, container: str, rel: str, text: str) -> None:
    root = Path(lamina("mount", container).out.strip())
    try:
        (root / rel).write_text(text)
    finally:
        lamina("umount", container)


def test_commit_prints_the_new_id_and_names_it(loaded: Lamina, archives: Archives) -> None:
    loaded("create", "--name", "c", "app:1.0")
    _write(loaded, "c", "app/note.txt", "committed\n")
    new_id = loaded("commit", "-m", "add a note", "-a", "Ada <ada@example.com>", "c", "app:2").out.strip()
    assert new_id.startswith("sha256:") and len(new_id) == 71 and new_id != archives.app.id
    d = json.loads(loaded("inspect", "app:2").out)[0]
    assert d["Id"] == new_id
    assert d["RootFS"]["Layers"][:3] == archives.app.diff_ids and len(d["RootFS"]["Layers"]) == 4
    assert d["Config"]["WorkingDir"] == "/app"  # runtime config inherited
    rows = json.loads(loaded("images", "--format", "json").out)
    assert {(r["Repository"], r["Tag"]) for r in rows} == {("app", "1.0"), ("app", "2")}
    loaded.check_clean()


def test_committed_image_holds_the_change(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    _write(loaded, "c", "etc/os-release", "committed\n")
    loaded("commit", "c", "app:2")
    loaded("create", "--name", "d", "app:2")
    root = Path(loaded("mount", "d").out.strip())
    try:
        assert (root / "etc/os-release").read_text() == "committed\n"
        assert (root / "app/hello.txt").read_text() == "hello\n"
    finally:
        loaded("umount", "d")
    assert loaded("diff", "d").out == ""


def test_commit_without_a_name_is_untagged(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    new_id = loaded("commit", "c").out.strip()
    rows = json.loads(loaded("images", "--format", "json").out)
    assert [(r["Repository"], r["Tag"]) for r in rows if r["ID"] == new_id] == [("<none>", "<none>")]


def test_commit_with_a_bad_name_makes_nothing(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    _write(loaded, "c", "x.txt", "x\n")
    before = json.loads(loaded("system", "df", "--format", "json").out)
    loaded.fails("commit", "c", "Bad:Name", code=5)
    loaded.fails("commit", "c", "app@sha256:" + "a" * 64, code=5)
    after = json.loads(loaded("system", "df", "--format", "json").out)
    assert after["Images"] == before["Images"] and after["Blobs"]["Total"] == before["Blobs"]["Total"]
    loaded.check_clean()


def test_commit_unknown_container(loaded: Lamina) -> None:
    loaded.fails("commit", "nosuch", "x:1", code=2)
    loaded.check_clean()
