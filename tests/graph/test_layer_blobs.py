"""``graph.layer_blobs``: which stored blobs hold a layer's tar (so push and save hand out the
very bytes that came in). First recorded wins, a collected blob is not offered, ``live`` keeps
only registered layers' blobs and ``prune`` forgets the rest except what a lease keeps."""

from __future__ import annotations

import io


from graph import Store
from graph.digest import DiffID, Digest
from graph.oci import formats
from tests.graph.test_store import APP, BASE


def test_first_recorded_stored_blob_is_offered(store: Store) -> None:
    lb = store.layer_blobs
    d = DiffID(Digest.of(BASE))
    gz, plain = store.content.put_bytes(b"gzip bytes"), store.content.put_bytes(BASE)
    assert lb.first(d) is None
    lb.record(d, gz, formats.MEDIA_OCI_LAYER_GZIP)
    lb.record(d, plain, formats.MEDIA_OCI_LAYER)
    lb.record(d, gz, formats.MEDIA_OCI_LAYER_ZSTD)  # a pair is recorded once: the first type stays
    assert lb.first(d) == (gz, formats.MEDIA_OCI_LAYER_GZIP)
    assert lb.recorded(d, gz) and lb.recorded(d, plain) and not lb.recorded(d, Digest.of(b"other"))
    lb.forget(d, gz)
    assert lb.first(d) == (plain, formats.MEDIA_OCI_LAYER) and not lb.recorded(d, gz)
    store.content.delete(plain)  # the row stays, the blob is gone: not offered
    assert lb.recorded(d, plain) and lb.first(d) is None


def test_a_collected_first_blob_gives_way_to_the_next_stored_one(store: Store) -> None:
    lb = store.layer_blobs
    d = DiffID(Digest.of(BASE))
    gz, plain = store.content.put_bytes(b"gzip bytes"), store.content.put_bytes(BASE)
    lb.record(d, gz, formats.MEDIA_OCI_LAYER_GZIP)
    lb.record(d, plain, formats.MEDIA_OCI_LAYER)
    store.content.delete(gz)
    assert lb.first(d) == (plain, formats.MEDIA_OCI_LAYER)


def test_live_and_prune_follow_the_registered_layers(store: Store) -> None:
    lb = store.layer_blobs
    base = store.layers.register(io.BytesIO(BASE), None)
    gone, leased = DiffID(Digest.of(APP)), DiffID(Digest.of(b"being pulled"))
    b1, b2, b3 = (store.content.put_bytes(x) for x in (BASE, APP, b"leased blob"))
    lb.record(base.diff_id, b1, formats.MEDIA_OCI_LAYER)
    lb.record(gone, b2, formats.MEDIA_OCI_LAYER)    # its layer is not registered (any more)
    lb.record(leased, b3, formats.MEDIA_OCI_LAYER)  # a pull records the blob just before the layer
    assert lb.live() == {b1}
    lb.prune(keep={b3})
    assert lb.recorded(base.diff_id, b1) and not lb.recorded(gone, b2) and lb.recorded(leased, b3)
    lb.prune()
    assert not lb.recorded(leased, b3) and lb.recorded(base.diff_id, b1)
