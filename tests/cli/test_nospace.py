"""A full disk is one classified line, the same on every driver and every write path (issue 19.2).

Each test mounts its own small tmpfs (``size=``) as the filesystem holding the store and unmounts
it afterwards. The write paths: the content store's ingest (a layer blob bigger than the disk),
layer apply (a tiny gzip blob that unpacks to more than the disk holds), and SQLite (the disk
filled by a file beside the store, then an operation that only writes metadata). A pull from a real
registry on 127.0.0.1 covers the same paths in the order a pull takes them.

After every failure, with the room given back: ``system check`` is clean (nothing half-written) and
the same command succeeds.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.conftest import E, Lamina, build_image, write_oci_layout
from tests.registry import REGISTRY_BIN, run_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root"),
]

DRIVERS = ["vfs", "overlay", "fuse"]
DISK = 4 << 20


def full_line(root: Path) -> str:
    return f"lamina: no space left on device (store {root})"


@dataclass
class Images:
    big: Path    # one 6 MiB layer of random bytes: its blob does not fit
    zeros: Path  # one layer of 6 MiB of zeros, gzip'd to a few KiB: the blob fits, the apply does not
    small: Path  # fits


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    d = tmp_path_factory.mktemp("nospace-images")
    big = build_image([[E("big.bin", random.Random(19).randbytes(6 << 20))]])
    zeros = build_image([[E("zeros.bin", bytes(6 << 20))]], gzip_layers=(0,))
    small = build_image([[E("small.txt", b"small\n")]])
    return Images(write_oci_layout(d / "big", [(big, "big:1")]),
                  write_oci_layout(d / "zeros", [(zeros, "zeros:1")]),
                  write_oci_layout(d / "small", [(small, "small:1")]))


@contextlib.contextmanager
def tiny_fs(path: Path, size: int = DISK) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        root = path / "root"
        if (root / "lamina.db").exists():
            with contextlib.suppress(Exception):
                from graph import Store

                with Store(root) as store:
                    store.driver.cleanup()  # fuse helpers, overlay mounts
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def filled(fs: Path, leave: int = 0) -> Iterator[None]:
    """Fill ``fs`` with a file until ENOSPC, then give ``leave`` bytes back; remove it after."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, block)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 512)
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    try:
        yield
    finally:
        filler.unlink()


def assert_full(cli: Lamina, *args: str) -> None:
    r = cli(*args, expect=8)
    assert r.err_lines == [full_line(cli.root)], r.err


def assert_clean(cli: Lamina) -> None:
    """Nothing half-written: check finds no damage (information lines are fine)."""
    r = cli("system", "check")
    assert r.lines[0] == "ok", r.out
    assert all(line.startswith("info: ingest: ") for line in r.lines[1:]), r.out


@pytest.mark.parametrize("driver", DRIVERS)
def test_full_disk_in_ingest_apply_and_database_is_one_line(driver: str, tmp_path: Path, images: Images) -> None:
    with tiny_fs(tmp_path / "fs") as fs:
        cli = Lamina(fs / "root", driver=driver)
        assert_full(cli, "load", "-i", str(images.big))     # content ingest
        assert_clean(cli)
        assert_full(cli, "load", "-i", str(images.zeros))   # layer apply
        assert_clean(cli)
        cli("load", "-i", str(images.small))
        with filled(fs):
            assert_full(cli, "tag", "small:1", "other:1")       # SQLite
            assert_full(cli, "create", "--name", "c", "small:1")
            assert_full(cli, "rmi", "small:1")
        assert_clean(cli)
        assert cli("images", "--format", "json").out.count('"small"') >= 1  # nothing was lost
        cli("tag", "small:1", "other:1")
        cli("create", "--name", "c", "small:1")
        assert_clean(cli)


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_full_disk_at_every_point_of_a_commit_is_success_or_the_line(driver: str, tmp_path: Path,
                                                                      images: Images) -> None:
    """With 0 to 256 KiB left, a container create, a commit and a tag each meet the full disk
    somewhere else (driver, ingest, database); every outcome is success or the one line."""
    with tiny_fs(tmp_path / "fs") as fs:
        cli = Lamina(fs / "root", driver=driver)
        cli("load", "-i", str(images.small))
        failures = 0
        r = cli("images")
        for i, leave in enumerate([0, 4096, 16384, 65536, 262144]):
            with filled(fs, leave):
                steps = [("create", "--name", f"c{i}", "small:1"), ("commit", f"c{i}", f"committed:{i}"),
                         ("tag", "small:1", f"t:{i}")]
                for args in steps:
                    if args[0] == "commit" and r.rc != 0:
                        continue  # its container was not created
                    r = cli(*args, expect=None)
                    assert r.rc in (0, 8), r.err
                    if r.rc == 8:
                        failures += 1
                        assert r.err_lines == [full_line(cli.root)], r.err
            assert_clean(cli)
        assert failures >= 3  # the disk was full for real


@pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="docker-registry is not installed")
@pytest.mark.parametrize("driver", DRIVERS)
def test_full_disk_during_a_pull_is_one_line(driver: str, tmp_path: Path, images: Images) -> None:
    src = Lamina(tmp_path / "src")
    with run_registry(tmp_path / "reg") as reg:
        for name in ("big", "zeros"):
            src("load", "-i", str(getattr(images, name)))
            src("tag", f"{name}:1", f"{reg.host}/{name}:1")
            src("push", "--insecure", f"{reg.host}/{name}:1")
        with tiny_fs(tmp_path / "fs") as fs:
            cli = Lamina(fs / "root", driver=driver)
            for name in ("big", "zeros"):
                assert_full(cli, "pull", "--insecure", f"{reg.host}/{name}:1")
                assert_clean(cli)
