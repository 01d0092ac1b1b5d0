"""Write runtime/seccomp_default.json: a default seccomp profile of Docker's scope, in Docker's
profile format (names with ``includes``/``excludes`` by capability and architecture).

Made from the profile Debian ships in golang-github-containers-common
(/usr/share/containers/seccomp.json, itself derived from Docker's default.json), with Docker's
stricter choices put back where podman's differs: ``keyctl``/``add_key``/``request_key`` are not
allowed; ``clone`` only without namespace flags and ``clone3`` fails with ENOSYS unless
CAP_SYS_ADMIN; ``unshare``, ``setns``, ``mount`` and the new mount API, ``umount``, ``pivot_root``,
``name_to_handle_at``, ``syslog`` need CAP_SYS_ADMIN (``syslog`` also CAP_SYSLOG); ``reboot``
CAP_SYS_BOOT; ``get_mempolicy``/``mbind``/``set_mempolicy`` CAP_SYS_NICE; ``pidfd_getfd``
CAP_SYS_PTRACE; ``bpf`` CAP_BPF or CAP_SYS_ADMIN; ``perf_event_open`` CAP_PERFMON or
CAP_SYS_ADMIN. The default action is EPERM (Docker's ``defaultErrnoRet: 1``).

Run once: ``python3 scripts/make_seccomp_default.py [SOURCE]``; the output is committed."""

import json
import sys

SOURCE = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/containers/seccomp.json"
NOT_BY_DEFAULT = {
    "clone", "clone3", "fsconfig", "fsmount", "fsopen", "fspick", "get_mempolicy", "keyctl", "add_key",
    "request_key", "mbind", "mount", "mount_setattr", "move_mount", "name_to_handle_at", "open_tree",
    "pidfd_getfd", "pivot_root", "reboot", "set_mempolicy", "setns", "syslog", "umount", "umount2", "unshare",
}
CLONE_NS_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


def cap_rule(names: list[str], cap: str) -> dict:
    return {"names": names, "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}}


src = json.load(open(SOURCE))
rules = []
for r in src["syscalls"]:
    if r["action"] == "SCMP_ACT_ERRNO" and not r.get("excludes") and not r.get("includes"):
        continue  # an explicit EPERM list: the default action says the same
    if r["action"] == "SCMP_ACT_ALLOW" and not r.get("includes") and not r.get("excludes") and not r.get("args"):
        r = dict(r, names=sorted(set(r["names"]) - NOT_BY_DEFAULT))
    rules.append({k: v for k, v in r.items() if v not in ({}, None, [])} | {"names": r["names"]})
admin = ["bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie",
         "mount", "mount_setattr", "move_mount", "name_to_handle_at", "open_tree", "perf_event_open", "pivot_root",
         "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare"]
rules += [
    cap_rule(admin, "CAP_SYS_ADMIN"),
    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
     "args": [{"index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
     "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
    {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
    cap_rule(["reboot"], "CAP_SYS_BOOT"),
    cap_rule(["get_mempolicy", "mbind", "set_mempolicy"], "CAP_SYS_NICE"),
    cap_rule(["pidfd_getfd"], "CAP_SYS_PTRACE"),
    cap_rule(["syslog"], "CAP_SYSLOG"),
    cap_rule(["bpf"], "CAP_BPF"),
    cap_rule(["perf_event_open"], "CAP_PERFMON"),
]
out = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "archMap": src["archMap"], "syscalls": rules}
with open("runtime/seccomp_default.json", "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
