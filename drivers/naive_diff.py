"""The diff half for drivers that have no native one (moby's ``NaiveDiffDriver``): a layer's
changes are found by comparing the tree ``get(id)`` returns with ``get(parent)``'s, and a layer
tar is applied into ``get(id)``'s tree.

``diff_holding`` is also what the copy drivers' own ``diff`` uses, so that every driver streams a
diff the same way: the stream holds a ``get`` on the layer until it is closed, and a ``remove``
meanwhile is refused (Conflict) instead of deleting files under a reader.
"""

from __future__ import annotations

from typing import BinaryIO

from drivers.base import CacheID, Change, GraphDriver


def diff_holding(driver: GraphDriver, id: CacheID, root: str, changes: list[Change]) -> BinaryIO:
    """``changes`` of the layer ``id`` (whose tree is at ``root``) as an OCI layer tar stream
    that holds one ``get`` of ``id`` until it is closed."""
    from drivers.tar.diff import diff_stream

    driver.get(id)
    try:
        return diff_stream(root, changes, on_close=lambda: driver.put(id))
    except BaseException:
        driver.put(id)
        raise


class NaiveDiff:
    """``DiffDriver`` for a ``GraphDriver`` that has only the layer half: wrap it, and the
    result is a complete ``drivers.base.Driver``."""

    def __init__(self, driver: GraphDriver) -> None:
        self.driver = driver
        self.name = driver.name
        self.home = driver.home

    def __getattr__(self, name: str) -> object:
        return getattr(self.driver, name)   # the layer half, and any ability the driver has

    def _trees(self, id: CacheID, parent: CacheID | None) -> tuple[str, str | None]:
        root = self.driver.get(id)
        try:
            return root, (self.driver.get(parent) if parent is not None else None)
        except BaseException:
            self.driver.put(id)
            raise

    def _release(self, id: CacheID, parent: CacheID | None) -> None:
        try:
            if parent is not None:
                self.driver.put(parent)
        finally:
            self.driver.put(id)

    def apply_diff(self, id: CacheID, parent: CacheID | None, tar: BinaryIO) -> int:
        """Unpack ``tar`` into the layer's tree (whiteouts delete); returns its ``diff_size``."""
        from drivers.tar.apply import Whiteouts, apply_tar

        root = self.driver.get(id)
        try:
            return apply_tar(root, tar, Whiteouts.REMOVE)
        finally:
            self.driver.put(id)

    def changes(self, id: CacheID, parent: CacheID | None) -> list[Change]:
        from drivers.tar.diff import tree_changes

        root, proot = self._trees(id, parent)
        try:
            return tree_changes(root, proot)
        finally:
            self._release(id, parent)

    def diff(self, id: CacheID, parent: CacheID | None) -> BinaryIO:
        from drivers.tar.diff import diff_stream, tree_changes

        root, proot = self._trees(id, parent)
        try:
            return diff_stream(root, tree_changes(root, proot), on_close=lambda: self._release(id, parent))
        except BaseException:
            self._release(id, parent)
            raise

    def diff_size(self, id: CacheID, parent: CacheID | None) -> int:
        from drivers.tar.diff import diff_size, tree_changes

        root, proot = self._trees(id, parent)
        try:
            return diff_size(root, tree_changes(root, proot))
        finally:
            self._release(id, parent)
