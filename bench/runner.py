"""The runner: plans the cells of a profile, runs every repetition in a fresh worker process,
records machine metadata itself, shows progress with an ETA, and writes the results file.

Order of work (so that noise from a shared machine spreads over all cells instead of hitting one):

1. sweep what a killed earlier run left in the work dir (mounts, loop devices);
2. make the bench's filesystems (a journaled ext4 loop; a btrfs loop when a driver needs it);
3. probe the drivers on them (``drivers.available``): a driver that cannot run is recorded with
   the reason; a driver registered later simply appears;
4. build (or take from the cache) the workloads; start the local registry and push them (untimed);
5. repetition by repetition: the machine measures, then for every workload its roofline, the
   lifecycle on every driver and its peers, then the concurrent-containers series. Every task is
   one worker process (``bench.worker``) with a timeout; a task that dies is an error row;
6. stop the registry, tear the filesystems down (always, also on Ctrl-C), save
   ``results/<label>.json``, write the report, compare with the baseline.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench import fs
from bench.phases import PHASE_NAMES
from bench.profiles import Profile
from bench.results import Suite
from bench.roofline import driver_fs

REPO = Path(__file__).resolve().parent.parent


@dataclass
class RunConfig:
    profile: Profile
    label: str
    work_dir: Path
    results_dir: Path
    seed: int = 1
    keep: bool = False
    baseline: Path | None = None
    compare: bool = True
    fail_on_regression: bool = False
    threshold: float = 0.5
    alpha: float = 0.05
    mirror: str = "http://deb.debian.org/debian"
    explicit_workloads: bool = False
    verbose: bool = False

    @property
    def report_dir(self) -> Path:
        """``results/`` for the default label (the report the README shows), else
        ``results/<label>/``."""
        return self.results_dir if self.label == "default" else self.results_dir / self.label


@dataclass
class Task:
    kind: str  # machine | roofline | lifecycle | peers | concurrent
    rep: int
    driver: str = ""
    workload: str = ""
    weight: float = 1.0
    payload: dict[str, Any] = field(default_factory=dict)
    side: str = ""  # A/B runs (bench/ab.py): which revision's workers run it

    @property
    def family(self) -> tuple[str, str, str]:
        return (self.kind, self.driver, self.workload)

    def title(self) -> str:
        who = " × ".join(x for x in (self.driver, self.workload) if x)
        return f"{self.kind} {who}{f' [{self.side}]' if self.side else ''}".strip()


class Interrupted(Exception):
    pass


class BusyError(RuntimeError):
    """Another bench run holds the work dir."""


def _on_signal(signum: int, _frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


# ---- machine metadata -----------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        p = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=20)
        return p.stdout.strip() if p.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info(work_dir: Path) -> dict[str, Any]:
    """What the machine is, recorded by the runner itself (pyperf's collect_metadata)."""
    cpu = ""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    osname = ""
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            osname = line.split("=", 1)[1].strip('"')
    virt = ""
    if shutil.which("systemd-detect-virt"):
        virt = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True).stdout.strip()
    gov = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip()
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory": mem,
        "kernel": platform.release(),
        "os": osname,
        "arch": platform.machine(),
        "python": platform.python_version(),
        "virtualization": virt,
        "cpufreq_governor": gov,
        "root_fs": fs.fstype_of("/"),
        "work_dir_fs": fs.fstype_of(work_dir),
        "loadavg_start": os.getloadavg(),
        "boot_id": _read("/proc/sys/kernel/random/boot_id").strip(),
        "cgroup": "hybrid" if os.path.ismount("/sys/fs/cgroup/unified") else
                  ("v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1"),
    }


def versions() -> dict[str, Any]:
    from importlib import metadata

    from bench.peers import tool_versions

    pkgs = {}
    for name in ("lamina", "numpy", "matplotlib", "isal", "zstandard", "libarchive-c", "xxhash", "httpx",
                 "pytest-benchmark"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            pkgs[name] = metadata.version(name)
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "commit_date": _git("log", "-1", "--format=%cI"),
        "dirty": bool(dirty),
        "packages": pkgs,
        "tools": tool_versions(),
    }


# ---- progress -------------------------------------------------------------------------------


def _hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Which task runs, how many are left, and an ETA: a task's expected time is what the same
    task took in an earlier repetition, else its weight (workload size) times the time per
    weight unit seen so far."""

    def __init__(self, tasks: list[Task], out: Callable[[str], None]) -> None:
        self.tasks = tasks
        self.out = out
        self.done: dict[tuple[str, str, str], list[float]] = {}
        self.per_weight: list[float] = []
        self.i = 0
        self.t0 = time.monotonic()

    def expected(self, t: Task) -> float:
        hist = self.done.get(t.family)
        if hist:
            return sum(hist) / len(hist)
        if self.per_weight:
            return t.weight * sum(self.per_weight) / len(self.per_weight)
        return t.weight * 2.0

    def eta(self) -> float:
        return sum(self.expected(t) for t in self.tasks[self.i:])

    def begin(self, t: Task) -> None:
        n = len(self.tasks)
        pct = 100 * self.i / n if n else 100
        self.out(f"[{self.i + 1:>3}/{n} {pct:3.0f}% {_hms(time.monotonic() - self.t0)} ETA {_hms(self.eta())}] "
                 f"rep {t.rep + 1}: {t.title()}")

    def end(self, t: Task, seconds: float, summary: str) -> None:
        self.done.setdefault(t.family, []).append(seconds)
        self.per_weight.append(seconds / max(t.weight, 1e-3))
        self.i += 1
        if summary:
            self.out(f"      {seconds:6.1f}s  {summary}")


# ---- the runner -----------------------------------------------------------------------------


class Runner:
    def __init__(self, cfg: RunConfig, *, out: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.p = cfg.profile
        self.out = out or (lambda s: print(s, file=sys.stderr, flush=True))
        self.work = cfg.work_dir.absolute()
        self.cache = self.work / "cache" / "workloads"
        self.suite = Suite(label=cfg.label, profile=self.p.name)
        self.filesystems: dict[str, fs.LoopFS] = {}
        self.workloads: dict[str, Any] = {}
        self.registry: Any = None
        self.registry_refs: dict[str, str] = {}
        self.registry_reason = ""
        self.drivers: list[str] = []
        self.log_path = self.work / f"{cfg.label}.log"

    # -- planning
    def _driver_list(self) -> list[str]:
        import drivers

        names = drivers.names()
        if self.p.drivers is not None:
            unknown = [d for d in self.p.drivers if d not in names]
            for d in unknown:
                self.suite.drivers[d] = f"not a registered driver (known: {', '.join(names)})"
            return [d for d in self.p.drivers if d in names]
        return names

    def _make_filesystems(self, wanted: list[str]) -> None:
        need = {driver_fs(d) for d in wanted} | {"ext4"}
        for fsname in sorted(need):
            reason = fs.loopfs_unavailable(fsname)
            if reason:
                self.suite.notes.append(f"no loop {fsname}: {reason}")
                continue
            size = self.p.fs_size.get(fsname, 16 << 30)
            self.out(f"bench: making a {size >> 30} GiB loop {fsname} in {self.work / 'fs'}")
            self.filesystems[fsname] = fs.make_loopfs(self.work / "fs", fsname, size, name=fsname)

    def _probe_drivers(self, names: list[str]) -> None:
        import drivers

        for d in names:
            fsname = driver_fs(d)
            if fsname not in self.filesystems:
                self.suite.drivers[d] = f"no loop {fsname} filesystem here"
                continue
            home = self.filesystems[fsname].mountpoint / "probe" / d
            try:
                reason = drivers.supported(d, home)
            except Exception as e:  # a broken probe is a reason, not a crash
                reason = f"probe failed: {type(e).__name__}: {e}"
            self.suite.drivers[d] = reason
            if reason is None:
                self.drivers.append(d)
            else:
                self.out(f"bench: driver {d} cannot run here: {reason}")
        with contextlib.suppress(Exception):
            for f in self.filesystems.values():
                fs.rmtree(f.mountpoint / "probe")

    def _build_workloads(self) -> None:
        from bench import workloads as W

        names = list(self.p.workloads)
        extra = [n for n in (self.p.concurrency_workload, *self.p.peer_workloads)
                 if n and n not in names]
        for name in names + extra:
            try:
                spec = W.parse(name)
                w = W.build(spec, self.cache, self.cfg.seed, mirror=self.cfg.mirror, log=self.out)
            except Exception as e:  # recorded: its cells are rows saying why
                msg = f"{type(e).__name__}: {e}"
                self.out(f"bench: workload {name} unavailable: {msg}")
                self.suite.workloads[name] = {"error": msg}
                continue
            self.workloads[name] = w
            self.suite.workloads[name] = w.summary()

    def _start_registry(self, stack: contextlib.ExitStack) -> None:
        from bench import registry as R
        from bench.peers import BY_NAME

        # every peer that pulls (lamina's own CLI rows too: they pull the image untimed)
        need = "pull" in self.p.phases or any(BY_NAME[p].needs_registry for p in self.p.peers if p in BY_NAME)
        if not need:
            self.registry_reason = "not needed by the selected phases and peers"
            return
        try:
            self.registry = stack.enter_context(R.run_registry(self.work / "registry"))
        except Exception as e:
            self.registry_reason = f"local registry unavailable: {e}"
            self.out(f"bench: {self.registry_reason}")
            return
        for name, w in self.workloads.items():
            try:
                self.registry_refs[name] = R.push_layout(self.registry, w)
            except Exception as e:
                self.suite.notes.append(f"push of {name} to the local registry failed: {e}")

    def _workload_allowed(self, driver: str, name: str) -> str | None:
        if self.cfg.explicit_workloads:
            return None
        w = self.workloads.get(name)
        limit = self.p.max_depth.get(driver)
        if w is not None and limit is not None and len(w.layers) > limit:
            return (f"{driver} copies the whole parent for every layer: deeper than {limit} layers is "
                    "beyond this profile's budget (ask for it with --workloads)")
        return None

    def _phases_for(self, workload: str, phases: list[str]) -> list[str]:
        if not self.p.full_workloads or workload in self.p.full_workloads:
            return phases
        return [p for p in phases if p not in self.p.series_skip_phases]

    def plan(self) -> list[Task]:
        tasks: list[Task] = []
        scratch = {n: f.mountpoint / "scratch" for n, f in self.filesystems.items()}
        used_fs = sorted({driver_fs(d) for d in self.drivers} & set(self.filesystems)) or sorted(self.filesystems)
        lifecycle_phases = [p for p in PHASE_NAMES if p in self.p.phases]
        for rep in range(self.p.reps):
            tasks.append(Task("machine", rep, weight=1.0, payload={
                "fs": {n: str(scratch[n]) for n in used_fs}}))
            for name in self.p.workloads:
                w = self.workloads.get(name)
                if w is None:
                    continue
                weight = 1 + w.tar_bytes / 50e6 + len(w.layers) / 50
                tasks.append(Task("roofline", rep, workload=name, weight=weight / 2, payload={
                    "workload": w.to_json(), "cpu": True,
                    "scratches": {n: str(scratch[n] / "roof") for n in used_fs}}))
                for d in self.drivers:
                    if self._workload_allowed(d, name):
                        continue
                    tasks.append(self._lifecycle_task(rep, d, name, lifecycle_phases))
                if name in self.p.peer_workloads and self.p.peers:
                    tasks.append(self._peer_task(rep, name, w, scratch, weight))
            cw = self.workloads.get(self.p.concurrency_workload)
            if self.p.concurrency and cw is not None:
                for d in self.drivers:
                    tasks.append(self._concurrent_task(rep, d))
        return tasks

    def _lifecycle_task(self, rep: int, d: str, name: str, phases: list[str], side: str = "") -> Task:
        w = self.workloads[name]
        weight = 1 + w.tar_bytes / 50e6 + len(w.layers) / 50
        store_base = self.filesystems[driver_fs(d)].mountpoint / "stores"
        reg = None
        if name in self.registry_refs and self.registry is not None:
            reg = {"ref": self.registry_refs[name], "host": self.registry.host,
                   "blob_files": [str(p) for p in self.registry.blob_files()]}
        return Task("lifecycle", rep, driver=d, workload=name, weight=weight, side=side, payload={
            "driver": d, "workload": w.to_json(), "store_base": str(store_base), "rep": rep,
            "phases": self._phases_for(name, phases), "fingerprint": rep == 0, "registry": reg,
            "repeats": dict(self.p.repeats),
            "registry_reason": self.registry_reason or "no registry image for this workload"})

    def _concurrent_task(self, rep: int, d: str, side: str = "") -> Task:
        cw = self.workloads[self.p.concurrency_workload]
        store_base = self.filesystems[driver_fs(d)].mountpoint / "stores"
        return Task("concurrent", rep, driver=d, workload=cw.name, weight=2 + sum(self.p.concurrency) / 4,
                    side=side, payload={"driver": d, "workload": cw.to_json(), "store_base": str(store_base),
                                        "rep": rep, "counts": list(self.p.concurrency)})

    def _peer_task(self, rep: int, name: str, w: Any, scratch: dict[str, Path], weight: float) -> Task:
        from bench import peers as P

        runnable_peers = []
        for pname in self.p.peers:
            peer = P.BY_NAME[pname]
            why = P.applicable(peer, w.runnable, name in self.registry_refs, len(w.layers), w.compression)
            if why is not None:
                self.suite.add_skip("peer", pname, "", name, None, why)
            else:
                runnable_peers.append(pname)
        reg = None
        if name in self.registry_refs and self.registry is not None:
            reg = {"ref": self.registry_refs[name], "host": self.registry.host,
                   "blob_files": [str(p) for p in self.registry.blob_files()]}
        return Task("peers", rep, workload=name, weight=weight * 2, payload={
            "workload": w.to_json(), "peers": runnable_peers, "registry": reg,
            "scratch": str(scratch["ext4"] / "peers"), "cwd": str(REPO)})

    # -- running one task
    def _worker(self, t: Task, task_file: Path) -> tuple[list[str], str, dict[str, str] | None]:
        """argv, cwd and environment of the worker process for ``t`` (A/B runs override it)."""
        return [sys.executable, "-m", "bench.worker", str(task_file)], str(REPO), None

    def _run_task(self, t: Task) -> dict[str, Any] | str:
        with open(self.log_path, "a") as log:
            proc, out = self._start_worker(t, log)
            return self._finish_worker(proc, out, self.p.task_timeout)

    def _start_worker(self, t: Task, log: Any, env_extra: dict[str, str] | None = None,
                      pass_fds: tuple[int, ...] = ()) -> tuple[subprocess.Popen[bytes], Path]:
        """Write ``t``'s task file and start its worker (output to ``log``); returns the process
        and the path its result will be written to."""
        tdir = self.work / "tasks"
        tdir.mkdir(parents=True, exist_ok=True)
        task = dict(t.payload, kind=t.kind, rep=t.rep)
        path = tdir / f"task-{os.getpid()}{'-' + t.side if t.side else ''}.json"
        out = path.with_suffix(".out.json")
        task["out"] = str(out)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out)
        path.write_text(json.dumps(task))
        log.write(f"\n==== {_dt.datetime.now().isoformat(timespec='seconds')} rep {t.rep} {t.title()}\n")
        log.flush()
        argv, cwd, env = self._worker(t, path)
        if env_extra:
            env = {**(env if env is not None else os.environ), **env_extra}
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True, pass_fds=pass_fds)
        return proc, out

    def _finish_worker(self, proc: subprocess.Popen[bytes], out: Path, timeout: float,
                       why: str | None = None) -> dict[str, Any] | str:
        """Wait for the worker (killing its process group on a timeout, or at once when ``why``
        says it must stop) and read its result, or say why there is none."""
        if why is not None:
            kill_worker(proc)
            return why
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_worker(proc)
            return f"timed out after {timeout:.0f} s"
        except BaseException:
            kill_worker(proc)
            raise
        if rc != 0:
            return f"worker exited {rc} (see {self.log_path})"
        try:
            return json.loads(out.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError) as e:
            return f"worker left no result: {e}"

    def _after_task(self, t: Task) -> None:
        """Nothing a task mounted may outlive it: unmount leftovers under the stores."""
        for f in self.filesystems.values():
            for sub in ("stores", "scratch"):
                left = fs.mounts_under(f.mountpoint / sub)
                if left:
                    self.suite.notes.append(f"rep {t.rep} {t.title()} left mounts: {left[:3]}")
                    fs.umount_tree(f.mountpoint / sub)

    # -- folding results into the suite
    def _fold(self, t: Task, res: dict[str, Any] | str) -> str:
        s = self.suite
        if isinstance(res, str):
            self._fold_failure(t, res)
            return f"FAILED: {res}"
        parts = []
        if t.kind == "lifecycle":
            for phase, o in res.get("phases", {}).items():
                if "seconds" in o:
                    extra = {k: v for k, v in (o.get("extra") or {}).items() if k != "samples"}
                    c = s.add_sample("phase", phase, t.driver, t.workload, None, t.rep, o["seconds"], extra)
                    if "cpu_seconds" in o:  # the worker's CPU time in the phase, by repetition
                        c.extra.setdefault("cpu_s", {})[str(t.rep)] = o["cpu_seconds"]
                    if (o.get("extra") or {}).get("samples"):  # a repeated phase's K timings, by repetition
                        c.extra.setdefault("repeats", {})[str(t.rep)] = o["extra"]["samples"]
                    parts.append(f"{phase} {_fmt(o['seconds'])}")
                elif "error" in o:
                    s.add_error("phase", phase, t.driver, t.workload, None, t.rep, o["error"])
                    parts.append(f"{phase} ERROR")
                else:
                    s.add_skip("phase", phase, t.driver, t.workload, None, o.get("skipped", ""))
            fp = res.get("info", {}).get("fingerprint")
            if fp:
                self._check_tree(t, fp)
            for phase, tb in res.get("info", {}).get("tracebacks", {}).items():
                with open(self.log_path, "a") as log:
                    log.write(f"-- {t.title()} {phase}:\n{tb}\n")
        elif t.kind == "concurrent":
            for n, o in res.get("counts", {}).items():
                if "seconds" in o:
                    s.add_sample("series", "concurrent", t.driver, t.workload, int(n), t.rep, o["seconds"],
                                 o.get("extra"))
                    parts.append(f"N={n} {_fmt(o['seconds'])}")
                else:
                    s.add_error("series", "concurrent", t.driver, t.workload, int(n), t.rep, o.get("error", "?"))
                    parts.append(f"N={n} ERROR")
        else:
            for key, o in res.get("cells", {}).items():
                name, _, fsname = key.partition("@")
                if t.kind == "roofline":
                    kind, drv, wl = "roofline", fsname or "cpu", t.workload
                elif t.kind == "machine":
                    kind, drv, wl = "machine", fsname or "cpu", ""
                else:
                    kind, drv, wl = "peer", "", t.workload
                if "seconds" in o:
                    s.add_sample(kind, name, drv, wl, None, t.rep, o["seconds"], o.get("extra"))
                    parts.append(f"{key} {_fmt(o['seconds'])}")
                else:
                    s.add_error(kind, name, drv, wl, None, t.rep, o.get("error", "?"))
                    parts.append(f"{key} ERROR")
        return ", ".join(parts)

    def _fold_failure(self, t: Task, msg: str) -> None:
        s = self.suite
        if t.kind == "lifecycle":
            for phase in t.payload["phases"]:
                s.add_error("phase", phase, t.driver, t.workload, None, t.rep, msg)
        elif t.kind == "concurrent":
            for n in t.payload["counts"]:
                s.add_error("series", "concurrent", t.driver, t.workload, n, t.rep, msg)
        elif t.kind == "peers":
            for p in t.payload["peers"]:
                s.add_error("peer", p, "", t.workload, None, t.rep, msg)
        else:
            s.notes.append(f"rep {t.rep} {t.title()} failed: {msg}")

    def _check_tree(self, t: Task, fp: dict[str, Any]) -> None:
        """Every driver must materialise the same tree: counts against the workload's listing,
        the content fingerprint against the other drivers'."""
        info = self.suite.workloads.setdefault(t.workload, {})
        info.setdefault("fingerprints", {})[t.driver] = fp["xxh3"]
        w = self.workloads[t.workload]
        want = w.tree
        for k in ("files", "bytes", "dirs", "symlinks"):
            if k in want and fp.get(k) != want[k]:
                self.suite.notes.append(
                    f"TREE MISMATCH: {t.driver} × {t.workload}: {k} {fp.get(k)} != expected {want[k]}")
        others = {d: x for d, x in info["fingerprints"].items() if x != fp["xxh3"]}
        if others:
            self.suite.notes.append(f"TREE MISMATCH: {t.driver} × {t.workload} differs in content from "
                                    f"{', '.join(sorted(others))}")

    def _setup(self, stack: contextlib.ExitStack) -> None:
        """Filesystems, driver probes, workloads, the registry, and the skip rows of the plan."""
        wanted = self._driver_list()
        self._make_filesystems(wanted)
        self.suite.config["filesystems"] = {n: f.describe() for n, f in self.filesystems.items()}
        self._probe_drivers(wanted)
        self._build_workloads()
        self._start_registry(stack)
        self.suite.config["registry"] = self.registry_reason or "docker-registry on 127.0.0.1"
        for d in self.drivers:
            for name in self.p.workloads:
                why = self._workload_allowed(d, name)
                if why:
                    for phase in self.p.phases:
                        self.suite.add_skip("phase", phase, d, name, None, why)
                    continue
                for phase in set(self.p.phases) - set(self._phases_for(name, list(self.p.phases))):
                    self.suite.add_skip("phase", phase, d, name, None,
                                        f"the {self.p.name} profile times {phase} on its main workloads "
                                        f"only ({', '.join(self.p.full_workloads)})")

    # -- the whole run
    def run(self) -> Suite:
        cfg = self.cfg
        self.work.mkdir(parents=True, exist_ok=True)
        # one run per work dir: the sweep below would otherwise unmount another run's filesystems
        self._lock = open(self.work / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"another bench run uses {self.work}; wait for it or give --work-dir") from None
        left = fs.sweep(self.work)
        if left:
            self.out(f"bench: cleaning leftovers of an earlier run: {left}")
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()
        old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
        started = time.monotonic()
        self.suite.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.suite.machine = machine_info(self.work)
        self.suite.versions = versions()
        from bench.peers import PEERS

        self.suite.peers = {p.name: {"phase": p.phase, "what": p.what, "tool": p.tool} for p in PEERS
                            if p.name in self.p.peers}
        self.suite.config = {
            "profile": self.p.name, "reps": self.p.reps, "workloads": list(self.p.workloads),
            "phases": list(self.p.phases), "concurrency": list(self.p.concurrency),
            "concurrency_workload": self.p.concurrency_workload, "peers": list(self.p.peers),
            "peer_workloads": list(self.p.peer_workloads), "seed": cfg.seed, "work_dir": str(self.work),
            "max_depth": dict(self.p.max_depth), "repeats": dict(self.p.repeats), "argv": sys.argv[1:],
            "full_workloads": list(self.p.full_workloads), "series_skip_phases": list(self.p.series_skip_phases),
        }
        try:
            with contextlib.ExitStack() as stack:
                stack.callback(self._teardown)
                self._setup(stack)
                tasks = self.plan()
                self.out(f"bench: {len(tasks)} tasks: {self.p.reps} repetitions × "
                         f"{len(self.drivers)} drivers ({', '.join(self.drivers) or 'none'}) × "
                         f"{len(self.workloads)} workloads; log: {self.log_path}")
                self._execute(tasks)
        except (KeyboardInterrupt, Interrupted) as e:
            self.suite.notes.append(f"interrupted ({e or 'Ctrl-C'}): results are partial")
            self.out("bench: interrupted; filesystems torn down; partial results kept")
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        self.suite.duration_s = time.monotonic() - started
        self.suite.machine["loadavg_end"] = os.getloadavg()
        return self.suite

    def _execute(self, tasks: list[Task]) -> None:
        progress = Progress(tasks, self.out)
        for t in tasks:
            progress.begin(t)
            t0 = time.monotonic()
            res = self._run_task(t)
            self._after_task(t)
            summary = self._fold(t, res)
            progress.end(t, time.monotonic() - t0, summary if self.cfg.verbose or isinstance(res, str) else "")

    def _teardown(self) -> None:
        for name, f in list(self.filesystems.items()):
            if self.cfg.keep:
                self.out(f"bench: keeping {f.mountpoint} (--keep); `python -m bench clean` removes it")
                continue
            f.close()
            if f.errors:
                self.suite.notes.append(f"teardown of {name}: {f.errors}")
        if not self.cfg.keep:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(self.work / "tasks")


def kill_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL our own worker's process group (it started a session of its own) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"

