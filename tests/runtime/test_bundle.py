"""The OCI bundle lamina writes: Docker's defaults, the record's settings, limits and their
validation, rlimits clamped to the host."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest

from graph.errors import InvalidInput
from runtime import bundle
from runtime.users import ExecUser

CID = "c" * 64


def record(**hc: Any) -> dict[str, Any]:
    return {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh", "-c", "true"], "Entrypoint": None, "WorkingDir": "",
            "User": "", "Hostname": "", "HostConfig": {"NetworkMode": "none", **hc}}


def make(cfg: dict[str, Any], swap: bool = True, user: ExecUser | None = None) -> dict[str, Any]:
    return bundle.spec(cfg, container_id=CID, rootfs="/r", user=user or ExecUser(0, 0, (), "/root", "root"),
                       etc_dir="/c", swap_limit=swap, cpu_count=2)


def test_docker_defaults() -> None:
    s = make(record())
    assert s["ociVersion"] == bundle.OCI_VERSION and s["root"] == {"path": "/r", "readonly": False}
    p = s["process"]
    assert p["args"] == ["sh", "-c", "true"] and p["cwd"] == "/" and p["terminal"] is False
    assert p["env"] == ["HOSTNAME=" + CID[:12], "PATH=/bin", "A=1", "HOME=/root"]
    assert len(p["capabilities"]["bounding"]) == 14 and "CAP_SYS_ADMIN" not in p["capabilities"]["bounding"]
    assert p["capabilities"]["effective"] == p["capabilities"]["permitted"] == p["capabilities"]["bounding"]
    dests = [m["destination"] for m in s["mounts"]]
    assert dests == ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm",
                     "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
    assert "ro" in s["mounts"][3]["options"] and "ro" in s["mounts"][4]["options"]
    assert s["mounts"][7]["source"] == "/c/hostname"
    lin = s["linux"]
    assert [n["type"] for n in lin["namespaces"]] == ["pid", "ipc", "uts", "mount", "network"]
    assert "/proc/kcore" in lin["maskedPaths"] and "/proc/sys" in lin["readonlyPaths"]
    assert lin["cgroupsPath"] == f"/lamina/{CID}"
    assert lin["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert "memory" not in lin["resources"] and "cpu" not in lin["resources"] and "pids" not in lin["resources"]
    assert s["hostname"] == CID[:12]


def test_entrypoint_cmd_env_workdir_user() -> None:
    cfg = record()
    cfg.update({"Entrypoint": ["/entry"], "Cmd": ["a b"], "WorkingDir": "/srv", "Env": ["HOME=/x", "PATH=/p"],
                "Hostname": "box"})
    s = make(cfg, user=ExecUser(1000, 1000, (50, 10), "/home/alice", "alice"))
    p = s["process"]
    assert p["args"] == ["/entry", "a b"] and p["cwd"] == "/srv"
    assert p["env"] == ["HOSTNAME=box", "HOME=/x", "PATH=/p"]
    assert p["user"] == {"uid": 1000, "gid": 1000, "umask": 0o22, "additionalGids": [50, 10]}
    assert s["hostname"] == "box"


def test_no_command_is_refused() -> None:
    cfg = record()
    cfg["Cmd"] = None
    with pytest.raises(InvalidInput, match="no command specified"):
        make(cfg)


def test_host_network_shares_the_namespace_and_the_name() -> None:
    import os

    s = make(record(NetworkMode="host"))
    assert "network" not in [n["type"] for n in s["linux"]["namespaces"]]
    assert s["hostname"] == os.uname().nodename
    with pytest.raises(InvalidInput, match="container:"):
        make(record(NetworkMode="container:other"))


def test_bridge_network_joins_the_namespace_lamina_made() -> None:
    s = bundle.spec(record(NetworkMode="app"), container_id=CID, rootfs="/r", etc_dir="/c", swap_limit=True,
                    user=ExecUser(0, 0, (), "/root", "root"), netns="/root/runtime/network/x.netns")
    assert {"type": "network", "path": "/root/runtime/network/x.netns"} in s["linux"]["namespaces"]
    assert s["hostname"] == CID[:12]


def test_limits() -> None:
    res = make(record(Memory=64 << 20, NanoCpus=1_500_000_000, PidsLimit=100))["linux"]["resources"]
    assert res["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert res["cpu"] == {"period": 100_000, "quota": 150_000}
    assert res["pids"] == {"limit": 100}
    assert make(record(Memory=64 << 20), swap=False)["linux"]["resources"]["memory"] == {"limit": 64 << 20}
    for unlimited in (0, -1, None):
        assert "pids" not in make(record(PidsLimit=unlimited))["linux"]["resources"]


@pytest.mark.parametrize("hc,message", [
    ({"Memory": 1 << 20}, "minimum is 6 MiB"),
    ({"Memory": -5}, "must be positive"),
    ({"NanoCpus": 3_000_000_000}, r"range is 0.01 to 2.00 \(2 CPUs here\)"),
    ({"NanoCpus": 5_000_000}, "range is 0.01"),
    ({"PidsLimit": -2}, "pids-limit"),
])
def test_invalid_limits(hc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        make(record(**hc))


def test_rlimits_never_exceed_our_hard_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    (r,) = bundle.rlimits()
    assert r["type"] == "RLIMIT_NOFILE" and r["soft"] == r["hard"]
    assert r["hard"] <= bundle.NOFILE_WANTED
    if hard != resource.RLIM_INFINITY:
        assert r["hard"] <= hard


def test_etc_files_and_atomic_write(tmp_path: Path) -> None:
    bundle.write_etc_files(str(tmp_path), "box", "none")
    assert (tmp_path / "hostname").read_text() == "box\n"
    assert "127.0.0.1\tlocalhost" in (tmp_path / "hosts").read_text()
    assert "127.0.1.1\tbox" in (tmp_path / "hosts").read_text()
    assert (tmp_path / "resolv.conf").exists()
    bundle.write_etc_files(str(tmp_path), "box", "host")
    try:
        host_hosts = Path("/etc/hosts").read_text()
    except OSError:
        host_hosts = None
    if host_hosts is not None:
        assert (tmp_path / "hosts").read_text() == host_hosts
    bundle.write(str(tmp_path / "config.json"), {"a": 1})
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 1}
    assert not list(tmp_path.glob("*.tmp"))
