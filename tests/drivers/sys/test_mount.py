"""``drivers.sys.mount`` on real mounts (tmpfs and overlay in the test's temp dir, always
unmounted): the new mount API and its kernel log, mount(2)/umount(2), mountinfo parsing and the
lookups built on it, and the private-cwd helper."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path
from typing import Iterator

import pytest

from drivers.sys import mount as m

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root"),
]


@contextlib.contextmanager
def mounted(target: Path) -> Iterator[Path]:
    """Unmount whatever the block left on ``target`` (also on failure). By umount2 until the
    kernel says "not a mount point", not by asking mountinfo: the parser is under test here."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        yield target
    finally:
        for _ in range(10):
            if m.libc.umount2(os.fsencode(target), m.MNT_DETACH) != 0:
                break  # EINVAL: nothing (more) mounted there


def test_new_api_mounts_tmpfs_with_options(tmp_path: Path) -> None:
    assert m.new_api_available() and "tmpfs" in m.filesystems()
    with mounted(tmp_path / "t") as t:
        with m.FsContext("tmpfs") as ctx:
            ctx.set_string("size", "1M")
            ctx.set_string("mode", "0710")
            ctx.create()
            ctx.attach(t, m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV)
            assert ctx.fd == -1  # both fds closed once attached
        assert m.is_mount_point(t) and m.fstype_of(t) == "tmpfs" and m.fstype_of(t / "x") == "tmpfs"
        [info] = m.mounts_under(t)
        assert info.mount_point == str(t) and info.super_option("size") == "1024k"
        assert info.super_option("rw") == "" and info.super_option("nosuch") is None
        assert {"nosuid", "nodev"} <= set(info.mount_options.split(","))
        assert os.stat(t).st_mode & 0o7777 == 0o710
        m.umount(t)  # not busy: the context's fds are gone
        assert not m.is_mount_point(t) and m.fstype_of(t) != "tmpfs"


def test_new_api_errors_carry_the_kernel_log(tmp_path: Path) -> None:
    with m.FsContext("tmpfs") as ctx:
        with pytest.raises(m.MountError) as ei:
            ctx.set_string("nosuchoption", "1")
    e = ei.value
    assert e.errno == errno.EINVAL and e.step == "fsconfig nosuchoption=1"
    assert any("nosuchoption" in line for line in e.log) and "nosuchoption" in e.kernel_message
    with m.FsContext("tmpfs") as ctx, pytest.raises(m.MountError) as ei:
        ctx.set_string("size", "x" * 300)  # refused before the kernel would cut it
    assert ei.value.errno == errno.ENAMETOOLONG and "longer than 255 bytes" in ei.value.kernel_message
    with pytest.raises(m.MountError) as ei:
        m.FsContext("nosuchfs")
    assert ei.value.errno == errno.ENODEV and ei.value.step == "fsopen"


def test_overlay_through_the_new_api(tmp_path: Path) -> None:
    lower1, lower2, upper, work = (tmp_path / n for n in ("l1", "l2", "u", "w"))
    for d in (lower1, lower2, upper, work):
        d.mkdir()
    (lower1 / "a").write_text("top")
    (lower2 / "a").write_text("bottom")
    (lower2 / "b").write_text("b")
    with mounted(tmp_path / "merged") as merged:
        with m.FsContext("overlay") as ctx:
            for low in (lower1, lower2):  # one lower dir per call, topmost first
                ctx.set_string("lowerdir+", low)
            ctx.set_string("upperdir", upper)
            ctx.set_string("workdir", work)
            ctx.create()
            ctx.attach(merged)
        assert (merged / "a").read_text() == "top" and (merged / "b").read_text() == "b"
        (merged / "c").write_text("new")
        assert (upper / "c").read_text() == "new"
        assert m.fstype_of(merged) == "overlay"
    with m.FsContext("overlay") as ctx, pytest.raises(m.MountError) as ei:
        ctx.set_string("lowerdir+", tmp_path / "missing")  # looked up by this very call
    assert ei.value.errno == errno.ENOENT and ei.value.step == f"fsconfig lowerdir+={tmp_path / 'missing'}"
    with m.FsContext("overlay") as ctx, pytest.raises(m.MountError) as ei:
        ctx.create()  # no lower dir at all
    assert (ei.value.errno, ei.value.step) == (errno.EINVAL, "fsconfig create")


def test_mount2_and_umount2(tmp_path: Path) -> None:
    with mounted(tmp_path / "t") as t:
        m.mount("lamina-test", t, "tmpfs", m.MS_NOSUID, "size=1m,mode=0700")
        [info] = m.mounts_under(t)
        assert (info.source, info.fstype) == ("lamina-test", "tmpfs") and os.stat(t).st_mode & 0o777 == 0o700
        f = open(t / "busy", "w")
        try:
            with pytest.raises(m.MountError) as ei:
                m.umount(t)
            assert ei.value.errno == errno.EBUSY
            m.umount(t, m.MNT_DETACH)  # lazily: gone from the tree at once
            assert not m.is_mount_point(t)
        finally:
            f.close()
    with pytest.raises(m.MountError) as ei:
        m.umount(tmp_path)  # not a mount point
    assert ei.value.errno == errno.EINVAL and ei.value.filename == str(tmp_path)
    with pytest.raises(m.MountError) as ei:
        m.mount("x", tmp_path, "tmpfs", 0, "a" * m.PAGE_SIZE)
    assert ei.value.errno == errno.E2BIG
    assert not m.is_mount_point(tmp_path)


def test_mount_points_with_awkward_names(tmp_path: Path) -> None:
    with mounted(tmp_path / "with space\tand\\slash") as t:
        m.mount("tmpfs", t, "tmpfs")
        assert m.is_mount_point(t)
        assert [i.mount_point for i in m.mounts_under(tmp_path)] == [str(t)]


def test_parse_mountinfo() -> None:
    text = (
        "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
        "37 36 0:44 / /mnt/with\\040space rw shared:5 master:2 propagate_from:3 - tmpfs my\\134src rw,size=10k\n"
        "38 36 0:45 / /merged rw - overlay overlay rw,lowerdir=/a\\,b:/c,upperdir=/u,workdir=/w\n"
        "garbage line without separator\n"
        "\n"
        "39 36 0:46 / /short rw - tmpfs\n"  # too few fields after the separator: skipped
    )
    a, b, c = m.parse_mountinfo(text)
    assert (a.mount_id, a.parent_id, a.major_minor, a.root, a.mount_point) == (36, 35, "98:0", "/mnt1", "/mnt/parent")
    assert (a.mount_options, a.fstype, a.source) == ("rw,noatime", "ext3", "/dev/root")
    assert a.super_option("errors") == "continue"
    assert (b.mount_point, b.source, b.super_option("size")) == ("/mnt/with space", "my\\src", "10k")
    assert c.super_option("lowerdir") == "/a\\,b:/c" and c.super_option("workdir") == "/w"


def test_mountinfo_lookups_on_this_process(tmp_path: Path) -> None:
    assert any(i.mount_point == "/" for i in m.mountinfo())
    assert m.is_mount_point("/") and m.is_mount_point("/proc") and not m.is_mount_point(tmp_path)
    assert m.fstype_of("/proc/self") == "proc"


def test_in_private_cwd_keeps_the_process_cwd(tmp_path: Path) -> None:
    (tmp_path / "rel").write_text("found")
    before = os.getcwd()
    inside, checked = threading.Event(), threading.Event()
    seen: list[str] = []

    def watcher() -> None:  # another thread of the process, looking while fn runs
        inside.wait(10)
        seen.append(os.getcwd())
        checked.set()

    def fn() -> str:
        inside.set()
        checked.wait(10)
        return Path("rel").read_text() + ":" + os.getcwd()

    w = threading.Thread(target=watcher)
    w.start()
    assert m.in_private_cwd(tmp_path, fn) == f"found:{tmp_path}"
    w.join()
    assert os.getcwd() == before and seen == [before]
    with pytest.raises(FileNotFoundError):
        m.in_private_cwd(tmp_path / "missing", lambda: None)
    with pytest.raises(ZeroDivisionError):
        m.in_private_cwd(tmp_path, lambda: 1 // 0)
