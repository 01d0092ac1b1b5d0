"""A tiny image with real programs for runtime tests: the host's static busybox (Debian's
``busybox-static``) with its applets as symlinks, and passwd/group files with a few users. Built
in code as an OCI image layout and loaded with ``graph.archive.load_archive`` (as ``lamina load``
does), so the containers run on layers applied the normal way.

Also the teardown every runtime test needs: ``cleanup_store`` removes every container (killing
running ones), waits for their monitors (by PID; kills stragglers by PID), and checks that no
mount, runtime state, cgroup or monitor is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

from tests.cli.conftest import build_image, write_oci_layout
from tests.tarbuild import E

BUSYBOX = shutil.which("busybox")
APPLETS = [
    "sh", "true", "false", "echo", "cat", "sleep", "ls", "id", "env", "pwd", "hostname", "dd", "seq",
    "ip", "head", "wc", "yes", "kill", "ps", "grep", "touch", "mkdir", "rm", "tail", "test", "printf",
    "nproc", "cut", "tr", "od", "stat", "readlink", "trap", "date", "ifconfig", "uname", "sync",
]
PASSWD = (b"root:x:0:0:root:/root:/bin/sh\n"
          b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
          b"alice:x:1000:1000:Alice:/home/alice:/bin/sh\n")
GROUP = b"root:x:0:\nstaff:x:50:alice\nalice:x:1000:\nnogroup:x:65534:\n"


def skip_reason() -> str | None:
    """Why runtime tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "containers need root"
    if BUSYBOX is None:
        return "busybox not installed (apt-get install busybox-static)"
    with open(BUSYBOX, "rb") as f:
        head = f.read(4096)
    if b"ld-linux" in head or b"/lib64/ld" in head:
        return "busybox is dynamically linked; the test image needs busybox-static"
    if shutil.which("crun") is None and shutil.which("runc") is None:
        return "neither crun nor runc is installed"
    return None


def busybox_layers(extra: list[E] | None = None) -> list[list[E]]:
    assert BUSYBOX is not None
    data = Path(BUSYBOX).read_bytes()
    base = [E("bin", kind="dir"), E("bin/busybox", data, mode=0o755)]
    base += [E(f"bin/{a}", kind="symlink", target="busybox") for a in APPLETS]
    base += [
        E("etc", kind="dir"), E("etc/passwd", PASSWD), E("etc/group", GROUP),
        E("tmp", kind="dir", mode=0o1777), E("root", kind="dir", mode=0o700),
        E("home", kind="dir"), E("home/alice", kind="dir", uid=1000, gid=1000),
        E("proc", kind="dir"), E("sys", kind="dir"), E("dev", kind="dir"),
    ]
    layers = [base]
    if extra:
        layers.append(extra)
    return layers


def write_busybox_layout(path: Path, tag: str = "bb:1", extra: list[E] | None = None,
                         cmd: tuple[str, ...] = ("/bin/sh",)) -> Path:
    """An OCI layout at ``path`` holding the busybox image as ``tag``."""
    img = build_image(busybox_layers(extra), cmd=cmd, env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
    return write_oci_layout(path, [(img, tag)])


def monitor_pids(root: Path) -> list[int]:
    """Monitor PIDs recorded in the root's container directories (alive or not)."""
    out = []
    for sj in (root / "containers").glob("*/state.json"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(json.loads(sj.read_text()).get("MonitorPid") or 0)
            if pid:
                out.append(pid)
    return out


def _alive(pid: int) -> bool:
    from runtime.monitor import start_time

    return start_time(pid) is not None


def wait_pids_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait for processes to exit; the ones still there afterwards."""
    end = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < end:
        time.sleep(0.02)
        left = [p for p in left if _alive(p)]
    return left


def leftovers(root: Path, ids: list[str]) -> list[str]:
    """What a removed container could leak: mounts under the root, runtime state, cgroups."""
    from drivers.sys import mount as mountapi
    from runtime import cgroups

    found = [f"mount {m.mount_point}" for m in mountapi.mounts_under(root) if m.mount_point != str(root)]
    for rdir in (root / "runtime").glob("*"):
        found += [f"runtime state {p}" for p in rdir.iterdir() if p.is_dir()]
    m = cgroups.mounts()
    for cid in ids:
        for point in [*m.v1.values(), *([m.v2] if m.v2 else [])]:
            d = os.path.join(point, "lamina", cid)
            if os.path.isdir(d):
                found.append(f"cgroup {d}")
    found += [f"container dir {p}" for p in (root / "containers").iterdir() if p.name in ids]
    return found


def cleanup_store(store: object, root: Path) -> list[str]:
    """Remove every container of the store (killing running ones), wait for their monitors,
    kill (by PID) any monitor that did not go, release the driver's mounts. Returns what was
    left over before the forced steps (a test asserts it empty)."""
    import runtime

    problems: list[str] = []
    pids = monitor_pids(root)
    ids = [c.id for c in store.containers.list()]  # type: ignore[attr-defined]
    for cid in ids:
        try:
            runtime.remove(store, cid, force=True)  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001 - keep cleaning, report
            problems.append(f"rm -f {cid[:12]}: {e}")
    stuck = wait_pids_gone(pids)
    for pid in stuck:
        problems.append(f"monitor {pid} still alive")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_pids_gone(stuck, 5.0)
    with contextlib.suppress(Exception):
        runtime.sweep_runtime_state(store)  # type: ignore[arg-type]
    problems += leftovers(root, ids)
    store.driver.cleanup()  # type: ignore[attr-defined]
    return problems
