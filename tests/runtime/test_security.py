"""Security defaults and options for real (crun and runc, overlay and vfs): the default seccomp
profile blocks ``keyctl`` and user-namespace ``unshare`` in a test program (a static C binary
built here with ``cc``, bound into busybox), ``seccomp=unconfined`` allows them; capabilities,
no-new-privileges, read-only root, ulimits, ``--init`` reaping zombies, /dev/shm, groups, hosts
and resolv.conf, the stop signal. Flags go through ``lamina.runopts`` as ``run`` parses them."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import runtime
from graph import Store
from graph.errors import InvalidInput
from lamina import containerconfig as cc
from lamina import runopts
from tests.runtime.busybox import wait_pids_gone

RUNTIMES = [n for n in ("crun", "runc") if shutil.which(n)]
PROBE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    long r = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session keyring */, 1);
    printf("keyctl %s\n", r < 0 ? strerror(errno) : "ok");
    r = unshare(CLONE_NEWUSER);
    printf("unshare-user %s\n", r < 0 ? strerror(errno) : "ok");
    return 0;
}
"""


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static binary that calls keyctl(2) and unshare(CLONE_NEWUSER) and says what happened."""
    cc_bin = shutil.which("cc") or shutil.which("gcc")
    if cc_bin is None:
        pytest.skip("no C compiler (scripts/setup.sh installs gcc)")
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text(PROBE)
    subprocess.run([cc_bin, "-static", "-O1", "-o", str(d / "probe"), str(d / "probe.c")], check=True)
    return d / "probe"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    runopts.add_options(p)
    return p


def run(store: Store, argv: list[str], *flags: str, rt: str | None = None, rm: bool = True,
        name: str | None = None) -> tuple[int, str, str]:
    args = parser().parse_args(list(flags))
    img = store.resolve_image("bb:1")
    user = runopts.apply(args, cc.user_config("bb:1", cmd=argv))
    cfg = cc.merge(user, store.images.config(img.id).config)
    cfg["HostConfig"]["AutoRemove"] = rm
    r = runtime.run(store, "bb:1", name=name, config=cfg, runtime=rt, attach=True)
    out, err = io.BytesIO(), io.BytesIO()
    code = runtime.wait(store, r, out, err)
    return code, out.getvalue().decode(), err.getvalue().decode()


def sh(store: Store, script: str, *flags: str, **kw: Any) -> tuple[int, str, str]:
    return run(store, ["sh", "-c", script], *flags, **kw)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_default_seccomp_blocks_keyctl_and_unconfined_allows_it(rt_store: Store, rt: str, probe: Path) -> None:
    code, out, err = run(rt_store, ["/probe"], "-v", f"{probe}:/probe:ro", rt=rt)
    assert code == 0, err
    assert out == "keyctl Operation not permitted\nunshare-user Operation not permitted\n"
    code, out, _ = run(rt_store, ["/probe"], "-v", f"{probe}:/probe:ro", "--security-opt", "seccomp=unconfined", rt=rt)
    assert code == 0 and out.startswith("keyctl ok\n")
    # CAP_SYS_ADMIN brings unshare back (the profile's conditions follow the capability set)
    code, out, _ = run(rt_store, ["/probe"], "-v", f"{probe}:/probe:ro", "--cap-add", "SYS_ADMIN", rt=rt)
    assert out.splitlines() == ["keyctl Operation not permitted", "unshare-user ok"]


def test_seccomp_profile_file_and_bad_ones(rt_store: Store, tmp_path: Path) -> None:
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))
    code, _, err = sh(rt_store, "mkdir /tmp/x", "--security-opt", f"seccomp={prof}")
    assert code != 0 and "Operation not permitted" in err
    with pytest.raises(InvalidInput, match="opening seccomp profile"):
        sh(rt_store, "true", "--security-opt", f"seccomp={tmp_path}/missing.json")
    with pytest.raises(InvalidInput, match="security-opt"):
        sh(rt_store, "true", "--security-opt", "bogus=1")
    assert rt_store.containers.list() == []


def _caps(out: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def test_capabilities_privileged_and_no_new_privileges(rt_store: Store) -> None:
    status = "cat /proc/self/status"
    d = _caps(sh(rt_store, status)[1])
    assert d["CapEff"] == "00000000a80425fb" and d["NoNewPrivs"] == "0"  # Docker's 14 defaults
    assert _caps(sh(rt_store, status, "--cap-drop", "ALL")[1])["CapEff"] == "0000000000000000"
    d = _caps(sh(rt_store, status, "--cap-drop", "ALL", "--cap-add", "NET_ADMIN")[1])
    assert d["CapEff"] == "0000000000001000"
    d = _caps(sh(rt_store, status, "--security-opt", "no-new-privileges")[1])
    assert d["NoNewPrivs"] == "1"
    d = _caps(sh(rt_store, status, "--privileged")[1])
    assert int(d["CapEff"], 16) == int(_caps(open("/proc/self/status").read())["CapEff"], 16) and d["Seccomp"] == "0"
    assert _caps(sh(rt_store, status)[1])["Seccomp"] == "2"  # filtered by default
    with pytest.raises(InvalidInput, match="unknown capability"):
        sh(rt_store, "true", "--cap-add", "NOPE")


def test_read_only_ulimit_shm_groups_hosts_dns(rt_store: Store) -> None:
    code, _, err = sh(rt_store, "touch /x", "--read-only")
    assert code != 0 and "Read-only file system" in err
    assert sh(rt_store, "touch /tmp/x", "--read-only", "--tmpfs", "/tmp")[0] == 0
    assert sh(rt_store, "ulimit -n; ulimit -Hn", "--ulimit", "nofile=100:200")[1] == "100\n200\n"
    with pytest.raises(InvalidInput, match="above this host's"):
        sh(rt_store, "true", "--ulimit", "nofile=1:99999999999")
    out = sh(rt_store, "grep ' /dev/shm ' /proc/mounts", "--shm-size", "2m")[1]
    assert "size=2048k" in out
    assert sh(rt_store, "id -G", "--group-add", "staff", "--group-add", "4242")[1].split() == ["0", "50", "4242"]
    out = sh(rt_store, "tail -n 1 /etc/hosts; cat /etc/resolv.conf", "--add-host", "db:10.1.2.3",
             "--dns", "192.0.2.53", "--dns-search", "example.test", "--dns-option", "ndots:2")[1]
    assert out == "10.1.2.3\tdb\nnameserver 192.0.2.53\nsearch example.test\noptions ndots:2\n"
    for bad, words in ((["--dns", "nope"], "invalid --dns"), (["--add-host", "db"], "--add-host"),
                       (["--group-add", "nosuchgroup"], "no such group")):
        with pytest.raises(InvalidInput, match=words):
            sh(rt_store, "true", *bad)
    assert rt_store.containers.list() == []


@pytest.mark.parametrize("rt", RUNTIMES)
def test_init_reaps_zombies(rt_store: Store, rt: str) -> None:
    # an orphan goes to PID 1; `exec sleep` as PID 1 never reaps it, tini does
    script = '(sleep 0.6; ps -o stat,comm | grep -c "^Z") & sh -c "sleep 0.1 &"; exec sleep 1'
    code, out, _ = sh(rt_store, script, rt=rt)
    assert out == "1\n"  # without an init: one zombie
    code, out, _ = sh(rt_store, "cat /proc/1/comm; " + script.replace("exec sleep 1", "sleep 1"), "--init", rt=rt)
    assert out == "docker-init\n0\n"


def test_stop_signal_stop_timeout_labels_env_file(rt_store: Store, tmp_path: Path) -> None:
    envf = tmp_path / "env"
    envf.write_text("# comment\nA=from-file\nB=b\n\n")
    args = ["--stop-signal", "USR1", "--stop-timeout", "3", "-l", "team=x", "--env-file", str(envf)]
    p = parser().parse_args(args)
    cfg = runopts.apply(p, cc.user_config("bb:1", cmd=["sh"], env=["A=from-e"]))
    assert cfg["StopSignal"] == "USR1" and cfg["StopTimeout"] == 3 and cfg["Labels"] == {"team": "x"}
    assert cfg["Env"] == ["B=b", "A=from-e"]  # -e wins over the file
    img = rt_store.resolve_image("bb:1")
    cfg["Cmd"] = ["sh", "-c", "trap 'echo got USR1; exit 0' USR1; echo $A $B; while :; do sleep 0.05; done"]
    full = cc.merge(cfg, rt_store.images.config(img.id).config)
    c = runtime.run(rt_store, "bb:1", name="sig", config=full, attach=False).container
    pid = runtime.read_state(runtime.paths_of(rt_store, c)).MonitorPid
    import time

    time.sleep(0.3)
    runtime.stop(rt_store, "sig")
    assert wait_pids_gone([pid]) == []
    assert [e.text for e in runtime.log_entries(rt_store, "sig")] == ["from-e b\n", "got USR1\n"]
    with pytest.raises(InvalidInput, match="--env-file"):
        runopts.read_env_file(str(tmp_path / "none"))


def test_device(rt_store: Store) -> None:
    code, out, err = sh(rt_store, "stat -c '%t %T %F' /dev/mynull; echo x > /dev/mynull && echo wrote",
                        "--device", "/dev/null:/dev/mynull:rw")
    assert (code, out) == (0, "1 3 character special file\nwrote\n"), err
    with pytest.raises(InvalidInput, match="no such file"):
        sh(rt_store, "true", "--device", "/dev/nonexistent-lamina")


@pytest.mark.parametrize("rt", RUNTIMES)
def test_health_check(rt_store: Store, rt: str) -> None:
    import time

    flags = ["--health-cmd", "test -f /tmp/ok && echo fine", "--health-interval", "100ms",
             "--health-retries", "2", "--health-timeout", "5s"]
    args = parser().parse_args(flags)
    img = rt_store.resolve_image("bb:1")
    cfg = cc.merge(runopts.apply(args, cc.user_config("bb:1", cmd=["sleep", "30"])), rt_store.images.config(img.id).config)
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "test -f /tmp/ok && echo fine"], "Interval": 100_000_000,
                                  "Timeout": 5_000_000_000, "Retries": 2}
    c = runtime.run(rt_store, "bb:1", name="h", config=cfg, runtime=rt, attach=False).container

    def health() -> dict[str, Any]:
        got = runtime.reconcile(rt_store, rt_store.containers.get(c.id))
        assert got is not None
        return runtime.inspect_state(got[1]).get("Health") or {}

    deadline = time.monotonic() + 20
    while health().get("Status") != "unhealthy":
        assert time.monotonic() < deadline, health()
        time.sleep(0.05)
    assert health()["FailingStreak"] >= 2 and health()["Log"][-1]["ExitCode"] == 1
    assert runtime.exec_(rt_store, "h", ["touch", "/tmp/ok"]) == 0
    while health().get("Status") != "healthy":
        assert time.monotonic() < deadline, health()
        time.sleep(0.05)
    last = health()["Log"][-1]
    assert last["ExitCode"] == 0 and last["Output"] == "fine\n" and health()["FailingStreak"] == 0
    from lamina.cli.ps import status_of

    got = runtime.reconcile(rt_store, rt_store.containers.get(c.id))
    assert got is not None and status_of(got[0], got[1]).endswith("(healthy)")
    runtime.remove(rt_store, "h", force=True)
    with pytest.raises(InvalidInput, match="invalid duration"):
        runopts.apply(parser().parse_args(["--health-interval", "soon"]), cc.user_config("bb:1"))
