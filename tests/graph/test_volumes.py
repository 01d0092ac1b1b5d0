"""The volume store (``graph/volumes.py``): names, use, removal, and crash recovery by a real
SIGKILL in a child process at each step of create and remove."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from graph import Store
from graph.errors import Conflict, InvalidInput, NotFound


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "root", driver="vfs") as s:
        yield s


def test_create_get_list_remove(store: Store) -> None:
    v, new = store.volumes.create("data", labels={"a": "b"})
    assert new and v.name == "data" and not v.anonymous and v.labels == {"a": "b"}
    assert Path(v.mountpoint).is_dir() and v.mountpoint == str(store.root / "volumes" / "data" / "_data")
    assert store.volumes.create("data") == (v, False)
    anon, new = store.volumes.create()
    assert new and anon.anonymous and len(anon.name) == 64
    assert [x.name for x in store.volumes.list()] == sorted(["data", anon.name])
    Path(v.mountpoint, "f").write_bytes(b"12345")
    assert store.volumes.size("data") == 5
    store.volumes.remove("data")
    assert not (store.root / "volumes" / "data").exists()
    with pytest.raises(NotFound):
        store.volumes.get("data")
    with pytest.raises(NotFound):
        store.volumes.remove("data")
    store.volumes.remove("data", force=True)


@pytest.mark.parametrize("name", ["a/b", "x", "", "../up", "-dash", "a b"])
def test_bad_names(store: Store, name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid volume name"):
        store.volumes.create(name)
    assert store.volumes.list() == []


def test_in_use_until_the_container_goes(store: Store, tmp_path: Path) -> None:
    from graph.archive import load_archive
    from tests.runtime.busybox import write_busybox_layout

    load_archive(store, write_busybox_layout(tmp_path / "oci"))
    c = store.create_container("bb:1")
    store.volumes.create("vv")
    store.volumes.attach("vv", c.id)
    store.volumes.attach("vv", c.id)  # idempotent
    assert store.volumes.users("vv") == [c.id] and store.volumes.in_use() == {"vv"}
    with pytest.raises(Conflict, match=r"volume is in use - \[" + c.id[:12]):
        store.volumes.remove("vv")
    assert store.volumes.prune(all_named=True) == ([], 0)
    store.remove_container(c.id)  # the foreign key's cascade forgets the use
    assert store.volumes.users("vv") == []
    assert store.volumes.prune(all_named=True) == (["vv"], 0)


def _die_in_child(store_root: Path, step: str, action: str) -> None:
    """Fork; in the child open the store, SIGKILL ourselves at ``step`` of ``action``."""
    pid = os.fork()
    if pid == 0:
        try:
            import shutil

            from graph import volumes

            with Store(store_root) as s:
                real_rmtree, real_mkdir = shutil.rmtree, Path.mkdir

                def kill(*_a: object, **_k: object) -> None:
                    os.kill(os.getpid(), signal.SIGKILL)

                if step == "after-row":      # create: the row is in, no directory yet
                    volumes.shutil.rmtree = kill  # type: ignore[assignment]
                elif step == "after-dir":    # create: directory made, row not ready
                    def mkdir(self: Path, *a: object, **k: object) -> None:
                        real_mkdir(self, *a, **k)  # type: ignore[arg-type]
                        if self.name == "_data":
                            kill()
                    Path.mkdir = mkdir  # type: ignore[method-assign]
                elif step == "half-removed":  # remove: row marked, directory half gone
                    def rmtree(path: object, *a: object, **k: object) -> None:
                        os.unlink(os.path.join(str(path), "_data", "f"))
                        kill()
                    volumes.shutil.rmtree = rmtree  # type: ignore[assignment]
                del real_rmtree
                if action == "create":
                    s.volumes.create("crash")
                else:
                    s.volumes.remove("crash")
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize("step", ["after-row", "after-dir"])
def test_a_create_killed_half_way_is_swept_on_open(tmp_path: Path, step: str) -> None:
    root = tmp_path / "root"
    Store(root, driver="vfs").close()
    _die_in_child(root, step, "create")
    with Store(root) as s:
        assert s.volumes.list() == []
        assert not (root / "volumes" / "crash").exists()
        v, new = s.volumes.create("crash")  # the name is free again
        assert new and Path(v.mountpoint).is_dir()


def test_a_remove_killed_half_way_is_finished_on_open(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store(root, driver="vfs") as s:
        v, _ = s.volumes.create("crash")
        Path(v.mountpoint, "f").write_text("x")
        Path(v.mountpoint, "g").write_text("y")
    _die_in_child(root, "half-removed", "remove")
    with Store(root) as s:
        assert s.volumes.list() == []
        assert not (root / "volumes" / "crash").exists()
