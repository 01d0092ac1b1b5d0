"""``lamina run`` and the container commands end to end: the real ``lamina`` program in
subprocesses, the busybox image loaded with ``lamina load``, crun (and runc), overlay and vfs.
After each test every container is removed and nothing may be left: no mount, no runtime state,
no cgroup, no monitor (``tests/runtime/busybox.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Lamina, clean_env, lamina_command
from tests.runtime.busybox import cleanup_store, leftovers, monitor_pids, skip_reason, wait_pids_gone, write_busybox_layout

pytestmark = pytest.mark.integration

_reason = skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_busybox_layout(tmp_path_factory.mktemp("bb") / "oci")


@pytest.fixture(params=["overlay", "vfs"])
def cli(request: pytest.FixtureRequest, layout: Path, tmp_path: Path) -> Iterator[Lamina]:
    import drivers

    root = tmp_path / "root"
    reason = drivers.supported(request.param, root / "drivers" / request.param)
    if reason:
        pytest.skip(reason)
    lam = Lamina(root, driver=request.param)
    lam("load", "-i", str(layout))
    try:
        yield lam
    finally:
        from graph import Store

        with Store(root) as store:
            problems = cleanup_store(store, root)
        assert not problems, "left behind:\n" + "\n".join(problems)


def popen(cli: Lamina, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    cmd = lamina_command() + ["--root", str(cli.root), "--driver", cli.driver, *args]
    return subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]


def inspect(cli: Lamina, name: str) -> dict[str, object]:
    return json.loads(cli("inspect", "--type", "container", name).out)[0]  # type: ignore[no-any-return]


def until(pred: object, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_run_rm_attached(cli: Lamina) -> None:
    r = cli("run", "--rm", "bb:1", "sh", "-c", "echo out; echo err >&2; exit 3", expect=3)
    assert (r.out, r.err) == ("out\n", "err\n")
    assert cli("ps", "-aq").out == ""


def test_run_detached_survives_the_cli_then_logs_stop_rm(cli: Lamina) -> None:
    cid = cli("run", "-d", "--name", "web", "bb:1", "sh", "-c",
              "trap 'echo stopping; exit 0' TERM; echo up; while :; do sleep 0.05; done").out.strip()
    assert len(cid) == 64
    until(lambda: cli("logs", "web").out == "up\n")  # the CLI that started it has exited long ago
    ps = cli("ps").lines
    assert len(ps) == 2 and ps[1].startswith(cid[:12]) and "Up " in ps[1] and ps[1].rstrip().endswith("web")
    st = inspect(cli, "web")["State"]
    assert st["Running"] is True and st["Pid"] > 0 and st["StartedAt"].endswith("Z")  # type: ignore[index,operator]
    # logs -f follows until the container exits
    follower = popen(cli, "logs", "-f", "web")
    time.sleep(0.3)
    cli("stop", "-t", "5", "web")
    out, _ = follower.communicate(timeout=30)
    assert out == b"up\nstopping\n" and follower.returncode == 0
    st = inspect(cli, "web")["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 0 and st["Running"] is False  # type: ignore[index]
    assert "Exited (0)" in cli("ps", "-a").out
    assert cli("logs", "--tail", "1", "web").out == "stopping\n"
    cli("rm", "web")
    assert cli("ps", "-aq").out == ""


def test_create_start_and_start_attached(cli: Lamina) -> None:
    cli("create", "--name", "c", "bb:1", "sh", "-c", "echo hi; exit 4")
    assert inspect(cli, "c")["State"]["Status"] == "created"  # type: ignore[index]
    assert cli("start", "c").out == "c\n"
    until(lambda: inspect(cli, "c")["State"]["Status"] == "exited")  # type: ignore[index]
    assert inspect(cli, "c")["State"]["ExitCode"] == 4  # type: ignore[index]
    r = cli("start", "-a", "c", expect=4)
    assert r.out == "hi\n"
    assert cli("logs", "c").out == "hi\nhi\n"


def test_kill_pause_unpause_exec_stats(cli: Lamina) -> None:
    cli("run", "-d", "--name", "k", "--memory", "64m", "--pids-limit", "50", "bb:1", "sh", "-c",
        "trap 'exit 9' USR1; i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done")
    until(lambda: len(cli("logs", "k").lines) > 2)
    r = cli("exec", "-e", "X=1", "-w", "/tmp", "-u", "alice", "k", "sh", "-c", "echo $X $(pwd) $(id -u); exit 6", expect=6)
    assert r.out == "1 /tmp 1000\n"
    stats = json.loads(cli("stats", "--no-stream", "--format", "json", "k").out)
    assert stats[0]["Name"] == "k" and stats[0]["MemLimit"] == 64 << 20 and stats[0]["PidsLimit"] == 50
    assert stats[0]["Pids"] >= 1 and stats[0]["CPUNanoseconds"] > 0
    table = cli("stats", "--no-stream").lines
    assert table[0].startswith("CONTAINER ID") and "64MiB" in table[1]
    cli("pause", "k")
    assert "(Paused)" in cli("ps").out
    n = len(cli("logs", "k").lines)
    time.sleep(0.4)
    assert len(cli("logs", "k").lines) == n
    cli.fails("exec", "k", "true", code=4)
    cli("unpause", "k")
    until(lambda: len(cli("logs", "k").lines) > n)
    cli("kill", "-s", "USR1", "k")
    until(lambda: inspect(cli, "k")["State"]["Status"] == "exited")  # type: ignore[index]
    assert inspect(cli, "k")["State"]["ExitCode"] == 9  # type: ignore[index]
    cli.fails("kill", "k", code=4)


def test_rm_force_kills_a_running_container(cli: Lamina) -> None:
    cli("run", "-d", "--name", "r", "bb:1", "sleep", "60")
    cli.fails("rm", "r", code=4)
    cli("rm", "-f", "r")
    assert cli("ps", "-aq").out == ""


def test_run_interactive_passes_stdin(cli: Lamina) -> None:
    r = cli("run", "--rm", "-i", "bb:1", "sh", "-c", "cat; echo done", input=b"line one\nline two\n")
    assert r.out == "line one\nline two\ndone\n"
    r = cli("run", "--rm", "bb:1", "sh", "-c", "cat; echo done", input=b"ignored\n")
    assert r.out == "done\n"  # without -i stdin is /dev/null


def test_signals_reach_the_container(cli: Lamina) -> None:
    p = popen(cli, "run", "--rm", "bb:1", "sh", "-c", "trap 'echo got TERM; exit 7' TERM; echo ready; "
              "while :; do sleep 0.05; done")
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    assert out == b"got TERM\n" and p.returncode == 7


@pytest.mark.parametrize("args,code,words", [
    (["nosuch:1", "true"], 2, "nosuch"),
    (["bb:1", "/no/such/program"], 2, "'/no/such/program' not found"),
    (["-u", "mallory", "bb:1", "true"], 5, "unable to find user mallory"),
    (["--memory", "1k", "bb:1", "true"], 5, "minimum is 6 MiB"),
    (["--cpus", "64", "bb:1", "true"], 5, "--cpus"),
    (["--memory", "lots", "bb:1", "true"], 5, "invalid memory size"),
    (["--restart", "maybe", "bb:1", "true"], 5, "invalid restart policy 'maybe'"),
    (["--restart", "always", "bb:1", "true"], 5, "--restart and --rm"),
])
def test_bad_input_fails_with_one_line_and_leaves_nothing(cli: Lamina, args: list[str], code: int, words: str) -> None:
    r = cli.fails("run", "--rm", *args, code=code)
    assert words in r.err
    assert cli("ps", "-aq").out == ""
    assert leftovers(cli.root, []) == []


def test_missing_runtime_is_named(cli: Lamina, tmp_path: Path) -> None:
    bin_dir = tmp_path / "path-without-runtimes"  # every program of the usual PATH but crun and runc
    bin_dir.mkdir()
    for d in ("/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        for name in os.listdir(d) if os.path.isdir(d) else []:
            if name not in ("crun", "runc") and not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(os.path.join(d, name))
    env = clean_env(PATH=str(bin_dir))
    r = cli("run", "--rm", "bb:1", "true", expect=7, env=env)
    assert r.err.strip() == ("lamina: OCI runtime crun not found in PATH: install it (apt-get install crun) "
                             "or pick another with --runtime")
    assert cli("ps", "-aq").out == ""


def test_runc(cli: Lamina) -> None:
    r = cli("--runtime", "runc", "run", "--rm", "bb:1", "sh", "-c", "echo runc; exit 2", expect=2)
    assert r.out == "runc\n"
    cli("--runtime", "runc", "run", "-d", "--name", "rc", "bb:1", "sleep", "60")
    assert inspect(cli, "rc")["Runtime"] == "runc"
    cli("pause", "rc")
    cli("unpause", "rc")
    cli("stop", "-t", "0", "rc")
    assert inspect(cli, "rc")["State"]["ExitCode"] == 137  # type: ignore[index]


def test_everything_killed_is_cleaned_up_on_next_use(cli: Lamina) -> None:
    """The monitors and the container processes killed at once (a crash): the next ``ps``
    records the containers as exited and leaves nothing mounted or known to the runtime."""
    cli("run", "-d", "--name", "a", "bb:1", "sleep", "60")
    cli("run", "-d", "--name", "b", "bb:1", "sleep", "60")
    pids = monitor_pids(cli.root)
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert wait_pids_gone(pids) == []
    ps = cli("ps", "-a").out
    assert ps.count("Exited (137)") == 2, ps
    assert cli("ps", "-q").out == ""
    ids = cli("ps", "-aq", "--no-trunc").lines
    assert [x for x in leftovers(cli.root, ids) if not x.startswith("container dir")] == []


def test_attached_cli_and_monitor_killed_together(cli: Lamina) -> None:
    """``lamina run --rm`` in the foreground and its monitor both SIGKILLed: the container is
    killed, recorded and (``--rm``) removed by the next command; nothing is left."""
    p = popen(cli, "run", "--rm", "--name", "fg", "bb:1", "sh", "-c", "echo ready; sleep 60")
    assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    pids = monitor_pids(cli.root)
    ids = [d.name for d in (cli.root / "containers").iterdir()]
    assert len(pids) == 1 and len(ids) == 1
    p.kill()
    os.kill(pids[0], signal.SIGKILL)
    p.wait(timeout=10)
    assert wait_pids_gone(pids) == []
    assert cli("ps", "-aq").out == ""  # found dead, killed, removed
    assert leftovers(cli.root, ids) == []


def test_run_imports_nothing_heavy(cli: Lamina, tmp_path: Path) -> None:
    probe = tmp_path / "mods.json"
    code = (
        "import json, sys\n"
        "from lamina.cli.main import main\n"
        "rc = main(sys.argv[2:])\n"
        "json.dump({'rc': rc, 'mods': sorted(sys.modules)}, open(sys.argv[1], 'w'))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(probe), "--root", str(cli.root), "run", "--rm", "bb:1", "true"],
                   check=True, env=clean_env(), capture_output=True)
    doc = json.loads(probe.read_text())
    mods = {m.split(".")[0] for m in doc["mods"]}
    assert doc["rc"] == 0
    heavy = {"numpy", "matplotlib", "httpx", "httpcore", "h11", "anyio", "requests", "urllib3", "trio", "pyfuse3",
             "libarchive", "zstandard", "isal", "xxhash", "tarfile", "gzip", "pytest", "hypothesis",
             # issue 15: milliseconds at every start that run does not need (records without
             # dataclasses, uname without platform, random names without secrets)
             "dataclasses", "inspect", "ast", "dis", "platform", "secrets", "random"}
    assert not mods & heavy, mods & heavy
    assert "graph.oci.formats" not in doc["mods"]  # the image's runtime config without the full parse
