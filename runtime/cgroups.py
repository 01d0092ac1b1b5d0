"""A container's cgroup: where it is, its usage and limits, for cgroup v1, v2 or both (hybrid).

The runtime (crun, runc) creates the cgroup from the spec's ``linux.resources`` and
``cgroupsPath``; lamina only reads it. ``of_process`` finds a container's directories from its
init's ``/proc/<pid>/cgroup`` and this machine's cgroup mounts, so the same code serves a v1
host, a v2 host and a hybrid one (v1 controllers plus a cgroup2 mount, as here), whatever the
runtime chose. Files that are missing (a controller not mounted, a kernel without a counter) read
as None, never as an error: stats are best effort, limits are checked by the tests.
"""

from __future__ import annotations

import os
import time
from runtime.records import Record

PROC_MOUNTINFO = "/proc/self/mountinfo"
UNLIMITED_V1 = 1 << 62  # v1 reports "no limit" as a page-rounded LONG_MAX


class Mounts(Record):
    """This machine's cgroup mounts: v1 controller name -> mount point, and the cgroup2 mount."""

    __slots__ = ("v1", "v2")
    _defaults = {"v1": dict, "v2": None}
    v1: dict[str, str]
    v2: str | None

    @property
    def layout(self) -> str:
        """``v1``, ``v2``, ``hybrid`` (both), or ``none``."""
        if self.v1 and self.v2:
            return "hybrid"
        return "v1" if self.v1 else "v2" if self.v2 else "none"


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts(mountinfo: str = PROC_MOUNTINFO) -> Mounts:
    """Read the cgroup mounts from ``/proc/self/mountinfo`` (the first mount of each wins)."""
    v1: dict[str, str] = {}
    v2: str | None = None
    known = _controllers()
    with open(mountinfo, encoding="utf-8", errors="replace") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            fstype, point = rfields[0], _unescape(fields[4])
            if fstype == "cgroup2" and v2 is None:
                v2 = point
            elif fstype == "cgroup":
                for opt in rfields[2].split(","):
                    if opt in known or opt.startswith("name="):
                        v1.setdefault(opt, point)
    return Mounts(v1, v2)


def _controllers() -> set[str]:
    """The kernel's cgroup controllers (``/proc/cgroups``): a v1 mount's options mix them with
    plain options (``xattr``, ``noprefix``, ``clone_children``)."""
    try:
        with open("/proc/cgroups", encoding="ascii") as f:
            return {line.split()[0] for line in f if line.strip() and not line.startswith("#")}
    except OSError:
        return {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio",
                "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc"}


class Cgroup(Record):
    """A process's cgroup directories: v1 controller -> directory, and the v2 directory."""

    __slots__ = ("v1", "v2")
    _defaults = {"v1": dict, "v2": None}
    v1: dict[str, str]
    v2: str | None

    def to_json(self) -> dict[str, object]:
        return {"v1": dict(self.v1), "v2": self.v2}

    @classmethod
    def from_json(cls, d: dict[str, object] | None) -> "Cgroup":
        d = d or {}
        v1 = d.get("v1") or {}
        v2 = d.get("v2")
        return cls({str(k): str(v) for k, v in dict(v1).items()}, str(v2) if v2 else None)  # type: ignore[call-overload]

    def dir(self, controller: str) -> str | None:
        """The v1 directory of ``controller``, else the v2 directory (if that has the
        controller's files: the caller reads what exists)."""
        return self.v1.get(controller) or self.v2

    def exists(self) -> bool:
        return any(os.path.isdir(p) for p in [*self.v1.values(), *([self.v2] if self.v2 else [])])


def of_process(pid: int, m: Mounts | None = None) -> Cgroup:
    """The cgroup directories of process ``pid`` (from ``/proc/<pid>/cgroup``)."""
    m = m or mounts()
    v1: dict[str, str] = {}
    v2: str | None = None
    with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) != 3:
                continue
            _, ctrls, path = parts
            rel = path.lstrip("/")
            if ctrls == "":
                if m.v2:
                    v2 = os.path.join(m.v2, rel)
                continue
            for c in ctrls.split(","):
                point = m.v1.get(c)
                if point:
                    v1[c] = os.path.join(point, rel)
    return Cgroup(v1, v2)


def expected(m: Mounts, path: str) -> Cgroup:
    """Where a runtime puts a container whose ``cgroupsPath`` is ``path`` (cgroupfs manager):
    the path under every v1 controller, and under the cgroup2 mount; only existing directories
    are kept (a hybrid host has both; crun, which lamina runs with the cgroup2 mount hidden, made
    only the v1 ones)."""
    rel = path.lstrip("/")
    v1 = {c: os.path.join(p, rel) for c, p in m.v1.items() if not c.startswith("name=")}
    v1 = {c: d for c, d in v1.items() if os.path.isdir(d)}
    v2 = os.path.join(m.v2, rel) if m.v2 else None
    if v2 is not None and not os.path.isdir(v2):
        v2 = None
    return Cgroup(v1, v2)


def read_text(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _int(path: str | None) -> int | None:
    s = read_text(path)
    if s is None:
        return None
    try:
        return int(s.split()[0])
    except (ValueError, IndexError):
        return None


def _keyed(path: str | None) -> dict[str, int]:
    """A flat keyed file (``cpu.stat``, ``memory.stat``, ``memory.events``) as a dict."""
    s = read_text(path)
    out: dict[str, int] = {}
    for line in (s or "").splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            continue
    return out


def _file(d: str | None, name: str) -> str | None:
    return os.path.join(d, name) if d else None


class Stats(Record):
    """One sample of a container's usage; None where this machine does not say."""

    __slots__ = ("cpu_ns", "memory", "memory_limit", "memory_cache", "pids", "pids_limit",
                 "throttled_periods", "oom_kills", "version")
    cpu_ns: int | None
    memory: int | None
    memory_limit: int | None  # None: no limit
    memory_cache: int | None  # inactive file pages, which ``docker stats`` subtracts from usage
    pids: int | None
    pids_limit: int | None  # None: no limit
    throttled_periods: int | None
    oom_kills: int | None
    version: str  # "v1" or "v2": which hierarchy the numbers came from

    @property
    def memory_used(self) -> int | None:
        """Usage as ``docker stats`` shows it: without the inactive page cache."""
        if self.memory is None:
            return None
        return max(0, self.memory - (self.memory_cache or 0))


def stats(cg: Cgroup) -> Stats:
    """Read a sample from the container's cgroup files (v1 controllers first, then v2)."""
    v1 = bool(cg.v1.get("memory") or cg.v1.get("cpuacct"))
    if v1:
        mem = cg.v1.get("memory")
        limit = _int(_file(mem, "memory.limit_in_bytes"))
        mstat = _keyed(_file(mem, "memory.stat"))
        oom = _keyed(_file(mem, "memory.oom_control"))
        cpu = cg.v1.get("cpu") or cg.v1.get("cpuacct")
        return Stats(
            cpu_ns=_int(_file(cg.v1.get("cpuacct"), "cpuacct.usage")),
            memory=_int(_file(mem, "memory.usage_in_bytes")),
            memory_limit=None if limit is None or limit >= UNLIMITED_V1 else limit,
            memory_cache=mstat.get("total_inactive_file", mstat.get("inactive_file")),
            pids=_int(_file(cg.v1.get("pids"), "pids.current")),
            pids_limit=_int(_file(cg.v1.get("pids"), "pids.max")),
            throttled_periods=_keyed(_file(cpu, "cpu.stat")).get("nr_throttled"),
            oom_kills=oom.get("oom_kill"),
            version="v1",
        )
    d = cg.v2
    cpu = _keyed(_file(d, "cpu.stat"))
    mstat = _keyed(_file(d, "memory.stat"))
    usec = cpu.get("usage_usec")
    return Stats(
        cpu_ns=usec * 1000 if usec is not None else None,
        memory=_int(_file(d, "memory.current")),
        memory_limit=_int(_file(d, "memory.max")),  # "max" does not parse: None
        memory_cache=mstat.get("inactive_file"),
        pids=_int(_file(d, "pids.current")),
        pids_limit=_int(_file(d, "pids.max")),
        throttled_periods=cpu.get("nr_throttled"),
        oom_kills=_keyed(_file(d, "memory.events")).get("oom_kill"),
        version="v2",
    )


def frozen(cg: Cgroup) -> bool | None:
    """Whether the freezer holds the cgroup (v1 ``freezer.state``, v2 ``cgroup.events``)."""
    state = read_text(_file(cg.v1.get("freezer"), "freezer.state"))
    if state is not None:
        return state == "FROZEN"
    events = _keyed(_file(cg.v2, "cgroup.events"))
    if "frozen" in events:
        return events["frozen"] == 1
    return None


def wait_frozen(cg: Cgroup, want: bool = True, timeout: float = 5.0) -> bool | None:
    """Wait until the freezer says ``want`` (or ``timeout`` passes); returns the last state. The
    v1 freezer goes through FREEZING, and a runtime may return from ``pause`` before it is
    FROZEN (crun does): Docker's pause returns once the processes are stopped, so lamina waits."""
    deadline = time.monotonic() + timeout
    while True:
        state = frozen(cg)
        if state is None or state == want or time.monotonic() > deadline:
            return state
        time.sleep(0.005)


class OOMWatch:
    """Notices the kernel's OOM killer in a container's memory cgroup, however fast the
    container dies (its cgroup is gone by the time a runtime's ``run`` returns).

    ``OOMWatch(m, path)`` creates the memory cgroup the runtime will use (``cgroupsPath``; a
    runtime takes an existing cgroup as it is) and registers before the container exists:

    - v1: an eventfd on ``memory.oom_control`` (``cgroup.event_control``). The kernel signals it
      when the memcg runs out of memory (before the kill; containerd reports exactly this as the
      OOM event) and once more when the cgroup is removed. A signal read while the cgroup exists
      is an OOM; signals read after it is gone are counted, and two or more of them mean an OOM
      happened too (the removal accounts for one only).
    - v2: ``memory.events``, which the kernel flags with POLLPRI when a counter changes; read at
      each flag (best effort: a kill right before removal can be missed).

    ``fd`` and ``events`` go into the caller's poll set; ``check`` on each wake; ``oom_killed``
    at the end. ``created`` says whether the directory was made here (remove it with
    ``discard`` if the runtime never ran).
    """

    GRACE = 0.1  # seconds to wait for the removal's signal when one signal is unexplained

    def __init__(self, m: Mounts, path: str) -> None:
        self.kills = 0
        self.fd = -1
        self.events = 0
        self._counter = -1
        self._unexplained = 0  # signals seen after the cgroup was gone
        self.events_seen = 0  # signals seen while it existed: the memcg was out of memory
        self.created = False
        rel = path.lstrip("/")
        self.v1 = "memory" in m.v1
        self.dir = os.path.join(m.v1["memory"], rel) if self.v1 else os.path.join(m.v2, rel) if m.v2 else None
        if self.dir is None:
            return
        try:
            if not os.path.isdir(self.dir):
                os.makedirs(self.dir, exist_ok=True)
                self.created = True
            if self.v1:
                self._counter = os.open(os.path.join(self.dir, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
                self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
                with open(os.path.join(self.dir, "cgroup.event_control"), "w", encoding="ascii") as f:
                    f.write(f"{self.fd} {self._counter}")
                self.events = 0x001  # POLLIN
            else:
                self._counter = os.open(os.path.join(self.dir, "memory.events"), os.O_RDONLY | os.O_CLOEXEC)
                self.fd = self._counter
                self.events = 0x002 | 0x008  # POLLPRI | POLLERR
        except OSError:
            self.close()

    def _read_counter(self) -> bool:
        try:
            text = os.pread(self._counter, 4096, 0).decode("ascii", errors="replace")
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                self.kills = max(self.kills, int(value))
        return True

    def check(self) -> bool:
        """Take what the kernel signalled; False once there is nothing more to watch."""
        if self._counter < 0:
            return False
        n = 0
        if self.v1:
            try:
                n = os.eventfd_read(self.fd)
            except (BlockingIOError, OSError):
                n = 0
        alive = self._read_counter()
        if alive:
            self.events_seen += n  # v1 signals while the cgroup lives are OOM events (containerd's rule)
        else:
            self._unexplained += n
        return alive

    def oom_killed(self) -> bool:
        """Whether the OOM killer struck (call when the container is over)."""
        self.check()
        if self.kills > 0 or self.events_seen > 0 or self._unexplained >= 2:
            return True
        if self.v1 and self._unexplained == 1:
            # one signal after the removal: the removal's own, or an OOM whose removal signal
            # is still on its way; the next signal, if it comes, settles it
            import select

            p = select.poll()
            p.register(self.fd, select.POLLIN)
            if p.poll(self.GRACE * 1000):
                self.check()
            return self._unexplained >= 2
        return False

    def discard(self) -> None:
        """Remove the cgroup made here (the runtime never used it)."""
        self.close()
        if self.created and self.dir:
            try:
                os.rmdir(self.dir)
            except OSError:
                pass

    def close(self) -> None:
        for fd in {self.fd, self._counter}:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fd = self._counter = -1


def swap_limit_supported(m: Mounts | None = None) -> bool:
    """Whether a memory limit can also cap swap (v1 ``memory.memsw.*`` needs swap accounting;
    v2 has ``memory.swap.max`` when swap accounting is on)."""
    m = m or mounts()
    if "memory" in m.v1:
        return os.path.exists(os.path.join(m.v1["memory"], "memory.memsw.limit_in_bytes"))
    if m.v2:
        try:
            own = of_process(os.getpid(), m).v2
        except OSError:
            return False
        return own is not None and os.path.exists(os.path.join(own, "memory.swap.max"))
    return False


def host_memory() -> int | None:
    """Total RAM, shown as the limit of a container without one (as ``docker stats`` does)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
