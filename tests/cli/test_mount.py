"""``lamina mount``: an absolute path to the container's merged rootfs, counted per call."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.cli.conftest import Lamina


def test_mount_prints_an_absolute_path_to_the_rootfs(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    r = loaded("mount", "c")
    assert len(r.lines) == 1
    path = Path(r.out.strip())
    try:
        assert path.is_absolute() and path.is_dir()
        assert loaded.root in path.parents  # inside the store's root
        assert sorted(os.listdir(path)) == ["app", "bin", "etc", "usr"]
        d = json.loads(loaded("inspect", "c").out)[0]
        assert d["GraphDriver"]["Data"]["Mounts"] == 1
    finally:
        loaded("umount", "c")


def test_mounts_are_counted(loaded: Lamina) -> None:
    cid = loaded("create", "--name", "c", "app:1.0").out.strip()
    p1 = loaded("mount", "c").out
    p2 = loaded("mount", cid[:12]).out
    assert p1 == p2
    assert json.loads(loaded("inspect", "c").out)[0]["GraphDriver"]["Data"]["Mounts"] == 2
    loaded("umount", "c")
    loaded("umount", "c")
    loaded.fails("umount", "c", code=4)


def test_mount_with_a_relative_root(loaded: Lamina, tmp_path: Path) -> None:
    """The printed path is absolute even when --root is relative."""
    loaded("create", "--name", "c", "app:1.0")
    from tests.cli.conftest import lamina_command, run_cmd

    rel = os.path.relpath(loaded.root, tmp_path)
    r = run_cmd(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", str(tmp_path),
                 *lamina_command(), "--root", rel, "mount", "c"])
    try:
        assert Path(r.out.strip()).is_absolute() and Path(r.out.strip(), "app/hello.txt").exists()
    finally:
        loaded("umount", "c")


def test_mount_unknown_container(loaded: Lamina) -> None:
    r = loaded.fails("mount", "nosuch", code=2)
    assert "nosuch" in r.err
    loaded.check_clean()
