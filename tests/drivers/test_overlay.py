"""The overlay driver against the real kernel: mounts, copy-up, whiteouts, depth, crashes.

Every home lives on a loop-mounted journaled ext4 (``ext4_loop``; the root fs here has no
journal and slows down in wipe-and-recreate loops), and every test asserts in teardown that
nothing stays mounted under its home.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Iterator

import pytest

from drivers.sys import mount as mountapi
from drivers.base import CacheID, Change, ChangeKind
from drivers.errors import AlreadyExists, Conflict, Corrupt, NotFound, Unsupported
from tests.drivers.conformance import DriverConformance
from tests.loopfs import leftovers, loopfs_skip_reason, make_loop_filesystem

if os.geteuid() != 0 or "overlay" not in mountapi.filesystems():
    pytest.skip("overlay tests need root and a kernel with overlayfs", allow_module_level=True)

from drivers import overlay  # noqa: E402
from drivers.overlay import OverlayDriver  # noqa: E402

pytestmark = pytest.mark.integration

LOWERDIR_PLUS = overlay.kernel_overlay().lowerdir_plus
APIS = ["new", "legacy"] if LOWERDIR_PLUS else ["legacy"]


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def ext4_loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    """One 2 GiB sparse, journaled ext4 for the session (``tests.loopfs``); None where loop
    filesystems cannot be made (the tests then run on tmp_path)."""
    if loopfs_skip_reason("ext4"):
        yield None
        return
    base = tmp_path_factory.mktemp("ovl-ext4")
    fs = make_loop_filesystem(base, "ext4", "2G")
    image, mountpoint = fs.image, fs.mountpoint
    try:
        yield fs.mountpoint
    finally:
        fs.close()
    assert not leftovers([image], [mountpoint]), leftovers([image], [mountpoint])


@pytest.fixture
def home(ext4_loop: Path | None, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh driver home; teardown fails the test if anything is still mounted under it."""
    base = ext4_loop if ext4_loop is not None else tmp_path
    h = base / f"home-{request.node.name}"[:200].replace("[", "_").replace("]", "_")
    shutil.rmtree(h, ignore_errors=True)
    h.mkdir()
    try:
        yield h
    finally:
        left = [m.mount_point for m in mountapi.mounts_under(h)]
        mountapi.umount_tree(h)
        shutil.rmtree(h, ignore_errors=True)
        assert not left, f"mounts left under {h}: {left}"


@pytest.fixture(params=APIS)
def drv(home: Path, request: pytest.FixtureRequest) -> Iterator[OverlayDriver]:
    d = OverlayDriver(home / "overlay", mount_api=request.param)
    try:
        yield d
    finally:
        d.cleanup()


# ---------------------------------------------------------------------------------------------
# helpers


def tar_of(*entries: tuple) -> io.BytesIO:
    """Build an uncompressed layer tar. Entries: ("f", name, bytes[, mode]) | ("d", name[, mode])
    | ("l", name, target) symlink | ("h", name, target) hardlink | ("wh", dir, name) whiteout |
    ("opq", dir) opaque marker."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            kind, name = e[0], e[1]
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_700_000_000
            data = None
            if kind == "f":
                data = e[2]
                ti.size = len(data)
                ti.mode = e[3] if len(e) > 3 else 0o644
            elif kind == "d":
                ti.type = tarfile.DIRTYPE
                ti.mode = e[2] if len(e) > 2 else 0o755
            elif kind == "l":
                ti.type, ti.linkname = tarfile.SYMTYPE, e[2]
            elif kind == "h":
                ti.type, ti.linkname = tarfile.LNKTYPE, e[2]
            elif kind == "wh":
                ti = tarfile.TarInfo(f"{name}/.wh.{e[2]}" if name else f".wh.{e[2]}")
                ti.mtime = 1_700_000_000
            elif kind == "opq":
                ti = tarfile.TarInfo(f"{name}/.wh..wh..opq")
                ti.mtime = 1_700_000_000
            else:
                raise ValueError(kind)
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def layer(d: OverlayDriver, id: str, parent: str | None, *entries: tuple) -> CacheID:
    d.create(CacheID(id), CacheID(parent) if parent else None)
    d.apply_diff(CacheID(id), CacheID(parent) if parent else None, tar_of(*entries))
    return CacheID(id)


def tree(root: str) -> dict[str, tuple]:
    """A comparable picture of a tree: type, mode, content hash or link target per path."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = ("f", stat.S_IMODE(st.st_mode), hashlib.sha256(f.read()).hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("o", st.st_mode, st.st_rdev)
    return out


def mounted(path: str | Path) -> bool:
    return mountapi.is_mount_point(path)


# ---------------------------------------------------------------------------------------------
# the shared suite, on the loop ext4


class TestOverlayConformance(DriverConformance):
    DRIVERS = ["overlay"]

    @pytest.fixture
    def driver_home(self, home: Path) -> Path:
        return home / "overlay"


# ---------------------------------------------------------------------------------------------
# supported()


def test_supported_on_journaled_ext4(home: Path) -> None:
    assert overlay.supported(home / "overlay") is None
    assert sorted(p.name for p in (home / "overlay").iterdir()) == ["probe.ok", "sweep.lock"]
    assert overlay.supported(home / "overlay") is None  # remembered: no second test mount


def test_supported_refuses_home_on_overlay(home: Path) -> None:
    base = home / "ovl"
    for n in ("lower", "upper", "work", "merged"):
        (base / n).mkdir(parents=True)
    mountapi.mount("overlay", base / "merged", "overlay",
                   data=f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work")
    try:
        why = overlay.supported(base / "merged" / "lamina")
        assert why is not None and "overlay" in why
    finally:
        mountapi.umount(base / "merged")


def test_supported_refuses_fs_without_trusted_xattrs(home: Path) -> None:
    mnt = home / "ramfs"
    mnt.mkdir()
    mountapi.mount("ramfs", mnt, "ramfs")
    try:
        why = overlay.supported(mnt / "lamina")
        assert why is not None and "trusted" in why
        assert mountapi.mounts_under(mnt)[-1].mount_point == str(mnt)  # the probe left nothing
        with pytest.raises(Unsupported, match="trusted"):
            OverlayDriver(mnt / "lamina")  # opened directly, bypassing the probe
    finally:
        mountapi.umount(mnt)


def test_get_on_overlay_backed_home_is_unsupported_with_kernel_reason(home: Path) -> None:
    base = home / "ovl"
    for n in ("lower", "upper", "work", "merged"):
        (base / n).mkdir(parents=True)
    mountapi.mount("overlay", base / "merged", "overlay",
                   data=f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work")
    try:
        d = OverlayDriver(base / "merged" / "lamina")
        layer(d, "a", None, ("f", "x", b"x"))
        d.create_rw(CacheID("c"), CacheID("a"))
        with pytest.raises(Unsupported) as ei:
            d.get(CacheID("c"))
        assert "not supported as upperdir" in str(ei.value)
        assert d.refs.count(CacheID("c")) == 0
        assert [m.mount_point for m in mountapi.mounts_under(base)] == [str(base / "merged")]
        # read-only stacks need no upper: overlay as a lower is fine
        root = d.get(CacheID("a"))
        assert Path(root, "x").read_bytes() == b"x"
        d.put(CacheID("a"))
        d.cleanup()
    finally:
        _umount_all_under(base / "merged")
        mountapi.umount(base / "merged")


def _umount_all_under(p: Path) -> None:
    for m in reversed(mountapi.mounts_under(p)):
        if m.mount_point != str(p):
            mountapi.umount(m.mount_point, mountapi.MNT_DETACH)


# ---------------------------------------------------------------------------------------------
# the merged view


def test_whiteouts_and_opaque_dirs_in_merged_view(drv: OverlayDriver) -> None:
    layer(drv, "a", None, ("d", "etc"), ("f", "etc/keep", b"k"), ("f", "etc/gone", b"g"),
          ("d", "opt"), ("d", "opt/old"), ("f", "opt/old/1", b"1"), ("f", "opt/a", b"a"),
          ("d", "var"), ("f", "var/log", b"l"))
    layer(drv, "b", "a", ("wh", "etc", "gone"), ("d", "opt"), ("opq", "opt"), ("f", "opt/b", b"b"),
          ("wh", "", "var"))
    drv.create_rw(CacheID("c"), CacheID("b"))
    root = drv.get(CacheID("c"))
    try:
        assert sorted(os.listdir(root)) == ["etc", "opt"]
        assert sorted(os.listdir(f"{root}/etc")) == ["keep"]
        assert sorted(os.listdir(f"{root}/opt")) == ["b"]  # opaque: a's opt/old and opt/a hidden
        assert not os.path.lexists(f"{root}/var")
        # the whiteout is an overlay char device 0/0 in b's diff, never an OCI .wh. file
        st = os.lstat(drv.layers / "b" / "diff" / "etc" / "gone")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        assert os.getxattr(drv.layers / "b" / "diff" / "opt", "trusted.overlay.opaque") == b"y"
        # writes through the container layer land in its upper only
        Path(root, "etc", "new").write_bytes(b"n")
        os.unlink(f"{root}/etc/keep")
        assert Path(drv.layers, "c", "diff", "etc", "new").read_bytes() == b"n"
        assert Path(drv.layers, "a", "diff", "etc", "keep").read_bytes() == b"k"
    finally:
        drv.put(CacheID("c"))
    assert not mounted(root)
    ch = drv.changes(CacheID("c"), CacheID("b"))
    assert ch == [Change("/etc", ChangeKind.MODIFIED), Change("/etc/keep", ChangeKind.DELETED),
                  Change("/etc/new", ChangeKind.ADDED)]


def test_read_only_get_is_read_only_and_hides_whiteouts(drv: OverlayDriver) -> None:
    layer(drv, "a", None, ("f", "x", b"x"), ("wh", "", "nothing-below"))
    root = drv.get(CacheID("a"))
    try:
        assert os.listdir(root) == ["x"]  # a base layer's whiteout hides nothing and shows nothing
        with pytest.raises(OSError) as ei:
            Path(root, "y").write_bytes(b"y")
        assert ei.value.errno == errno.EROFS
    finally:
        drv.put(CacheID("a"))


def test_get_put_refcount_and_same_path(drv: OverlayDriver) -> None:
    layer(drv, "a", None, ("f", "x", b"x"))
    drv.create_rw(CacheID("c"), CacheID("a"))
    p1 = drv.get(CacheID("c"))
    p2 = drv.get(CacheID("c"))
    assert p1 == p2 and mounted(p1)
    drv.put(CacheID("c"))
    assert mounted(p1)
    drv.put(CacheID("c"))
    assert not mounted(p1)
    drv.put(CacheID("c"))  # at zero: no-op
    assert drv.refs.count(CacheID("c")) == 0


def test_copy_up_of_large_lower_file(drv: OverlayDriver) -> None:
    size = 64 << 20
    block = hashlib.sha256(b"seed").digest() * 32  # 1 KiB pattern
    data = block * (size // len(block))
    layer(drv, "a", None, ("f", "big", data))
    drv.create_rw(CacheID("c"), CacheID("a"))
    root = drv.get(CacheID("c"))
    try:
        with open(f"{root}/big", "r+b") as f:
            f.seek(size // 2)
            f.write(b"\x00")
        want = bytearray(data)
        want[size // 2] = 0
        want_digest = hashlib.sha256(want).hexdigest()
        assert hashlib.sha256(Path(root, "big").read_bytes()).hexdigest() == want_digest
        assert hashlib.sha256(Path(drv.layers, "c", "diff", "big").read_bytes()).hexdigest() == want_digest
    finally:
        drv.put(CacheID("c"))
    assert Path(drv.layers, "a", "diff", "big").read_bytes() == data  # lower untouched
    assert drv.changes(CacheID("c"), CacheID("a")) == [Change("/big", ChangeKind.MODIFIED)]
    assert drv.diff_size(CacheID("c"), CacheID("a")) == size


def test_rename_of_lower_dir_is_a_copy_and_diffs_exactly(drv: OverlayDriver) -> None:
    layer(drv, "a", None, ("d", "src"), ("f", "src/1", b"one"), ("d", "src/sub"),
          ("f", "src/sub/2", b"two"), ("l", "src/ln", "1"))
    drv.create_rw(CacheID("c"), CacheID("a"))
    root = drv.get(CacheID("c"))
    try:
        # redirect_dir=nofollow: the kernel refuses to rename a lower dir; tools copy instead
        with pytest.raises(OSError) as ei:
            os.rename(f"{root}/src", f"{root}/dst")
        assert ei.value.errno == errno.EXDEV
        shutil.move(f"{root}/src", f"{root}/dst")
        assert not os.path.lexists(f"{root}/src")
        assert Path(root, "dst", "sub", "2").read_bytes() == b"two"
        assert os.readlink(f"{root}/dst/ln") == "1"
        want = tree(root)
    finally:
        drv.put(CacheID("c"))
    ch = drv.changes(CacheID("c"), CacheID("a"))
    assert Change("/src", ChangeKind.DELETED) in ch
    assert Change("/dst", ChangeKind.ADDED) in ch
    assert not any(c.path.startswith("/src/") for c in ch)
    # the diff applied on the parent elsewhere gives the same tree
    drv.create(CacheID("b"), CacheID("a"))
    with drv.diff(CacheID("c"), CacheID("a")) as t:
        drv.apply_diff(CacheID("b"), CacheID("a"), t)
    r2 = drv.get(CacheID("b"))
    try:
        assert tree(r2) == want
    finally:
        drv.put(CacheID("b"))


def test_hardlinks_from_a_lower_layer(drv: OverlayDriver) -> None:
    layer(drv, "a", None, ("f", "x", b"shared"), ("h", "y", "x"))
    drv.create_rw(CacheID("c"), CacheID("a"))
    root = drv.get(CacheID("c"))
    try:
        sx, sy = os.stat(f"{root}/x"), os.stat(f"{root}/y")
        assert (sx.st_ino, sx.st_dev) == (sy.st_ino, sy.st_dev) and sx.st_nlink == 2
        # index=off: copying up one name breaks the link (documented overlay behaviour)
        with open(f"{root}/x", "ab") as f:
            f.write(b"+")
        assert Path(root, "x").read_bytes() == b"shared+"
        assert Path(root, "y").read_bytes() == b"shared"
        # a new hard link inside the container layer is a real one
        os.link(f"{root}/x", f"{root}/z")
        assert os.stat(f"{root}/z").st_ino == os.stat(f"{root}/x").st_ino
    finally:
        drv.put(CacheID("c"))
    assert Path(drv.layers, "a", "diff", "x").read_bytes() == b"shared"
    assert os.stat(drv.layers / "a" / "diff" / "x").st_nlink == 2
    assert drv.changes(CacheID("c"), CacheID("a")) == [Change("/x", ChangeKind.MODIFIED),
                                                       Change("/z", ChangeKind.ADDED)]


def test_layers_are_applied_in_order(drv: OverlayDriver) -> None:
    """No ``parallel_apply``: a layer's apply reads the applied layers below (implicit parents,
    hardlinks to lower files, lower symlinks as parents: ``drivers.tar.lower``), so a pull
    applies a stack bottom-up."""
    from drivers.base import ParallelApply

    assert not isinstance(drv, ParallelApply)
    ids = [CacheID(f"p{i}") for i in range(6)]
    tars = [tar_of(("f", "v", str(i).encode()), ("f", f"only{i}", b"o"),
                   *([("wh", "", f"only{i - 1}")] if i % 2 else [])) for i in range(6)]
    for i, id in enumerate(ids):
        drv.create(id, ids[i - 1] if i else None)
        drv.apply_diff(ids[i], ids[i - 1] if i else None, tars[i])
    root = drv.get(ids[-1])
    try:
        assert Path(root, "v").read_bytes() == b"5"
        assert sorted(os.listdir(root)) == ["only1", "only3", "only5", "v"]
    finally:
        drv.put(ids[-1])


# ---------------------------------------------------------------------------------------------
# depth


def _stack(d: OverlayDriver, n: int) -> list[CacheID]:
    """n layers: each writes /v (its depth), /d<i> for every 50th, and whites out /w<i-1>."""
    ids: list[CacheID] = []
    for i in range(1, n + 1):
        entries: list[tuple] = [("f", "v", str(i).encode())]
        if i % 50 == 1:
            entries.append(("f", f"d{i}", f"at {i}".encode()))
        if i == 2:
            entries.append(("f", "doomed", b"x"))
        if i == 300:
            entries.append(("wh", "", "doomed"))
        if i == 400:
            entries.append(("f", "d1", b"rewritten at 400"))
        ids.append(layer(d, f"L{i:03d}", ids[-1] if ids else None, *entries))
    return ids


@pytest.mark.skipif(not LOWERDIR_PLUS, reason="needs fsconfig lowerdir+ (Linux >= 6.8)")
def test_500_layers_mount_and_read_right_versions(home: Path) -> None:
    d = OverlayDriver(home / "overlay", mount_api="new")
    try:
        ids = _stack(d, 500)
        d.create_rw(CacheID("top"), ids[-1])
        root = d.get(CacheID("top"))
        try:
            assert Path(root, "v").read_bytes() == b"500"
            assert Path(root, "d1").read_bytes() == b"rewritten at 400"
            assert Path(root, "d51").read_bytes() == b"at 51"
            assert Path(root, "d451").read_bytes() == b"at 451"
            assert not os.path.lexists(f"{root}/doomed")
            Path(root, "w").write_bytes(b"w")
        finally:
            d.put(CacheID("top"))
        # read-only views at several depths show their own version
        for depth in (1, 2, 299, 300, 500):
            r = d.get(ids[depth - 1])
            try:
                assert Path(r, "v").read_bytes() == str(depth).encode()
                assert os.path.lexists(f"{r}/doomed") == (2 <= depth < 300)
            finally:
                d.put(ids[depth - 1])
        # 501: refused up front, naming overlayfs' limit; nothing left behind
        with pytest.raises(Unsupported, match="at most 500 lower layers"):
            d.create(CacheID("L501"), ids[-1])
        assert not d.exists(CacheID("L501"))
        assert not any(p.name.startswith("L501") for p in d.layers.iterdir())
    finally:
        d.cleanup()


@pytest.mark.skipif(not LOWERDIR_PLUS, reason="needs fsconfig lowerdir+ (Linux >= 6.8)")
def test_kernel_refusal_of_501_lowers_is_unsupported_and_leaves_nothing(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lift our own up-front check to make the kernel itself refuse, and read its words.
    monkeypatch.setattr(overlay, "MAX_LOWER", 1000)
    d = OverlayDriver(home / "overlay", mount_api="new")
    try:
        ids = _stack(d, 501)
        with pytest.raises(Unsupported, match="too many lower directories, limit is 500"):
            d.get(ids[-1])
        assert d.refs.count(ids[-1]) == 0
        assert not mounted(d.layers / ids[-1] / "merged")
    finally:
        d.cleanup()


def test_legacy_mount_refuses_what_does_not_fit_a_page(home: Path) -> None:
    d = OverlayDriver(home / "overlay", mount_api="legacy")
    try:
        ids = [layer(d, "L000", None, ("f", "v", b"0"))]
        with pytest.raises(Unsupported, match="one page"):
            for i in range(1, 200):
                ids.append(layer(d, f"L{i:03d}", ids[-1], ("f", "v", str(i).encode())))
        n = len(ids)
        assert 128 <= n < 200  # at least what Docker's overlay2 allows
        d.create_rw(CacheID("top"), ids[-1])
        root = d.get(CacheID("top"))  # the deepest legal stack mounts (relative, from home)
        try:
            assert Path(root, "v").read_bytes() == str(n - 1).encode()
        finally:
            d.put(CacheID("top"))
    finally:
        d.cleanup()


@pytest.mark.parametrize("api", APIS)
def test_very_long_home_path(home: Path, api: str) -> None:
    deep = home
    while len(str(deep)) < 300:
        deep = deep / ("x" * 60)
    d = OverlayDriver(deep / "overlay", mount_api=api)
    try:
        ids = [layer(d, "a", None, ("f", "v", b"a"))]
        for i in range(20):
            ids.append(layer(d, f"b{i}", ids[-1], ("f", "v", str(i).encode())))
        d.create_rw(CacheID("c"), ids[-1])
        root = d.get(CacheID("c"))
        try:
            assert Path(root, "v").read_bytes() == b"19"
        finally:
            d.put(CacheID("c"))
    finally:
        d.cleanup()


# ---------------------------------------------------------------------------------------------
# crashes and stale state

_CHILD = r"""
import os, signal, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from drivers.overlay import OverlayDriver
d = OverlayDriver(Path({home!r}), mount_api={api!r})
if {how!r} == "raw":
    d._mount(d._layer("c"))      # crash between mount and count: no count written
else:
    d.get("c")
    if {how!r} == "keep":
        d.keep("c")              # as `lamina mount` does: the count outlives this process
os.kill(os.getpid(), signal.SIGKILL)
"""


def _crash_child(d: OverlayDriver, api: str, how: str) -> None:
    code = _CHILD.format(root=str(Path(__file__).resolve().parents[2]), home=str(d.home),
                         api=api, how=how)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr


def test_crash_with_mount_held_drops_the_dead_holders_count(drv: OverlayDriver) -> None:
    api = "legacy" if drv.legacy else "new"
    layer(drv, "a", None, ("f", "x", b"x"))
    drv.create_rw(CacheID("c"), CacheID("a"))
    _crash_child(drv, api, "get")
    merged = drv.layers / "c" / "merged"
    assert mounted(merged) and drv.refs.count(CacheID("c")) == 0  # its holder is dead
    d2 = OverlayDriver(drv.home, mount_api=api)  # open: a mount nobody alive counts goes
    assert not mounted(merged)
    assert Path(d2.get(CacheID("c")), "x").read_bytes() == b"x"
    d2.put(CacheID("c"))
    d2.remove(CacheID("c"))
    assert not d2.exists(CacheID("c")) and not mounted(merged)


def test_crash_with_a_kept_mount_then_cleanup(drv: OverlayDriver) -> None:
    api = "legacy" if drv.legacy else "new"
    layer(drv, "a", None, ("f", "x", b"x"))
    drv.create_rw(CacheID("c"), CacheID("a"))
    _crash_child(drv, api, "keep")
    merged = drv.layers / "c" / "merged"
    assert mounted(merged)
    d2 = OverlayDriver(drv.home, mount_api=api)  # open: a kept mount stays
    assert mounted(merged) and d2.refs.count(CacheID("c")) == 1
    assert Path(d2.get(CacheID("c")), "x").read_bytes() == b"x"
    d2.put(CacheID("c"))
    with pytest.raises(Conflict):
        d2.remove(CacheID("c"))
    d2.cleanup()
    assert not mounted(merged) and d2.refs.count(CacheID("c")) == 0
    d2.remove(CacheID("c"))
    assert not d2.exists(CacheID("c"))


def test_crash_between_mount_and_count_is_swept_on_open(drv: OverlayDriver) -> None:
    api = "legacy" if drv.legacy else "new"
    layer(drv, "a", None, ("f", "x", b"x"))
    drv.create_rw(CacheID("c"), CacheID("a"))
    _crash_child(drv, api, "raw")
    merged = drv.layers / "c" / "merged"
    assert mounted(merged) and drv.refs.count(CacheID("c")) == 0
    OverlayDriver(drv.home, mount_api=api)
    assert not mounted(merged)


def test_count_without_mount_is_dropped_on_open_and_get_remounts(drv: OverlayDriver) -> None:
    api = "legacy" if drv.legacy else "new"
    layer(drv, "a", None, ("f", "x", b"x"))
    drv.create_rw(CacheID("c"), CacheID("a"))
    root = drv.get(CacheID("c"))
    mountapi.umount(root)  # the mount vanished behind the driver's back (a reboot, an admin)
    # get never hands out a bare mount point, even with a count standing
    assert Path(drv.get(CacheID("c")), "x").read_bytes() == b"x"
    assert drv.refs.count(CacheID("c")) == 2
    mountapi.umount(root)
    d2 = OverlayDriver(drv.home, mount_api=api)
    assert d2.refs.count(CacheID("c")) == 0
    assert not Path(root, "x").exists()


def test_leftover_temporary_names_are_swept_on_open(drv: OverlayDriver) -> None:
    (drv.layers / "zz.creating" / "diff").mkdir(parents=True)
    (drv.layers / "yy.removing" / "diff").mkdir(parents=True)
    os.symlink("../layers/gone/diff", drv.home / "l" / "DANGLING")
    OverlayDriver(drv.home, mount_api="legacy" if drv.legacy else "new")
    names = {p.name for p in drv.layers.iterdir()}
    assert "zz.creating" not in names and "yy.removing" not in names
    assert not os.path.lexists(drv.home / "l" / "DANGLING")


@pytest.mark.skipif(not overlay.kernel_overlay().volatile, reason="kernel has no volatile mounts")
def test_volatile_layer_survives_clean_put_and_is_corrupt_after_a_crash(drv: OverlayDriver) -> None:
    api = "legacy" if drv.legacy else "new"
    layer(drv, "a", None, ("f", "x", b"x"))
    drv.create_rw(CacheID("v"), CacheID("a"), volatile=True)
    root = drv.get(CacheID("v"))
    assert mountapi.mounts_under(root)[-1].super_option("fsync") == "volatile" or drv.legacy
    Path(root, "w").write_bytes(b"w")
    drv.put(CacheID("v"))
    root = drv.get(CacheID("v"))  # a clean put synced and lifted the kernel's mark
    assert Path(root, "w").read_bytes() == b"w"
    # the machine goes down while mounted: the mark stays, the count is lost with the mount
    mountapi.umount(root)
    d2 = OverlayDriver(drv.home, mount_api=api)
    with pytest.raises(Corrupt, match="volatile"):
        d2.get(CacheID("v"))
    d2.remove(CacheID("v"))


# ---------------------------------------------------------------------------------------------
# errors, diff


def test_errors(drv: OverlayDriver) -> None:
    layer(drv, "a", None, ("f", "x", b"x"))
    with pytest.raises(AlreadyExists):
        drv.create(CacheID("a"), None)
    with pytest.raises(NotFound):
        drv.create(CacheID("b"), CacheID("missing"))
    with pytest.raises(NotFound):
        drv.get(CacheID("missing"))
    drv.create_rw(CacheID("c"), CacheID("a"))
    drv.get(CacheID("c"))
    with pytest.raises(Conflict):
        drv.remove(CacheID("c"))
    drv.put(CacheID("c"))
    drv.remove(CacheID("c"))
    drv.remove(CacheID("c"))  # missing: no-op
    assert not drv.exists(CacheID("c"))


def _busy_tree(d: OverlayDriver) -> None:
    layer(d, "a", None, ("d", "etc"), ("f", "etc/a", b"a"), ("f", "etc/b", b"b"),
          ("d", "opt"), ("d", "opt/x"), ("f", "opt/x/1", b"1"), ("l", "lnk", "etc/a"),
          ("d", "keep"), ("f", "keep/k", b"k"))
    d.create_rw(CacheID("c"), CacheID("a"))
    root = d.get(CacheID("c"))
    try:
        Path(root, "etc", "a").write_bytes(b"A")         # modify
        os.unlink(f"{root}/etc/b")                        # delete a lower file
        shutil.rmtree(f"{root}/opt")                      # delete a lower dir
        os.mkdir(f"{root}/opt")                           # ... and make it anew (opaque)
        Path(root, "opt", "new").write_bytes(b"n")
        os.chmod(f"{root}/keep/k", 0o600)                 # metadata only
        os.symlink("etc/b", f"{root}/lnk2")               # add a symlink
        os.unlink(f"{root}/lnk")
    finally:
        d.put(CacheID("c"))


def test_native_and_naive_diff_agree(home: Path) -> None:
    native = OverlayDriver(home / "overlay")
    try:
        _busy_tree(native)
        naive = OverlayDriver(home / "overlay", naive_diff=True)
        assert native.native_diff and not naive.native_diff
        ch_native = native.changes(CacheID("c"), CacheID("a"))
        ch_naive = naive.changes(CacheID("c"), CacheID("a"))
        assert ch_native == ch_naive
        assert native.diff_size(CacheID("c"), CacheID("a")) == naive.diff_size(CacheID("c"), CacheID("a"))
        # both tars rebuild the same tree on the parent
        trees = []
        for i, d in enumerate((native, naive)):
            d.create(CacheID(f"r{i}"), CacheID("a"))
            with d.diff(CacheID("c"), CacheID("a")) as t:
                d.apply_diff(CacheID(f"r{i}"), CacheID("a"), t)
            r = d.get(CacheID(f"r{i}"))
            try:
                trees.append(tree(r))
            finally:
                d.put(CacheID(f"r{i}"))
        c = native.get(CacheID("c"))
        try:
            want = tree(c)
        finally:
            native.put(CacheID("c"))
        assert trees[0] == want and trees[1] == want
        assert not mountapi.mounts_under(native.layers / "c")  # naive diff released its mounts
    finally:
        native.cleanup()


def test_diff_writes_oci_whiteouts(drv: OverlayDriver) -> None:
    layer(drv, "a", None, ("d", "etc"), ("f", "etc/gone", b"g"), ("d", "opt"), ("f", "opt/o", b"o"))
    layer(drv, "b", "a", ("wh", "etc", "gone"), ("d", "opt"), ("opq", "opt"), ("f", "opt/n", b"n"))
    with drv.diff(CacheID("b"), CacheID("a")) as t:
        names = tarfile.open(fileobj=io.BytesIO(t.read())).getnames()
    names = [n.rstrip("/") for n in names]
    assert "etc/.wh.gone" in names
    assert "opt/.wh..wh..opq" in names or "opt/.wh.o" in names
    assert "opt/n" in names
    assert not any(n.endswith("gone") and not n.endswith(".wh.gone") for n in names)


def test_status(drv: OverlayDriver) -> None:
    layer(drv, "a", None)
    s = drv.status()
    assert s["layers"] == "1" and s["backing_fs"] in ("ext4", "tmpfs", "btrfs", "xfs")
    assert "index=off" in s["options"] and "metacopy=off" in s["options"]


# ---------------------------------------------------------------------------------------------
# mountapi


def test_parse_mountinfo_escapes_and_optional_fields() -> None:
    text = ("36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:2 - ext3 "
            "/dev/root rw,errors=continue\n"
            "40 27 0:39 / /a\\134b rw - overlay none rw,lowerdir=/x\\,y:/z,upperdir=/u\n")
    m = mountapi.parse_mountinfo(text)
    assert m[0].mount_point == "/mnt/with space" and m[0].fstype == "ext3"
    assert m[0].super_option("errors") == "continue"
    assert m[1].mount_point == "/a\\b" and m[1].super_option("upperdir") == "/u"
    assert m[1].super_option("lowerdir") == "/x\\,y:/z"


@pytest.mark.skipif(not LOWERDIR_PLUS, reason="needs fsconfig lowerdir+ (Linux >= 6.8)")
def test_fs_context_log_carries_the_kernel_message(tmp_path: Path) -> None:
    with mountapi.FsContext("overlay") as ctx:
        with pytest.raises(mountapi.MountError) as ei:
            ctx.set_string("no-such-option", "1")
    assert "Unknown parameter" in ei.value.kernel_message
    assert ctx.fd == -1


def test_attach_closes_fds_so_umount_is_not_busy(home: Path) -> None:
    if not mountapi.new_api_available():
        pytest.skip("no new mount API")
    for n in ("l1", "l2", "m"):
        (home / n).mkdir()
    fds_before = set(os.listdir("/proc/self/fd"))
    with mountapi.FsContext("overlay") as ctx:
        ctx.set_string("lowerdir", f"{home}/l1:{home}/l2")
        ctx.create()
        ctx.attach(home / "m", mountapi.MOUNT_ATTR_RDONLY)
    assert set(os.listdir("/proc/self/fd")) == fds_before
    mountapi.umount(home / "m")  # EBUSY here would mean a leaked fsmount fd
    assert not mounted(home / "m")


def test_in_private_cwd_leaves_the_process_cwd_alone(tmp_path: Path) -> None:
    before = os.getcwd()
    (tmp_path / "here").write_text("x")
    assert mountapi.in_private_cwd(tmp_path, lambda: (os.getcwd(), Path("here").read_text())) == \
        (str(tmp_path), "x")
    assert os.getcwd() == before
    with pytest.raises(FileNotFoundError):
        mountapi.in_private_cwd(tmp_path / "missing", lambda: None)


def test_diff_against_a_non_parent_compares_trees(drv: OverlayDriver) -> None:
    layer(drv, "a", None, ("f", "base", b"0"), ("f", "gone", b"g"))
    layer(drv, "b", "a", ("f", "mid", b"1"), ("wh", "", "gone"))
    layer(drv, "c", "b", ("f", "top", b"2"))
    # against its real parent: only its own change (read from its diff dir)
    assert drv.changes(CacheID("c"), CacheID("b")) == [Change("/top", ChangeKind.ADDED)]
    # against the grandparent: b's changes count too (trees compared, mounts released)
    assert drv.changes(CacheID("c"), CacheID("a")) == [
        Change("/gone", ChangeKind.DELETED), Change("/mid", ChangeKind.ADDED),
        Change("/top", ChangeKind.ADDED)]
    assert drv.changes(CacheID("c"), None) == [
        Change("/base", ChangeKind.ADDED), Change("/mid", ChangeKind.ADDED),
        Change("/top", ChangeKind.ADDED)]
    with drv.diff(CacheID("c"), CacheID("a")) as t:
        assert mounted(drv.layers / "c" / "merged")  # the naive stream reads the mounted tree
        names = sorted(n.rstrip("/") for n in tarfile.open(fileobj=io.BytesIO(t.read())).getnames())
    assert names == [".wh.gone", "mid", "top"]
    assert not mountapi.mounts_under(drv.layers)


def test_missing_lower_dir_is_corrupt_and_nothing_stays_mounted(drv: OverlayDriver) -> None:
    layer(drv, "a", None, ("f", "x", b"x"))
    layer(drv, "b", "a", ("f", "y", b"y"))
    drv.create_rw(CacheID("c"), CacheID("b"))
    shutil.rmtree(drv.layers / "a" / "diff")  # damage behind the driver's back
    with pytest.raises(Corrupt, match="layer c"):
        drv.get(CacheID("c"))
    assert drv.refs.count(CacheID("c")) == 0
    assert not mountapi.mounts_under(drv.layers)


def test_cache_ids_that_look_like_driver_files(drv: OverlayDriver) -> None:
    for name in ("l", "empty", "refs", "layers", "merged"):
        layer(drv, name, None, ("f", "n", name.encode()))
        assert Path(drv.get(CacheID(name)), "n").read_bytes() == name.encode()
        drv.put(CacheID(name))
        drv.remove(CacheID(name))


def test_put_with_open_files_detaches_lazily(drv: OverlayDriver) -> None:
    layer(drv, "a", None, ("f", "x", b"x"))
    drv.create_rw(CacheID("c"), CacheID("a"))
    root = drv.get(CacheID("c"))
    fd = os.open(f"{root}/x", os.O_RDONLY)
    try:
        drv.put(CacheID("c"))
        assert not mounted(root)                  # gone from the namespace now...
        assert os.pread(fd, 1, 0) == b"x"         # ...while the holder keeps reading
        root2 = drv.get(CacheID("c"))             # and a new get mounts afresh
        assert Path(root2, "x").read_bytes() == b"x"
        drv.put(CacheID("c"))
    finally:
        os.close(fd)
