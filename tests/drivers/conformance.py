"""The graphdriver conformance suite (moby's ``graphtest``, containerd's snapshot ``testsuite``).

Every driver must pass the same behavioural tests through the public protocol only
(``drivers.base.GraphDriver``). A driver binds the suite in its own test module::

    from tests.drivers.conformance import DriverConformance

    class TestOverlayConformance(DriverConformance):
        DRIVERS = ["overlay"]

(``DRIVERS`` may list several names; each runs, and skips with the probe's reason where the
driver cannot run here). Fixtures (``driver_name``, ``driver_home``, ``driver``) are in
``tests/drivers/conftest.py``; override ``driver_home`` in the binding module, or add a provider
to ``HOME_PROVIDERS`` there, when the home must sit on a special filesystem.

Trees are compared with ``tree_snapshot``: path -> (type, mode, uid, gid, size, sha256 of content,
link target, rdev, xattrs, hardlink group). Test tars are built in code (``tests.tarbuild``).
Needs root (device nodes, chown, trusted.* xattrs); skipped otherwise.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import drivers
from drivers.sys import mount as mountapi
from drivers.base import CacheID, Change, ChangeKind, GraphDriver, HeldCounts
from drivers.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from tests.tarbuild import E, make_tar

REPO = Path(__file__).resolve().parents[2]
MTIME = 1_700_000_000
A, M, D = ChangeKind.ADDED, ChangeKind.MODIFIED, ChangeKind.DELETED
# security.capability v2 granting cap_net_raw (bit 13): a binary xattr value the kernel checks
CAP_NET_RAW = "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12
PRIVATE_XATTRS = ("trusted.overlay.", "user.overlay.")


# ---------------------------------------------------------------------------------------------
# comparing trees

class Entry(NamedTuple):
    type: str            # f d l c b p s
    mode: int            # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    size: int            # regular files only, else 0
    sha256: str          # regular files only
    target: str          # symlinks only
    rdev: tuple[int, int]
    xattrs: tuple[tuple[str, bytes], ...]
    link_group: str      # for inodes with several names here: the smallest of them; else ""


_TYPES = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFCHR: "c",
          stat.S_IFBLK: "b", stat.S_IFIFO: "p", stat.S_IFSOCK: "s"}


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False))
                        for n in names if not n.startswith(PRIVATE_XATTRS)))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def tree_snapshot(root: str | os.PathLike[str], *, mtimes: bool = False) -> dict[str, Any]:
    """Everything that makes a tree what it is, by path relative to ``root`` ("/" is the root
    dir itself). Never follows symlinks. With ``mtimes``, values are ``(Entry, mtime_ns)`` for
    non-directories (dir mtimes change with every entry made in them, so they are left out)."""
    root = os.fspath(root)
    out: dict[str, Any] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    stack = [("/", root)]
    raw: dict[str, tuple[os.stat_result, str]] = {}
    while stack:
        rel, full = stack.pop()
        st = os.lstat(full)
        raw[rel] = (st, full)
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        if stat.S_ISDIR(st.st_mode):
            for name in os.listdir(full):
                stack.append((("/" if rel == "/" else rel + "/") + name, os.path.join(full, name)))
    groups = {p: min(ps) for ps in inodes.values() if len(ps) > 1 for p in ps}
    for rel, (st, full) in raw.items():
        t = _TYPES[stat.S_IFMT(st.st_mode)]
        e = Entry(
            type=t, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
            size=st.st_size if t == "f" else 0,
            sha256=_sha256(full) if t == "f" else "",
            target=os.readlink(full) if t == "l" else "",
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if t in "cb" else (0, 0),
            xattrs=_xattrs(full), link_group=groups.get(rel, ""))
        out[rel] = (e, st.st_mtime_ns) if mtimes and t != "d" else e
    return out


def diff_bytes(driver: GraphDriver, id: str, parent: str | None) -> bytes:
    s = driver.diff(CacheID(id), CacheID(parent) if parent else None)
    try:
        return s.read()
    finally:
        s.close()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def apply(driver: GraphDriver, id: str, parent: str | None, tar: bytes, rw: bool = False) -> int:
    (driver.create_rw if rw else driver.create)(CacheID(id), CacheID(parent) if parent else None)
    return driver.apply_diff(CacheID(id), CacheID(parent) if parent else None, io.BytesIO(tar))


class Mounted:
    """``with Mounted(driver, id) as root:`` get ... put."""

    def __init__(self, driver: GraphDriver, id: str) -> None:
        self.driver, self.id = driver, CacheID(id)

    def __enter__(self) -> Path:
        return Path(self.driver.get(self.id))

    def __exit__(self, *exc: object) -> None:
        self.driver.put(self.id)


def snapshot_of(driver: GraphDriver, id: str, **kw: Any) -> dict[str, Any]:
    with Mounted(driver, id) as root:
        return tree_snapshot(root, **kw)


# ---------------------------------------------------------------------------------------------
# test content

def base_entries() -> list[E]:
    """A small root filesystem with one of everything."""
    big = bytes(range(256)) * 800  # 200 KiB
    return [
        E("bin", kind="symlink", target="usr/bin"),
        E("dev/", kind="dir"),
        E("dev/null", kind="char", major=1, minor=3, mode=0o666),
        E("dev/loop0", kind="block", major=7, minor=0, mode=0o660, gid=6),
        E("etc/", kind="dir"),
        E("etc/abs", kind="symlink", target="/etc/passwd"),
        E("etc/dangling", kind="symlink", target="../nowhere"),
        E("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        E("etc/shadow", b"root:*:19000:0:99999:7:::\n", mode=0o640, gid=42),
        E("home/", kind="dir"),
        E("home/user/", kind="dir", mode=0o700, uid=1000, gid=1000),
        E("home/user/notes.txt", b"hello\n", uid=1000, gid=1000, mode=0o600,
          xattrs={"user.mime_type": "text/plain"}),
        E("run/", kind="dir"),
        E("run/fifo", kind="fifo", mode=0o620),
        E("srv/", kind="dir", xattrs={"trusted.lamina-test": "dir-xattr"}),
        E("srv/big.bin", big),
        E("srv/empty", b""),
        E("srv/" + "long-name-" * 12, b"a name longer than 100 bytes\n"),
        E("srv/caf\u00e9", b"non-ascii name\n"),
        E("tmp/", kind="dir", mode=0o1777),
        E("usr/", kind="dir"),
        E("usr/bin/", kind="dir"),
        E("usr/bin/ping", b"\x7fELF ping", mode=0o755, xattrs={"security.capability": CAP_NET_RAW}),
        E("usr/bin/sg", b"\x7fELF sg", mode=0o2755),
        E("usr/bin/su", b"\x7fELF su", mode=0o4755),
        E("usr/bin/su2", kind="link", target="usr/bin/su"),
        E("usr/bin/su3", kind="link", target="usr/bin/su"),
    ]


def expected_snapshot(entries: list[E]) -> dict[str, Entry]:
    """What ``tree_snapshot`` must show after applying ``entries`` (all dirs listed explicitly)
    to an empty layer. The root dir is left out (its metadata is the driver's)."""
    out: dict[str, Entry] = {}
    groups: dict[str, list[str]] = {}
    for e in entries:
        path = "/" + e.name.rstrip("/")
        mode = e.mode if e.mode is not None else (0o755 if e.kind == "dir" else 0o644)
        xattrs = tuple(sorted((k, v.encode("utf-8")) for k, v in e.xattrs.items()))
        if e.kind == "link":
            target = "/" + e.target
            groups.setdefault(target, [target]).append(path)
            out[path] = out[target]
            continue
        t = {"file": "f", "dir": "d", "symlink": "l", "char": "c", "block": "b", "fifo": "p"}[e.kind]
        out[path] = Entry(
            type=t, mode=0o777 if t == "l" else mode, uid=e.uid, gid=e.gid,
            size=len(e.data) if t == "f" else 0,
            sha256=hashlib.sha256(e.data).hexdigest() if t == "f" else "",
            target=e.target if t == "l" else "", rdev=(e.major, e.minor) if t in "cb" else (0, 0),
            xattrs=xattrs, link_group="")
    for members in groups.values():
        for p in members:
            out[p] = out[p]._replace(link_group=min(members))
    return out


def tree_diff(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Readable differences between two snapshots (empty when equal)."""
    out = []
    for p in sorted(set(got) | set(want)):
        if got.get(p) != want.get(p):
            out.append(f"{p}: got {got.get(p)!r} want {want.get(p)!r}")
    return out


def assert_same_tree(got: dict[str, Any], want: dict[str, Any]) -> None:
    diffs = tree_diff(got, want)
    assert not diffs, "trees differ:\n" + "\n".join(diffs)


def without_root(snap: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in snap.items() if k != "/"}


def changed_layer_entries() -> list[E]:
    """A layer on top of ``whiteout_base_entries``: deletes, an opaque dir, edits, additions."""
    return [
        E("a/x", kind="whiteout"),                         # delete a file
        E("b/", kind="dir"),
        E("b/", kind="opaque"),                            # b's lower content gone...
        E("b/new", b"new in b\n"),                         # ...but this layer's entries stay
        E("c", kind="whiteout"),                           # delete a whole tree
        E("keep/mod", b"modified!\n", mtime=MTIME + 100),
        E("n/", kind="dir"),
        E("n/f", b"x" * 100),
        E("n/g", kind="link", target="n/f"),
    ]


def whiteout_base_entries() -> list[E]:
    return [
        E("a/", kind="dir"),
        E("a/x", b"x\n"),
        E("a/y", b"y\n"),
        E("b/", kind="dir"),
        E("b/sub/", kind="dir"),
        E("b/sub/w", b"w\n"),
        E("b/z", b"z\n"),
        E("c/", kind="dir"),
        E("c/d/", kind="dir"),
        E("c/d/e", b"e\n"),
        E("keep/", kind="dir"),
        E("keep/mod", b"original\n"),
        E("keep/same", b"same\n"),
    ]


# ---------------------------------------------------------------------------------------------
# the suite

@pytest.mark.skipif(os.geteuid() != 0, reason="driver conformance needs root (mknod, chown, trusted.*)")
class DriverConformance:
    """Bind with a subclass named ``Test...`` that sets ``DRIVERS``; see the module docstring."""

    DRIVERS: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def test_create_empty(self, driver: GraphDriver) -> None:
        assert not driver.exists(CacheID("empty"))
        driver.create(CacheID("empty"), None)
        assert driver.exists(CacheID("empty"))
        with Mounted(driver, "empty") as root:
            assert root.is_absolute() and root.is_dir()
            assert os.listdir(root) == []
        assert driver.changes(CacheID("empty"), None) == []
        assert driver.diff_size(CacheID("empty"), None) == 0
        assert diff_bytes(driver, "empty", None) == bytes(1024)

    def test_create_twice_raises_already_exists(self, driver: GraphDriver) -> None:
        driver.create(CacheID("l1"), None)
        with pytest.raises(AlreadyExists):
            driver.create(CacheID("l1"), None)
        with pytest.raises(AlreadyExists):
            driver.create_rw(CacheID("l1"), None)

    def test_create_with_missing_parent_raises_not_found(self, driver: GraphDriver) -> None:
        with pytest.raises(NotFound):
            driver.create(CacheID("child"), CacheID("nosuchparent"))
        with pytest.raises(NotFound):
            driver.create_rw(CacheID("child"), CacheID("nosuchparent"))
        assert not driver.exists(CacheID("child"))

    def test_hostile_ids_are_refused(self, driver: GraphDriver) -> None:
        for bad in ("../escape", "a/b", "", ".hidden", "x" * 200):
            with pytest.raises(InvalidInput):
                driver.create(CacheID(bad), None)

    def test_exists(self, driver: GraphDriver) -> None:
        assert not driver.exists(CacheID("e1"))
        driver.create(CacheID("e1"), None)
        assert driver.exists(CacheID("e1"))
        driver.remove(CacheID("e1"))
        assert not driver.exists(CacheID("e1"))

    def test_get_put_of_missing_layer_raise_not_found(self, driver: GraphDriver) -> None:
        with pytest.raises(NotFound):
            driver.get(CacheID("missing"))
        with pytest.raises(NotFound):
            driver.put(CacheID("missing"))

    def test_put_at_zero_is_a_no_op(self, driver: GraphDriver) -> None:
        driver.create(CacheID("p0"), None)
        driver.put(CacheID("p0"))
        driver.remove(CacheID("p0"))
        assert not driver.exists(CacheID("p0"))

    def test_remove_missing_is_a_no_op(self, driver: GraphDriver) -> None:
        driver.remove(CacheID("neverexisted"))
        driver.create(CacheID("r1"), None)
        driver.remove(CacheID("r1"))
        driver.remove(CacheID("r1"))

    def test_remove_of_held_layer_raises_conflict_until_put(self, driver: GraphDriver) -> None:
        apply(driver, "held", None, make_tar([E("f", b"data")]))
        driver.get(CacheID("held"))
        driver.get(CacheID("held"))
        with pytest.raises(Conflict):
            driver.remove(CacheID("held"))
        driver.put(CacheID("held"))
        with pytest.raises(Conflict):
            driver.remove(CacheID("held"))
        assert driver.exists(CacheID("held"))
        driver.put(CacheID("held"))
        driver.remove(CacheID("held"))
        assert not driver.exists(CacheID("held"))

    def test_status_returns_a_dict_of_strings(self, driver: GraphDriver) -> None:
        driver.create(CacheID("s1"), None)
        st = driver.status()
        assert isinstance(st, dict) and st
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in st.items())
        assert st.get("backing_fs") == mountapi.fstype_of(driver.home)

    def test_cleanup_releases_everything(self, driver: GraphDriver) -> None:
        apply(driver, "c1", None, make_tar([E("f", b"1")]))
        driver.create_rw(CacheID("c2"), CacheID("c1"))
        driver.get(CacheID("c1"))
        driver.get(CacheID("c2"))
        driver.get(CacheID("c2"))
        driver.cleanup()
        assert mountapi.mounts_under(driver.home) == []
        driver.remove(CacheID("c2"))   # no Conflict: nothing holds them any more
        driver.remove(CacheID("c1"))
        driver.cleanup()               # twice is harmless

    # -- content --------------------------------------------------------------------------------

    def test_base_layer_reads_back_exactly(self, driver: GraphDriver) -> None:
        entries = base_entries()
        apply(driver, "base", None, make_tar(entries))
        snap = snapshot_of(driver, "base", mtimes=True)
        expected = expected_snapshot(entries)
        got = {p: v if isinstance(v, Entry) else v[0] for p, v in without_root(snap).items()}
        assert_same_tree(got, expected)
        for p, v in snap.items():
            if not isinstance(v, Entry) and v[0].type != "l":
                assert v[1] == MTIME * 10**9, p
        # the protocol's size: bytes of regular-file content, each inode once
        assert driver.diff_size(CacheID("base"), None) == sum(
            len(e.data) for e in entries if e.kind == "file")

    def test_snapshot_sees_parent_and_writes_stay_in_child(self, driver: GraphDriver) -> None:
        apply(driver, "base", None, make_tar(base_entries()))
        before = snapshot_of(driver, "base")
        driver.create_rw(CacheID("ctr"), CacheID("base"))
        with Mounted(driver, "ctr") as root:
            assert without_root(tree_snapshot(root)) == without_root(before)
            (root / "etc/passwd").write_bytes(b"changed\n")
            (root / "etc/newfile").write_bytes(b"new\n")
            os.unlink(root / "etc/shadow")
            os.chmod(root / "srv/big.bin", 0o600)
            os.setxattr(root / "srv/empty", "user.added", b"1")
            os.rename(root / "home/user/notes.txt", root / "home/user/moved.txt")
        assert snapshot_of(driver, "base") == before
        with Mounted(driver, "ctr") as root:
            assert (root / "etc/passwd").read_bytes() == b"changed\n"
            assert not (root / "etc/shadow").exists()
        assert driver.changes(CacheID("ctr"), CacheID("base")) == [
            Change("/etc", M), Change("/etc/newfile", A), Change("/etc/passwd", M),
            Change("/etc/shadow", D), Change("/home", M), Change("/home/user", M),
            Change("/home/user/moved.txt", A), Change("/home/user/notes.txt", D),
            Change("/srv", M), Change("/srv/big.bin", M), Change("/srv/empty", M),
        ]

    def test_deep_stack_reads_the_right_version_at_every_depth(self, driver: GraphDriver) -> None:
        depth = 64
        parent = None
        for i in range(depth):
            entries = [E("v/", kind="dir"), E(f"v/f{i % 8}", b"%d" % i), E("top", b"%d" % i)]
            if i % 16 == 15:
                entries.append(E(f"gone{i}", kind="whiteout"))
            if i % 16 == 0:
                entries.append(E(f"gone{i + 15}", b"soon deleted"))
            apply(driver, f"s{i}", parent, make_tar(entries))
            parent = f"s{i}"
        for d in (0, 7, 15, 16, 40, depth - 1):
            with Mounted(driver, f"s{d}") as root:
                assert (root / "top").read_bytes() == b"%d" % d
                for k in range(8):
                    versions = [i for i in range(d + 1) if i % 8 == k]
                    f = root / "v" / f"f{k}"
                    if versions:
                        assert f.read_bytes() == b"%d" % versions[-1], (d, k)
                    else:
                        assert not f.exists(), (d, k)
                for i in range(0, d + 1, 16):
                    assert (root / f"gone{i + 15}").exists() == (d < i + 15), (d, i)
        assert driver.changes(CacheID("s63"), CacheID("s62")) == [
            Change("/gone63", D), Change("/top", M), Change("/v", M), Change("/v/f7", M)]
        for i in reversed(range(depth)):
            driver.remove(CacheID(f"s{i}"))

    def test_whiteouts_and_opaque_dirs(self, driver: GraphDriver) -> None:
        apply(driver, "wb", None, make_tar(whiteout_base_entries()))
        apply(driver, "wl", "wb", make_tar(changed_layer_entries()))
        with Mounted(driver, "wl") as root:
            files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
            assert (root / "keep/mod").read_bytes() == b"modified!\n"
        assert files == ["a", "a/y", "b", "b/new", "keep", "keep/mod", "keep/same",
                         "n", "n/f", "n/g"]
        with Mounted(driver, "wb") as root:  # the parent is untouched
            assert (root / "a/x").exists() and (root / "c/d/e").exists() and (root / "b/z").exists()

    def test_whiteout_of_an_entry_of_the_same_layer_keeps_the_entry(self, driver: GraphDriver) -> None:
        apply(driver, "ob", None, make_tar([E("d/", kind="dir"), E("d/old", b"old")]))
        # the opaque marker comes *after* this layer's own entry: the entry must survive
        apply(driver, "ol", "ob", make_tar([E("d/", kind="dir"), E("d/mine", b"mine"),
                                             E("d/", kind="opaque")]))
        with Mounted(driver, "ol") as root:
            assert sorted(os.listdir(root / "d")) == ["mine"]

    def test_changes_lists_exactly_what_changed(self, driver: GraphDriver) -> None:
        apply(driver, "wb", None, make_tar(whiteout_base_entries()))
        apply(driver, "wl", "wb", make_tar(changed_layer_entries()))
        assert driver.changes(CacheID("wl"), CacheID("wb")) == [
            Change("/a", M), Change("/a/x", D), Change("/b", M), Change("/b/new", A),
            Change("/b/sub", D), Change("/b/z", D), Change("/c", D), Change("/keep", M),
            Change("/keep/mod", M), Change("/n", A), Change("/n/f", A), Change("/n/g", A),
        ]
        assert [str(c) for c in driver.changes(CacheID("wb"), None)][:3] == ["A /a", "A /a/x", "A /a/y"]

    def test_diff_size(self, driver: GraphDriver) -> None:
        apply(driver, "wb", None, make_tar(whiteout_base_entries()))
        n = apply(driver, "wl", "wb", make_tar(changed_layer_entries()))
        # b/new (9) + keep/mod (10) + n/f (100; n/g is the same inode)
        assert driver.diff_size(CacheID("wl"), CacheID("wb")) == 9 + 10 + 100
        assert n == 9 + 10 + 100

    def test_hardlinks_within_a_layer_survive_apply_and_diff(self, driver: GraphDriver) -> None:
        tar = make_tar([E("h/", kind="dir"), E("h/a", b"linked"), E("h/b", kind="link", target="h/a"),
                        E("h/c", kind="link", target="h/a"), E("h/other", b"solo")])
        apply(driver, "hl", None, tar)
        with Mounted(driver, "hl") as root:
            ino = {n: os.lstat(root / "h" / n).st_ino for n in ("a", "b", "c", "other")}
            assert ino["a"] == ino["b"] == ino["c"] != ino["other"]
            assert os.lstat(root / "h/a").st_nlink == 3
        import tarfile
        with tarfile.open(fileobj=io.BytesIO(diff_bytes(driver, "hl", None))) as tf:
            members = {m.name: m for m in tf.getmembers()}
        assert members["h/a"].isreg() and members["h/a"].size == 6
        assert members["h/b"].islnk() and members["h/b"].linkname == "h/a"
        assert members["h/c"].islnk() and members["h/c"].linkname == "h/a"

    def test_hardlink_made_in_a_container_layer(self, driver: GraphDriver) -> None:
        apply(driver, "hb", None, make_tar([E("h/", kind="dir"), E("h/a", b"lower")]))
        driver.create_rw(CacheID("hc"), CacheID("hb"))
        with Mounted(driver, "hc") as root:
            os.link(root / "h/a", root / "h/new")
            assert os.lstat(root / "h/a").st_ino == os.lstat(root / "h/new").st_ino
            (root / "h/x").write_bytes(b"x")
            os.link(root / "h/x", root / "h/y")
        assert driver.changes(CacheID("hc"), CacheID("hb")) == [
            Change("/h", M), Change("/h/new", A), Change("/h/x", A), Change("/h/y", A)]
        self._round_trip(driver, "hc", "hb", make_tar([E("h/", kind="dir"), E("h/a", b"lower")]),
                         unlinked=("/h/a",))

    def test_xattrs(self, driver: GraphDriver) -> None:
        entries = [
            E("d/", kind="dir", xattrs={"user.dir": "on a dir", "trusted.t": "t"}),
            E("d/f", b"f", xattrs={"user.a": "1", "user.b": "", "trusted.bin": "\x00\x01\x7f"}),
            E("d/cap", b"c", xattrs={"security.capability": CAP_NET_RAW}),
            E("d/ln", kind="symlink", target="f", xattrs={"trusted.on-link": "yes"}),
        ]
        apply(driver, "xa", None, make_tar(entries))
        with Mounted(driver, "xa") as root:
            r = str(root)
            assert os.getxattr(r + "/d", "user.dir") == b"on a dir"
            assert os.getxattr(r + "/d", "trusted.t") == b"t"
            assert os.getxattr(r + "/d/f", "user.a") == b"1"
            assert os.getxattr(r + "/d/f", "user.b") == b""
            assert os.getxattr(r + "/d/f", "trusted.bin") == b"\x00\x01\x7f"
            assert os.getxattr(r + "/d/cap", "security.capability") == CAP_NET_RAW.encode("latin-1")
            assert os.getxattr(r + "/d/ln", "trusted.on-link", follow_symlinks=False) == b"yes"
        # an xattr change alone is a modification, and it travels in the diff
        driver.create_rw(CacheID("xc"), CacheID("xa"))
        with Mounted(driver, "xc") as root:
            os.setxattr(str(root / "d/f"), "user.a", b"2")
            os.removexattr(str(root / "d/f"), "user.b")
        assert driver.changes(CacheID("xc"), CacheID("xa")) == [Change("/d", M), Change("/d/f", M)]
        self._round_trip(driver, "xc", "xa", make_tar(entries))

    # -- diffs ----------------------------------------------------------------------------------

    def _round_trip(self, driver: GraphDriver, id: str, parent: str, parent_tar: bytes,
                    unlinked: tuple[str, ...] = ()) -> bytes:
        """diff(id, parent) applied onto a fresh copy of the parent gives the same tree and the
        same diff bytes again. Returns the diff. ``unlinked``: paths hardlinked to a file of a
        lower layer, which a layer tar carries as a plain copy (as Docker's do)."""
        first = diff_bytes(driver, id, parent)
        apply(driver, parent + "-copy", None, parent_tar)
        apply(driver, id + "-copy", parent + "-copy", first)
        want = without_root(_seconds(snapshot_of(driver, id, mtimes=True)))
        for p in unlinked:
            for q in [q for q, v in want.items() if not isinstance(v, Entry) and v[0].link_group == p]:
                want[q] = (want[q][0]._replace(link_group=""), want[q][1])
        assert_same_tree(without_root(snapshot_of(driver, id + "-copy", mtimes=True)), want)
        second = diff_bytes(driver, id + "-copy", parent + "-copy")
        assert sha(second) == sha(first)
        return first

    def test_apply_diff_apply_gives_identical_tree_and_diff(self, driver: GraphDriver) -> None:
        base_tar = make_tar(whiteout_base_entries())
        apply(driver, "wb", None, base_tar)
        apply(driver, "wl", "wb", make_tar(changed_layer_entries()))
        first = self._round_trip(driver, "wl", "wb", base_tar)
        assert diff_bytes(driver, "wl", "wb") == first  # deterministic

    def test_base_layer_round_trips_byte_for_byte(self, driver: GraphDriver) -> None:
        tar = make_tar(base_entries())
        apply(driver, "b1", None, tar)
        d1 = diff_bytes(driver, "b1", None)
        apply(driver, "b2", None, d1)
        assert_same_tree(snapshot_of(driver, "b2", mtimes=True), snapshot_of(driver, "b1", mtimes=True))
        assert sha(diff_bytes(driver, "b2", None)) == sha(d1)

    def test_container_layer_diff_round_trips(self, driver: GraphDriver) -> None:
        base_tar = make_tar(base_entries())
        apply(driver, "base", None, base_tar)
        driver.create_rw(CacheID("ctr"), CacheID("base"))
        with Mounted(driver, "ctr") as root:
            (root / "etc/passwd").write_bytes(b"root:x:0:0::/root:/bin/bash\n")
            os.unlink(root / "usr/bin/su2")
            import shutil
            shutil.rmtree(root / "home/user")
            (root / "srv/newdir/deeper").mkdir(parents=True)
            (root / "srv/newdir/deeper/file").write_bytes(b"deep")
            os.symlink("/etc/passwd", root / "srv/newdir/link")
            os.mkfifo(root / "srv/newdir/fifo")
            os.chown(root / "srv/big.bin", 123, 456)
            os.rmdir(root / "tmp")
            (root / "tmp").write_bytes(b"a file where a dir was")
            (root / "etc/passwd.d").mkdir()
        ch = driver.changes(CacheID("ctr"), CacheID("base"))
        assert Change("/home/user", D) in ch and Change("/tmp", M) in ch
        assert not any(c.path.startswith("/home/user/") for c in ch)
        self._round_trip(driver, "ctr", "base", base_tar)

    # -- concurrency ----------------------------------------------------------------------------

    def test_concurrent_get_put_from_threads(self, driver: GraphDriver) -> None:
        apply(driver, "cb", None, make_tar([E("f", b"base")]))
        apply(driver, "cc", "cb", make_tar([E("g", b"child")]))
        errors: list[BaseException] = []
        paths: set[str] = set()

        def worker() -> None:
            try:
                for _ in range(25):
                    p = driver.get(CacheID("cc"))
                    paths.add(p)
                    assert Path(p, "f").read_bytes() == b"base"
                    assert Path(p, "g").read_bytes() == b"child"
                    driver.put(CacheID("cc"))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(paths) == 1
        assert mountapi.mounts_under(driver.home) == []
        driver.remove(CacheID("cc"))  # count is back at 0

    def test_concurrent_get_put_from_processes(self, driver: GraphDriver, driver_name: str) -> None:
        apply(driver, "pb", None, make_tar([E("f", b"base")]))
        apply(driver, "pc", "pb", make_tar([E("g", b"child")]))
        # Two processes mount and release the same layer over and over at the same time: each
        # read checks that the other never released it under a holder (the count is shared).
        procs = [_spawn(driver_name, driver.home, "cycle", "pc", "30") for _ in range(2)]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        assert mountapi.mounts_under(driver.home) == []
        # and with this process holding it throughout, the others never unmount it
        root = driver.get(CacheID("pc"))
        procs = [_spawn(driver_name, driver.home, "cycle", "pc", "10") for _ in range(2)]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        assert Path(root, "g").read_bytes() == b"child"
        with pytest.raises(Conflict):
            driver.remove(CacheID("pc"))
        driver.put(CacheID("pc"))
        assert mountapi.mounts_under(driver.home) == []
        driver.remove(CacheID("pc"))

    def test_reference_taken_by_another_process_is_seen(self, driver: GraphDriver,
                                                         driver_name: str) -> None:
        apply(driver, "xb", None, make_tar([E("f", b"base")]))
        # like `lamina mount`: one process gets, keeps and exits; another must see the reference
        p = _spawn(driver_name, driver.home, "keep", "xb")
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert Path(out.strip(), "f").read_bytes() == b"base"
        with pytest.raises(Conflict):
            driver.remove(CacheID("xb"))
        p = _spawn(driver_name, driver.home, "put", "xb")
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert mountapi.mounts_under(driver.home) == []
        driver.remove(CacheID("xb"))
        assert not driver.exists(CacheID("xb"))


    def test_reference_of_a_process_that_ended_without_put_is_dropped(self, driver: GraphDriver,
                                                                       driver_name: str) -> None:
        """A count belongs to its process (unless kept): one that ends holding it (killed inside
        ``create``, a power cut) blocks nothing afterwards, and its mount is undone."""
        apply(driver, "xb", None, make_tar([E("f", b"base")]))
        p = _spawn(driver_name, driver.home, "get", "xb")
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        if isinstance(driver, HeldCounts):
            assert driver.held_count(CacheID("xb")) == 0
        driver.remove(CacheID("xb"))  # no Conflict: nobody alive holds it
        assert not driver.exists(CacheID("xb"))
        assert mountapi.mounts_under(driver.home) == []


def _seconds(snap: dict[str, Any]) -> dict[str, Any]:
    """mtimes as a layer tar carries them: whole seconds."""
    return {p: v if isinstance(v, Entry) else (v[0], v[1] // 10**9 * 10**9) for p, v in snap.items()}


_WORKER = """
import sys
from pathlib import Path
import os
import drivers
name, home, action, id = sys.argv[1:5]
if name not in drivers.DRIVERS:  # a driver a test registered (tests/drivers/test_naive_diff.py)
    drivers.DRIVERS[name] = drivers.DriverInfo(*os.environ["LAMINA_TEST_DRIVER"].split(":"))
d = drivers.open_driver(name, Path(home))
if action == "cycle":
    for _ in range(int(sys.argv[5])):
        p = d.get(id)
        assert (Path(p) / "g").read_bytes() == b"child"
        d.put(id)
elif action == "get":  # and exit holding it: as a process that died would
    print(d.get(id))
elif action == "keep":  # `lamina mount`: the count is handed over and outlives this process
    print(d.get(id))
    from drivers.base import KeptCounts
    assert isinstance(d, KeptCounts)
    d.keep(id)
elif action == "put":
    d.put(id)
"""


def _spawn(name: str, home: Path, *args: str) -> subprocess.Popen[str]:
    info = drivers.DRIVERS[name]
    env = dict(os.environ, PYTHONPATH=str(REPO), LAMINA_TEST_DRIVER=f"{info.module}:{info.cls}")
    return subprocess.Popen([sys.executable, "-c", _WORKER, name, str(home), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=str(REPO))
