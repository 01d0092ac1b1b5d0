"""``lamina images``: the Docker table, -q, --no-trunc, and the JSON rows."""

from __future__ import annotations

import json

from pathlib import Path

from tests.cli.conftest import Archives, Lamina, small_image, write_oci_layout

HEADER = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]


def test_empty_store_shows_the_header_only(lamina: Lamina) -> None:
    r = lamina("images")
    assert r.lines[0].split("   ") and r.lines[0].startswith("REPOSITORY   TAG")
    assert len(r.lines) == 1
    assert json.loads(lamina("images", "--format", "json").out) == []
    assert lamina("images", "-q").out == ""


def test_table_columns(loaded: Lamina, archives: Archives) -> None:
    r = loaded("images")
    header, row = r.lines
    # columns start where the header's names start
    starts = [header.index(h) for h in HEADER]
    assert starts == sorted(starts)
    cells = [row[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
    assert cells[0] == "app" and cells[1] == "1.0"
    assert cells[2] == archives.app.id.removeprefix("sha256:")[:12]
    assert cells[3].endswith(" ago")  # created 2024-01-02 (from the config)
    assert cells[4] == "8.25kB"  # the layers' file bytes: 35 + 20 + 8192


def test_json_rows_have_stable_keys(loaded: Lamina, archives: Archives) -> None:
    loaded("tag", "app:1.0", "example.com:5000/team/app:2")
    rows = json.loads(loaded("images", "--format", "json").out)
    layers = json.loads(loaded("inspect", "app:1.0").out)[0]["Layers"]
    assert [list(r) for r in rows] == [["ID", "Repository", "Tag", "Digest", "Created", "Size"]] * 2
    assert {(r["Repository"], r["Tag"]) for r in rows} == {("app", "1.0"), ("example.com:5000/team/app", "2")}
    for r in rows:
        assert r["ID"] == archives.app.id
        assert r["Created"] == "2024-01-02T03:04:05.000000Z"
        assert r["Size"] == sum(x["Size"] for x in layers) > 8192  # the files of all layers


def test_quiet_lists_each_image_once(lamina: Lamina, archives: Archives) -> None:
    lamina("load", "-i", str(archives.docker_tar))
    ids = lamina("images", "-q").lines
    assert sorted(ids) == sorted(i.removeprefix("sha256:")[:12] for i in (archives.app.id, archives.small.id))
    full = lamina("images", "-q", "--no-trunc").lines
    assert sorted(full) == sorted([archives.app.id, archives.small.id])
    assert lamina("images", "-a", "-q").lines == ids  # no intermediate images in lamina


def test_untagged_image_shows_none(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    new_id = loaded("commit", "c").out.strip()
    rows = json.loads(loaded("images", "--format", "json").out)
    none = [r for r in rows if r["ID"] == new_id]
    assert [(r["Repository"], r["Tag"]) for r in none] == [("<none>", "<none>")]
    assert "<none>       <none>" in loaded("images").out


def test_an_unnamed_load_stays_until_removed_by_id_or_pruned(lamina: Lamina, tmp_path: Path) -> None:
    """Issue 14 item 5: a container's removal never removes a user's image (Docker keeps a
    dangling image until ``rmi <id>`` or ``image prune``)."""
    img = small_image(b"nameless\n")
    other = small_image(b"named\n")
    lamina("load", "-i", str(write_oci_layout(tmp_path / "nameless", [(img, None)])))
    lamina("load", "-i", str(write_oci_layout(tmp_path / "named", [(other, "named:1")])))
    lamina("create", "--name", "c", img.id)
    lamina("rm", "c")
    rows = json.loads(lamina("images", "--format", "json", "-f", "dangling=true").out)
    assert [(r["ID"], r["Repository"], r["Tag"]) for r in rows] == [(img.id, "<none>", "<none>")]
    rows = json.loads(lamina("images", "--format", "json", "-f", "dangling=false").out)
    assert [r["ID"] for r in rows] == [other.id]
    lamina.fails("images", "-f", "label=x", code=5)
    assert lamina("rmi", img.id).lines[0] == f"Deleted: {img.id}"
    lamina("load", "-i", str(tmp_path / "nameless"))
    lamina("create", "--name", "c2", img.id)
    r = lamina("image", "prune", "-f")
    assert r.lines == ["Total reclaimed space: 0B"]  # in use by c2: kept
    lamina("rm", "c2")
    r = lamina("image", "prune", input=b"y\n")
    assert "remove all dangling images" in r.err
    assert r.lines[:2] == ["Deleted Images:", f"deleted: {img.id}"]
    assert lamina("images", "-q", "--no-trunc").lines == [other.id]
    lamina.check_clean()
