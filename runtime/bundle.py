"""The OCI runtime bundle of a container: ``config.json`` from the container's record (Docker's
``Config`` and ``HostConfig``, already merged with the image's defaults by ``create``).

What goes in is what Docker puts in (moby ``oci/defaults.go`` and ``daemon/oci_linux.go``):

- process: ``Entrypoint + Cmd``; ``Env`` with ``PATH``, ``HOSTNAME`` and ``HOME`` added when
  missing; ``WorkingDir`` (default ``/``); the user resolved through the image's passwd and group
  files (``runtime.users``); Docker's 14 default capabilities; ``RLIMIT_NOFILE`` clamped to this
  process's hard limit (without CAP_SYS_RESOURCE a runtime cannot raise it, and podman's default
  fails here for that reason);
- mounts: ``/proc``, ``/dev`` (tmpfs), ``/dev/pts``, ``/dev/shm``, ``/dev/mqueue``, ``/sys``
  read-only, ``/sys/fs/cgroup`` read-only, and ``/etc/hostname``, ``/etc/hosts``,
  ``/etc/resolv.conf`` bound from the container's directory;
- Docker's masked and read-only paths; device rules (deny all, allow the standard devices);
- namespaces pid, ipc, uts, mount, and network unless ``--network host``;
- resources: ``--memory`` (with swap capped at the same value where the kernel accounts swap,
  so a container over its limit is OOM-killed rather than swapping), ``--cpus`` (CFS quota over
  a 100 ms period), ``--pids-limit``; ``cgroupsPath`` ``/lamina/<id>``.

Not there (yet): a seccomp profile, AppArmor, user namespaces, ``--privileged``, devices and
volumes.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Mapping, Sequence
from typing import Any

from graph import InvalidInput
from runtime.users import ExecUser

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_PARENT = "/lamina"
MIN_MEMORY = 6 << 20  # Docker refuses less ("Minimum memory limit allowed is 6MB")
CPU_PERIOD = 100_000  # microseconds, as Docker uses for --cpus
NOFILE_WANTED = 1 << 20

DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def _dev(allow: bool, kind: str | None = None, major: int | None = None, minor: int | None = None,
         access: str = "rwm") -> dict[str, Any]:
    d: dict[str, Any] = {"allow": allow, "access": access}
    if kind is not None:
        d["type"] = kind
    if major is not None:
        d["major"] = major
    if minor is not None:
        d["minor"] = minor
    return d


DEVICE_RULES = [
    _dev(False),
    _dev(True, "c", None, None, "m"), _dev(True, "b", None, None, "m"),  # mknod of any node
    _dev(True, "c", 1, 3), _dev(True, "c", 1, 5), _dev(True, "c", 1, 7),  # null zero full
    _dev(True, "c", 1, 8), _dev(True, "c", 1, 9),  # random urandom
    _dev(True, "c", 5, 0), _dev(True, "c", 5, 1), _dev(True, "c", 5, 2),  # tty console ptmx
    _dev(True, "c", 136), _dev(True, "c", 10, 200),  # pts/* net/tun
]

DEFAULT_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["ro", "nosuid", "noexec", "nodev"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]},
]

ETC_FILES = ("hostname", "hosts", "resolv.conf")


def argv_of(config: Mapping[str, Any]) -> list[str]:
    """``Entrypoint + Cmd``; InvalidInput when both are empty."""
    argv = [str(a) for a in (config.get("Entrypoint") or [])] + [str(a) for a in (config.get("Cmd") or [])]
    if not argv:
        raise InvalidInput("no command specified: the image has no Entrypoint or Cmd; give one after the image")
    return argv


def hostname_of(config: Mapping[str, Any], container_id: str) -> str:
    """``--hostname``; else the host's name with ``--network host``; else the short ID."""
    if config.get("Hostname"):
        return str(config["Hostname"])
    if network_of(config) == "host":
        return os.uname().nodename
    return container_id[:12]


def network_of(config: Mapping[str, Any]) -> str:
    """``none``, ``host``, or a bridge network's name (``runtime.network`` sets those up)."""
    from runtime.network.setup import mode_of

    return mode_of(config)


def environment(config: Mapping[str, Any], hostname: str, user: ExecUser,
                extra: Sequence[str] = ()) -> list[str]:
    """The process environment: the record's ``Env`` then ``extra`` (later entries win), with
    ``PATH``, ``HOSTNAME`` and ``HOME`` supplied when missing, as Docker and runc do."""
    env: dict[str, str] = {}
    for item in list(config.get("Env") or []) + list(extra):
        k, eq, v = str(item).partition("=")
        if k:
            env[k] = v if eq else ""
    out = {"PATH": DEFAULT_PATH} if "PATH" not in env else {}
    out["HOSTNAME"] = hostname
    out.update(env)
    out.setdefault("HOME", user.home or "/")
    return [f"{k}={v}" for k, v in out.items()]


def rlimits() -> list[dict[str, Any]]:
    """``RLIMIT_NOFILE``, at most our own hard limit (what a runtime without CAP_SYS_RESOURCE
    can set)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(NOFILE_WANTED, hard)
    return [{"type": "RLIMIT_NOFILE", "hard": n, "soft": n}]


def process(config: Mapping[str, Any], *, argv: Sequence[str], user: ExecUser, hostname: str,
            cwd: str | None = None, extra_env: Sequence[str] = ()) -> dict[str, Any]:
    """The spec's ``process`` (also what ``exec`` hands the runtime)."""
    caps = list(DEFAULT_CAPABILITIES)
    p: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": user.uid, "gid": user.gid, "umask": 0o022},
        "args": list(argv),
        "env": environment(config, hostname, user, extra_env),
        "cwd": cwd or str(config.get("WorkingDir") or "/"),
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": rlimits(),
        "noNewPrivileges": False,
    }
    if user.additional_gids:
        p["user"]["additionalGids"] = list(user.additional_gids)
    return p


def resources(config: Mapping[str, Any], *, swap_limit: bool, cpu_count: int | None = None) -> dict[str, Any]:
    """``linux.resources`` from ``HostConfig`` (validated here: create may have been done by an
    older lamina or another client)."""
    hc = config.get("HostConfig") or {}
    res: dict[str, Any] = {"devices": [dict(d) for d in DEVICE_RULES]}
    memory = int(hc.get("Memory") or 0)
    if memory < 0:
        raise InvalidInput(f"invalid memory limit {memory}: must be positive")
    if memory:
        if memory < MIN_MEMORY:
            raise InvalidInput(f"invalid memory limit {memory} bytes: the minimum is 6 MiB")
        res["memory"] = {"limit": memory}
        if swap_limit:
            res["memory"]["swap"] = memory  # memory+swap: no swap on top of the limit
    nano = int(hc.get("NanoCpus") or 0)
    if nano < 0:
        raise InvalidInput(f"invalid --cpus {nano / 1e9:g}: must be positive")
    if nano:
        cpus = cpu_count or os.cpu_count() or 1
        if nano < 10_000_000 or nano > cpus * 1_000_000_000:
            raise InvalidInput(f"invalid --cpus {nano / 1e9:g}: the range is 0.01 to {cpus}.00 "
                               f"({cpus} CPUs here)")
        res["cpu"] = {"period": CPU_PERIOD, "quota": nano * CPU_PERIOD // 1_000_000_000}
    pids = hc.get("PidsLimit")
    if pids is not None and int(pids) > 0:
        res["pids"] = {"limit": int(pids)}
    elif pids is not None and int(pids) < -1:
        raise InvalidInput(f"invalid --pids-limit {pids}: -1 or 0 (unlimited) or a positive number")
    return res


def spec(config: Mapping[str, Any], *, container_id: str, rootfs: str, user: ExecUser, etc_dir: str,
         swap_limit: bool, cpu_count: int | None = None, netns: str | None = None) -> dict[str, Any]:
    """The whole ``config.json`` for a container whose merged tree is at ``rootfs`` and whose
    ``hostname``, ``hosts`` and ``resolv.conf`` are in ``etc_dir``; ``netns``: the network
    namespace to join (a bridge network's, made by ``runtime.network``), else a new empty one.

    Raises: InvalidInput (no command, bad limits, unknown network mode).
    """
    hostname = hostname_of(config, container_id)
    network = network_of(config)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if network != "host":
        namespaces.append({"type": "network", "path": netns} if netns else {"type": "network"})
    mounts = [dict(m) for m in DEFAULT_MOUNTS]
    for name in ETC_FILES:
        mounts.append({"destination": f"/etc/{name}", "type": "bind",
                       "source": os.path.join(etc_dir, name), "options": ["rbind", "rprivate"]})
    return {
        "ociVersion": OCI_VERSION,
        "process": process(config, argv=argv_of(config), user=user, hostname=hostname),
        "root": {"path": rootfs, "readonly": False},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "resources": resources(config, swap_limit=swap_limit, cpu_count=cpu_count),
            "cgroupsPath": f"{CGROUP_PARENT}/{container_id}",
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def write_etc_files(etc_dir: str, hostname: str, network: str) -> None:
    """``hostname``, ``hosts`` and ``resolv.conf`` for the container (bound over the image's):
    with ``--network host`` copies of the host's hosts and resolv.conf, else a loopback-only hosts
    file and the host's resolv.conf (no network, but tools that read it find a sane file)."""
    files = {"hostname": f"{hostname}\n"}
    if network == "host":
        files["hosts"] = _host_file("/etc/hosts") or "127.0.0.1\tlocalhost\n"
    else:
        files["hosts"] = (
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
            f"ff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
        )
    files["resolv.conf"] = _host_file("/etc/resolv.conf") or ""
    for name, text in files.items():
        path = os.path.join(etc_dir, name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)


def _host_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 20)
    except OSError:
        return None


def write(path: str, doc: Mapping[str, Any]) -> None:
    """Write ``config.json`` (or a process file) whole or not at all."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(tmp, path)
