"""Micro benchmarks of whiteout conversion, both ways, on 2000 whiteouts.

Run: ``.venv/bin/python -m pytest bench/micro/test_whiteout_bench.py --benchmark-only`` (or
``python -m bench micro``). Needs root (whiteouts are 0/0 character devices and ``trusted.*``
xattrs). Everything lives on a tmpfs mounted for the module (no disk: the CPU and syscall cost of
the conversion alone), unmounted afterwards; setup (building the tars and trees) is not timed.

- ``test_apply_oci_whiteouts[overlay]``: ``apply_tar`` of a layer of 2000 ``.wh.<name>`` entries
  and one ``.wh..wh..opq`` into an empty diff dir with ``Whiteouts.OVERLAY``: each becomes a
  0/0 char device, the opaque marker an xattr (what the overlay driver does on apply).
- ``test_apply_oci_whiteouts[remove]``: the same tar with ``Whiteouts.REMOVE`` onto a full copy
  of the 2000 files (what vfs and btrfs do: delete).
- ``test_overlay_whiteouts_to_oci``: an overlay upper dir holding 2000 char-device whiteouts and
  an opaque dir, turned into an OCI layer tar (``tardiff.upper_changes`` + ``write_layer_tar``,
  what the overlay driver's ``diff`` does for a commit).
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Iterator

import pytest

if os.geteuid() != 0:
    pytest.skip("whiteout benchmarks need root (char devices, trusted xattrs)", allow_module_level=True)

from drivers.tar import diff as tardiff  # noqa: E402
from drivers.tar.apply import Whiteouts, apply_tar  # noqa: E402

N = 2000
_count = itertools.count()


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("wh-tmpfs")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(d)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {p.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def _whiteout_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("data", "opaque"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
        for i in range(N):
            tf.addfile(tarfile.TarInfo(f"data/.wh.f{i:05d}"), io.BytesIO(b""))
        tf.addfile(tarfile.TarInfo("opaque/.wh..wh..opq"), io.BytesIO(b""))
    return buf.getvalue()


@pytest.fixture(scope="module")
def wh_tar() -> bytes:
    return _whiteout_tar()


def _full_tree(root: Path) -> None:
    (root / "data").mkdir(parents=True)
    (root / "opaque").mkdir()
    for i in range(N):
        (root / "data" / f"f{i:05d}").write_bytes(b"x")
    (root / "opaque" / "old").write_bytes(b"y")


@pytest.mark.parametrize("mode", ["overlay", "remove"])
def test_apply_oci_whiteouts(benchmark, tmpfs: Path, wh_tar: bytes, mode: str) -> None:
    whiteouts = Whiteouts.OVERLAY if mode == "overlay" else Whiteouts.REMOVE

    def setup() -> tuple[tuple[str, io.BytesIO, Whiteouts], dict[str, object]]:
        root = tmpfs / f"apply-{next(_count)}"
        if mode == "remove":
            _full_tree(root)
        else:
            root.mkdir()
        return (str(root), io.BytesIO(wh_tar), whiteouts), {}

    benchmark.pedantic(apply_tar, setup=setup, rounds=10, iterations=1)
    benchmark.extra_info["whiteouts"] = N
    for p in tmpfs.glob("apply-*"):
        shutil.rmtree(p)


def test_overlay_whiteouts_to_oci(benchmark, tmpfs: Path) -> None:
    lower = tmpfs / "lower"
    upper = tmpfs / "upper"
    _full_tree(lower)
    (upper / "data").mkdir(parents=True)
    (upper / "opaque").mkdir()
    for i in range(N):
        os.mknod(upper / "data" / f"f{i:05d}", 0o600 | 0o020000, os.makedev(0, 0))
    os.setxattr(upper / "opaque", "trusted.overlay.opaque", b"y")

    def convert() -> int:
        changes = tardiff.upper_changes(str(upper), [str(lower)])
        return tardiff.write_layer_tar(str(upper), changes, io.BytesIO(), whiteout_root=str(upper))

    n = benchmark.pedantic(convert, rounds=10, iterations=1)
    benchmark.extra_info.update({"whiteouts": N, "tar_bytes": n})
    shutil.rmtree(lower)
    shutil.rmtree(upper)
