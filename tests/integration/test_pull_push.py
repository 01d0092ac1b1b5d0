"""Pull and push against a real registry (Debian's docker-registry on 127.0.0.1).

The registry is filled two ways: by ``skopeo copy oci:... docker://...`` (bytes lamina did not
write) and by lamina's own push. Faults come from ``tests.faultproxy`` (a proxy on 127.0.0.1 in
front of the registry that drops connections, answers 503, serves wrong or crafted bytes),
auth from htpasswd (Basic) and ``tests.tokenserver`` (Bearer). Every failure case asserts a
one-line error of the right class and a store that did not change (``snapshot`` compares every
table, blob and driver directory; ``Store.check() == []``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import graph
from graph import DigestMismatch, InvalidInput, NotFound, Store, Unsupported
from graph.oci import formats
from graph.archive import load_archive
from graph.distribution.auth import Credentials, Unauthorized, load_credentials, store_credentials
from graph.digest import Digest
from graph.oci.formats import Platform
from graph.distribution.pull import pull
from graph.distribution.push import push
from graph.distribution.registry import RegistryClient, RegistryError, RegistryOptions, Unreachable
from tests.cli.conftest import Lamina, clean_env, lamina_command
from tests.faultproxy import Fault, FaultProxy, run_fault_proxy
from tests.graph.test_archive import (
    APP,
    ARM,
    BASE,
    EXPECTED,
    LAYER_TYPES,
    build,
    canon,
    compress,
    config_for,
    desc,
    manifest_desc,
    new_store,  # noqa: F401 - fixture
    rootfs,
    sha,
    snapshot,
    write_layout,
)
from tests.registry import REGISTRY_BIN, free_port, run_registry
from tests.tarbuild import E, make_tar
from tests.tokenserver import run_token_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="docker-registry is not installed"),
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed"),
]

EXTRA = make_tar([E("opt", kind="dir"), E("opt/extra.txt", b"extra layer\n")])
HOST_ARCH = Platform.host().architecture
OTHER_ARCH = "arm64" if HOST_ARCH != "arm64" else "amd64"


# ================================================================================ images


@dataclass
class Hosted:
    """What the module's registry holds (pushed by skopeo)."""

    host: str
    app: Any  # Built: BASE + APP, gzip
    mixed: Any  # BASE gzip, APP zstd, EXTRA uncompressed (uploaded as built, not by skopeo)
    derived: Any  # BASE + APP + EXTRA, gzip: shares two layers with app
    multi_index: bytes
    multi_host: Any  # the host-arch image of multi:1
    multi_other: Any


def _mixed() -> Any:
    tars = [BASE, APP, EXTRA]
    comps = ["gzip", "zstd", "none"]
    layers = [compress(t, c) for t, c in zip(tars, comps)]
    cfg = config_for([sha(t) for t in tars])
    manifest = canon({"schemaVersion": 2, "mediaType": formats.MEDIA_OCI_MANIFEST,
                      "config": desc(formats.MEDIA_OCI_CONFIG, cfg),
                      "layers": [desc(LAYER_TYPES[c], b) for c, b in zip(comps, layers)]})
    b = build(tars, "gzip")
    b.layers, b.config, b.manifest = layers, cfg, manifest
    b.blobs = {sha(x): x for x in [cfg, *layers, manifest]}
    return b


def _skopeo(*args: str) -> str:
    p = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"skopeo {' '.join(args)}: {p.stderr.strip()}"
    return p.stdout


def _skopeo_push(layout: Path, tag: str, dest: str, *, all_: bool = False) -> None:
    _skopeo("copy", "--quiet", "--dest-tls-verify=false", *(["--all"] if all_ else []),
            f"oci:{layout}:{tag}", f"docker://{dest}")


def _layout(path: Path, b: Any, tag: str = "1") -> Path:
    return write_layout(path, b.blobs, [manifest_desc(b, {"org.opencontainers.image.ref.name": tag})])


def _multi(path: Path) -> tuple[Path, bytes, Any, Any]:
    host = build([BASE, APP], "gzip", HOST_ARCH)
    other = build([BASE, ARM], "gzip", OTHER_ARCH)
    idx = canon({"schemaVersion": 2, "mediaType": formats.MEDIA_OCI_INDEX, "manifests": [
        manifest_desc(other, platform={"architecture": OTHER_ARCH, "os": "linux"}),
        manifest_desc(host, platform={"architecture": HOST_ARCH, "os": "linux"}),
    ]})
    blobs = {**host.blobs, **other.blobs, sha(idx): idx}
    top = desc(formats.MEDIA_OCI_INDEX, idx, annotations={"org.opencontainers.image.ref.name": "1"})
    return write_layout(path, blobs, [top]), idx, host, other


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosted]:
    d = tmp_path_factory.mktemp("registry")
    app, mixed = build([BASE, APP], "gzip"), _mixed()
    derived = build([BASE, APP, EXTRA], "gzip")
    multi_layout, idx, mhost, mother = _multi(d / "multi")
    with run_registry(d / "reg") as reg:
        app_layout = _layout(d / "app", app)
        _skopeo_push(app_layout, "1", f"{reg.host}/app:1")
        _skopeo_push(app_layout, "1", f"{reg.host}/library/app:1")
        # skopeo would gzip the uncompressed layer on the way (a new manifest): put it as built
        _upload(reg.host, "mixed", "1", [mixed.config, *mixed.layers], mixed.manifest)
        _skopeo_push(_layout(d / "derived", derived), "1", f"{reg.host}/derived:1")
        _skopeo_push(multi_layout, "1", f"{reg.host}/multi:1", all_=True)
        yield Hosted(reg.host, app, mixed, derived, idx, mhost, mother)


@pytest.fixture
def proxy(hosted: Hosted) -> Iterator[FaultProxy]:
    with run_fault_proxy(hosted.host) as p:
        yield p


def opts(*hosts: str, **kw: Any) -> RegistryOptions:
    """Options for tests: plain HTTP to ``hosts``, fast retries."""
    kw.setdefault("backoff", 0.01)
    kw.setdefault("max_backoff", 0.05)
    return RegistryOptions(insecure=frozenset(hosts), **kw)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "root", driver="vfs")
    try:
        yield s
    finally:
        s.driver.cleanup()
        s.close()


def refused(store: Store, exc: type[Exception], fn: Callable[[], Any], match: str | None = None) -> Exception:
    """``fn`` raises ``exc`` (one line, matching) and the store is exactly as before."""
    before = snapshot(store)
    with pytest.raises(exc, match=match) as ei:
        fn()
    assert "\n" not in str(ei.value)
    assert snapshot(store) == before
    assert store.check() == []
    return ei.value


def blob_gets(proxy: FaultProxy, digest: str) -> int:
    return proxy.count("GET", f"/blobs/{digest}$", 200) + proxy.count("GET", f"/blobs/{digest}$", 206)


# ================================================================================ pull


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_pull_by_tag_gives_the_image_skopeo_pushed(driver: str, tmp_path: Path, hosted: Hosted) -> None:
    import drivers

    reason = drivers.supported(driver, tmp_path / "probe")
    if reason is not None:
        pytest.skip(f"{driver}: {reason}")
    with Store(tmp_path / driver, driver=driver) as s:
        try:
            r = pull(s, f"{hosted.host}/app:1", options=opts(hosted.host))
            assert r.image_id == hosted.app.image_id
            assert r.manifest == r.digest == hosted.app.manifest_digest  # skopeo kept the bytes
            assert r.new and r.downloaded == 2 and r.existed == 0
            assert rootfs(s, f"{hosted.host}/app:1")[0] == EXPECTED
            info = s.inspect_image(f"{hosted.host}/app:1")
            assert info["RepoDigests"] == [f"{hosted.host}/app@{hosted.app.manifest_digest}"]
            for layer_blob, diff_id in zip(hosted.app.layers, info["RootFS"]["Layers"]):
                assert s.layer_blob(diff_id)[0] == sha(layer_blob)  # compressed bytes kept for push
            assert s.check() == []
            assert not (s.root / "locks").exists()
        finally:
            s.driver.cleanup()


def _held_open(root: Path) -> list[str]:
    """Blob and ingest files under ``root`` that this process holds open (its /proc/self/fd)."""
    under = (f"{root / 'blobs'}/", f"{root / 'ingest'}/")
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own fd, closed by now
            continue
        if target.startswith(under):
            out.append(target)
    return sorted(out)


def test_pull_closes_every_layers_spool(store: Store, hosted: Hosted) -> None:
    """Issue 14 item 7: the applier reads each layer through a spool on its ingest file; every
    one is closed when the pull returns (only the last layer's was, and a deleted ingest stayed
    on disk while the process lived)."""
    assert _held_open(store.root) == []
    r = pull(store, f"{hosted.host}/derived:1", options=opts(hosted.host))
    assert r.downloaded == 3
    assert _held_open(store.root) == []
    assert store.check() == []


def test_pull_by_digest_records_a_digest_reference(store: Store, hosted: Hosted) -> None:
    ref = f"{hosted.host}/app@{hosted.app.manifest_digest}"
    r = graph.pull(store, ref, options=opts(hosted.host))  # the library's front door
    assert str(r.reference) == ref and r.image_id == hosted.app.image_id
    assert store.resolve_image(ref).id == hosted.app.image_id
    assert store.check() == []


def test_pull_multiarch_index_selects_the_platform(store: Store, hosted: Hosted) -> None:
    r = pull(store, f"{hosted.host}/multi:1", options=opts(hosted.host))
    assert r.image_id == hosted.multi_host.image_id and r.digest == sha(hosted.multi_index)
    assert r.manifest == hosted.multi_host.manifest_digest
    [m] = store.images.manifests(r.image_id)
    assert m.parent_index == sha(hosted.multi_index)
    other = pull(store, f"{hosted.host}/multi:1", options=opts(hosted.host), platform=Platform("linux", OTHER_ARCH))
    assert other.image_id == hosted.multi_other.image_id
    tree = rootfs(store, other.image_id)[0]
    assert tree["etc/arch"][-1] == b"arm64\n" and "srv/app.txt" not in tree
    assert store.check() == []


def test_pull_multiarch_without_the_platform_changes_nothing(store: Store, hosted: Hosted) -> None:
    refused(store, NotFound, lambda: pull(store, f"{hosted.host}/multi:1", options=opts(hosted.host),
                                          platform=Platform("linux", "s390x")), match="s390x")


def test_pull_single_platform_image_for_another_platform_is_refused(store: Store, hosted: Hosted) -> None:
    refused(store, NotFound, lambda: pull(store, f"{hosted.host}/app:1", options=opts(hosted.host),
                                          platform=Platform("linux", OTHER_ARCH)), match="platform")


def test_pull_gzip_zstd_and_uncompressed_layers(store: Store, hosted: Hosted) -> None:
    r = pull(store, f"{hosted.host}/mixed:1", options=opts(hosted.host))
    expected = {**EXPECTED, "opt": ("dir", 0o755, 0, 0, {}), "opt/extra.txt": ("file", 0o644, 0, 0, {}, b"extra layer\n")}
    assert rootfs(store, r.image_id)[0] == expected
    types = [row["media_type"] for row in store.db.query("SELECT media_type FROM layer_blobs ORDER BY rowid")]
    assert types == [formats.MEDIA_OCI_LAYER_GZIP, formats.MEDIA_OCI_LAYER_ZSTD, formats.MEDIA_OCI_LAYER]
    assert store.check() == []


def test_pull_skips_what_is_present(store: Store, hosted: Hosted, proxy: FaultProxy) -> None:
    o = opts(proxy.host)
    first = pull(store, f"{proxy.host}/app:1", options=o)
    assert first.downloaded == 2
    again = pull(store, f"{proxy.host}/app:1", options=o)
    assert not again.new and again.downloaded == 0 and again.existed == 2
    proxy.clear()
    d = pull(store, f"{proxy.host}/derived:1", options=o)  # shares BASE and APP
    assert d.downloaded == 1 and d.existed == 2
    assert blob_gets(proxy, sha(hosted.derived.layers[2])) == 1
    assert blob_gets(proxy, sha(hosted.derived.layers[0])) == 0
    assert store.check() == []


def test_present_layer_with_another_blob_is_fetched_and_checked_not_applied(store: Store, hosted: Hosted) -> None:
    """app:1 (gzip) first; mixed:1 has the same first two layers (ChainIDs) as zstd/other
    blobs: they are fetched and their DiffIDs checked, so a push has the bytes."""
    pull(store, f"{hosted.host}/app:1", options=opts(hosted.host))
    layers_before = {layer.chain_id: layer.cache_id for layer in store.layers.list()}
    r = pull(store, f"{hosted.host}/mixed:1", options=opts(hosted.host))
    assert r.existed == 1 and r.downloaded == 2  # BASE gzip blob is the same bytes
    after = {layer.chain_id: layer.cache_id for layer in store.layers.list()}
    assert {k: after[k] for k in layers_before} == layers_before  # nothing re-applied
    assert store.layer_blob(sha(APP)) is not None
    assert store.db.one("SELECT 1 FROM layer_blobs WHERE blob = ?", (sha(hosted.mixed.layers[1]),)) is not None
    assert store.check() == []


# ================================================================================ push


def test_push_of_a_loaded_image_then_pull_elsewhere(tmp_path: Path, new_store: Callable[[str], Store],  # noqa: F811
                                                     hosted: Hosted, proxy: FaultProxy) -> None:
    src = new_store("src")
    b = build([BASE, EXTRA], "zstd")
    load_archive(src, _layout(tmp_path / "layout", b, "x"))
    img = src.images.list()[0]
    src.tag(img.id, f"{proxy.host}/pushed:1")
    r = push(src, f"{proxy.host}/pushed:1", options=opts(proxy.host))
    assert r.digest == b.manifest_digest and r.pushed == 3 and r.existed == 0
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{hosted.host}/pushed:1").encode()
    assert raw == b.manifest
    assert proxy.count("PUT", "/manifests/1$") == 1
    again = push(src, f"{proxy.host}/pushed:1", options=opts(proxy.host))
    assert again.existed == 3 and again.pushed == 0
    dst = new_store("dst")
    p = pull(dst, f"{hosted.host}/pushed:1", options=opts(hosted.host))
    assert p.image_id == b.image_id
    tree = rootfs(dst, p.image_id)[0]
    assert tree["opt/extra.txt"][-1] == b"extra layer\n" and tree["etc/remove-me"][-1] == b"bye\n"
    assert src.check() == [] and dst.check() == []


def test_pull_then_push_to_another_repository_keeps_every_digest(store: Store, hosted: Hosted,
                                                                 proxy: FaultProxy) -> None:
    o = opts(proxy.host)
    pulled = pull(store, f"{proxy.host}/mixed:1", options=o)
    store.tag(f"{proxy.host}/mixed:1", f"{proxy.host}/copied/mixed:2")
    proxy.clear()
    r = push(store, f"{proxy.host}/copied/mixed:2", options=o)
    assert r.digest == pulled.manifest == hosted.mixed.manifest_digest
    assert r.mounted == 4 and r.pushed == 0  # config + 3 layers mounted from mixed
    assert proxy.count("POST", r"mount=sha256:") == 4 and proxy.count("PATCH", ".") == 0
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{hosted.host}/copied/mixed:2").encode()
    assert raw == hosted.mixed.manifest


def test_chunked_upload_with_patch(tmp_path: Path, new_store: Callable[[str], Store],  # noqa: F811
                                   hosted: Hosted, proxy: FaultProxy) -> None:
    src = new_store("src")
    b = build([BASE, APP], "none")
    load_archive(src, _layout(tmp_path / "layout", b, "x"))
    src.tag(b.image_id, f"{proxy.host}/chunked:1")
    r = push(src, f"{proxy.host}/chunked:1", options=opts(proxy.host, chunk_size=1000))
    assert r.pushed == 3
    expected_patches = sum(-(-len(x) // 1000) for x in [b.config, *b.layers] if len(x) > 1000)
    assert proxy.count("PATCH", "/blobs/uploads/") == expected_patches > 2
    dst = new_store("dst")
    assert rootfs(dst, pull(dst, f"{hosted.host}/chunked:1", options=opts(hosted.host)).image_id)[0] == EXPECTED


def test_push_of_an_unknown_image_is_not_found(store: Store, hosted: Hosted) -> None:
    refused(store, NotFound, lambda: push(store, f"{hosted.host}/nothing:1", options=opts(hosted.host)))


def test_tags_and_head_manifest(hosted: Hosted) -> None:
    with RegistryClient(opts(hosted.host)) as c:
        repo = c.repository("app", c.origin(hosted.host))
        assert repo.tags() == ["1"]
        digest, mt, size = repo.head_manifest("1")
        assert (digest, mt, size) == (hosted.app.manifest_digest, formats.MEDIA_OCI_MANIFEST, len(hosted.app.manifest))
        assert repo.head_manifest("nope") is None
        assert repo.blob_size(Digest(sha(hosted.app.config))) == len(hosted.app.config)
        with pytest.raises(NotFound):
            repo.get_manifest("nope")


# ================================================================================ faults


def test_dropped_connection_mid_blob_resumes_with_range(store: Store, hosted: Hosted, proxy: FaultProxy) -> None:
    big = sha(hosted.app.layers[0])
    proxy.add(Fault.drop(f"/blobs/{big}$", after=100, times=2))
    events: list[Any] = []
    r = pull(store, f"{proxy.host}/app:1", options=opts(proxy.host), progress_fn=events.append)
    assert r.image_id == hosted.app.image_id
    assert [e.current for e in events if e.id == big and e.phase == "retrying"] == [100, 200]
    assert [e.phase for e in events if e.id == big][-1] == "done"
    ranges = [rng for m, p, s, rng in proxy.log if p.endswith(big)]
    assert ranges[0] is None and ranges[1:] == ["bytes=100-", "bytes=200-"]
    assert rootfs(store, r.image_id)[0] == EXPECTED and store.check() == []


def test_503_answers_are_retried(store: Store, hosted: Hosted, proxy: FaultProxy) -> None:
    proxy.add(Fault.status("/manifests/1$", 503, times=2))
    proxy.add(Fault.status("/blobs/", 502, times=2))
    r = pull(store, f"{proxy.host}/app:1", options=opts(proxy.host))
    assert r.image_id == hosted.app.image_id and store.check() == []


def test_503_forever_fails_cleanly(store: Store, hosted: Hosted, proxy: FaultProxy) -> None:
    proxy.add(Fault.status(f"/blobs/{sha(hosted.app.layers[1])}$", 503, times=-1))
    e = refused(store, RegistryError, lambda: pull(store, f"{proxy.host}/app:1", options=opts(proxy.host)))
    assert "503" in str(e) or "UNAVAILABLE" in str(e)


def test_dropped_connection_forever_fails_cleanly(store: Store, hosted: Hosted, proxy: FaultProxy) -> None:
    proxy.add(Fault.drop(f"/blobs/{sha(hosted.app.layers[0])}$", after=0, times=-1))
    refused(store, RegistryError, lambda: pull(store, f"{proxy.host}/app:1", options=opts(proxy.host)),
            match="failed after")


def test_wrong_bytes_are_a_digest_mismatch(store: Store, hosted: Hosted, proxy: FaultProxy) -> None:
    proxy.add(Fault.corrupt(f"/blobs/{sha(hosted.app.layers[1])}$", offset=40, times=-1))
    refused(store, DigestMismatch, lambda: pull(store, f"{proxy.host}/app:1", options=opts(proxy.host)),
            match="digest mismatch")


def test_wrong_manifest_bytes_for_a_digest(store: Store, hosted: Hosted, proxy: FaultProxy) -> None:
    proxy.add(Fault.replace("/manifests/sha256:", hosted.derived.manifest, content_type=formats.MEDIA_OCI_MANIFEST))
    refused(store, DigestMismatch, lambda: pull(store, f"{proxy.host}/app@{hosted.app.manifest_digest}",
                                                options=opts(proxy.host)))


def test_registry_unreachable(store: Store) -> None:
    port = free_port()  # nothing listens there
    e = refused(store, Unreachable, lambda: pull(store, f"127.0.0.1:{port}/app:1", options=opts(f"127.0.0.1:{port}")))
    assert "connection refused" in str(e)


def test_unknown_repository_and_tag(store: Store, hosted: Hosted) -> None:
    refused(store, NotFound, lambda: pull(store, f"{hosted.host}/nope:1", options=opts(hosted.host)))
    refused(store, NotFound, lambda: pull(store, f"{hosted.host}/app:nope", options=opts(hosted.host)))


# ================================================================================ bad input


def _upload(host: str, repo: str, tag: str, blobs: list[bytes], manifest: bytes,
            media_type: str = formats.MEDIA_OCI_MANIFEST) -> None:
    """Put crafted blobs and a manifest into the registry with the raw client."""
    with RegistryClient(opts(host)) as c:
        r = c.repository(repo, c.origin(host), push=True)
        for b in blobs:
            import io

            r.upload_blob(Digest(sha(b)), len(b), lambda b=b: io.BytesIO(b))
        r.put_manifest(tag, manifest, media_type)


def _crafted(config: bytes, layers: list[tuple[str, bytes]], *, sizes: list[int] | None = None) -> bytes:
    return canon({"schemaVersion": 2, "mediaType": formats.MEDIA_OCI_MANIFEST,
                  "config": desc(formats.MEDIA_OCI_CONFIG, config),
                  "layers": [{"mediaType": t, "digest": sha(b), "size": (sizes[i] if sizes else len(b))}
                             for i, (t, b) in enumerate(layers)]})


@pytest.fixture(scope="module")
def crafted(hosted: Hosted) -> dict[str, str]:
    """Images with one defect each, in the registry; name -> reference path."""
    gz_base = compress(BASE, "gzip")
    cfg = config_for([sha(BASE)])
    out: dict[str, str] = {}

    def put(name: str, config: bytes, layers: list[tuple[str, bytes]], **kw: Any) -> None:
        _upload(hosted.host, "bad", name, [config, *[b for _, b in layers]], _crafted(config, layers, **kw))
        out[name] = f"bad:{name}"

    put("truncated-gzip", cfg, [(formats.MEDIA_OCI_LAYER_GZIP, gz_base[: len(gz_base) // 2])])
    bad = bytearray(gz_base)
    for i in range(len(bad) // 3, len(bad) // 3 + 16):
        bad[i] ^= 0x55
    put("corrupt-gzip", cfg, [(formats.MEDIA_OCI_LAYER_GZIP, bytes(bad))])
    put("truncated-zstd", cfg, [(formats.MEDIA_OCI_LAYER_ZSTD, compress(BASE, "zstd")[:-40])])
    put("diffid", config_for([sha(APP)]), [(formats.MEDIA_OCI_LAYER_GZIP, gz_base)])
    put("config-json", b'{"architecture": "amd64", "os": ', [(formats.MEDIA_OCI_LAYER_GZIP, gz_base)])
    put("config-layers", config_for([sha(BASE), sha(APP)]), [(formats.MEDIA_OCI_LAYER_GZIP, gz_base)])
    put("bigger-than-descriptor", cfg, [(formats.MEDIA_OCI_LAYER_GZIP, gz_base)], sizes=[len(gz_base) - 10])
    put("smaller-than-descriptor", cfg, [(formats.MEDIA_OCI_LAYER_GZIP, gz_base)], sizes=[len(gz_base) + 10])
    put("hostile-tar", config_for([sha(make_tar([E("../escape", b"x")]))]),
        [(formats.MEDIA_OCI_LAYER, make_tar([E("../escape", b"x")]))])
    return out


@pytest.mark.parametrize("name, exc, match", [
    ("truncated-gzip", InvalidInput, "corrupt gzip"),
    ("corrupt-gzip", InvalidInput, "corrupt gzip|invalid"),
    ("truncated-zstd", InvalidInput, "corrupt zstd"),
    ("diffid", DigestMismatch, "DiffID mismatch"),
    ("config-json", InvalidInput, "invalid JSON"),
    ("config-layers", InvalidInput, "diff_ids"),
    ("bigger-than-descriptor", DigestMismatch, "the descriptor says"),
    ("smaller-than-descriptor", DigestMismatch, "the descriptor says"),
    ("hostile-tar", InvalidInput, "escape|\\.\\."),
])
def test_bad_images_are_refused_and_leave_nothing(name: str, exc: type[Exception], match: str, store: Store,
                                                  hosted: Hosted, crafted: dict[str, str]) -> None:
    refused(store, exc, lambda: pull(store, f"{hosted.host}/{crafted[name]}", options=opts(hosted.host)), match=match)


@pytest.mark.parametrize("body, content_type, exc, match", [
    (b'{"schemaVersion": 2, "layers": 5, "config": {}}', formats.MEDIA_OCI_MANIFEST, InvalidInput, "invalid manifest"),
    (b"not json at all", "application/json", InvalidInput, "invalid JSON"),
    (b'{"schemaVersion": 2, "mediaType": "application/x-unknown"}', "application/x-unknown", InvalidInput, "unknown"),
    (b'{"schemaVersion": 1, "fsLayers": []}', "application/json", Unsupported, "schema 1"),
    (b"{" + b" " * (5 << 20) + b"}", formats.MEDIA_OCI_MANIFEST, InvalidInput, "limit"),
])
def test_bad_manifests_are_refused(body: bytes, content_type: str, exc: type[Exception], match: str,
                                   store: Store, hosted: Hosted, proxy: FaultProxy) -> None:
    proxy.add(Fault.replace("/manifests/1$", body, content_type=content_type))
    refused(store, exc, lambda: pull(store, f"{proxy.host}/app:1", options=opts(proxy.host)), match=match)


def test_unknown_layer_media_type(store: Store, hosted: Hosted, proxy: FaultProxy) -> None:
    m = json.loads(hosted.app.manifest)
    m["layers"][1]["mediaType"] = "application/vnd.example.layer.v1+weird"
    proxy.add(Fault.replace("/manifests/1$", canon(m), content_type=formats.MEDIA_OCI_MANIFEST))
    refused(store, InvalidInput, lambda: pull(store, f"{proxy.host}/app:1", options=opts(proxy.host)),
            match="unknown layer media type")


# ================================================================================ mirrors


def test_mirror_down_or_404_falls_back_to_the_origin(store: Store, hosted: Hosted, proxy: FaultProxy) -> None:
    proxy.add(Fault.status(".", 404, times=-1, method=None))
    dead = f"http://127.0.0.1:{free_port()}"
    o = opts(hosted.host, mirrors={hosted.host: (dead, proxy.url)})
    r = pull(store, f"{hosted.host}/app:1", options=o)
    assert r.endpoint == hosted.host and r.image_id == hosted.app.image_id
    assert proxy.count("GET", "/manifests/1$", 404) == 1


def test_docker_hub_mirror_serves_the_pull(store: Store, hosted: Hosted, proxy: FaultProxy) -> None:
    """``app:1`` means docker.io/library/app:1; the mirror (our registry, through the proxy)
    serves it all, so nothing goes to the real Docker Hub."""
    o = opts(mirrors={"docker.io": (proxy.url,)})
    r = pull(store, "app:1", options=o)
    assert r.endpoint == f"mirror {proxy.url}" and r.image_id == hosted.app.image_id
    assert str(r.reference) == "docker.io/library/app:1"
    assert store.resolve_image("app:1").id == hosted.app.image_id


def test_blob_missing_on_a_mirror_comes_from_the_origin(store: Store, hosted: Hosted, proxy: FaultProxy) -> None:
    missing = sha(hosted.app.layers[1])
    proxy.add(Fault.status(f"/blobs/{missing}$", 404, times=-1))
    o = opts(hosted.host, mirrors={hosted.host: (proxy.url,)})
    r = pull(store, f"{hosted.host}/app:1", options=o)
    assert r.endpoint.startswith("mirror") and rootfs(store, r.image_id)[0] == EXPECTED
    assert proxy.count("GET", f"/blobs/{missing}$", 404) == 1


# ================================================================================ auth


def test_basic_auth(tmp_path: Path, new_store: Callable[[str], Store], hosted: Hosted) -> None:  # noqa: F811
    cfg = tmp_path / "docker" / "config.json"
    with run_registry(tmp_path / "reg", htpasswd={"alice": "s3cret"}) as reg:
        src = new_store("src")
        load_archive(src, _layout(tmp_path / "layout", hosted.app))
        src.tag(hosted.app.image_id, f"{reg.host}/app:1")
        refused(src, Unauthorized, lambda: push(src, f"{reg.host}/app:1", options=opts(reg.host)), match="lamina login")
        wrong = opts(reg.host, credentials={reg.host: Credentials("alice", "nope")})
        refused(src, Unauthorized, lambda: push(src, f"{reg.host}/app:1", options=wrong), match="refused")
        store_credentials(cfg, reg.host, Credentials("alice", "s3cret"))
        assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
        r = push(src, f"{reg.host}/app:1", options=opts(reg.host, credentials_file=cfg))
        assert r.pushed == 3
        dst = new_store("dst")
        refused(dst, Unauthorized, lambda: pull(dst, f"{reg.host}/app:1", options=opts(reg.host)))
        p = pull(dst, f"{reg.host}/app:1", options=opts(reg.host, credentials_file=cfg))
        assert rootfs(dst, p.image_id)[0] == EXPECTED


def test_bearer_token_auth(tmp_path: Path, new_store: Callable[[str], Store], hosted: Hosted) -> None:  # noqa: F811
    with run_token_server(tmp_path / "ts", users={"bob": "pw"}) as ts, \
            run_registry(tmp_path / "reg", token_realm=ts.realm, token_cert=ts.cert,
                         token_service=ts.service, token_issuer=ts.issuer) as reg:
        src = new_store("src")
        load_archive(src, _layout(tmp_path / "layout", hosted.derived))
        src.tag(hosted.derived.image_id, f"{reg.host}/team/app:1")
        ref = f"{reg.host}/team/app:1"
        refused(src, Unauthorized, lambda: push(src, ref, options=opts(reg.host)), match="not allowed to pull,push team/app")
        bad = opts(reg.host, credentials={reg.host: Credentials("bob", "wrong")})
        refused(src, Unauthorized, lambda: push(src, ref, options=bad), match="token server refused")
        good = opts(reg.host, credentials={reg.host: Credentials("bob", "pw")})
        ts.requests.clear()
        assert push(src, ref, options=good).pushed == 4
        assert ts.requests == [("bob", ()), ("bob", ("repository:team/app:pull,push",))]  # one token per scope
        dst = new_store("dst")
        ts.requests.clear()
        p = pull(dst, ref, options=opts(reg.host))  # anonymous pull is allowed
        assert p.downloaded == 3
        assert ts.requests == [(None, ("repository:team/app:pull",))]


# ================================================================================ two processes


def test_two_processes_pulling_one_image_download_each_blob_once(tmp_path: Path, hosted: Hosted,
                                                               proxy: FaultProxy) -> None:
    proxy.add(Fault.delay("/blobs/", 0.6, times=-1))
    root = tmp_path / "root"
    Store(root, driver="vfs").close()
    env = clean_env(DOCKER_CONFIG=str(tmp_path / "docker"))
    cmd = lamina_command() + ["--root", str(root), "--driver", "vfs", "pull", "-q", "--insecure", f"{proxy.host}/derived:1"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()
        assert out.decode().strip() == f"{proxy.host}/derived:1"
    for blob in [hosted.derived.config, *hosted.derived.layers]:
        assert blob_gets(proxy, sha(blob)) == 1, sha(blob)
    with Store(root) as s:
        assert s.check() == []
        assert len(s.layers.list()) == 3 and len(s.images.list()) == 1
        assert rootfs(s, f"{proxy.host}/derived:1")[0]["opt/extra.txt"][-1] == b"extra layer\n"


def _lamina_pull_process(root: Path, ref: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    cmd = lamina_command() + ["--root", str(root), "--driver", "vfs", "pull", "--insecure", ref]
    return subprocess.Popen(cmd, env=clean_env(DOCKER_CONFIG=str(tmp_path / "docker")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_killed_pull_is_rolled_back_and_the_next_one_resumes_with_range(tmp_path: Path, hosted: Hosted,
                                                                      proxy: FaultProxy) -> None:
    root = tmp_path / "root"
    Store(root, driver="vfs").close()
    big = sha(hosted.derived.layers[0])
    proxy.add(Fault.stall(f"/blobs/{big}$", after=300, seconds=60))
    p = _lamina_pull_process(root, f"{proxy.host}/derived:1", tmp_path)
    try:
        assert proxy.stalled.wait(60), "the download never started"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the other layers are applied: pending rows exist
            with Store(root, driver="vfs") as s:
                partial = s.content.ingests()  # only the stalled one: the others completed
                if [(i.expected, i.offset) for i in partial] == [(big, 300)]:
                    break
            time.sleep(0.05)
    finally:
        p.kill()
        p.wait(30)
    with Store(root, driver="vfs") as s:  # opening recovers what the killed pull left
        assert s.images.list() == [] and s.refs.list() == []
        assert [i.offset for i in s.content.ingests()] == [300]  # kept for a resume
        proxy.log.clear()
        r = pull(s, f"{proxy.host}/derived:1", options=opts(proxy.host))
        assert ("GET", f"/v2/derived/blobs/{big}", 206, "bytes=300-") in proxy.log
        assert r.image_id == hosted.derived.image_id and s.check() == []


def test_interrupted_pull_exits_130_at_once_and_leaves_nothing(tmp_path: Path, hosted: Hosted,
                                                              proxy: FaultProxy) -> None:
    root = tmp_path / "root"
    Store(root, driver="vfs").close()
    with Store(root) as s:
        before = snapshot(s)
    proxy.add(Fault.stall(f"/blobs/{sha(hosted.derived.layers[0])}$", after=300, seconds=60))
    p = _lamina_pull_process(root, f"{proxy.host}/derived:1", tmp_path)
    try:
        assert proxy.stalled.wait(60)
        time.sleep(0.3)
        t = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert time.monotonic() - t < 5  # not the stalled server's 60 s
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130 and err.decode().strip() == "lamina: interrupted"
    with Store(root) as s:
        assert snapshot(s) == before and s.check() == []


# ================================================================================ the CLI


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    lam = Lamina(tmp_path / "root")
    env = clean_env(DOCKER_CONFIG=str(tmp_path / "docker"))

    def run(*args: str, expect: int | None = 0, input: bytes | None = None) -> Any:
        return lam(*args, expect=expect, input=input, env=env)

    run.root = lam.root  # type: ignore[attr-defined]
    run.docker_config = tmp_path / "docker" / "config.json"  # type: ignore[attr-defined]
    yield run


def test_cli_pull_output_and_quiet(cli: Callable[..., Any], hosted: Hosted) -> None:
    r = cli("pull", "--insecure", f"{hosted.host}/app:1")
    lines = r.out.splitlines()
    assert lines[0] == f"1: Pulling from {hosted.host}/app"
    short = [sha(b)[7:19] for b in hosted.app.layers]
    for s in short:
        assert f"{s}: Pull complete" in lines
    assert lines[-3:] == [f"Digest: {hosted.app.manifest_digest}",
                          f"Status: Downloaded newer image for {hosted.host}/app:1", f"{hosted.host}/app:1"]
    r = cli("pull", "--insecure", f"{hosted.host}/app:1")
    assert f"Status: Image is up to date for {hosted.host}/app:1" in r.out
    assert all(f"{s}: Already exists" in r.out for s in short)
    r = cli("pull", "-q", "--insecure", f"{hosted.host}/mixed:1")
    assert r.out == f"{hosted.host}/mixed:1\n"
    r = cli("pull", "-q", "--insecure", "--platform", f"linux/{OTHER_ARCH}", f"{hosted.host}/multi:1")
    assert cli("inspect", f"{hosted.host}/multi:1").out.count(f'"Architecture": "{OTHER_ARCH}"') == 1
    r = cli("pull", "--insecure", "--platform", "linux/s390x", f"{hosted.host}/multi:1", expect=2)
    _one_line_failure(r)
    assert "s390x" in r.err
    assert cli("system", "check").out.strip() == "ok"


def test_cli_push_output(cli: Callable[..., Any], hosted: Hosted) -> None:
    cli("pull", "-q", "--insecure", f"{hosted.host}/app:1")
    cli("tag", f"{hosted.host}/app:1", f"{hosted.host}/cli/app:7")
    r = cli("push", "--insecure", f"{hosted.host}/cli/app:7")
    lines = r.out.splitlines()
    assert lines[0] == f"The push refers to repository [{hosted.host}/cli/app]"
    assert lines[-1] == f"7: digest: {hosted.app.manifest_digest} size: {len(hosted.app.manifest)}"
    assert any(line.endswith("Mounted from app") for line in lines)
    assert cli("push", "-q", "--insecure", f"{hosted.host}/cli/app:7").out == hosted.app.manifest_digest + "\n"


def _one_line_failure(r: Any) -> None:
    assert len(r.err.splitlines()) == 1 and r.err.startswith("lamina: ") and "Traceback" not in r.err, r.err


@pytest.mark.parametrize("name, code", [
    ("truncated-gzip", 5), ("corrupt-gzip", 5), ("diffid", 6), ("config-json", 5),
    ("bigger-than-descriptor", 6),
])
def test_cli_bad_input_one_line_nothing_left(name: str, code: int, cli: Callable[..., Any], hosted: Hosted,
                                           crafted: dict[str, str]) -> None:
    cli("pull", "-q", "--insecure", f"{hosted.host}/app:1")  # something to keep intact
    with Store(cli.root) as s:  # type: ignore[attr-defined]
        before = snapshot(s)
    r = cli("pull", "--insecure", f"{hosted.host}/{crafted[name]}", expect=code)
    _one_line_failure(r)
    with Store(cli.root) as s:  # type: ignore[attr-defined]
        assert snapshot(s) == before and s.check() == []


def test_cli_unreachable_and_wrong_bytes(cli: Callable[..., Any], hosted: Hosted, proxy: FaultProxy) -> None:
    port = free_port()
    r = cli("pull", "--insecure", f"127.0.0.1:{port}/app:1", expect=1)
    _one_line_failure(r)
    assert "cannot reach" in r.err and "connection refused" in r.err
    proxy.add(Fault.corrupt("/blobs/", offset=10, times=-1))
    r = cli("pull", "--insecure", f"{proxy.host}/app:1", expect=6)
    _one_line_failure(r)
    assert "digest mismatch" in r.err
    r = cli("pull", "--insecure", f"{hosted.host}/app:nope", expect=2)
    _one_line_failure(r)
    with Store(cli.root) as s:  # type: ignore[attr-defined]
        assert s.images.list() == [] and s.layers.list() == [] and s.check() == []


def test_cli_login_logout_and_refused_credentials(cli: Callable[..., Any], tmp_path: Path, hosted: Hosted) -> None:
    cfg: Path = cli.docker_config  # type: ignore[attr-defined]
    with run_registry(tmp_path / "reg", htpasswd={"carol": "pa55"}) as reg:
        r = cli("login", "-u", "carol", "--password-stdin", "--insecure", reg.host, input=b"wrong\n", expect=1)
        _one_line_failure(r)
        assert "refused" in r.err and not cfg.exists()
        r = cli("pull", "--insecure", f"{reg.host}/app:1", expect=1)
        _one_line_failure(r)
        assert "lamina login" in r.err
        r = cli("login", "-u", "carol", "--password-stdin", "--insecure", reg.host, input=b"pa55\n")
        assert r.out == "Login Succeeded\n"
        assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
        assert load_credentials(cfg, reg.host) == Credentials("carol", "pa55")
        r = cli("pull", "--insecure", f"{reg.host}/app:1", expect=2)  # now authorised: the repo is empty
        _one_line_failure(r)
        assert "not found" in r.err
        assert cli("logout", reg.host).out == f"Removing login credentials for {reg.host}\n"
        assert load_credentials(cfg, reg.host) is None
        assert cli("logout", reg.host).out == f"Not logged in to {reg.host}\n"


def test_cli_help_lists_the_commands() -> None:
    p = subprocess.run(lamina_command() + ["--help"], capture_output=True, text=True, env=clean_env())
    for name in ("pull", "push", "login", "logout"):
        assert f"    {name} " in p.stdout



def test_cli_mirrors_from_the_environment(tmp_path: Path, hosted: Hosted, proxy: FaultProxy) -> None:
    """``LAMINA_REGISTRY_MIRRORS``: a bare URL mirrors Docker Hub; ``HOST=URL`` another registry."""
    lam = Lamina(tmp_path / "root")
    dead = f"http://127.0.0.1:{free_port()}"
    env = clean_env(DOCKER_CONFIG=str(tmp_path / "docker"),
                    LAMINA_REGISTRY_MIRRORS=f"{dead}, {proxy.url} {hosted.host}={dead}")
    r = lam("pull", "-q", "app:1", env=env)  # docker.io/library/app:1, served by the proxy
    assert r.out == "docker.io/library/app:1\n"
    assert proxy.count("GET", "/v2/library/app/manifests/1$", 200) == 1
    r = lam("pull", "-q", "--insecure", f"{hosted.host}/mixed:1", env=env)  # dead mirror: origin
    assert r.out == f"{hosted.host}/mixed:1\n"
    bad = clean_env(DOCKER_CONFIG=str(tmp_path / "docker"), LAMINA_REGISTRY_MIRRORS="ftp://x")
    r = lam("pull", "app:1", env=bad, expect=5)
    _one_line_failure(r)
    assert "ftp://x" in r.err
