"""``drivers.sys.loop``: a real ext4 on a loop device the test makes, and that every way out
(normal close, a failure half-way, a mount left inside, a second close) leaves nothing attached
or mounted (checked with ``losetup -a`` and mountinfo through ``leftovers``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from drivers.sys import mount as mountapi
from drivers.sys.loop import leftovers, loop_filesystem, loopfs_skip_reason, make_loop_filesystem, parse_size


@pytest.mark.parametrize("text, want", [
    ("512M", 512 << 20), ("2G", 2 << 30), ("64k", 64 << 10), ("1T", 1 << 40), ("4096", 4096),
    ("16MiB", 16 << 20), ("8MB", 8 << 20), (" 3m ", 3 << 20), (12345, 12345),
])
def test_parse_size(text: str | int, want: int) -> None:
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "M", "1.5G", "-1M", "10X", "ten"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_skip_reason_names_what_is_missing() -> None:
    reason = loopfs_skip_reason("nosuchfs")
    assert reason is not None and ("mkfs.nosuchfs not installed" in reason or "need root" in reason)


def _need_ext4() -> None:
    reason = loopfs_skip_reason("ext4")
    if reason:
        pytest.skip(reason)


def _attached(image: Path) -> bool:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return f"({image})" in out


@pytest.mark.integration
def test_ext4_on_a_loop_device_and_nothing_left(tmp_path: Path) -> None:
    _need_ext4()
    try:
        _ext4_and_nothing_left(tmp_path)
    finally:  # the code under test cleans up; if it did not, do it here with the tools themselves
        subprocess.run(["umount", "-R", "-l", str(tmp_path / "fs")], capture_output=True)
        for line in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines():
            if f"({tmp_path / 'fs.img'}" in line:
                subprocess.run(["losetup", "-d", line.split(":", 1)[0]], capture_output=True)


def _ext4_and_nothing_left(tmp_path: Path) -> None:
    with loop_filesystem(tmp_path, "ext4", size="32M", name="fs") as fs:
        assert fs.mounted and fs.device and fs.device.startswith("/dev/loop")
        assert fs.image == tmp_path / "fs.img" and fs.mountpoint == tmp_path / "fs"
        assert mountapi.fstype_of(fs.mountpoint) == "ext4" and _attached(fs.image)
        (fs.mountpoint / "data").write_bytes(b"x" * 4096)
        assert leftovers([fs.image], [fs.mountpoint])  # the check sees what is there
        # a bind mount a test forgot inside: close takes it down too
        (fs.mountpoint / "inner").mkdir()
        src = tmp_path / "src"
        src.mkdir()
        mountapi.mount(str(src), fs.mountpoint / "inner", "", 0x1000)  # MS_BIND
    assert leftovers([fs.image], [fs.mountpoint]) == []
    assert not fs.image.exists() and not fs.mountpoint.exists() and fs.device is None
    fs.close()  # twice: harmless
    assert fs.errors == []


@pytest.mark.integration
def test_failure_half_way_undoes_every_step(tmp_path: Path) -> None:
    _need_ext4()
    # mkfs and losetup succeed, the mount fails (ext4 has no such option): all is undone
    with pytest.raises(RuntimeError, match="mount"):
        make_loop_filesystem(tmp_path, "ext4", size="16M", mount_options="nosuchoption", name="bad")
    assert leftovers([tmp_path / "bad.img"], [tmp_path / "bad"]) == []
    assert not (tmp_path / "bad.img").exists() and not (tmp_path / "bad").exists()
    with pytest.raises(RuntimeError, match="mkfs.ext4"):
        make_loop_filesystem(tmp_path, "ext4", size="16M", mkfs_args=["-b", "3"], name="bad2")
    assert not (tmp_path / "bad2.img").exists()


def test_an_existing_image_file_is_refused_and_kept(tmp_path: Path) -> None:
    taken = tmp_path / "taken.img"
    taken.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        make_loop_filesystem(tmp_path, "ext4", size="16M", name="taken")
    assert taken.read_bytes() == b"someone else's"
