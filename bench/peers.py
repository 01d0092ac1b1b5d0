"""Peers: the established tools doing the same work, in the same run, on the same filesystem.

=====================  ===========  ===========================================================
peer                   vs phase     what is timed
=====================  ===========  ===========================================================
skopeo copy            pull         ``skopeo copy docker://… oci:…``: download + verify only
podman pull            pull         ``podman pull``: download, verify, apply (overlay storage)
umoci unpack           materialise  ``umoci unpack``: gunzip + apply every layer into a bundle
                                    (it also decompresses and writes an mtree manifest)
crun run               start        bare ``crun run`` of a prepared bundle (``/bin/true``), in a
                                    private mount namespace with ``/sys/fs/cgroup/unified``
                                    unmounted (crun 1.8 refuses hybrid cgroups otherwise);
                                    only the ``crun`` process is timed
runc run               start        bare ``runc run`` of the same bundle
podman run             start        ``podman run --rm --network none IMAGE /bin/true`` (runc):
                                    create + mount + start + remove
fuse-overlayfs mount   mount        mount the image's layers (extracted with GNU tar, whiteouts
                                    converted) with ``fuse-overlayfs``
fuse-overlayfs walk    walk         the phases' own walk on that mount, caches dropped
fuse-overlayfs read    read         the phases' own cold read on that mount
lamina images          start        lamina's own CLI, a fresh ``python -m lamina images`` on a
                                    store holding the one image (pulled untimed, overlay)
lamina run             start        ``python -m lamina --runtime runc run --rm --network none
                                    IMAGE /bin/true`` on that store: the CLI's whole cost, as
                                    podman run's is
python start           start        ``python -I -c pass``: the interpreter's own start, the
                                    floor under any command line written in Python
lamina images imports  start        a fresh ``python -c`` that imports the modules
                                    ``lamina images`` loaded (found by an untimed run) and exits
lamina run imports     start        the same for ``lamina run --rm``'s modules
=====================  ===========  ===========================================================

The ``lamina`` rows are not peers but lamina's command line timed the way the peers are
(fresh processes, same filesystem, same image), for the issue-15 aims beside ``podman run``
(``bench/report.py``'s aims table). ``python start`` and the two ``imports`` rows split a
command's time into the interpreter's floor, lamina's imports and the work itself (with ``runc
run``, the runtime's own share of ``lamina run``), so the report says why an aim is missed.

podman is configured for this machine in its own ``containers.conf`` (in the bench's work dir,
never the system's): cgroupfs, file events, runc, and ulimits within the host's hard limits
(podman's defaults ask for more than a process without CAP_SYS_RESOURCE may set). Its storage
lives in the bench's scratch directory and is deleted after each repetition. A peer that cannot
run here is recorded with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import fs
from bench.phases import read_tree, walk_tree


@dataclass(frozen=True)
class Peer:
    name: str
    phase: str
    tool: str
    what: str
    needs_registry: bool = False
    needs_runnable: bool = False
    needs_umoci: bool = False  # works on umoci's unpack: the unpack itself and the bare runtimes on its bundle


PEERS: tuple[Peer, ...] = (
    Peer("skopeo copy", "pull", "skopeo", "download + verify into an OCI layout (no apply)", needs_registry=True),
    Peer("podman pull", "pull", "podman", "download + verify + apply, overlay storage", needs_registry=True),
    Peer("umoci unpack", "materialise", "umoci", "gunzip + apply every layer into a bundle (+ mtree)",
         needs_umoci=True),
    Peer("crun run", "start", "crun", "bare crun run /bin/true of a prepared bundle", needs_runnable=True,
         needs_umoci=True),
    Peer("runc run", "start", "runc", "bare runc run /bin/true of a prepared bundle", needs_runnable=True,
         needs_umoci=True),
    Peer("podman run", "start", "podman", "podman run --rm /bin/true (runc): create+mount+start+remove",
         needs_registry=True, needs_runnable=True),
    Peer("fuse-overlayfs mount", "mount", "fuse-overlayfs", "mount the layers with fuse-overlayfs"),
    Peer("fuse-overlayfs walk", "walk", "fuse-overlayfs", "metadata walk on the fuse-overlayfs mount, cold"),
    Peer("fuse-overlayfs read", "read", "fuse-overlayfs", "cold read on the fuse-overlayfs mount"),
    Peer("lamina images", "start", "lamina", "lamina images (CLI, fresh process, one image, overlay)",
         needs_registry=True),
    Peer("lamina run", "start", "runc", "lamina run --rm /bin/true (CLI, runc): create+mount+start+remove",
         needs_registry=True, needs_runnable=True),
    Peer("python start", "start", "lamina", "python -I -c pass: the interpreter's start, the floor",
         needs_registry=True),
    Peer("lamina images imports", "start", "lamina", "a fresh python importing what lamina images loads",
         needs_registry=True),
    Peer("lamina run imports", "start", "runc", "a fresh python importing what lamina run --rm loads",
         needs_registry=True, needs_runnable=True),
)
LAMINA_PEERS = ("lamina images", "lamina run", "python start", "lamina images imports", "lamina run imports")
BY_NAME = {p.name: p for p in PEERS}
FUSE_MAX_LAYERS = 500


def tool_missing(tool: str) -> str | None:
    if tool == "lamina":
        return None  # this checkout's own CLI: python -m lamina
    if shutil.which(tool) is None:
        return f"{tool} is not installed (scripts/setup.sh --bench installs the peers)"
    if tool == "umoci" and os.geteuid() != 0:
        return "umoci unpack as non-root needs --rootless; the bench runs as root"
    return None


def applicable(p: Peer, runnable: bool, registry: bool, layers: int, compression: str = "gzip") -> str | None:
    """Why the peer cannot run for this workload here (None: it can)."""
    missing = tool_missing(p.tool)
    if missing:
        return missing
    if p.needs_umoci and compression == "zstd":
        # umoci 0.4 (Debian 12's) refuses tar+zstd blobs ("blob is not correct mediatype")
        return "umoci unpacks gzip layers only here; the bare runtimes run its bundle"
    if p.needs_registry and not registry:
        return "no local registry (docker-registry missing or failed to start)"
    if p.needs_runnable and not runnable:
        return "the workload has no /bin/true to run"
    if p.needs_umoci and tool_missing("umoci"):
        return "the bundle comes from umoci unpack, which is missing"
    if p.tool == "fuse-overlayfs" and layers > FUSE_MAX_LAYERS:
        return f"more than {FUSE_MAX_LAYERS} layers"
    if p.tool == "fuse-overlayfs" and not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


def podman_conf(directory: Path) -> Path:
    """containers.conf for podman on this machine (see the module docstring)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
    _, nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)
    nproc = min(nproc_hard if nproc_hard != resource.RLIM_INFINITY else 4096, 4096)
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "containers.conf"
    conf.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={min(nofile, 1024)}:{min(nofile, 1024)}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
    )
    (directory / "registries.conf").write_text("unqualified-search-registries = []\n")
    return conf


def _podman(pdir: Path, runroot: Path, *args: str) -> list[str]:
    return ["podman", "--root", str(pdir / "root"), "--runroot", str(runroot),
            "--storage-driver", "overlay", *args]


def _podman_env(pdir: Path) -> dict[str, str]:
    return dict(os.environ, CONTAINERS_CONF=str(pdir / "containers.conf"),
                CONTAINERS_REGISTRIES_CONF=str(pdir / "registries.conf"))


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 900, cwd: str | None = None) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                       stdin=subprocess.DEVNULL, cwd=cwd)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        raise RuntimeError(f"{argv[0]} exit {p.returncode}: {msg[-1] if msg else ''}"[:300])
    return dt


def prepare_bundle(bundle: Path) -> None:
    """Turn umoci's bundle into one that runs ``/bin/true`` without a terminal, read-only."""
    cfg_path = bundle / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["process"]["args"] = ["/bin/true"]
    cfg["process"]["terminal"] = False
    cfg["root"] = {"path": "rootfs", "readonly": True}
    cfg_path.write_text(json.dumps(cfg))


def in_namespace_crun(bundle: str, cid: str) -> float:
    """Runs inside ``unshare -m``: hide the cgroup2 mount crun 1.8 refuses, then time crun."""
    if os.path.ismount("/sys/fs/cgroup/unified"):
        subprocess.run(["umount", "/sys/fs/cgroup/unified"], check=True, capture_output=True)
    return _run(["crun", "run", "--bundle", bundle, cid])


def _convert_whiteouts(layer_dir: Path) -> None:
    """OCI whiteouts (``.wh.<name>``, ``.wh..wh..opq``) to overlay ones (0/0 char device,
    ``trusted.overlay.opaque``), as an overlay-style driver stores them."""
    for dirpath, _dirs, files in os.walk(layer_dir):
        for name in files:
            if not name.startswith(".wh."):
                continue
            full = os.path.join(dirpath, name)
            os.unlink(full)
            if name == ".wh..wh..opq":
                os.setxattr(dirpath, "trusted.overlay.opaque", b"y")
            else:
                os.mknod(os.path.join(dirpath, name[4:]), 0o600 | 0o020000, os.makedev(0, 0))


def measure_peers(task: dict[str, Any]) -> dict[str, Any]:
    """One repetition of every applicable peer for one workload (``task["peers"]``)."""
    from bench.workloads import Workload

    w = Workload.from_json(task["workload"])
    wanted = set(task["peers"])
    scratch = Path(task["scratch"])
    reg = task.get("registry")
    out: dict[str, dict[str, Any]] = {}
    fs.rmtree(scratch)
    scratch.mkdir(parents=True)
    cid = f"bench-{os.getpid()}"

    def record(name: str, fn: Any) -> bool:
        if name not in wanted:
            return False
        try:
            out[name] = {"seconds": float(fn())}
            return True
        except Exception as e:
            out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            return False

    try:
        if reg:
            fs.warm(reg.get("blob_files", []))
            record("skopeo copy", lambda: _run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                                f"docker://{reg['ref']}", f"oci:{scratch / 'skopeo'}:img"]))
            shutil.rmtree(scratch / "skopeo", ignore_errors=True)
        bundle = scratch / "bundle"
        fs.warm([w.layout])
        unpacked = record("umoci unpack", lambda: _run(["umoci", "unpack", "--image", f"{w.layout}:{w.ref}",
                                                        str(bundle)]))
        if not unpacked and w.runnable and wanted & {"crun run", "runc run"}:
            try:
                _run(["umoci", "unpack", "--image", f"{w.layout}:{w.ref}", str(bundle)])
                unpacked = True
            except Exception as e:  # the bare runtimes fail on their own; the other peers still run
                for name in wanted & {"crun run", "runc run"}:
                    out[name] = {"error": f"no bundle to run: {type(e).__name__}: {e}"[:300]}
        if unpacked and w.runnable:
            prepare_bundle(bundle)
            if "crun run" in wanted:
                def crun() -> float:
                    p = subprocess.run(
                        ["unshare", "-m", "--propagation", "private", sys.executable, "-m", "bench.peers",
                         "--crun-in-namespace", str(bundle), cid],
                        capture_output=True, text=True, timeout=120, cwd=task.get("cwd"))
                    if p.returncode != 0:
                        raise RuntimeError((p.stderr.strip().splitlines() or ["crun failed"])[-1])
                    return float(p.stdout.strip().splitlines()[-1])

                record("crun run", crun)
            record("runc run", lambda: _run(["runc", "run", "--bundle", str(bundle), cid]))
        if bundle.exists():
            shutil.rmtree(bundle)
        if reg and wanted & {"podman pull", "podman run"}:
            pdir = scratch / "podman"
            # podman refuses a runroot path over 50 characters: its transient state goes to a
            # short private directory (tmpfs /run where it exists), removed afterwards
            runroot = Path(tempfile.mkdtemp(prefix="lbp-", dir="/run" if os.access("/run", os.W_OK) else None))
            podman_conf(pdir)
            env = _podman_env(pdir)
            try:
                # untimed: podman sets its storage up on first use; the pull is timed on a ready store
                subprocess.run(_podman(pdir, runroot, "info"), env=env, capture_output=True, timeout=120)
                pulled = record("podman pull", lambda: _run(_podman(pdir, runroot, "pull", "--quiet",
                                                                    "--tls-verify=false", reg["ref"]), env))
                if w.runnable and "podman run" in wanted:
                    if pulled:
                        record("podman run", lambda: _run(_podman(pdir, runroot, "run", "--rm", "--network",
                                                                  "none", reg["ref"], "/bin/true"), env))
                    else:
                        out["podman run"] = {"error": "podman pull failed: nothing to run"}
            finally:
                subprocess.run(_podman(pdir, runroot, "system", "reset", "--force"), env=env,
                               capture_output=True, timeout=300)
                fs.umount_tree(pdir)
                fs.umount_tree(runroot)
                shutil.rmtree(runroot, ignore_errors=True)
        if reg and wanted & set(LAMINA_PEERS):
            _lamina_cli(w, reg, scratch / "lamina", record, wanted, task.get("cwd"))
        if wanted & {"fuse-overlayfs mount", "fuse-overlayfs walk", "fuse-overlayfs read"}:
            _fuse_overlayfs(w, scratch / "fo", record)
    finally:
        fs.rmtree(scratch)
    return {"cells": out}


def _lamina_cli(w: Any, reg: dict[str, Any], root: Path, record: Any, wanted: set[str], cwd: str | None) -> None:
    """``lamina images`` and ``lamina run --rm`` as a user runs them: ``python -m lamina`` of
    this checkout in a fresh process, on an overlay store that holds the image (pulled by
    lamina's own ``pull``, untimed)."""
    base = [sys.executable, "-m", "lamina", "--root", str(root), "--driver", "overlay"]

    def cli(*args: str) -> float:
        t0 = time.perf_counter()
        p = subprocess.run([*base, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                           stdin=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            msg = (p.stderr or p.stdout).strip().splitlines()
            raise RuntimeError(f"lamina {args[0]} exit {p.returncode}: {msg[-1] if msg else ''}"[:300])
        return dt

    try:
        try:
            cli("pull", "--insecure", "-q", reg["ref"])
        except Exception as e:
            why = f"untimed lamina pull failed: {e}"

            def failed() -> float:
                raise RuntimeError(why)

            for name in sorted(wanted & set(LAMINA_PEERS)):
                record(name, failed)
            return
        cli("images")  # untimed: the first open after the pull (page cache, bytecode)
        record("lamina images", lambda: cli("images"))
        run_args = ("--runtime", "runc", "run", "--rm", "--network", "none", reg["ref"], "/bin/true")
        if w.runnable and "lamina run" in wanted:
            record("lamina run", lambda: cli(*run_args))
        record("python start", lambda: _run([sys.executable, "-I", "-c", "pass"]))
        if "lamina images imports" in wanted:
            mods = _modules_of([*base, "images"], cwd)  # untimed: which modules the command loads
            record("lamina images imports", lambda: _run([sys.executable, "-c", IMPORT_ALL, *mods], cwd=cwd))
        if w.runnable and "lamina run imports" in wanted:
            mods = _modules_of([*base, *run_args], cwd)
            record("lamina run imports", lambda: _run([sys.executable, "-c", IMPORT_ALL, *mods], cwd=cwd))
    finally:
        fs.umount_tree(root)


# ``python -m lamina ARGS`` (runpy, as the timed CLI runs), then the names in sys.modules, in the
# order they were first imported, to the file named by the first argument
MODULES_PROBE = """
import json, runpy, sys
out = sys.argv[1]
sys.argv = ["lamina", *sys.argv[2:]]
try:
    runpy.run_module("lamina", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
with open(out, "w") as f:
    json.dump(list(sys.modules), f)
"""
# import every module named on the command line (one that fails is skipped: an alias, or one
# only the probe loaded), then exit: the interpreter's start plus the command's imports
IMPORT_ALL = """
import importlib, sys
for m in sys.argv[1:]:
    try:
        importlib.import_module(m)
    except Exception:
        pass
"""


def _modules_of(argv: list[str], cwd: str | None) -> list[str]:
    """The modules ``argv`` (``python -m lamina ...``) loads, in import order; lamina's own
    ``__main__`` is left out (importing it would run the command)."""
    with tempfile.TemporaryDirectory(prefix="lamina-mods-") as d:
        out = Path(d) / "mods.json"
        p = subprocess.run([sys.executable, "-c", MODULES_PROBE, str(out), *argv[3:]], capture_output=True,
                           text=True, timeout=300, cwd=cwd, stdin=subprocess.DEVNULL)
        if p.returncode != 0 or not out.exists():
            msg = (p.stderr or p.stdout).strip().splitlines()
            raise RuntimeError(f"module probe exit {p.returncode}: {msg[-1] if msg else ''}"[:300])
        names = json.loads(out.read_text())
    return [m for m in names if m not in ("__main__", "lamina.__main__")]


def _fuse_overlayfs(w: Any, base: Path, record: Any) -> None:
    base.mkdir()
    lowers = []
    for i, lf in enumerate(w.layers):
        d = base / f"l{i}"
        d.mkdir()
        subprocess.run(["tar", "-x", "-f", lf.tar, "-C", str(d)], check=True, capture_output=True)
        _convert_whiteouts(d)
        lowers.append(str(d))
    upper, work, mnt = base / "u", base / "w", base / "m"
    for d in (upper, work, mnt):
        d.mkdir()
    opts = f"lowerdir={':'.join(reversed(lowers))},upperdir={upper},workdir={work}"
    fs.syncfs(base)
    try:
        if not record("fuse-overlayfs mount", lambda: _run(["fuse-overlayfs", "-o", opts, str(mnt)])):
            return
        fs.drop_caches([mnt])
        record("fuse-overlayfs walk", lambda: _timed_call(lambda: walk_tree(str(mnt))))
        fs.drop_caches([mnt])
        record("fuse-overlayfs read", lambda: _timed_call(lambda: read_tree(str(mnt))))
    finally:
        with contextlib.suppress(Exception):
            fs.umount_tree(mnt)


def _timed_call(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def tool_versions() -> dict[str, str]:
    """First line of ``--version`` of every tool the bench runs (missing ones: absent)."""
    out: dict[str, str] = {}
    for tool in ("crun", "runc", "skopeo", "umoci", "podman", "fuse-overlayfs", "tar", "docker-registry",
                 "debootstrap", "cp", "mkfs.ext4", "mkfs.btrfs"):
        path = shutil.which(tool)
        if path is None:
            continue
        if tool == "debootstrap":
            p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"], capture_output=True, text=True)
            out[tool] = p.stdout.strip()
            continue
        arg = "-V" if tool.startswith("mkfs.ext4") else "--version"
        try:
            p = subprocess.run([path, arg], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        text = (p.stdout or p.stderr).strip().splitlines()
        out[tool] = text[0][:120] if text else ""
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--crun-in-namespace":
        print(in_namespace_crun(sys.argv[2], sys.argv[3]))
        sys.exit(0)
    print("usage: python -m bench.peers --crun-in-namespace BUNDLE ID", file=sys.stderr)
    sys.exit(2)
