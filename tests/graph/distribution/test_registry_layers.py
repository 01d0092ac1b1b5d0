"""The layer store's two-phase register (``prepare`` / ``apply_prepared`` / ``commit_prepared`` /
``abort_prepared``) that pulls use to apply several layers of a stack at once: on vfs (a layer
starts as a copy of its parent) and overlay (layer N needs N-1 only created, not applied), with a
lost race, and with a crash at every step (the pending row makes ``recover`` roll it back)."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Iterator

import pytest

import drivers
from drivers.base import ParallelApply
from graph import Bug, DigestMismatch, InvalidInput, NotFound, Store, chain_id
from graph.digest import ChainID, DiffID, Digest
from tests.tarbuild import E, make_tar

BASE = make_tar([E("etc", kind="dir"), E("etc/os-release", b"NAME=test\n"), E("bin", kind="dir"),
                 E("bin/sh", b"#!shell\n", mode=0o755)])
APP = make_tar([E("app", kind="dir"), E("app/main.py", b"print('hi')\n"), E("etc/os-release", kind="whiteout")])


def did(data: bytes) -> DiffID:
    return DiffID(Digest.of(data))


@pytest.fixture(params=["vfs", "overlay"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    reason = drivers.supported(request.param, tmp_path / "probe")
    if reason is not None:
        pytest.skip(f"{request.param}: {reason}")
    s = Store(tmp_path / "root", driver=request.param)
    try:
        yield s
    finally:
        s.driver.cleanup()
        s.close()


def _tree(store: Store, chain: ChainID) -> set[str]:
    path = store.layers.mount(store.layers.get(chain).cache_id)
    try:
        out = set()
        for dirpath, dirnames, filenames in os.walk(path):
            for n in dirnames + filenames:
                out.add(os.path.relpath(os.path.join(dirpath, n), path))
        return out
    finally:
        store.layers.unmount(store.layers.get(chain).cache_id)


def test_two_phases_give_the_same_layers_as_register(store: Store) -> None:
    c0 = store.layers.prepare(None)
    c1_parent = c0
    parallel = isinstance(store.driver, ParallelApply) and store.driver.parallel_apply
    if parallel:  # overlay: the child may be prepared (and applied) before its parent is applied
        c1 = store.layers.prepare(c1_parent)
        assert store.layers.apply_prepared(c1, c0, io.BytesIO(APP)) == (did(APP), len(b"print('hi')\n"))
        d0, s0 = store.layers.apply_prepared(c0, None, io.BytesIO(BASE))
    else:
        d0, s0 = store.layers.apply_prepared(c0, None, io.BytesIO(BASE))
        c1 = store.layers.prepare(c0)
        store.layers.apply_prepared(c1, c0, io.BytesIO(APP), expected_diff_id=did(APP))
    assert d0 == did(BASE)
    assert len(store.db.query("SELECT * FROM pending")) == 2
    base, ours = store.layers.commit_prepared(c0, None, d0, s0)
    assert ours and base.chain_id == did(BASE) and base.cache_id == c0
    app, ours = store.layers.commit_prepared(c1, base.chain_id, did(APP), 12)
    assert ours and app.chain_id == chain_id(base.chain_id, did(APP))
    assert store.db.query("SELECT * FROM pending") == []
    assert _tree(store, app.chain_id) == {"etc", "bin", "bin/sh", "app", "app/main.py"}
    assert store.check() == []


def test_commit_of_an_existing_chain_hands_back_the_recorded_layer(store: Store) -> None:
    recorded = store.layers.register(io.BytesIO(BASE), None)
    cid = store.layers.prepare(None)
    d, size = store.layers.apply_prepared(cid, None, io.BytesIO(BASE))
    layer, ours = store.layers.commit_prepared(cid, None, d, size)
    assert not ours and layer == recorded
    assert store.db.one("SELECT 1 FROM pending WHERE cache_id = ?", (cid,)) is not None  # still ours to drop
    store.layers.abort_prepared(cid)
    assert not store.driver.exists(cid) and store.check() == []


def test_wrong_diff_id_and_hostile_tar_are_refused(store: Store) -> None:
    cid = store.layers.prepare(None)
    with pytest.raises(DigestMismatch):
        store.layers.apply_prepared(cid, None, io.BytesIO(BASE), expected_diff_id=did(APP))
    store.layers.abort_prepared(cid)
    cid = store.layers.prepare(None)
    with pytest.raises(InvalidInput):
        store.layers.apply_prepared(cid, None, io.BytesIO(make_tar([E("../out", b"x")])))
    store.layers.abort_prepared(cid)
    assert store.layers.list() == [] and store.check() == []


def test_commit_needs_a_recorded_parent_and_abort_refuses_recorded_layers(store: Store) -> None:
    cid = store.layers.prepare(None)
    store.layers.apply_prepared(cid, None, io.BytesIO(APP))
    with pytest.raises(NotFound):
        store.layers.commit_prepared(cid, ChainID(did(BASE)), did(APP), 12)
    store.layers.abort_prepared(cid)
    base = store.layers.register(io.BytesIO(BASE), None)
    with pytest.raises(Bug):
        store.layers.abort_prepared(base.cache_id)
    assert store.layers.exists(base.chain_id) and store.check() == []


def _prepare_and_die(root: str, driver: str, step: str) -> None:
    import graph.layers as gl

    def hook(name: str) -> None:
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    gl.crash_hook = hook
    s = Store(root, driver=driver)
    cid = s.layers.prepare(None)
    d, size = s.layers.apply_prepared(cid, None, io.BytesIO(BASE))
    s.layers.commit_prepared(cid, None, d, size)
    os.kill(os.getpid(), signal.SIGKILL)  # past every step: die anyway, committed


@pytest.mark.parametrize("step", ["register:pending", "register:created", "register:applied", "register:synced",
                                  "register:committed"])
def test_crash_at_each_step_leaves_only_complete_layers(tmp_path: Path, step: str) -> None:
    root = tmp_path / "root"
    Store(root, driver="vfs").close()
    p = multiprocessing.get_context("fork").Process(target=_prepare_and_die, args=(str(root), "vfs", step))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    with Store(root, driver="vfs") as s:  # opening recovers
        assert s.db.query("SELECT * FROM pending") == []
        assert list(s.layers.orphans()) == []
        # a layer committed by a process that died before anything (image, lease) held it is
        # garbage: the collection on open takes it as well (graph.gc)
        assert s.layers.list() == []
        assert s.driver.layer_ids() == []
        assert s.check() == []
