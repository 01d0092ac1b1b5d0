"""The ``realistic`` image: three layers as real images are made.

1. A Debian minbase root filesystem, made by Debian's own ``debootstrap --variant=minbase``
   (it downloads the .debs from the mirror; they are kept in the cache's ``debs/``).
2. A python3 layer: a second ``debootstrap --include=python3`` root, diffed against the first
   (added and changed files, whiteouts for removed ones) as ``docker build`` would record it.
3. An application layer made from the seed: a node_modules-like tree of a few thousand small
   files and symlinks, plus deletions of lower files (whiteouts) and one opaque directory.

The root filesystems are removed once their tars exist; the tars are cached, so debootstrap runs
once per machine (and again only when the generator version changes). The result is not
byte-identical across machines or months (Debian updates packages); the workload's identity (its
manifest digest) is recorded with every result, and ``compare`` says when two runs differ in it.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Callable, Iterator

from bench.workloads.synthetic import MTIME, content

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
EXCLUDE_CONTENTS = ("dev", "proc", "sys")  # kept as empty dirs, as in Docker images
EXCLUDE_PREFIXES = ("var/cache/apt/archives/", "var/lib/apt/lists/", "debootstrap/")
APP_FILES = 3000


class RealisticError(RuntimeError):
    """The realistic image could not be built (debootstrap failed, no network, not root)."""


def unavailable() -> str | None:
    """Why the realistic image cannot be built here (None: it can)."""
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed (scripts/setup.sh --bench installs it)"
    if os.geteuid() != 0:
        return "debootstrap needs root"
    return None


def debootstrap(target: Path, cache: Path, mirror: str, include: str | None,
                log: Callable[[str], None]) -> None:
    if target.exists():
        shutil.rmtree(target)
    cache.mkdir(parents=True, exist_ok=True)
    argv = ["debootstrap", "--variant=minbase", f"--cache-dir={cache}"]
    if include:
        argv.append(f"--include={include}")
    argv += [SUITE, str(target), mirror]
    log(f"realistic: {' '.join(argv)} (a minute or two, once per machine)")
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        tail = (p.stdout + p.stderr).strip().splitlines()[-5:]
        shutil.rmtree(target, ignore_errors=True)
        raise RealisticError(f"debootstrap {SUITE} failed (exit {p.returncode}): {' | '.join(tail)}")


def _skip(rel: str) -> bool:
    top = rel.split("/", 1)[0]
    if top in EXCLUDE_CONTENTS and "/" in rel:
        return True
    return any(rel.startswith(p) and rel != p.rstrip("/") for p in EXCLUDE_PREFIXES)


def walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of every entry under ``root``, depth first, parents before
    children, names sorted; excluded contents are left out."""

    def rec(rel: str) -> Iterator[tuple[str, os.stat_result]]:
        for name in sorted(os.listdir(root / rel if rel else root)):
            r = f"{rel}/{name}" if rel else name
            if _skip(r):
                continue
            st = os.lstat(root / r)
            yield r, st
            if stat.S_ISDIR(st.st_mode):
                yield from rec(r)

    yield from rec("")


def _tarinfo(root: Path, rel: str, st: os.stat_result) -> tarfile.TarInfo | None:
    ti = tarfile.TarInfo(rel)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid, ti.uname, ti.gname = st.st_uid, st.st_gid, "", ""
    ti.mtime = int(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        ti.type = tarfile.DIRTYPE
    elif stat.S_ISREG(st.st_mode):
        ti.type, ti.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISLNK(st.st_mode):
        ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(root / rel)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(st.st_mode):
        ti.type = tarfile.FIFOTYPE
    else:
        return None  # sockets do not go into images
    return ti


class _LinkTracker:
    """Hard links inside one layer: the first name of an inode is written as a file, later
    names as links to it."""

    def __init__(self) -> None:
        self.first: dict[tuple[int, int], str] = {}

    def link_target(self, rel: str, st: os.stat_result) -> str | None:
        if not stat.S_ISREG(st.st_mode) or st.st_nlink < 2:
            return None
        key = (st.st_dev, st.st_ino)
        if key in self.first:
            return self.first[key]
        self.first[key] = rel
        return None


def _add(tf: tarfile.TarFile, root: Path, rel: str, st: os.stat_result, links: _LinkTracker) -> None:
    ti = _tarinfo(root, rel, st)
    if ti is None:
        return
    target = links.link_target(rel, st)
    if target is not None:
        ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, target, 0
        tf.addfile(ti)
    elif ti.type == tarfile.REGTYPE:
        with open(root / rel, "rb") as f:
            tf.addfile(ti, f)
    else:
        tf.addfile(ti)


def tree_tar(root: Path, out: Path) -> None:
    """The whole tree as a layer tar (PAX, numeric owners, no user names)."""
    tmp = out.with_name(out.name + ".tmp")
    links = _LinkTracker()
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for rel, st in walk(root):
            _add(tf, root, rel, st, links)
    os.replace(tmp, out)


def _same_file(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _differs(old_root: Path, new_root: Path, rel: str, old: os.stat_result, new: os.stat_result) -> bool:
    if stat.S_IFMT(old.st_mode) != stat.S_IFMT(new.st_mode):
        return True
    if (old.st_mode, old.st_uid, old.st_gid) != (new.st_mode, new.st_uid, new.st_gid):
        return True
    if stat.S_ISLNK(new.st_mode):
        return os.readlink(old_root / rel) != os.readlink(new_root / rel)
    if stat.S_ISREG(new.st_mode):
        return old.st_size != new.st_size or not _same_file(old_root / rel, new_root / rel)
    if stat.S_ISCHR(new.st_mode) or stat.S_ISBLK(new.st_mode):
        return old.st_rdev != new.st_rdev
    return False


def diff_tar(old_root: Path, new_root: Path, out: Path) -> None:
    """What turns ``old_root`` into ``new_root``, as an OCI layer tar: changed and added entries
    with their parent directories, and a ``.wh.`` whiteout for each removed top-most path."""
    old = dict(walk(old_root))
    new = list(walk(new_root))
    changed: set[str] = set()
    for rel, st in new:
        o = old.get(rel)
        if o is None or _differs(old_root, new_root, rel, o, st):
            changed.add(rel)
    new_names = {rel for rel, _ in new}
    removed = sorted(rel for rel in old if rel not in new_names
                     and (("/" not in rel) or rel.rsplit("/", 1)[0] in new_names))
    needed = set(changed)
    for rel in list(changed) + removed:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            needed.add("/".join(parts[:i]))
    tmp = out.with_name(out.name + ".tmp")
    links = _LinkTracker()
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for rel, st in new:
            if rel in needed:
                _add(tf, new_root, rel, st, links)
        for rel in removed:
            parent, _, name = rel.rpartition("/")
            wh = tarfile.TarInfo(f"{parent}/.wh.{name}" if parent else f".wh.{name}")
            wh.mode, wh.mtime = 0o644, MTIME
            tf.addfile(wh, io.BytesIO(b""))
    os.replace(tmp, out)


# Lower paths the application layer deletes (the ones present get a whiteout), and a directory
# it makes opaque (its lower content hidden, one new file inside).
APP_DELETIONS = ("var/log/dpkg.log", "var/log/apt/history.log", "usr/share/doc/python3",
                 "usr/share/doc/python3.11", "etc/motd")
APP_OPAQUE = "var/cache/debconf"


def app_tar(out: Path, seed: int, lower_names: set[str]) -> None:
    """The application layer: ``app/`` with ``APP_FILES`` small files (JavaScript-sized: 200 B to
    8 KiB) in package dirs, a few symlinks, whiteouts and one opaque directory."""
    rng = random.Random(f"{seed}:realistic:app")
    tmp = out.with_name(out.name + ".tmp")

    def d(tf: tarfile.TarFile, name: str) -> None:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, MTIME
        tf.addfile(ti)

    def f(tf: tarfile.TarFile, name: str, data: bytes) -> None:
        ti = tarfile.TarInfo(name)
        ti.mode, ti.mtime, ti.size = 0o644, MTIME, len(data)
        tf.addfile(ti, io.BytesIO(data))

    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        d(tf, "app")
        d(tf, "app/bin")
        d(tf, "app/node_modules")
        pkgs = APP_FILES // 10
        for p in range(pkgs):
            base = f"app/node_modules/pkg{p:04d}"
            d(tf, base)
            d(tf, f"{base}/lib")
            f(tf, f"{base}/package.json", f'{{"name": "pkg{p:04d}", "version": "1.{p}.0"}}\n'.encode())
            for k in range(9):
                f(tf, f"{base}/lib/m{k}.js", content(rng, rng.randint(200, 8192)))
        for p in range(0, pkgs, 10):
            ti = tarfile.TarInfo(f"app/bin/tool{p:04d}")
            ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, f"../node_modules/pkg{p:04d}/lib/m0.js", 0o777, MTIME
            tf.addfile(ti)
        f(tf, "app/app.conf", b"listen = 8080\n")
        for rel in APP_DELETIONS:
            if rel in lower_names:
                parent, _, name = rel.rpartition("/")
                f(tf, f"{parent}/.wh.{name}", b"")
        if APP_OPAQUE in lower_names:
            f(tf, f"{APP_OPAQUE}/.wh..wh..opq", b"")
            f(tf, f"{APP_OPAQUE}/app-cache", b"rebuilt by the application layer\n")
    os.replace(tmp, out)


def build_layers(dir: Path, seed: int, mirror: str, log: Callable[[str], None]) -> list[Path]:
    """The three layer tars (cached in ``dir``); debootstrap runs only for missing ones."""
    reason = unavailable()
    base_tar, py_tar = dir / "base.tar", dir / "python3.tar"
    app = dir / f"app-s{seed}.tar"
    names_file = dir / "python3.names"
    dir.mkdir(parents=True, exist_ok=True)
    if not (base_tar.exists() and py_tar.exists() and names_file.exists()):
        if reason:
            raise RealisticError(reason)
        root1, root2 = dir / "rootfs-base", dir / "rootfs-python3"
        try:
            debootstrap(root1, dir / "debs", mirror, None, log)
            log("realistic: writing the base layer")
            tree_tar(root1, base_tar)
            debootstrap(root2, dir / "debs", mirror, "python3", log)
            log("realistic: diffing the python3 layer")
            diff_tar(root1, root2, py_tar)
            names_file.write_text("\n".join(rel for rel, _ in walk(root2)) + "\n")
        finally:
            for r in (root1, root2):
                shutil.rmtree(r, ignore_errors=True)
    if not app.exists():
        app_tar(app, seed, set(names_file.read_text().split("\n")))
    return [base_tar, py_tar, app]
