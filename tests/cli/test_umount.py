"""``lamina umount``: releases one mount; refuses a container that is not mounted."""

from __future__ import annotations

import json

from tests.cli.conftest import Lamina


def test_umount_releases_and_prints_the_id(loaded: Lamina) -> None:
    cid = loaded("create", "--name", "c", "app:1.0").out.strip()
    loaded("mount", "c")
    assert loaded("umount", "c").lines == [cid]
    assert json.loads(loaded("inspect", "c").out)[0]["GraphDriver"]["Data"]["Mounts"] == 0
    loaded("rm", "c")  # no longer mounted: rm needs no -f
    loaded.check_clean()


def test_unmount_alias(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    loaded("mount", "c")
    loaded("unmount", "c")


def test_umount_errors(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    r = loaded.fails("umount", "c", code=4)
    assert "not mounted" in r.err
    loaded.fails("umount", "nosuch", code=2)
    loaded.check_clean()
