"""Store-level operations on vfs: tag, rmi, containers, commit, prune, check, driver binding."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from graph import Conflict, Image, NotFound, Store, parse_reference
from tests.tarbuild import E, make_tar

BASE = make_tar([E("etc", kind="dir"), E("etc/hostname", b"base\n"), E("bin", kind="dir"),
                 E("bin/true", b"\x7fELF", mode=0o755)])
APP = make_tar([E("srv", kind="dir"), E("srv/app.txt", b"app\n")])


def make_image(store: Store, tars: list[bytes], ref: str | None, cmd: list[str] | None = None) -> Image:
    """Register the layers, store their blobs, create config + manifest, tag."""
    from graph.oci import formats

    parent = None
    diff_ids = []
    for t in tars:
        layer = store.layers.register(io.BytesIO(t), parent)
        blob = store.content.put_bytes(t)
        store.record_layer_blob(layer.diff_id, blob, formats.MEDIA_OCI_LAYER, len(t))
        parent = layer.chain_id
        diff_ids.append(layer.diff_id)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": cmd or ["/bin/true"]},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": []},
                     sort_keys=True).encode()
    img = store.images.create(cfg)
    m = store.images.build_manifest(img)
    store.images.add_manifest(store.content.put_bytes(m), formats.MEDIA_OCI_MANIFEST, img.id)
    if ref:
        store.refs.add(parse_reference(ref), img.id)
    return img


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "root", driver="vfs")
    yield s
    s.driver.cleanup()
    s.close()


def test_resolve_by_normalised_ref_and_short_id(store: Store) -> None:
    img = make_image(store, [BASE], "busybox")
    for name in ["busybox", "busybox:latest", "library/busybox", "docker.io/library/busybox:latest",
                 img.id, img.id.hex[:12]]:
        assert store.resolve_image(name).id == img.id, name
    with pytest.raises(NotFound):
        store.resolve_image("nosuch")


def test_tag_and_rmi_untags_before_deleting(store: Store) -> None:
    img = make_image(store, [BASE, APP], "app:1")
    store.tag("app:1", "registry.example:5000/team/app:2")
    assert store.rmi("app:1") == ["Untagged: app:1"]
    assert store.images.exists(img.id)
    events = store.rmi("registry.example:5000/team/app:2")
    assert events[0] == "Untagged: registry.example:5000/team/app:2"
    assert f"Deleted: {img.id}" in events
    assert store.images.list() == [] and store.layers.list() == []
    assert list(store.content.walk()) == []  # config, manifest, layer blobs all collected
    assert store.check() == []


def test_rmi_shared_layers_survive(store: Store) -> None:
    a = make_image(store, [BASE], "a")
    b = make_image(store, [BASE, APP], "b")
    store.rmi("b")
    assert [layer.chain_id for layer in store.layers.list()] == [a.top_layer]
    assert store.check() == []
    del b


def test_rmi_refused_while_a_container_uses_it(store: Store) -> None:
    img = make_image(store, [BASE], "base")
    c = store.create_container("base", name="c1")
    with pytest.raises(Conflict):
        store.rmi("base")
    events = store.rmi("base", force=True)
    assert events == ["Untagged: base:latest"]
    assert store.images.exists(img.id)  # dangling, kept for its container
    store.remove_container("c1")
    assert store.images.exists(img.id)  # and after it: a container's removal removes no image
    assert store.dangling() == [img.id]
    assert store.prune_images().images == [img.id]
    assert not store.images.exists(img.id) and store.layers.list() == []
    assert store.check() == []
    del c


def test_an_untagged_image_outlives_its_containers(store: Store) -> None:
    """Issue 14 item 5: as Docker, until ``rmi <id>`` or a prune."""
    img = make_image(store, [BASE], None)
    store.remove_container(store.create_container(str(img.id), name="c").id)
    assert store.images.exists(img.id) and store.dangling() == [img.id]
    assert store.rmi(str(img.id))[0] == f"Deleted: {img.id}"
    assert store.check() == []


def test_container_mount_write_diff_commit(store: Store) -> None:
    make_image(store, [BASE], "base")
    c = store.create_container("base", name="work")
    root = Path(store.containers.mount(c))
    (root / "srv").mkdir()
    (root / "srv/data").write_bytes(b"payload")
    os.unlink(root / "etc/hostname")
    store.containers.unmount(c)
    assert {str(x) for x in store.containers.changes(c)} >= {"D /etc/hostname", "A /srv", "A /srv/data"}
    img = store.commit("work", "derived:1", message="add data")
    cfg = store.images.config(img.id)
    assert len(cfg.diff_ids) == 2
    c2 = store.create_container("derived:1", name="check")
    root2 = Path(store.containers.mount(c2))
    assert (root2 / "srv/data").read_bytes() == b"payload"
    assert not (root2 / "etc/hostname").exists()
    store.containers.unmount(c2)
    # the commit's layer blob is the very tar that was applied: DiffID == blob digest
    top = store.layers.get(img.top_layer)
    assert store.layer_blob(top.diff_id)[0] == top.diff_id
    assert store.check() == []


def test_remove_mounted_container_needs_force(store: Store) -> None:
    make_image(store, [BASE], "base")
    c = store.create_container("base", name="m")
    store.containers.mount(c)
    with pytest.raises(Conflict):
        store.remove_container("m")
    store.remove_container("m", force=True)
    with pytest.raises(NotFound):
        store.containers.get("m")
    assert store.check() == []


def test_prune_removes_dangling_only(store: Store) -> None:
    keep = make_image(store, [BASE], "keep")
    dangling = make_image(store, [APP], None)
    rep = store.prune()
    assert rep.images == [dangling.id]
    assert store.images.exists(keep.id) and not store.images.exists(dangling.id)
    assert store.check() == []


def test_check_finds_a_corrupt_blob_and_missing_layer_data(store: Store) -> None:
    img = make_image(store, [BASE], "base")
    path = store.content.path(img.id)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes().replace(b"amd64", b"arm64"))
    layer = store.layers.get(img.top_layer)
    import shutil

    shutil.rmtree(store.driver.home / "dir" / layer.cache_id)
    kinds = {(p.kind, p.object) for p in store.check()}
    assert ("blob", img.id) in kinds
    assert ("layer", layer.chain_id) in kinds


def test_root_keeps_its_driver(tmp_path: Path) -> None:
    Store(tmp_path / "r", driver="vfs").close()
    with pytest.raises(Conflict):
        Store(tmp_path / "r", driver="overlay")
    with Store(tmp_path / "r") as s:
        assert s.driver_name == "vfs"


def test_created_text_reads_what_the_parsed_config_says(store: Store) -> None:
    """``lamina images`` reads the config's ``created`` without the full parse: the same value."""
    no_date = make_image(store, [BASE], "nodate:1")
    assert store.images.created_text(no_date.id) is None and store.images.config(no_date.id).created is None
    layer = store.layers.get(no_date.top_layer)  # type: ignore[arg-type]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05.123456789Z",
                      "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}, sort_keys=True).encode()
    dated = store.images.create(cfg)
    assert store.images.created_text(dated.id) == store.images.config(dated.id).created == "2024-01-02T03:04:05.123456789Z"
    from graph.digest import Digest, ImageID

    with pytest.raises(NotFound):
        store.images.created_text(ImageID(Digest.of(b"nothing")))


def test_runtime_config_reads_what_the_parsed_config_says(store: Store) -> None:
    """``lamina run`` reads the runtime config without the full parse: the same dict, a one-string
    Cmd or Entrypoint made a list, no config an empty one."""
    base = make_image(store, [BASE], "rc:1")
    layer = store.layers.get(base.top_layer)  # type: ignore[arg-type]
    from graph.digest import Digest, ImageID

    def image(config: object) -> ImageID:
        doc: dict[str, object] = {"architecture": "amd64", "os": "linux",
                                  "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}
        if config is not None:
            doc["config"] = config
        return store.images.create(json.dumps(doc, sort_keys=True).encode()).id

    for config in (None, {}, {"Cmd": "echo hi", "Entrypoint": "/bin/sh -c", "Env": ["A=1"]},
                   {"Cmd": ["a", "b"], "Entrypoint": None, "WorkingDir": "/w", "Labels": {"k": "v"}}):
        iid = image(config)
        assert store.images.runtime_config(iid) == store.images.config(iid).config, config
    assert store.images.runtime_config(image({"Cmd": "x"}))["Cmd"] == ["x"]
    with pytest.raises(NotFound):
        store.images.runtime_config(ImageID(Digest.of(b"nothing")))
