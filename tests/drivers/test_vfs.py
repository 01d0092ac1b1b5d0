"""The vfs driver: the conformance suite, plus what only vfs has (copies, temp names, sweep)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

import drivers
from drivers.base import CacheID
from drivers.errors import Conflict, NotFound, Unsupported
from drivers.vfs import VfsDriver, _SweepLock
from tests.drivers.conformance import REPO, DriverConformance, apply, diff_bytes, tree_snapshot
from tests.tarbuild import E, make_tar


class TestVfsConformance(DriverConformance):
    DRIVERS = ["vfs"]


def _never_supported(home: Path) -> str | None:
    return "never, for the test"


@pytest.fixture
def vfs(tmp_path: Path) -> Iterator[VfsDriver]:
    d = VfsDriver(tmp_path / "vfs")
    yield d
    d.cleanup()


def test_layer_is_a_full_independent_copy(vfs: VfsDriver) -> None:
    apply(vfs, "a", None, make_tar([E("f", b"parent"), E("d/", kind="dir"), E("d/g", b"g")]))
    vfs.create(CacheID("b"), CacheID("a"))
    a, b = Path(vfs.get(CacheID("a"))), Path(vfs.get(CacheID("b")))
    assert a != b and tree_snapshot(a) == tree_snapshot(b)
    assert os.lstat(a / "f").st_ino != os.lstat(b / "f").st_ino
    assert os.lstat(a / "f").st_mtime_ns == os.lstat(b / "f").st_mtime_ns
    vfs.put(CacheID("a"))
    vfs.put(CacheID("b"))
    # removing the parent does not touch the child (no sharing between layers)
    vfs.remove(CacheID("a"))
    assert (b / "d/g").read_bytes() == b"g"


def test_crash_leftovers_are_swept_on_open_and_cleanup(tmp_path: Path) -> None:
    home = tmp_path / "vfs"
    d = VfsDriver(home)
    d.create(CacheID("keep"), None)
    for name in (".half-1a2b3c4d-tmp", ".gone-5e6f7a8b-removing"):
        (home / "dir" / name / "sub").mkdir(parents=True)
        (home / "dir" / name / "sub" / "file").write_bytes(b"x")
        os.chmod(home / "dir" / name / "sub", 0o500)  # also deletable without write permission
    assert sorted(VfsDriver(home).layer_ids()) == ["keep"]
    assert sorted(os.listdir(home / "dir")) == ["keep"]
    (home / "dir" / ".late-00000000-tmp").mkdir()
    d.cleanup()
    assert sorted(os.listdir(home / "dir")) == ["keep"]


def test_sweep_never_deletes_work_in_progress(vfs: VfsDriver) -> None:
    tmp = vfs.dir / ".busy-12345678-tmp"
    tmp.mkdir()
    with _SweepLock(vfs.home / "sweep.lock", exclusive=False):  # a create in progress
        assert vfs.sweep() == []
        assert tmp.exists()
        # the same from another process (flock is per open file, so also across processes)
        p = subprocess.run([sys.executable, "-c",
                            "import sys; from drivers.vfs import VfsDriver; "
                            "print(VfsDriver(sys.argv[1]).sweep())", str(vfs.home)],
                           capture_output=True, text=True, cwd=REPO,
                           env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert p.returncode == 0, p.stderr
        assert tmp.exists()
    assert vfs.sweep() == [tmp.name]


def test_failed_copy_leaves_nothing_under_the_final_or_a_temp_name(
        vfs: VfsDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    apply(vfs, "p", None, make_tar([E("f", b"x" * 1000)]))
    real_copy = VfsDriver._copy

    def copy_then_fail(src: str, dst: str, id: str) -> None:  # fault injection after the copy
        real_copy(src, dst, id)
        assert os.path.isdir(dst)
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(VfsDriver, "_copy", staticmethod(copy_then_fail))
    with pytest.raises(OSError):
        vfs.create(CacheID("c"), CacheID("p"))
    assert not vfs.exists(CacheID("c"))
    assert sorted(os.listdir(vfs.dir)) == ["p"]


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def test_copy_marker_spares_reading_untouched_files_but_not_touched_ones(vfs: VfsDriver) -> None:
    big = os.urandom(4 << 20)
    apply(vfs, "p", None, make_tar([E(f"f{i}", big) for i in range(8)] + [E("small", b"abcd")]))
    vfs.create_rw(CacheID("c"), CacheID("p"))
    assert (vfs.copied / "c").read_text() == "p"
    root = Path(vfs.get(CacheID("c")))
    st = os.stat(root / "small")
    (root / "small").write_bytes(b"ABCD")          # same size, mtime set back: only the
    os.utime(root / "small", ns=(st.st_atime_ns, st.st_mtime_ns))  # bytes tell the difference
    vfs.put(CacheID("c"))
    before = _bytes_read()
    assert [str(c) for c in vfs.changes(CacheID("c"), CacheID("p"))] == ["C /small"]
    assert _bytes_read() - before < 1 << 20        # the 32 MiB of untouched files were not read
    # against another parent than the copy's source the marker does not apply: all is read
    apply(vfs, "q", None, make_tar([E(f"f{i}", big) for i in range(8)] + [E("small", b"abcd")]))
    before = _bytes_read()
    assert [str(c) for c in vfs.changes(CacheID("c"), CacheID("q"))] == ["C /small"]
    assert _bytes_read() - before > 32 << 20
    vfs.remove(CacheID("c"))
    assert not (vfs.copied / "c").exists()


def test_orphaned_copy_markers_are_swept(vfs: VfsDriver) -> None:
    (vfs.copied / "ghost").write_text("p")
    vfs.create(CacheID("real"), None)
    vfs.create(CacheID("child"), CacheID("real"))
    assert vfs.sweep() == ["copied/ghost"]
    assert sorted(os.listdir(vfs.copied)) == ["child"]


def test_diff_stream_holds_the_layer_until_closed(vfs: VfsDriver) -> None:
    apply(vfs, "p", None, make_tar([E("f", b"x")]))
    s = vfs.diff(CacheID("p"), None)
    with pytest.raises(Conflict):
        vfs.remove(CacheID("p"))
    s.read(10)
    s.close()
    s.close()
    vfs.remove(CacheID("p"))


def test_apply_diff_needs_the_layer(vfs: VfsDriver) -> None:
    import io
    with pytest.raises(NotFound):
        vfs.apply_diff(CacheID("nope"), None, io.BytesIO(make_tar([])))
    with pytest.raises(NotFound):
        vfs.changes(CacheID("nope"), None)
    vfs.create(CacheID("x"), None)
    with pytest.raises(NotFound):
        vfs.diff(CacheID("x"), CacheID("nope"))


def test_status_reports_layers_and_backing_fs(vfs: VfsDriver) -> None:
    vfs.create(CacheID("a"), None)
    vfs.create(CacheID("b"), CacheID("a"))
    st = vfs.status()
    out = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(vfs.home)],
                         capture_output=True, text=True).stdout.strip()
    assert st["backing_fs"] == out
    assert st["layers"] == "2"


def test_vfs_on_btrfs_uses_reflinks(tmp_path: Path) -> None:
    from tests.loopfs import loop_filesystem, loopfs_skip_reason

    reason = loopfs_skip_reason("btrfs")
    if reason:
        pytest.skip(reason)
    with loop_filesystem(tmp_path, "btrfs", size="256M") as fs:
        d = VfsDriver(fs.mountpoint / "vfs")
        try:
            apply(d, "a", None, make_tar([E("big", os.urandom(8 << 20))]))
            d.create(CacheID("b"), CacheID("a"))
            os.sync()
            used = subprocess.run(["btrfs", "filesystem", "du", "-s", "--raw", str(d.dir)],
                                  capture_output=True, text=True, check=True).stdout.splitlines()[-1]
            total, exclusive, shared = (int(x) for x in used.split()[:3])
            assert shared >= 8 << 20, used        # the copy shares the data blocks
            assert diff_bytes(d, "b", "a") == bytes(1024)
        finally:
            d.cleanup()


# ---------------------------------------------------------------------------------------------
# the registry

def test_registry_opens_vfs(tmp_path: Path) -> None:
    d = drivers.open_driver("vfs", tmp_path / "h")
    assert isinstance(d, VfsDriver) and d.name == "vfs" and d.home == tmp_path / "h"
    assert drivers.available(tmp_path / "h")["vfs"] is None


def test_unknown_driver_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nosuch"):
        drivers.open_driver("nosuch", tmp_path)


def test_unsupported_driver_raises_with_the_probes_reason(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(drivers.DRIVERS, "never",
                        drivers.DriverInfo("tests.drivers.test_vfs", "VfsDriver", "_never_supported"))
    monkeypatch.setitem(drivers.DRIVERS, "broken", drivers.DriverInfo("drivers.nonexistent_module", "X"))
    with pytest.raises(Unsupported, match="never, for the test"):
        drivers.open_driver("never", tmp_path)
    avail = drivers.available(tmp_path)
    assert avail["never"] == "never, for the test"
    assert "unusable" in (avail["broken"] or "")
    assert drivers.default_driver(tmp_path) != "never"


def test_default_driver_follows_the_priority_list(tmp_path: Path) -> None:
    avail = drivers.available(tmp_path)
    expected = next(n for n in drivers.PRIORITY if n in drivers.DRIVERS and avail[n] is None)
    assert drivers.default_driver(tmp_path) == expected
    assert drivers.default_driver(tmp_path / "not" / "yet" / "made") == expected


def test_default_driver_prefers_btrfs_on_btrfs(tmp_path: Path) -> None:
    from tests.loopfs import loop_filesystem, loopfs_skip_reason

    reason = loopfs_skip_reason("btrfs")
    if reason:
        pytest.skip(reason)
    with loop_filesystem(tmp_path, "btrfs", size="256M") as fs:
        home = fs.mountpoint / "drivers"
        avail = drivers.available(home)
        expected = next(n for n in drivers.PRIORITY_ON_BTRFS
                        if n in drivers.DRIVERS and avail[n] is None)
        assert drivers.default_driver(home) == expected


def test_importing_drivers_loads_no_driver() -> None:
    code = ("import sys, drivers; "
            "print(sorted(m for m in sys.modules if m.startswith('drivers.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), check=True).stdout
    assert eval(out) == ["drivers.errors", "drivers.sys", "drivers.sys.record"]  # DriverInfo's base
