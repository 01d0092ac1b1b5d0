"""Restart policies run by the monitor, for real (crun and runc, overlay and vfs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import runtime
from graph import Store
from graph.errors import InvalidInput
from lamina import containerconfig as cc
from lamina import runopts
from runtime import paths, state as rstate
from tests.runtime.busybox import wait_pids_gone

RUNTIMES = [n for n in ("crun", "runc") if __import__("shutil").which(n)]


def detached(store: Store, script: str, policy: str, *, rt: str | None = None, name: str = "r", **kw: Any) -> Any:
    img = store.resolve_image("bb:1")
    user = cc.user_config("bb:1", cmd=["sh", "-c", script])
    user["HostConfig"]["RestartPolicy"] = runopts.parse_restart(policy)
    user["HostConfig"].update(kw)
    cfg = cc.merge(user, store.images.config(img.id).config)
    return runtime.run(store, "bb:1", name=name, config=cfg, runtime=rt, attach=False).container


def st(store: Store, c: Any) -> rstate.State:
    return rstate.read_state(paths.paths_of(store, c))


def wait_exited(store: Store, c: Any, timeout: float = 30.0) -> rstate.State:
    pid = st(store, c).MonitorPid
    assert wait_pids_gone([pid], timeout) == []
    got = runtime.reconcile(store, store.containers.get(c.id))
    assert got is not None
    return got[1]


@pytest.mark.parametrize("rt", RUNTIMES)
def test_on_failure_3_restarts_exactly_3_times(rt_store: Store, rt: str, tmp_path: Path) -> None:
    c = detached(rt_store, "echo run; exit 3", "on-failure:3", rt=rt)
    began = time.monotonic()
    s = wait_exited(rt_store, c)
    took = time.monotonic() - began
    assert s.Status == "exited" and s.ExitCode == 3 and s.RestartCount == 3
    assert [e.text for e in runtime.log_entries(rt_store, "r")] == ["run\n"] * 4  # 1 run + 3 restarts
    assert took >= 0.1 + 0.2 + 0.4  # Docker's back-off: 100 ms, doubling
    assert runtime.inspect_state(s)["Restarting"] is False


def test_on_failure_does_not_restart_a_success_and_no_never_restarts(rt_store: Store) -> None:
    c = detached(rt_store, "echo once", "on-failure")
    assert wait_exited(rt_store, c).RestartCount == 0
    c2 = detached(rt_store, "echo once; exit 1", "no", name="n")
    s = wait_exited(rt_store, c2)
    assert (s.ExitCode, s.RestartCount) == (1, 0)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_always_restarts_until_stop(rt_store: Store, rt: str) -> None:
    c = detached(rt_store, "echo up; sleep 0.2", "always", rt=rt)
    deadline = time.monotonic() + 20
    while st(rt_store, c).RestartCount < 2:
        assert time.monotonic() < deadline, "no second restart"
        time.sleep(0.05)
    runtime.stop(rt_store, "r", timeout=5)
    s = wait_exited(rt_store, c)
    assert s.Status == "exited"
    n = s.RestartCount
    time.sleep(0.5)
    assert runtime.reconcile(rt_store, rt_store.containers.get("r"))[1].RestartCount == n  # type: ignore[index]
    # one line per run; the last restart may have been stopped before it printed
    assert len([e for e in runtime.log_entries(rt_store, "r")]) in (n, n + 1)


def test_bad_restart_policies(rt_store: Store) -> None:
    for text in ("maybe", "always:3", "on-failure:x", "no:1"):
        with pytest.raises(InvalidInput, match="restart policy"):
            runopts.parse_restart(text)
    with pytest.raises(InvalidInput, match="--restart and --rm"):
        detached(rt_store, "true", "always", AutoRemove=True)
    assert rt_store.containers.list() == []
