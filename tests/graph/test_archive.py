"""Image archives (``graph.archive``) on a real vfs store with real files.

Source images are built here: two layers with files, dirs, symlinks, a hardlink, owners, modes,
xattrs, and in layer 2 a whiteout, a directory whiteout and an opaque directory. They are written
as an OCI layout (gzip, zstd, uncompressed, tarred, multi-platform with nested indexes), a legacy
``docker save`` tar (``<id>/layer.tar`` with a symlinked shared layer) and a Docker 25 tar; each is
loaded, mounted through a container and compared with the expected tree, then saved in both
formats, loaded into a fresh store and saved again: bytes and digests must be identical.

Bad inputs each assert the error class, a one-line message, and that the store did not change
(every table, every blob, the driver's layer dirs, and ``Store.check() == []``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from graph import DigestMismatch, InvalidInput, NotFound, Store, Unsupported, parse_reference
from graph.oci import formats
from graph.archive import ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, load_archive, save_archive
from graph.oci.formats import Platform
from tests.tarbuild import E, make_tar

NAME = "example.com/app:1.0"

BASE = make_tar([
    E("bin", kind="symlink", target="usr/bin"),
    E("etc", kind="dir"),
    E("etc/hostname", b"base\n", xattrs={"user.origin": "base"}),
    E("etc/secret", b"s3cret\n", mode=0o600),
    E("etc/remove-me", b"bye\n"),
    E("etc/localtime", kind="symlink", target="/usr/share/zoneinfo/UTC"),
    E("home", kind="dir"),
    E("home/user", kind="dir", mode=0o750, uid=1000, gid=1000),
    E("home/user/notes", b"notes\n", mode=0o640, uid=1000, gid=1000),
    E("tmp", kind="dir", mode=0o1777),
    E("usr", kind="dir"),
    E("usr/bin", kind="dir"),
    E("usr/bin/tool", b"#!/bin/sh\necho tool\n", mode=0o755),
    E("usr/bin/tool2", kind="link", target="usr/bin/tool"),
    E("var", kind="dir"),
    E("var/lib", kind="dir"),
    E("var/lib/gone", kind="dir"),
    E("var/lib/gone/x", b"x"),
    E("var/lib/opaque", kind="dir"),
    E("var/lib/opaque/a", b"a"),
    E("var/lib/opaque/sub", kind="dir"),
    E("var/lib/opaque/sub/b", b"b"),
])
APP = make_tar([
    E("etc", kind="dir"),
    E("etc/remove-me", kind="whiteout"),
    E("etc/hostname", b"app\n", xattrs={"user.origin": "app"}),
    E("srv", kind="dir", mode=0o700),
    E("srv/app.txt", b"hello app\n", mode=0o755, uid=33, gid=33),
    E("var", kind="dir"),
    E("var/lib", kind="dir"),
    E("var/lib/gone", kind="whiteout"),
    E("var/lib/opaque", kind="dir"),
    E("var/lib/opaque", kind="opaque"),
    E("var/lib/opaque/c", b"c"),
])
ARM = make_tar([E("etc", kind="dir"), E("etc/arch", b"arm64\n")])
HOSTILE = make_tar([E("ok", b"fine"), E("../escape", b"gotcha")])

Tree = dict[str, tuple[Any, ...]]
D, F, L = "dir", "file", "symlink"
EXPECTED: Tree = {
    "bin": (L, "usr/bin"),
    "etc": (D, 0o755, 0, 0, {}),
    "etc/hostname": (F, 0o644, 0, 0, {"user.origin": b"app"}, b"app\n"),
    "etc/localtime": (L, "/usr/share/zoneinfo/UTC"),
    "etc/secret": (F, 0o600, 0, 0, {}, b"s3cret\n"),
    "home": (D, 0o755, 0, 0, {}),
    "home/user": (D, 0o750, 1000, 1000, {}),
    "home/user/notes": (F, 0o640, 1000, 1000, {}, b"notes\n"),
    "srv": (D, 0o700, 0, 0, {}),
    "srv/app.txt": (F, 0o755, 33, 33, {}, b"hello app\n"),
    "tmp": (D, 0o1777, 0, 0, {}),
    "usr": (D, 0o755, 0, 0, {}),
    "usr/bin": (D, 0o755, 0, 0, {}),
    "usr/bin/tool": (F, 0o755, 0, 0, {}, b"#!/bin/sh\necho tool\n"),
    "usr/bin/tool2": (F, 0o755, 0, 0, {}, b"#!/bin/sh\necho tool\n"),
    "var": (D, 0o755, 0, 0, {}),
    "var/lib": (D, 0o755, 0, 0, {}),
    "var/lib/opaque": (D, 0o755, 0, 0, {}),
    "var/lib/opaque/c": (F, 0o644, 0, 0, {}, b"c"),
}


# ---------------------------------------------------------------------------- image builders


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compress(data: bytes, comp: str) -> bytes:
    if comp == "gzip":
        return gzip.compress(data, mtime=0)
    if comp == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def canon(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def config_for(diff_ids: list[str], arch: str = "amd64", **extra: Any) -> bytes:
    doc = {"architecture": arch, "os": "linux", "created": "2024-01-01T00:00:00Z",
           "config": {"Cmd": ["/usr/bin/tool"], "Env": ["PATH=/usr/bin"]},
           "rootfs": {"type": "layers", "diff_ids": diff_ids},
           "history": [{"created_by": f"layer {i}"} for i in range(len(diff_ids))]}
    doc.update(extra)
    return canon(doc)


LAYER_TYPES = {"gzip": formats.MEDIA_OCI_LAYER_GZIP, "zstd": formats.MEDIA_OCI_LAYER_ZSTD,
               "none": formats.MEDIA_OCI_LAYER}


def desc(media_type: str, data: bytes, **more: Any) -> dict[str, Any]:
    d = {"mediaType": media_type, "digest": sha(data), "size": len(data)}
    d.update(more)
    return d


@dataclass
class Built:
    """One image as blobs: config, layer blobs, manifest."""

    tars: list[bytes]
    config: bytes
    layers: list[bytes]
    manifest: bytes
    layer_types: list[str]
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def image_id(self) -> str:
        return sha(self.config)

    @property
    def manifest_digest(self) -> str:
        return sha(self.manifest)


def build(tars: list[bytes], comp: str = "gzip", arch: str = "amd64", layer_type: str | None = None,
          config: bytes | None = None) -> Built:
    layers = [compress(t, comp) for t in tars]
    cfg = config if config is not None else config_for([sha(t) for t in tars], arch)
    types = [layer_type or LAYER_TYPES[comp]] * len(tars)
    manifest = canon({"schemaVersion": 2, "mediaType": formats.MEDIA_OCI_MANIFEST,
                      "config": desc(formats.MEDIA_OCI_CONFIG, cfg),
                      "layers": [desc(t, b) for t, b in zip(types, layers)]})
    b = Built(tars, cfg, layers, manifest, types)
    for data in [cfg, *layers, manifest]:
        b.blobs[sha(data)] = data
    return b


def manifest_desc(b: Built, annotations: dict[str, str] | None = None, **more: Any) -> dict[str, Any]:
    d = desc(formats.MEDIA_OCI_MANIFEST, b.manifest, **more)
    if annotations:
        d["annotations"] = annotations
    return d


def write_layout(path: Path, blobs: dict[str, bytes], entries: list[dict[str, Any]]) -> Path:
    (path / "blobs" / "sha256").mkdir(parents=True)
    for digest, data in blobs.items():
        (path / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_bytes(canon({"schemaVersion": 2, "manifests": entries}))
    return path


def oci_layout(path: Path, comp: str = "gzip", name: str | None = NAME) -> Path:
    b = build([BASE, APP], comp)
    return write_layout(path, b.blobs, [manifest_desc(b, {ANNOTATION_REF_NAME: name} if name else None)])


def tar_tree(src: Path, out: Path, prefix: str = ".") -> Path:
    """A deterministic tar of a directory (names as GNU ``tar -C src -cf out .`` gives them)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            rel = os.path.relpath(dirpath, src)
            arc = prefix if rel == "." else f"{prefix}/{rel}"
            tf.add(dirpath, arcname=arc, recursive=False)
            for f in sorted(filenames):
                tf.add(os.path.join(dirpath, f), arcname=f"{arc}/{f}", recursive=False)
    return out


def multiarch_layout(path: Path, nested: int = 1) -> tuple[Path, Built, Built]:
    """amd64 and arm64 images behind an index (``nested`` levels of indexes), named by a bare
    tag plus ``io.containerd.image.name``."""
    amd = build([BASE, APP], "gzip", "amd64")
    arm = build([BASE, ARM], "gzip", "arm64")
    blobs = {**amd.blobs, **arm.blobs}
    idx = canon({"schemaVersion": 2, "mediaType": formats.MEDIA_OCI_INDEX, "manifests": [
        manifest_desc(amd, platform={"architecture": "amd64", "os": "linux"}),
        manifest_desc(arm, platform={"architecture": "arm64", "os": "linux", "variant": "v8"}),
    ]})
    blobs[sha(idx)] = idx
    for _ in range(nested - 1):
        idx = canon({"schemaVersion": 2, "mediaType": formats.MEDIA_OCI_INDEX,
                     "manifests": [desc(formats.MEDIA_OCI_INDEX, idx)]})
        blobs[sha(idx)] = idx
    top = desc(formats.MEDIA_OCI_INDEX, idx,
               annotations={ANNOTATION_REF_NAME: "1.0", ANNOTATION_IMAGE_NAME: NAME})
    return write_layout(path, blobs, [top]), amd, arm


def _tar_bytes(members: list[tuple[str, bytes | str]], out: Path) -> Path:
    """A tar of (name, data) files and (name, "->target") symlinks, in the given order."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = 0
            if isinstance(data, str):
                ti.type, ti.linkname = tarfile.SYMTYPE, data.removeprefix("->")
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return out


def legacy_docker_tar(out: Path, images: list[tuple[list[bytes], list[str]]],
                      layer_comp: str = "none") -> Path:
    """``docker save`` before Docker 25: ``<id>/layer.tar`` (a repeated layer is a symlink to
    its first copy), ``<config hex>.json``, manifest.json, repositories."""
    members: list[tuple[str, bytes | str]] = []
    manifest, repos = [], {}
    first: dict[str, str] = {}
    for n, (tars, tags) in enumerate(images):
        cfg = config_for([sha(t) for t in tars])
        members.append((f"{sha(cfg)[7:]}.json", cfg))
        paths = []
        for i, t in enumerate(tars):
            v1 = hashlib.sha256(f"{n}/{i}/{sha(t)}".encode()).hexdigest()
            if sha(t) in first:
                members.append((f"{v1}/layer.tar", f"->../{first[sha(t)]}/layer.tar"))
            else:
                members.append((f"{v1}/layer.tar", compress(t, layer_comp)))
                first[sha(t)] = v1
            members += [(f"{v1}/VERSION", b"1.0"), (f"{v1}/json", b"{}")]
            paths.append(f"{v1}/layer.tar")
        manifest.append({"Config": f"{sha(cfg)[7:]}.json", "RepoTags": tags, "Layers": paths})
        for t in tags:
            repo, _, tag = t.rpartition(":")
            repos.setdefault(repo, {})[tag] = paths[-1].split("/")[0]
    members += [("manifest.json", canon(manifest)), ("repositories", canon(repos))]
    return _tar_bytes(members, out)


def docker25_tar(out: Path, tmp: Path) -> Path:
    """What Docker 25 writes: an OCI layout with uncompressed layers, index entries named by
    ``io.containerd.image.name`` + a bare-tag ref.name, and a manifest.json pointing at blobs."""
    b = build([BASE, APP], "none")
    layout = write_layout(tmp / "d25", b.blobs, [manifest_desc(
        b, {ANNOTATION_IMAGE_NAME: NAME, ANNOTATION_REF_NAME: "1.0"})])
    (layout / "manifest.json").write_bytes(canon([{
        "Config": f"blobs/sha256/{b.image_id[7:]}", "RepoTags": [NAME],
        "Layers": [f"blobs/sha256/{sha(x)[7:]}" for x in b.layers]}]))
    (layout / "repositories").write_bytes(canon({"example.com/app": {"1.0": sha(b.layers[-1])[7:]}}))
    return tar_tree(layout, out, prefix=".")


# ---------------------------------------------------------------------------- store helpers


@pytest.fixture
def new_store(tmp_path: Path) -> Iterator[Callable[[str], Store]]:
    made: list[Store] = []

    def make(name: str) -> Store:
        s = Store(tmp_path / name, driver="vfs")
        made.append(s)
        return s

    yield make
    for s in made:
        s.driver.cleanup()
        s.close()


def walk_tree(root: str) -> Tree:
    out: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = (L, os.readlink(full))
                continue
            xattrs = {k: os.getxattr(full, k, follow_symlinks=False)
                      for k in os.listxattr(full, follow_symlinks=False) if k.startswith("user.")}
            kind = D if stat.S_ISDIR(st.st_mode) else F
            rec: tuple[Any, ...] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, xattrs)
            if kind == F:
                rec += (Path(full).read_bytes(),)
            out[rel] = rec
    return out


def rootfs(store: Store, name: str) -> tuple[Tree, bool]:
    """The tree a container of ``name`` sees, and whether tool/tool2 are one inode."""
    c = store.create_container(name)
    try:
        path = store.containers.mount(c)
        try:
            tree = walk_tree(path)
            linked = False
            a, b = Path(path, "usr/bin/tool"), Path(path, "usr/bin/tool2")
            if a.exists() and b.exists():
                linked = os.lstat(a).st_ino == os.lstat(b).st_ino
        finally:
            store.containers.unmount(c)
    finally:
        store.remove_container(c.id)
    return tree, linked


def snapshot(store: Store) -> dict[str, Any]:
    """Everything a load could leave behind."""
    def rows(sql: str) -> list[tuple[Any, ...]]:
        return sorted(tuple(r) for r in store.db.query(sql))

    return {
        "images": rows("SELECT id, top_layer FROM images"),
        "layers": rows("SELECT chain_id, cache_id FROM layers"),
        "manifests": rows("SELECT digest, media_type, image_id, parent_index FROM manifests"),
        "refs": rows("SELECT name, image_id FROM refs"),
        "layer_blobs": rows("SELECT * FROM layer_blobs"),
        "leases": rows("SELECT id FROM leases") + rows("SELECT * FROM lease_resources"),
        "pending": rows("SELECT cache_id FROM pending"),
        "blobs": sorted(store.content.walk()),
        "driver": sorted(os.listdir(store.root / "drivers" / "vfs" / "dir")),
        "ingest": sorted(os.listdir(store.root / "ingest")),
        "root": sorted(os.listdir(store.root)),
    }


def assert_refused(store: Store, path: Path | str, exc: type[Exception], match: str | None = None,
                   **kw: Any) -> Exception:
    before = snapshot(store)
    with pytest.raises(exc, match=match) as ei:
        load_archive(store, path, **kw)
    assert "\n" not in str(ei.value)
    assert snapshot(store) == before
    assert store.check() == []
    return ei.value


# ---------------------------------------------------------------------------- sources


def src_oci_gzip(tmp: Path) -> Path:
    return oci_layout(tmp / "layout-gz", "gzip")


def src_oci_zstd(tmp: Path) -> Path:
    return oci_layout(tmp / "layout-zst", "zstd")


def src_oci_plain(tmp: Path) -> Path:
    return oci_layout(tmp / "layout-plain", "none")


def src_oci_tar(tmp: Path) -> Path:
    return tar_tree(oci_layout(tmp / "layout-t", "gzip"), tmp / "layout.tar")


def src_multiarch(tmp: Path) -> Path:
    return multiarch_layout(tmp / "multi", nested=2)[0]


def src_legacy(tmp: Path) -> Path:
    return legacy_docker_tar(tmp / "legacy.tar", [([BASE, APP], [NAME])])


def src_legacy_gzip_layers(tmp: Path) -> Path:
    return legacy_docker_tar(tmp / "legacy-gz.tar", [([BASE, APP], [NAME])], layer_comp="gzip")


def src_docker25(tmp: Path) -> Path:
    return docker25_tar(tmp / "d25.tar", tmp)


def src_legacy_gzipped(tmp: Path) -> Path:
    plain = src_legacy(tmp)
    out = tmp / "legacy.tar.gz"
    out.write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    return out


def src_docker25_zstd(tmp: Path) -> Path:
    import zstandard

    plain = src_docker25(tmp)
    out = tmp / "d25.tar.zst"
    out.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    return out


SOURCES = {
    "oci-gzip": src_oci_gzip,
    "oci-zstd": src_oci_zstd,
    "oci-uncompressed": src_oci_plain,
    "oci-tar": src_oci_tar,
    "oci-multiarch-nested": src_multiarch,
    "docker-legacy": src_legacy,
    "docker-legacy-gzip-layers": src_legacy_gzip_layers,
    "docker-25": src_docker25,
    "docker-legacy.tar.gz": src_legacy_gzipped,
    "docker-25.tar.zst": src_docker25_zstd,
}


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", list(SOURCES))
def test_load_mount_save_load_save_is_byte_identical(kind: str, tmp_path: Path,
                                                     new_store: Callable[[str], Store]) -> None:
    src = SOURCES[kind](tmp_path)
    s1 = new_store("s1")
    loaded = load_archive(s1, src, platform=Platform("linux", "amd64"))
    assert len(loaded) == 1
    assert [str(r) for r in loaded[0].refs] == [str(parse_reference(NAME))]
    assert s1.resolve_image(NAME).id == loaded[0].image_id
    tree, linked = rootfs(s1, NAME)
    assert tree == EXPECTED
    assert linked, "the hardlink became a copy"
    assert s1.check() == []

    for fmt in ("docker", "oci"):
        first = tmp_path / f"{kind}-1.{fmt}.tar"
        save_archive(s1, [NAME], first, format=fmt)
        s2 = new_store(f"s2-{fmt}")
        again = load_archive(s2, first)
        assert [(x.image_id, x.manifest) for x in again] == [(loaded[0].image_id, loaded[0].manifest)]
        assert [str(r) for r in again[0].refs] == [str(parse_reference(NAME))]
        assert rootfs(s2, NAME)[0] == EXPECTED
        second = tmp_path / f"{kind}-2.{fmt}.tar"
        save_archive(s2, [NAME], second, format=fmt)
        assert second.read_bytes() == first.read_bytes(), f"{fmt} save is not reproducible"
        assert s2.check() == []


def test_oci_layout_manifest_and_blobs_are_kept_byte_exact(tmp_path: Path, new_store: Callable[[str], Store]) -> None:
    b = build([BASE, APP], "zstd")
    layout = write_layout(tmp_path / "l", b.blobs, [manifest_desc(b, {ANNOTATION_REF_NAME: NAME})])
    s = new_store("s")
    [img] = load_archive(s, layout)
    assert (img.image_id, img.manifest) == (b.image_id, b.manifest_digest)
    out = tmp_path / "out"
    save_archive(s, [NAME], str(out) + "/", format="oci")
    for digest, data in b.blobs.items():
        assert (out / "blobs" / "sha256" / digest[7:]).read_bytes() == data
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"] == [{
        "mediaType": formats.MEDIA_OCI_MANIFEST, "digest": b.manifest_digest, "size": len(b.manifest),
        "annotations": {ANNOTATION_IMAGE_NAME: "example.com/app:1.0", ANNOTATION_REF_NAME: "example.com/app:1.0"}}]
    # saving into a directory twice from two stores gives the same files
    s2 = new_store("s2")
    load_archive(s2, out)
    out2 = tmp_path / "out2"
    out2.mkdir()  # an existing empty directory is used as the layout
    save_archive(s2, [NAME], out2, format="oci")
    files = lambda p: {str(f.relative_to(p)): f.read_bytes() for f in p.rglob("*") if f.is_file()}  # noqa: E731
    assert files(out2) == files(out)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in out.rglob("*") if f.is_file())


def test_docker_save_layout_matches_docker_25(tmp_path: Path, new_store: Callable[[str], Store]) -> None:
    s = new_store("s")
    [img] = load_archive(s, src_oci_gzip(tmp_path))
    out = tmp_path / "d.tar"
    save_archive(s, [NAME], out)
    with tarfile.open(out) as tf:
        members = tf.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
        assert {m.name: m.mode for m in members if m.isdir()} == {"blobs": 0o755, "blobs/sha256": 0o755}
        assert all(m.mode == 0o644 for m in members if m.isfile())
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        repositories = json.loads(tf.extractfile("repositories").read())  # type: ignore[union-attr]
        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
    b = build([BASE, APP], "gzip")
    assert manifest == [{"Config": f"blobs/sha256/{b.image_id[7:]}", "RepoTags": ["example.com/app:1.0"],
                         "Layers": [f"blobs/sha256/{sha(x)[7:]}" for x in b.layers]}]
    assert repositories == {"example.com/app": {"1.0": sha(b.layers[-1])[7:]}}
    assert index["manifests"][0]["annotations"] == {ANNOTATION_IMAGE_NAME: "example.com/app:1.0",
                                                    ANNOTATION_REF_NAME: "1.0"}
    assert img.manifest == b.manifest_digest


def test_legacy_load_builds_a_canonical_oci_manifest(tmp_path: Path, new_store: Callable[[str], Store]) -> None:
    s = new_store("s")
    [img] = load_archive(s, src_legacy(tmp_path))
    cfg = config_for([sha(BASE), sha(APP)])
    expected = formats.build_manifest(
        formats.Descriptor(formats.MEDIA_OCI_CONFIG, formats.Digest(sha(cfg)), len(cfg)),
        [formats.Descriptor(formats.MEDIA_OCI_LAYER, formats.Digest(sha(t)), len(t)) for t in (BASE, APP)])
    assert img.manifest == sha(expected)
    assert s.content.read_bytes(img.manifest) == expected
    assert [m.media_type for m in s.images.manifests(img.image_id)] == [formats.MEDIA_OCI_MANIFEST]


def test_legacy_tar_with_two_images_and_a_symlinked_shared_layer(tmp_path: Path,
                                                                 new_store: Callable[[str], Store]) -> None:
    src = legacy_docker_tar(tmp_path / "two.tar", [([BASE, APP], [NAME, "example.com/app:latest"]),
                                                   ([BASE, ARM], ["example.com/arm:1"])])
    with tarfile.open(src) as tf:
        assert any(m.issym() for m in tf.getmembers())
    s = new_store("s")
    loaded = load_archive(s, src)
    assert [len(x.refs) for x in loaded] == [2, 1]
    assert len(s.layers.list()) == 3  # BASE shared
    assert rootfs(s, "example.com/app:latest")[0] == EXPECTED
    assert Path(s.root, "x").exists() is False
    tree, _ = rootfs(s, "example.com/arm:1")
    assert tree["etc/arch"][-1] == b"arm64\n" and "srv" not in tree
    # several names, one image by ID only, in one archive; round trip keeps all
    out = tmp_path / "all.tar"
    names = [NAME, "example.com/app:latest", loaded[1].image_id]
    save_archive(s, names, out)
    s2 = new_store("s2")
    again = load_archive(s2, out)
    assert [x.image_id for x in again] == [x.image_id for x in loaded]
    assert sorted(str(r) for r in again[0].refs) == sorted(str(r) for r in loaded[0].refs)
    assert again[1].refs == [] and any("untagged" in w for w in again[1].warnings)
    out2 = tmp_path / "all2.tar"
    save_archive(s2, names, out2)
    assert out2.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("want,marker", [("linux/arm64", "etc/arch"), ("linux/amd64", "srv/app.txt")])
@pytest.mark.parametrize("nested", [1, 3])
def test_multiarch_index_picks_the_platform(want: str, marker: str, nested: int, tmp_path: Path,
                                            new_store: Callable[[str], Store]) -> None:
    layout, amd, arm = multiarch_layout(tmp_path / "m", nested)
    s = new_store("s")
    [img] = load_archive(s, layout, platform=Platform.parse(want))
    chosen = arm if "arm64" in want else amd
    assert (img.image_id, img.manifest) == (chosen.image_id, chosen.manifest_digest)
    [rec] = s.images.manifests(img.image_id)
    assert rec.parent_index is not None and s.content.exists(rec.parent_index)
    assert marker in rootfs(s, NAME)[0]
    assert s.check() == []


def test_top_level_platform_manifests_are_alternatives(tmp_path: Path, new_store: Callable[[str], Store]) -> None:
    amd, arm = build([BASE, APP], arch="amd64"), build([BASE, ARM], arch="arm64")
    ann = {ANNOTATION_REF_NAME: NAME}
    layout = write_layout(tmp_path / "l", {**amd.blobs, **arm.blobs}, [
        manifest_desc(amd, ann, platform={"architecture": "amd64", "os": "linux"}),
        manifest_desc(arm, ann, platform={"architecture": "arm64", "os": "linux"})])
    s = new_store("s")
    [img] = load_archive(s, layout, platform=Platform("linux", "arm64"))
    assert img.image_id == arm.image_id


def test_platform_missing_from_index_changes_nothing(tmp_path: Path, new_store: Callable[[str], Store]) -> None:
    s = new_store("s")
    assert_refused(s, multiarch_layout(tmp_path / "m")[0], NotFound, "s390x",
                   platform=Platform("linux", "s390x"))


def test_bare_tag_names_nothing_and_image_loads_untagged(tmp_path: Path, new_store: Callable[[str], Store]) -> None:
    s = new_store("s")
    [img] = load_archive(s, oci_layout(tmp_path / "l", name="latest"))
    assert img.refs == [] and s.refs.list() == []
    assert any("bare tag" in w for w in img.warnings)
    assert s.images.exists(img.image_id)
    # containerd's full-name annotation names it
    b = build([BASE, APP])
    layout = write_layout(tmp_path / "l2", b.blobs, [manifest_desc(
        b, {ANNOTATION_REF_NAME: "latest", ANNOTATION_IMAGE_NAME: "docker.io/library/app:latest"})])
    [img2] = load_archive(s, layout)
    assert [r.familiar() for r in img2.refs] == ["app:latest"]


def test_layers_present_are_reused_but_new_blobs_still_stored(tmp_path: Path,
                                                             new_store: Callable[[str], Store]) -> None:
    """Same image as gzip, then as zstd: the second load applies nothing yet keeps the zstd
    blobs (checked against their DiffIDs), so saving it gives the zstd manifest back exactly."""
    s = new_store("s")
    load_archive(s, oci_layout(tmp_path / "g", "gzip", name="example.com/app:gz"))
    cache_ids = snapshot(s)["driver"]
    z = build([BASE, APP], "zstd")
    layout = write_layout(tmp_path / "z", z.blobs, [manifest_desc(z, {ANNOTATION_REF_NAME: "example.com/app:zst"})])
    [img] = load_archive(s, layout)
    assert snapshot(s)["driver"] == cache_ids
    assert all(s.content.exists(formats.Digest(sha(x))) for x in z.layers)
    out = tmp_path / "z-out"
    out.mkdir()
    save_archive(s, ["example.com/app:zst"], out, format="oci")
    assert (out / "blobs" / "sha256" / img.manifest[7:]).read_bytes() == z.manifest
    # by digest reference: that manifest, untagged
    gz_manifest = build([BASE, APP], "gzip").manifest_digest
    buf = io.BytesIO()
    save_archive(s, [f"example.com/app@{gz_manifest}"], buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        [entry] = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert entry["RepoTags"] is None
        assert tf.getmember(f"blobs/sha256/{gz_manifest[7:]}").isfile()
    # a second load of the same archive changes nothing
    before = snapshot(s)
    again = load_archive(s, layout)
    assert [x.image_id for x in again] == [img.image_id]
    assert snapshot(s) == before


def test_reused_layer_with_a_lying_blob_is_refused(tmp_path: Path, new_store: Callable[[str], Store]) -> None:
    """The layers exist, but the archive's (self-consistent) gzip blob decompresses to other
    bytes than the DiffID: the blob must not be recorded as that layer."""
    s = new_store("s")
    load_archive(s, oci_layout(tmp_path / "g", "gzip"))
    liar = build([BASE, APP], "gzip", config=config_for([sha(BASE), sha(APP)], author="x"))
    fake = compress(ARM, "gzip")
    liar.layers[1] = fake
    liar.manifest = canon({"schemaVersion": 2, "mediaType": formats.MEDIA_OCI_MANIFEST,
                           "config": desc(formats.MEDIA_OCI_CONFIG, liar.config),
                           "layers": [desc(formats.MEDIA_OCI_LAYER_GZIP, x) for x in liar.layers]})
    blobs = {sha(x): x for x in (liar.config, *liar.layers, liar.manifest)}
    layout = write_layout(tmp_path / "liar", blobs, [manifest_desc(liar, {ANNOTATION_REF_NAME: "x.io/liar:1"})])
    assert_refused(s, layout, DigestMismatch, "DiffID")


def test_load_refuses_missing_path_and_save_refuses_bad_arguments(tmp_path: Path,
                                                                  new_store: Callable[[str], Store]) -> None:
    s = new_store("s")
    assert_refused(s, tmp_path / "nope.tar", NotFound)
    with pytest.raises(NotFound):
        save_archive(s, ["example.com/none:1"], tmp_path / "x.tar")
    with pytest.raises(InvalidInput):
        save_archive(s, [], tmp_path / "x.tar")
    load_archive(s, src_oci_gzip(tmp_path))
    with pytest.raises(InvalidInput, match="format"):
        save_archive(s, [NAME], tmp_path / "x.tar", format="zip")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(InvalidInput, match="not an empty directory"):
        save_archive(s, [NAME], tmp_path / "full", format="oci")
    assert not (tmp_path / "x.tar").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_save_to_a_stream(tmp_path: Path, new_store: Callable[[str], Store]) -> None:
    s = new_store("s")
    load_archive(s, src_oci_gzip(tmp_path))
    buf = io.BytesIO()
    save_archive(s, [NAME], buf)
    save_archive(s, [NAME], tmp_path / "f.tar")
    assert buf.getvalue() == (tmp_path / "f.tar").read_bytes()


def test_save_refuses_a_damaged_blob_and_writes_nothing(tmp_path: Path, new_store: Callable[[str], Store]) -> None:
    s = new_store("s")
    [img] = load_archive(s, src_oci_gzip(tmp_path))
    layer = s.content.path(formats.Digest(sha(compress(APP, "gzip"))))
    os.chmod(layer, 0o644)
    data = bytearray(layer.read_bytes())
    data[20] ^= 0xFF
    layer.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch):
        save_archive(s, [NAME], tmp_path / "bad.tar")
    assert not (tmp_path / "bad.tar").exists()
    buf = io.BytesIO()
    with pytest.raises(DigestMismatch):
        save_archive(s, [NAME], buf)
    assert not buf.getvalue().endswith(bytes(1024)), "a failed stream must not look complete"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad.tar")]


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def base_store(tmp_path: Path, new_store: Callable[[str], Store]) -> Store:
    """A store already holding an image whose base layer the bad archives share, so a failed
    load must also leave pre-existing layers and blobs alone."""
    s = new_store("victim")
    b = build([BASE], "gzip")
    load_archive(s, write_layout(tmp_path / "base", b.blobs,
                                 [manifest_desc(b, {ANNOTATION_REF_NAME: "example.com/base:1"})]))
    return s


def test_refuses_not_an_archive(tmp_path: Path, base_store: Store) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(4096))
    assert_refused(base_store, junk, InvalidInput, "not a tar")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert_refused(base_store, empty, InvalidInput)
    bad_gz = tmp_path / "bad.tar.gz"
    bad_gz.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(200))
    assert_refused(base_store, bad_gz, InvalidInput, "gzip")
    (tmp_path / "emptydir").mkdir()
    assert_refused(base_store, tmp_path / "emptydir", InvalidInput, "not an image archive")
    other = _tar_bytes([("hello.txt", b"hi")], tmp_path / "other.tar")
    assert_refused(base_store, other, InvalidInput, "not an image archive")


def test_refuses_invalid_json(tmp_path: Path, base_store: Store) -> None:
    layout = oci_layout(tmp_path / "l")
    (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": [')
    assert_refused(base_store, layout, InvalidInput, "JSON")
    (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": [], "manifests": []}')
    assert_refused(base_store, layout, InvalidInput, "duplicate")
    (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    assert_refused(base_store, layout, InvalidInput, "no container image")
    (layout / "oci-layout").unlink()
    assert_refused(base_store, layout, InvalidInput, "oci-layout")
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    assert_refused(base_store, layout, Unsupported, "version")
    legacy = tmp_path / "legacy"
    tar_members = [("manifest.json", b"[{\"Config\": ")]
    assert_refused(base_store, _tar_bytes(tar_members, legacy), InvalidInput, "manifest.json")


def test_refuses_missing_blobs(tmp_path: Path, base_store: Store) -> None:
    b = build([BASE, APP])
    layout = oci_layout(tmp_path / "l")
    (layout / "blobs" / "sha256" / sha(b.layers[1])[7:]).unlink()
    assert_refused(base_store, layout, InvalidInput, "missing")
    layout2 = oci_layout(tmp_path / "l2")
    (layout2 / "blobs" / "sha256" / b.image_id[7:]).unlink()
    assert_refused(base_store, layout2, InvalidInput, "missing")
    legacy = src_legacy(tmp_path)
    with tarfile.open(legacy) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()  # type: ignore[union-attr]
                   if m.isfile() and not m.name.endswith("layer.tar")]
    assert_refused(base_store, _tar_bytes(members, tmp_path / "nolayers.tar"), InvalidInput, "missing")


def test_refuses_tampered_layer_after_applying_the_first(tmp_path: Path, base_store: Store) -> None:
    """Layer 1 (new in this store for the zstd blob) passes; layer 2's blob was altered: the
    DigestMismatch comes after register work, and the rollback must undo it all."""
    b = build([BASE, APP], "none")
    layout = write_layout(tmp_path / "l", b.blobs, [manifest_desc(b, {ANNOTATION_REF_NAME: NAME})])
    f = layout / "blobs" / "sha256" / sha(b.layers[1])[7:]
    data = bytearray(f.read_bytes())
    data[data.index(b"hello app")] ^= 0x20  # same size, other content
    f.write_bytes(bytes(data))
    assert_refused(base_store, layout, DigestMismatch)


def test_refuses_tampered_compressed_layer(tmp_path: Path, base_store: Store) -> None:
    b = build([BASE, APP], "gzip")
    layout = write_layout(tmp_path / "l", b.blobs, [manifest_desc(b, {ANNOTATION_REF_NAME: NAME})])
    f = layout / "blobs" / "sha256" / sha(b.layers[1])[7:]
    data = bytearray(f.read_bytes())
    data[4] ^= 0x01  # gzip header mtime: decompresses the same, digest differs
    f.write_bytes(bytes(data))
    assert_refused(base_store, layout, DigestMismatch)
    data[4] ^= 0x01
    data[len(data) // 2] ^= 0xFF  # deflate data: corrupt stream or other bytes
    f.write_bytes(bytes(data))
    assert_refused(base_store, layout, (DigestMismatch, InvalidInput))  # type: ignore[arg-type]


def test_refuses_garbage_that_claims_to_be_gzip(tmp_path: Path, base_store: Store) -> None:
    garbage = os.urandom(5000)
    cfg = config_for([sha(BASE), sha(APP)])
    manifest = canon({"schemaVersion": 2, "mediaType": formats.MEDIA_OCI_MANIFEST,
                      "config": desc(formats.MEDIA_OCI_CONFIG, cfg),
                      "layers": [desc(formats.MEDIA_OCI_LAYER_GZIP, compress(BASE, "gzip")),
                                 desc(formats.MEDIA_OCI_LAYER_GZIP, garbage)]})
    blobs = {sha(x): x for x in (cfg, compress(BASE, "gzip"), garbage, manifest)}
    layout = write_layout(tmp_path / "l", blobs, [desc(formats.MEDIA_OCI_MANIFEST, manifest)])
    assert_refused(base_store, layout, InvalidInput, "gzip")


def test_refuses_tampered_config(tmp_path: Path, base_store: Store) -> None:
    b = build([BASE, APP])
    layout = write_layout(tmp_path / "l", b.blobs, [manifest_desc(b, {ANNOTATION_REF_NAME: NAME})])
    (layout / "blobs" / "sha256" / b.image_id[7:]).write_bytes(b.config.replace(b"/usr/bin/tool", b"/usr/bin/evil"))
    assert_refused(base_store, layout, DigestMismatch, "config")
    legacy = src_legacy(tmp_path)
    with tarfile.open(legacy) as tf:
        members = [(m.name, tf.extractfile(m).read() if m.isfile() else "->" + m.linkname)  # type: ignore[union-attr]
                   for m in tf.getmembers()]
    members = [(n, d.replace(b"/usr/bin/tool", b"/usr/bin/evil") if n.endswith(".json") and n != "manifest.json"
                and isinstance(d, bytes) else d) for n, d in members]
    assert_refused(base_store, _tar_bytes(members, tmp_path / "t.tar"), DigestMismatch, "config")


def test_refuses_diff_id_mismatch(tmp_path: Path, base_store: Store) -> None:
    """A consistent archive (all digests right) whose config promises other layer contents."""
    b = build([BASE, APP], config=config_for([sha(BASE), sha(ARM)]))
    layout = write_layout(tmp_path / "l", b.blobs, [manifest_desc(b, {ANNOTATION_REF_NAME: NAME})])
    assert_refused(base_store, layout, DigestMismatch, "DiffID")
    legacy = legacy_docker_tar(tmp_path / "x.tar", [([BASE, APP], [NAME])])
    with tarfile.open(legacy) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]  # type: ignore[union-attr]
    swapped = [(n, ARM if n.endswith("layer.tar") and d == APP else d) for n, d in members]
    assert_refused(base_store, _tar_bytes(swapped, tmp_path / "y.tar"), DigestMismatch, "DiffID")


def test_second_image_failing_undoes_the_first(tmp_path: Path, base_store: Store) -> None:
    good = build([BASE, APP])
    bad = build([BASE, ARM], config=config_for([sha(BASE), sha(APP)], author="bad"))
    layout = write_layout(tmp_path / "l", {**good.blobs, **bad.blobs}, [
        manifest_desc(good, {ANNOTATION_REF_NAME: NAME}),
        manifest_desc(bad, {ANNOTATION_REF_NAME: "example.com/bad:1"})])
    assert_refused(base_store, layout, DigestMismatch)
    # and a name pointing elsewhere before the failed load still does
    base_id = base_store.resolve_image("example.com/base:1").id
    b2 = build([BASE, APP])
    layout2 = write_layout(tmp_path / "l2", {**b2.blobs, **bad.blobs}, [
        manifest_desc(b2, {ANNOTATION_REF_NAME: "example.com/base:1"}),
        manifest_desc(bad, {ANNOTATION_REF_NAME: "example.com/bad:1"})])
    assert_refused(base_store, layout2, DigestMismatch)
    assert base_store.resolve_image("example.com/base:1").id == base_id


def test_refuses_unknown_media_types(tmp_path: Path, base_store: Store) -> None:
    b = build([BASE, APP], layer_type="application/vnd.example.layer.v1+foo")
    layout = write_layout(tmp_path / "l", b.blobs, [manifest_desc(b, {ANNOTATION_REF_NAME: NAME})])
    assert_refused(base_store, layout, InvalidInput, "media type")
    b2 = build([BASE, APP], layer_type="application/vnd.oci.image.layer.v1.tar+encrypted")
    layout2 = write_layout(tmp_path / "l2", b2.blobs, [manifest_desc(b2, {ANNOTATION_REF_NAME: NAME})])
    assert_refused(base_store, layout2, Unsupported, "encrypted")
    layout3 = write_layout(tmp_path / "l3", b.blobs, [desc("application/x-whatever", b.manifest)])
    assert_refused(base_store, layout3, InvalidInput, "media type")


def test_refuses_member_names_that_escape(tmp_path: Path, base_store: Store) -> None:
    layout = oci_layout(tmp_path / "l")
    out = tar_tree(layout, tmp_path / "t.tar", prefix=".")
    with tarfile.open(out, "a") as tf:
        ti = tarfile.TarInfo("../evil")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"x"))
    assert_refused(base_store, out, InvalidInput, "escapes")
    out2 = tar_tree(layout, tmp_path / "t2.tar", prefix=".")
    with tarfile.open(out2, "a") as tf:
        ti = tarfile.TarInfo("/etc/evil")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"x"))
    with tarfile.open(out2) as tf:
        assert "/etc/evil" in tf.getnames()
    assert_refused(base_store, out2, InvalidInput, "absolute")


def test_refuses_manifest_paths_that_escape_and_never_opens_them(tmp_path: Path, base_store: Store) -> None:
    """``Layers: ["../outside/layer.tar"]`` in an unpacked docker save directory: the target
    exists and is a perfectly valid layer, so only refusing the path can stop the load."""
    cfg = config_for([sha(BASE)])
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "layer.tar").write_bytes(BASE)
    d = tmp_path / "save"
    d.mkdir()
    (d / f"{sha(cfg)[7:]}.json").write_bytes(cfg)
    (d / "manifest.json").write_bytes(canon([{"Config": f"{sha(cfg)[7:]}.json", "RepoTags": [NAME],
                                              "Layers": ["../outside/layer.tar"]}]))
    assert_refused(base_store, d, InvalidInput, "escapes")
    (d / "manifest.json").write_bytes(canon([{"Config": f"{sha(cfg)[7:]}.json", "RepoTags": [NAME],
                                              "Layers": ["../../etc/passwd"]}]))
    assert_refused(base_store, d, InvalidInput, "escapes")
    (d / "manifest.json").write_bytes(canon([{"Config": f"{sha(cfg)[7:]}.json", "RepoTags": [NAME],
                                              "Layers": ["/etc/passwd"]}]))
    assert_refused(base_store, d, InvalidInput, "absolute")
    # a symlink inside the directory pointing out of it
    (d / "l").mkdir()
    os.symlink("../../outside/layer.tar", d / "l" / "layer.tar")
    (d / "manifest.json").write_bytes(canon([{"Config": f"{sha(cfg)[7:]}.json", "RepoTags": [NAME],
                                              "Layers": ["l/layer.tar"]}]))
    assert_refused(base_store, d, InvalidInput, "escapes")
    os.unlink(d / "l" / "layer.tar")
    os.symlink(str(tmp_path / "outside" / "layer.tar"), d / "l" / "layer.tar")
    assert_refused(base_store, d, InvalidInput, "absolute")


def test_refuses_symlink_members_that_escape(tmp_path: Path, base_store: Store) -> None:
    cfg = config_for([sha(BASE)])
    members: list[tuple[str, bytes | str]] = [
        (f"{sha(cfg)[7:]}.json", cfg),
        ("abc/layer.tar", "->../../../etc/passwd"),
        ("manifest.json", canon([{"Config": f"{sha(cfg)[7:]}.json", "RepoTags": [NAME], "Layers": ["abc/layer.tar"]}])),
    ]
    assert_refused(base_store, _tar_bytes(members, tmp_path / "s.tar"), InvalidInput, "escapes")
    members[1] = ("abc/layer.tar", "->layer.tar")
    assert_refused(base_store, _tar_bytes(members, tmp_path / "loop.tar"), InvalidInput, "links")


def test_refuses_duplicate_members(tmp_path: Path, base_store: Store) -> None:
    legacy = src_legacy(tmp_path)
    with tarfile.open(legacy) as tf:
        members = [(m.name, tf.extractfile(m).read() if m.isfile() else "->" + m.linkname)  # type: ignore[union-attr]
                   for m in tf.getmembers()]
    members.append(("manifest.json", canon([])))
    assert_refused(base_store, _tar_bytes(members, tmp_path / "dup.tar"), InvalidInput, "two members")


def test_refuses_hostile_layer_tar(tmp_path: Path, base_store: Store) -> None:
    b = build([BASE, HOSTILE], "gzip")
    layout = write_layout(tmp_path / "l", b.blobs, [manifest_desc(b, {ANNOTATION_REF_NAME: NAME})])
    assert_refused(base_store, layout, InvalidInput)
    assert not any(p.name == "escape" for p in tmp_path.rglob("escape"))


def test_refuses_bad_names(tmp_path: Path, base_store: Store) -> None:
    layout = oci_layout(tmp_path / "l", name="Example.com/UPPER/Case:1")
    assert_refused(base_store, layout, InvalidInput, "invalid")
    legacy = legacy_docker_tar(tmp_path / "x.tar", [([BASE, APP], ["not a name:!"])])
    assert_refused(base_store, legacy, InvalidInput, "RepoTags")


@pytest.mark.parametrize("kind", ["docker-25", "docker-legacy", "oci-tar"])
def test_mutated_archives_load_whole_or_fail_cleanly(kind: str, tmp_path: Path,
                                                     new_store: Callable[[str], Store]) -> None:
    """Seeded fuzzing: flip a byte or cut the archive short, 40 times. Each load either
    succeeds (the byte was padding, or a name in index.json: names are not content-addressed)
    with only the known image, or raises a classified lamina error and leaves nothing."""
    import random

    from graph import LaminaError

    good = SOURCES[kind](tmp_path).read_bytes()
    known = build([BASE, APP]).image_id
    rnd = random.Random(f"lamina-{kind}")
    s, n = new_store("fuzz-0"), 0
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(40):
        data = bytearray(good)
        if i % 4 == 3:
            del data[rnd.randrange(len(data)):]
        else:
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
        path = tmp_path / f"m{i}.tar"
        path.write_bytes(bytes(data))
        before = snapshot(s)
        try:
            loaded = load_archive(s, path)
        except LaminaError as e:
            assert "\n" not in str(e)
            assert snapshot(s) == before, f"mutation {i} left something behind ({e})"
            outcomes["refused"] += 1
        else:
            assert {x.image_id for x in loaded} <= {known}
            assert s.check() == []
            outcomes["loaded"] += 1
            n += 1
            s = new_store(f"fuzz-{n}")
    assert outcomes["refused"] > 0, outcomes
