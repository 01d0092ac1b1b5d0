"""Differential fuzzer: every driver gives the same rootfs for every layer stack, and that rootfs
is the one the OCI changeset model (``tests/drivers/ocimodel.py``) says.

hypothesis draws stacks (``tests/drivers/fuzzstacks.py``: the same ones on every machine in the
bounded profile) of 1-6 layers from a small name pool (so entries collide: every type
replaces every type, paths cross symlinks of the same or a lower layer, whiteouts and opaque dirs
hit real entries, parents are left implicit), with modes (setuid/setgid/sticky, 0000, read-only
dirs), owners, xattrs (user.*, security.capability), ns mtimes, fifos, device nodes, hardlinks
within a layer and to lower layers, long names, NFC/NFD pairs and names that are not UTF-8.
Each stack is applied on every driver this machine runs (vfs, overlay and fuse on one loop ext4,
btrfs on a loop btrfs: one home per driver for the whole module, layers removed after each
stack), the top layer is walked (``tree_snapshot`` with mtimes) and compared: each driver with
vfs, vfs with the model. A stack the model refuses must be refused by every driver at the same
layer.

Profiles: ``LAMINA_FUZZ=long`` (``make test-fuzz-long``) runs many more stacks and also unpacks
each with ``umoci unpack`` (an independent implementation) and compares it with vfs.
Shrunk failures found on the way are kept below as ``REGRESSIONS`` cases.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import event

import drivers
from drivers.base import CacheID, GraphDriver
from drivers.errors import InvalidInput
from tests.drivers.conformance import tree_diff, tree_snapshot
from tests.drivers.fuzzstacks import LONG, NFC, NFD, fuzz, same_stacks_everywhere
from tests.drivers.ocimodel import E, Refused, apply_stack, layer_tar
from tests.loopfs import loopfs_skip_reason, make_loop_filesystem

pytestmark = pytest.mark.integration

if os.geteuid() != 0:
    pytest.skip("the differential fuzzer needs root (mounts, device nodes, chown)",
                allow_module_level=True)

DRIVERS = ["vfs", "overlay", "btrfs", "fuse"]

# ---------------------------------------------------------------------------------- drivers
@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """One home per driver for the whole module: vfs, overlay, fuse on a loop ext4 (journaled,
    see MACHINE-NOTES), btrfs on a loop btrfs."""
    base = tmp_path_factory.mktemp("differential")
    out: dict[str, Path] = {}
    with contextlib.ExitStack() as stack:
        for fstype in ("ext4", "btrfs"):
            if loopfs_skip_reason(fstype):
                continue
            fs = make_loop_filesystem(base, fstype, "4G")
            stack.callback(fs.close)
            for name in (["btrfs"] if fstype == "btrfs" else ["vfs", "overlay", "fuse"]):
                out[name] = fs.mountpoint / name
        yield out


@pytest.fixture(scope="module")
def opened(homes: dict[str, Path]) -> Iterator[dict[str, GraphDriver | str]]:
    """name -> opened driver, or the reason it cannot run here."""
    out: dict[str, GraphDriver | str] = {}
    try:
        for name in DRIVERS:
            home = homes.get(name)
            why = "no loop filesystem for its home" if home is None else drivers.supported(name, home)
            out[name] = why if why is not None else drivers.open_driver(name, home)
        yield out
    finally:
        for d in out.values():
            if not isinstance(d, str):
                d.cleanup()


@pytest.mark.parametrize("name", DRIVERS)
def test_driver_runs_here(opened: dict[str, GraphDriver | str], name: str) -> None:
    """Which drivers the fuzzer compares: a driver that cannot run here is a visible skip."""
    if isinstance(opened[name], str):
        pytest.skip(f"{name}: {opened[name]}")


_ids = itertools.count()


def run_stack(driver: GraphDriver, layers: list[bytes]) -> dict[str, Any] | Refused:
    """Apply the layer tars on ``driver``, walk the top layer, remove every layer again."""
    made: list[CacheID] = []
    parent: CacheID | None = None
    try:
        for i, tar in enumerate(layers):
            cid = CacheID(f"fz{next(_ids)}")
            driver.create(cid, parent)
            made.append(cid)
            try:
                driver.apply_diff(cid, parent, io.BytesIO(tar))
            except InvalidInput as e:
                return Refused(i, str(e))
            parent = cid
        assert parent is not None
        root = driver.get(parent)
        try:
            snap = tree_snapshot(root, mtimes=True)
        finally:
            driver.put(parent)
        snap.pop("/")
        return snap
    finally:
        for cid in reversed(made):
            driver.remove(cid)


def _show(result: dict[str, Any] | Refused) -> str:
    return f"refused at layer {result.index}: {result.why}" if isinstance(result, Refused) else "a tree"


def compare(name: str, got: dict[str, Any] | Refused, want: dict[str, Any] | Refused,
            against: str) -> list[str]:
    if isinstance(got, Refused) or isinstance(want, Refused):
        same = (isinstance(got, Refused) and isinstance(want, Refused)
                and got.index == want.index)
        return [] if same else [f"{name}: {_show(got)}; {against}: {_show(want)}"]
    return [f"{name} vs {against}: {d}" for d in tree_diff(got, want)]


def check_stack(opened: dict[str, GraphDriver | str], stack: list[list[E]],
                tmp: Path | None = None) -> None:
    """Apply ``stack`` on every driver; each must give vfs's walk, and vfs the model's. Stops at
    the first driver that differs (shrinking then runs fewer drivers per try)."""
    tars = [layer_tar(layer) for layer in stack]
    want = apply_stack(stack)
    ref = run_stack(opened["vfs"], tars)  # type: ignore[arg-type]
    problems = compare("vfs", ref, want, "model")
    for name, d in opened.items():
        if problems:
            break
        if name != "vfs" and not isinstance(d, str):
            problems += compare(name, run_stack(d, tars), ref, "vfs")
    if LONG and tmp is not None and not problems and not isinstance(ref, Refused):
        problems += compare("umoci", umoci_unpack(tars, tmp), ref, "vfs")
    assert not problems, "drivers differ:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------- the fuzzer
REGRESSIONS: list[list[list[E]]] = [
    # issue 14 item 1: an implicit parent takes the lower dir's metadata
    [[E("dir", b"a", 0o700, uid=7, gid=8, xattrs=((b"user.a", b"1"),)), E("file", b"a/f")],
     [E("file", b"a/b/f")]],
    # item 2: a hardlink to a lower layer's file
    [[E("file", b"a", 0o4755, uid=3, data=b"x", xattrs=((b"user.a", b"1"),))],
     [E("link", b"b", target=b"a")]],
    # item 3: a path through a lower layer's symlink is followed inside the rootfs
    [[E("symlink", b"a", target=b"/b/c")], [E("file", b"a/f", data=b"p")]],
    # item 4: NFC and NFD are two names; a whiteout of one leaves the other
    [[E("file", NFC, data=b"nfc"), E("file", NFD, data=b"nfd")], [E("whiteout", NFD)]],
    # found by the fuzzer (shrunk by hand): a hardlink to a lower file that has other names
    # there must keep the whole group one inode (the copy-up links every visible name)
    [[E("file", b"a", data=b"x"), E("link", b"b", target=b"a"), E("link", b"c/d", target=b"a")],
     [E("whiteout", b"c"), E("link", b"e", target=b"a")]],
    # found by the fuzzer: a whiteout in a base layer makes no parent dirs on overlay/fuse
    [[E("whiteout", b"a/b/c"), E("opaque", b"d/e")]],
    # the parts of a copy-up this layer did not write go with a later whiteout of the layer
    [[E("dir", b"t", 0o700, uid=5), E("file", b"t/x", data=b"x")],
     [E("link", b"y", target=b"t/x"), E("whiteout", b"t/x"), E("file", b"u/v"),
      E("opaque", b"u")],
     [E("link", b"t2", target=b"y"), E("whiteout", b"t")]],
    # a dir over a dir takes the entry's xattrs only
    [[E("dir", b"a", xattrs=((b"user.a", b"1"),))], [E("dir", b"a", xattrs=((b"user.b", b"2"),))]],
    # found by the fuzzer (shrunk): a dir over a symlink this layer wrote over a lower dir must
    # hide the lower dir's content (overlay/fuse showed /D/a)
    [[E("file", b"a")], [E("file", NFD + b"/a")],
     [E("symlink", NFD, 0o777, target=b"a"), E("dir", NFD)]],
    # a whiteout, then an entry below the whited-out dir: a fresh dir hiding the lower one
    [[E("dir", b"a", 0o700), E("file", b"a/old")], [E("whiteout", b"a"), E("file", b"a/new")]],
    # found by the fuzzer in a fresh Debian tree (written down by hand): an implicit parent under
    # a setgid dir is root:root 0755, not the group (and setgid bit) the kernel hands down; in
    # the same layer, and under a lower layer's setgid dir (overlay/fuse copy that one up first)
    [[E("dir", b"a", 0o2775, uid=1000, gid=1), E("file", b"a/b/f")]],
    [[E("dir", b"a", 0o2775, gid=1)], [E("file", b"a/b/f")]],
]


@pytest.mark.parametrize("stack", REGRESSIONS, ids=[f"case{i}" for i in range(len(REGRESSIONS))])
def test_regressions(opened: dict[str, GraphDriver | str], stack: list[list[E]],
                     tmp_path: Path) -> None:
    check_stack(opened, stack, tmp_path)


@pytest.fixture(scope="module", autouse=True)
def _same_stacks_everywhere() -> Iterator[None]:
    with same_stacks_everywhere():
        yield


@pytest.mark.timeout(0 if LONG else 1200)  # a failure's shrinking takes minutes
@fuzz
def test_every_driver_gives_the_model_tree(opened: dict[str, GraphDriver | str],
                                           stack: list[list[E]], tmp_path: Path) -> None:
    want = apply_stack(stack)
    event("refused" if isinstance(want, Refused) else f"tree of {len(want) // 10 * 10}+ entries")
    check_stack(opened, stack, tmp_path)


# ------------------------------------------------------------------------ umoci (long profile)
def umoci_unpack(tars: list[bytes], tmp: Path) -> dict[str, Any] | Refused:
    """Unpack the stack with ``umoci unpack`` (uncompressed layers in an OCI layout)."""
    work = tmp / f"umoci-{next(_ids)}"
    blobs = work / "layout" / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes, media: str) -> dict[str, Any]:
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return {"mediaType": media, "digest": f"sha256:{d}", "size": len(data)}

    diff_ids = [f"sha256:{hashlib.sha256(t).hexdigest()}" for t in tars]
    config = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                              "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode(),
                  "application/vnd.oci.image.config.v1+json")
    manifest = blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [blob(t, "application/vnd.oci.image.layer.v1.tar") for t in tars]}).encode(),
        "application/vnd.oci.image.manifest.v1+json")
    manifest["annotations"] = {"org.opencontainers.image.ref.name": "t"}
    (work / "layout" / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (work / "layout" / "index.json").write_text(json.dumps({"schemaVersion": 2,
                                                            "manifests": [manifest]}))
    try:
        p = subprocess.run(["umoci", "unpack", "--image", f"{work / 'layout'}:t",
                            str(work / "bundle")], capture_output=True, text=True)
        if p.returncode != 0:
            return Refused(-1, p.stderr.strip())
        snap = tree_snapshot(work / "bundle" / "rootfs", mtimes=True)
        snap.pop("/")
        return snap
    finally:
        shutil.rmtree(work, ignore_errors=True)
