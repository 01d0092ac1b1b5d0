"""``graph.leases``: what protects objects an operation is creating from a concurrent prune.
A lease holds keys for the life of its block, several leases may hold one key, and the lease
of a process that died (killed with SIGKILL here, so it cleaned nothing) is dropped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from drivers.sys.proc import pid_alive
from graph import Store
from graph.leases import hold, holders

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "root", driver="vfs")
    try:
        yield s
    finally:
        s.close()


def test_a_lease_holds_for_its_block(store: Store) -> None:
    leases = store.leases
    with leases.lease() as a:
        leases.hold(a, "blob", "sha256:1")
        leases.hold(a, "blob", "sha256:1")  # twice: once
        leases.hold(a, "layer", "sha256:2")
        with leases.lease() as b:
            assert a != b
            with store.db.transaction() as c:  # inside the caller's own transaction
                hold(c, b, "blob", "sha256:1")
            assert holders(store.db, "blob", "sha256:1") == 2
        assert holders(store.db, "blob", "sha256:1") == 1
        assert leases.held("blob") == {"sha256:1"} and leases.held("layer") == {"sha256:2"}
        assert leases.held("image") == set()
        assert len(leases.live_starts(pid_alive)) == 1
    assert leases.held("blob") == set() and leases.held("layer") == set()
    assert leases.live_starts(pid_alive) == []


def test_an_exception_ends_the_lease_too(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.leases.lease() as a:
            store.leases.hold(a, "image", "sha256:3")
            raise RuntimeError("import failed")
    assert store.leases.held("image") == set()


HOLDER = """
import sys, time
from graph import Store
s = Store(sys.argv[1], driver="vfs")
with s.leases.lease() as lid:
    s.leases.hold(lid, "blob", "sha256:held-by-the-dead")
    print(lid, flush=True)
    time.sleep(60)
"""


def test_the_lease_of_a_killed_process_is_dropped(store: Store) -> None:
    with store.leases.lease() as mine:
        store.leases.hold(mine, "blob", "sha256:mine")
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.root)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout is not None
            theirs = p.stdout.readline().strip()
            assert store.leases.held("blob") == {"sha256:mine", "sha256:held-by-the-dead"}
            assert store.leases.drop_dead(pid_alive) == []  # both alive
            os.kill(p.pid, signal.SIGKILL)
            p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert store.leases.drop_dead(pid_alive) == [theirs]
        assert store.leases.held("blob") == {"sha256:mine"}  # ours untouched
