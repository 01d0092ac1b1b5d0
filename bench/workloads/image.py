"""Pack layer tars into an image: gzip blobs, an OCI config and manifest, an OCI image layout.

The bench writes these documents itself (plain JSON, canonical key order) rather than calling
lamina's builders: a workload must not depend on the code it measures. Blobs are gzip (level 6,
no name, mtime 0, the way registries commonly serve layers), so the same input gives the same
bytes and digests on every machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
COMPRESSIONS = {"gzip": MEDIA_LAYER_GZIP, "zstd": MEDIA_LAYER_ZSTD}
CHUNK = 1 << 20


@dataclass
class LayerFile:
    """One layer of a workload: its uncompressed tar (for materialise and the roofline's GNU tar)
    and its gzip blob (for the registry, archives and peers)."""

    tar: str
    diff_id: str
    size: int
    blob: str
    digest: str
    blob_size: int
    media_type: str = MEDIA_LAYER_GZIP

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LayerFile":
        return cls(**d)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        while True:
            k = f.readinto(buf)
            if not k:
                break
            h.update(memoryview(buf)[:k])
            n += k
    return "sha256:" + h.hexdigest(), n


def gzip_file(src: Path, dst: Path, level: int = 6) -> tuple[str, int]:
    """Compress ``src`` into ``dst`` as a deterministic gzip member; returns (digest, size).
    Written to a temp name and renamed, so a half-written blob is never taken for a cached one."""
    h = hashlib.sha256()
    n = 0
    tmp = dst.with_name(dst.name + ".tmp")
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: gzip header, mtime 0, no name
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        while True:
            chunk = fin.read(CHUNK)
            if not chunk:
                break
            out = comp.compress(chunk)
            if out:
                fout.write(out)
                h.update(out)
                n += len(out)
        out = comp.flush()
        fout.write(out)
        h.update(out)
        n += len(out)
    os.replace(tmp, dst)
    return "sha256:" + h.hexdigest(), n


def zstd_file(src: Path, dst: Path, level: int = 3) -> tuple[str, int]:
    """``gzip_file`` for zstd (level 3, zstd's default; one frame with the content size, no
    dictionary, single-threaded: the same bytes on every machine)."""
    import zstandard  # here: only the zstd workloads need it

    h = hashlib.sha256()
    tmp = dst.with_name(dst.name + ".tmp")
    cctx = zstandard.ZstdCompressor(level=level, write_content_size=True, threads=0)
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        with cctx.stream_writer(_Hashing(fout, h), size=os.fstat(fin.fileno()).st_size, closefd=False) as w:
            while chunk := fin.read(CHUNK):
                w.write(chunk)
    os.replace(tmp, dst)
    return "sha256:" + h.hexdigest(), dst.stat().st_size


class _Hashing:
    """A binary file that hashes what is written to it."""

    def __init__(self, f: Any, h: Any) -> None:
        self.f, self.h = f, h

    def write(self, b: bytes) -> int:
        self.h.update(b)
        return self.f.write(b)  # type: ignore[no-any-return]

    def flush(self) -> None:
        self.f.flush()


def pack_layer(tar: Path, blob_dir: Path, compression: str = "gzip") -> LayerFile:
    """Hash the tar (DiffID), compress it (gzip or zstd) into ``blob_dir/<hex>`` (digest);
    reuse a blob made before."""
    media = COMPRESSIONS[compression]
    diff_id, size = sha256_file(tar)
    marker = tar.with_suffix(".blob" if compression == "gzip" else f".{compression}.blob")
    if marker.exists():
        digest = marker.read_text().strip()
        blob = blob_dir / digest.split(":", 1)[1]
        if blob.exists():
            return LayerFile(str(tar), diff_id, size, str(blob), digest, blob.stat().st_size, media)
    blob_dir.mkdir(parents=True, exist_ok=True)
    tmp = blob_dir / f".new-{os.getpid()}-{tar.stem}"
    digest, bsize = (gzip_file if compression == "gzip" else zstd_file)(tar, tmp)
    blob = blob_dir / digest.split(":", 1)[1]
    os.replace(tmp, blob)
    marker.write_text(digest + "\n")
    return LayerFile(str(tar), diff_id, size, str(blob), digest, bsize, media)


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def image_config(layers: Iterable[LayerFile], cmd: list[str], history: list[str]) -> bytes:
    diff_ids = [lf.diff_id for lf in layers]
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Cmd": cmd,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": h} for h in history],
    }
    return canonical(doc)


def descriptor(media_type: str, digest: str, size: int, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    d.update(extra)
    return d


def write_layout(layout: Path, layers: list[LayerFile], config: bytes, ref_name: str) -> dict[str, str]:
    """An OCI image layout with the image under ``ref_name`` (both the containerd and the OCI
    annotation carry the full reference). Blobs are hard links to the workload's blobs (the
    same filesystem), copies otherwise. Returns the config and manifest digests."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for lf in layers:
        dst = blobs / lf.digest.split(":", 1)[1]
        if not dst.exists():
            try:
                os.link(lf.blob, dst)
            except OSError:
                import shutil

                shutil.copyfile(lf.blob, dst)
    cfg_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (blobs / cfg_digest[7:]).write_bytes(config)
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, cfg_digest, len(config)),
        "layers": [descriptor(lf.media_type, lf.digest, lf.blob_size) for lf in layers],
    })
    man_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (blobs / man_digest[7:]).write_bytes(manifest)
    index = canonical({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [descriptor(MEDIA_MANIFEST, man_digest, len(manifest), annotations={
            "io.containerd.image.name": ref_name,
            "org.opencontainers.image.ref.name": ref_name,
        })],
    })
    (layout / "index.json").write_bytes(index)
    (layout / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    return {"config": cfg_digest, "manifest": man_digest}
