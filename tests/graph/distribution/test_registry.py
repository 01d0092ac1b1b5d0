"""``graph.distribution.registry``: the registry client on its own, against the real
``docker-registry`` on 127.0.0.1 (``conftest.registry_host``). What lamina's client writes is read
back with a second, independent HTTP client (``conftest.Raw``), and what it reads was put there by
that one; faults come from ``tests.faultproxy`` in front of the same registry."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Iterator

import pytest

from graph import DigestMismatch, InvalidInput, NotFound, Store, Unsupported
from graph.digest import Digest
from graph.distribution.registry import (
    DOCKER_HUB_API,
    Cancel,
    Cancelled,
    Endpoint,
    RegistryClient,
    RegistryError,
    RegistryOptions,
    Repository,
    Unreachable,
    mirror_endpoint,
)
from graph.oci import formats
from tests.faultproxy import Fault, FaultProxy, run_fault_proxy
from tests.graph.distribution.conftest import Raw, fast_options, sha
from tests.registry import free_port

CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'


def repo_of(client: RegistryClient, host: str, path: str, *, push: bool = True) -> Repository:
    return client.repository(path, client.origin(host), push=push)


def blob_bytes(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


def manifest_for(config: bytes, layers: list[bytes], media_type: str = formats.MEDIA_OCI_MANIFEST) -> bytes:
    lt = formats.MEDIA_OCI_LAYER if media_type == formats.MEDIA_OCI_MANIFEST else formats.MEDIA_DOCKER_LAYER
    ct = formats.MEDIA_OCI_CONFIG if media_type == formats.MEDIA_OCI_MANIFEST else formats.MEDIA_DOCKER_CONFIG
    # pretty-printed, as registries and Docker write them: the client must keep the exact bytes
    return json.dumps({"schemaVersion": 2, "mediaType": media_type,
                       "config": {"mediaType": ct, "digest": sha(config), "size": len(config)},
                       "layers": [{"mediaType": lt, "digest": sha(b), "size": len(b)} for b in layers]},
                      indent=3).encode()


# ------------------------------------------------------------------------------ where


def test_origin_endpoints_and_mirrors() -> None:
    opts = RegistryOptions(insecure=frozenset({"127.0.0.1:5000"}),
                           mirrors={"docker.io": ("http://127.0.0.1:5001/",), "quay.io": ("https://m.example",)})
    with RegistryClient(opts) as c:
        assert c.origin("127.0.0.1:5000") == Endpoint("http://127.0.0.1:5000", "127.0.0.1:5000")
        assert c.origin("registry.example") == Endpoint("https://registry.example", "registry.example")
        for hub in ("docker.io", "index.docker.io", "registry-1.docker.io"):
            assert c.origin(hub) == Endpoint(DOCKER_HUB_API, "docker.io")
        # a pull tries the mirrors first, under any spelling of the hub; a push never
        assert c.endpoints("docker.io") == [Endpoint("http://127.0.0.1:5001", "127.0.0.1:5001", mirror=True),
                                            Endpoint(DOCKER_HUB_API, "docker.io")]
        assert c.endpoints("index.docker.io")[0].mirror
        assert c.endpoints("docker.io", pull=False) == [Endpoint(DOCKER_HUB_API, "docker.io")]
        assert [e.base for e in c.endpoints("quay.io")] == ["https://m.example", "https://quay.io"]
        assert c.endpoints("127.0.0.1:5000") == [c.origin("127.0.0.1:5000")]
        assert str(c.endpoints("docker.io")[0]) == "mirror http://127.0.0.1:5001"


@pytest.mark.parametrize("url, needle", [
    ("127.0.0.1:5001", "needs http:// or https://"),
    ("ftp://m.example", "needs http:// or https://"),
    ("http://", "needs http:// or https://"),  # nothing after the scheme
    ("http:// ", "needs http:// or https://"),
    ("http://m.example/v2", "scheme and host"),
    ("http://m .example", "scheme and host"),
])
def test_mirror_urls_are_checked(url: str, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        mirror_endpoint(url)


def test_nobody_listening_is_unreachable_at_once() -> None:
    host = f"127.0.0.1:{free_port()}"
    # one retry would wait 60 s: the first contact must not retry a refusal (a dead mirror is
    # passed over at once); a hang detector, not a speed check
    opts = RegistryOptions(insecure=frozenset({host}), retries=1, backoff=60.0, max_backoff=60.0)
    errors: list[BaseException] = []

    def contact() -> None:
        with RegistryClient(opts) as c:
            for call in (lambda: c.ping(c.origin(host)),
                         lambda: repo_of(c, host, "a").get_manifest("1", first_contact=True)):
                try:
                    call()
                except BaseException as e:  # noqa: BLE001 - checked below
                    errors.append(e)

    t = threading.Thread(target=contact, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "a refused first contact was retried"
    assert [type(e) for e in errors] == [Unreachable, Unreachable]
    assert str(errors[0]) == f"cannot reach {host}: connection refused"


def test_ping(client: RegistryClient, registry_host: str) -> None:
    client.ping(client.origin(registry_host))  # docker-registry answers /v2/ with 200


# ------------------------------------------------------------------------------ blobs


def test_whole_upload_is_stored_byte_exact(client: RegistryClient, registry_host: str, raw: Raw) -> None:
    data = blob_bytes(5000)
    repo = repo_of(client, registry_host, "blobs/whole")
    seen: list[int] = []
    assert repo.blob_size(Digest(sha(data))) is None
    repo.upload_blob(Digest(sha(data)), len(data), lambda: io.BytesIO(data), on_bytes=seen.append)
    assert raw.blob("blobs/whole", sha(data)) == data
    assert repo.blob_size(Digest(sha(data))) == len(data)
    assert seen and seen[-1] == len(data)
    repo.upload_blob(Digest(sha(data)), len(data), lambda: io.BytesIO(data))  # repeat: fine


def test_chunked_upload_sends_every_chunk(registry_host: str, raw: Raw, proxy: FaultProxy) -> None:
    data = blob_bytes(1000, seed=3)
    with RegistryClient(fast_options(proxy.host, chunk_size=300)) as c:
        repo = repo_of(c, proxy.host, "blobs/chunked")
        repo.upload_blob(Digest(sha(data)), len(data), lambda: io.BytesIO(data))
        assert proxy.count("PATCH", "/blobs/uploads/", 202) == 4  # 300 + 300 + 300 + 100
        assert proxy.count("PUT", "/blobs/uploads/", 201) == 1
    assert raw.blob("blobs/chunked", sha(data)) == data


def test_upload_of_other_bytes_is_a_digest_mismatch(client: RegistryClient, registry_host: str, raw: Raw) -> None:
    data, lie = blob_bytes(100), blob_bytes(100, seed=9)
    repo = repo_of(client, registry_host, "blobs/lie")
    with pytest.raises(DigestMismatch, match="not " + sha(data)):
        repo.upload_blob(Digest(sha(data)), len(data), lambda: io.BytesIO(lie))
    assert raw.blob("blobs/lie", sha(data)) is None and raw.blob("blobs/lie", sha(lie)) is None


def test_short_blob_file_is_refused(client: RegistryClient, registry_host: str) -> None:
    data = blob_bytes(100)
    repo = repo_of(client, registry_host, "blobs/short")
    with pytest.raises((InvalidInput, RegistryError), match="ended 50 bytes early"):
        repo.upload_blob(Digest(sha(data)), len(data), lambda: io.BytesIO(data[:50]))


def test_mount_links_a_blob_from_another_repository(client: RegistryClient, registry_host: str, raw: Raw) -> None:
    data = blob_bytes(700, seed=5)
    raw.put_blob("mount/src", data)
    dst = repo_of(client, registry_host, "mount/dst")
    assert dst.mount_blob(Digest(sha(data)), "mount/src").mounted
    assert raw.blob("mount/dst", sha(data)) == data
    # not in the source: the registry opens an upload session instead, which upload_blob uses
    other = blob_bytes(300, seed=6)
    r = dst.mount_blob(Digest(sha(other)), "mount/src")
    assert not r.mounted and r.upload_url is not None and r.upload_url.startswith(f"http://{registry_host}/")
    dst.upload_blob(Digest(sha(other)), len(other), lambda: io.BytesIO(other), upload_url=r.upload_url)
    assert raw.blob("mount/dst", sha(other)) == other


@pytest.fixture
def content(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "root", driver="vfs")
    try:
        yield s
    finally:
        s.close()


def test_fetch_blob_into_an_ingest(client: RegistryClient, registry_host: str, raw: Raw, content: Store) -> None:
    data = blob_bytes(3000, seed=1)
    raw.put_blob("fetch/a", data)
    repo = repo_of(client, registry_host, "fetch/a", push=False)
    d = Digest(sha(data))
    with content.content.ingest(d, len(data)) as w:
        repo.fetch_blob(d, len(data), w)
        assert w.commit() == d
    assert content.content.read_bytes(d) == data


def test_fetch_resumes_a_partial_ingest_with_range(registry_host: str, raw: Raw, content: Store, proxy: FaultProxy) -> None:
    data = blob_bytes(4000, seed=2)
    raw.put_blob("fetch/resume", data)
    d = Digest(sha(data))
    with pytest.raises(RuntimeError):
        with content.content.ingest(d, len(data), ref="r") as w:
            w.write(data[:1234])
            raise RuntimeError("interrupted")  # a ref'd ingest keeps what it has
    with RegistryClient(fast_options(proxy.host)) as c:
        repo = repo_of(c, proxy.host, "fetch/resume", push=False)
        with content.content.ingest(d, len(data), ref="r") as w:
            assert w.offset == 1234
            repo.fetch_blob(d, len(data), w)
            assert w.commit() == d
        gets = [entry for entry in proxy.log if entry[0] == "GET" and "/blobs/" in entry[1]]
    assert [(status, rng) for _, _, status, rng in gets] == [(206, "bytes=1234-")]
    assert content.content.read_bytes(d) == data


def test_dropped_download_resumes_from_what_arrived(registry_host: str, raw: Raw, content: Store, proxy: FaultProxy) -> None:
    data = blob_bytes(50_000, seed=4)
    raw.put_blob("fetch/drop", data)
    d = Digest(sha(data))
    with RegistryClient(fast_options(proxy.host)) as c:
        proxy.add(Fault.drop("/blobs/sha256:", after=20_000, times=2))
        repo = repo_of(c, proxy.host, "fetch/drop", push=False)
        retries: list[str] = []
        with content.content.ingest(d, len(data)) as w:
            repo.fetch_blob(d, len(data), w, on_retry=retries.append)
            assert w.commit() == d
        ranges = [rng for m, p, _, rng in proxy.log if m == "GET" and "/blobs/" in p]
    # two drops: progress was made each time, so the retry budget (2) is not spent
    assert ranges == [None, "bytes=20000-", "bytes=40000-"] and len(retries) == 2


def test_fetch_refuses_unknown_and_missized_blobs(client: RegistryClient, registry_host: str, raw: Raw,
                                                  content: Store) -> None:
    data = blob_bytes(100, seed=7)
    raw.put_blob("fetch/sizes", data)
    repo = repo_of(client, registry_host, "fetch/sizes", push=False)
    missing = Digest(sha(b"not there"))
    with content.content.ingest(missing, 9) as w, pytest.raises(NotFound, match="not found"):
        repo.fetch_blob(missing, 9, w)
    d = Digest(sha(data))
    with content.content.ingest(d, 200) as w, pytest.raises(DigestMismatch, match="registry has 100 bytes"):
        repo.fetch_blob(d, 200, w)
    with content.content.ingest(missing, 9) as w, pytest.raises(Unsupported, match="non-distributable"):
        repo.fetch_blob(missing, 9, w, nondistributable=True)


def test_dead_mirror_hands_the_blob_over_to_the_origin(registry_host: str, raw: Raw, content: Store) -> None:
    data = blob_bytes(500, seed=8)
    raw.put_blob("fetch/mirror", data)
    dead = mirror_endpoint(f"http://127.0.0.1:{free_port()}")
    with RegistryClient(fast_options(registry_host)) as c:
        repo = c.repository("fetch/mirror", dead, fallbacks=[c.origin(registry_host)])
        d = Digest(sha(data))
        with content.content.ingest(d, len(data)) as w:
            repo.fetch_blob(d, len(data), w)
            w.commit()
        # the origin itself unreachable is an error after its retries, not a silent miss
        other = blob_bytes(500, seed=18)
        gone = c.repository("fetch/mirror", c.origin(dead.host))
        with content.content.ingest(Digest(sha(other)), len(other)) as w, \
                pytest.raises(RegistryError, match="failed after 3 tries: cannot reach .*connection refused"):
            gone.fetch_blob(Digest(sha(other)), len(other), w)


# ------------------------------------------------------------------------------ manifests


@pytest.mark.parametrize("media_type", [formats.MEDIA_OCI_MANIFEST, formats.MEDIA_DOCKER_MANIFEST])
def test_manifest_round_trip_keeps_the_bytes(media_type: str, client: RegistryClient, registry_host: str,
                                             raw: Raw) -> None:
    layer = blob_bytes(64, seed=11)
    path = "man/" + ("oci" if "oci" in media_type else "docker")
    repo = repo_of(client, registry_host, path)
    for b in (CONFIG, layer):
        repo.upload_blob(Digest(sha(b)), len(b), lambda b=b: io.BytesIO(b))
    m = manifest_for(CONFIG, [layer], media_type)
    assert repo.put_manifest("v1", m, media_type) == sha(m)
    status, body, hdrs = raw.manifest(path, "v1", media_type)
    assert (status, body, hdrs["docker-content-digest"]) == (200, m, sha(m))
    for reference in ("v1", sha(m)):
        got = repo.get_manifest(reference)
        assert (got.raw, got.media_type, got.digest) == (m, media_type, sha(m))
    assert repo.head_manifest("v1") == (sha(m), media_type, len(m))
    assert repo.head_manifest("nope") is None
    assert "v1" in repo.tags()


def test_manifest_errors_name_what_is_wrong(client: RegistryClient, registry_host: str, raw: Raw) -> None:
    repo = repo_of(client, registry_host, "man/errors")
    with pytest.raises(NotFound, match=f"{registry_host}/man/errors:nosuch: not found"):
        repo.get_manifest("nosuch")
    with pytest.raises(NotFound, match="@sha256:"):
        repo.get_manifest(sha(b"x"))
    with pytest.raises(NotFound, match="tags of"):
        repo.tags()
    # a manifest naming blobs the repository lacks: the registry refuses it, we say why
    m = manifest_for(CONFIG, [b"never uploaded"])
    with pytest.raises(InvalidInput, match="MANIFEST_BLOB_UNKNOWN|BLOB_UNKNOWN"):
        repo.put_manifest("v1", m, formats.MEDIA_OCI_MANIFEST)
    assert raw.manifest("man/errors", "v1", formats.MEDIA_OCI_MANIFEST)[0] == 404


def test_manifest_bytes_are_checked(registry_host: str, raw: Raw, proxy: FaultProxy) -> None:
    repo_path = "man/checked"
    raw.put_blob(repo_path, CONFIG)
    m = manifest_for(CONFIG, [])
    raw.put_manifest(repo_path, "v1", m, formats.MEDIA_OCI_MANIFEST)
    with RegistryClient(fast_options(proxy.host)) as c:
        repo = repo_of(c, proxy.host, repo_path, push=False)
        proxy.add(Fault.corrupt("/manifests/", offset=10, times=2))
        # by digest: the bytes must hash to it
        with pytest.raises(DigestMismatch, match="hashes to"):
            repo.get_manifest(sha(m))
        # by tag: they must hash to what the registry claims (the proxy keeps the header)
        with pytest.raises(DigestMismatch, match="registry claims " + sha(m)):
            repo.get_manifest("v1")
        assert repo.get_manifest("v1").raw == m


def test_oversized_manifest_is_refused(registry_host: str, proxy: FaultProxy) -> None:
    big = b"{" + b" " * formats.MAX_MANIFEST_SIZE + b"}"
    with RegistryClient(fast_options(proxy.host)) as c:
        proxy.add(Fault.replace("/manifests/", big, content_type=formats.MEDIA_OCI_MANIFEST))
        with pytest.raises(InvalidInput, match="over the .*-byte limit"):
            repo_of(c, proxy.host, "man/big", push=False).get_manifest("v1")


# ------------------------------------------------------------------------------ retries


def test_transient_answers_are_retried_within_the_budget(registry_host: str, raw: Raw, proxy: FaultProxy) -> None:
    raw.put_blob("retry/a", CONFIG)
    raw.put_manifest("retry/a", "v1", manifest_for(CONFIG, []), formats.MEDIA_OCI_MANIFEST)
    with RegistryClient(fast_options(proxy.host, retries=2)) as c:
        repo = repo_of(c, proxy.host, "retry/a", push=False)
        proxy.add(Fault.status("/tags/list", 503, times=2))
        assert repo.tags() == ["v1"]  # two 503s, then the answer: within retries=2
        assert proxy.count("GET", "/tags/list") == 3
        proxy.clear()
        proxy.add(Fault.status("/tags/list", 503, times=3))
        with pytest.raises(RegistryError, match="UNAVAILABLE"):
            repo.tags()
        assert proxy.count("GET", "/tags/list") == 3
        proxy.clear()
        proxy.add(Fault.status("/tags/list", 404, times=1))  # not transient: no retry
        with pytest.raises(NotFound):
            repo.tags()
        assert proxy.count("GET", "/tags/list") == 1


# ------------------------------------------------------------------------------ cancel


def test_cancel_runs_hooks_once_set_and_stops_transfers(client: RegistryClient, registry_host: str, raw: Raw,
                                                        content: Store) -> None:
    c = Cancel()
    calls: list[str] = []
    k = c.hook(lambda: calls.append("a"))
    c.unhook(c.hook(lambda: calls.append("gone")))
    c.set()
    assert calls == ["a"]
    c.hook(lambda: calls.append("late"))  # hooked after set: runs at once
    assert calls == ["a", "late"]
    c.unhook(k)
    data = blob_bytes(100, seed=12)
    raw.put_blob("cancel/a", data)
    repo = repo_of(client, registry_host, "cancel/a", push=False)
    d = Digest(sha(data))
    with content.content.ingest(d, len(data)) as w, pytest.raises(Cancelled):
        repo.fetch_blob(d, len(data), w, cancel=c)
    with pytest.raises(Cancelled):
        repo.upload_blob(d, len(data), lambda: io.BytesIO(data), cancel=c)


def test_cancel_wakes_a_stalled_download(registry_host: str, raw: Raw, content: Store) -> None:
    data = blob_bytes(30_000, seed=13)
    raw.put_blob("cancel/stall", data)
    d = Digest(sha(data))
    with run_fault_proxy(registry_host) as proxy, \
            RegistryClient(fast_options(proxy.host, read_timeout=120.0)) as c:
        proxy.add(Fault.stall("/blobs/sha256:", after=1000, seconds=60))
        repo = repo_of(c, proxy.host, "cancel/stall", push=False)
        cancel = Cancel()
        box: dict[str, BaseException] = {}

        def run() -> None:
            try:
                with content.content.ingest(d, len(data)) as w:
                    repo.fetch_blob(d, len(data), w, cancel=cancel)
            except BaseException as e:  # noqa: BLE001 - handed to the test
                box["e"] = e

        t = threading.Thread(target=run)
        t.start()
        assert proxy.stalled.wait(30)
        cancel.set()
        t.join(20)  # a 120 s read timeout: only the socket shutdown can end it in time
        assert not t.is_alive()
    assert isinstance(box.get("e"), Cancelled)
