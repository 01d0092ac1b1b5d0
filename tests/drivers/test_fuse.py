"""The fuse driver against the real kernel: helpers, mounts, overlay semantics, crashes.

Every home lives on a loop-mounted journaled ext4 (the root fs here has no journal). Teardown of
every test asserts that no FUSE mount is left under the test's temp dirs and that no helper
process of the test is still running; everything that waits on a helper has a timeout.

The overlay semantics are checked by difference: the same operations run on the kernel's
overlayfs (the overlay driver) and on this driver over identical layers must give the same
results, errors, merged tree and upper dir (``test_same_as_kernel_overlay``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from drivers.sys import mount as mountapi
from drivers.base import CacheID, Change, ChangeKind
from drivers.errors import Conflict, Corrupt, Unsupported
from tests.drivers.conformance import DriverConformance, tree_snapshot
from tests.loopfs import leftovers, loopfs_skip_reason, make_loop_filesystem
from tests.tarbuild import E, make_tar

if os.geteuid() != 0:
    pytest.skip("fuse driver tests need root", allow_module_level=True)

import drivers.fuse as fuse  # noqa: E402
from drivers.fuse import FuseDriver, Helper  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
A, M, D = ChangeKind.ADDED, ChangeKind.MODIFIED, ChangeKind.DELETED


# ---------------------------------------------------------------------------------------------
# fixtures


def _helpers_under(path: Path) -> list[int]:
    """pids of helper processes serving a mount point under ``path``."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"drivers.fuse.helper" in argv and any(a.startswith(os.fsencode(path)) for a in argv):
            out.append(int(pid))
    return out


def _fuse_mounts_under(path: Path) -> list[str]:
    return [m.mount_point for m in mountapi.mounts_under(path) if m.fstype.startswith("fuse")]


@pytest.fixture(scope="session")
def ext4_loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    """One 2 GiB sparse, journaled ext4 for the session; None where loop filesystems cannot be
    made (the tests then run on tmp_path)."""
    if loopfs_skip_reason("ext4"):
        yield None
        return
    fs = make_loop_filesystem(tmp_path_factory.mktemp("fuse-ext4"), "ext4", "2G")
    image, mountpoint = fs.image, fs.mountpoint
    try:
        yield fs.mountpoint
    finally:
        fs.close()
    assert not leftovers([image], [mountpoint]), leftovers([image], [mountpoint])


@pytest.fixture
def home(ext4_loop: Path | None, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh dir for driver homes; teardown fails the test if a FUSE mount or a helper of it
    is left (and removes them, so one failure does not hang the rest)."""
    base = ext4_loop if ext4_loop is not None else tmp_path
    h = base / f"home-{request.node.name}"[:120].replace("[", "_").replace("]", "_")
    subprocess.run(["rm", "-rf", str(h)], check=False)
    h.mkdir()
    why = fuse.supported(h / "fuse")  # also makes (and remembers the probe in) the fuse home
    if why is not None:
        pytest.skip(f"fuse driver unsupported here: {why}")
    try:
        yield h
    finally:
        mounts = _fuse_mounts_under(h) + _fuse_mounts_under(tmp_path)
        helpers = _helpers_under(h)
        for mp in reversed(mountapi.mounts_under(h)):
            try:
                mountapi.umount(mp.mount_point, mountapi.MNT_DETACH)
            except OSError:
                pass
        for pid in helpers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["rm", "-rf", str(h)], check=False)
        assert not mounts, f"FUSE mounts left: {mounts}"
        assert not helpers, f"helper processes left: {helpers}"


@pytest.fixture
def drv(home: Path) -> Iterator[FuseDriver]:
    d = FuseDriver(home / "fuse", stop_timeout=5.0)
    try:
        yield d
    finally:
        d.cleanup()


# ---------------------------------------------------------------------------------------------
# helpers


def layer(d: Any, id: str, parent: str | None, entries: list[E]) -> CacheID:
    d.create(CacheID(id), CacheID(parent) if parent else None)
    d.apply_diff(CacheID(id), CacheID(parent) if parent else None, io.BytesIO(make_tar(entries)))
    return CacheID(id)


def helper_of(d: FuseDriver, id: str) -> Helper:
    h = Helper.of(d._layer(CacheID(id)))
    assert h is not None and h.alive()
    return h


def upper_picture(diff: Path) -> dict[str, tuple[Any, ...]]:
    """What an upper dir records: per path type, mode, owner, device, content, xattrs (overlay's
    own bookkeeping xattrs such as ``origin`` left out; the opaque marker and escaped xattrs
    kept)."""
    out: dict[str, tuple[Any, ...]] = {}
    for top, dirs, files in os.walk(diff):
        for name in dirs + files:
            p = os.path.join(top, name)
            st = os.lstat(p)
            xs = {}
            for k in os.listxattr(p, follow_symlinks=False):
                if k.startswith("trusted.overlay.") and k != "trusted.overlay.opaque" and \
                        not k.startswith("trusted.overlay.overlay."):  # escaped: a user's
                    continue
                xs[k] = os.getxattr(p, k, follow_symlinks=False)
            data: Any = ""
            if stat.S_ISREG(st.st_mode):
                data = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(p)
            out[os.path.relpath(p, diff)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                             st.st_uid, st.st_gid, st.st_rdev, data,
                                             tuple(sorted(xs.items())))
    return out


# ---------------------------------------------------------------------------------------------
# the shared suite


class TestFuseConformance(DriverConformance):
    DRIVERS = ["fuse"]

    @pytest.fixture
    def driver_home(self, home: Path) -> Path:
        return home / "fuse"


# ---------------------------------------------------------------------------------------------
# supported()


def test_supported_on_journaled_ext4(home: Path) -> None:
    assert fuse.supported(home / "fuse") is None
    assert (home / "fuse" / "probe.ok").is_file()
    assert fuse.supported(home / "fuse") is None  # remembered
    assert not _fuse_mounts_under(home)


def test_supported_says_why_without_dev_fuse(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuse, "DEV_FUSE", str(home / "no-such-device"))
    why = fuse.supported(home / "fuse")
    assert why is not None and "no-such-device is missing" in why


def test_supported_says_why_when_dev_fuse_is_not_permitted(home: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # the device exists but may not be opened (a container's device policy, a nodev mount)
    nodev = home / "nodev"
    nodev.mkdir()
    mountapi.mount("tmpfs", nodev, "tmpfs", mountapi.MS_NODEV)
    try:
        os.mknod(nodev / "fuse", stat.S_IFCHR | 0o666, os.stat("/dev/fuse").st_rdev)
        monkeypatch.setattr(fuse, "DEV_FUSE", str(nodev / "fuse"))
        why = fuse.supported(home / "fuse")
        assert why is not None and "fuse cannot be opened here: Permission denied" in why
        # and as an unprivileged user, the real /dev/fuse (crw------- root here)
        monkeypatch.setattr(fuse, "DEV_FUSE", "/dev/fuse")
        assert _as_user(1000, lambda: fuse.supported(home / "unprivileged")) == \
            "/dev/fuse cannot be opened here: Permission denied"
    finally:
        mountapi.umount(nodev)


def _as_user(uid: int, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child with ``uid``/``gid`` ``uid`` and no supplementary groups;
    its result (repr-able) or its exception text comes back through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            out = repr(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out = repr(("error", f"{type(e).__name__}: {e}"))
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    import ast
    kind, value = ast.literal_eval(data.decode())
    assert kind == "ok", value
    return value


def test_supported_refuses_a_home_without_trusted_xattrs(home: Path) -> None:
    mnt = home / "ramfs"
    mnt.mkdir()
    mountapi.mount("ramfs", mnt, "ramfs")
    try:
        why = fuse.supported(mnt / "fuse")
        assert why is not None and "trusted" in why
        with pytest.raises(Unsupported, match="trusted"):
            FuseDriver(mnt / "fuse")
    finally:
        mountapi.umount(mnt)


# ---------------------------------------------------------------------------------------------
# the helper: one per mount, refcounted, reaped


def test_get_starts_one_helper_and_put_reaps_it(drv: FuseDriver) -> None:
    layer(drv, "a", None, [E("f", b"x")])
    drv.create_rw(CacheID("c"), CacheID("a"))
    root = drv.get(CacheID("c"))
    h = helper_of(drv, "c")
    assert Path(root, "f").read_bytes() == b"x"  # live when get returns
    m = [m for m in mountapi.mountinfo() if m.mount_point == root][0]
    assert m.fstype == "fuse.lamina" and m.source == "lamina:c"
    assert "allow_other" in m.super_options and "default_permissions" in m.super_options
    assert "nosuid" not in m.mount_options and "nodev" not in m.mount_options
    assert drv.get(CacheID("c")) == root
    assert helper_of(drv, "c").pid == h.pid  # one helper per mount, not per get
    assert _helpers_under(drv.home) == [h.pid]
    drv.put(CacheID("c"))
    assert h.alive() and mountapi.is_mount_point(root)
    drv.put(CacheID("c"))
    assert not h.alive() and not mountapi.is_mount_point(root)
    assert not (drv.layers / "c" / "fuse.pid").exists()
    assert _helpers_under(drv.home) == []


def test_the_mount_outlives_the_process_that_made_it(drv: FuseDriver) -> None:
    layer(drv, "a", None, [E("f", b"x")])
    code = ("import sys; from pathlib import Path; from drivers.fuse import FuseDriver; "
            "d = FuseDriver(Path(sys.argv[1])); print(d.get(sys.argv[2])); d.keep(sys.argv[2])")
    p = subprocess.run([sys.executable, "-c", code, str(drv.home), "a"], capture_output=True,
                       text=True, cwd=str(REPO), timeout=60)
    assert p.returncode == 0, p.stderr
    root = p.stdout.strip()
    assert Path(root, "f").read_bytes() == b"x"  # the CLI call is over, the kept rootfs is not
    assert drv.refs.count(CacheID("a")) == 1
    with pytest.raises(Conflict):
        drv.remove(CacheID("a"))
    drv.put(CacheID("a"))
    assert not mountapi.is_mount_point(root)


def test_read_only_layer_mount_is_read_only_and_a_rootfs(drv: FuseDriver) -> None:
    layer(drv, "a", None, [E("dev/", kind="dir"), E("dev/null", kind="char", major=1, minor=3, mode=0o666),
                           E("bin/", kind="dir"), E("bin/su", b"\x7fELF", mode=0o4755),
                           E("x", b"x"), E("gone", kind="whiteout")])
    root = drv.get(CacheID("a"))
    try:
        assert sorted(os.listdir(root)) == ["bin", "dev", "x"]
        with pytest.raises(OSError) as ei:
            Path(root, "y").write_bytes(b"y")
        assert ei.value.errno == errno.EROFS
        with open(f"{root}/dev/null", "wb") as f:  # device nodes work: mounted with dev
            f.write(b"discarded")
        assert os.stat(f"{root}/bin/su").st_mode & stat.S_ISUID
        m = [m for m in mountapi.mountinfo() if m.mount_point == root][0]
        assert "ro" in m.mount_options.split(",") and "nosuid" not in m.mount_options
    finally:
        drv.put(CacheID("a"))


def test_other_users_work_through_allow_other_and_default_permissions(drv: FuseDriver) -> None:
    layer(drv, "a", None, [E("etc/", kind="dir"), E("etc/passwd", b"root\n"),
                           E("etc/shadow", b"secret\n", mode=0o600), E("tmp/", kind="dir", mode=0o1777),
                           E("sg/", kind="dir", mode=0o2775, gid=42)])
    drv.create_rw(CacheID("c"), CacheID("a"))
    root = drv.get(CacheID("c"))
    # the test's temp dirs are root's alone (0700): reach the rootfs through an fd opened as root
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    top = f"/proc/self/fd/{fd}"
    try:
        def as_user() -> list[str]:
            os.umask(0o022)
            root = top
            out = [Path(root, "etc/passwd").read_text().strip()]
            for path, mode in ((f"{root}/etc/shadow", "r"), (f"{root}/etc/passwd", "a")):
                try:
                    open(path, mode).close()
                    out.append("opened")
                except PermissionError:
                    out.append("EACCES")
            Path(root, "tmp/mine").write_text("mine")
            os.mkdir(f"{root}/tmp/dir")
            st = os.stat(f"{root}/tmp/mine")
            out.append(f"{st.st_uid}:{st.st_gid}:{oct(st.st_mode & 0o777)}")
            return out

        assert _as_user(1000, as_user) == ["root", "EACCES", "EACCES", "1000:1000:0o644"]
        # a set-gid dir hands its group and the bit on (as root here)
        os.mkdir(f"{root}/sg/sub")
        Path(root, "sg/file").write_bytes(b"f")
        for name, isdir in (("sub", True), ("file", False)):
            st = os.stat(f"{root}/sg/{name}")
            assert st.st_gid == 42 and bool(st.st_mode & stat.S_ISGID) == isdir, name
    finally:
        os.close(fd)
        drv.put(CacheID("c"))
    st = os.stat(drv.layers / "c" / "diff" / "tmp" / "mine")
    assert (st.st_uid, st.st_gid) == (1000, 1000)


def _program_layer() -> list[E] | None:
    """A tiny root filesystem with the host's dash and the libraries it needs (via ldd)."""
    sh = "/bin/dash"
    if not os.path.exists(sh):
        return None
    p = subprocess.run(["ldd", sh], capture_output=True, text=True)
    libs = [w for line in p.stdout.splitlines() for w in line.split() if w.startswith("/")]
    entries: list[E] = []
    dirs: set[str] = set()
    for path in [sh, *libs]:
        real = os.path.realpath(path)
        for src, dst in ((real, real), (real, path)):
            parts = dst.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i]) + "/"
                if d not in dirs:
                    dirs.add(d)
                    entries.append(E(d, kind="dir"))
            if dst == real:
                entries.append(E(dst.lstrip("/"), Path(src).read_bytes(), mode=0o755))
            elif dst != real:
                entries.append(E(dst.lstrip("/"), kind="symlink", target=real))
    entries += [E("tmp/", kind="dir", mode=0o1777), E("dev/", kind="dir"),
                E("dev/null", kind="char", major=1, minor=3, mode=0o666)]
    return entries


def test_a_program_runs_in_the_rootfs(drv: FuseDriver) -> None:
    """exec and mmap of a binary and its libraries through the mount, chrooted as a container's
    root user would run; its writes land in the upper dir."""
    entries = _program_layer()
    if entries is None:
        pytest.skip("no /bin/dash on this host")
    layer(drv, "a", None, entries)
    drv.create_rw(CacheID("c"), CacheID("a"))
    root = drv.get(CacheID("c"))
    try:
        p = subprocess.run(["chroot", root, "/bin/dash", "-c",
                            "echo hello > /tmp/out; read line < /tmp/out; echo \"$line\"; echo $$ > /dev/null"],
                           capture_output=True, text=True, timeout=60)
        assert (p.returncode, p.stdout, p.stderr) == (0, "hello\n", "")
    finally:
        drv.put(CacheID("c"))
    assert (drv.layers / "c" / "diff" / "tmp" / "out").read_bytes() == b"hello\n"


# ---------------------------------------------------------------------------------------------
# crashes, hangs, bad starts


def test_crashed_helper_is_reported_and_get_recovers(drv: FuseDriver) -> None:
    layer(drv, "a", None, [E("f", b"x")])
    drv.create_rw(CacheID("c"), CacheID("a"))
    root = drv.get(CacheID("c"))
    Path(root, "before").write_bytes(b"written before the crash")
    h = helper_of(drv, "c")
    drv.check(CacheID("c"))  # healthy: no error
    os.kill(h.pid, signal.SIGKILL)
    assert fuse._wait_gone(h.pid, h.start, 10)
    with pytest.raises(OSError) as ei:
        os.stat(f"{root}/f")
    assert ei.value.errno == errno.ENOTCONN
    with pytest.raises(Corrupt, match="helper died.*ENOTCONN"):
        drv.check(CacheID("c"))
    assert drv.status()["dead_mounts"] == "1"
    assert drv.get(CacheID("c")) == root  # recovers: the dead mount replaced by a new helper
    assert helper_of(drv, "c").pid != h.pid
    assert Path(root, "before").read_bytes() == b"written before the crash"
    assert Path(root, "f").read_bytes() == b"x"
    drv.check(CacheID("c"))
    assert drv.refs.count(CacheID("c")) == 2
    drv.put(CacheID("c"))
    drv.put(CacheID("c"))
    assert not mountapi.is_mount_point(root)


def test_helper_killed_mid_write_fails_the_writer_without_hanging(drv: FuseDriver) -> None:
    layer(drv, "a", None, [E("f", b"x")])
    drv.create_rw(CacheID("c"), CacheID("a"))
    root = drv.get(CacheID("c"))
    code = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
print("writing", flush=True)
try:
    while True:
        os.write(fd, b"x" * 65536)
except OSError as e:
    print(e.errno, flush=True)
"""
    w = subprocess.Popen([sys.executable, "-c", code, f"{root}/stream"], stdout=subprocess.PIPE, text=True)
    try:
        assert w.stdout is not None and w.stdout.readline().strip() == "writing"
        time.sleep(0.2)
        h = helper_of(drv, "c")
        os.kill(h.pid, signal.SIGKILL)
        out, _ = w.communicate(timeout=30)
        assert int(out.strip()) in (errno.ENOTCONN, errno.ECONNABORTED)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    with pytest.raises(Corrupt):
        drv.check(CacheID("c"))
    drv.put(CacheID("c"))  # the last put takes the dead mount down
    assert not mountapi.is_mount_point(root)
    assert (drv.layers / "c" / "diff" / "stream").stat().st_size > 0  # written before the kill


def test_put_of_a_stopped_helper_does_not_hang(drv: FuseDriver) -> None:
    drv.stop_timeout = 1.0
    layer(drv, "a", None, [E("f", b"x")])
    root = drv.get(CacheID("a"))
    h = helper_of(drv, "a")
    os.kill(h.pid, signal.SIGSTOP)
    t = time.monotonic()
    drv.put(CacheID("a"))
    assert time.monotonic() - t < 10
    assert not h.alive() and not mountapi.is_mount_point(root)


def test_failed_helper_start_says_why_and_leaves_nothing(drv: FuseDriver,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    layer(drv, "a", None, [E("f", b"x")])
    drv.create_rw(CacheID("c"), CacheID("a"))
    monkeypatch.setattr(FuseDriver, "_options", staticmethod(lambda: ["no_such_option"]))
    with pytest.raises(Unsupported, match="fuse mount of layer c failed: RuntimeError"):
        drv.get(CacheID("c"))
    assert drv.refs.count(CacheID("c")) == 0
    assert "no_such_option" in (drv.layers / "c" / "fuse.log").read_text()  # libfuse's words
    assert not _fuse_mounts_under(drv.home) and not _helpers_under(drv.home)


def test_damaged_layer_dirs_are_corrupt(drv: FuseDriver) -> None:
    layer(drv, "a", None, [E("f", b"x")])
    drv.create_rw(CacheID("c"), CacheID("a"))
    (drv.layers / "c" / "merged").rmdir()
    (drv.layers / "c" / "merged").write_bytes(b"not a dir")
    with pytest.raises(Corrupt, match="layer c: its mount point .* is not a directory"):
        drv.get(CacheID("c"))
    assert drv.refs.count(CacheID("c")) == 0 and not _helpers_under(drv.home)


def test_missing_lower_dir_is_corrupt(drv: FuseDriver) -> None:
    layer(drv, "a", None, [E("f", b"x")])
    drv.create_rw(CacheID("c"), CacheID("a"))
    subprocess.run(["rm", "-rf", str(drv.layers / "a" / "diff")], check=True)
    with pytest.raises(Corrupt, match="layer c"):
        drv.get(CacheID("c"))
    assert drv.refs.count(CacheID("c")) == 0 and not _fuse_mounts_under(drv.home)


def test_ready_timeout_leaves_nothing_behind(drv: FuseDriver) -> None:
    layer(drv, "a", None, [E("f", b"x")])
    drv.ready_timeout = 0.001  # far less than a Python start (the helper can be up in 50 ms)
    with pytest.raises(Unsupported, match="layer a"):
        drv.get(CacheID("a"))
    assert drv.refs.count(CacheID("a")) == 0
    deadline = time.monotonic() + 20
    while (_helpers_under(drv.home) or _fuse_mounts_under(drv.home)) and time.monotonic() < deadline:
        time.sleep(0.05)  # a helper that was still starting gives up on its own (EPIPE)
    assert not _helpers_under(drv.home) and not _fuse_mounts_under(drv.home)
    drv.ready_timeout = fuse.READY_TIMEOUT
    root = drv.get(CacheID("a"))
    assert Path(root, "f").read_bytes() == b"x"
    drv.put(CacheID("a"))


def test_open_sweeps_a_mount_without_count_and_a_count_without_mount(drv: FuseDriver) -> None:
    layer(drv, "a", None, [E("f", b"x")])
    layer(drv, "b", None, [E("g", b"y")])
    root_a = drv.get(CacheID("a"))
    root_b = drv.get(CacheID("b"))
    drv.refs.set(CacheID("a"), 0)       # a crash between mount and count
    ha = helper_of(drv, "a")
    mountapi.umount(root_b)                # an admin's umount behind our back
    d2 = FuseDriver(drv.home)
    assert not mountapi.is_mount_point(root_a) and not ha.alive()
    assert d2.refs.count(CacheID("b")) == 0
    assert Path(d2.get(CacheID("b")), "g").read_bytes() == b"y"
    d2.put(CacheID("b"))


# ---------------------------------------------------------------------------------------------
# the merged view


def _base(d: Any) -> CacheID:
    layer(d, "l0", None, [
        E("etc/", kind="dir"), E("etc/keep", b"keep\n"), E("etc/gone", b"gone\n"),
        E("etc/perm", b"perm\n", mode=0o640, gid=7, xattrs={"user.a": "1", "trusted.t": "t"}),
        E("opt/", kind="dir"), E("opt/old/", kind="dir"), E("opt/old/1", b"1"), E("opt/a", b"a"),
        E("var/", kind="dir"), E("var/log", b"log"),
        E("d/", kind="dir"), E("d/sub/", kind="dir"), E("d/sub/x", b"x"),
        E("empty/", kind="dir"), E("lowerdir/", kind="dir"), E("lowerdir/f", b"f"),
        E("h/", kind="dir"), E("h/a", b"linked"), E("h/b", kind="link", target="h/a"),
        E("sym", kind="symlink", target="etc/keep"),
        E("sg/", kind="dir", mode=0o2775, gid=42),
        E("big", bytes(range(256)) * 4096), E("plain", b"plain"), E("e2/", kind="dir"),
    ])
    layer(d, "l1", "l0", [
        E("etc/", kind="dir"), E("etc/gone", kind="whiteout"), E("etc/new", b"new in l1\n"),
        E("opt/", kind="dir"), E("opt/", kind="opaque"), E("opt/b", b"b"),
        E("var", kind="whiteout"),
        E("d/", kind="dir"), E("d/sub/", kind="dir"), E("d/sub/y", b"y"),
        E("merged/", kind="dir"), E("merged/m", b"m"),
    ])
    d.create_rw(CacheID("c"), CacheID("l1"))
    return CacheID("c")


def _errno(fn: Callable[[], Any]) -> str:
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))


def _scenario(root: str) -> list[tuple[str, str]]:
    """Operations a container does, with the outcome of each (ok or the errno's name)."""
    r = root
    P = lambda *a: os.path.join(r, *a)  # noqa: E731
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("listdir root", lambda: sorted(os.listdir(r))),
        ("write lower file", lambda: Path(P("etc/keep")).write_bytes(b"changed\n")),
        ("append lower file", lambda: open(P("etc/new"), "ab").write(b"more\n")),
        ("truncate lower big file", lambda: os.truncate(P("big"), 1000)),
        ("chmod lower", lambda: os.chmod(P("etc/perm"), 0o600)),
        ("chown lower", lambda: os.chown(P("lowerdir/f"), 5, 6)),
        ("utime lower", lambda: os.utime(P("opt/b"), (1_600_000_000, 1_600_000_000))),
        ("setxattr lower", lambda: os.setxattr(P("etc/perm"), "user.b", b"2")),
        ("removexattr lower", lambda: os.removexattr(P("etc/perm"), "user.a")),
        ("removexattr missing", lambda: os.removexattr(P("etc/keep"), "user.none")),
        ("setxattr private", lambda: os.setxattr(P("etc/keep"), "trusted.overlay.opaque", b"y")),
        ("setxattr dir", lambda: os.setxattr(P("d"), "user.dir", b"1")),
        ("unlink lower", lambda: os.unlink(P("etc/perm"))),
        ("unlink missing", lambda: os.unlink(P("etc/gone"))),
        ("unlink dir", lambda: os.unlink(P("d"))),
        ("rmdir not empty", lambda: os.rmdir(P("d"))),
        ("rmdir file", lambda: os.rmdir(P("sym"))),
        ("rmdir lower empty", lambda: os.rmdir(P("empty"))),
        ("mkdir over whiteout", lambda: os.mkdir(P("empty"))),
        ("file in remade dir", lambda: Path(P("empty/inside")).write_bytes(b"i")),
        ("mkdir exists", lambda: os.mkdir(P("etc"))),
        ("create over whiteout", lambda: Path(P("etc/perm")).write_bytes(b"recreated\n")),
        ("rm -r merged subdir", lambda: (os.unlink(P("d/sub/x")), os.unlink(P("d/sub/y")),
                                         os.rmdir(P("d/sub")))),
        ("rename lower file", lambda: os.rename(P("opt/b"), P("opt/b2"))),
        ("rename over lower file", lambda: os.rename(P("opt/b2"), P("etc/new"))),
        ("rename lower dir", lambda: os.rename(P("lowerdir"), P("lowerdir2"))),
        ("rename merged dir", lambda: os.rename(P("d"), P("d2"))),
        ("mkdir upper dir", lambda: os.makedirs(P("up/deep/er"))),
        ("file in upper dir", lambda: Path(P("up/deep/er/f")).write_bytes(b"deep")),
        ("rename upper dir", lambda: os.rename(P("up/deep"), P("up/moved"))),
        ("rename upper dir to a new name", lambda: os.rename(P("up"), P("newtop"))),
        ("rename dir onto file", lambda: os.rename(P("newtop"), P("sym"))),
        ("rename file onto dir", lambda: os.rename(P("sym"), P("etc"))),
        ("rename dir where a lower whiteout is", lambda: os.rename(P("newtop"), P("var"))),
        ("rename upper dir over empty lower dir", lambda: os.rename(P("var"), P("e2"))),
        ("list moved dir", lambda: sorted(os.listdir(P("e2")))),
        ("hardlink copied-up", lambda: os.link(P("etc/keep"), P("etc/keep-link"))),
        ("hardlink lower", lambda: os.link(P("plain"), P("etc/plain-link"))),
        ("write one name of lower hardlink", lambda: Path(P("h/a")).write_bytes(b"broken link")),
        ("hardlink upper", lambda: (Path(P("etc/u1")).write_bytes(b"u"), os.link(P("etc/u1"), P("etc/u2")))),
        ("unlink one hardlink name", lambda: os.unlink(P("etc/u1"))),
        ("symlink", lambda: os.symlink("../etc/keep", P("etc/lnk"))),
        ("readlink lower", lambda: os.readlink(P("sym"))),
        ("mkfifo", lambda: os.mkfifo(P("etc/fifo"))),
        ("mknod whiteout", lambda: os.mknod(P("etc/wh"), stat.S_IFCHR | 0o600, 0)),
        ("mkdir in setgid dir", lambda: os.mkdir(P("sg/sub"))),
        ("file in setgid dir", lambda: Path(P("sg/f")).write_bytes(b"g")),
        ("rmdir merged dir with upper", lambda: (os.unlink(P("merged/m")), os.rmdir(P("merged")))),
        ("statfs", lambda: os.statvfs(r)),
        ("fsync", lambda: _fsync(P("etc/keep"))),
        ("final listdir", lambda: sorted(os.listdir(r))),
    ]
    out = []
    for name, fn in steps:
        if name.startswith(("listdir", "final", "list ")):
            out.append((name, _errno(lambda: out.append((name + " names", ",".join(fn()))))))
        elif name == "readlink lower":
            out.append((name, _errno(fn) + ":" + os.readlink(P("sym"))))
        else:
            out.append((name, _errno(fn)))
    return out


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.write(fd, b"!")
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def test_same_as_kernel_overlay(home: Path) -> None:
    """The same operations on the kernel's overlayfs and on the fuse driver, over the same layers:
    same outcomes, same merged tree (modes, owners, content, xattrs, which names share an inode),
    same upper dir (whiteouts, opaque dirs, copied-up files) and the same changes."""
    if "overlay" not in mountapi.filesystems():
        pytest.skip("no overlayfs to compare with")
    from drivers.overlay import OverlayDriver

    results = {}
    for name, d in (("overlay", OverlayDriver(home / "overlay")),
                    ("fuse", FuseDriver(home / "fuse"))):
        try:
            cid = _base(d)
            root = d.get(cid)
            try:
                steps = _scenario(root)
                snap = tree_snapshot(root)
            finally:
                d.put(cid)
            results[name] = (steps, snap, upper_picture(d._layer(cid).diff),
                             d.changes(cid, CacheID("l1")))
        finally:
            d.cleanup()
    o, f = results["overlay"], results["fuse"]
    assert f[0] == o[0]
    assert dict(f[0])["rename lower dir"] == "EXDEV" and dict(f[0])["mknod whiteout"] == "EPERM"
    diffs = [f"{p}: overlay {o[1].get(p)} fuse {f[1].get(p)}" for p in sorted(set(o[1]) | set(f[1]))
             if o[1].get(p) != f[1].get(p)]
    assert not diffs, "merged trees differ:\n" + "\n".join(diffs)
    diffs = [f"{p}: overlay {o[2].get(p)} fuse {f[2].get(p)}" for p in sorted(set(o[2]) | set(f[2]))
             if o[2].get(p) != f[2].get(p)]
    assert not diffs, "upper dirs differ:\n" + "\n".join(diffs)
    assert f[3] == o[3]


@contextlib.contextmanager
def _helper_mount(mnt: Path, lowers: list[Path], *extra: str) -> Iterator[Path]:
    """``python -m drivers.fuse.helper`` run by hand, as its usage says; unmounted on exit and
    its end awaited (bounded)."""
    mnt.mkdir()
    r, w = os.pipe()
    argv = [sys.executable, "-m", "drivers.fuse.helper", "--mountpoint", str(mnt),
            "--ready-fd", str(w), "--pid-file", str(mnt.parent / "helper.pid"), *extra]
    for low in lowers:
        argv += ["--lower", str(low)]
    subprocess.run(argv, pass_fds=(w,), cwd=str(REPO), check=True, timeout=60)
    os.close(w)
    with os.fdopen(r) as f:
        words = [f.readline().split()[0], f.readline().strip()]
    pid, start = (int(x) for x in (mnt.parent / "helper.pid").read_text().split())
    try:
        assert words == ["pid", "ready"]
        yield mnt
    finally:
        mountapi.umount(mnt, mountapi.MNT_DETACH)
        assert fuse._wait_gone(pid, start, 10)


def test_oci_whiteout_files_in_raw_lower_dirs(home: Path) -> None:
    """Lowers extracted as the tar says (``.wh.`` files, not overlay devices), as lazy pulling
    will keep them: with ``--oci-whiteouts`` the markers hide what is below and never show."""
    low, top = home / "low", home / "top"
    for p, data in ((low / "etc/gone", b"g"), (low / "etc/keep", b"k"), (low / "opt/old", b"o"),
                    (low / "var/log/x", b"x"), (top / "etc/.wh.gone", b""), (top / "etc/new", b"n"),
                    (top / "opt/.wh..wh..opq", b""), (top / "opt/mine", b"m"), (top / ".wh.var", b""),
                    (top / "etc/.wh.new", b"")):  # a marker for a name of its own layer hides
        p.parent.mkdir(parents=True, exist_ok=True)     # only what is below: new stays
        p.write_bytes(data)
    with _helper_mount(home / "mnt", [top, low], "--oci-whiteouts") as m:
        assert sorted(os.listdir(m)) == ["etc", "opt"]
        assert sorted(os.listdir(m / "etc")) == ["keep", "new"]
        assert sorted(os.listdir(m / "opt")) == ["mine"]
        assert not os.path.lexists(m / "etc/gone") and not os.path.lexists(m / "var")
        assert not os.path.lexists(m / "etc/.wh.gone") and (m / "etc/new").read_bytes() == b"n"
        with pytest.raises(OSError) as ei:
            (m / "x").write_bytes(b"x")
        assert ei.value.errno == errno.EROFS  # no upper: read-only
    with _helper_mount(home / "mnt2", [top, low]) as m:  # without the flag they are plain files
        assert ".wh.gone" in os.listdir(m / "etc") and (m / "etc/gone").exists()


def test_inode_numbers_are_stable_and_shared_as_overlay_shares_them(drv: FuseDriver) -> None:
    layer(drv, "a", None, [E("d/", kind="dir"), E("d/f", b"f"), E("h/", kind="dir"),
                           E("h/a", b"link"), E("h/b", kind="link", target="h/a"), E("h/c", b"c")])
    drv.create_rw(CacheID("c"), CacheID("a"))
    lower = drv.layers / "a" / "diff"
    root = drv.get(CacheID("c"))
    try:
        ino = {p: os.lstat(f"{root}/{p}").st_ino for p in ("d", "d/f", "h/a", "h/b", "h/c")}
        assert ino["h/a"] == ino["h/b"] == os.lstat(lower / "h/a").st_ino  # the real numbers
        assert ino["d/f"] == os.lstat(lower / "d/f").st_ino
        assert os.lstat(f"{root}/h/a").st_nlink == 2
        Path(root, "d/f").write_bytes(b"copied up")       # copy-up keeps the number
        Path(root, "h/c").write_bytes(b"copied up")
        Path(root, "h/a").write_bytes(b"copied up")        # ...but breaks a hard link
        Path(root, "d/g").write_bytes(b"new")
        ino["d/g"] = os.lstat(f"{root}/d/g").st_ino
        Path("/proc/sys/vm/drop_caches").write_text("2")  # the kernel forgets; we must not
        after = {p: os.lstat(f"{root}/{p}").st_ino for p in ("d", "d/f", "h/b", "h/c", "d/g")}
        assert after == {p: ino[p] for p in after}
        assert os.lstat(f"{root}/h/a").st_ino != ino["h/b"]
        assert os.lstat(f"{root}/h/b").st_nlink == 2  # the lower file still has both names
        assert Path(root, "h/b").read_bytes() == b"link"
        # readdir's d_ino agree with stat
        with os.scandir(f"{root}/h") as it:
            assert {e.name: e.inode() for e in it} == {n: os.lstat(f"{root}/h/{n}").st_ino
                                                       for n in ("a", "b", "c")}
    finally:
        drv.put(CacheID("c"))


def test_open_files_survive_unlink_and_see_copy_up(drv: FuseDriver) -> None:
    layer(drv, "a", None, [E("lower", b"lower data"), E("shared", b"old")])
    drv.create_rw(CacheID("c"), CacheID("a"))
    root = drv.get(CacheID("c"))
    try:
        Path(root, "upper").write_bytes(b"upper data")
        fds = [os.open(f"{root}/{n}", os.O_RDONLY) for n in ("lower", "upper")]
        reader = os.open(f"{root}/shared", os.O_RDONLY)
        try:
            os.unlink(f"{root}/lower")
            os.unlink(f"{root}/upper")
            assert [os.pread(fd, 100, 0) for fd in fds] == [b"lower data", b"upper data"]
            assert [os.fstat(fd).st_size for fd in fds] == [10, 10]
            again = os.open(f"/proc/self/fd/{fds[1]}", os.O_RDONLY)  # reopened after unlink
            try:
                assert os.pread(again, 100, 0) == b"upper data"
            finally:
                os.close(again)
            with open(f"{root}/shared", "r+b") as w:  # copy-up while a reader has it open
                w.write(b"NEW")
            assert os.pread(reader, 100, 0) == b"NEW"
            Path("/proc/sys/vm/drop_caches").write_text("3")  # not from the page cache
            assert os.pread(reader, 100, 0) == b"NEW"
        finally:
            for fd in [*fds, reader]:
                os.close(fd)
        assert sorted(os.listdir(root)) == ["shared"]
    finally:
        drv.put(CacheID("c"))
    assert stat.S_ISCHR(os.lstat(drv.layers / "c" / "diff" / "lower").st_mode)
    assert not os.path.lexists(drv.layers / "c" / "diff" / "upper")


def test_copy_up_of_a_large_file_and_sync(drv: FuseDriver) -> None:
    size = 64 << 20
    block = hashlib.sha256(b"seed").digest() * 32
    data = block * (size // len(block))
    layer(drv, "a", None, [E("big", data)])
    drv.create_rw(CacheID("c"), CacheID("a"))
    root = drv.get(CacheID("c"))
    try:
        with open(f"{root}/big", "r+b") as f:
            f.seek(size // 2)
            f.write(b"\x00")
            f.flush()
            os.fsync(f.fileno())
        want = bytearray(data)
        want[size // 2] = 0
        assert hashlib.sha256(Path(root, "big").read_bytes()).digest() == hashlib.sha256(want).digest()
    finally:
        drv.put(CacheID("c"))
    assert (drv.layers / "a" / "diff" / "big").read_bytes() == data
    assert drv.changes(CacheID("c"), CacheID("a")) == [Change("/big", M)]


def test_deep_stack_lookups_and_listings(drv: FuseDriver) -> None:
    parent = None
    for i in range(40):
        entries = [E("v", b"%d" % i), E(f"only{i}", b"x"), E("dir/", kind="dir"), E(f"dir/{i}", b"d")]
        if i % 10 == 9:
            entries.append(E(f"only{i - 1}", kind="whiteout"))
        if i == 20:
            entries.append(E("dir/", kind="opaque"))
        parent = layer(drv, f"s{i:02d}", parent, entries)
    root = drv.get(CacheID("s39"))
    try:
        assert Path(root, "v").read_bytes() == b"39"
        names = os.listdir(root)
        assert len(names) == len(set(names))  # no duplicates
        assert sorted(n for n in names if n.startswith("only")) == sorted(
            f"only{i}" for i in range(40) if i % 10 != 8)
        assert sorted(os.listdir(f"{root}/dir"), key=int) == [str(i) for i in range(20, 40)]
    finally:
        drv.put(CacheID("s39"))


# ---------------------------------------------------------------------------------------------
# end to end: an image through the store


def test_image_load_create_mount_gives_the_exact_rootfs(home: Path) -> None:
    """A docker-save archive loaded into a store on the fuse driver; a container's mounted
    rootfs is exactly what the image says (the same tree, metadata and all, as on vfs), writes
    stay in the container, and a commit of them mounts again."""
    from graph import Store, load_archive
    from tests.graph.test_archive import APP, BASE, EXPECTED, NAME, legacy_docker_tar, rootfs

    archive = legacy_docker_tar(home / "image.tar", [([BASE, APP], [NAME])])
    trees = {}
    for driver in ("vfs", "fuse"):
        store = Store(home / f"root-{driver}", driver=driver)
        try:
            load_archive(store, archive)
            tree, linked = rootfs(store, NAME)
            assert tree == EXPECTED and linked, driver
            c = store.create_container(NAME, name="e2e")
            root = store.containers.mount(c)
            trees[driver] = tree_snapshot(root, mtimes=True)
            if driver == "fuse":
                assert mountapi.mounts_under(root)[0].fstype == "fuse.lamina"
                Path(root, "srv/app.txt").write_bytes(b"changed by the container\n")
                os.unlink(f"{root}/etc/secret")
                store.containers.unmount(c)
                assert {str(x) for x in store.containers.changes(c)} == {
                    "C /etc", "D /etc/secret", "C /srv", "C /srv/app.txt"}
                store.commit("e2e", "derived:1")
                c2 = store.create_container("derived:1", name="check")
                root2 = Path(store.containers.mount(c2))
                assert (root2 / "srv/app.txt").read_bytes() == b"changed by the container\n"
                assert not (root2 / "etc/secret").exists()
                store.containers.unmount(c2)
                assert store.check() == []
            else:
                store.containers.unmount(c)
        finally:
            store.driver.cleanup()
            store.close()
    assert trees["fuse"] == trees["vfs"]
