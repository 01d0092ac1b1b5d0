"""Micro benchmark: ``lamina pull`` of a 3-layer, ~75 MB gzip image from a local registry
(Debian's docker-registry on 127.0.0.1), split into its parts, against ``skopeo copy`` (fetch and
verify only) of the same image. MACHINE-NOTES: podman pull of a 74 MB / 3-layer image takes
2.43 s on overlay, 3.13 s on vfs; the aim is <= 0.6x that.

Run (as root: the store sits on a journaled ext4 loop filesystem made here, because ``/`` is
ext4 without a journal on these machines and a wipe-and-recreate loop there measures nothing)::

    .venv/bin/python -m pytest bench/micro/test_pull_bench.py --benchmark-columns=min,median,max

What each benchmark times (``extra_info`` has MB/s where it means something):

- ``pull[vfs-1|overlay-1|overlay-zstd]``: the whole ``graph.pull`` into an empty store
  (resolve, download, verify, decompress, apply, commit, record) of the gzip image (tag 1) or the
  same tars as zstd (podman: 1.92 s on overlay). Each round gets a fresh store; the previous one
  is removed outside the timing.
- ``download``: the three blobs fetched into a content store (HTTP + sha256 + write + fsync),
  three at once as pull does.
- ``verify``: sha256 of the three blobs from memory (the floor of verification).
- ``decompress``: gunzip of the three blobs with ISA-L (no tar work).
- ``apply[vfs]``: the three uncompressed tars applied by the vfs driver through the layer store
  (no network, no decompression).
- ``skopeo``: ``skopeo copy docker://... oci:DIR`` (fetch + verify, no extraction).

The image is generated deterministically (seeded; ISA-L gzip level 2): layer 1 a "base system"
of 5.2k small text files and two larger files, layer 2 2k files plus four large ones, layer 3 2k
small files and three whiteouts; about 171 MB unpacked, 77 MB gzip, 9.3k entries, close to image
A of MACHINE-NOTES (184 MB / 74 MB / 9.3k).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.loopfs import loop_filesystem, loopfs_skip_reason
from tests.registry import REGISTRY_BIN, run_registry

ROUNDS = 5
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


# ------------------------------------------------------------------------------ the image


def _text_pool(rnd: random.Random, size: int) -> bytes:
    words = [bytes(rnd.choices(b"abcdefghijklmnopqrstuvwxyz_", k=rnd.randint(2, 12))) for _ in range(4000)]
    out = bytearray()
    while len(out) < size:
        line = b" ".join(rnd.choices(words, k=rnd.randint(3, 14)))
        out += b"    " * rnd.randint(0, 3) + line + b"\n"
    return bytes(out[:size])


def _layer(seed: int, small: int, big: list[int], whiteouts: int = 0) -> bytes:
    """A layer tar: ``small`` text files (0.2-60 kB, Pareto-distributed) in directories of 40,
    files of the sizes in ``big`` (1/12 random bytes, the rest text), ``whiteouts`` whiteouts."""
    rnd = random.Random(seed)
    pool = _text_pool(rnd, 4 << 20)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add_dir(name: str) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tf.addfile(ti)

        for top in ("usr", "usr/lib", f"usr/lib/pkg{seed}", "opt"):
            add_dir(top)
        for i in range(small):
            if i % 40 == 0:
                add_dir(f"usr/lib/pkg{seed}/d{i // 40}")
            n = int(rnd.paretovariate(1.3) * 3000) % 60_000 + 200
            off = rnd.randrange(0, len(pool) - n)
            ti = tarfile.TarInfo(f"usr/lib/pkg{seed}/d{i // 40}/f{i}.py")
            ti.size, ti.mode, ti.mtime = n, 0o644, 1_700_000_000
            tf.addfile(ti, io.BytesIO(pool[off:off + n]))
        for j, n in enumerate(big):
            half = n // 12
            data = rnd.randbytes(half) + (pool * (1 + (n - half) // len(pool)))[: n - half]
            ti = tarfile.TarInfo(f"opt/blob{seed}_{j}.bin")
            ti.size, ti.mode, ti.mtime = n, 0o644, 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))
        for k in range(whiteouts):
            ti = tarfile.TarInfo(f"usr/lib/pkg1/d{k}/.wh.f{k * 40}.py")
            ti.size, ti.mode, ti.mtime = 0, 0o644, 1_700_000_000
            tf.addfile(ti)
    return buf.getvalue()


@dataclass
class BenchImage:
    layout: Path  # OCI layout directory: tag "1" (gzip layers), tag "zstd" (the same tars as zstd)
    tars: list[bytes]
    blobs: list[bytes]
    zstd_blobs: list[bytes]

    @property
    def gzip_bytes(self) -> int:
        return sum(len(b) for b in self.blobs)

    @property
    def tar_bytes(self) -> int:
        return sum(len(t) for t in self.tars)


def build_bench_image(out: Path) -> BenchImage:
    """Write the benchmark image as an OCI layout under ``out`` (deterministic)."""
    import hashlib

    from isal import igzip

    tars = [
        _layer(1, 5200, [6 << 20, 5 << 20]),
        _layer(2, 2000, [24 << 20, 20 << 20, 14 << 20, 10 << 20]),
        _layer(3, 2000, [4 << 20], whiteouts=3),
    ]
    import zstandard

    blobs = [igzip.compress(t, compresslevel=2, mtime=0) for t in tars]
    zstd_blobs = [zstandard.ZstdCompressor(level=3).compress(t) for t in tars]

    def sha(b: bytes) -> str:
        return "sha256:" + hashlib.sha256(b).hexdigest()

    cfg = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in tars]},
    }, sort_keys=True).encode()
    d = out / "blobs" / "sha256"
    d.mkdir(parents=True, exist_ok=True)
    entries = []
    for tag, media_type, layer_blobs in (("1", MEDIA_LAYER_GZIP, blobs), ("zstd", MEDIA_LAYER_ZSTD, zstd_blobs)):
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": sha(cfg), "size": len(cfg)},
            "layers": [{"mediaType": media_type, "digest": sha(b), "size": len(b)} for b in layer_blobs],
        }, sort_keys=True).encode()
        for b in [*layer_blobs, cfg, manifest]:
            (d / sha(b)[7:]).write_bytes(b)
        entries.append({"mediaType": MEDIA_MANIFEST, "digest": sha(manifest), "size": len(manifest),
                        "annotations": {"org.opencontainers.image.ref.name": tag}})
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return BenchImage(out, tars, blobs, zstd_blobs)


# ------------------------------------------------------------------------------ fixtures


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (loop filesystem)"
    if not os.path.exists(REGISTRY_BIN):
        return "docker-registry is not installed"
    return loopfs_skip_reason("ext4")


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


@pytest.fixture(scope="module")
def fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("pullfs")
    with loop_filesystem(base, "ext4", size="3G") as lfs:
        yield lfs.mountpoint


@pytest.fixture(scope="module")
def image(fs: Path) -> BenchImage:
    return build_bench_image(fs / "image")


@pytest.fixture(scope="module")
def registry(fs: Path, image: BenchImage) -> Iterator[str]:
    with run_registry(fs / "registry") as reg:
        for tag in ("1", "zstd"):
            subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{image.layout}:{tag}",
                            f"docker://{reg.host}/bench:{tag}"], check=True, capture_output=True)
        yield reg.host


def _fresh(path: Path) -> Path:
    if path.exists():
        _wipe(path)
    path.mkdir(parents=True)
    return path


def _wipe(path: Path) -> None:
    from graph import Store

    if (path / "lamina.db").exists():
        with Store(path) as s:
            s.driver.cleanup()
    shutil.rmtree(path)


# ------------------------------------------------------------------------------ benchmarks


@pytest.mark.parametrize("driver, tag", [("vfs", "1"), ("overlay", "1"), ("overlay", "zstd")])
def test_pull(benchmark: pytest.FixtureRequest, fs: Path, image: BenchImage, registry: str, driver: str,
              tag: str) -> None:
    from graph import Store
    from graph.distribution.pull import pull
    from graph.distribution.registry import RegistryOptions

    import drivers

    reason = drivers.supported(driver, fs / "probe")
    if reason is not None:
        pytest.skip(f"{driver}: {reason}")
    opts = RegistryOptions(insecure=frozenset({registry}))
    roots = iter(range(1000))
    state: dict[str, object] = {}

    def setup() -> tuple[tuple[object, ...], dict[str, object]]:
        old = state.pop("root", None)
        if old is not None:
            _wipe(old)  # type: ignore[arg-type]
        root = _fresh(fs / f"pull-{driver}-{next(roots)}")
        state["root"] = root
        subprocess.run(["sync"], check=True)
        return (root,), {}

    def run(root: Path) -> None:
        with Store(root, driver=driver) as store:
            r = pull(store, f"{registry}/bench:{tag}", options=opts)
            state["result"] = r

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    r = state["result"]
    benchmark.extra_info["blob_MB"] = round(sum(len(b) for b in (image.blobs if tag == "1" else image.zstd_blobs)) / 1e6, 1)
    benchmark.extra_info["tar_MB"] = round(image.tar_bytes / 1e6, 1)
    benchmark.extra_info["timings"] = {k: round(v, 3) for k, v in r.timings.items()}  # type: ignore[attr-defined]
    benchmark.extra_info["layer_times"] = r.layer_times  # type: ignore[attr-defined]
    _wipe(state["root"])  # type: ignore[arg-type]


def test_download(benchmark: pytest.FixtureRequest, fs: Path, image: BenchImage, registry: str) -> None:
    from graph.content import ContentStore
    from graph.digest import Digest
    from graph.distribution.registry import RegistryClient, RegistryOptions

    client = RegistryClient(RegistryOptions(insecure=frozenset({registry})))
    repo = client.repository("bench", client.origin(registry))
    n = iter(range(1000))

    def setup() -> tuple[tuple[object, ...], dict[str, object]]:
        root = _fresh(fs / f"dl-{next(n)}")
        return (ContentStore(root),), {}

    def fetch(store: ContentStore) -> None:
        def one(blob: bytes) -> None:
            d = Digest.of(blob)
            with store.ingest(d, len(blob)) as w:
                repo.fetch_blob(d, len(blob), w)
                w.commit()

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(one, image.blobs))
        shutil.rmtree(store.root)

    try:
        benchmark.pedantic(fetch, setup=setup, rounds=ROUNDS, iterations=1)
    finally:
        client.close()
    benchmark.extra_info["MB_per_s"] = round(image.gzip_bytes / 1e6 / benchmark.stats.stats.min, 1)


def test_verify(benchmark: pytest.FixtureRequest, image: BenchImage) -> None:
    import hashlib

    benchmark.pedantic(lambda: [hashlib.sha256(b).digest() for b in image.blobs], rounds=ROUNDS, iterations=1)
    benchmark.extra_info["MB_per_s"] = round(image.gzip_bytes / 1e6 / benchmark.stats.stats.min, 1)


def test_decompress(benchmark: pytest.FixtureRequest, image: BenchImage) -> None:
    from graph.unpack import decompressed

    def run() -> None:
        for b in image.blobs:
            r = decompressed(io.BytesIO(b), "gzip", "bench")
            buf = bytearray(1 << 20)
            while r.readinto(buf):
                pass

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["MB_per_s_out"] = round(image.tar_bytes / 1e6 / benchmark.stats.stats.min, 1)


def test_apply_vfs(benchmark: pytest.FixtureRequest, fs: Path, image: BenchImage) -> None:
    from graph import Store

    n = iter(range(1000))
    state: dict[str, Path] = {}

    def setup() -> tuple[tuple[object, ...], dict[str, object]]:
        if "root" in state:
            _wipe(state.pop("root"))
        root = _fresh(fs / f"apply-{next(n)}")
        state["root"] = root
        subprocess.run(["sync"], check=True)
        return (root,), {}

    def run(root: Path) -> None:
        with Store(root, driver="vfs") as store:
            parent = None
            for t in image.tars:
                parent = store.layers.register(io.BytesIO(t), parent).chain_id

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    _wipe(state["root"])
    benchmark.extra_info["MB_per_s"] = round(image.tar_bytes / 1e6 / benchmark.stats.stats.min, 1)


def test_skopeo(benchmark: pytest.FixtureRequest, fs: Path, registry: str) -> None:
    n = iter(range(1000))

    def setup() -> tuple[tuple[object, ...], dict[str, object]]:
        return (_fresh(fs / f"skopeo-{next(n)}"),), {}

    def run(d: Path) -> None:
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{registry}/bench:1",
                        f"oci:{d}/layout:1"], check=True, capture_output=True)
        shutil.rmtree(d)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)


if __name__ == "__main__":  # a quick manual run: sizes of the generated image
    import tempfile

    t = time.perf_counter()
    img = build_bench_image(Path(tempfile.mkdtemp()) / "img")
    print(f"{img.gzip_bytes / 1e6:.1f} MB gzip, {img.tar_bytes / 1e6:.1f} MB tar, built in {time.perf_counter() - t:.1f} s")
