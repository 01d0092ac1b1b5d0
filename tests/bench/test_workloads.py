"""bench.workloads: names, deterministic generation, caching and the expected tree."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from bench import workloads as W


@pytest.mark.parametrize("name, kind, files, size, depth", [
    ("realistic", "realistic", 0, 0, 0),
    ("small-files", "small-files", 20_000, 0, 0),
    ("small-files-2k", "small-files", 2000, 0, 0),
    ("small-files-500", "small-files", 500, 0, 0),
    ("large-files", "large-files", 0, 512 << 20, 0),
    ("large-files-64m", "large-files", 0, 64 << 20, 0),
    ("deep-128", "deep", 0, 0, 128),
])
def test_parse(name: str, kind: str, files: int, size: int, depth: int) -> None:
    s = W.parse(name)
    assert (s.kind, s.files, s.size, s.depth) == (kind, files, size, depth)


@pytest.mark.parametrize("bad", ["deep-0", "deep-501", "small-files-x", "huge", "large-files-1", ""])
def test_parse_refuses(bad: str) -> None:
    with pytest.raises(W.WorkloadError):
        W.parse(bad)


def test_generation_is_deterministic_and_cached(tmp_path: Path) -> None:
    a = W.build(W.parse("small-files-300"), tmp_path / "a", seed=7)
    b = W.build(W.parse("small-files-300"), tmp_path / "b", seed=7)
    c = W.build(W.parse("small-files-300"), tmp_path / "c", seed=8)
    assert a.manifest_digest == b.manifest_digest
    assert [lf.diff_id for lf in a.layers] == [lf.diff_id for lf in b.layers]
    assert a.manifest_digest != c.manifest_digest
    meta = Path(a.dir) / "meta.json"
    before = meta.stat().st_mtime_ns
    again = W.build(W.parse("small-files-300"), tmp_path / "a", seed=7)
    assert again.manifest_digest == a.manifest_digest and meta.stat().st_mtime_ns == before
    assert a.tree["files"] == 300 and 300 * 1024 <= a.tree["bytes"] <= 300 * 16384


def test_incomplete_cache_is_rebuilt(tmp_path: Path) -> None:
    w = W.build(W.parse("large-files-8m"), tmp_path, seed=1)
    Path(w.layers[0].blob).unlink()
    again = W.build(W.parse("large-files-8m"), tmp_path, seed=1)
    assert Path(again.layers[0].blob).exists() and again.manifest_digest == w.manifest_digest


def test_deep_images_share_their_layers(tmp_path: Path) -> None:
    d3 = W.build(W.parse("deep-3"), tmp_path, seed=1)
    d5 = W.build(W.parse("deep-5"), tmp_path, seed=1)
    assert [lf.diff_id for lf in d5.layers[:3]] == [lf.diff_id for lf in d3.layers]
    assert d5.tree["files"] == 501  # 500 base files + the last layer's, the earlier ones whited out
    names = tarfile.open(d5.layers[4].tar).getnames()
    assert "layers/.wh.3.txt" in names and "layers/4.txt" in names


def test_layout_is_an_oci_layout(tmp_path: Path) -> None:
    w = W.build(W.parse("deep-2"), tmp_path, seed=1)
    layout = Path(w.layout)
    index = json.loads((layout / "index.json").read_text())
    m = index["manifests"][0]
    assert m["annotations"]["org.opencontainers.image.ref.name"] == w.ref
    manifest = json.loads((layout / "blobs" / "sha256" / m["digest"][7:]).read_bytes())
    assert [x["digest"] for x in manifest["layers"]] == [lf.digest for lf in w.layers]
    config = json.loads(Path(w.config).read_bytes())
    assert config["rootfs"]["diff_ids"] == [lf.diff_id for lf in w.layers]


def _tar(path: Path, entries: list[tuple[str, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            if data is None:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return path


def test_tree_stats_apply_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    l1 = _tar(tmp_path / "1.tar", [("a", None), ("a/x", b"1"), ("a/y", b"22"), ("b", None), ("b/z", b"333"),
                                  ("c", b"4444")])
    l2 = _tar(tmp_path / "2.tar", [("a/.wh.x", b""), ("b/new", b"55555"), ("b/.wh..wh..opq", b""),
                                  ("./d", b"666666")])
    st = W.tree_stats([l1, l2])
    # left: a/, a/y, b/, b/new (opaque hid b/z), c, d
    assert st["files"] == 4 and st["dirs"] == 2
    assert st["bytes"] == 2 + 5 + 4 + 6
    assert st["largest"] == "d" and st["largest_size"] == 6


def test_realistic_zstd_is_the_realistic_image_with_zstd_blobs(tmp_path: Path) -> None:
    """``realistic-zstd``: the same layer tars packed as zstd (issue 15's zstd pull aim). The
    blob is one deterministic zstd frame that decompresses to the tar, with zstd's media type;
    a gzip pack of the same tar keeps its own blob and marker."""
    import zstandard

    from bench.workloads import image

    spec = W.parse("realistic-zstd")
    assert (spec.kind, spec.compression) == ("realistic", "zstd")
    assert W.parse("realistic").compression == "gzip"
    tar = tmp_path / "layer.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        data = b"lamina " * 20000
        ti = tarfile.TarInfo("f")
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    z = image.pack_layer(tar, tmp_path / "zb", "zstd")
    g = image.pack_layer(tar, tmp_path / "gb", "gzip")
    assert z.media_type == image.MEDIA_LAYER_ZSTD and g.media_type == image.MEDIA_LAYER_GZIP
    assert z.digest != g.digest and z.diff_id == g.diff_id
    blob = Path(z.blob).read_bytes()
    assert blob[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert zstandard.ZstdDecompressor().decompress(blob) == tar.read_bytes()
    again = image.pack_layer(tar, tmp_path / "zb2", "zstd")
    assert again.digest == z.digest and z.blob_size == len(blob)
    assert image.pack_layer(tar, tmp_path / "zb", "zstd") == z  # the marker's cached blob
