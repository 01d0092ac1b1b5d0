"""``drivers.naive_diff``: a driver that has only the layer half (``GraphDriver``) is made whole by
``open_driver`` wrapping it in ``NaiveDiff``, and then passes the same conformance suite as the
real drivers. The layer half used here is vfs with its diff methods hidden."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

import drivers
from drivers.base import DiffDriver, Driver, GraphDriver, HeldCounts
from drivers.errors import Conflict
from drivers.naive_diff import NaiveDiff
from drivers.vfs import VfsDriver
from tests.drivers.conformance import DriverConformance, apply
from tests.tarbuild import E, make_tar


class ProtoOnlyVfs:
    """vfs without ``apply_diff``/``diff``/``changes``/``diff_size``: only ``GraphDriver``."""

    def __init__(self, home: Path) -> None:
        self._vfs = VfsDriver(home)
        self.name, self.home = "naive-vfs", self._vfs.home

    def __getattr__(self, name: str) -> object:
        if name in ("apply_diff", "diff", "changes", "diff_size"):
            raise AttributeError(name)
        return getattr(self._vfs, name)


def supported(home: Path) -> str | None:
    return None


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(drivers.DRIVERS, "naive-vfs",
                        drivers.DriverInfo("tests.drivers.test_naive_diff", "ProtoOnlyVfs"))
    yield


class TestNaiveDiffConformance(DriverConformance):
    DRIVERS = ["naive-vfs"]


def test_open_driver_wraps_a_driver_without_the_diff_half(tmp_path: Path) -> None:
    proto = ProtoOnlyVfs(tmp_path / "p")
    assert isinstance(proto, GraphDriver) and not isinstance(proto, DiffDriver)
    d = drivers.open_driver("naive-vfs", tmp_path / "h")
    assert isinstance(d, NaiveDiff) and isinstance(d, Driver)
    assert isinstance(d, HeldCounts)      # abilities of the wrapped driver show through
    assert not isinstance(drivers.open_driver("vfs", tmp_path / "v"), NaiveDiff)


@pytest.mark.parametrize("name", ["naive-vfs", "vfs"])
def test_a_diff_stream_holds_its_layer(tmp_path: Path, name: str) -> None:
    """Every driver's diff holds a ``get`` until the stream is closed: remove is refused."""
    d = drivers.open_driver(name, tmp_path / "h")
    apply(d, "a", None, make_tar([E("f", b"x")]))
    stream = d.diff("a", None)
    assert isinstance(d, HeldCounts) and d.held_count("a") >= 1
    with pytest.raises(Conflict):
        d.remove("a")
    stream.read()
    stream.close()
    assert d.held_count("a") == 0
    d.remove("a")
