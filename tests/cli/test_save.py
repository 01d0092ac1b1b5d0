"""``lamina save``: docker and OCI archives that load back to the same images, byte for byte."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from tests.cli.conftest import Archives, Lamina


def _members(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return set(tf.getnames())


def _images(lamina: Lamina) -> set[tuple[str, str, str]]:
    return {(r["Repository"], r["Tag"], r["ID"]) for r in json.loads(lamina("images", "--format", "json").out)}


def test_save_docker_and_load_elsewhere(loaded: Lamina, tmp_path: Path) -> None:
    out = tmp_path / "app.tar"
    assert loaded("save", "-o", str(out), "app:1.0").out == ""
    assert {"manifest.json", "index.json", "oci-layout"} <= _members(out.read_bytes())
    other = Lamina(tmp_path / "other")
    assert other("load", "-i", str(out)).lines == ["Loaded image: app:1.0"]
    assert _images(other) == _images(loaded)
    other.check_clean()


def test_save_oci_layout_tar_and_dir(loaded: Lamina, archives: Archives, tmp_path: Path) -> None:
    out = tmp_path / "app-oci.tar"
    loaded("save", "--format", "oci", "-o", str(out), "app:1.0")
    names = _members(out.read_bytes())
    assert {"oci-layout", "index.json"} <= names and "manifest.json" not in names
    assert f"blobs/sha256/{archives.app.id.removeprefix('sha256:')}" in names
    layout = tmp_path / "layout"
    loaded("save", "--format", "oci", "-o", str(layout) + "/", "app:1.0")
    assert (layout / "index.json").is_file() and (layout / "oci-layout").is_file()
    for src in (out, layout):
        other = Lamina(tmp_path / f"other-{src.name}")
        other("load", "-i", str(src))
        assert {i[2] for i in _images(other)} == {archives.app.id}
        other.check_clean()


def test_save_is_byte_identical_across_a_round_trip(lamina: Lamina, archives: Archives, tmp_path: Path) -> None:
    lamina("load", "-i", str(archives.docker_tar))
    first = lamina.raw("save", "app:1.0", "small:1")  # to a pipe
    lamina("save", "-o", str(tmp_path / "first.tar"), "app:1.0", "small:1")
    assert (tmp_path / "first.tar").read_bytes() == first
    other = Lamina(tmp_path / "other")
    other("load", "-i", str(tmp_path / "first.tar"))
    assert other.raw("save", "app:1.0", "small:1") == first


def test_save_unknown_image_writes_nothing(loaded: Lamina, tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    loaded.fails("save", "-o", str(out), "app:1.0", "nosuch", code=2)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert loaded.raw("save", "nosuch", expect=2) == b""


def test_save_into_a_missing_directory(loaded: Lamina, tmp_path: Path) -> None:
    loaded.fails("save", "-o", str(tmp_path / "no/such/x.tar"), "app:1.0", code=2)
    loaded.check_clean()
