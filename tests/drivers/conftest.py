"""Fixtures for driver tests: which driver, where its home lives, the opened driver.

How the conformance suite (``tests/drivers/conformance.py``) gets its driver:

- ``driver_name``: parametrised from the test class's ``DRIVERS`` list (a binding such as
  ``class TestVfsConformance(DriverConformance): DRIVERS = ["vfs"]``), see
  ``pytest_generate_tests`` below;
- ``driver_home(driver_name, tmp_path)``: the directory given to ``open_driver``. Default: a fresh
  dir under ``tmp_path``. A driver that needs a special filesystem (btrfs on a loop device)
  either registers a provider in ``HOME_PROVIDERS`` (a context manager ``(tmp_path) -> home``,
  torn down after the test, also on failure) or overrides ``driver_home`` in its binding module;
- ``driver``: ``drivers.open_driver(driver_name, driver_home)``, skipped with the probe's reason
  where the driver cannot run here; teardown always calls ``cleanup()`` and then fails the test if
  anything is still mounted under the home.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import pytest

import drivers
from drivers.sys import mount as mountapi
from drivers.base import GraphDriver

HOME_PROVIDERS: dict[str, Callable[[Path], ContextManager[Path]]] = {}
"""driver name -> context manager making its home under the test's tmp_path."""


@contextlib.contextmanager
def _plain_home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "driver-home"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = getattr(metafunc.cls, "DRIVERS", None) if metafunc.cls is not None else None
    if names is not None and "driver_name" in metafunc.fixturenames:
        metafunc.parametrize("driver_name", list(names), ids=list(names))


@pytest.fixture
def driver_home(driver_name: str, tmp_path: Path) -> Iterator[Path]:
    provider = HOME_PROVIDERS.get(driver_name, _plain_home)
    with provider(tmp_path) as home:
        yield home


@pytest.fixture
def driver(driver_name: str, driver_home: Path) -> Iterator[GraphDriver]:
    reason = drivers.supported(driver_name, driver_home)
    if reason is not None:
        pytest.skip(f"driver {driver_name} unsupported here: {reason}")
    d = drivers.open_driver(driver_name, driver_home)
    try:
        yield d
    finally:
        left: list[str] = []
        try:
            d.cleanup()
        finally:
            if driver_home.exists():
                left = [m.mount_point for m in mountapi.mounts_under(driver_home)]
                for mp in reversed(left):
                    with contextlib.suppress(OSError):
                        mountapi.umount(mp, mountapi.MNT_DETACH)
        assert not left, f"{driver_name}: mounts left under its home after cleanup(): {left}"
