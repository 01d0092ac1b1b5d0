"""``lamina load``: every archive kind, names, idempotence, and bad archives refused whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli.conftest import Archives, Lamina, small_image, write_oci_layout


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


@pytest.mark.parametrize("kind", ["oci_dir", "oci_tar"])
def test_load_oci_layout(lamina: Lamina, archives: Archives, kind: str) -> None:
    r = lamina("load", "-i", str(getattr(archives, kind)))
    assert r.lines == ["Loaded image: app:1.0"]
    assert lamina("images", "-q").lines == [_short(archives.app.id)]
    lamina.check_clean()


def test_load_docker_save_tar_with_several_names(lamina: Lamina, archives: Archives) -> None:
    r = lamina("load", "-i", str(archives.docker_tar))
    assert sorted(r.lines) == ["Loaded image: app:1.0", "Loaded image: app:latest", "Loaded image: small:1"]
    rows = json.loads(lamina("images", "--format", "json").out)
    assert {(x["Repository"], x["Tag"], x["ID"]) for x in rows} == {
        ("app", "1.0", archives.app.id), ("app", "latest", archives.app.id), ("small", "1", archives.small.id)
    }
    lamina.check_clean()


def test_loaded_rootfs_has_every_layer_applied(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    root = Path(loaded("mount", "c").out.strip())
    try:
        assert (root / "etc/os-release").read_text() == "lamina-test 2\n"  # layer 2 over layer 1
        assert (root / "app/hello.txt").read_text() == "hello\n"
        assert (root / "bin/hello").is_symlink() and (root / "bin/hello").readlink() == Path("/app/hello.txt")
        assert (root / "bin/sh").stat().st_mode & 0o777 == 0o755
        assert (root / "app/data.bin").read_bytes() == bytes(range(256)) * 32
        assert (root / "usr/share/doc").is_dir()
        assert not (root / "usr/share/doc/readme").exists()  # layer 3's whiteout
        assert not list((root / "usr/share/doc").iterdir())
    finally:
        loaded("umount", "c")


def test_load_twice_changes_nothing(loaded: Lamina, archives: Archives) -> None:
    before = json.loads(loaded("system", "df", "--format", "json").out)
    r = loaded("load", "-i", str(archives.oci_tar))
    assert r.lines == ["Loaded image: app:1.0"]
    after = json.loads(loaded("system", "df", "--format", "json").out)
    assert {k: before[k] for k in ("Images", "Layers", "Blobs")} == {k: after[k] for k in ("Images", "Layers", "Blobs")}


def test_load_quiet(lamina: Lamina, archives: Archives) -> None:
    assert lamina("load", "-q", "-i", str(archives.oci_dir)).out == ""
    assert len(lamina("images", "-q").lines) == 1


def test_load_an_unnamed_image_prints_its_id(lamina: Lamina, tmp_path: Path) -> None:
    img = small_image(b"nameless\n")
    layout = write_oci_layout(tmp_path / "nameless", [(img, None)])
    r = lamina("load", "-i", str(layout))
    assert r.lines == [f"Loaded image ID: {img.id}"]
    rows = json.loads(lamina("images", "--format", "json").out)
    assert [(x["Repository"], x["Tag"]) for x in rows] == [("<none>", "<none>")]


def test_platform_option(lamina: Lamina, archives: Archives) -> None:
    lamina.fails("load", "-i", str(archives.oci_dir), "--platform", "not a platform", code=5)
    lamina("load", "-i", str(archives.oci_dir), "--platform", "linux")  # host arch implied


# ---- bad input: one line, non-zero, nothing left ------------------------------------------------
def _nothing_loaded(lamina: Lamina) -> None:
    assert lamina("images", "-q").out == ""
    df = json.loads(lamina("system", "df", "--format", "json").out)
    assert df["Images"]["Total"] == df["Layers"]["Total"] == df["Blobs"]["Total"] == 0
    lamina.check_clean()


def test_missing_file(lamina: Lamina, tmp_path: Path) -> None:
    r = lamina.fails("load", "-i", str(tmp_path / "nope.tar"), code=2)
    assert "nope.tar" in r.err
    _nothing_loaded(lamina)


def test_not_an_archive(lamina: Lamina, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(bytes(range(256)) * 40)
    lamina.fails("load", "-i", str(junk), code=5)
    empty = tmp_path / "emptydir"
    empty.mkdir()
    lamina.fails("load", "-i", str(empty), code=5)
    _nothing_loaded(lamina)


def test_layout_with_a_missing_blob(lamina: Lamina, archives: Archives, tmp_path: Path) -> None:
    bad = shutil.copytree(archives.oci_dir, tmp_path / "bad")
    (bad / "blobs/sha256" / archives.app.layers[2].digest.removeprefix("sha256:")).unlink()
    r = lamina("load", "-i", str(bad), expect=None)
    assert r.rc != 0 and len(r.err_lines) == 1 and r.err.startswith("lamina: ") and "Traceback" not in r.err
    _nothing_loaded(lamina)


def test_layout_with_a_blob_that_is_not_what_it_claims(lamina: Lamina, archives: Archives, tmp_path: Path) -> None:
    """The last layer's bytes replaced by other (valid gzip) bytes: DigestMismatch (exit 6), and
    the layers already applied from the same archive are rolled back."""
    bad = shutil.copytree(archives.oci_dir, tmp_path / "bad")
    victim = bad / "blobs/sha256" / archives.app.layers[2].digest.removeprefix("sha256:")
    victim.write_bytes(archives.app.layers[0].data)
    lamina.fails("load", "-i", str(bad), code=6)
    _nothing_loaded(lamina)


def test_truncated_archive(lamina: Lamina, archives: Archives, tmp_path: Path) -> None:
    data = archives.docker_tar.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) * 2 // 3])
    r = lamina("load", "-i", str(cut), expect=None)
    assert r.rc not in (0, 70) and len(r.err_lines) == 1 and "Traceback" not in r.err
    _nothing_loaded(lamina)


def test_warnings_go_to_stderr_and_the_load_succeeds(lamina: Lamina, tmp_path: Path) -> None:
    """A layout naming its image only by a bare tag (``ref.name: 1.0``): loaded untagged, and
    the user is told why on stderr."""
    img = small_image(b"bare\n")
    layout = write_oci_layout(tmp_path / "bare", [(img, None)])
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": "1.0"}
    (layout / "index.json").write_text(json.dumps(index))
    r = lamina("load", "-i", str(layout))
    assert r.lines == [f"Loaded image ID: {img.id}"]
    assert len(r.err_lines) == 1 and r.err.startswith("lamina: warning: ") and "1.0" in r.err
    lamina.check_clean()
