"""The differ and the layer tar writer: change detection rule by rule, overlay upper dirs against
the real kernel, the tar format byte by byte, streaming, and round trips through the applier."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import shutil
import socket
import stat
import subprocess
import tarfile
import tracemalloc
from pathlib import Path
from typing import Iterator

import pytest

from drivers.sys import mount as mountapi
from drivers.base import Change, ChangeKind
from drivers.errors import Conflict, NotFound
from drivers.tar.apply import Whiteouts, apply_tar
from drivers.tar.diff import (diff_size, diff_stream, next_clock_tick, tree_changes,
                             upper_changes, write_layer_tar)
from tests.drivers.conformance import assert_same_tree, tree_snapshot

A, M, D = ChangeKind.ADDED, ChangeKind.MODIFIED, ChangeKind.DELETED
T0 = 1_700_000_000
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (chown, mknod, trusted.* xattrs)")


def touch(p: Path, data: bytes = b"", mtime: float | int = T0, mode: int = 0o644) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.chmod(p, mode)
    os.utime(p, ns=(int(mtime * 10**9), int(mtime * 10**9)))
    return p


def copy_tree(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", "-T", str(src), str(dst)], check=True)
    return dst


def tar_bytes(root: Path, changes: list[Change], **kw: object) -> bytes:
    buf = io.BytesIO()
    write_layer_tar(str(root), changes, buf, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers()


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A parent tree and an exact copy of it (the child before any change)."""
    p = tmp_path / "parent"
    touch(p / "etc/passwd", b"root\n")
    touch(p / "etc/group", b"root\n")
    touch(p / "same", b"same")
    (p / "d/sub").mkdir(parents=True)
    touch(p / "d/sub/f", b"f")
    os.symlink("etc/passwd", p / "ln")
    os.utime(p / "ln", ns=(T0 * 10**9, T0 * 10**9), follow_symlinks=False)
    return p, copy_tree(p, tmp_path / "child")


# ---------------------------------------------------------------------------------------------
# tree_changes, rule by rule

def test_identical_trees_have_no_changes(pair: tuple[Path, Path]) -> None:
    p, c = pair
    assert tree_changes(str(c), str(p)) == []


def test_against_nothing_everything_is_added_in_order(pair: tuple[Path, Path]) -> None:
    p, _ = pair
    assert [str(x) for x in tree_changes(str(p), None)] == [
        "A /d", "A /d/sub", "A /d/sub/f", "A /etc", "A /etc/group", "A /etc/passwd", "A /ln",
        "A /same"]


@pytest.mark.parametrize("what", ["mode", "size", "mtime", "content-at-whole-second", "xattr",
                                  "symlink-target", "uid", "gid"])
def test_each_kind_of_modification_is_seen(pair: tuple[Path, Path], what: str) -> None:
    p, c = pair
    f = c / "etc/passwd"
    target = "/etc/passwd"
    if what == "mode":
        os.chmod(f, 0o600)
    elif what == "size":
        touch(f, b"root:x\n")
    elif what == "mtime":
        os.utime(f, ns=(T0 * 10**9, T0 * 10**9 + 1))
    elif what == "content-at-whole-second":
        touch(f, b"ROOT\n")  # same size, same whole-second mtime: only the bytes differ
    elif what == "xattr":
        os.setxattr(f, "user.k", b"v")
    elif what == "symlink-target":
        os.unlink(c / "ln")
        os.symlink("etc/grou", c / "ln")  # same length
        os.utime(c / "ln", ns=(T0 * 10**9, T0 * 10**9), follow_symlinks=False)
        target = "/ln"
    elif what in ("uid", "gid"):
        if not ROOT:
            pytest.skip("chown needs root")
        os.chown(f, 1 if what == "uid" else -1, 1 if what == "gid" else -1)
    expected = [Change(target, M)] if target == "/ln" else [Change("/etc", M), Change(target, M)]
    assert tree_changes(str(c), str(p)) == expected


def test_same_size_and_nanosecond_mtime_count_as_unchanged(pair: tuple[Path, Path]) -> None:
    """The documented blind spot (as moby's): a rewrite that puts the exact ns mtime back."""
    p, c = pair
    ns = T0 * 10**9 + 123
    for root in (p, c):
        os.utime(root / "same", ns=(ns, ns))
    (c / "same").write_bytes(b"SAME")
    os.utime(c / "same", ns=(ns, ns))
    assert tree_changes(str(c), str(p)) == []


@needs_root
def test_device_numbers_are_compared(tmp_path: Path) -> None:
    p, c = tmp_path / "p", tmp_path / "c"
    p.mkdir()
    c.mkdir()
    for root, minor in ((p, 3), (c, 5)):
        os.mknod(root / "dev", 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        os.utime(root / "dev", ns=(T0 * 10**9, T0 * 10**9))
    assert tree_changes(str(c), str(p)) == [Change("/dev", M)]


def test_dir_whose_only_change_is_its_mtime_is_not_reported(pair: tuple[Path, Path]) -> None:
    p, c = pair
    touch(c / "d/tmpfile")
    os.unlink(c / "d/tmpfile")  # moby issue 9874: created and removed again
    assert os.stat(c / "d").st_mtime_ns != os.stat(p / "d").st_mtime_ns
    assert tree_changes(str(c), str(p)) == []
    os.chmod(c / "d", 0o700)
    assert tree_changes(str(c), str(p)) == [Change("/d", M)]


def test_parents_of_a_change_are_modified(pair: tuple[Path, Path]) -> None:
    p, c = pair
    touch(c / "d/sub/f", b"g", mtime=T0 + 1)
    assert tree_changes(str(c), str(p)) == [Change("/d", M), Change("/d/sub", M), Change("/d/sub/f", M)]


def test_deleted_dir_is_reported_alone(pair: tuple[Path, Path]) -> None:
    p, c = pair
    shutil.rmtree(c / "d")
    assert tree_changes(str(c), str(p)) == [Change("/d", D)]


def test_type_changes(pair: tuple[Path, Path]) -> None:
    p, c = pair
    shutil.rmtree(c / "d")
    touch(c / "d", b"now a file")
    os.unlink(c / "same")
    touch(c / "same/inside", b"now a dir")
    assert tree_changes(str(c), str(p)) == [
        Change("/d", M), Change("/same", M), Change("/same/inside", A)]


def test_deep_trees_do_not_hit_the_recursion_limit(tmp_path: Path) -> None:
    deep = tmp_path / "deep"
    cur = str(deep)
    os.mkdir(cur)
    try:
        for _ in range(1500):
            cur += "/d"
            os.mkdir(cur)
        ch = tree_changes(str(deep), None)
        assert len(ch) == 1500 and ch[-1].path == "/d" * 1500
        assert len(tar_bytes(deep, ch)) > 1500 * 512
    finally:
        # shutil.rmtree recurses (Python < 3.12) and pytest's cleanup of old tmp dirs with it
        subprocess.run(["rm", "-rf", str(deep)], check=True)


def test_missing_root_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        tree_changes(str(tmp_path / "nope"), None)
    with pytest.raises(NotFound):
        tree_changes(str(tmp_path), str(tmp_path / "nope"))


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def test_whole_second_files_are_compared_by_content_unless_the_inode_proves_it(tmp_path: Path) -> None:
    p = tmp_path / "p"
    touch(p / "a", os.urandom(1 << 20))
    touch(p / "b", os.urandom(1 << 20))
    c = copy_tree(p, tmp_path / "c")
    before = _bytes_read()
    assert tree_changes(str(c), str(p)) == []
    assert _bytes_read() - before >= 4 << 20            # a cp -a copy: every byte compared
    next_clock_tick()
    marker = tmp_path / "marker"
    marker.write_bytes(b"")                             # "the copy completed now"
    copied_before = os.stat(marker).st_ctime_ns
    before = _bytes_read()
    assert tree_changes(str(c), str(p), copied_before_ns=copied_before) == []
    assert _bytes_read() - before < 64 << 10            # nothing compared
    with open(c / "b", "r+b") as f:                     # touched after the marker, same size
        f.write(b"\0")
    os.utime(c / "b", ns=(T0 * 10**9, T0 * 10**9))
    assert tree_changes(str(c), str(p), copied_before_ns=copied_before) == [Change("/b", M)]
    q = tmp_path / "q"                                  # a tree of hardlinks to p's files:
    q.mkdir()                                           # the same inodes, never read
    for n in ("a", "b"):
        os.link(p / n, q / n)
    before = _bytes_read()
    assert tree_changes(str(q), str(p)) == []
    assert _bytes_read() - before < 64 << 10


def test_a_btrfs_snapshot_is_not_read(tmp_path: Path) -> None:
    from tests.loopfs import loop_filesystem, loopfs_skip_reason

    reason = loopfs_skip_reason("btrfs")
    if reason:
        pytest.skip(reason)
    with loop_filesystem(tmp_path, "btrfs", size="256M") as fs:
        src, snap = fs.mountpoint / "src", fs.mountpoint / "snap"
        subprocess.run(["btrfs", "-q", "subvolume", "create", str(src)], check=True)
        for i in range(4):
            touch(src / f"f{i}", os.urandom(1 << 20))
        subprocess.run(["btrfs", "-q", "subvolume", "snapshot", str(src), str(snap)], check=True)
        before = _bytes_read()
        assert tree_changes(str(snap), str(src)) == []
        assert _bytes_read() - before < 64 << 10
        with open(snap / "f2", "r+b") as f:
            f.write(b"\0")
        os.utime(snap / "f2", ns=(T0 * 10**9, T0 * 10**9))
        assert tree_changes(str(snap), str(src)) == [Change("/f2", M)]


def test_diff_size_counts_regular_content_and_each_inode_once(pair: tuple[Path, Path]) -> None:
    p, c = pair
    touch(c / "new", b"x" * 1000)
    os.link(c / "new", c / "new2")
    os.symlink("x" * 50, c / "sl")
    (c / "newdir").mkdir()
    os.unlink(c / "etc/group")
    ch = tree_changes(str(c), str(p))
    assert diff_size(str(c), ch) == 1000


# ---------------------------------------------------------------------------------------------
# the tar format

@needs_root
def test_tar_format(tmp_path: Path) -> None:
    r = tmp_path / "t"
    touch(r / "b/file", b"hello", mtime=T0 + 0.75)
    os.chown(r / "b/file", 1000, 3_000_000)        # gid beyond ustar's 7 octal digits
    os.chmod(r / "b/file", 0o4755)                 # after chown, which clears setuid
    os.setxattr(r / "b/file", "user.z", b"last")
    os.setxattr(r / "b/file", "security.capability", b"\x01\x00\x00\x02\x00\x20" + bytes(14))
    os.setxattr(r / "b/file", "trusted.overlay.origin", b"private")
    os.link(r / "b/file", r / "a-link")
    os.link(r / "b/file", r / "c-link")
    long = "n" * 150
    touch(r / long, b"long name")
    os.symlink("t" * 150, r / "longlink")
    touch(r / "caf\u00e9", b"")
    os.mkfifo(r / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(r / "sock"))
    s.close()
    ch = tree_changes(str(r), None) + [Change("/b/gone", D)]
    data = tar_bytes(r, ch)
    ms = {m.name: m for m in members(data)}
    assert list(ms) == ["a-link", "b", "b/file", "b/.wh.gone", "c-link", "caf\u00e9", "fifo",
                        "longlink", long]                       # sorted by path; no socket
    assert ms["a-link"].isreg() and ms["a-link"].size == 5      # first name of the inode
    assert ms["b/file"].islnk() and ms["b/file"].linkname == "a-link"
    assert ms["c-link"].islnk() and ms["c-link"].linkname == "a-link"
    f = ms["a-link"]
    assert (f.mode, f.uid, f.gid, f.mtime, f.uname, f.gname) == (0o4755, 1000, 3_000_000, T0, "", "")
    assert f.pax_headers["SCHILY.xattr.user.z"] == "last"
    assert "SCHILY.xattr.security.capability" in f.pax_headers
    assert not any("overlay" in k for k in f.pax_headers)
    wh = ms["b/.wh.gone"]
    assert (wh.isreg(), wh.size, wh.mtime, wh.mode, wh.uid, wh.gid) == (True, 0, 0, 0, 0, 0)
    assert ms["longlink"].linkname == "t" * 150
    assert b"hdrcharset" not in data
    assert b"atime" not in data and b"ctime" not in data
    assert data.endswith(bytes(1024)) and len(data) % 512 == 0
    # GNU tar reads it and extracts the same tree
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", "-",
                    "-C", str(out), "--exclude=*.wh.*"], input=data, check=True)
    os.unlink(r / "sock")
    want = tree_snapshot(r)
    got = tree_snapshot(out)
    for snap in (want, got):
        del snap["/"], snap["/b"]       # dir mtimes/metadata aside
    assert_same_tree(got, want)


def test_non_utf8_names_round_trip(tmp_path: Path) -> None:
    r = tmp_path / "raw"
    r.mkdir()
    name = os.fsdecode(b"\xff\xfe-latin1-\xe9")
    touch(r / name, b"bytes")
    os.symlink(os.fsdecode(b"target-\xff"), r / "ln")
    data = tar_bytes(r, tree_changes(str(r), None))
    assert b"path=\xff\xfe-latin1-\xe9\n" in data
    out = tmp_path / "out"
    out.mkdir()
    apply_tar(str(out), io.BytesIO(data), Whiteouts.REMOVE)
    assert (out / name).read_bytes() == b"bytes"
    assert tar_bytes(out, tree_changes(str(out), None)) == data


def test_xattr_records_are_sorted_and_binary_safe(tmp_path: Path) -> None:
    r = tmp_path / "x"
    touch(r / "f", b"")
    for k in ("user.b", "user.a", "user.c"):
        os.setxattr(r / "f", k, b"\xff\x00" + k.encode())
    data = tar_bytes(r, tree_changes(str(r), None))
    i = [data.index(b"SCHILY.xattr.user." + c) for c in (b"a", b"b", b"c")]
    assert i == sorted(i)
    assert b"\xff\x00user.b" in data


def test_tar_is_deterministic_and_independent_of_the_copy(pair: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    p, _ = pair
    ch = tree_changes(str(p), None)
    first = tar_bytes(p, ch)
    assert tar_bytes(p, ch) == first
    again = copy_tree(p, tmp_path / "again")
    assert tar_bytes(again, tree_changes(str(again), None)) == first


def test_opaque_dirs_of_an_upper_dir(tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("trusted.* xattrs need root")
    up = tmp_path / "upper"
    (up / "o").mkdir(parents=True)
    os.setxattr(up / "o", "trusted.overlay.opaque", b"y")
    touch(up / "o/kept", b"k")
    ch = [Change("/o", M), Change("/o/gone", D), Change("/o/kept", A), Change("/x", D)]
    names = [m.name for m in members(tar_bytes(up, ch, whiteout_root=str(up)))]
    assert names == ["o", "o/.wh..wh..opq", "o/kept", ".wh.x"]
    names = [m.name for m in members(tar_bytes(up, ch))]
    assert names == ["o", "o/.wh.gone", "o/kept", ".wh.x"]


# ---------------------------------------------------------------------------------------------
# streaming

def test_diff_stream_gives_the_same_bytes_and_closes_once(pair: tuple[Path, Path]) -> None:
    p, _ = pair
    ch = tree_changes(str(p), None)
    closed = []
    s = diff_stream(str(p), ch, on_close=lambda: closed.append(1))
    got = b"".join(iter(lambda: s.read(7), b""))
    s.close()
    s.close()
    assert got == tar_bytes(p, ch) and closed == [1]
    s = diff_stream(str(p), ch, on_close=lambda: closed.append(2))
    s.read(1)
    s.close()  # closed early: still released
    assert closed == [1, 2]


def test_errors_while_writing_reach_the_reader(pair: tuple[Path, Path]) -> None:
    p, _ = pair
    ch = tree_changes(str(p), None)
    s = diff_stream(str(p), ch)
    os.unlink(p / "etc/passwd")
    with pytest.raises(Conflict, match="/etc/passwd"):
        s.read()
    s.close()
    big = touch(p / "big", os.urandom(3 << 20))
    s = diff_stream(str(p), [Change("/big", A)])
    assert len(s.read(1000)) == 1000     # the header promised 3 MiB; the data has begun
    os.truncate(big, 1 << 20)
    with pytest.raises(Conflict, match="shrank"):
        s.read()
    s.close()


def test_stream_memory_stays_small(tmp_path: Path) -> None:
    r = tmp_path / "big"
    r.mkdir()
    chunk = os.urandom(1 << 20)
    for i in range(4):
        with open(r / f"f{i}", "wb") as f:
            for _ in range(16):
                f.write(chunk)                      # 4 x 16 MiB
    ch = tree_changes(str(r), None)
    tracemalloc.start()
    try:
        s = diff_stream(str(r), ch)
        n = 0
        while b := s.read(256 << 10):
            n += len(b)
        s.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n > 64 << 20
    assert peak < 8 << 20, peak


# ---------------------------------------------------------------------------------------------
# overlay upper dirs, checked against the kernel's own merge

@contextlib.contextmanager
def overlay(target: Path, lowers: list[Path], upper: Path | None = None,
            work: Path | None = None) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    opts = "lowerdir=" + ":".join(map(str, lowers))
    if upper is not None:
        opts += f",upperdir={upper},workdir={work}"
    opts += ",redirect_dir=off,metacopy=off,index=off"
    mountapi.mount("overlay", target, "overlay", 0, opts)
    try:
        yield target
    finally:
        mountapi.umount(target, mountapi.MNT_DETACH)


@pytest.mark.skipif(not ROOT or "overlay" not in mountapi.filesystems(),
                    reason="needs root and overlayfs")
def test_upper_changes_match_the_kernels_merge(tmp_path: Path) -> None:
    l2, l1, up, work = (tmp_path / n for n in ("l2", "l1", "upper", "work"))
    for d in (l2, l1, up, work):
        d.mkdir()
    # bottom layer
    touch(l2 / "a/x", b"x")
    touch(l2 / "a/y", b"y")
    touch(l2 / "d/old", b"old")
    touch(l2 / "f", b"f")
    touch(l2 / "hidden/h", b"h")
    touch(l2 / "keep/k", b"k")
    touch(l2 / "m/deep/file", b"deep")
    # middle layer, written as an overlay diff dir: whiteout a/y, opaque d, whiteout hidden
    (l1 / "a").mkdir()
    os.mknod(l1 / "a/y", stat.S_IFCHR, 0)
    (l1 / "d").mkdir()
    os.setxattr(l1 / "d", "trusted.overlay.opaque", b"y")
    touch(l1 / "d/l1file", b"l1")
    os.mknod(l1 / "hidden", stat.S_IFCHR, 0)
    with overlay(tmp_path / "lower-view", [l1, l2]) as lower_view, \
            overlay(tmp_path / "rw", [l1, l2], up, work) as rw:
        # a container's changes, made through the kernel
        (rw / "a/x").write_bytes(b"X")
        (rw / "a/new").write_bytes(b"n")
        os.unlink(rw / "f")
        shutil.rmtree(rw / "d")
        (rw / "d").mkdir()                   # recreated: opaque in the upper
        (rw / "d/fresh").write_bytes(b"fresh")
        (rw / "hidden").mkdir()              # over a whiteout of a lower layer
        os.chmod(rw / "keep", 0o700)
        (rw / "m/deep/tmp").write_bytes(b"t")
        os.unlink(rw / "m/deep/tmp")         # copied-up dirs with nothing changed in them
        os.chmod(rw / "keep/k", 0o600)
        os.chmod(rw / "keep/k", 0o644)       # copied up, but equal to the lower again
        want = tree_changes(str(rw), str(lower_view))
    got = upper_changes(str(up), [str(l1), str(l2)])
    assert got == want
    assert [str(c) for c in got] == [
        "C /a", "A /a/new", "C /a/x", "C /d", "A /d/fresh", "D /d/l1file", "D /f", "A /hidden",
        "C /keep"]
    # and the tar of the upper dir, applied as a layer, gives the same merged tree
    data = tar_bytes(up, got, whiteout_root=str(up))
    assert [m.name for m in members(data)][:5] == ["a", "a/new", "a/x", "d", "d/.wh..wh..opq"]
    copy = tmp_path / "flat"
    copy.mkdir()
    for lower in (l2, l1):  # flatten the lowers into a full tree ...
        tar = tar_bytes(lower, upper_changes(str(lower), []), whiteout_root=str(lower))
        apply_tar(str(copy), io.BytesIO(tar), Whiteouts.REMOVE)
    apply_tar(str(copy), io.BytesIO(data), Whiteouts.REMOVE)  # ... and apply the upper's tar
    (tmp_path / "work2").mkdir()
    with overlay(tmp_path / "rw2", [l1, l2], up, tmp_path / "work2") as rw2:
        assert_same_tree(_no_root(tree_snapshot(copy)), _no_root(tree_snapshot(rw2)))


def _no_root(s: dict) -> dict:  # type: ignore[type-arg]
    return {k: v for k, v in s.items() if k != "/"}


@pytest.mark.skipif(not ROOT, reason="trusted.* xattrs need root")
def test_upper_changes_rules_without_a_kernel(tmp_path: Path) -> None:
    low, up = tmp_path / "low", tmp_path / "up"
    touch(low / "dir/a", b"a")
    touch(low / "file", b"f")
    touch(low / "same", b"s")
    up.mkdir()
    copy_tree(low / "dir", up / "dir")          # a copied-up dir ...
    os.chmod(up / "dir", 0o711)                 # ... with a new mode
    copy_tree(low / "same", up / "same")        # copied up but unchanged
    os.mknod(up / "file", stat.S_IFCHR, 0)      # whiteout
    os.mknod(up / "nothere", stat.S_IFCHR, 0)   # whiteout of a name the lower lacks: still D
    assert [str(c) for c in upper_changes(str(up), [str(low)])] == ["C /dir", "D /file", "D /nothere"]
    with pytest.raises(NotFound):
        upper_changes(str(up), [str(tmp_path / "missing")])


# ---------------------------------------------------------------------------------------------
# round trips through the applier, on random trees

def _random_tree(root: Path, rng: random.Random, n: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    dirs = [root]
    for i in range(n):
        parent = rng.choice(dirs)
        kind = rng.random()
        p = parent / f"e{i}"
        if kind < 0.2:
            p.mkdir()
            os.chmod(p, rng.choice([0o755, 0o700, 0o1777]))
            dirs.append(p)
        elif kind < 0.3:
            os.symlink(rng.choice(["../x", "/abs/target", "e0"]), p)
        elif kind < 0.35 and i > 0:
            cands = [q for q in root.rglob("*") if q.is_file() and not q.is_symlink()]
            if cands:
                os.link(rng.choice(cands), p)
        else:
            touch(p, rng.randbytes(rng.choice([0, 1, 511, 512, 513, 5000])),
                  mtime=T0 + rng.randint(0, 5) + rng.choice([0, 0.5]),
                  mode=rng.choice([0o644, 0o600, 0o755, 0o4755]))
            if rng.random() < 0.2:
                os.setxattr(p, "user.r", rng.randbytes(4))


def _mutate(root: Path, rng: random.Random) -> None:
    entries = sorted(root.rglob("*"))
    for p in rng.sample(entries, min(len(entries), 6)):
        if not os.path.lexists(p):
            continue
        r = rng.random()
        if r < 0.3:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                os.unlink(p)
        elif r < 0.5 and p.is_file() and not p.is_symlink():
            touch(p, rng.randbytes(rng.randint(0, 100)), mtime=T0 + 10)
        elif r < 0.7:
            os.chmod(p, 0o700, follow_symlinks=False) if not p.is_symlink() else None
        else:
            touch(root / f"added{rng.randint(0, 10**6)}", b"added")


@pytest.mark.parametrize("seed", range(6))
def test_random_trees_round_trip_to_the_same_diffid(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    parent = tmp_path / "parent"
    _random_tree(parent, rng, 40)
    layer = copy_tree(parent, tmp_path / "layer")
    _mutate(layer, rng)
    ch = tree_changes(str(layer), str(parent))
    d1 = tar_bytes(layer, ch)
    again = copy_tree(parent, tmp_path / "again")
    apply_tar(str(again), io.BytesIO(d1), Whiteouts.REMOVE)
    d2 = tar_bytes(again, tree_changes(str(again), str(parent)))
    assert hashlib.sha256(d2).hexdigest() == hashlib.sha256(d1).hexdigest()
    want = _no_root(tree_snapshot(layer))
    got = _no_root(tree_snapshot(again))
    # hardlinks to files the layer did not change become copies in a layer tar
    strip = {k: v._replace(link_group="") for k, v in want.items()}
    assert {k: v._replace(link_group="") for k, v in got.items()} == strip
