"""``lamina diff``: Docker's A/C/D lines for what changed in a container."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Lamina


def test_fresh_container_has_no_changes(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    assert loaded("diff", "c").out == ""


def test_added_changed_deleted(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    root = Path(loaded("mount", "c").out.strip())
    try:
        (root / "new.txt").write_text("new\n")
        (root / "etc/os-release").write_text("changed\n")
        (root / "app/hello.txt").unlink()
        (root / "usr/share/doc/more").mkdir()
    finally:
        loaded("umount", "c")
    lines = loaded("diff", "c").lines
    assert lines == sorted(lines, key=lambda s: s[2:])  # by path
    # parents of a change count as changed, as in Docker
    assert set(lines) == {"A /new.txt", "C /etc", "C /etc/os-release", "C /app", "D /app/hello.txt",
                          "C /usr", "C /usr/share", "C /usr/share/doc", "A /usr/share/doc/more"}
    js = json.loads(loaded("diff", "--format", "json", "c").out)
    assert {"Path": "/new.txt", "Kind": 1} in js and {"Path": "/app/hello.txt", "Kind": 2} in js


def test_diff_unknown_container(loaded: Lamina) -> None:
    loaded.fails("diff", "nosuch", code=2)
