"""``runtime.monitor`` on its own: ``spawn`` forks a monitor that runs a real OCI runtime (crun,
else runc) on a bundle this test writes (the runtime's default spec, a static busybox rootfs), no
store and no lifecycle around it. Checked: the handshake, output to the attached caller and to the
json-file log, the exit (code, 128+N, ``exit.json`` written last), a runtime that cannot start
the program, a caller that detaches (the monitor then becomes ``runtime.cleanup``), stdin handed
over, and the on-failure restart policy. Every test ends with the monitor gone and the runtime
holding no state for the container."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from graph import LaminaError
from runtime import cgroups
from runtime.attach import Attachment
from runtime.bundle import CGROUP_PARENT
from runtime.monitor import Options, spawn
from runtime.oci import OCIRuntime, open_runtime
from runtime.paths import Paths
from runtime.proc import start_time
from runtime.state import Exit, read_state
from tests.runtime.busybox import BUSYBOX, skip_reason

pytestmark = pytest.mark.integration

APPLETS = ["sh", "echo", "cat", "sleep", "kill", "true"]


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    assert BUSYBOX is not None
    root = tmp_path_factory.mktemp("monitor") / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for a in APPLETS:
        os.symlink("busybox", root / "bin" / a)
    for d in ("proc", "sys", "dev", "tmp"):
        (root / d).mkdir()
    return root


@pytest.fixture
def rt(tmp_path: Path) -> OCIRuntime:
    name = "crun" if shutil.which("crun") else "runc"
    return open_runtime(name, str(tmp_path / "rt-state"))


def bundle(tmp_path: Path, rt: OCIRuntime, rootfs: Path, args: list[str]) -> Paths:
    """A container directory with the runtime's own default spec, running ``args``."""
    cid = secrets.token_hex(32)
    d = tmp_path / "c" / cid
    d.mkdir(parents=True)
    subprocess.run([rt.binary, "spec"], cwd=d, check=True, capture_output=True)
    spec = json.loads((d / "config.json").read_text())
    spec["process"].update(terminal=False, args=args, env=["PATH=/bin"])
    spec["root"] = {"path": str(rootfs), "readonly": True}
    # where lamina's bundles put it: the monitor's OOM watch makes that memory cgroup beforehand
    spec["linux"]["cgroupsPath"] = f"{CGROUP_PARENT}/{cid}"
    (d / "config.json").write_text(json.dumps(spec))
    return Paths(str(d), cid)


def gone(att_pid: int, p: Paths, rt: OCIRuntime) -> None:
    """The monitor has ended (reaped by us: it is our child) and the runtime forgot the container."""
    try:
        os.waitpid(att_pid, 0)
    except ChildProcessError:
        pass  # already reaped by Attachment.reap
    deadline = time.monotonic() + 10
    while start_time(att_pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert start_time(att_pid) is None, "monitor still running"
    assert rt.state(p.container_id) is None
    left = cgroups.expected(cgroups.mounts(), f"{CGROUP_PARENT}/{p.container_id}")
    assert not left.v1 and left.v2 is None, f"cgroup left: {left}"


def log_records(p: Paths) -> list[tuple[str, str]]:
    with open(p.log, encoding="utf-8") as f:
        return [(r["stream"], r["log"]) for r in map(json.loads, f)]


def run_attached(p: Paths, rt: OCIRuntime, tmp_path: Path, **kw: object) -> tuple[Attachment, Exit, bytes, bytes]:
    att = spawn(p, rt, store_root=str(tmp_path / "store"), **kw)  # type: ignore[arg-type]
    pid = att.child
    started = att.handshake(timeout=60)
    assert started.pid > 0 and started.monitor_pid == pid and started.monitor_start > 0
    out, err = io.BytesIO(), io.BytesIO()
    ex = att.stream(out, err)
    assert ex is not None
    att.finish()
    gone(pid, p, rt)
    return att, ex, out.getvalue(), err.getvalue()


def test_attached_run_streams_logs_and_reports_the_exit(tmp_path: Path, rt: OCIRuntime, rootfs: Path) -> None:
    p = bundle(tmp_path, rt, rootfs, ["sh", "-c", "echo out; echo err >&2; echo more; exit 3"])
    _, ex, out, err = run_attached(p, rt, tmp_path)
    assert (ex.code, ex.oom_killed, out, err) == (3, False, b"out\nmore\n", b"err\n")
    with open(p.exit, encoding="utf-8") as f:
        assert Exit.from_json(json.load(f)) == ex
    assert sorted(log_records(p)) == [("stderr", "err\n"), ("stdout", "more\n"), ("stdout", "out\n")]
    assert not (tmp_path / "store").exists()  # the caller took over: no runtime.cleanup


def test_a_signal_ends_with_128_plus_n(tmp_path: Path, rt: OCIRuntime, rootfs: Path) -> None:
    p = bundle(tmp_path, rt, rootfs, ["sleep", "60"])
    att = spawn(p, rt, store_root=str(tmp_path / "store"))
    pid = att.child
    started = att.handshake(timeout=60)
    os.kill(started.pid, signal.SIGKILL)  # (a namespace's init ignores signals it has no handler for, but this one)
    ex = att.stream(io.BytesIO(), io.BytesIO())
    att.finish()
    gone(pid, p, rt)
    assert ex is not None and ex.code == 128 + signal.SIGKILL


def test_a_runtime_killed_under_a_running_container(tmp_path: Path, rt: OCIRuntime, rootfs: Path) -> None:
    p = bundle(tmp_path, rt, rootfs, ["sleep", "60"])
    att = spawn(p, rt, store_root=str(tmp_path / "store"))
    pid = att.child
    started = att.handshake(timeout=60)
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
        [runtime_pid] = [int(x) for x in f.read().split()]
    os.kill(runtime_pid, signal.SIGKILL)  # the runtime dies; init is re-parented to the monitor
    os.kill(started.pid, signal.SIGKILL)
    ex = att.stream(io.BytesIO(), io.BytesIO())
    att.finish()
    gone(pid, p, rt)  # includes: the state the dead runtime left was deleted
    assert ex is not None and ex.code == 128 + signal.SIGKILL


def test_stdin_is_handed_to_the_container(tmp_path: Path, rt: OCIRuntime, rootfs: Path) -> None:
    p = bundle(tmp_path, rt, rootfs, ["cat"])
    r, w = os.pipe()
    try:
        os.write(w, b"through the pipe\n")
        os.close(w)
        w = -1
        _, ex, out, _ = run_attached(p, rt, tmp_path, stdin=r)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert (ex.code, out) == (0, b"through the pipe\n")


def test_a_program_that_cannot_start_fails_the_handshake(tmp_path: Path, rt: OCIRuntime, rootfs: Path) -> None:
    p = bundle(tmp_path, rt, rootfs, ["/bin/nosuchprogram"])
    att = spawn(p, rt, store_root=str(tmp_path / "store"))
    pid = att.child
    with pytest.raises(LaminaError, match=f"{rt.name}: .*nosuchprogram"):
        att.handshake(timeout=60)
    att.detach()
    gone(pid, p, rt)
    assert not os.path.exists(p.exit)  # it never ran: no exit to record


def test_a_detached_monitor_records_the_exit_and_becomes_cleanup(tmp_path: Path, rt: OCIRuntime,
                                                                 rootfs: Path) -> None:
    p = bundle(tmp_path, rt, rootfs, ["sh", "-c", "sleep 0.2; echo after the caller left; exit 5"])
    att = spawn(p, rt, store_root=str(tmp_path / "store"))
    pid = att.child
    att.handshake(timeout=60)
    att.detach()
    gone(pid, p, rt)
    with open(p.exit, encoding="utf-8") as f:
        assert Exit.from_json(json.load(f)).code == 5
    assert log_records(p) == [("stdout", "after the caller left\n")]
    # runtime.cleanup opened the store it was given (and found no such container: nothing to do)
    assert (tmp_path / "store").is_dir()
    assert "Traceback" not in Path(p.monitor_log).read_text()


def test_on_failure_restarts_up_to_the_limit(tmp_path: Path, rt: OCIRuntime, rootfs: Path) -> None:
    p = bundle(tmp_path, rt, rootfs, ["sh", "-c", "echo run; exit 1"])
    _, ex, out, _ = run_attached(p, rt, tmp_path, options=Options(restart="on-failure", max_retries=2))
    assert (ex.code, out) == (1, b"run\nrun\nrun\n")  # the first run and two restarts
    st = read_state(p, "running")
    assert st.RestartCount == 2 and st.ExitCode == 1
    assert log_records(p) == [("stdout", "run\n")] * 3
