"""The garbage collector (``graph.gc``): removal as roll-forward, crash steps of ``rmi``, orphans,
concurrent writers, stale pull locks, partial downloads.

Crash tests fork a child that opens the store, arms a fault hook (``graph.store.crash_hook``,
``graph.layers.crash_hook``, ``graph.gc.crash_hook``) that SIGKILLs it at one named step, and
runs the operation; the parent then reopens the store and compares blobs, layer rows and driver
data with a store in which the same operation completed.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from graph import NotFound, Store
from graph.archive import load_archive
from graph.gc import Collector, sweep_chain_locks
from tests.graph.test_archive import APP, BASE, build, manifest_desc, write_layout

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
DRIVERS = ["vfs", "overlay"]


def _supported(driver: str) -> None:
    import drivers

    reason = drivers.supported(driver, Path("/tmp"))
    if reason is not None:
        pytest.skip(f"{driver}: {reason}")


def load_images(store: Store, tmp: Path) -> None:
    """``base:1`` (BASE) and ``app:1`` (BASE + APP): app shares its bottom layer with base."""
    base = build([BASE], "gzip")
    app = build([BASE, APP], "gzip")
    for name, b in (("base", base), ("app", app)):
        layout = write_layout(tmp / f"layout-{name}-{time.monotonic_ns()}", b.blobs,
                              [manifest_desc(b, {ANNOTATION_REF_NAME: f"{name}:1"})])
        load_archive(store, layout)


def big_image_layout(tmp: Path) -> Path:
    """``big:1``: BASE + APP + a 2 MiB random layer (so a kill lands inside a transfer)."""
    from tests.tarbuild import E, make_tar

    big = make_tar([E("blob", os.urandom(2 << 20))])
    b = build([BASE, APP, big], "gzip")
    return write_layout(tmp / f"big-{time.monotonic_ns()}", b.blobs,
                        [manifest_desc(b, {ANNOTATION_REF_NAME: "big:1"})])


@pytest.fixture(scope="module")
def registry_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry on 127.0.0.1 holding ``big:1`` (pushed by lamina from a vfs store)."""
    from graph.distribution.push import push
    from graph.distribution.registry import RegistryOptions
    from tests.registry import REGISTRY_BIN, run_registry

    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed")
    d = tmp_path_factory.mktemp("gc-registry")
    with run_registry(d / "reg") as reg:
        with Store(d / "src", driver="vfs") as s:
            load_archive(s, big_image_layout(d))
            s.tag("big:1", f"{reg.host}/big:1")
            push(s, f"{reg.host}/big:1", options=RegistryOptions(insecure=frozenset({reg.host})))
        yield reg.host


def state(store: Store) -> dict[str, Any]:
    """What a removal must leave exactly: blobs, layer rows, and the driver data they own."""
    layers = store.db.query("SELECT chain_id, cache_id FROM layers")
    owners = {r["cache_id"] for r in layers} | {r["cache_id"] for r in store.db.query("SELECT cache_id FROM containers")}
    return {
        "images": sorted(r["id"] for r in store.db.query("SELECT id FROM images")),
        "blobs": sorted(d for d, _ in store.content.walk()),
        "layers": sorted(r["chain_id"] for r in layers),
        "driver_data_matches_rows": sorted(store.driver.layer_ids()) == sorted(owners),
        "pending": store.db.query("SELECT * FROM pending"),
        "leases": store.db.query("SELECT * FROM leases"),
        "driver_debris": store.driver.leftovers(),
    }


def _run_and_die(root: str, driver: str, step: str, what: Callable[[Store], object]) -> None:
    import graph.gc as ggc
    import graph.layers as gl
    import graph.store as gs

    s = Store(root, driver=driver)  # opened (and collected) before the hook is armed

    def hook(name: str) -> None:
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    import drivers.btrfs as db

    gs.crash_hook = gl.crash_hook = ggc.crash_hook = db.crash_hook = hook
    what(s)
    os._exit(3)  # the step was never reached: the parent's SIGKILL check fails


def crash_at(root: Path, driver: str, step: str, what: Callable[[Store], object]) -> None:
    p = multiprocessing.get_context("fork").Process(target=_run_and_die, args=(str(root), driver, step, what))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL


@pytest.fixture
def reference(tmp_path: Path) -> Callable[[str], dict[str, Any]]:
    """The state of a store in which ``rmi app:1`` completed, per driver."""
    done: dict[str, dict[str, Any]] = {}

    def get(driver: str) -> dict[str, Any]:
        if driver not in done:
            with Store(tmp_path / f"ref-{driver}", driver=driver) as s:
                load_images(s, tmp_path)
                s.rmi("app:1")
                done[driver] = state(s)
                s.driver.cleanup()
        return done[driver]

    return get


RMI_STEPS = ["rmi:untagged", "rmi:committed", "gc:recovered", "release:unrecorded", "gc:layers",
             "gc:blob", "gc:blobs"]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("step", RMI_STEPS)
def test_rmi_killed_at_each_step_is_finished_by_the_next_open(
    tmp_path: Path, driver: str, step: str, reference: Callable[[str], dict[str, Any]]
) -> None:
    _supported(driver)
    root = tmp_path / "root"
    with Store(root, driver=driver) as s:
        load_images(s, tmp_path)
        before = state(s)
    crash_at(root, driver, step, lambda s: s.rmi("app:1"))
    with Store(root, driver=driver) as s:  # the open's collection finishes the removal
        after = state(s)
        if step == "rmi:untagged":
            # killed inside rmi's transaction: nothing happened; the re-run does it all
            assert after == before
            s.rmi("app:1")
            after = state(s)
        else:
            # the user-visible step was done: a second rmi is "no such image", as Docker says
            # after a completed rmi, and it has nothing left to finish
            with pytest.raises(NotFound):
                s.rmi("app:1")
            assert state(s) == after
        assert after == reference(driver)
        assert s.check() == []
        s.driver.cleanup()


def test_rmi_is_one_transaction_then_collection(tmp_path: Path) -> None:
    """The events name the image and the layer the collector removed; the shared layer stays."""
    with Store(tmp_path / "root", driver="vfs") as s:
        load_images(s, tmp_path)
        app = s.resolve_image("app:1")
        events = s.rmi("app:1")
        assert events[:2] == ["Untagged: app:1", f"Deleted: {app.id}"]
        assert len([e for e in events if e.startswith("Deleted: sha256:")]) == 2  # image + APP layer
        assert [layer.chain_id for layer in s.layers.list()] == [s.resolve_image("base:1").top_layer]
        assert s.check() == []


# ---- orphans -------------------------------------------------------------------------------------

def _plant_orphan(s: Store) -> Path:
    home = s.driver.home
    sub = {"vfs": "dir", "overlay": "layers", "fuse": "layers"}[s.driver_name]
    orphan = home / sub / ("ab" * 16)
    orphan.mkdir()
    (orphan / "junk").write_bytes(b"x" * 1000)
    return orphan


@pytest.mark.parametrize("driver", ["vfs", "overlay", "fuse"])
def test_orphan_driver_data_is_reported_by_check_and_removed_by_prune(tmp_path: Path, driver: str) -> None:
    _supported(driver)
    with Store(tmp_path / "root", driver=driver) as s:
        load_images(s, tmp_path)
        orphan = _plant_orphan(s)
        problems = s.check(verify_blobs=False)
        assert [(p.kind, p.object) for p in problems] == [("driver", orphan.name)]
        assert str(orphan) in problems[0].detail
        s.gc()  # the automatic collection never takes what no row knows: check reports it first
        assert orphan.exists()
        rep = s.prune()
        assert rep.orphans == [f"{driver}: {orphan.name}"]
        assert not orphan.exists()
        assert s.check() == []
        assert len(s.images.list()) == 2  # named images are not garbage
        s.driver.cleanup()


# ---- concurrent writers ----------------------------------------------------------------------------

def _collect_in_child(root: str) -> None:
    with Store(root, driver="vfs") as s:  # another process: its open collects, then a full run
        s.gc()
        s.prune(partial_age=None)
    os._exit(0)


def _other_process_collects(root: Path) -> None:
    p = multiprocessing.get_context("fork").Process(target=_collect_in_child, args=(str(root),))
    p.start()
    p.join(60)
    assert p.exitcode == 0


def test_blob_stored_but_not_yet_recorded_survives_a_concurrent_collection(tmp_path: Path) -> None:
    """A pull that has committed a blob and not yet leased it by digest, nor recorded its layer:
    the lease it runs under (begun before the blob was linked) keeps the blob."""
    root = tmp_path / "root"
    with Store(root, driver="vfs") as s:
        with s.lease():
            digest = s.content.put_bytes(b"a layer blob nobody records yet")
            cid = s.layers.prepare(None)  # and a layer it is preparing (a pending row)
            _other_process_collects(root)
            assert s.content.exists(digest)
            assert s.driver.exists(cid)
            s.layers.abort_prepared(cid)
        s.gc()  # the lease is over: now it is garbage
        assert not s.content.exists(digest)


def test_reused_blob_is_leased_before_it_is_looked_at(tmp_path: Path) -> None:
    """An operation about to reuse a stored, unreferenced blob (older than its lease) leases it
    by digest first; a collection in between keeps it."""
    import graph.gc as ggc

    root = tmp_path / "root"
    with Store(root, driver="vfs") as s:
        digest = s.content.put_bytes(b"old, unreferenced, about to be reused")
        with s.lease() as lease:
            old = ggc.CTIME_SLACK
            ggc.CTIME_SLACK = -3600.0  # the child sees the blob as far older than the lease
            try:
                s.lease_blob(lease, digest)
                _other_process_collects(root)
                assert s.content.exists(digest)
            finally:
                ggc.CTIME_SLACK = old
        s.gc()
        assert not s.content.exists(digest)


# ---- pull locks ------------------------------------------------------------------------------------

def test_stale_chain_locks_are_removed_on_open_live_ones_kept(tmp_path: Path) -> None:
    from graph.distribution.pull import _ChainLock
    from graph.digest import ChainID, Digest
    import threading

    root = tmp_path / "root"
    Store(root, driver="vfs").close()
    locks = root / "locks"
    locks.mkdir()
    stale = locks / f"layer-{'1' * 64}.lock"
    stale.write_text("")  # a pull killed while it held this one: nobody holds the flock
    live = _ChainLock.acquire(locks, ChainID(Digest.from_hex("2" * 64)), threading.Event())
    try:
        Store(root, driver="vfs").close()
        assert not stale.exists()
        assert live.path.exists()
        assert sweep_chain_locks(locks) == []
    finally:
        live.release()
    assert sweep_chain_locks(locks) == []


def _hold_flock_and_die(path: str) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.kill(os.getpid(), signal.SIGKILL)


def test_lock_of_a_killed_holder_is_free_and_removed(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    path = locks / f"layer-{'3' * 64}.lock"
    p = multiprocessing.get_context("fork").Process(target=_hold_flock_and_die, args=(str(path),))
    p.start()
    p.join(30)
    assert p.exitcode == -signal.SIGKILL and path.exists()
    assert sweep_chain_locks(locks) == [path.name]
    assert not locks.exists()  # emptied: removed, as a pull leaves it


def _pull(host: str) -> Callable[[Store], object]:
    def run(s: Store) -> object:
        from graph.distribution.pull import pull
        from graph.distribution.registry import RegistryOptions

        return pull(s, f"{host}/big:1", options=RegistryOptions(insecure=frozenset({host})))

    return run


@pytest.mark.parametrize("driver,step", [
    ("vfs", "register:pending"), ("vfs", "register:created"), ("vfs", "register:applied"),
    ("vfs", "register:committed"), ("overlay", "register:created"), ("overlay", "register:synced"),
])
def test_pull_killed_holding_a_chain_lock(tmp_path: Path, registry_host: str, driver: str, step: str) -> None:
    """A pull holds ``locks/layer-<chain>.lock`` from preparing a layer to committing it; killed
    there, the file stays until the next open removes it, and nothing else of the pull is left
    after ``system prune`` (partials included); a retried pull then succeeds."""
    _supported(driver)
    root = tmp_path / "root"
    Store(root, driver=driver).close()
    crash_at(root, driver, step, _pull(registry_host))
    assert [n for n in os.listdir(root / "locks") if n.startswith("layer-")]  # held when it died
    with Store(root, driver=driver) as s:  # the open: stale locks gone, garbage collected
        assert not (root / "locks").exists()
        assert s.layers.list() == [] and s.driver.layer_ids() == []
        s.prune(partial_age=None)
        assert list(s.content.walk()) == [] and s.content.ingests() == []
        assert s.check() == []
        _pull(registry_host)(s)
        assert not (root / "locks").exists()
        assert s.check() == []
        s.driver.cleanup()


# ---- partial downloads -------------------------------------------------------------------------------

def _partial(s: Store, ref: str, data: bytes, age: float) -> None:
    from graph.digest import Digest

    w = s.content.ingest(Digest.of(data + b"rest"), len(data) + 4, ref=ref)
    w.write(data)
    w.close()  # a transport error: the partial stays for a resume
    st = next(i for i in s.content.ingests() if i.ref == ref)
    data_file = s.content._ref_base(ref).with_suffix(".data")
    os.utime(data_file, (st.updated - age, st.updated - age))


def test_prune_expires_old_partials_keeps_young_and_live_ones(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store(root, driver="vfs") as s:
        _partial(s, "pull-old", b"o" * 100, age=2 * 86400)
        _partial(s, "pull-young", b"y" * 200, age=60)
        _partial(s, "pull-live", b"l" * 300, age=3 * 86400)
        df = s.df()["partials"]
        assert df == {"count": 3, "size": 600, "reclaimable": 400}
        from graph.digest import Digest

        live = s.content.ingest(Digest.of(b"l" * 300 + b"rest"), 304, ref="pull-live")  # resumed now
        try:
            assert live.offset == 300
            rep = s.prune()
            assert rep.partials == ["pull-old"]
            assert sorted(i.ref for i in s.content.ingests()) == ["pull-live", "pull-young"]
            rep = s.prune(partial_age=None)  # --all-partials: every one no writer holds
            assert rep.partials == ["pull-young"]
            assert [i.ref for i in s.content.ingests()] == ["pull-live"]
        finally:
            live.close()
        assert s.prune(partial_age=None).partials == ["pull-live"]
        assert s.df()["partials"] == {"count": 0, "size": 0, "reclaimable": 0}


# ---- cost ---------------------------------------------------------------------------------------------

def test_collection_is_bounded_by_its_budget(tmp_path: Path) -> None:
    """A run out of budget stops between two removals and says so; the next run finishes."""
    with Store(tmp_path / "root", driver="vfs") as s:
        load_images(s, tmp_path)
        with s.db.transaction() as c:  # as a killed rmi of both leaves it, after its transaction
            c.execute("DELETE FROM refs")
            c.execute("DELETE FROM images")
        rep = Collector(s).collect(budget=0)
        assert not rep.complete and rep.layers == [] and rep.blobs == []
        rep = Collector(s).collect(budget=None)
        assert rep.complete and len(rep.layers) == 2 and len(rep.blobs) == 6  # 2 configs, 2 manifests, 2 layers
        assert s.layers.list() == [] and list(s.content.walk()) == [] and s.driver.layer_ids() == []


def test_an_empty_locks_dir_a_killed_pull_left_is_removed(tmp_path: Path) -> None:
    """A pull killed after its last lock's unlink and before its rmdir leaves ``locks/`` empty;
    the sweep removes it (a pull that makes it again meanwhile retries on ENOENT)."""
    root = tmp_path / "root"
    Store(root, driver="vfs").close()
    (root / "locks").mkdir()
    Store(root, driver="vfs").close()  # the open's collection sweeps
    assert not (root / "locks").exists()
