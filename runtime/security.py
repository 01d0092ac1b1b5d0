"""What ``HostConfig`` asks of the process and the sandbox: seccomp (a default profile of
Docker's scope, ``runtime/seccomp_default.json``, written by ``scripts/make_seccomp_default.py``;
``seccomp=unconfined``; a profile of one's own), ``no-new-privileges``, capabilities
(``CapAdd``/``CapDrop`` with ``ALL``), ``Privileged``, ``ReadonlyRootfs``, ``Ulimits``, ``Init``,
``ShmSize``, ``Devices``, ``GroupAdd``. ``check`` validates them (at create, before anything
exists); ``apply`` edits the OCI document ``runtime.bundle`` made.

A profile in Docker's format names syscalls with conditions on capabilities and architectures;
it is resolved here into the OCI ``linux.seccomp`` for the container's own capability set, as
Docker's daemon does (moby ``profiles/seccomp``): ``--cap-add SYS_ADMIN`` brings ``unshare``
and ``mount`` back, ``--privileged`` drops seccomp altogether.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
from collections.abc import Mapping, Sequence
from typing import Any

from graph import InvalidInput

SECCOMP_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_default.json")
INIT_PATH = "/sbin/docker-init"  # where Docker puts its init in the container
INIT_CANDIDATES = ("tini-static", "docker-init", "tini")
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64"}
_SCMP_ARCH = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM",
              "386": "SCMP_ARCH_X86", "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X",
              "riscv64": "SCMP_ARCH_RISCV64"}
ALL_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]
RLIMITS = {"core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA", "fsize": "RLIMIT_FSIZE",
           "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK", "msgqueue": "RLIMIT_MSGQUEUE",
           "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS",
           "rtprio": "RLIMIT_RTPRIO", "rttime": "RLIMIT_RTTIME", "sigpending": "RLIMIT_SIGPENDING",
           "stack": "RLIMIT_STACK", "as": "RLIMIT_AS"}


# ---- validation ------------------------------------------------------------------------------------
def _cap(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"invalid capability {name!r}")
    n = name.upper()
    if n == "ALL":
        return n
    n = n if n.startswith("CAP_") else "CAP_" + n
    if n not in ALL_CAPS:
        raise InvalidInput(f"unknown capability {name!r}")
    return n


def host_capabilities() -> list[str]:
    """The capabilities this process can hand on (its bounding and effective sets): ``ALL`` and
    ``--privileged`` mean these (this machine has no CAP_SYS_RESOURCE, for one; asking a
    runtime for more fails in ``capset``)."""
    bnd = eff = (1 << len(ALL_CAPS)) - 1
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    bnd = int(line.split()[1], 16)
                elif line.startswith("CapEff:"):
                    eff = int(line.split()[1], 16)
    except OSError:
        pass
    return [c for i, c in enumerate(ALL_CAPS) if (bnd & eff) >> i & 1]


def capabilities(hc: Mapping[str, Any], default: Sequence[str]) -> list[str]:
    """The container's capability set: Docker's rule (drops first, ``ALL`` expands; adds win
    over drops only when added by name). Raises InvalidInput for a capability this host cannot
    give."""
    host = host_capabilities()
    if hc.get("Privileged"):
        return host
    add = [_cap(c) for c in hc.get("CapAdd") or []]
    drop = [_cap(c) for c in hc.get("CapDrop") or []]
    caps = [] if "ALL" in drop else [c for c in default if c not in drop]
    if "ALL" in add:
        return host
    for c in add:
        if c not in host:
            raise InvalidInput(f"--cap-add {c}: lamina itself does not have it on this host")
        if c not in caps:
            caps.append(c)
    return caps


def security_opts(hc: Mapping[str, Any]) -> tuple[Any, bool]:
    """(seccomp: ``"default"``, ``"unconfined"`` or a profile dict; no-new-privileges)."""
    seccomp: Any = "default"
    nnp = False
    for opt in hc.get("SecurityOpt") or []:
        if not isinstance(opt, str):
            raise InvalidInput(f"invalid --security-opt {opt!r}")
        key, sep, value = opt.partition("=")
        if not sep:
            key, sep, value = opt.partition(":")
        if key == "no-new-privileges":
            if value not in ("", "true", "false"):
                raise InvalidInput(f"invalid --security-opt {opt!r}: no-new-privileges takes true or false")
            nnp = value != "false"
        elif key == "seccomp":
            if value == "unconfined":
                seccomp = "unconfined"
            elif value in ("", "builtin", "default"):
                seccomp = "default"
            else:
                try:
                    seccomp = json.loads(value)
                except ValueError:
                    raise InvalidInput("invalid --security-opt seccomp: not a JSON profile "
                                       "(the CLI reads the file and sends its content)") from None
                if not isinstance(seccomp, dict) or "defaultAction" not in seccomp:
                    raise InvalidInput("invalid seccomp profile: want an object with defaultAction")
        elif key in ("apparmor", "label"):
            pass  # no AppArmor or SELinux here: accepted and ignored, as Docker on such a host
        else:
            raise InvalidInput(f"invalid --security-opt {opt!r}: lamina knows seccomp=, no-new-privileges, "
                               "apparmor=, label=")
    return seccomp, nnp


def host_hard_limit(name: str) -> int:
    res = getattr(resource, RLIMITS[name])
    return resource.getrlimit(res)[1]


def ulimits(hc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``HostConfig.Ulimits`` as OCI rlimits; InvalidInput for an unknown name, soft above hard,
    or a hard limit above this host's (lamina has no CAP_SYS_RESOURCE to raise one)."""
    out = []
    for u in hc.get("Ulimits") or []:
        if not isinstance(u, Mapping):
            raise InvalidInput(f"invalid ulimit {u!r}")
        name = u.get("Name")
        if name not in RLIMITS:
            raise InvalidInput(f"invalid ulimit name {name!r}")
        soft, hard = u.get("Soft"), u.get("Hard")
        if not isinstance(soft, int) or not isinstance(hard, int) or soft < -1 or hard < -1:
            raise InvalidInput(f"invalid ulimit {name}: soft and hard must be numbers")
        soft = resource.RLIM_INFINITY if soft == -1 else soft
        hard = resource.RLIM_INFINITY if hard == -1 else hard
        if soft > hard:
            raise InvalidInput(f"invalid ulimit {name}: soft limit {soft} is above the hard limit {hard}")
        host = host_hard_limit(name)
        if host != resource.RLIM_INFINITY and hard > host:
            raise InvalidInput(f"ulimit {name}: hard limit {hard} is above this host's {host} "
                               "(no CAP_SYS_RESOURCE to raise it)")
        out.append({"type": RLIMITS[name], "soft": soft, "hard": hard})
    return out


def init_binary() -> str:
    """The host's static init (Debian's tini-static), bound into the container for ``--init``."""
    for name in INIT_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise InvalidInput("--init: no init binary on this host (apt-get install tini)")


def devices(hc: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``HostConfig.Devices`` as (host path, container path, permissions)."""
    out = []
    for d in hc.get("Devices") or []:
        if not isinstance(d, Mapping) or not d.get("PathOnHost"):
            raise InvalidInput(f"invalid device {d!r}")
        host = str(d["PathOnHost"])
        ctr = str(d.get("PathInContainer") or host)
        perms = str(d.get("CgroupPermissions") or "rwm")
        if not ctr.startswith("/") or not host.startswith("/"):
            raise InvalidInput(f"invalid device {host}:{ctr}: paths must be absolute")
        if not perms or set(perms) - set("rwm"):
            raise InvalidInput(f"invalid device permissions {perms!r}: a combination of r, w, m")
        try:
            st = os.stat(host)
        except FileNotFoundError:
            raise InvalidInput(f"error gathering device information while adding custom device {host!r}: "
                               "no such file or directory") from None
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise InvalidInput(f"{host} is not a device")
        out.append((host, ctr, perms))
    return out


def check(config: Mapping[str, Any]) -> None:
    """Validate everything this module reads (InvalidInput, one line)."""
    from runtime.bundle import DEFAULT_CAPABILITIES

    hc = config.get("HostConfig") or {}
    capabilities(hc, DEFAULT_CAPABILITIES)
    security_opts(hc)
    ulimits(hc)
    devices(hc)
    if hc.get("Init"):
        init_binary()
    shm = hc.get("ShmSize")
    if shm is not None and (not isinstance(shm, int) or isinstance(shm, bool) or shm < 0):
        raise InvalidInput(f"invalid --shm-size {shm!r}")
    for g in hc.get("GroupAdd") or []:
        if not isinstance(g, str) or not g:
            raise InvalidInput(f"invalid --group-add {g!r}")


# ---- seccomp --------------------------------------------------------------------------------------
_default_profile: dict[str, Any] | None = None


def default_profile() -> dict[str, Any]:
    global _default_profile
    if _default_profile is None:
        with open(SECCOMP_DEFAULT, encoding="utf-8") as f:
            _default_profile = json.load(f)
    return _default_profile


def _kernel() -> tuple[int, int]:
    parts = os.uname().release.split(".")  # platform.release(), without its import
    try:
        return int(parts[0]), int(parts[1].split("-")[0])
    except (IndexError, ValueError):
        return (0, 0)


def oci_seccomp(profile: Mapping[str, Any], caps: Sequence[str], machine: str | None = None) -> dict[str, Any]:
    """A Docker-format profile resolved for a capability set and this machine's architecture
    into OCI ``linux.seccomp`` (rules of Docker's format that do not apply are left out)."""
    host = machine or os.uname().machine
    goarch = _GOARCH.get(host, host)
    have = set(caps)
    arches: list[str] = []
    for m in profile.get("archMap") or []:
        if m.get("architecture") == _SCMP_ARCH.get(goarch):
            arches = [m["architecture"], *m.get("subArchitectures", [])]
    arches = arches or list(profile.get("architectures") or [])
    kernel = _kernel()
    out_rules: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for r in profile.get("syscalls") or []:
        inc, exc = r.get("includes") or {}, r.get("excludes") or {}
        if inc.get("caps") and not set(inc["caps"]) <= have:
            continue
        if inc.get("arches") and goarch not in inc["arches"]:
            continue
        if exc.get("caps") and set(exc["caps"]) & have:
            continue
        if exc.get("arches") and goarch in exc["arches"]:
            continue
        if inc.get("minKernel"):
            want = tuple(int(x) for x in str(inc["minKernel"]).split(".")[:2])
            if kernel < want:
                continue
        names = [n for n in r.get("names") or ([r["name"]] if r.get("name") else [])]
        key_args = json.dumps(r.get("args") or [], sort_keys=True)
        names = [n for n in names if (n, r["action"], key_args) not in seen]
        seen.update((n, r["action"], key_args) for n in names)
        if not names:
            continue
        rule: dict[str, Any] = {"names": names, "action": r["action"]}
        if r.get("args"):
            rule["args"] = r["args"]
        if r.get("errnoRet") is not None:
            rule["errnoRet"] = r["errnoRet"]
        out_rules.append(rule)
    doc: dict[str, Any] = {"defaultAction": profile.get("defaultAction", "SCMP_ACT_ERRNO"),
                           "architectures": arches, "syscalls": out_rules}
    if profile.get("defaultErrnoRet") is not None:
        doc["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return doc


# ---- the OCI document --------------------------------------------------------------------------------
def _device_node(host: str, ctr: str, perms: str) -> tuple[dict[str, Any], dict[str, Any]]:
    st = os.stat(host)
    kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
    node = {"path": ctr, "type": kind, "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
            "fileMode": st.st_mode & 0o777, "uid": st.st_uid, "gid": st.st_gid}
    rule = {"allow": True, "type": kind, "major": node["major"], "minor": node["minor"], "access": perms}
    return node, rule


def apply(doc: dict[str, Any], config: Mapping[str, Any], extra_gids: Sequence[int] = ()) -> None:
    """Edit the OCI document for the record's security options (validated by ``check``)."""
    from runtime.bundle import DEFAULT_CAPABILITIES

    hc = config.get("HostConfig") or {}
    proc = doc["process"]
    caps = capabilities(hc, DEFAULT_CAPABILITIES)
    proc["capabilities"] = {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)}
    seccomp, nnp = security_opts(hc)
    proc["noNewPrivileges"] = nnp
    linux = doc["linux"]
    if hc.get("Privileged"):
        seccomp = "unconfined"
        linux["maskedPaths"], linux["readonlyPaths"] = [], []
        linux["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
        for m in doc["mounts"]:
            if m["destination"] in ("/sys", "/sys/fs/cgroup"):
                m["options"] = [o for o in m["options"] if o != "ro"] + ["rw"]
    if seccomp != "unconfined":
        profile = default_profile() if seccomp == "default" else seccomp
        linux["seccomp"] = oci_seccomp(profile, caps)
    if hc.get("ReadonlyRootfs"):
        doc["root"]["readonly"] = True
    limits = {r["type"]: r for r in proc.get("rlimits") or []}
    for r in ulimits(hc):
        limits[r["type"]] = r
    proc["rlimits"] = list(limits.values())
    if hc.get("Init"):
        doc["mounts"].append({"destination": INIT_PATH, "type": "bind", "source": init_binary(),
                              "options": ["rbind", "ro", "rprivate"]})
        proc["args"] = [INIT_PATH, "--", *proc["args"]]
    shm = hc.get("ShmSize")
    if shm:
        for m in doc["mounts"]:
            if m["destination"] == "/dev/shm":
                m["options"] = [o for o in m["options"] if not o.startswith("size=")] + [f"size={shm}"]
    nodes = []
    for host, ctr, perms in devices(hc):
        node, rule = _device_node(host, ctr, perms)
        nodes.append(node)
        linux["resources"]["devices"].append(rule)
    if nodes:
        linux["devices"] = nodes
    if extra_gids:
        user = proc["user"]
        user["additionalGids"] = sorted(set(user.get("additionalGids") or []) | set(extra_gids))
