"""``graph.references.ReferenceStore``: names pointing at images, stored normalised, moved by a
second ``add`` (``docker tag``), a digest reference keeping the manifest it names."""

from __future__ import annotations


import pytest

from graph import NotFound, Store, parse_reference
from graph.digest import Digest
from tests.graph.test_store import APP, BASE, make_image


def test_names_are_normalised_moved_and_removed(store: Store) -> None:
    a, b = make_image(store, [BASE], None), make_image(store, [BASE, APP], None)
    refs = store.refs
    refs.add(parse_reference("busybox"), a.id)
    for spelling in ("busybox", "busybox:latest", "library/busybox", "docker.io/library/busybox:latest"):
        rec = refs.get(parse_reference(spelling))
        assert (rec.name, rec.image_id, rec.manifest) == ("docker.io/library/busybox:latest", a.id, None)
    m = store.images.manifests(b.id)[0].digest
    refs.add(parse_reference("busybox"), b.id, m)  # moved, with the manifest it came with
    assert (refs.get(parse_reference("busybox")).image_id, refs.get(parse_reference("busybox")).manifest) == (b.id, m)
    refs.add(parse_reference("busybox"), b.id, m)  # repeat: idempotent
    refs.add(parse_reference("registry.example:5000/team/app:2"), b.id)
    assert [r.name for r in refs.list()] == ["docker.io/library/busybox:latest", "registry.example:5000/team/app:2"]
    assert refs.list(a.id) == [] and len(refs.list(b.id)) == 2
    assert refs.list(b.id)[1].reference == parse_reference("registry.example:5000/team/app:2")
    removed = refs.remove(parse_reference("library/busybox:latest"))
    assert removed.image_id == b.id
    with pytest.raises(NotFound, match="no such image: busybox"):
        refs.get(parse_reference("busybox"))
    with pytest.raises(NotFound):
        refs.remove(parse_reference("busybox"))


def test_a_digest_reference_names_its_manifest(store: Store) -> None:
    img = make_image(store, [BASE], None)
    m = store.images.manifests(img.id)[0].digest
    ref = parse_reference(f"registry.example/app@{m}")
    store.refs.add(ref, img.id, m)
    rec = store.refs.get(ref)
    assert rec.manifest == Digest(m) and rec.reference.digest == m and rec.reference.tag is None
    assert store.resolve_image(f"registry.example/app@{m}").id == img.id
