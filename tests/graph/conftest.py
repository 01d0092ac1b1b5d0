"""Fixtures shared by graph's unit tests."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from graph import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "root", driver="vfs")
    try:
        yield s
    finally:
        s.driver.cleanup()
        s.close()
