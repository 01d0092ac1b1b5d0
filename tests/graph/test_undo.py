"""``graph.undo.Undo``: the one rollback of pull and archive load, driven directly on a vfs store.
What an import added is taken back (references restored to what they were, new images, manifest
rows, layer-blob rows and layers removed, blobs collected, partial ingests aborted unless kept),
what it did not add survives, and a step that fails does not stop the others."""

from __future__ import annotations

import io

import pytest

from graph import NotFound, Store, parse_reference
from graph.digest import Digest
from graph.oci import formats
from graph.undo import Undo
from tests.graph.test_store import APP, BASE, make_image
from tests.tarbuild import E, make_tar


def test_rollback_takes_back_what_the_import_added(store: Store) -> None:
    a = make_image(store, [BASE], "a:1")
    keep = (set(store.content.walk()), [x.chain_id for x in store.layers.list()])
    undo = Undo()
    # what an import of b does: layers (BASE shared, APP new), image, manifest, refs (one moved)
    b = make_image(store, [BASE, APP], None)
    undo.layers.append(b.top_layer)  # make_image registered APP on BASE: the new layer
    undo.images.append(b.id)
    undo.manifests += [m.digest for m in store.images.manifests(b.id)]
    moved, new = parse_reference("a:1"), parse_reference("b:1")
    undo.refs.append((moved, store.refs.get(moved)))
    store.refs.add(moved, b.id)
    undo.refs.append((new, None))
    store.refs.add(new, b.id)
    undo.rollback(store)
    assert store.resolve_image("a:1").id == a.id
    with pytest.raises(NotFound):
        store.resolve_image("b:1")
    assert not store.images.exists(b.id) and store.images.manifests(b.id) == []
    assert (set(store.content.walk()), [x.chain_id for x in store.layers.list()]) == keep
    assert store.check() == []


def test_an_image_someone_else_names_is_kept(store: Store) -> None:
    b = make_image(store, [BASE], "other:1")  # referenced by a name the import did not add
    undo = Undo(images=[b.id])
    undo.rollback(store)
    assert store.images.exists(b.id) and store.check() == []


def test_a_failing_step_does_not_stop_the_others(store: Store) -> None:
    base = store.layers.register(io.BytesIO(BASE), None)
    lone = store.layers.register(io.BytesIO(make_tar([E("x", b"x")])), None)
    blob = store.content.put_bytes(BASE)
    store.record_layer_blob(base.diff_id, blob, formats.MEDIA_OCI_LAYER, len(BASE))
    # the first step (removing a reference that is not there) raises NotFound; the rest still runs
    undo = Undo(refs=[(parse_reference("never:added"), None)], layers=[lone.chain_id, base.chain_id],
                layer_blobs=[(base.diff_id, blob)])
    with pytest.raises(NotFound):
        store.refs.remove(parse_reference("never:added"))
    undo.rollback(store)
    assert store.layers.list() == [] and not store.layer_blobs.recorded(base.diff_id, blob)
    assert not store.content.exists(blob)  # unreferenced now: collected
    assert store.check() == []


@pytest.mark.parametrize("keep", [False, True])
def test_partial_ingests_are_aborted_unless_kept(store: Store, keep: bool) -> None:
    data = b"partial download" * 100
    with pytest.raises(RuntimeError):
        with store.content.ingest(Digest.of(data), len(data), ref="pull-x") as w:
            w.write(data[:100])
            raise RuntimeError("connection lost")
    assert [i.ref for i in store.content.ingests()] == ["pull-x"]
    Undo(ingests={"pull-x"}).rollback(store, keep_partial=keep)
    assert [i.ref for i in store.content.ingests()] == (["pull-x"] if keep else [])
