"""Tests of ``drivers/tar/apply.py``: complete (every entry type and format), Docker-like (replace,
merge, whiteouts in both layouts) and safe against hostile tars (tests named after attacks).

Every test runs on both parsers (libarchive and the ``tarfile`` twin). The ``env`` fixture puts a
sentinel directory next to ``root`` and fails the test if anything outside ``root`` changed,
so each attack test checks "nothing escaped" on top of its own assertions.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import Bug, DigestMismatch, InvalidInput, NotFound
from drivers.tar import libarchive
from drivers.tar.apply import TarApplier, TarApplierPy, Whiteouts, _rmtree
from tests.drivers.hostile_tars import (MTIME, LayerTar, end_of_archive, fix_checksums, pad,
                                        pax_header, tree_state, ustar_header)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="applying layers needs root (chown, "
                                                            "mknod, trusted xattrs)")

REMOVE, OVERLAY = Whiteouts.REMOVE, Whiteouts.OVERLAY
APPLIERS = [pytest.param(TarApplier, id="libarchive",
                         marks=pytest.mark.skipif(libarchive.load() is None,
                                                  reason="libarchive not loadable")),
            pytest.param(TarApplierPy, id="tarfile")]


@dataclass
class Env:
    """A layer root with a sentinel dir next to it (``outside``), and how to apply into it."""

    base: Path
    root: Path
    outside: Path
    applier: type[TarApplier]

    def apply(self, data: bytes, whiteouts: Whiteouts = REMOVE, lowers: list[str] | None = None) -> int:
        return self.applier(str(self.root), whiteouts, lowers).apply(io.BytesIO(data))

    def refused(self, data: bytes, whiteouts: Whiteouts = REMOVE, match: str = "") -> str:
        with pytest.raises(InvalidInput, match=match) as e:
            self.apply(data, whiteouts)
        msg = str(e.value)
        assert "\n" not in msg
        return msg

    def outside_state(self) -> object:
        return outside_state(self.base)

    def r(self, rel: str) -> Path:
        return self.root / rel


@pytest.fixture(params=APPLIERS)
def applier(request: pytest.FixtureRequest) -> type[TarApplier]:
    return request.param


@pytest.fixture
def env(tmp_path: Path, applier: type[TarApplier]) -> Iterator[Env]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(b"secret")
    (outside / "sub" / "deep").write_bytes(b"deep")
    e = Env(tmp_path, root, outside, applier)
    before = e.outside_state()
    yield e
    assert e.outside_state() == before, "something outside root changed"


def outside_state(base: Path | str) -> object:
    """Everything next to ``root`` (the sentinel tree in full) and ``base`` itself: a new name,
    a changed byte, mode, owner, time or xattr there fails the comparison."""
    return (sorted(os.listdir(base)), os.lstat(base).st_mtime_ns,
            tree_state(os.path.join(base, "outside")))


def lst(p: Path) -> os.stat_result:
    return os.lstat(p)


# ======================================================================== completeness
def test_files_dirs_symlinks_hardlinks_fifos(env: Env) -> None:
    t = (LayerTar().dir("etc", mode=0o755, uid=1, gid=2)
         .file("etc/passwd", b"root:x:0:0\n", mode=0o644, uid=3, gid=4)
         .symlink("etc/link", "passwd", uid=5, gid=6)
         .hardlink("etc/hard", "etc/passwd")
         .fifo("run.fifo", mode=0o620, uid=7, gid=8))
    size = env.apply(t.bytes())
    assert size == len(b"root:x:0:0\n")
    st = lst(env.r("etc/passwd"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, 3, 4)
    assert env.r("etc/passwd").read_bytes() == b"root:x:0:0\n"
    assert os.readlink(env.r("etc/link")) == "passwd"
    assert (lst(env.r("etc/link")).st_uid, lst(env.r("etc/link")).st_gid) == (5, 6)
    assert lst(env.r("etc/hard")).st_ino == st.st_ino and st.st_nlink == 2
    fifo = lst(env.r("run.fifo"))
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o620
    assert (fifo.st_uid, fifo.st_gid) == (7, 8)
    d = lst(env.r("etc"))
    assert (d.st_uid, d.st_gid, d.st_mtime_ns) == (1, 2, MTIME * 10**9)


def test_numeric_ids_win_over_names(env: Env) -> None:
    env.apply(LayerTar().file("f", uid=4321, gid=8765, uname="root", gname="root").bytes())
    assert (lst(env.r("f")).st_uid, lst(env.r("f")).st_gid) == (4321, 8765)


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o6711, 0o1777, 0o4000, 0o0])
def test_setuid_setgid_sticky_survive_chown(env: Env, mode: int) -> None:
    env.apply(LayerTar().file("f", b"x", mode=mode, uid=1000, gid=1000)
              .dir("d", mode=mode | 0o700, uid=1000, gid=1000).bytes())
    assert stat.S_IMODE(lst(env.r("f")).st_mode) == mode
    assert stat.S_IMODE(lst(env.r("d")).st_mode) == mode | 0o700


def test_device_nodes(env: Env) -> None:
    env.apply(LayerTar().chardev("dev/null", 1, 3, mode=0o666)
              .blockdev("dev/loop9", 7, 9, mode=0o660, gid=6).chardev("dev/mem", 1, 1).bytes())
    st = lst(env.r("dev/null"))
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666
    bl = lst(env.r("dev/loop9"))
    assert stat.S_ISBLK(bl.st_mode) and bl.st_rdev == os.makedev(7, 9) and bl.st_gid == 6
    assert stat.S_ISCHR(lst(env.r("dev/mem")).st_mode)


def test_xattrs_from_pax(env: Env) -> None:
    cap = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service
    t = (LayerTar().file("bin/ping", b"elf", mode=0o755,
                         xattrs={"security.capability": cap, "user.k": b"v\xff\x00z"})
         .dir("d", xattrs={"user.dir": b"1"})
         .symlink("l", "bin/ping", xattrs={"trusted.sym": b"s"})
         .file("o", xattrs={"trusted.overlay.opaque": b"y", "trusted.overlay.redirect": b"/x"}))
    env.apply(t.bytes())
    assert os.getxattr(env.r("bin/ping"), "security.capability") == cap
    assert os.getxattr(env.r("bin/ping"), "user.k") == b"v\xff\x00z"
    assert os.getxattr(env.r("d"), "user.dir") == b"1"
    assert os.getxattr(env.r("l"), "trusted.sym", follow_symlinks=False) == b"s"
    assert [k for k in os.listxattr(env.r("o")) if k.startswith("trusted.overlay.")] == []


def test_libarchive_style_xattr_records(env: Env) -> None:
    data = b"data"
    tar = (pax_header({b"LIBARCHIVE.xattr.user.a%20b": b"aGVsbG8"})  # base64 "hello", unpadded
           + ustar_header(b"f", size=len(data)) + pad(data) + end_of_archive())
    env.apply(tar)
    assert os.getxattr(env.r("f"), "user.a b") == b"hello"


def test_xattr_outside_known_namespaces_refused(env: Env) -> None:
    env.refused(LayerTar().file("f", xattrs={"system.evil": b"1"}).bytes(), match="xattr")


def test_mtimes_in_ns_and_dirs_set_last(env: Env) -> None:
    t = (LayerTar().dir("d", pax={"mtime": "1600000000.123456789"})
         .file("d/f", b"x", pax={"mtime": "1500000000.000000001", "atime": "1500000001.5"})
         .dir("d/sub", mtime=1400000000).file("d/sub/g", b"y"))
    env.apply(t.bytes())
    assert lst(env.r("d")).st_mtime_ns == 1600000000_123456789
    st = lst(env.r("d/f"))
    assert st.st_mtime_ns == 1500000000_000000001 and st.st_atime_ns == 1500000001_500000000
    assert lst(env.r("d/sub")).st_mtime_ns == 1400000000 * 10**9


def test_dir_entry_after_its_children(env: Env) -> None:
    env.apply(LayerTar().file("a/b/c", b"c").dir("a/b", mode=0o700, uid=9, mtime=100)
              .dir("a", mode=0o750, uid=8, mtime=200).bytes())
    ab, a = lst(env.r("a/b")), lst(env.r("a"))
    assert (stat.S_IMODE(ab.st_mode), ab.st_uid, ab.st_mtime_ns) == (0o700, 9, 100 * 10**9)
    assert (stat.S_IMODE(a.st_mode), a.st_uid, a.st_mtime_ns) == (0o750, 8, 200 * 10**9)


def test_implicit_parents_are_0755_whatever_the_umask(env: Env) -> None:
    old = os.umask(0o077)
    try:
        env.apply(LayerTar().file("x/y/z", b"z", mode=0o664).bytes())
    finally:
        os.umask(old)
    assert stat.S_IMODE(lst(env.r("x/y")).st_mode) == 0o755
    assert stat.S_IMODE(lst(env.r("x/y/z")).st_mode) == 0o664


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_long_names_and_link_targets(env: Env, fmt: int) -> None:
    long_dir = "/".join(["d" * 60] * 4)
    long_target = "t" * 180
    env.apply(LayerTar(format=fmt).file(f"{long_dir}/{'f' * 120}", b"long")
              .symlink(f"{long_dir}/sym", long_target)
              .hardlink(f"{long_dir}/hard", f"{long_dir}/{'f' * 120}").bytes())
    assert env.r(f"{long_dir}/{'f' * 120}").read_bytes() == b"long"
    assert os.readlink(env.r(f"{long_dir}/sym")) == long_target
    assert lst(env.r(f"{long_dir}/hard")).st_nlink == 2


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_non_utf8_and_non_ascii_names(env: Env, fmt: int) -> None:
    names = [b"caf\xe9", "häß€".encode(), b"\xff\xfe/\x80x"]
    t = LayerTar(format=fmt)
    for n in names:
        t.file(n, n)
    env.apply(t.bytes())
    for n in names:
        with open(os.path.join(os.fsencode(env.root), n), "rb") as f:
            assert f.read() == n


def test_pax_path_not_utf8_without_hdrcharset(env: Env) -> None:
    """Go's archive/tar writes non-UTF-8 long names as raw PAX path records."""
    name = b"dir/" + b"\xe9" * 120
    tar = pax_header({b"path": name}) + ustar_header(b"x", size=2) + pad(b"ok") + end_of_archive()
    env.apply(tar)
    assert open(os.path.join(os.fsencode(env.root), name), "rb").read() == b"ok"


SPARSE_FORMATS = [["--format=gnu"]] + [["--format=pax", f"--sparse-version={v}"]
                                        for v in ("0.0", "0.1", "1.0")]


@pytest.mark.parametrize("fmt", SPARSE_FORMATS, ids=["gnu", "pax0.0", "pax0.1", "pax1.0"])
def test_sparse_files(env: Env, tmp_path_factory: pytest.TempPathFactory, fmt: list[str]) -> None:
    src = tmp_path_factory.mktemp("sparse-src")
    size = 8 << 20
    with open(src / "sp", "wb") as f:  # data, hole, data, hole at the end
        f.write(b"A" * 5000)
        f.seek(3 << 20)
        f.write(b"B" * 70000)
        f.truncate(size)
    with open(src / "dense", "wb") as f:
        f.write(os.urandom(10000))
    tar = subprocess.run(["tar", "-c", "--sparse", *fmt, "-f", "-", "-C", str(src), "sp", "dense"],
                         check=True, capture_output=True).stdout
    expected = (src / "sp").read_bytes()
    assert env.apply(tar) == size + 10000
    got = env.r("sp")
    assert got.stat().st_size == size
    assert got.read_bytes() == expected
    assert env.r("dense").read_bytes() == (src / "dense").read_bytes()
    assert got.stat().st_blocks * 512 < 1 << 20, "holes were written out as zeros"


def test_returns_regular_file_bytes(env: Env) -> None:
    t = (LayerTar().file("a", b"12345").file("b", b"").dir("d").symlink("s", "a")
         .hardlink("h", "a").file("d/c", b"x" * 70000))
    assert env.apply(t.bytes()) == 5 + 70000


class CountingStream(io.RawIOBase):
    """Counts what was read, like the caller's hashing wrapper."""

    def __init__(self, data: bytes, readinto: bool = True) -> None:
        self._f = io.BytesIO(data)
        self.seen = 0
        if not readinto:
            self.readinto = None  # type: ignore[assignment]

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = self._f.readinto(b)
        self.seen += n
        return n

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.seen += len(data)
        return data


@pytest.mark.parametrize("readinto", [True, False], ids=["readinto", "read-only"])
@pytest.mark.parametrize("tail", [b"", b"\0" * 9216, b"\0" * 3000 + b"junk after the end"],
                         ids=["none", "padding", "junk"])
def test_reads_stream_to_the_end(env: Env, readinto: bool, tail: bytes) -> None:
    data = LayerTar().file("a", b"x" * 3000).bytes() + tail
    s = CountingStream(data, readinto)
    env.applier(str(env.root), REMOVE).apply(s)  # type: ignore[arg-type]
    assert s.seen == len(data)
    assert env.r("a").read_bytes() == b"x" * 3000


def test_stream_errors_propagate_unchanged(env: Env) -> None:
    class Verifying(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._f = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            n = self._f.readinto(b)
            if n == 0:
                raise DigestMismatch("layer sha256:abc: digest mismatch")
            return n

    with pytest.raises(DigestMismatch):
        env.applier(str(env.root), REMOVE).apply(Verifying(LayerTar().file("a").bytes()))


@pytest.mark.parametrize("data", [b"", end_of_archive(), end_of_archive() * 10],
                         ids=["zero-bytes", "end-marker", "zeros"])
def test_empty_layers(env: Env, data: bytes) -> None:
    assert env.apply(data) == 0
    assert list(env.root.iterdir()) == []


def test_root_entry_updates_root_metadata(env: Env) -> None:
    env.apply(LayerTar().dir(".", mode=0o700, uid=3, mtime=123).file("f").bytes())
    st = lst(env.root)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime_ns) == (0o700, 3, 123 * 10**9)


def test_preexisting_dirs_keep_their_times(env: Env) -> None:
    (env.root / "usr" / "lib").mkdir(parents=True)
    os.utime(env.root / "usr" / "lib", ns=(5 * 10**9, 6 * 10**9))
    os.utime(env.root / "usr", ns=(7 * 10**9, 8 * 10**9))
    os.utime(env.root, ns=(9 * 10**9, 10 * 10**9))
    env.apply(LayerTar().file("usr/lib/new", b"n").file("top", b"t").bytes())
    assert lst(env.r("usr/lib")).st_mtime_ns == 6 * 10**9
    assert lst(env.r("usr")).st_mtime_ns == 8 * 10**9
    assert lst(env.root).st_mtime_ns == 10 * 10**9


# ==================================================================== replacing paths
def test_file_over_dir_removes_the_tree(env: Env) -> None:
    (env.root / "a" / "b" / "c").mkdir(parents=True)
    (env.root / "a" / "b" / "c" / "f").write_text("lower")
    env.apply(LayerTar().file("a", b"now a file").bytes())
    assert env.r("a").read_bytes() == b"now a file"


def test_dir_over_dir_merges_and_takes_metadata(env: Env) -> None:
    (env.root / "d").mkdir(mode=0o755)
    (env.root / "d" / "lower").write_text("lower")
    env.apply(LayerTar().dir("d", mode=0o710, uid=5, gid=6).file("d/upper", b"u").bytes())
    st = lst(env.r("d"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o710, 5, 6)
    assert sorted(os.listdir(env.r("d"))) == ["lower", "upper"]


def test_dir_over_file_and_symlink_over_dir(env: Env) -> None:
    (env.root / "f").write_text("file")
    (env.root / "d").mkdir()
    (env.root / "d" / "x").write_text("x")
    env.apply(LayerTar().dir("f").file("f/inner", b"i").symlink("d", "f").bytes())
    assert env.r("f/inner").read_bytes() == b"i"
    assert os.readlink(env.r("d")) == "f"


def test_file_over_file_breaks_hardlinks(env: Env) -> None:
    (env.root / "a").write_text("old")
    os.link(env.root / "a", env.root / "b")
    env.apply(LayerTar().file("a", b"new").bytes())
    assert env.r("a").read_bytes() == b"new" and env.r("b").read_bytes() == b"old"


def test_same_path_twice_in_one_layer(env: Env) -> None:
    env.apply(LayerTar().file("x", b"1").dir("x").file("x/y", b"y").file("x", b"2").bytes())
    assert env.r("x").read_bytes() == b"2"


def test_dir_replacing_cached_parent(env: Env) -> None:
    """The fd cache must forget a dir that an entry replaced."""
    env.apply(LayerTar().file("p/a", b"a").file("p", b"file now").dir("p").file("p/b", b"b")
              .bytes())
    assert sorted(os.listdir(env.r("p"))) == ["b"]


def test_symlink_replacing_cached_dir_redirects_later_entries(env: Env) -> None:
    env.apply(LayerTar().file("a/b/c/f1", b"1").dir("x/b/c").symlink("a", "x")
              .file("a/b/c/f2", b"2").bytes())
    assert os.listdir(env.r("x/b/c")) == ["f2"]


def test_dir_replacing_symlink_parent_redirects_later_entries(env: Env) -> None:
    env.apply(LayerTar().symlink("lib", "usr/lib").file("lib/x/f1", b"1").dir("lib")
              .file("lib/x/f2", b"2").bytes())
    assert os.listdir(env.r("usr/lib/x")) == ["f1"] and os.listdir(env.r("lib/x")) == ["f2"]


def test_whiteout_of_cached_lower_dir_then_entry_recreates_it(env: Env) -> None:
    (env.root / "low" / "dir").mkdir(parents=True)
    (env.root / "low" / "dir" / "f").write_bytes(b"f")
    env.apply(LayerTar().hardlink("h", "low/dir/f")  # looks up (and caches) low/dir
              .whiteout("low").file("low/dir/g", b"g").bytes())
    assert os.listdir(env.r("low/dir")) == ["g"]
    assert env.r("h").read_bytes() == b"f"


def test_apply_once_per_applier_and_root_must_exist(env: Env, tmp_path: Path) -> None:
    a = env.applier(str(env.root), REMOVE)
    a.apply(io.BytesIO(LayerTar().file("f").bytes()))
    with pytest.raises(Bug):
        a.apply(io.BytesIO(LayerTar().file("g").bytes()))
    with pytest.raises(NotFound):
        env.applier(str(tmp_path / "missing"), REMOVE).apply(io.BytesIO(b""))


def test_hardlink_to_file_from_lower_layer(env: Env) -> None:
    (env.root / "usr").mkdir()
    (env.root / "usr" / "python3.11").write_bytes(b"elf")
    env.apply(LayerTar().hardlink("usr/python3", "usr/python3.11").bytes())
    assert lst(env.r("usr/python3")).st_ino == lst(env.r("usr/python3.11")).st_ino


def test_hardlink_to_symlink_links_the_symlink(env: Env) -> None:
    env.apply(LayerTar().symlink("s", str(env.outside / "secret")).hardlink("h", "s").bytes())
    assert os.path.islink(env.r("h"))
    assert lst(env.r("h")).st_ino == lst(env.r("s")).st_ino
    assert lst(env.outside / "secret").st_nlink == 1


def test_many_dirs_beyond_the_fd_cache(env: Env) -> None:
    t = LayerTar()
    for i in range(400):
        t.file(f"d{i % 300}/s{i % 7}/f{i}", b"%d" % i)
    for i in range(400):
        t.file(f"d{i % 300}/s{i % 7}/g{i}", b"%d" % i)
    env.apply(t.bytes())
    for i in range(400):
        assert env.r(f"d{i % 300}/s{i % 7}/g{i}").read_bytes() == b"%d" % i


# =========================================================================== whiteouts
def lower(env: Env) -> None:
    """A lower layer's content in root (REMOVE drivers hold a full copy of the parent)."""
    for p in ["a/b/c", "d/sub", "keep"]:
        (env.root / p).mkdir(parents=True)
    for p in ["a/b/c/f", "a/top", "d/x", "d/sub/y", "keep/k"]:
        (env.root / p).write_text(p)


def test_whiteout_removes_tree(env: Env) -> None:
    lower(env)
    env.apply(LayerTar().whiteout("a/b").whiteout("keep/k").bytes())
    assert not env.r("a/b").exists() and env.r("a/top").exists()
    assert os.listdir(env.r("keep")) == []


def test_whiteout_of_missing_path_and_missing_parent(env: Env) -> None:
    lower(env)
    env.apply(LayerTar().whiteout("a/nothing").whiteout("no/such/dir").bytes())
    assert not env.r("no").exists()


@pytest.mark.parametrize("order", ["before", "after"])
def test_opaque_keeps_this_layers_entries_in_any_order(env: Env, order: str) -> None:
    lower(env)
    t = LayerTar()
    if order == "after":
        t.file("d/new1", b"1").file("d/sub/z", b"z").opaque("d")
    else:
        t.opaque("d").file("d/new1", b"1").file("d/sub/z", b"z")
    env.apply(t.file("d/new2", b"2").bytes())
    assert sorted(os.listdir(env.r("d"))) == ["new1", "new2", "sub"]
    assert os.listdir(env.r("d/sub")) == ["z"]


def test_whiteout_after_same_layer_entry_keeps_the_entry(env: Env) -> None:
    lower(env)
    env.apply(LayerTar().file("a/top", b"upper").whiteout("a/top").file("d/sub/new", b"n")
              .whiteout("d/sub").bytes())
    assert env.r("a/top").read_bytes() == b"upper"
    assert os.listdir(env.r("d/sub")) == ["new"]


def test_opaque_at_root(env: Env) -> None:
    lower(env)
    env.apply(LayerTar().file("new", b"n").opaque("").bytes())
    assert os.listdir(env.root) == ["new"]


def test_aufs_metadata_is_skipped(env: Env) -> None:
    env.apply(LayerTar().dir(".wh..wh.plnk").file(".wh..wh.plnk/1234.5678", b"x")
              .file(".wh..wh.aufs").file("real", b"r").bytes())
    assert os.listdir(env.root) == ["real"]


def _lower(env: Env, *files: str) -> list[str]:
    """A lower diff dir holding ``files`` (their parents made): what the whiteouts hide."""
    lower = Path(tempfile.mkdtemp(prefix="lower-", dir=env.base.parent))  # not next to root
    for f in files:
        (lower / f).parent.mkdir(parents=True, exist_ok=True)
        (lower / f).write_bytes(b"lower")
    return [str(lower)]


def test_overlay_whiteouts(env: Env) -> None:
    lowers = _lower(env, "etc/gone", "var/cache/x", "a/mine", "b/old", "c/old")
    t = (LayerTar().whiteout("etc/gone").opaque("var/cache")
         .file("a/mine", b"m").whiteout("a/mine")        # this layer's file stays
         .dir("b").file("b/mine", b"m").whiteout("b")    # this layer's dir becomes opaque
         .whiteout("c").dir("c").file("c/new", b"n"))    # dir over a whiteout is opaque
    env.apply(t.bytes(), OVERLAY, lowers)
    wh = lst(env.r("etc/gone"))
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(env.r("var/cache"), "trusted.overlay.opaque") == b"y"
    assert env.r("a/mine").read_bytes() == b"m"
    assert os.getxattr(env.r("b"), "trusted.overlay.opaque") == b"y"
    assert env.r("b/mine").exists()
    assert os.getxattr(env.r("c"), "trusted.overlay.opaque") == b"y"
    assert stat.S_ISDIR(lst(env.r("c")).st_mode)


def test_overlay_whiteout_takes_header_owner(env: Env) -> None:
    env.apply(LayerTar().file(".wh.x", uid=12, gid=34).bytes(), OVERLAY, _lower(env, "x"))
    assert (lst(env.r("x")).st_uid, lst(env.r("x")).st_gid) == (12, 34)


def test_overlay_whiteout_of_nothing_makes_nothing(env: Env) -> None:
    """No lower layer has the name (or its parent): no whiteout, no parent dirs in the diff."""
    env.apply(LayerTar().whiteout("x").whiteout("p/q/y").opaque("d/e").bytes(), OVERLAY,
              _lower(env, "z"))
    assert os.listdir(env.root) == []


# ============================================================================= attacks
def test_dotdot(env: Env) -> None:
    for name in ["../outside/pwned", "a/../../outside/pwned", "..", "./../x"]:
        msg = env.refused(LayerTar().file(name, b"pwned").bytes(), match=r"'\.\.'")
        assert "layer entry" in msg


def test_absolute_names_are_scoped(env: Env) -> None:
    env.apply(LayerTar().file(str(env.outside / "secret"), b"pwned").file("//x//y/./z", b"z")
              .bytes())
    assert env.r(str(env.outside / "secret").lstrip("/")).read_bytes() == b"pwned"
    assert env.r("x/y/z").read_bytes() == b"z"


def test_symlink_parent_escape_absolute(env: Env) -> None:
    env.apply(LayerTar().symlink("evil", str(env.outside)).file("evil/secret", b"pwned")
              .file("evil/new", b"pwned").bytes())
    inside = env.r(str(env.outside).lstrip("/"))
    assert (inside / "secret").read_bytes() == b"pwned" and (inside / "new").exists()
    assert os.readlink(env.r("evil")) == str(env.outside)


def test_symlink_parent_escape_relative(env: Env) -> None:
    env.apply(LayerTar().symlink("a/evil", "../../../../../../outside").file("a/evil/secret", b"x")
              .bytes())
    assert env.r("outside/secret").read_bytes() == b"x"


def test_symlink_then_file_through_it(env: Env) -> None:
    """The classic: a symlink entry, then an entry "through" it (CVE-2018-15664 family)."""
    env.apply(LayerTar().symlink("etc", str(env.outside / "sub")).file("etc/deep", b"pwned")
              .dir("etc/newdir").symlink("etc/ln", "/").fifo("etc/fifo").bytes())
    inside = env.r(str(env.outside / "sub").lstrip("/"))
    assert (inside / "deep").read_bytes() == b"pwned"
    assert (inside / "newdir").is_dir() and os.path.islink(inside / "ln")


def test_symlink_chain_and_dotdot_in_targets_stay_inside(env: Env) -> None:
    env.apply(LayerTar().dir("usr/lib").symlink("lib", "usr/lib").symlink("usr/up", "../../..")
              .symlink("x", "usr/up/usr/up/lib").file("x/ok", b"ok").file("lib/libc", b"c")
              .bytes())
    assert env.r("usr/lib/ok").read_bytes() == b"ok"
    assert env.r("usr/lib/libc").read_bytes() == b"c"


def test_symlink_loop_refused(env: Env) -> None:
    env.refused(LayerTar().symlink("a", "b").symlink("b", "a").file("a/x").bytes(),
                match="symbolic links")
    env.refused(LayerTar().symlink("self", "self/../self").file("self/x").bytes(),
                match="symbolic links")


def test_dangling_symlink_parent_is_made_inside(env: Env) -> None:
    env.apply(LayerTar().symlink("lib", "/usr/lib64").file("lib/ld.so", b"ld").bytes())
    assert env.r("usr/lib64/ld.so").read_bytes() == b"ld"


def test_preexisting_symlink_in_lower_layer_escape(env: Env) -> None:
    os.symlink("../outside", env.root / "lnk")
    os.symlink(str(env.outside), env.root / "abs")
    env.apply(LayerTar().file("lnk/secret", b"pwned").file("abs/sub/deep", b"pwned").bytes())
    assert env.r("outside/secret").read_bytes() == b"pwned"
    assert env.r(str(env.outside).lstrip("/") + "/sub/deep").read_bytes() == b"pwned"


def test_entry_itself_symlink_is_verbatim_and_replaced_not_followed(env: Env) -> None:
    os.symlink(str(env.outside / "secret"), env.root / "f")  # a lower layer's symlink
    env.apply(LayerTar().file("f", b"mine").symlink("g", str(env.outside / "secret"))
              .file("g", b"mine too").symlink("d", str(env.outside)).dir("d", mode=0o777)
              .bytes())
    assert not os.path.islink(env.r("f")) and env.r("f").read_bytes() == b"mine"
    assert env.r("g").read_bytes() == b"mine too" and env.r("d").is_dir()
    assert stat.S_IMODE(lst(env.outside).st_mode) != 0o777


def test_metadata_never_follows_symlink_entries(env: Env) -> None:
    t = LayerTar().symlink("s", str(env.outside / "secret"), uid=99, gid=99, mtime=5,
                           xattrs={"trusted.x": b"1"})
    env.apply(t.bytes())
    assert lst(env.outside / "secret").st_uid == 0


def test_hardlink_to_outside(env: Env) -> None:
    env.refused(LayerTar().hardlink("h", "../outside/secret").bytes(), match=r"'\.\.'")
    env.refused(LayerTar().hardlink("h", str(env.outside / "secret")).bytes(), match="not found")
    env.refused(LayerTar().symlink("s", "../outside").hardlink("h", "s/secret").bytes(),
                match="not found")
    env.refused(LayerTar().symlink("s", str(env.outside)).hardlink("h", "s/secret").bytes(),
                match="not found")
    assert lst(env.outside / "secret").st_nlink == 1


def test_hardlink_through_scoped_symlink_links_inside(env: Env) -> None:
    env.apply(LayerTar().file("real/f", b"in").symlink("s", "/real").hardlink("h", "s/f").bytes())
    assert lst(env.r("h")).st_ino == lst(env.r("real/f")).st_ino


def test_hardlink_to_directory_root_or_itself(env: Env) -> None:
    env.refused(LayerTar().dir("d").hardlink("h", "d").bytes(), match="directory")
    env.refused(LayerTar().hardlink("h", ".").bytes(), match="root")
    env.refused(LayerTar().file("f").hardlink("f", "f").bytes(), match="itself")
    env.refused(LayerTar().hardlink("h", "missing").bytes(), match="not found")


def test_whiteout_outside(env: Env) -> None:
    env.refused(LayerTar().file("../.wh.outside").bytes(), match=r"'\.\.'")
    env.refused(LayerTar().file("a/../../.wh.outside").bytes(), match=r"'\.\.'")
    for mode in (REMOVE, OVERLAY):
        env.apply(LayerTar().symlink(f"e{mode.value}", "../outside")
                  .file(f"e{mode.value}/.wh.secret").file(f"e{mode.value}/sub/.wh..wh..opq")
                  .symlink(f"a{mode.value}", str(env.outside)).whiteout(f"a{mode.value}/sub")
                  .bytes(), mode)


def test_whiteout_through_lower_layer_symlink(env: Env) -> None:
    os.symlink(str(env.outside), env.root / "abs")
    os.symlink("../outside", env.root / "rel")
    env.apply(LayerTar().whiteout("abs/secret").opaque("rel").opaque("abs/sub")
              .whiteout("rel/sub").bytes())


def test_whiteout_of_symlink_removes_link_not_target(env: Env) -> None:
    os.symlink("../outside", env.root / "l")
    os.symlink(str(env.outside / "secret"), env.root / "f")
    env.apply(LayerTar().whiteout("l").whiteout("f").bytes())
    assert os.listdir(env.root) == []


def test_whiteout_of_root_refused(env: Env) -> None:
    env.refused(LayerTar().file(".wh.").bytes(), match="whiteout")
    env.refused(LayerTar().file("a/.wh..").bytes(), match="whiteout")
    assert env.root.is_dir()


@pytest.mark.parametrize("make", [lambda t: t.file("./", b"x"), lambda t: t.symlink(".", "/x"),
                                  lambda t: t.fifo("/"), lambda t: t.hardlink("", "f")],
                         ids=["file", "symlink", "fifo", "hardlink"])
def test_retype_root_refused(env: Env, make: Callable[[LayerTar], LayerTar]) -> None:
    # libarchive already refuses a regular file named "./" as a damaged header
    env.refused(make(LayerTar().file("f")).bytes(), match="root|^malformed layer tar")
    assert stat.S_ISDIR(lst(env.root).st_mode)


def test_parent_is_a_file(env: Env) -> None:
    env.refused(LayerTar().file("f", b"x").file("f/g", b"y").bytes(), match="not a directory")


def test_error_names_the_entry(env: Env) -> None:
    msg = env.refused(LayerTar().file("ok").file("bad\n/../x").bytes(), match="layer entry")
    assert "bad\\n/../x" in msg


def test_ids_out_of_range_refused(env: Env) -> None:
    tar = ustar_header(b"f", uid=0o7777777) + end_of_archive()  # fine
    env.apply(tar)
    env.refused(LayerTar().file("g", uid=2**32 - 1).bytes(), match="uid")


def test_deep_tree_and_its_removal(env: Env) -> None:
    """Thousands deep: no recursion limit, no fd exhaustion, PATH_MAX is not ours to hit."""
    deep = "/".join(["d"] * 3000)
    try:
        env.apply(LayerTar().file(deep + "/f", b"bottom").bytes())
        fd = os.open(env.root, os.O_RDONLY)
        try:
            for _ in range(2999):  # it is there, all the way down
                fd, parent = os.open("d", os.O_RDONLY, dir_fd=fd), fd
                os.close(parent)
            assert os.listdir(fd) == ["d"]
        finally:
            os.close(fd)
        env.applier(str(env.root), REMOVE).apply(io.BytesIO(LayerTar().whiteout("d").bytes()))
        assert os.listdir(env.root) == []
    finally:  # pytest's own cleanup recurses and would choke on it
        if os.path.lexists(env.root / "d"):
            _rmtree(os.open(env.root, os.O_RDONLY), b"d")


# ========================================================================== malformed
def good_tar() -> bytes:
    return LayerTar(format=tarfile.USTAR_FORMAT).file("a", b"a" * 2000).file("b", b"b").bytes()


@pytest.mark.parametrize("make", [
    lambda: ustar_header(b"f", size=3, checksum=12345) + pad(b"abc") + end_of_archive(),
    lambda: good_tar()[:512 + 1000],
    lambda: good_tar()[:700],
    lambda: good_tar()[:2560 + 100],
    lambda: b"this is not a tar archive at all" * 40,
    lambda: good_tar()[:2560] + b"\x01" * 512 + end_of_archive(),
    lambda: good_tar()[:2560] + ustar_header(b"z", checksum=7) + end_of_archive(),
    lambda: __import__("gzip").compress(good_tar()),
], ids=["bad-checksum", "truncated-data", "truncated-header", "cut-in-header", "garbage",
        "garbage-header", "bad-checksum-later", "gzip"])
def test_malformed_tar(env: Env, make: Callable[[], bytes]) -> None:
    msg = env.refused(make(), match="^malformed layer tar: ")
    assert len(msg) < 200


# ========================================================================= properties
NAMES = st.sampled_from([b"a", b"b", b"c", b"dir", b"caf\xe9", "ü€".encode(), b"x y",
                         b"n" * 120, b".hidden", b"-"])


@st.composite
def trees(draw: st.DrawFn) -> list[dict]:
    """A valid layer: unique paths, parents are dirs (their entries before or after the
    children), files with data/modes/ids/ns mtimes/xattrs, symlinks, hardlinks, fifos."""
    paths = draw(st.lists(st.lists(NAMES, min_size=1, max_size=3).map(tuple), max_size=14,
                          unique=True))
    model: dict[tuple, dict] = {}
    for p in paths:
        if any(p[:i] in model and model[p[:i]]["kind"] != "dir" for i in range(1, len(p))):
            continue
        if p in model:
            continue
        for i in range(1, len(p)):
            model.setdefault(p[:i], {"kind": "dir"})
        model[p] = {"kind": draw(st.sampled_from(["file", "file", "dir", "symlink", "link",
                                                  "fifo"]))}
        if model[p]["kind"] == "link" and not any(v["kind"] == "file" and k != p
                                                   for k, v in model.items()):
            model[p]["kind"] = "file"
    entries = []
    files = []
    for p, node in model.items():
        if any(p[:i] in model and model[p[:i]]["kind"] != "dir" for i in range(1, len(p))):
            continue
        kind = node["kind"]
        e = {"name": b"/".join(p), "kind": kind,
             "mode": draw(st.sampled_from([0o644, 0o755, 0o600, 0o4755, 0o2750, 0o1777, 0o000])),
             "uid": draw(st.integers(0, 70000)), "gid": draw(st.integers(0, 70000)),
             "mtime": draw(st.integers(0, 2**33)) * 10**9 + draw(st.integers(0, 999999999)),
             "late": draw(st.booleans())}
        if kind == "file":
            e["data"] = draw(st.binary(max_size=3000))
            e["xattrs"] = draw(st.dictionaries(st.sampled_from(["user.a", "user.b",
                                                                "trusted.c"]),
                                               st.binary(max_size=20), max_size=2))
            files.append(e["name"])
        elif kind == "symlink":
            e["target"] = draw(st.sampled_from([b"a", b"/abs/x", b"../../up", b"caf\xe9/x"]))
        entries.append(e)
    for e in entries:
        if e["kind"] == "link":
            candidates = [f for f in files if f != e["name"]]
            if not candidates:
                e["kind"], e["data"], e["xattrs"] = "file", b"", {}
            else:
                e["target"] = draw(st.sampled_from(candidates))
    # a dir's entry goes either before its children (usual) or after them ("late")
    early = [e for e in entries if not (e["kind"] == "dir" and e["late"])]
    late = [e for e in entries if e["kind"] == "dir" and e["late"]]
    links = [e for e in early if e["kind"] == "link"]
    return [e for e in early if e["kind"] != "link"] + links + late


def tar_of(entries: list[dict]) -> bytes:
    t = LayerTar()
    for e in entries:
        sec, ns = divmod(e["mtime"], 10**9)
        kw = dict(uid=e["uid"], gid=e["gid"], mtime=sec, pax={"mtime": f"{sec}.{ns:09d}"})
        if e["kind"] == "file":
            t.file(e["name"], e["data"], mode=e["mode"], xattrs=e["xattrs"], **kw)
        elif e["kind"] == "dir":
            t.dir(e["name"], mode=e["mode"], **kw)
        elif e["kind"] == "symlink":
            t.symlink(e["name"], e["target"], **kw)
        elif e["kind"] == "link":
            t.hardlink(e["name"], e["target"], **kw)
        elif e["kind"] == "fifo":
            t.fifo(e["name"], mode=e["mode"], **kw)
    return t.bytes()


@pytest.mark.parametrize("applier", APPLIERS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=trees(), whiteouts=st.sampled_from([REMOVE, OVERLAY]))
def test_property_tree_roundtrip(applier: type[TarApplier], entries: list[dict],
                                 whiteouts: Whiteouts) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        os.utime(root, ns=(10**9, 2 * 10**9))
        applier(root, whiteouts).apply(io.BytesIO(tar_of(entries)))
        got = tree_state(root)
        by_name = {e["name"]: e for e in entries}
        assert set(got) == {b"."} | set(by_name)
        assert got[b"."].mtime_ns == 2 * 10**9  # root is not in the tar: its times are kept
        for name, e in by_name.items():
            node = got[name]
            src = by_name[e["target"]] if e["kind"] == "link" else e
            assert node.kind == {"link": "file"}.get(e["kind"], e["kind"]), name
            assert (node.uid, node.gid) == (src["uid"], src["gid"]), name
            if e["kind"] != "symlink":
                assert node.mode == src["mode"], name
                assert node.mtime_ns == src["mtime"], name
            if e["kind"] in ("file", "link"):
                assert open(os.path.join(root.encode(), name), "rb").read() == src["data"]
                assert dict(node.xattrs) == {k: v for k, v in src["xattrs"].items()}, name
            if e["kind"] == "link":
                assert node.inode_group == got[e["target"]].inode_group != b""
            if e["kind"] == "symlink":
                assert node.link == e["target"]


def fuzz_seed(outside: str) -> bytes:
    """A tar with a bit of everything, hostile parts included, for byte mutations."""
    long = "l" * 130
    return (LayerTar().dir("etc", mode=0o755).file("etc/passwd", b"root:x:0:0:root", mode=0o644,
                                                      xattrs={"user.k": b"v"})
            .symlink("up", "../outside").symlink("abs", outside).file("up/x", b"up")
            .hardlink("etc/hl", "etc/passwd").file(f"d/{long}/f", b"long", mode=0o4755)
            .whiteout("etc/gone").opaque("d").fifo("p").chardev("c", 1, 3)
            .file("abs/secret", b"pwn").bytes()) + LayerTar(format=tarfile.GNU_FORMAT).file(
                f"g/{long}", b"gnu").symlink(f"g/{long}s", long).bytes()


@pytest.mark.parametrize("applier", APPLIERS)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), whiteouts=st.sampled_from([REMOVE, OVERLAY]))
def test_fuzz_mutated_tar_applies_inside_root_or_is_refused(applier: type[TarApplier],
                                                             data: st.DataObject,
                                                             whiteouts: Whiteouts) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outside = os.path.join(tmp, "outside")
        os.mkdir(outside)
        with open(os.path.join(outside, "secret"), "wb") as f:
            f.write(b"secret")
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        seed = bytearray(fuzz_seed(outside))
        for _ in range(data.draw(st.integers(1, 8), label="mutations")):
            i = data.draw(st.integers(0, len(seed) - 1), label="at")
            seed[i] = data.draw(st.integers(0, 255), label="byte")
        if data.draw(st.booleans(), label="fix checksums"):  # reach the fields' meaning
            fix_checksums(seed)
        if data.draw(st.booleans(), label="truncate"):
            seed = seed[:data.draw(st.integers(0, len(seed)), label="cut")]
        before = outside_state(tmp)
        try:
            applier(root, whiteouts).apply(io.BytesIO(bytes(seed)))
        except InvalidInput as e:
            assert "\n" not in str(e)
        assert outside_state(tmp) == before
