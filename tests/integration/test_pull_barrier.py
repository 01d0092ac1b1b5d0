"""The pull's one durability barrier (graph/distribution/pull.py ``_Job._barrier``): with a driver
that applies layers in parallel (overlay), every layer is applied, then the driver's filesystem is
synced once, and only then are layer rows committed. Checked on real pulls from the real registry:
the order of the steps, and a process killed right after the barrier (and after the first row) that
leaves only complete layers and a store that pulls again cleanly."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
from pathlib import Path

import pytest

from graph import Store
from graph.distribution.pull import pull
from tests.integration.test_pull_push import Hosted, hosted, opts  # noqa: F401 - the registry fixture
from tests.registry import REGISTRY_BIN

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="docker-registry is not installed"),
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed"),
]


def _overlay_or_skip(tmp_path: Path) -> None:
    import drivers

    reason = drivers.supported("overlay", tmp_path / "probe")
    if reason is not None:
        pytest.skip(f"overlay: {reason}")


def test_one_syncfs_after_every_apply_and_before_every_layer_row(
    tmp_path: Path, hosted: Hosted, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    _overlay_or_skip(tmp_path)
    import graph.layers as gl

    events: list[str] = []
    monkeypatch.setattr(gl, "crash_hook", events.append)
    with Store(tmp_path / "root", driver="overlay") as s:
        real_sync = s.driver.sync

        def sync() -> None:
            real_sync()
            events.append("syncfs")

        monkeypatch.setattr(s.driver, "sync", sync)  # the pull's barrier and commit_prepared's own
        try:
            r = pull(s, f"{hosted.host}/derived:1", options=opts(hosted.host))
            assert r.downloaded == 3 and s.check() == []
        finally:
            s.driver.cleanup()
    applied = [i for i, e in enumerate(events) if e == "register:applied"]
    committed = [i for i, e in enumerate(events) if e == "register:committed"]
    syncs = [i for i, e in enumerate(events) if e == "syncfs"]
    assert len(applied) == len(committed) == 3, events
    assert len(syncs) == 1, events  # one barrier per pull, not one per layer
    assert max(applied) < syncs[0] < min(committed), events


def _pull_and_die(root: str, host: str, step: str, nth: int) -> None:
    import graph.layers as gl

    seen = [0]

    def hook(name: str) -> None:
        if name == step:
            seen[0] += 1
            if seen[0] == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    gl.crash_hook = hook
    s = Store(root, driver="overlay")
    pull(s, f"{host}/derived:1", options=opts(host))
    os.kill(os.getpid(), signal.SIGKILL)  # the hook did not fire: fail the test below


@pytest.mark.parametrize("step, nth, rows", [
    ("register:reserved", 1, 0),  # the stack's pending rows on disk, no layer made yet
    ("register:created", 2, 0),  # two layers made, the third still only reserved
    ("register:synced", 1, 0),  # after the barrier, before the first layer row
    ("register:committed", 1, 1),  # the first row written (inside the one transaction of all rows)
    ("register:all-committed", 1, 3),  # every row committed together
])
def test_killed_after_the_barrier_leaves_only_complete_layers(
    tmp_path: Path, hosted: Hosted, step: str, nth: int, rows: int  # noqa: F811
) -> None:
    _overlay_or_skip(tmp_path)
    root = tmp_path / "root"
    Store(root, driver="overlay").close()
    p = multiprocessing.get_context("fork").Process(target=_pull_and_die, args=(str(root), hosted.host, step, nth))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL
    with Store(root, driver="overlay") as s:  # opening recovers
        try:
            assert s.db.query("SELECT * FROM pending") == []
            assert list(s.layers.orphans()) == []
            # at most the committed rows: a dead pull's unreferenced layers may be collected (gc)
            assert len(s.layers.list()) <= rows
            assert s.check() == []
            r = pull(s, f"{hosted.host}/derived:1", options=opts(hosted.host))
            assert r.image_id == hosted.derived.image_id and len(s.layers.list()) == 3
            assert s.check() == []
        finally:
            s.driver.cleanup()


@pytest.mark.parametrize("step, nth, layers, pending", [
    ("register:reserved", 1, 0, 3),  # one transaction reserved the whole stack
    ("register:committed", 2, 0, 3),  # rows are written in one transaction: none visible yet
    ("register:all-committed", 1, 3, 0),  # ... and all of them once it commits
])
def test_the_layer_rows_of_a_pull_commit_together(
    tmp_path: Path, hosted: Hosted, step: str, nth: int, layers: int, pending: int  # noqa: F811
) -> None:
    """The database as the killed pull left it, read before any open recovers it: the pending
    rows of the stack appear in one transaction, the layer rows in another, never a part."""
    import sqlite3

    _overlay_or_skip(tmp_path)
    root = tmp_path / "root"
    Store(root, driver="overlay").close()
    p = multiprocessing.get_context("fork").Process(target=_pull_and_die, args=(str(root), hosted.host, step, nth))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL
    db = sqlite3.connect(f"file:{root / 'lamina.db'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM layers").fetchone()[0] == layers
        assert db.execute("SELECT count(*) FROM pending").fetchone()[0] == pending
    finally:
        db.close()
    with Store(root, driver="overlay") as s:  # opening recovers; the pull then works
        try:
            assert s.db.query("SELECT * FROM pending") == [] and list(s.layers.orphans()) == []
            assert s.check() == []
            pull(s, f"{hosted.host}/derived:1", options=opts(hosted.host))
            assert len(s.layers.list()) == 3 and s.check() == []
        finally:
            s.driver.cleanup()
