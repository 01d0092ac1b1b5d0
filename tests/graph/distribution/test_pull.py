"""``graph.distribution.pull`` on its own: images put into the real registry by an independent
HTTP client (``conftest.Raw``), pulled into a vfs store; what the store holds afterwards is read
through its public parts (images, references, manifests, layer blobs, ``check``), and every
refusal leaves the store exactly as it was (``tests.graph.test_archive.snapshot``)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from graph import DigestMismatch, InvalidInput, NotFound, Store
from graph.digest import Digest
from graph.distribution import progress
from graph.distribution.pull import pull
from graph.oci import formats
from graph.oci.formats import Platform
from tests.faultproxy import Fault, FaultProxy
from tests.graph.distribution.conftest import Raw, fast_options
from tests.graph.test_archive import (
    APP,
    ARM,
    BASE,
    EXPECTED,
    build,
    canon,
    config_for,
    manifest_desc,
    rootfs,
    sha,
    snapshot,
)

_names = itertools.count()


def put(raw: Raw, b: Any, tag: str = "1") -> str:
    """Upload a built image under a fresh repository; returns ``repo:tag``."""
    repo = f"pull/r{next(_names)}"
    raw.put_image(repo, tag, [b.config, *b.layers], b.manifest, formats.MEDIA_OCI_MANIFEST)
    return f"{repo}:{tag}"


def refused(store: Store, exc: type[Exception], match: str, **kw: Any) -> Exception:
    before = snapshot(store)
    with pytest.raises(exc, match=match) as ei:
        pull(store, **kw)
    assert "\n" not in str(ei.value)
    assert snapshot(store) == before and store.check() == []
    return ei.value


def test_pull_records_image_manifest_reference_and_layer_blobs(store: Store, raw: Raw, registry_host: str) -> None:
    b = build([BASE, APP], "gzip")
    name = f"{registry_host}/{put(raw, b)}"
    events: list[progress.Event] = []
    r = pull(store, name, options=fast_options(registry_host), progress_fn=events.append)
    assert (r.image_id, r.digest, r.manifest) == (b.image_id, b.manifest_digest, b.manifest_digest)
    assert (r.new, r.downloaded, r.existed, r.endpoint) == (True, 2, 0, registry_host)
    assert r.downloaded_bytes == sum(len(x) for x in b.layers)
    assert set(r.timings) == {"resolve", "layers", "record", "total"} and len(r.layer_times) == 2
    assert store.resolve_image(name).id == b.image_id
    assert store.refs.get(r.reference).manifest == b.manifest_digest
    assert store.content.read_bytes(Digest(b.manifest_digest)) == b.manifest  # the very bytes
    assert [m.digest for m in store.images.manifests(r.image_id)] == [b.manifest_digest]
    for tar, blob in zip(b.tars, b.layers):
        assert store.layer_blobs.recorded(Digest(sha(tar)), Digest(sha(blob)))
    assert rootfs(store, name)[0] == EXPECTED
    assert store.check() == [] and store.content.ingests() == []
    # every layer goes waiting -> ... -> done, and nothing else ends an item
    for layer in b.layers:
        phases = [e.phase for e in events if e.id == sha(layer)]
        assert phases[0] == progress.WAITING and phases[-1] == progress.DONE, phases
        assert progress.DOWNLOADING in phases and progress.EXTRACTING in phases


def test_pull_again_fetches_nothing(store: Store, raw: Raw, registry_host: str, proxy: FaultProxy) -> None:
    b = build([BASE], "gzip")
    name = put(raw, b)
    pull(store, f"{proxy.host}/{name}", options=fast_options(proxy.host))
    proxy.clear()
    events: list[progress.Event] = []
    r = pull(store, f"{proxy.host}/{name}", options=fast_options(proxy.host), progress_fn=events.append)
    assert (r.new, r.downloaded, r.existed) == (False, 0, 1)
    assert [e.phase for e in events] == [progress.EXISTS]
    assert proxy.count("GET", "/blobs/") == 0  # the config and layer are in the store
    assert proxy.count("GET", "/manifests/") == 1


def test_pull_by_digest_records_a_digest_reference(store: Store, raw: Raw, registry_host: str) -> None:
    b = build([BASE], "gzip")
    repo = put(raw, b).split(":")[0]
    r = pull(store, f"{registry_host}/{repo}@{b.manifest_digest}", options=fast_options(registry_host))
    assert r.reference.digest == b.manifest_digest and r.reference.tag is None
    assert [str(x.reference) for x in store.refs.list()] == [f"{registry_host}/{repo}@{b.manifest_digest}"]


def test_index_is_resolved_for_the_wanted_platform(store: Store, raw: Raw, registry_host: str) -> None:
    amd, arm = build([BASE, APP], "gzip", "amd64"), build([BASE, ARM], "gzip", "arm64")
    idx = canon({"schemaVersion": 2, "mediaType": formats.MEDIA_OCI_INDEX, "manifests": [
        manifest_desc(amd, platform={"architecture": "amd64", "os": "linux"}),
        manifest_desc(arm, platform={"architecture": "arm64", "os": "linux"}),
    ]})
    repo = f"pull/multi{next(_names)}"
    for b in (amd, arm):
        for blob in [b.config, *b.layers]:
            raw.put_blob(repo, blob)
        raw.put_manifest(repo, b.manifest_digest, b.manifest, formats.MEDIA_OCI_MANIFEST)
    raw.put_manifest(repo, "1", idx, formats.MEDIA_OCI_INDEX)
    r = pull(store, f"{registry_host}/{repo}:1", options=fast_options(registry_host),
             platform=Platform.parse("linux/arm64"))
    assert (r.image_id, r.digest, r.manifest) == (arm.image_id, sha(idx), arm.manifest_digest)
    [m] = store.images.manifests(r.image_id)
    assert m.parent_index == sha(idx) and store.content.read_bytes(Digest(sha(idx))) == idx
    refused(store, NotFound, "linux/s390x", reference=f"{registry_host}/{repo}:1",
            options=fast_options(registry_host), platform=Platform.parse("linux/s390x"))


def test_single_platform_image_for_another_platform_is_refused(store: Store, raw: Raw, registry_host: str) -> None:
    name = f"{registry_host}/{put(raw, build([BASE], 'gzip', 'arm64'))}"
    refused(store, NotFound, "does not match the requested platform linux/amd64", reference=name,
            options=fast_options(registry_host), platform=Platform.parse("linux/amd64"))


def test_registered_layers_from_another_blob_are_checked_not_applied(store: Store, raw: Raw,
                                                                    registry_host: str) -> None:
    gz, zs = build([BASE, APP], "gzip"), build([BASE, APP], "zstd")
    pull(store, f"{registry_host}/{put(raw, gz)}", options=fast_options(registry_host))
    layers = [(x.chain_id, x.cache_id) for x in store.layers.list()]
    r = pull(store, f"{registry_host}/{put(raw, zs)}", options=fast_options(registry_host))
    # same config (same DiffIDs): one image, two manifests; the zstd blobs were fetched and
    # hashed (DiffID proven) but no layer was applied again
    assert r.image_id == gz.image_id and r.downloaded == 2 and r.existed == 0
    assert [(x.chain_id, x.cache_id) for x in store.layers.list()] == layers
    assert {m.digest for m in store.images.manifests(r.image_id)} == {gz.manifest_digest, zs.manifest_digest}
    for tar, blob in zip(zs.tars, zs.layers):
        assert store.layer_blobs.recorded(Digest(sha(tar)), Digest(sha(blob)))
    assert store.check() == []


def test_wrong_diff_id_is_refused_and_rolled_back(store: Store, raw: Raw, registry_host: str) -> None:
    pull(store, f"{registry_host}/{put(raw, build([BASE], 'gzip'))}", options=fast_options(registry_host))
    liar = build([BASE, APP], "gzip", config=config_for([sha(BASE), sha(ARM)]))  # APP's layer, ARM's DiffID
    refused(store, DigestMismatch, "DiffID", reference=f"{registry_host}/{put(raw, liar)}",
            options=fast_options(registry_host))


def test_a_stored_blob_is_trusted_only_for_the_layer_it_was_recorded_for(store: Store, raw: Raw,
                                                                          registry_host: str) -> None:
    a = build([BASE, APP], "gzip")
    pull(store, f"{registry_host}/{put(raw, a)}", options=fast_options(registry_host))
    # APP's blob (stored) named as the blob of BASE's layer (registered): both present, but
    # nothing says this blob holds that layer, so it is hashed, and the lie found
    liar = build([APP], "gzip", config=config_for([sha(BASE)]))
    refused(store, DigestMismatch, "DiffID mismatch", reference=f"{registry_host}/{put(raw, liar)}",
            options=fast_options(registry_host))


def test_manifest_and_config_disagreeing_are_refused(store: Store, raw: Raw, registry_host: str) -> None:
    b = build([BASE, APP], "gzip", config=config_for([sha(BASE)]))  # two layers, one DiffID
    refused(store, InvalidInput, "layers", reference=f"{registry_host}/{put(raw, b)}",
            options=fast_options(registry_host))


@pytest.mark.parametrize("n", [0, 33])
def test_concurrency_is_bounded(store: Store, n: int) -> None:
    # refused before any network: the registry named does not exist
    refused(store, InvalidInput, "concurrency must be 1..32", reference="127.0.0.1:1/a:1", concurrency=n)


@pytest.mark.parametrize("keep", [False, True])
def test_failed_download_keeps_its_partial_only_when_asked(keep: bool, store: Store, raw: Raw,
                                                           proxy: FaultProxy) -> None:
    b = build([BASE, APP], "none")
    big = b.layers[0]
    name = f"{proxy.host}/{put(raw, b)}"
    proxy.add(Fault.drop(f"/blobs/{sha(big)}$", after=len(big) // 2, times=1))  # half, then no progress
    proxy.add(Fault.drop(f"/blobs/{sha(big)}$", after=0, times=-1))
    with pytest.raises(Exception, match="failed after"):
        pull(store, name, options=fast_options(proxy.host, retries=1), keep_partial=keep)
    refs = [i.ref for i in store.content.ingests()]
    if keep:  # the big one's half; the small one may have been cut mid-way by the cancel too
        assert f"pull-{sha(big)}" in refs and set(refs) <= {f"pull-{sha(x)}" for x in b.layers}, refs
    else:
        assert refs == []
    assert store.images.list() == [] and store.layers.list() == [] and store.check() == []


def test_mirror_without_the_image_falls_back_to_the_origin(store: Store, raw: Raw, registry_host: str,
                                                           proxy: FaultProxy) -> None:
    b = build([BASE], "gzip")
    name = put(raw, b)
    proxy.add(Fault.status("/manifests/", 404, times=-1))  # the mirror has nothing
    opts = fast_options(registry_host, proxy.host, mirrors={registry_host: (f"http://{proxy.host}",)})
    r = pull(store, f"{registry_host}/{name}", options=opts)
    assert r.endpoint == registry_host and r.image_id == b.image_id
    assert proxy.count("GET", "/manifests/") == 1
