"""The layer store on the vfs driver: identities, dedupe, release, RW layers, crash recovery."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from graph import ChainID, DiffID, Digest, DigestMismatch, InvalidInput, NotFound, Store, chain_id
from tests.tarbuild import E, make_tar


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "root", driver="vfs")
    yield s
    s.driver.cleanup()
    s.close()


def diff_id_of(data: bytes) -> DiffID:
    return DiffID(Digest("sha256:" + hashlib.sha256(data).hexdigest()))


BASE = make_tar([E("etc", kind="dir"), E("etc/os-release", b"NAME=test\n"), E("bin", kind="dir"),
                 E("bin/sh", b"#!shell\n", mode=0o755)])
APP = make_tar([E("app", kind="dir"), E("app/main.py", b"print('hi')\n"), E("etc/os-release", kind="whiteout")])


def test_register_computes_diff_id_and_chain_id(store: Store) -> None:
    base = store.layers.register(io.BytesIO(BASE), None)
    assert base.diff_id == diff_id_of(BASE)
    assert base.chain_id == base.diff_id  # ChainID(L0) = DiffID(L0)
    app = store.layers.register(io.BytesIO(APP), base.chain_id)
    assert app.chain_id == chain_id(base.chain_id, diff_id_of(APP))
    assert app.chain_id == Digest.of(f"{base.chain_id} {app.diff_id}".encode())
    assert [layer.chain_id for layer in store.layers.stack(app.chain_id)] == [base.chain_id, app.chain_id]
    assert base.size == len(b"NAME=test\n") + len(b"#!shell\n")


def test_register_same_stack_twice_is_deduplicated(store: Store) -> None:
    a = store.layers.register(io.BytesIO(BASE), None)
    b = store.layers.register(io.BytesIO(BASE), None)
    assert a == b
    assert len(store.layers.list()) == 1
    assert list(store.layers.orphans()) == []  # the second copy was thrown away
    assert store.db.query("SELECT * FROM pending") == []


def test_register_with_wrong_expected_diff_id_keeps_nothing(store: Store) -> None:
    wrong = DiffID(Digest.of(b"something else"))
    with pytest.raises(DigestMismatch):
        store.layers.register(io.BytesIO(BASE), None, expected_diff_id=wrong)
    assert store.layers.list() == []
    assert list(store.layers.orphans()) == []
    assert store.check() == []


def test_register_hostile_tar_keeps_nothing(store: Store, tmp_path: Path) -> None:
    evil = make_tar([E("../../escaped", b"x")])
    with pytest.raises(InvalidInput):
        store.layers.register(io.BytesIO(evil), None)
    assert not (tmp_path / "escaped").exists()
    assert store.layers.list() == [] and list(store.layers.orphans()) == []


def test_register_on_missing_parent(store: Store) -> None:
    with pytest.raises(NotFound):
        store.layers.register(io.BytesIO(BASE), ChainID(Digest.of(b"nope")))


def test_release_walks_up_only_while_unreferenced(store: Store) -> None:
    base = store.layers.register(io.BytesIO(BASE), None)
    app = store.layers.register(io.BytesIO(APP), base.chain_id)
    assert store.layers.references(base.chain_id) == 1  # the child
    assert store.layers.release(base.chain_id) == []  # still needed
    assert store.layers.release(app.chain_id) == [app.chain_id, base.chain_id]
    assert store.layers.list() == []
    assert not store.driver.exists(base.cache_id) and not store.driver.exists(app.cache_id)


def test_rw_layer_sees_parent_and_reports_changes(store: Store) -> None:
    base = store.layers.register(io.BytesIO(BASE), None)
    app = store.layers.register(io.BytesIO(APP), base.chain_id)
    rw = store.layers.create_rw(app.chain_id)
    with store.db.transaction() as c:
        store.layers.commit_rw(c, rw)
    root = Path(store.layers.mount(rw))
    try:
        assert (root / "app/main.py").read_bytes() == b"print('hi')\n"
        assert not (root / "etc/os-release").exists()  # whited out by APP
        (root / "app/new.txt").write_text("new")
        (root / "bin/sh").unlink()
    finally:
        store.layers.unmount(rw)
    changes = {str(c) for c in store.layers.changes(rw, app.chain_id)}
    assert {"A /app/new.txt", "D /bin/sh"} <= changes
    with store.layers.diff(rw, app.chain_id) as tar:
        data = tar.read()
    import tarfile

    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert "app/new.txt" in names and "bin/.wh.sh" in names


# ---- crash recovery: kill the process at each step, reopen, nothing half-done remains ----

def _image_on(s: Store, *diff_ids: DiffID) -> None:
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": list(diff_ids)}}).encode()
    s.images.create(cfg)


def _register_and_die(root: str, step: str, parent_hex: str | None) -> None:
    import graph.layers as gl

    def hook(name: str) -> None:
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    gl.crash_hook = hook
    s = Store(root, driver="vfs")
    parent = ChainID(Digest.from_hex(parent_hex)) if parent_hex else None
    s.layers.register(io.BytesIO(APP), parent)


@pytest.mark.parametrize(
    "step", ["register:pending", "register:created", "register:applied", "register:synced", "register:committed"]
)
def test_crash_during_register_leaves_only_complete_layers(tmp_path: Path, step: str) -> None:
    root = tmp_path / "root"
    with Store(root, driver="vfs") as s:
        base = s.layers.register(io.BytesIO(BASE), None)
        _image_on(s, base.diff_id)  # held by an image: not garbage
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_register_and_die, args=(str(root), step, base.chain_id.hex))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    with Store(root, driver="vfs") as s:  # open recovers
        assert s.db.query("SELECT * FROM pending") == []
        assert list(s.layers.orphans()) == []
        # APP, even when committed, was held by nothing when its process died: garbage, and
        # collected on open (graph.gc); BASE is an image's
        assert {layer.chain_id for layer in s.layers.list()} == {base.chain_id}
        assert s.driver.layer_ids() == [base.cache_id]
        assert s.check() == []
        names = sorted(os.listdir(s.driver.home / "dir")) if (s.driver.home / "dir").exists() else []
        assert all(not n.endswith(("-tmp", "-removing")) for n in names)


def test_crash_during_release_is_finished_on_open(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store(root, driver="vfs") as s:
        base = s.layers.register(io.BytesIO(BASE), None)

    def die() -> None:
        import graph.layers as gl

        gl.crash_hook = lambda name: os.kill(os.getpid(), signal.SIGKILL) if name == "release:unrecorded" else None
        Store(root, driver="vfs").layers.release(base.chain_id)

    p = multiprocessing.get_context("fork").Process(target=die)
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    with Store(root, driver="vfs") as s:
        assert s.layers.list() == []
        assert not s.driver.exists(base.cache_id)
        assert s.check() == []


def test_image_config_round_trip(store: Store) -> None:
    base = store.layers.register(io.BytesIO(BASE), None)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                      "rootfs": {"type": "layers", "diff_ids": [base.diff_id]}}).encode()
    img = store.images.create(cfg)
    assert img.id == Digest.of(cfg) and img.top_layer == base.chain_id
    assert store.content.read_bytes(img.id) == cfg
    assert list(store.images.config(img.id).diff_ids) == [base.diff_id]


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_driver_data_no_row_knows_is_an_orphan(tmp_path: Path, driver: str) -> None:
    """The orphan check sees the driver's layers through ``drivers.base.LayerListing`` (it once
    looked up a method no driver had, and so never reported anything)."""
    import drivers

    if drivers.supported(driver, tmp_path / "probe") is not None:
        pytest.skip(f"{driver} unsupported here")
    s = Store(tmp_path / "root", driver=driver)
    try:
        s.layers.register(io.BytesIO(BASE), None)
        assert list(s.layers.orphans()) == []
        s.driver.create("f" * 32, None)       # data behind the store's back
        assert list(s.layers.orphans()) == ["f" * 32]
        assert [(p.kind, p.object) for p in s.check() if p.kind == "driver"] == [("driver", "f" * 32)]
    finally:
        s.driver.cleanup()
        s.close()
