"""Containers run for real: busybox on crun (and runc), on overlay and vfs. Each test's store is
torn down by removing every container and failing if a mount, runtime state, cgroup or monitor is
left (``tests/runtime/conftest.py``)."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import runtime
from graph import Store
from graph.errors import Conflict, InvalidInput, NotFound
from runtime import cgroups
from runtime import inspection, paths, state as rstate
from runtime.proc import start_time
from tests.runtime.busybox import leftovers, wait_pids_gone

RUNTIMES = [n for n in ("crun", "runc") if __import__("shutil").which(n)]


def config(store: Store, cmd: list[str] | tuple[str, ...] = (), *, rm: bool = False, **kw: Any) -> dict[str, Any]:
    """A container record as ``lamina create`` makes it (options merged with the image's)."""
    from lamina import containerconfig as cc

    img = store.resolve_image("bb:1")
    cfg = cc.merge(cc.user_config("bb:1", cmd=list(cmd), **kw), store.images.config(img.id).config)
    cfg["HostConfig"]["AutoRemove"] = rm
    return cfg


def run_attached(store: Store, *cmd: str, rm: bool = True, rt: str | None = None, name: str | None = None,
                 **kw: Any) -> tuple[int, bytes, bytes]:
    r = runtime.run(store, "bb:1", name=name, config=config(store, cmd, rm=rm, **kw), runtime=rt, attach=True)
    out, err = io.BytesIO(), io.BytesIO()
    code = runtime.wait(store, r, out, err)
    return code, out.getvalue(), err.getvalue()


def run_detached(store: Store, *cmd: str, rt: str | None = None, name: str | None = None, **kw: Any) -> Any:
    r = runtime.run(store, "bb:1", name=name, config=config(store, cmd, **kw), runtime=rt, attach=False)
    assert r.attachment is None
    return r.container


def state(store: Store, key: str) -> rstate.State:
    got = runtime.reconcile(store, store.containers.get(key))
    assert got is not None
    return got[1]


def wait_for(pred: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def log_lines(store: Store, key: str) -> list[str]:
    return [e.text for e in runtime.log_entries(store, key)]


def no_trace(store: Store) -> None:
    """A failed run left nothing: no record, no directory, nothing mounted, no runtime state."""
    assert store.containers.list() == []
    assert [p.name for p in (store.root / "containers").iterdir()] == []
    assert leftovers(store.root, []) == []
    assert all(store.driver.refs.count(c) == 0 for c in store.driver.refs.held())  # type: ignore[attr-defined]


# ---- run, attached and detached ---------------------------------------------------------------
@pytest.mark.parametrize("rt", RUNTIMES)
def test_run_attached_streams_output_and_exit_code(rt_store: Store, rt: str) -> None:
    code, out, err = run_attached(rt_store, "sh", "-c", "echo hello; echo oops >&2; exit 3", rt=rt)
    assert (code, out, err) == (3, b"hello\n", b"oops\n")
    assert rt_store.containers.list() == []  # --rm


def test_run_without_rm_keeps_an_exited_container_with_json_file_log(rt_store: Store) -> None:
    code, out, _ = run_attached(rt_store, "sh", "-c", "echo one; printf 'two\\nthree'; echo e >&2; exit 5",
                                rm=False, name="keep")
    assert code == 5 and out == b"one\ntwo\nthree"
    c = rt_store.containers.get("keep")
    st = state(rt_store, "keep")
    assert c.state == "exited" and st.Status == "exited" and st.ExitCode == 5
    assert st.StartedAt <= st.FinishedAt and not st.RootfsHeld
    assert rt_store.containers.mounted(c) == 0
    log = rt_store.root / "containers" / c.id / f"{c.id}-json.log"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {r["stream"] for r in records} == {"stdout", "stderr"}
    assert [r["log"] for r in records if r["stream"] == "stdout"] == ["one\n", "two\n", "three"]
    assert all(r["time"].endswith("Z") and len(r["time"]) == 30 for r in records)
    assert runtime.inspect_state(st)["ExitCode"] == 5


@pytest.mark.parametrize("rt", RUNTIMES)
def test_detached_container_runs_under_its_own_monitor(rt_store: Store, rt: str) -> None:
    c = run_detached(rt_store, "sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.1; done", rt=rt, name="d")
    st = rstate.read_state(paths.paths_of(rt_store, c))
    assert st.Status == "running" and st.Pid > 0 and st.monitor_alive()
    assert os.getsid(st.MonitorPid) != os.getsid(0)  # its own session: survives its caller
    # follow the log until the container exits
    texts = [e.text for e in runtime.log_entries(rt_store, "d", follow=True)]
    assert texts == ["line 1\n", "line 2\n", "line 3\n"]
    wait_pids_gone([st.MonitorPid])  # the monitor recorded the exit itself and went
    c = rt_store.containers.get("d")
    assert c.state == "exited" and rstate.read_state(paths.paths_of(rt_store, c)).ExitCode == 0
    assert rt_store.containers.mounted(c) == 0


def test_detached_rm_container_is_removed_by_its_monitor(rt_store: Store) -> None:
    c = run_detached(rt_store, "true", rm=True)
    pid = rstate.read_state(paths.paths_of(rt_store, c)).MonitorPid
    assert wait_pids_gone([pid]) == []
    assert rt_store.containers.list() == []
    assert leftovers(rt_store.root, [c.id]) == []


def test_start_again_after_exit(rt_store: Store) -> None:
    code, out, _ = run_attached(rt_store, "sh", "-c", "echo run; exit 1", rm=False, name="again")
    assert (code, out) == (1, b"run\n")
    r = runtime.start(rt_store, "again", attach=True)
    buf = io.BytesIO()
    assert runtime.wait(rt_store, r, buf, io.BytesIO()) == 1
    assert buf.getvalue() == b"run\n"
    assert log_lines(rt_store, "again") == ["run\n", "run\n"]


def test_create_writes_the_bundle_and_start_runs_it(rt_store: Store) -> None:
    c = runtime.create(rt_store, "bb:1", name="made", config=config(rt_store, ["echo", "made"], user="alice"))
    bundle = json.loads((rt_store.root / "containers" / c.id / "config.json").read_text())
    assert bundle["process"]["args"] == ["echo", "made"]
    assert bundle["process"]["user"] == {"uid": 1000, "gid": 1000, "umask": 0o22, "additionalGids": [50]}
    assert rt_store.containers.mounted(c) == 0 and c.state == "created"
    runtime.start(rt_store, "made")
    wait_for(lambda: rt_store.containers.get("made").state == "exited" or state(rt_store, "made").Status == "exited",
             what="exit")
    assert log_lines(rt_store, "made") == ["made\n"]


# ---- stop, kill, pause -----------------------------------------------------------------------------
def test_stop_sends_term_and_the_container_exits(rt_store: Store) -> None:
    run_detached(rt_store, "sh", "-c", "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
                 name="polite")
    wait_for(lambda: log_lines(rt_store, "polite") == ["ready\n"], what="ready")
    c = runtime.stop(rt_store, "polite", timeout=10)
    st = state(rt_store, "polite")
    assert c.state == "exited" and st.ExitCode == 0
    assert log_lines(rt_store, "polite") == ["ready\n", "bye\n"]


def test_stop_kills_a_container_that_ignores_term(rt_store: Store) -> None:
    run_detached(rt_store, "sleep", "60", name="stubborn")  # pid 1 ignores TERM without a handler
    runtime.stop(rt_store, "stubborn", timeout=0.3)
    st = state(rt_store, "stubborn")
    assert st.Status == "exited" and st.ExitCode == 137


@pytest.mark.parametrize("rt", RUNTIMES)
def test_kill_with_a_signal(rt_store: Store, rt: str) -> None:
    run_detached(rt_store, "sh", "-c", "trap 'exit 42' USR1; echo ready; while :; do sleep 0.05; done",
                 name="k", rt=rt)
    wait_for(lambda: log_lines(rt_store, "k") == ["ready\n"], what="ready")
    runtime.kill(rt_store, "k", "USR1")
    wait_for(lambda: state(rt_store, "k").Status == "exited", what="exit")
    assert state(rt_store, "k").ExitCode == 42
    with pytest.raises(Conflict):
        runtime.kill(rt_store, "k", "KILL")
    with pytest.raises(InvalidInput):
        runtime.kill(rt_store, "k", "NOSUCHSIG")


@pytest.mark.parametrize("rt", RUNTIMES)
def test_paused_container_makes_no_progress(rt_store: Store, rt: str) -> None:
    c = run_detached(rt_store, "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done",
                     name="p", rt=rt)
    wait_for(lambda: len(log_lines(rt_store, "p")) >= 3, what="output")
    runtime.pause(rt_store, "p")
    cg = inspection.cgroup_of(c)
    assert cgroups.frozen(cg) is True
    assert rt_store.containers.get("p").state == "paused" and state(rt_store, "p").Status == "paused"
    before = len(log_lines(rt_store, "p"))
    time.sleep(0.5)
    assert len(log_lines(rt_store, "p")) == before
    with pytest.raises(Conflict):
        runtime.pause(rt_store, "p")
    runtime.unpause(rt_store, "p")
    assert cgroups.frozen(cg) is False
    wait_for(lambda: len(log_lines(rt_store, "p")) > before, what="progress after unpause")
    with pytest.raises(Conflict):
        runtime.unpause(rt_store, "p")


def test_stop_and_rm_force_work_on_a_paused_container(rt_store: Store) -> None:
    run_detached(rt_store, "sleep", "60", name="p1")
    runtime.pause(rt_store, "p1")
    runtime.stop(rt_store, "p1", timeout=0.2)
    assert state(rt_store, "p1").Status == "exited"
    run_detached(rt_store, "sleep", "60", name="p2")
    runtime.pause(rt_store, "p2")
    runtime.remove(rt_store, "p2", force=True)
    with pytest.raises(NotFound):
        rt_store.containers.get("p2")


def test_rm_refuses_a_running_container_without_force(rt_store: Store) -> None:
    c = run_detached(rt_store, "sleep", "60", name="busy")
    with pytest.raises(Conflict):
        runtime.remove(rt_store, "busy")
    assert state(rt_store, "busy").Status == "running"
    runtime.remove(rt_store, "busy", force=True)
    assert rt_store.containers.list() == []
    assert leftovers(rt_store.root, [c.id]) == []


# ---- exec, stats --------------------------------------------------------------------------------------
@pytest.mark.parametrize("rt", RUNTIMES)
def test_exec_runs_in_the_container(rt_store: Store, rt: str, capfd: pytest.CaptureFixture[str]) -> None:
    run_detached(rt_store, "sleep", "60", name="x", rt=rt, env=["FROM_RUN=1"])
    code = runtime.exec_(rt_store, "x", ["sh", "-c", "echo $FROM_RUN $FOO; id -u; pwd; hostname; exit 7"],
                         env=["FOO=bar"], workdir="/tmp", user="alice")
    out = capfd.readouterr().out.splitlines()
    assert code == 7
    assert out[:3] == ["1 bar", "1000", "/tmp"]
    c = rt_store.containers.get("x")
    assert out[3] == c.id[:12]
    # the exec'd process shares the container's pid namespace (pid 1 may still be the runtime's
    # init for a moment after start: runc's start returns before its init has exec'd the command)
    def pid1_is_sleep() -> bool:
        assert runtime.exec_(rt_store, "x", ["sh", "-c", "test -d /proc/1 && cat /proc/1/cmdline"]) == 0
        return "sleep" in capfd.readouterr().out

    wait_for(pid1_is_sleep, what="pid 1 to be the container's sleep")
    assert runtime.exec_(rt_store, "x", ["true"], detach=True) == 0
    with pytest.raises(NotFound):
        runtime.exec_(rt_store, "x", ["no-such-program"])
    with pytest.raises(InvalidInput):
        runtime.exec_(rt_store, "x", ["true"], user="mallory")
    runtime.pause(rt_store, "x")
    with pytest.raises(Conflict):
        runtime.exec_(rt_store, "x", ["true"])
    runtime.unpause(rt_store, "x")
    runtime.stop(rt_store, "x", timeout=0.1)
    with pytest.raises(Conflict):
        runtime.exec_(rt_store, "x", ["true"])


def test_stats_read_the_container_cgroup(rt_store: Store) -> None:
    run_detached(rt_store, "sh", "-c", "sleep 60 & sleep 60 & wait", name="s", memory=64 << 20, pids_limit=20)
    wait_for(lambda: (runtime.stats(rt_store, "s")[1].pids or 0) >= 3, what="three processes")
    _c, s = runtime.stats(rt_store, "s")
    assert s is not None
    assert s.memory_limit == 64 << 20 and s.pids_limit == 20 and s.pids == 3
    assert s.cpu_ns is not None and s.cpu_ns > 0
    assert s.memory is not None and 0 < s.memory < 64 << 20
    runtime.stop(rt_store, "s", timeout=0)
    assert runtime.stats(rt_store, "s")[1] is None


# ---- limits ---------------------------------------------------------------------------------------
def _cg_file(c: Any, controller: str, name: str) -> str | None:
    d = inspection.cgroup_of(c).dir(controller)
    return cgroups.read_text(os.path.join(d, name)) if d else None


@pytest.mark.parametrize("rt", RUNTIMES)
def test_memory_limit_is_set_and_enforced(rt_store: Store, rt: str) -> None:
    c = run_detached(rt_store, "sleep", "60", name="m", memory=32 << 20, rt=rt)
    if inspection.cgroup_of(c).v1.get("memory"):
        assert _cg_file(c, "memory", "memory.limit_in_bytes") == str(32 << 20)
        if cgroups.swap_limit_supported():
            assert _cg_file(c, "memory", "memory.memsw.limit_in_bytes") == str(32 << 20)
    else:
        assert _cg_file(c, "memory", "memory.max") == str(32 << 20)
    runtime.remove(rt_store, "m", force=True)
    # a process that needs more is killed by the kernel
    code, _out, _err = run_attached(rt_store, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1",
                                    memory=32 << 20, rm=False, name="hog", rt=rt)
    st = state(rt_store, "hog")
    assert code == 137 and st.ExitCode == 137 and st.OOMKilled
    assert runtime.inspect_state(st)["OOMKilled"] is True


def test_pids_limit_is_set_and_enforced(rt_store: Store) -> None:
    c = run_detached(rt_store, "sleep", "60", name="pl", pids_limit=8)
    assert _cg_file(c, "pids", "pids.max") == "8"
    runtime.remove(rt_store, "pl", force=True)
    code, _out, err = run_attached(rt_store, "sh", "-c", "for i in $(seq 20); do sleep 5 & done; wait", pids_limit=8)
    assert code != 0 and b"can't fork" in err


def test_cpu_limit_is_set_and_throttles(rt_store: Store) -> None:
    c = run_detached(rt_store, "sh", "-c", "while :; do :; done", name="cpu", nano_cpus=500_000_000)
    if inspection.cgroup_of(c).v1.get("cpu"):
        assert _cg_file(c, "cpu", "cpu.cfs_quota_us") == "50000"
        assert _cg_file(c, "cpu", "cpu.cfs_period_us") == "100000"
    else:
        assert _cg_file(c, "cpu", "cpu.max") == "50000 100000"
    # the busy loop hits the quota: the scheduler throttles the cgroup
    wait_for(lambda: (runtime.stats(rt_store, "cpu")[1].throttled_periods or 0) > 0, what="throttling")


@pytest.mark.parametrize("memory,cpus,pids,why", [
    (1 << 20, 0, None, "minimum is 6 MiB"),
    (0, 64 * 1_000_000_000, None, "range is 0.01"),
    (0, 1_000_000, None, "range is 0.01"),
    (0, 0, -5, "pids-limit"),
])
def test_invalid_limits_fail_cleanly(rt_store: Store, memory: int, cpus: int, pids: int | None, why: str) -> None:
    cfg = config(rt_store, ["true"])
    cfg["HostConfig"].update({"Memory": memory, "NanoCpus": cpus, "PidsLimit": pids})
    with pytest.raises(InvalidInput, match=why):
        runtime.run(rt_store, "bb:1", config=cfg, attach=True)
    no_trace(rt_store)


# ---- users, environment, network ------------------------------------------------------------------
@pytest.mark.parametrize("user,want", [
    ("", "0 0 0"), ("alice", "1000 1000 1000 50"), ("alice:root", "1000 0 0"), ("1000:50", "1000 50 50"),
    ("4242", "4242 0 0"), ("nobody", "65534 65534 65534"),
])
def test_user_is_resolved_through_the_image(rt_store: Store, user: str, want: str) -> None:
    code, out, _ = run_attached(rt_store, "sh", "-c", 'echo $(id -u) $(id -g) $(id -G)', user=user)
    assert code == 0 and out.decode().split() == want.split()


def test_environment_hostname_and_working_dir(rt_store: Store) -> None:
    code, out, _ = run_attached(rt_store, "sh", "-c", "echo $HOME; echo $HOSTNAME; hostname; pwd; echo $PATH; "
                                "cat /etc/hostname", name="envy", rm=False, workdir="/new/dir")
    lines = out.decode().splitlines()
    cid = rt_store.containers.get("envy").id
    assert code == 0 and lines == ["/root", cid[:12], cid[:12], "/new/dir", "/usr/sbin:/usr/bin:/sbin:/bin", cid[:12]]
    code, out, _ = run_attached(rt_store, "sh", "-c", "hostname; echo $HOME", hostname="box", user="alice")
    assert out == b"box\n/home/alice\n"


def test_network_none_has_only_loopback_up(rt_store: Store) -> None:
    code, out, _ = run_attached(rt_store, "sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags")
    assert code == 0 and out.decode().split() == ["lo", "0x9"]  # IFF_UP | IFF_LOOPBACK


def test_network_host_shares_the_hosts_interfaces(rt_store: Store) -> None:
    code, out, _ = run_attached(rt_store, "ls", "/sys/class/net", network="host")
    assert code == 0 and out.decode().split() == sorted(os.listdir("/sys/class/net"))


def test_rlimits_do_not_exceed_the_hosts(rt_store: Store) -> None:
    import resource

    code, out, _ = run_attached(rt_store, "sh", "-c", "ulimit -Hn; ulimit -Sn")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    got = [int(x) for x in out.split()]
    assert code == 0 and all(0 < n <= hard or hard == resource.RLIM_INFINITY for n in got)


def test_default_mounts_capabilities_and_masked_paths(rt_store: Store) -> None:
    code, out, err = run_attached(rt_store, "sh", "-c",
                                  "grep -E ' /(proc|dev|dev/pts|dev/shm|dev/mqueue|sys|sys/fs/cgroup) ' /proc/mounts"
                                  " | cut -d' ' -f2,3,4 | cut -d, -f1; grep CapEff /proc/self/status;"
                                  " cat /proc/kcore | wc -c; echo sys $(grep ' /proc/sys ' /proc/mounts | cut -d' ' -f4)")
    assert code == 0, err
    lines = out.decode().splitlines()
    mounts = {ln.split()[0]: (ln.split()[1], ln.split()[2]) for ln in lines if ln.startswith("/")}
    assert mounts["/proc"][0] == "proc" and mounts["/dev"][0] == "tmpfs" and mounts["/dev/pts"][0] == "devpts"
    assert mounts["/sys"] == ("sysfs", "ro") and mounts["/dev/shm"][0] == "tmpfs"
    assert mounts["/dev/mqueue"][0] == "mqueue"
    cap = next(ln for ln in lines if ln.startswith("CapEff"))
    assert int(cap.split()[1], 16) == 0xa80425fb  # Docker's 14 default capabilities
    assert "0" in lines  # /proc/kcore is masked (an empty file)
    assert next(ln for ln in lines if ln.startswith("sys ")).split()[1].split(",")[0] == "ro"


# ---- bad input -------------------------------------------------------------------------------------
def test_bad_input_is_refused_with_nothing_left(rt_store: Store) -> None:
    with pytest.raises(NotFound, match="nosuch"):
        runtime.run(rt_store, "nosuch:1", config={"Cmd": ["true"]})
    with pytest.raises(NotFound, match="'/no/such/binary' not found"):
        runtime.run(rt_store, "bb:1", config=config(rt_store, ["/no/such/binary"]))
    no_trace(rt_store)
    with pytest.raises(NotFound, match="'frobnicate' not found in the image"):
        runtime.run(rt_store, "bb:1", config=config(rt_store, ["frobnicate"]))
    with pytest.raises(InvalidInput, match="unable to find user mallory"):
        runtime.run(rt_store, "bb:1", config=config(rt_store, ["true"], user="mallory"))
    with pytest.raises(InvalidInput, match="unable to find group wheel"):
        runtime.run(rt_store, "bb:1", config=config(rt_store, ["true"], user="alice:wheel"))
    with pytest.raises(InvalidInput, match="unable to find user mallory"):
        runtime.create(rt_store, "bb:1", name="c", config=config(rt_store, ["true"], user="mallory"))
    with pytest.raises(InvalidInput):
        runtime.run(rt_store, "bb:1", config=config(rt_store, ["true"], runtime="nosuchruntime"), runtime="nosuchruntime")
    no_trace(rt_store)


# ---- crashes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rt", RUNTIMES)
def test_killed_monitor_is_noticed_and_the_container_cleaned_up(rt_store: Store, rt: str) -> None:
    c = run_detached(rt_store, "sleep", "60", name="orphan", rt=rt)
    st = rstate.read_state(paths.paths_of(rt_store, c))
    os.kill(st.MonitorPid, signal.SIGKILL)
    assert wait_pids_gone([st.MonitorPid]) == []
    assert start_time(st.Pid) is not None  # the container goes on without its monitor...
    runtime.reconcile_all(rt_store)  # ...until the next command looks
    st2 = state(rt_store, "orphan")
    assert st2.Status == "exited" and st2.ExitCode == 137 and "monitor died" in st2.Error
    assert rt_store.containers.get("orphan").state == "exited"
    assert start_time(st.Pid) is None
    assert rt_store.containers.mounted(c) == 0
    assert st2.runtime() is not None and st2.runtime().state(c.id) is None  # type: ignore[union-attr]
    assert leftovers(rt_store.root, [c.id]) == [f"container dir {rt_store.root / 'containers' / c.id}"]


def test_attached_caller_outlives_a_killed_monitor(rt_store: Store) -> None:
    r = runtime.run(rt_store, "bb:1", name="lost", config=config(rt_store, ["sh", "-c", "echo ready; sleep 60"]),
                    attach=True)
    os.kill(r.state.MonitorPid, signal.SIGKILL)
    code = runtime.wait(rt_store, r, io.BytesIO(), io.BytesIO())  # returns: the container is killed
    st = state(rt_store, "lost")
    assert st.Status == "exited" and code == st.ExitCode == 137 and not st.RootfsHeld
    assert start_time(st.Pid or r.state.Pid) is None
    assert rt_store.containers.mounted(rt_store.containers.get("lost")) == 0


def test_everything_killed_at_once_leaves_nothing_after_next_use(rt_store: Store) -> None:
    """Monitor and container killed together (as in a machine crash): the runtime's state is
    stale, the rootfs still mounted; the next look records the exit and cleans up."""
    a = run_detached(rt_store, "sleep", "60", name="a")
    b = run_detached(rt_store, "sleep", "60", name="b", rm=True)
    pids = []
    for c in (a, b):
        st = rstate.read_state(paths.paths_of(rt_store, c))
        pids += [st.MonitorPid, st.Pid]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert wait_pids_gone(pids) == []
    listed = runtime.list_reconciled(rt_store)  # what ps shows: the repaired records, b gone
    assert [(c.name, st.Status) for c, st in listed] == [("a", "exited")]
    assert listed[0][0].state == "exited"
    st = state(rt_store, "a")
    assert st.Status == "exited" and st.ExitCode in (137, 255) and st.as_dict() == listed[0][1].as_dict()
    left = [(c.name, c.state, rstate.read_state(paths.paths_of(rt_store, c)).as_dict()) for c in rt_store.containers.list()]
    assert [x[0] for x in left] == ["a"], left  # b (--rm) was removed once found dead
    assert rt_store.containers.mounted(a) == 0
    assert leftovers(rt_store.root, [a.id, b.id]) == [f"container dir {rt_store.root / 'containers' / a.id}"]


def test_interrupted_start_releases_the_rootfs(rt_store: Store) -> None:
    """A start that died after mounting (no monitor recorded): the mount is released."""
    c = runtime.create(rt_store, "bb:1", name="half", config=config(rt_store, ["true"]))
    p = paths.paths_of(rt_store, c)
    path = rt_store.containers.mount(c)
    rstate.write_state(p, rstate.State(Status="created", RootfsHeld=True, Rootfs=path, MonitorPid=0))
    runtime.reconcile_all(rt_store)
    assert rt_store.containers.mounted(c) == 0
    assert rstate.read_state(p).RootfsHeld is False


def test_stale_runtime_state_without_a_record_is_deleted(rt_store: Store) -> None:
    c = run_detached(rt_store, "sleep", "60", name="ghost")
    st = rstate.read_state(paths.paths_of(rt_store, c))
    os.kill(st.MonitorPid, signal.SIGKILL)
    wait_pids_gone([st.MonitorPid])
    # the record disappears behind the runtime's back (a crash inside rm)
    with rt_store.db.transaction() as conn:
        conn.execute("UPDATE containers SET state = 'exited' WHERE id = ?", (c.id,))
    rt_store.containers.unmount(c)
    rt_store.remove_container(c.id, force=True)
    rt = st.runtime()
    assert rt is not None and rt.state(c.id) is not None
    assert c.id in runtime.sweep_runtime_state(rt_store)
    assert rt.state(c.id) is None and start_time(st.Pid) is None


def test_runtime_state_root_is_lamina_own(rt_store: Store) -> None:
    c = run_detached(rt_store, "sleep", "60", name="own")
    rt = state(rt_store, "own").runtime()
    assert rt is not None and Path(rt.state_root).parent == rt_store.root / "runtime"
    assert rt.known() == [c.id]
    doc = rt.state(c.id)
    assert doc is not None and doc["status"] == "running"
