"""``lamina tag``: names normalised like Docker's, by name or ID, bad names refused."""

from __future__ import annotations

import json

from tests.cli.conftest import Archives, Lamina


def _names(lamina: Lamina) -> set[tuple[str, str]]:
    return {(r["Repository"], r["Tag"]) for r in json.loads(lamina("images", "--format", "json").out)}


def test_tag_by_name_and_by_id(loaded: Lamina, archives: Archives) -> None:
    assert loaded("tag", "app:1.0", "app:stable").out == ""
    loaded("tag", archives.app.id.removeprefix("sha256:")[:12], "localhost:5000/app")
    loaded("tag", archives.app.id, "docker.io/library/other:x")
    assert _names(loaded) == {("app", "1.0"), ("app", "stable"), ("localhost:5000/app", "latest"), ("other", "x")}
    loaded.check_clean()


def test_a_tag_moves_to_the_new_image(lamina: Lamina, archives: Archives) -> None:
    lamina("load", "-i", str(archives.docker_tar))
    lamina("tag", "small:1", "app:latest")
    rows = json.loads(lamina("images", "--format", "json").out)
    assert {r["Tag"]: r["ID"] for r in rows if r["Repository"] == "app"} == {
        "1.0": archives.app.id, "latest": archives.small.id}


def test_bad_reference_is_refused(loaded: Lamina) -> None:
    before = _names(loaded)
    r = loaded.fails("tag", "app:1.0", "App:UPPER", code=5)
    assert "lowercase" in r.err
    loaded.fails("tag", "app:1.0", "app:bad tag", code=5)
    loaded.fails("tag", "app:1.0", "app@sha256:" + "0" * 64, code=5)
    assert _names(loaded) == before
    loaded.check_clean()


def test_unknown_source(loaded: Lamina) -> None:
    r = loaded.fails("tag", "nosuch:1", "x:1", code=2)
    assert "nosuch" in r.err
    loaded.check_clean()
