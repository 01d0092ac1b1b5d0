"""``lamina export``: the merged filesystem as a tar, to a file (whole or not at all) or a pipe."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from tests.cli.conftest import Lamina


def _names(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: m for m in tf.getmembers()}


def test_export_to_a_file(loaded: Lamina, tmp_path: Path) -> None:
    loaded("create", "--name", "c", "app:1.0")
    out = tmp_path / "c.tar"
    assert loaded("export", "-o", str(out), "c").out == ""
    members = _names(out.read_bytes())
    assert {"app/hello.txt", "app/data.bin", "bin/sh", "bin/hello", "etc/os-release"} <= set(members)
    assert "usr/share/doc/readme" not in members
    assert members["bin/hello"].issym() and members["bin/hello"].linkname == "/app/hello.txt"
    with tarfile.open(out) as tf:
        assert tf.extractfile("etc/os-release").read() == b"lamina-test 2\n"  # type: ignore[union-attr]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_export_to_a_pipe_matches_the_file(loaded: Lamina, tmp_path: Path) -> None:
    loaded("create", "--name", "c", "app:1.0")
    root = Path(loaded("mount", "c").out.strip())
    (root / "added.txt").write_text("added\n")
    loaded("umount", "c")
    piped = loaded.raw("export", "c")
    assert "added.txt" in _names(piped)
    loaded("export", "c", "-o", str(tmp_path / "f.tar"))
    assert set(_names(piped)) == set(_names((tmp_path / "f.tar").read_bytes()))
    # export leaves no mount behind
    import json

    assert json.loads(loaded("inspect", "c").out)[0]["GraphDriver"]["Data"]["Mounts"] == 0


def test_export_unknown_container_writes_nothing(loaded: Lamina, tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    loaded.fails("export", "-o", str(out), "nosuch", code=2)
    assert list(tmp_path.iterdir()) == [loaded.root]


def test_export_into_a_missing_directory(loaded: Lamina, tmp_path: Path) -> None:
    loaded("create", "--name", "c", "app:1.0")
    r = loaded("export", "-o", str(tmp_path / "no/such/dir/x.tar"), "c", expect=1)
    assert len(r.err_lines) == 1 and "Traceback" not in r.err
    loaded.check_clean()
