"""``lamina stats [--no-stream] [--format json] [CONTAINER...]``: CPU, memory and process use of
running containers (all of them when none is named), read from their cgroups (v1 or v2,
whichever this machine has). CPU % is the share of one CPU used between two samples half a
second apart; memory is the usage without inactive page cache, against the limit (the
machine's RAM when there is none). Without ``--no-stream`` the table is redrawn every second
until interrupted."""

from __future__ import annotations

import argparse
import sys
import time

from lamina.cli import output

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store

HEADERS = ("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS")
INTERVAL = 0.5


def register(sub: Any) -> None:
    p = sub.add_parser("stats", help="show containers' resource use", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    p.add_argument("containers", nargs="*", metavar="CONTAINER", help="container name, ID or ID prefix")
    p.set_defaults(run=run)


def _bytes(n: float) -> str:
    """Binary units as ``docker stats`` shows memory: ``1.5MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n}"


def _sample(store: "Store", names: list[str]) -> dict[str, tuple[Any, Any]]:
    import runtime

    out = {}
    for name in names:
        c, s = runtime.stats(store, name)
        if s is not None:
            out[c.id] = (c, s)
    return out


def rows(store: "Store", names: list[str], interval: float = INTERVAL) -> list[dict[str, Any]]:
    """One row per running container: raw numbers and the CPU share over ``interval``."""
    from runtime import cgroups

    first = _sample(store, names)
    t0 = time.monotonic()
    time.sleep(interval)
    second = _sample(store, names)
    dt = time.monotonic() - t0
    host_mem = cgroups.host_memory()
    out = []
    for cid, (c, s) in second.items():
        before = first.get(cid, (None, None))[1]
        cpu = None
        if before is not None and s.cpu_ns is not None and before.cpu_ns is not None:
            cpu = 100.0 * (s.cpu_ns - before.cpu_ns) / (dt * 1e9)
        limit = s.memory_limit or host_mem
        used = s.memory_used
        out.append({
            "ID": cid, "Name": c.name, "CPUPerc": cpu, "CPUNanoseconds": s.cpu_ns,
            "MemUsage": used, "MemLimit": limit, "MemLimitSet": s.memory_limit is not None,
            "MemPerc": 100.0 * used / limit if used is not None and limit else None,
            "Pids": s.pids, "PidsLimit": s.pids_limit, "ThrottledPeriods": s.throttled_periods,
            "OOMKills": s.oom_kills, "Cgroup": s.version,
        })
    return out


def _table(listing: list[dict[str, Any]]) -> None:
    def pct(v: float | None) -> str:
        return "--" if v is None else f"{v:.2f}%"

    output.table(HEADERS, (
        (output.short_id(r["ID"]), r["Name"], pct(r["CPUPerc"]),
         f"{_bytes(r['MemUsage'] or 0)} / {_bytes(r['MemLimit'] or 0)}", pct(r["MemPerc"]),
         "--" if r["Pids"] is None else r["Pids"])
        for r in listing
    ))


def run(args: argparse.Namespace, store: "Store") -> int:
    import runtime

    def names() -> list[str]:
        if args.containers:
            return list(args.containers)
        runtime.reconcile_all(store)
        return [c.id for c in store.containers.list() if c.state in ("running", "paused")]

    if args.no_stream or args.format == "json":
        listing = rows(store, names())
        if args.format == "json":
            output.print_json(listing)
        else:
            _table(listing)
        return 0
    terminal = sys.stdout.isatty()
    while True:
        listing = rows(store, names(), interval=1.0)
        if terminal:
            sys.stdout.write("\x1b[2J\x1b[H")
        _table(listing)
        sys.stdout.flush()
