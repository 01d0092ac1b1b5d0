"""Cgroup discovery and reading (real files of this machine), the OOM watch on a real memory
cgroup, and the runtime driver's calls that need no container."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from graph.errors import InvalidInput, Unsupported
from runtime import cgroups, oci

MOUNTINFO = """\
24 30 0:21 / /sys rw,nosuid - sysfs sysfs rw
25 24 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
"""


def test_mounts_are_parsed(tmp_path: Path) -> None:
    mi = tmp_path / "mountinfo"
    mi.write_text(MOUNTINFO)
    m = cgroups.mounts(str(mi))
    assert m.v1 == {"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                    "memory": "/sys/fs/cgroup/memory", "name=systemd": "/sys/fs/cgroup/systemd"}
    assert m.v2 == "/sys/fs/cgroup/unified" and m.layout == "hybrid"
    mi.write_text("30 25 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert cgroups.mounts(str(mi)).layout == "v2"


def test_our_own_cgroup_reads() -> None:
    m = cgroups.mounts()
    if m.layout == "none":
        pytest.skip("no cgroups mounted")
    cg = cgroups.of_process(os.getpid(), m)
    assert cg.exists()
    s = cgroups.stats(cg)
    assert s.version in ("v1", "v2")
    if s.cpu_ns is not None:
        assert s.cpu_ns > 0


@pytest.fixture
def memcg(tmp_path: Path) -> object:
    m = cgroups.mounts()
    if "memory" not in m.v1 or os.geteuid() != 0:
        pytest.skip("needs root and the v1 memory controller")
    return m


def test_oom_watch_sees_a_kill_and_the_removal(memcg: cgroups.Mounts) -> None:
    path = f"/lamina-test/oom-{os.getpid()}"
    w = cgroups.OOMWatch(memcg, path)
    assert w.created and w.fd >= 0 and w.dir is not None
    try:
        with open(os.path.join(w.dir, "memory.limit_in_bytes"), "w") as f:
            f.write(str(16 << 20))
        if os.path.exists(os.path.join(w.dir, "memory.memsw.limit_in_bytes")):
            with open(os.path.join(w.dir, "memory.memsw.limit_in_bytes"), "w") as f:
                f.write(str(16 << 20))
        pid = os.fork()
        if pid == 0:  # join the cgroup, then eat memory until the kernel kills us
            try:
                with open(os.path.join(w.dir, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
                hog = []
                while True:
                    hog.append(bytearray(1 << 20))
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        os.rmdir(w.dir)
    assert w.oom_killed()
    w.close()
    os.rmdir(os.path.dirname(w.dir))


def test_oom_watch_quiet_cgroup_is_no_oom(memcg: cgroups.Mounts) -> None:
    w = cgroups.OOMWatch(memcg, f"/lamina-test/quiet-{os.getpid()}")
    assert w.dir is not None
    os.rmdir(w.dir)
    time.sleep(0.05)
    assert not w.oom_killed()
    w.close()
    os.rmdir(os.path.dirname(w.dir))


def test_discard_removes_only_what_it_made(memcg: cgroups.Mounts) -> None:
    w = cgroups.OOMWatch(memcg, f"/lamina-test/d-{os.getpid()}")
    assert w.dir is not None and os.path.isdir(w.dir)
    w.discard()
    assert not os.path.exists(w.dir)
    os.rmdir(os.path.dirname(w.dir))


# ---- the runtime driver -------------------------------------------------------------------------
def test_signal_names() -> None:
    assert oci.signal_number("KILL") == oci.signal_number("SIGKILL") == oci.signal_number("9") == 9
    assert oci.signal_number("term") == signal.SIGTERM and oci.signal_number(10) == 10
    for bad in ("NOPE", "0", "999", "-1", ""):
        with pytest.raises(InvalidInput):
            oci.signal_number(bad)


def test_open_runtime_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown OCI runtime"):
        oci.open_runtime("docker", str(tmp_path))
    with pytest.raises(Unsupported, match="crun not found in PATH"):
        oci.open_runtime("crun", str(tmp_path), search_path=str(tmp_path))


@pytest.mark.parametrize("name", ["crun", "runc"])
def test_runtime_calls_on_unknown_containers(tmp_path: Path, name: str) -> None:
    if shutil.which(name) is None or os.geteuid() != 0:
        pytest.skip(f"needs root and {name}")
    rt = oci.open_runtime(name, str(tmp_path / "state"))
    assert rt.known() == [] and rt.state("nope") is None
    rt.delete("nope")  # a no-op
    if name == "crun" and cgroups.mounts().layout == "hybrid":
        assert rt.hide_cgroup2 is not None  # crun runs in a private namespace here
    assert rt.call("--version", what="version").strip()
    assert oci.OCIRuntime.from_json(rt.to_json()) == rt
