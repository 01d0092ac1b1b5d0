"""Archives against other tools: skopeo and umoci write archives lamina loads, and read the
archives lamina saves. The trees they unpack are compared with lamina's mounted rootfs."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Callable

import pytest

from graph import Store, parse_reference
from graph.archive import load_archive, save_archive
from tests.graph.test_archive import (  # the image builders and tree helpers
    EXPECTED,
    NAME,
    new_store,  # noqa: F401 - fixture
    oci_layout,
    rootfs,
    walk_tree,
)

pytestmark = pytest.mark.integration


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    return path


def run(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}"
    return p.stdout


def skopeo(*args: str) -> str:
    return run(_tool("skopeo"), "--insecure-policy", *args)


def umoci(*args: str) -> str:
    return run(_tool("umoci"), *args)


def test_skopeo_docker_archive_loads(tmp_path: Path, new_store: Callable[[str], Store]) -> None:  # noqa: F811
    """skopeo's docker-archive: legacy layout, ``<diffid>.tar`` layers reached through
    ``<id>/layer.tar`` symlinks, 0444 members."""
    layout = oci_layout(tmp_path / "layout", "gzip", name="1.0")
    archive = tmp_path / "skopeo.tar"
    skopeo("copy", "oci:" + str(layout) + ":1.0", f"docker-archive:{archive}:{NAME}")
    with tarfile.open(archive) as tf:
        assert any(m.issym() for m in tf.getmembers())
    s = new_store("s")
    [img] = load_archive(s, archive)
    assert [str(r) for r in img.refs] == [str(parse_reference(NAME))]
    tree, linked = rootfs(s, NAME)
    assert tree == EXPECTED and linked
    assert s.check() == []


def test_skopeo_oci_archive_loads_untagged_by_bare_tag(tmp_path: Path,
                                                       new_store: Callable[[str], Store]) -> None:  # noqa: F811
    layout = oci_layout(tmp_path / "layout", "gzip", name="1.0")
    archive = tmp_path / "oci.tar"
    skopeo("copy", "oci:" + str(layout) + ":1.0", f"oci-archive:{archive}:1.0")
    s = new_store("s")
    [img] = load_archive(s, archive)
    assert img.refs == [] and any("bare tag" in w for w in img.warnings)
    assert rootfs(s, img.image_id)[0] == EXPECTED


def test_skopeo_reads_what_lamina_saves(tmp_path: Path, new_store: Callable[[str], Store]) -> None:  # noqa: F811
    s = new_store("s")
    load_archive(s, oci_layout(tmp_path / "layout", "zstd"))
    docker_tar, oci_dir = tmp_path / "d.tar", tmp_path / "o"
    save_archive(s, [NAME], docker_tar)
    save_archive(s, [NAME], str(oci_dir) + "/", format="oci")
    # skopeo verifies every blob's digest while it copies
    skopeo("copy", f"docker-archive:{docker_tar}", f"oci:{tmp_path / 'from-docker'}:x")
    raw = skopeo("inspect", "--raw", f"oci:{oci_dir}:{parse_reference(NAME)}")
    assert json.loads(raw)["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    skopeo("copy", f"oci:{oci_dir}:{parse_reference(NAME)}", f"oci:{tmp_path / 'copy'}:y")


def test_umoci_unpacks_lamina_layout_like_lamina_mounts(tmp_path: Path,
                                                        new_store: Callable[[str], Store]) -> None:  # noqa: F811
    s = new_store("s")
    load_archive(s, oci_layout(tmp_path / "layout", "gzip"))
    out = tmp_path / "saved"
    save_archive(s, [NAME], str(out) + "/", format="oci")
    bundle = tmp_path / "bundle"
    umoci("unpack", "--image", f"{out}:{parse_reference(NAME)}", str(bundle))
    theirs = walk_tree(str(bundle / "rootfs"))
    ours, _ = rootfs(s, NAME)
    assert theirs == ours == EXPECTED


def test_umoci_repacked_layout_loads(tmp_path: Path, new_store: Callable[[str], Store]) -> None:  # noqa: F811
    """A layer made by umoci (its own gzip, its own tar writer, its whiteouts) on top of ours."""
    layout = oci_layout(tmp_path / "layout", "gzip", name="1.0")
    bundle = tmp_path / "bundle"
    umoci("unpack", "--image", f"{layout}:1.0", str(bundle))
    root = bundle / "rootfs"
    (root / "srv" / "app.txt").unlink()
    shutil.rmtree(root / "home" / "user")
    (root / "etc" / "added").write_text("by umoci\n")
    umoci("repack", "--image", f"{layout}:2.0", str(bundle))
    umoci("tag", "--image", f"{layout}:2.0", "example.com/app:2.0")
    s = new_store("s")
    loaded = load_archive(s, layout)
    by_name = {str(r): x for x in loaded for r in x.refs}
    img = by_name[str(parse_reference("example.com/app:2.0"))]
    assert img.warnings == []  # its bare tag "2.0" is moot: another entry names it fully
    assert [x.warnings for x in loaded if not x.refs] != []  # "1.0" alone: untagged, said so
    tree, linked = rootfs(s, img.image_id)
    want = {k: v for k, v in EXPECTED.items() if k not in ("srv/app.txt", "home/user", "home/user/notes")}
    want["etc/added"] = ("file", 0o644, 0, 0, {}, b"by umoci\n")
    assert {k: v for k, v in tree.items() if k != "etc/added"} == {k: v for k, v in want.items() if k != "etc/added"}
    assert tree["etc/added"][-1] == b"by umoci\n"
    assert linked
    # what lamina saves of umoci's image, umoci unpacks to the same tree
    out = tmp_path / "again"
    save_archive(s, ["example.com/app:2.0"], str(out) + "/", format="oci")
    umoci("unpack", "--image", f"{out}:{parse_reference('example.com/app:2.0')}", str(tmp_path / "b2"))
    assert walk_tree(str(tmp_path / "b2" / "rootfs")) == tree


def test_disk_full_is_not_blamed_on_the_archive_and_leaves_nothing(tmp_path: Path) -> None:
    """A store on a 40 MiB ext4 loading a 30 MiB incompressible layer: the error is the disk's
    (OSError or a plain LaminaError), never InvalidInput/Corrupt, and the store is as before."""
    import os

    from graph.errors import Corrupt, InvalidInput, LaminaError
    from tests.graph.test_archive import (
        ANNOTATION_REF_NAME,
        BASE,
        build,
        manifest_desc,
        snapshot,
        write_layout,
    )
    from tests.loopfs import loop_filesystem, loopfs_skip_reason
    from tests.tarbuild import E, make_tar

    reason = loopfs_skip_reason("ext4")
    if reason:
        pytest.skip(reason)
    big = make_tar([E("big", os.urandom(30 << 20))])
    b = build([BASE, big], "gzip")
    layout = write_layout(tmp_path / "layout", b.blobs, [manifest_desc(b, {ANNOTATION_REF_NAME: NAME})])
    with loop_filesystem(tmp_path / "fs", "ext4", "40M") as fs:
        s = Store(fs.mountpoint / "s", driver="vfs")
        try:
            before = snapshot(s)
            with pytest.raises((OSError, LaminaError)) as ei:
                load_archive(s, layout)
            assert not isinstance(ei.value, (InvalidInput, Corrupt)), ei.value
            assert snapshot(s) == before
            assert s.check() == []
        finally:
            s.driver.cleanup()
            s.close()
