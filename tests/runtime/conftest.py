"""Fixtures for runtime tests: a store (overlay or vfs) with the busybox image ``bb:1`` loaded,
torn down by removing every container and checking nothing leaked (``tests/runtime/busybox.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.busybox import cleanup_store, skip_reason, write_busybox_layout

DRIVERS = ["overlay", "vfs"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    for item in items:
        if "rt_store" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def bb_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    return write_busybox_layout(tmp_path_factory.mktemp("bb") / "oci")


@pytest.fixture(params=DRIVERS)
def driver_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def rt_store(driver_name: str, bb_layout: Path, tmp_path: Path) -> Iterator[object]:
    """A store on ``driver_name`` with ``bb:1`` loaded; every container is removed afterwards
    and the test fails if a mount, runtime state, cgroup or monitor was left."""
    import drivers
    from graph import Store
    from graph.archive import load_archive

    root = tmp_path / "root"
    reason = drivers.supported(driver_name, root / "drivers" / driver_name)
    if reason is not None:
        pytest.skip(f"driver {driver_name}: {reason}")
    store = Store(root, driver=driver_name)
    try:
        load_archive(store, bb_layout)
        yield store
    finally:
        try:
            problems = cleanup_store(store, root)
        finally:
            store.close()
        assert not problems, "left behind:\n" + "\n".join(problems)
