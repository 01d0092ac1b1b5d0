"""``lamina inspect``: images and containers as Docker-shaped JSON; containers win a name clash."""

from __future__ import annotations

import json

from tests.cli.conftest import Archives, Lamina


def test_inspect_image(loaded: Lamina, archives: Archives) -> None:
    docs = json.loads(loaded("inspect", "app:1.0").out)
    assert len(docs) == 1
    d = docs[0]
    assert d["Id"] == archives.app.id
    assert d["RepoTags"] == ["app:1.0"]
    assert d["RootFS"]["Layers"] == archives.app.diff_ids
    assert d["Config"]["WorkingDir"] == "/app"
    assert d["Config"]["Labels"] == {"org.example.test": "yes"}
    assert d["Os"] == "linux"
    assert d["GraphDriver"]["Name"] == "vfs"
    # by ID and short ID: the same document
    assert json.loads(loaded("inspect", archives.app.id).out) == docs
    assert json.loads(loaded("inspect", "--type", "image", archives.app.id.removeprefix("sha256:")[:8]).out) == docs


def test_inspect_container(loaded: Lamina, archives: Archives) -> None:
    cid = loaded("create", "--name", "web", "app:1.0", "echo", "hi").out.strip()
    d = json.loads(loaded("inspect", "web").out)[0]
    assert d["Id"] == cid and d["Name"] == "/web"
    assert d["Image"] == archives.app.id
    assert d["Path"] == "echo" and d["Args"] == ["hi"]
    assert d["State"]["Status"] == "created"
    assert d["Config"]["Image"] == "app:1.0"
    assert d["HostConfig"]["NetworkMode"] == "none"
    assert d["GraphDriver"]["Name"] == "vfs"
    assert "SizeRw" not in d
    assert json.loads(loaded("inspect", "--size", cid[:10]).out)[0]["SizeRw"] == 0


def test_several_names_and_container_first(loaded: Lamina, archives: Archives) -> None:
    cid = loaded("create", "--name", "app", "app:1.0").out.strip()
    docs = json.loads(loaded("inspect", "app", "app:1.0").out)
    assert [d["Id"] for d in docs] == [cid, archives.app.id]
    # "app" is also an image name (app:latest is not loaded here, so --type image fails)
    loaded.fails("inspect", "--type", "image", "app", code=2)
    assert json.loads(loaded("inspect", "--type", "container", "app").out)[0]["Id"] == cid


def test_unknown_name_prints_nothing(loaded: Lamina) -> None:
    r = loaded.fails("inspect", "app:1.0", "nosuch", code=2)
    assert "nosuch" in r.err
    loaded.fails("inspect", "--type", "container", "app:1.0", code=2)
    loaded.fails("inspect", "Bad/UPPER", code=2)
    loaded.check_clean()
