"""The btrfs driver against the real kernel: subvolumes, snapshots, read-only layers, nested
subvolumes, busy layers, qgroup limits, generation-based diffs, and the loop-btrfs set-up.

Every test gets a fresh sparse loop btrfs (``tests/loopfs.py``: about 30 ms to make) and its
teardown asserts that no loop device of its image and no mount under it is left.
"""

from __future__ import annotations

import errno
import io
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Iterator

import pytest

from drivers import btrfs_ioctl as ioc
from drivers.base import CacheID
from drivers.errors import AlreadyExists, Conflict, InvalidInput, NotFound, Unsupported
from tests.drivers.conformance import DriverConformance
from tests.loopfs import (LoopFS, btrfs_home, leftovers, loop_btrfs, loop_ext4,  # noqa: F401
                          loopfs_skip_reason)
from tests.tarbuild import E, make_tar

if loopfs_skip_reason("btrfs"):
    pytest.skip(f"btrfs tests: {loopfs_skip_reason('btrfs')}", allow_module_level=True)

from drivers import btrfs  # noqa: E402
from drivers.btrfs import BtrfsDriver  # noqa: E402

pytestmark = pytest.mark.integration

A, B, C, D = (CacheID(x) for x in ("a" * 8, "b" * 8, "c" * 8, "d" * 8))


class TestBtrfsConformance(DriverConformance):
    DRIVERS = ["btrfs"]


@pytest.fixture
def driver_home(driver_name: str, tmp_path: Path) -> Iterator[Path]:
    """The conformance suite's home for btrfs: on a fresh loop btrfs, checked clean afterwards."""
    with btrfs_home(tmp_path) as home:
        yield home


@pytest.fixture
def drv(loop_btrfs: LoopFS) -> Iterator[BtrfsDriver]:
    d = BtrfsDriver(loop_btrfs.mountpoint / "home")
    try:
        yield d
    finally:
        d.cleanup()


def _tar(entries: list[E]) -> io.BytesIO:
    return io.BytesIO(make_tar(entries))


def _top_level_subvolumes(fs: LoopFS) -> list[ioc.RootRef]:
    """Every subvolume of the filesystem, however deep: what "nothing half-created" checks."""
    out: list[ioc.RootRef] = []
    with ioc.opendir(fs.mountpoint) as fd:
        todo = [ioc.FS_TREE_OBJECTID]
        while todo:
            for ref in ioc.child_subvolumes(fd, todo.pop()):
                out.append(ref)
                todo.append(ref.id)
    return out


# ---------------------------------------------------------------------------------------------
# the ioctl layer


def test_request_numbers_match_the_kernel_headers() -> None:
    # Values printed by a C program including <linux/btrfs.h> (kernel 6.18 headers).
    assert ioc.IOC_SNAP_CREATE_V2 == 0x50009417
    assert ioc.IOC_SUBVOL_CREATE_V2 == 0x50009418
    assert ioc.IOC_SNAP_DESTROY_V2 == 0x5000943F
    assert ioc.IOC_SUBVOL_GETFLAGS == 0x80089419
    assert ioc.IOC_SUBVOL_SETFLAGS == 0x4008941A
    assert ioc.IOC_INO_LOOKUP == 0xD0009412
    assert ioc.IOC_TREE_SEARCH_V2 == 0xC0709411
    assert ioc.IOC_QUOTA_CTL == 0xC0109428
    assert ioc.IOC_QGROUP_CREATE == 0x4010942A
    assert ioc.IOC_QGROUP_LIMIT == 0x8030942B
    assert ioc.IOC_QUOTA_RESCAN_WAIT == 0x942E
    assert ioc.IOC_GET_SUBVOL_INFO == 0x81F8943C
    assert ioc.IOC_SYNC == 0x9408


def test_ioctls_create_snapshot_flag_and_delete(loop_btrfs: LoopFS) -> None:
    m = loop_btrfs.mountpoint
    with ioc.opendir(m) as top:
        ioc.subvol_create(top, "src")
        (m / "src" / "f").write_text("hello")
        with ioc.opendir(m / "src") as src:
            ioc.set_readonly(src, True)
            assert ioc.is_readonly(src)
            info = ioc.subvol_info(src)
            assert info.readonly and info.name == "src" and info.parent_id == ioc.FS_TREE_OBJECTID
            ioc.snapshot(src, top, "rw")
            ioc.snapshot(src, top, "ro", readonly=True)
        with pytest.raises(OSError) as ei:
            (m / "src" / "g").write_text("x")
        assert ei.value.errno == errno.EROFS
        with ioc.opendir(m / "rw") as rw:
            snap = ioc.subvol_info(rw)
            assert snap.parent_uuid == info.uuid and not snap.readonly
            assert snap.otransid >= info.ctransid
        (m / "rw" / "g").write_text("writable")        # a snapshot of a RO subvolume is RW
        with ioc.opendir(m / "ro") as ro:
            assert ioc.is_readonly(ro)
        with pytest.raises(OSError) as ei:
            ioc.snapshot(top, top, "rw")                # name taken: EEXIST, nothing made
        assert ei.value.errno == errno.EEXIST
        (m / "plain").mkdir()
        assert ioc.is_subvolume(m / "rw") and ioc.is_subvolume(m)       # the top level is one too
        assert not ioc.is_subvolume(m / "plain")
        (m / "plain").rmdir()
        for name in ("ro", "rw", "src"):                # read-only ones too, as root
            ioc.subvol_delete(top, name)
        assert os.listdir(m) == []


def test_tree_search_finds_changed_inodes_and_their_names(loop_btrfs: LoopFS) -> None:
    m = loop_btrfs.mountpoint
    with ioc.opendir(m) as top:
        ioc.subvol_create(top, "p")
        (m / "p" / "d").mkdir()
        (m / "p" / "d" / "same").write_text("same")
        (m / "p" / "d" / "edit").write_text("before")
        with ioc.opendir(m / "p") as p:
            ioc.set_readonly(p)
            ioc.snapshot(p, top, "c")
    c = m / "c"
    (c / "d" / "edit").write_text("after!")
    os.link(c / "d" / "edit", c / "twin")
    with ioc.opendir(c) as fd:
        ioc.sync(fd)
        since = ioc.subvol_info(fd).otransid
        changed = ioc.changed_inodes(fd, since)
        same_ino = os.lstat(c / "d" / "same").st_ino
        edit_ino = os.lstat(c / "d" / "edit").st_ino
        assert edit_ino in changed and same_ino not in changed
        assert changed[edit_ino].size == 6 and changed[edit_ino].nlink == 2
        d_ino = os.lstat(c / "d").st_ino
        assert sorted(ioc.inode_refs(fd, edit_ino)) == sorted([(d_ino, "edit"), (256, "twin")])
        assert ioc.ino_lookup(fd, d_ino) == "d/"


# ---------------------------------------------------------------------------------------------
# support probe and loop set-up


def test_supported_names_the_filesystem_and_the_fix(loop_ext4: LoopFS) -> None:
    home = loop_ext4.mountpoint / "drivers" / "btrfs"       # need not exist yet
    reason = btrfs.supported(home)
    assert reason is not None
    assert "is on ext4, not btrfs" in reason and "btrfs-init --size" in reason and "mkfs.btrfs" in reason
    with pytest.raises(Unsupported, match="ext4, not btrfs"):
        BtrfsDriver(home)
    assert not home.exists()


def test_supported_on_btrfs(loop_btrfs: LoopFS) -> None:
    assert btrfs.supported(loop_btrfs.mountpoint / "not" / "yet") is None


def test_init_loop_btrfs_makes_mounts_reattaches_and_cleans_up(tmp_path: Path) -> None:
    root = tmp_path / "lamina"
    img, mnt = root / "btrfs.img", root / "drivers" / "btrfs"
    try:
        lb = btrfs.init_loop_btrfs(root, "300M")
        assert lb.created and lb.image == img and lb.mountpoint == mnt
        assert img.stat().st_size == 300 << 20 and img.stat().st_blocks * 512 < 300 << 20  # sparse
        assert ioc.is_btrfs(mnt) and btrfs.supported(mnt) is None
        assert lb.fstab_line() == f"{img} {mnt} btrfs loop 0 0"
        d = BtrfsDriver(mnt)
        d.create(A, None)
        (Path(d.get(A)) / "kept").write_text("data")
        d.put(A)
        with pytest.raises(AlreadyExists):
            btrfs.init_loop_btrfs(root, "300M")
        # The loop device is auto-clear: unmounting frees it.
        btrfs.remove_loop_btrfs(root)
        assert not leftovers([img], [mnt])
        # After a "reboot": the same image is attached again, without mkfs, data intact.
        lb2 = btrfs.init_loop_btrfs(root, "300M")
        assert not lb2.created
        assert (mnt / "subvolumes" / A / "kept").read_text() == "data"
        btrfs.remove_loop_btrfs(root, delete_image=True)
        assert not img.exists()
        # With quotas.
        lb3 = btrfs.init_loop_btrfs(root, "300M", quota=True)
        status = BtrfsDriver(lb3.mountpoint).status()
        assert status["quota"].startswith("enabled")
    finally:
        btrfs.remove_loop_btrfs(root, delete_image=True)
    assert not leftovers([img], [mnt])


def test_init_loop_btrfs_refuses_bad_input_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "lamina"
    with pytest.raises(InvalidInput):
        btrfs.init_loop_btrfs(root, "twenty gigs")
    with pytest.raises(InvalidInput):
        btrfs.init_loop_btrfs(root, "1M")
    (root / "drivers" / "btrfs").mkdir(parents=True)
    (root / "drivers" / "btrfs" / "precious").write_text("x")
    with pytest.raises(Conflict, match="not an empty directory"):
        btrfs.init_loop_btrfs(root, "300M")
    (root / "drivers" / "btrfs" / "precious").unlink()
    (root / "btrfs.img").write_bytes(b"\0" * 4096)
    with pytest.raises(Conflict, match="holds no btrfs"):
        btrfs.init_loop_btrfs(root, "300M")
    assert (root / "btrfs.img").stat().st_size == 4096          # not ours to delete
    assert not leftovers([root / "btrfs.img"], [root / "drivers" / "btrfs"])


def test_parse_size() -> None:
    assert btrfs.parse_size("20G") == 20 << 30
    assert btrfs.parse_size("512M") == 512 << 20
    assert btrfs.parse_size("1GiB") == 1 << 30
    assert btrfs.parse_size("4096") == 4096
    for bad in ("", "G", "-1G", "1.5G", "12Q", 0):
        with pytest.raises(InvalidInput):
            btrfs.parse_size(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# layers


def test_layers_are_subvolumes_and_children_snapshots(drv: BtrfsDriver) -> None:
    drv.create(A, None)
    assert drv.exists(A) and ioc.is_subvolume(drv.subvolumes / A)
    assert os.listdir(drv.subvolumes / A) == []
    drv.apply_diff(A, None, _tar([E("etc", kind="dir"), E("etc/os", b"base\n")]))
    drv.create(B, A)
    drv.create_rw(C, B)
    a, b, c = (drv.subvolume_info(x) for x in (A, B, C))
    assert b.parent_uuid == a.uuid and c.parent_uuid == b.uuid
    assert (Path(drv.get(C)) / "etc" / "os").read_text() == "base\n"
    drv.put(C)
    assert drv.layer_ids() == sorted([A, B, C])


def test_apply_diff_makes_the_layer_read_only_and_children_writable(drv: BtrfsDriver) -> None:
    drv.create(A, None)
    n = drv.apply_diff(A, None, _tar([E("f", b"12345"), E("d", kind="dir")]))
    assert n == 5
    assert drv.is_readonly(A)
    with pytest.raises(OSError) as ei:
        (drv.subvolumes / A / "f").write_text("oops")
    assert ei.value.errno == errno.EROFS
    with pytest.raises(Conflict, match="read-only"):
        drv.apply_diff(A, None, _tar([E("g", b"x")]))
    drv.create_rw(B, A)
    assert not drv.is_readonly(B)
    root = Path(drv.get(B))
    (root / "f").write_text("changed")
    (root / "d" / "new").write_text("new")
    drv.put(B)
    assert (drv.subvolumes / A / "f").read_text() == "12345"


def test_apply_diff_whiteouts_remove_parent_content(drv: BtrfsDriver) -> None:
    drv.create(A, None)
    drv.apply_diff(A, None, _tar([E("keep", b"k"), E("gone", b"g"), E("dir", kind="dir"),
                                  E("dir/x", b"x")]))
    drv.create(B, A)
    drv.apply_diff(B, A, _tar([E("gone", kind="whiteout"), E("dir", kind="opaque"),
                               E("dir/y", b"y")]))
    root = drv.subvolumes / B
    assert sorted(os.listdir(root)) == ["dir", "keep"]
    assert os.listdir(root / "dir") == ["y"]
    assert sorted(map(str, drv.changes(B, A))) == ["A /dir/y", "C /dir", "D /dir/x", "D /gone"]


def test_create_errors_leave_nothing(drv: BtrfsDriver, loop_btrfs: LoopFS) -> None:
    drv.create(A, None)
    before = _top_level_subvolumes(loop_btrfs)
    with pytest.raises(AlreadyExists):
        drv.create(A, None)
    with pytest.raises(NotFound):
        drv.create(B, C)                 # no such parent
    with pytest.raises(InvalidInput):
        drv.create(CacheID("../x"), None)
    with pytest.raises(Unsupported, match="quota"):
        drv.create_rw(B, A, size_limit="10M")   # quotas are off
    assert _top_level_subvolumes(loop_btrfs) == before
    assert sorted(os.listdir(drv.subvolumes)) == [A]


def test_a_step_failing_after_the_snapshot_removes_it(drv: BtrfsDriver, loop_btrfs: LoopFS,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    drv.create(A, None)
    before = _top_level_subvolumes(loop_btrfs)

    def fail(*a: object) -> None:
        raise OSError(errno.EIO, "injected")

    monkeypatch.setattr(btrfs, "_rename_noreplace", fail)   # the step after the snapshot
    with pytest.raises(Exception, match="Input/output error"):
        drv.create_rw(B, A)
    monkeypatch.undo()
    assert _top_level_subvolumes(loop_btrfs) == before
    assert sorted(os.listdir(drv.subvolumes)) == [A]
    drv.create_rw(B, A)                  # and the id is free again
    assert drv.exists(B)


def test_a_stale_temp_subvolume_is_swept_by_cleanup(drv: BtrfsDriver) -> None:
    with ioc.opendir(drv.subvolumes) as fd:
        ioc.subvol_create(fd, ".tmp-" + A)          # what a crash mid-create leaves
        ioc.subvol_create(fd, ".removing-" + B)     # what a crash mid-remove leaves
    drv.cleanup()
    assert os.listdir(drv.subvolumes) == []


# ---------------------------------------------------------------------------------------------
# removal


def test_remove_deletes_nested_subvolumes(drv: BtrfsDriver, loop_btrfs: LoopFS) -> None:
    drv.create(A, None)
    drv.apply_diff(A, None, _tar([E("usr", kind="dir")]))
    drv.create_rw(B, A)
    root = Path(drv.get(B))
    # What a container may do: subvolumes inside its rootfs, nested, one read-only.
    with ioc.opendir(root) as fd:
        ioc.subvol_create(fd, "vol1")
    with ioc.opendir(root / "usr") as fd:
        ioc.subvol_create(fd, "vol2")
    with ioc.opendir(root / "usr" / "vol2") as fd:
        ioc.subvol_create(fd, "vol3")
    with ioc.opendir(root / "usr" / "vol2" / "vol3") as fd:
        (root / "usr" / "vol2" / "vol3" / "data").write_text("x")
        ioc.set_readonly(fd)
    drv.put(B)
    assert len(_top_level_subvolumes(loop_btrfs)) == 5
    drv.remove(B)
    assert not drv.exists(B)
    assert [r.name for r in _top_level_subvolumes(loop_btrfs)] == [A]
    assert os.listdir(drv.subvolumes) == [A]
    drv.remove(A)                        # a read-only layer
    assert os.listdir(drv.subvolumes) == [] and _top_level_subvolumes(loop_btrfs) == []
    drv.remove(A)                        # repeat: no-op


def test_remove_refuses_held_and_busy_layers(drv: BtrfsDriver, tmp_path: Path) -> None:
    drv.create(A, None)
    drv.create_rw(B, A)
    root = drv.get(B)
    with pytest.raises(Conflict, match="in use"):
        drv.remove(B)
    drv.put(B)
    # Bind-mounted elsewhere (a runtime's rootfs): the kernel would delete it under the mount.
    elsewhere = tmp_path / "rootfs"
    elsewhere.mkdir()
    subprocess.run(["mount", "--bind", root, str(elsewhere)], check=True)
    try:
        with pytest.raises(Conflict, match="busy, mounted at"):
            drv.remove(B)
    finally:
        subprocess.run(["umount", str(elsewhere)], check=True)
    # Something mounted on the layer itself: the kernel's own EBUSY case.
    subprocess.run(["mount", "-t", "tmpfs", "none", root], check=True)
    try:
        with pytest.raises(Conflict, match="busy"):
            drv.remove(B)
    finally:
        subprocess.run(["umount", root], check=True)
    assert drv.exists(B) and sorted(os.listdir(drv.subvolumes)) == [A, B]
    drv.remove(B)
    assert not drv.exists(B)


def test_remove_finishes_an_interrupted_remove(drv: BtrfsDriver) -> None:
    drv.create(A, None)
    os.rename(drv.subvolumes / A, drv.subvolumes / (".removing-" + A))   # crash after the rename
    drv.remove(A)
    assert os.listdir(drv.subvolumes) == []


# ---------------------------------------------------------------------------------------------
# quotas


@pytest.fixture
def quota_drv(loop_btrfs: LoopFS) -> Iterator[BtrfsDriver]:
    d = BtrfsDriver(loop_btrfs.mountpoint / "home")
    try:
        d.enable_quota(simple=False)
    except Unsupported as e:
        pytest.skip(f"kernel refuses btrfs quotas: {e}")
    try:
        yield d
    finally:
        d.cleanup()


def _fill(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(b"\xa5" * (1 << 20))
        f.flush()
        os.fsync(f.fileno())


@pytest.mark.parametrize("mode", ["full", "simple"])
def test_size_limit_makes_writes_beyond_it_fail_with_edquot(loop_btrfs: LoopFS, mode: str) -> None:
    d = BtrfsDriver(loop_btrfs.mountpoint / "home")
    try:
        try:
            assert d.enable_quota(simple=(mode == "simple")) == mode
        except Unsupported as e:
            pytest.skip(f"{mode} quotas not available: {e}")
        d.create(A, None)
        d.apply_diff(A, None, _tar([E("big", b"\x01" * (12 << 20))]))   # 12 MiB image
        d.create_rw(B, A, size_limit="8M")
        assert d.quota_status().enabled  # type: ignore[union-attr]
        root = Path(d.get(B))
        _fill(root / "small", 4)                        # within the limit; the image's 12 MiB
        with pytest.raises(OSError) as ei:              # do not count against it
            _fill(root / "large", 16)
        assert ei.value.errno == errno.EDQUOT
        (root / "large").unlink()
        d.put(B)
        usage = d.layer_usage(B)
        assert usage is not None and usage.excl < 8 << 20
        # Another container on the same image without a limit is not held back.
        d.create_rw(C, A)
        _fill(Path(d.get(C)) / "large", 16)
        d.put(C)
        for x in (C, B, A):
            d.remove(x)
        assert d.status()["layers"] == "0"
    finally:
        d.cleanup()


def test_driver_option_size_is_the_default_limit(loop_btrfs: LoopFS) -> None:
    d = BtrfsDriver(loop_btrfs.mountpoint / "home", size="4M")
    try:
        with pytest.raises(Unsupported, match="quota"):
            d.create_rw(A, None)                         # quotas off: refused, nothing made
        assert os.listdir(d.subvolumes) == []
        d.enable_quota()
        d.create_rw(A, None)
        with pytest.raises(OSError) as ei:
            _fill(Path(d.get(A)) / "f", 8)
        assert ei.value.errno == errno.EDQUOT
        d.put(A)
        d.create(B, None)                                # read-only layers get no limit
        d.apply_diff(B, None, _tar([E("f", b"\0" * (8 << 20))]))
    finally:
        d.cleanup()


def test_status_reports_backing_fs_layers_quota_and_usage(quota_drv: BtrfsDriver,
                                                          loop_btrfs: LoopFS) -> None:
    quota_drv.create(A, None)
    quota_drv.apply_diff(A, None, _tar([E("f", b"x")]))
    quota_drv.create_rw(B, A)
    s = quota_drv.status()
    assert s["backing_fs"] == "btrfs"
    assert s["layers"] == "2" and s["read_only_layers"] == "1"
    assert s["quota"].startswith("enabled (full)")
    assert s["device"].startswith("/dev/loop")
    assert int(s["fs_size"]) == 1 << 30 and 0 < int(s["fs_used"]) < int(s["fs_size"])
    assert int(s["fs_free"]) > 0


def test_status_without_quota(drv: BtrfsDriver) -> None:
    assert drv.status()["quota"] == "disabled"
    assert drv.status()["layers"] == "0"


def test_a_fresh_snapshot_takes_almost_no_space(quota_drv: BtrfsDriver) -> None:
    quota_drv.create(A, None)
    quota_drv.apply_diff(A, None, _tar([E(f"f{i}", os.urandom(64 << 10)) for i in range(64)]))
    quota_drv.create_rw(B, A)
    a, b = quota_drv.layer_usage(A), quota_drv.layer_usage(B)
    assert a is not None and b is not None
    assert a.rfer >= 4 << 20
    assert b.excl <= 64 << 10            # a b-tree root or so: 16 KiB here


# ---------------------------------------------------------------------------------------------
# changes and diff by generations


def _base_tree(n: int = 40) -> list[E]:
    ents = [E("etc", kind="dir"), E("usr", kind="dir"), E("usr/lib", kind="dir"),
            E("usr/lib/deep", kind="dir"), E("var", kind="dir"), E("var/empty", kind="dir")]
    for i in range(n):
        ents.append(E(f"usr/lib/f{i}", f"file {i}\n".encode() * 10))
        ents.append(E(f"usr/lib/deep/g{i}", b"g" * i))
    ents += [E("etc/conf", b"a=1\n"), E("etc/link", kind="symlink", target="conf"),
             E("etc/hard", kind="link", target="etc/conf"), E("etc/fifo", kind="fifo")]
    return ents


def _mutate(root: Path, rng: random.Random) -> None:
    """Random container-like changes: edits keeping size and mtime, appends, chmod, xattrs,
    deletions, renames, new dirs, replacing a dir by a file."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    for p in rng.sample(files, k=min(6, len(files))):
        op = rng.randrange(6)
        if not p.exists():
            continue
        if op == 0:                        # same size, same mtime: only the bytes differ
            st = p.stat()
            data = bytearray(p.read_bytes())
            if data:
                data[0] ^= 0xFF
                p.write_bytes(bytes(data))
                os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif op == 1:
            with open(p, "ab") as f:
                f.write(b"more")
        elif op == 2:
            p.chmod(0o600)
        elif op == 3:
            os.setxattr(p, "user.note", b"v", follow_symlinks=False)
        elif op == 4:
            p.unlink()
        else:
            p.rename(p.with_name(p.name + ".moved"))
    (root / "var" / "new" / "sub").mkdir(parents=True, exist_ok=True)
    (root / "var" / "new" / "sub" / "file").write_text("n")
    if rng.random() < 0.5 and (root / "var" / "empty").is_dir():
        (root / "var" / "empty").rmdir()
        (root / "var" / "empty").write_text("now a file")


@pytest.mark.parametrize("seed", range(6))
def test_generation_changes_equal_the_tree_comparison(drv: BtrfsDriver, seed: int) -> None:
    drv.create(A, None)
    drv.apply_diff(A, None, _tar(_base_tree()))
    drv.create_rw(B, A)
    _mutate(Path(drv.get(B)), random.Random(seed))
    drv.put(B)
    native = drv.changes(B, A)
    assert drv._changes_native(drv.subvolumes / B, drv.subvolumes / A) is not None
    assert native == drv.generic_changes(B, A)
    assert native                                       # the mutation changed something
    assert drv.diff_size(B, A) >= 0


def test_changes_see_a_rewrite_that_kept_size_and_mtime(drv: BtrfsDriver) -> None:
    drv.create(A, None)
    drv.apply_diff(A, None, _tar([E("d", kind="dir"), E("d/f", b"abcdef", mtime=1_700_000_000)]))
    drv.create_rw(B, A)
    f = Path(drv.get(B)) / "d" / "f"
    st = f.stat()
    f.write_bytes(b"ABCDEF")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    drv.put(B)
    assert [str(c) for c in drv.changes(B, A)] == ["C /d", "C /d/f"]


def test_unchanged_files_are_not_opened(drv: BtrfsDriver) -> None:
    """The generic differ must read every same-size file with a whole-second mtime (everything
    that came from a tar); the generation differ reads none of them."""
    drv.create(A, None)
    drv.apply_diff(A, None, _tar(_base_tree(60)))
    drv.create_rw(B, A)
    root = Path(drv.get(B))
    (root / "usr" / "lib" / "f7").write_text("edited")
    (root / "etc" / "conf").unlink()
    drv.put(B)
    opened: list[str] = []
    active = [True]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if active[0] and event == "open" and isinstance(args[0], (str, bytes)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)        # audit hooks cannot be removed; ``active`` switches it off
    try:
        native = drv.changes(B, A)
        native_opened = [p for p in opened if "/subvolumes/" in p]
        opened.clear()
        generic = drv.generic_changes(B, A)
        generic_opened = [p for p in opened if "/subvolumes/" in p]
    finally:
        active[0] = False
    assert native == generic
    assert [str(c) for c in native] == ["C /etc", "D /etc/conf", "C /usr", "C /usr/lib",
                                        "C /usr/lib/f7"]
    # Only inodes the container touched may be read: f7, and etc/hard whose link count fell
    # when its twin etc/conf went (the subvolume roots are opened for the ioctls).
    touched = {"usr/lib/f7", "etc/hard"}
    subvol_roots = {str(drv.subvolumes / x) for x in (A, B)}
    inside = [p for p in native_opened if p not in subvol_roots]
    assert {p.split("/subvolumes/")[1].split("/", 1)[1] for p in inside} <= touched
    # (the generic differ also skips files whose inode and ctime are equal on both sides, so it
    # is no longer a contrast; it must only agree, which the first assertion checks)
    del generic_opened


def test_changes_fall_back_when_the_layer_is_no_snapshot_of_that_parent(drv: BtrfsDriver) -> None:
    drv.create(A, None)
    drv.apply_diff(A, None, _tar([E("x", b"1"), E("y", b"2")]))
    drv.create(B, None)                   # unrelated: not a snapshot of A
    drv.apply_diff(B, None, _tar([E("x", b"1"), E("z", b"3")]))
    assert drv._changes_native(drv.subvolumes / B, drv.subvolumes / A) is None
    assert [str(c) for c in drv.changes(B, A)] == ["D /y", "A /z"]
    assert [str(c) for c in drv.changes(A, None)] == ["A /x", "A /y"]


def test_diff_is_an_oci_layer_tar_of_the_changes(drv: BtrfsDriver) -> None:
    drv.create(A, None)
    drv.apply_diff(A, None, _tar([E("keep", b"k"), E("gone", b"g"), E("d", kind="dir")]))
    drv.create_rw(B, A)
    root = Path(drv.get(B))
    (root / "gone").unlink()
    (root / "d" / "new").write_bytes(b"0123456789")
    drv.put(B)
    with drv.diff(B, A) as stream:
        data = stream.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = {m.name: m for m in tf.getmembers()}
        assert set(names) == {"d", "d/new", ".wh.gone"}
        assert tf.extractfile(names["d/new"]).read() == b"0123456789"  # type: ignore[union-attr]
    assert drv.diff_size(B, A) == 10
    # Round trip: applying the diff on the parent gives the container's tree.
    drv.create(C, A)
    drv.apply_diff(C, A, io.BytesIO(data))
    assert drv.changes(C, A) == drv.changes(B, A)
    assert sorted(os.listdir(drv.subvolumes / C)) == ["d", "keep"]


def test_get_put_and_exists(drv: BtrfsDriver) -> None:
    with pytest.raises(NotFound):
        drv.get(A)
    drv.create(A, None)
    p1, p2 = drv.get(A), drv.get(A)
    assert p1 == p2 == str(drv.subvolumes / A)
    assert drv.refs.count(A) == 2
    drv.put(A)
    drv.put(A)
    drv.put(A)                            # at zero: no-op
    assert drv.refs.count(A) == 0
    assert not drv.exists(B)
    (drv.subvolumes / B).mkdir()          # a plain directory is no layer
    assert not drv.exists(B)


def test_apply_diff_checks_the_parent_it_was_created_on(drv: BtrfsDriver) -> None:
    drv.create(A, None)
    drv.apply_diff(A, None, _tar([E("f", b"1")]))
    drv.create(B, A)
    drv.create(C, None)
    with pytest.raises(Conflict, match="not a snapshot of"):
        drv.apply_diff(B, C, _tar([E("g", b"2")]))
    with pytest.raises(Conflict, match="created on a parent"):
        drv.apply_diff(B, None, _tar([E("g", b"2")]))
    with pytest.raises(NotFound):
        drv.apply_diff(D, None, _tar([]))
    assert not drv.is_readonly(B) and sorted(os.listdir(drv.subvolumes / B)) == ["f"]


def test_a_full_layer_fails_cleanly_with_edquot(loop_btrfs: LoopFS) -> None:
    """apply_diff into a layer whose qgroup is full: a classified error, the layer stays
    writable for the caller to remove, and remove leaves nothing."""
    d = BtrfsDriver(loop_btrfs.mountpoint / "home")
    try:
        d.enable_quota()
        d.create(A, None)
        with ioc.opendir(d.subvolumes / A) as fd:
            ioc.qgroup_limit(fd, ioc.subvol_info(fd).id, max_excl=2 << 20)
        with pytest.raises(Conflict, match="quota"):
            d.apply_diff(A, None, _tar([E("big", b"\0" * (8 << 20))]))
        assert not d.is_readonly(A)
        d.remove(A)
        assert os.listdir(d.subvolumes) == [] and _top_level_subvolumes(loop_btrfs) == []
    finally:
        d.cleanup()


def test_loopfs_undoes_a_failed_set_up(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="mkfs.btrfs"):
        from tests.loopfs import make_loop_filesystem
        make_loop_filesystem(tmp_path, "btrfs", "1M")          # too small for mkfs.btrfs
    assert list(tmp_path.iterdir()) == []
    assert not leftovers([tmp_path / "loop-btrfs.img"], [tmp_path / "loop-btrfs"])
