"""The instrument's test-only slowdown knobs: set by the bench worker from the environment, acted
on in the tar applier / the layer store's register, and a no-op when unset (no timing asserted:
the sleep is recorded)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from bench import worker
from drivers.tar import apply


def _tar() -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = b"x" * 1000
        info = tarfile.TarInfo("f")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    got: list[float] = []
    monkeypatch.setattr(apply, "TEST_SLOWDOWN", 0.0)  # restored after the test
    monkeypatch.setattr(apply.time, "sleep", got.append)
    return got


def test_knob_slows_apply_only_when_set(tmp_path: Path, sleeps: list[float]) -> None:
    (tmp_path / "a").mkdir()
    assert worker.set_test_knobs({}) == {} and apply.TEST_SLOWDOWN == 0.0
    apply.apply_tar(str(tmp_path / "a"), _tar())
    assert sleeps == []  # unset: no sleep at all
    assert worker.set_test_knobs({"LAMINA_BENCH_SLOWDOWN_APPLY": "0.25"}) == {"apply": 0.25}
    (tmp_path / "b").mkdir()
    assert apply.apply_tar(str(tmp_path / "b"), _tar()) == 1000
    assert len(sleeps) == 1 and sleeps[0] > 0  # a quarter of the apply's own time
    assert (tmp_path / "b" / "f").read_bytes() == b"x" * 1000


def test_bad_knob_is_an_error(sleeps: list[float]) -> None:
    with pytest.raises(ValueError):
        worker.set_test_knobs({"LAMINA_BENCH_SLOWDOWN_APPLY": "-1"})
    with pytest.raises(ValueError):
        worker.set_test_knobs({"LAMINA_BENCH_SLOWDOWN_APPLY": "fast"})
    with pytest.raises(ValueError):
        worker.set_test_knobs({"LAMINA_BENCH_SLOWDOWN_REGISTER": "-0.5"})
    assert apply.TEST_SLOWDOWN == 0.0


def test_register_knob_slows_every_register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The register knob wraps LayerStore.register: each registration (here a real one, on a vfs
    store) sleeps the factor times its own duration; the layer is registered as before."""
    from graph import Store
    from graph import LayerStore

    monkeypatch.setattr(LayerStore, "register", LayerStore.register)  # the wrapper is undone after the test
    got: list[float] = []
    import time
    import types

    monkeypatch.setattr(worker, "time", types.SimpleNamespace(perf_counter=time.perf_counter, sleep=got.append))
    assert worker.set_test_knobs({"LAMINA_BENCH_SLOWDOWN_REGISTER": "0.5"}) == {"register": 0.5}
    with Store(tmp_path / "s", driver="vfs") as store:
        a = store.layers.register(_tar(), None)
        b = store.layers.register(_tar(), a.chain_id)
        assert [x.chain_id for x in store.layers.list()].count(b.chain_id) == 1
    assert len(got) == 2 and all(x > 0 for x in got)
