"""``lamina rmi``: untag, delete, refuse an image in use without -f, collect layers and blobs."""

from __future__ import annotations

import json

from tests.cli.conftest import Archives, Lamina


def _df(lamina: Lamina) -> dict:
    return json.loads(lamina("system", "df", "--format", "json").out)


def test_rmi_last_name_deletes_image_layers_and_blobs(loaded: Lamina, archives: Archives) -> None:
    r = loaded("rmi", "app:1.0")
    assert r.lines[0] == "Untagged: app:1.0"
    assert f"Deleted: {archives.app.id}" in r.lines
    df = _df(loaded)
    assert df["Images"]["Total"] == df["Layers"]["Total"] == df["Blobs"]["Total"] == 0
    loaded.check_clean()


def test_rmi_one_of_several_names_only_untags(loaded: Lamina, archives: Archives) -> None:
    loaded("tag", "app:1.0", "app:2")
    assert loaded("rmi", "app:2").lines == ["Untagged: app:2"]
    assert loaded("images", "-q").lines == [archives.app.id.removeprefix("sha256:")[:12]]


def test_rmi_by_id_with_several_names_needs_force(loaded: Lamina, archives: Archives) -> None:
    loaded("tag", "app:1.0", "app:2")
    short = archives.app.id.removeprefix("sha256:")[:12]
    loaded.fails("rmi", short, code=4)
    r = loaded("rmi", "-f", short)
    assert {"Untagged: app:1.0", "Untagged: app:2", f"Deleted: {archives.app.id}"} <= set(r.lines)
    loaded.check_clean()


def test_rmi_of_an_image_in_use_is_refused_without_force(loaded: Lamina, archives: Archives) -> None:
    loaded("create", "--name", "user", "app:1.0")
    r = loaded.fails("rmi", "app:1.0", code=4)
    assert "user" in r.err  # names the container
    assert loaded("images", "-q").out.strip()  # still there
    loaded.check_clean()
    # forced: untagged and kept, dangling, also after its container goes (as Docker), until
    # removed by id or pruned
    assert loaded("rmi", "-f", "app:1.0").lines == ["Untagged: app:1.0"]
    rows = json.loads(loaded("images", "--format", "json").out)
    assert [(r["Repository"], r["ID"]) for r in rows] == [("<none>", archives.app.id)]
    loaded("create", "app:1.0", expect=2)  # the name is gone
    loaded("rm", "user")
    assert loaded("images", "-q", "--no-trunc").lines == [archives.app.id]
    assert loaded("image", "prune", "-f").lines[:2] == ["Deleted Images:", f"deleted: {archives.app.id}"]
    assert loaded("images", "-q").out == ""
    assert _df(loaded)["Layers"]["Total"] == 0
    loaded.check_clean()


def test_rmi_several_stops_at_the_first_failure(lamina: Lamina, archives: Archives) -> None:
    lamina("load", "-i", str(archives.docker_tar))
    r = lamina("rmi", "small:1", "nosuch", "app:1.0", expect=2)
    assert r.lines[0] == "Untagged: small:1"
    assert r.err_lines == ["lamina: no such image: nosuch"]
    names = {(x["Repository"], x["Tag"]) for x in json.loads(lamina("images", "--format", "json").out)}
    assert names == {("app", "1.0"), ("app", "latest")}
    lamina.check_clean()


def test_rmi_unknown_and_bad_names(loaded: Lamina) -> None:
    loaded.fails("rmi", "nosuch", code=2)
    loaded.fails("rmi", "App:1.0", code=2)  # not a reference, not an ID: no such image
    loaded.fails("rmi", "0123456789ab", code=2)
    loaded.check_clean()
