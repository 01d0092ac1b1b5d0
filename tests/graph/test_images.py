"""``graph.images.ImageStore`` on a real store (vfs): an image is its config, recorded only over
registered layers; manifests recorded for it keep their bytes in the content store; short IDs,
manifests built for images that came without one, and removal."""

from __future__ import annotations

import io
import json

import pytest

from graph import AlreadyExists, InvalidInput, NotFound, Store
from graph.digest import Digest, ImageID, chain_ids
from graph.oci import formats
from tests.graph.test_store import APP, BASE, make_image
from tests.tarbuild import E, make_tar


def config(diff_ids: list[str], **more: object) -> bytes:
    doc = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    doc.update(more)
    return json.dumps(doc, sort_keys=True).encode()


def registered(store: Store, *tars: bytes) -> list[str]:
    parent, out = None, []
    for t in tars:
        layer = store.layers.register(io.BytesIO(t), parent)
        parent = layer.chain_id
        out.append(str(layer.diff_id))
    return out


def test_create_records_the_config_over_registered_layers(store: Store) -> None:
    ids = registered(store, BASE, APP)
    raw = config(ids)
    img = store.images.create(raw)
    assert img.id == Digest.of(raw)
    assert img.top_layer == chain_ids([Digest(i) for i in ids])[-1]
    assert store.content.read_bytes(img.id) == raw  # the very bytes
    assert store.images.config(img.id).diff_ids == tuple(Digest(i) for i in ids)
    assert store.images.create(raw) == img  # repeat: unchanged
    assert store.images.ids() == {img.id} and store.images.exists(img.id)


def test_zero_layer_image_has_no_top_layer(store: Store) -> None:
    img = store.images.create(config([]))
    assert img.top_layer is None and store.images.get(img.id) == img


def test_create_refuses_unregistered_layers_and_bad_configs(store: Store) -> None:
    ids = registered(store, BASE)
    other = str(Digest.of(b"not a registered layer"))
    with pytest.raises(NotFound, match="top layer .* is not registered"):
        store.images.create(config(ids + [other]))
    with pytest.raises(InvalidInput):
        store.images.create(b'{"architecture": "amd64", "architecture": "arm64"}')
    assert store.images.list() == [] and list(store.content.walk()) == []


def test_list_is_newest_first(store: Store) -> None:
    a = store.images.create(config([], author="a"))
    b = store.images.create(config([], author="b"))
    assert [i.id for i in store.images.list()] == [b.id, a.id]


def test_manifest_records(store: Store) -> None:
    img = store.images.create(config([]))
    m1, m2, idx = (store.content.put_bytes(x) for x in (b'{"m":1}', b'{"m":2}', b'{"index":1}'))
    with pytest.raises(NotFound, match="not in the content store"):
        store.images.add_manifest(Digest.of(b"absent"), formats.MEDIA_OCI_MANIFEST, img.id)
    store.images.add_manifest(m1, formats.MEDIA_OCI_MANIFEST, img.id)
    store.images.add_manifest(m2, formats.MEDIA_DOCKER_MANIFEST, img.id, idx)
    store.images.add_manifest(m2, formats.MEDIA_DOCKER_MANIFEST, img.id)  # a later record keeps the index
    got = store.images.manifests(img.id)
    assert [(m.digest, m.media_type, m.parent_index) for m in got] == [
        (m1, formats.MEDIA_OCI_MANIFEST, None), (m2, formats.MEDIA_DOCKER_MANIFEST, idx)]
    assert store.images.has_manifest(m1) and store.images.image_of_manifest(m2) == img.id
    assert store.images.image_of_manifest(idx) is None
    assert store.images.manifest_digests() == {m1, m2, idx}
    store.images.remove_manifest(m1)
    assert not store.images.has_manifest(m1) and store.content.exists(m1)  # bytes stay until collected
    store.images.unrecord(img.id)  # the manifest rows go with the image
    assert store.images.manifests(img.id) == [] and not store.images.has_manifest(m2)
    store.images.unrecord(img.id)  # repeat: a no-op


def test_build_manifest_names_the_recorded_layer_blobs(store: Store) -> None:
    img = make_image(store, [BASE, APP], None)
    raw = store.images.build_manifest(img)
    m = formats.parse_manifest(raw, formats.MEDIA_OCI_MANIFEST)
    assert m.config.digest == img.id and m.config.media_type == formats.MEDIA_OCI_CONFIG
    assert [(d.digest, d.size) for d in m.layers] == [(Digest.of(t), len(t)) for t in (BASE, APP)]
    assert store.images.build_manifest(img) == raw  # canonical: stable bytes
    bare = store.images.create(config(registered(store, make_tar([E("x", b"x")]))))
    with pytest.raises(NotFound, match="no stored blob for layer"):
        store.images.build_manifest(bare)


def test_by_prefix(store: Store) -> None:
    imgs = [store.images.create(config([], author=str(i))) for i in range(40)]
    one = imgs[0]
    for spelling in (one.id, one.id.hex, one.id.hex[:12], "sha256:" + one.id.hex[:5]):
        assert store.images.by_prefix(spelling) == one
    # 40 random IDs: some two share a first hex digit
    firsts = [i.id.hex[0] for i in imgs]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    with pytest.raises(AlreadyExists, match="ambiguous"):
        store.images.by_prefix(shared)
    for bad in ("", "sha256:", "xyz", "ABC", "sha256:zz"):
        with pytest.raises(InvalidInput, match="not an image ID"):
            store.images.by_prefix(bad)
    missing = next(h for h in "0123456789abcdef" if h + "0" * 11 not in {i.id.hex[:12] for i in imgs})
    with pytest.raises(NotFound):
        store.images.by_prefix(missing + "0" * 11)


def test_get_and_config_of_an_unknown_image(store: Store) -> None:
    unknown = ImageID(Digest.of(b"nothing"))
    with pytest.raises(NotFound, match="not found"):
        store.images.get(unknown)
    with pytest.raises(NotFound):
        store.images.config(unknown)
    assert not store.images.exists(unknown)


def test_delete_releases_the_layers_it_alone_held(store: Store) -> None:
    a = make_image(store, [BASE], None)
    b = make_image(store, [BASE, APP], None)
    removed = store.images.delete(b.id)
    assert removed == [b.top_layer]  # BASE is still held by a
    assert [x.chain_id for x in store.layers.list()] == [a.top_layer]
    assert store.images.delete(a.id) == [a.top_layer] and store.layers.list() == []
    with pytest.raises(NotFound):
        store.images.delete(a.id)
