"""``docker cp`` into a container on a Python without tarfile's extraction filters (Debian 12's
3.11.2): lamina's own check refuses what the "data" filter would."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from lamina.daemon.containers import _checked_members


def _tar(*entries: tuple[str, bytes, str]) -> tarfile.TarFile:
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w") as t:
        for name, kind, link in entries:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = kind, link
            t.addfile(ti, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    b.seek(0)
    return tarfile.open(fileobj=b)


def test_plain_files_and_inside_links_pass(tmp_path: Path) -> None:
    got = _checked_members(_tar(("a", tarfile.REGTYPE, ""), ("d/l", tarfile.SYMTYPE, "../a"),
                                ("h", tarfile.LNKTYPE, "a")), str(tmp_path))
    assert [m.name for m in got] == ["a", "d/l", "h"]


@pytest.mark.parametrize("entry", [
    ("../x", tarfile.REGTYPE, ""), ("/x", tarfile.REGTYPE, ""), ("l", tarfile.SYMTYPE, "../../etc"),
    ("l", tarfile.SYMTYPE, "/etc"), ("h", tarfile.LNKTYPE, "../x"), ("dev", tarfile.CHRTYPE, ""),
])
def test_escapes_and_devices_are_refused(tmp_path: Path, entry: tuple[str, bytes, str]) -> None:
    with pytest.raises(tarfile.TarError):
        _checked_members(_tar(entry), str(tmp_path))
