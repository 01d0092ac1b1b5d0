"""``graph.distribution.push`` on its own: images made in a vfs store (pulled, or built from
layers as ``commit`` does), pushed to the real registry, and read back with an independent HTTP
client (``conftest.Raw``): the bytes the registry holds, and which requests were needed
(``tests.faultproxy`` counts them)."""

from __future__ import annotations

import itertools
import json

import pytest

from graph import Corrupt, InvalidInput, NotFound, Store, parse_reference
from graph.digest import Digest
from graph.distribution import progress
from graph.distribution.pull import pull
from graph.distribution.push import pick_manifest, push
from graph.oci import formats
from graph.oci.reference import Reference
from tests.faultproxy import FaultProxy
from tests.graph.distribution.conftest import Raw, fast_options
from tests.graph.test_archive import APP, BASE, Built, build, sha
from tests.graph.test_store import make_image

_names = itertools.count()


def fresh(prefix: str = "push") -> str:
    return f"{prefix}/r{next(_names)}"


def pulled(store: Store, raw: Raw, host: str, comp: str = "gzip") -> tuple[str, Built]:
    """An image pulled from ``host`` (put there by ``raw``); returns its name and the build."""
    b = build([BASE, APP], comp)
    repo = fresh("src")
    raw.put_image(repo, "1", [b.config, *b.layers], b.manifest, formats.MEDIA_OCI_MANIFEST)
    pull(store, f"{host}/{repo}:1", options=fast_options(host))
    return f"{host}/{repo}:1", b


def test_push_of_a_built_image_sends_every_blob_then_the_manifest(store: Store, raw: Raw, registry_host: str) -> None:
    img = make_image(store, [BASE, APP], None)
    repo = fresh()
    name = f"{registry_host}/{repo}:v1"
    store.tag(img.id, name)
    events: list[progress.Event] = []
    r = push(store, name, options=fast_options(registry_host), progress_fn=events.append)
    manifest = store.images.build_manifest(img)  # no recorded manifest names its blobs: built
    assert (r.digest, r.size, r.media_type) == (sha(manifest), len(manifest), formats.MEDIA_OCI_MANIFEST)
    assert (r.pushed, r.existed, r.mounted, r.skipped_foreign) == (3, 0, 0, 0)
    status, body, _ = raw.manifest(repo, "v1", formats.MEDIA_OCI_MANIFEST)
    assert status == 200 and body == manifest
    doc = json.loads(body)
    for d in [doc["config"], *doc["layers"]]:
        assert raw.blob(repo, d["digest"]) == store.content.read_bytes(Digest(d["digest"]))
    final = {e.id: e.phase for e in events}
    assert set(final.values()) == {progress.PUSHED} and len(final) == 3


def test_second_push_sends_only_the_manifest(store: Store, raw: Raw, proxy: FaultProxy) -> None:
    img = make_image(store, [BASE], None)
    name = f"{proxy.host}/{fresh()}:v1"
    store.tag(img.id, name)
    push(store, name, options=fast_options(proxy.host))
    proxy.clear()
    r = push(store, name, options=fast_options(proxy.host))
    assert (r.pushed, r.existed, r.mounted) == (0, 2, 0)
    assert proxy.count("POST", "/blobs/uploads/") == 0 and proxy.count("PUT", "/manifests/v1$", 201) == 1


def test_pulled_image_pushed_elsewhere_keeps_every_digest_and_mounts(store: Store, raw: Raw,
                                                                      registry_host: str) -> None:
    src, b = pulled(store, raw, registry_host)
    repo = fresh()
    store.tag(src, f"{registry_host}/{repo}:copy")
    r = push(store, f"{registry_host}/{repo}:copy", options=fast_options(registry_host))
    # the manifest that came in goes out; its blobs are on this registry under src: mounted
    assert r.digest == b.manifest_digest
    assert (r.pushed, r.existed, r.mounted) == (0, 0, 3)
    assert raw.manifest(repo, "copy", formats.MEDIA_OCI_MANIFEST)[1] == b.manifest


def test_pick_manifest_prefers_the_references_own(store: Store, raw: Raw, registry_host: str) -> None:
    gz_name, gz = pulled(store, raw, registry_host, "gzip")
    zs_name, zs = pulled(store, raw, registry_host, "zstd")
    img = store.resolve_image(gz_name)
    assert store.resolve_image(zs_name).id == img.id  # one config: one image, two manifests

    def ref(n: str) -> Reference:
        return store.refs.get(parse_reference(n)).reference

    assert pick_manifest(store, img.id, ref(gz_name)) == (gz.manifest, formats.MEDIA_OCI_MANIFEST)
    assert pick_manifest(store, img.id, ref(zs_name)) == (zs.manifest, formats.MEDIA_OCI_MANIFEST)
    assert pick_manifest(store, img.id)[0] == gz.manifest  # the first recorded
    # a manifest whose blobs are gone is passed over
    for blob in gz.layers:
        store.content.delete(Digest(sha(blob)))
    assert pick_manifest(store, img.id, ref(gz_name))[0] == zs.manifest


def test_missing_local_blob_is_refused_before_anything_is_sent(store: Store, proxy: FaultProxy) -> None:
    img = make_image(store, [BASE, APP], None)
    name = f"{proxy.host}/{fresh()}:v1"
    store.tag(img.id, name)
    store.content.delete(Digest(sha(APP)))  # make_image stores the layer tar as its blob
    # the recorded manifest is passed over (a blob is gone) and none can be built either
    with pytest.raises(NotFound, match=f"no stored blob for layer {sha(APP)}"):
        push(store, name, options=fast_options(proxy.host))
    assert proxy.log == []


def test_stored_blob_of_the_wrong_size_is_corrupt(store: Store, proxy: FaultProxy) -> None:
    img = make_image(store, [BASE], None)
    m = json.loads(store.images.build_manifest(img))
    m["layers"][0]["size"] += 1  # a recorded manifest that lies about the blob's size
    raw_m = json.dumps(m).encode()
    lying = store.content.put_bytes(raw_m)
    store.images.add_manifest(lying, formats.MEDIA_OCI_MANIFEST, img.id)
    name = f"{proxy.host}/{fresh()}:v1"
    store.refs.add(parse_reference(name), img.id, lying)  # the reference's own manifest: picked first
    with pytest.raises(Corrupt, match="stored copy has"):
        push(store, name, options=fast_options(proxy.host))
    assert proxy.count("PUT", "/manifests/") == 0


def test_unknown_image_and_bad_concurrency(store: Store, registry_host: str) -> None:
    with pytest.raises(NotFound):
        push(store, f"{registry_host}/nosuch:1", options=fast_options(registry_host))
    with pytest.raises(InvalidInput, match="concurrency"):
        push(store, f"{registry_host}/nosuch:1", concurrency=0)
