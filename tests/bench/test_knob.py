"""The instrument's test-only slowdown knob: set by the bench worker from the environment, acted
on in the tar applier, and a no-op when unset (no timing asserted: the sleep is recorded)."""

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
    assert worker.set_test_knobs({}) == 0.0 and apply.TEST_SLOWDOWN == 0.0
    apply.apply_tar(str(tmp_path / "a"), _tar())
    assert sleeps == []  # unset: no sleep at all
    assert worker.set_test_knobs({"LAMINA_BENCH_SLOWDOWN_APPLY": "0.25"}) == 0.25
    (tmp_path / "b").mkdir()
    assert apply.apply_tar(str(tmp_path / "b"), _tar()) == 1000
    assert len(sleeps) == 1 and sleeps[0] > 0  # a quarter of the apply's own time
    assert (tmp_path / "b" / "f").read_bytes() == b"x" * 1000


def test_bad_knob_is_an_error(sleeps: list[float]) -> None:
    with pytest.raises(ValueError):
        worker.set_test_knobs({"LAMINA_BENCH_SLOWDOWN_APPLY": "-1"})
    with pytest.raises(ValueError):
        worker.set_test_knobs({"LAMINA_BENCH_SLOWDOWN_APPLY": "fast"})
    assert apply.TEST_SLOWDOWN == 0.0
