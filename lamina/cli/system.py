"""``lamina system df | prune [-f] | check [--quick]``: the store as a whole.

- ``df``: how much space images, containers, volumes and the content store take, and what is
  reclaimable.
- ``prune``: remove images without a name or container, then layers and blobs nothing needs
  (``--volumes``: and anonymous volumes no container uses). Asks first unless ``-f``.
- ``check``: verify every blob against its digest and the metadata against the driver's data;
  prints ``ok``, or lists each problem and exits 6 (corrupt). Normal states worth knowing (a
  resumable partial download, an operation in flight) follow as ``info:`` lines, exit 0.
"""

from __future__ import annotations

import argparse
import sys

from lamina.cli import output

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("system", help="disk usage, prune, consistency check",
                       description=(__doc__ or "").split("\n\n")[0])
    ssub = p.add_subparsers(dest="system_command", metavar="SUBCOMMAND", required=True)
    df = ssub.add_parser("df", help="show disk usage")
    df.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    df.set_defaults(run=run_df)
    prune = ssub.add_parser("prune", help="remove unused images, layers and blobs")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    prune.add_argument("--volumes", action="store_true", help="also remove anonymous volumes no container uses")
    prune.add_argument("--partials-older-than", metavar="DURATION", default="24h", type=_duration,
                       help="remove partial downloads not written to for this long (default 24h; 90m, 3600s)")
    prune.add_argument("--all-partials", action="store_true",
                       help="remove every partial download no pull is writing, whatever its age")
    prune.set_defaults(run=run_prune)
    check = ssub.add_parser("check", help="verify blobs and metadata; exit 6 if damaged")
    check.add_argument("--quick", action="store_true", help="skip re-hashing blobs (metadata only)")
    check.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    check.set_defaults(run=run_check)


def _duration(text: str) -> float:
    """``24h``, ``90m``, ``3600s``, ``3600`` -> seconds (argparse turns ValueError into a usage error)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    mult = units.get(t[-1:], None)
    num = t[:-1] if mult is not None else t
    value = float(num)  # ValueError for garbage
    if value < 0 or value != value:
        raise ValueError(text)
    return value * (mult or 1)


# ---- df ---------------------------------------------------------------------------------------
def usage(store: "Store") -> dict[str, Any]:
    """The numbers ``df`` shows, with stable keys (also its JSON output)."""
    raw = store.df()
    containers = store.containers.list()
    active_images = {c.image_id for c in containers if c.image_id is not None}
    layer_size: dict[str, int] = {str(layer.chain_id): layer.size for layer in store.layers.list()}
    used_by_active: set[str] = set()
    for img in store.images.list():
        if img.id in active_images:
            used_by_active |= {str(layer.chain_id) for layer in store.layers.stack(img.top_layer)}
    running = [c for c in containers if c.state in ("running", "paused")]
    container_sizes = {c.id: _size_or_zero(store, c) for c in containers}
    images_size = sum(layer_size.values())
    return {
        "Images": {
            "Total": raw["images"]["count"],
            "Active": len(active_images),
            "Size": images_size,
            "Reclaimable": sum(s for k, s in layer_size.items() if k not in used_by_active),
        },
        "Containers": {
            "Total": len(containers),
            "Active": len(running),
            "Size": sum(container_sizes.values()),
            "Reclaimable": sum(s for cid, s in container_sizes.items() if cid not in {c.id for c in running}),
        },
        "Blobs": {
            "Total": raw["blobs"]["count"],
            "Active": None,
            "Size": raw["blobs"]["size"],
            "Reclaimable": None,
        },
        "Layers": {
            "Total": raw["layers"]["count"],
            "Active": None,
            "Size": raw["layers"]["size"],
            "Reclaimable": raw["layers"]["reclaimable"],
        },
        "Volumes": _volume_usage(store),
        "Partials": {
            "Total": raw["partials"]["count"],
            "Active": None,
            "Size": raw["partials"]["size"],
            "Reclaimable": raw["partials"]["reclaimable"],
        },
        "Driver": {"Name": store.driver_name, "Status": raw.get("driver", {})},
    }


def _volume_usage(store: "Store") -> dict[str, Any]:
    vols = store.volumes.list()
    used = store.volumes.in_use()
    sizes = {v.name: store.volumes.size(v.name) for v in vols}
    return {"Total": len(vols), "Active": sum(1 for v in vols if v.name in used), "Size": sum(sizes.values()),
            "Reclaimable": sum(s for n, s in sizes.items() if n not in used)}


def _size_or_zero(store: "Store", c: Any) -> int:
    from graph.errors import LaminaError

    try:
        return store.containers.size(c)
    except LaminaError:  # a damaged container still lets df show the rest; check reports it
        return 0


def _reclaim(r: int | None, total: int) -> str:
    if r is None:
        return "-"
    pct = f" ({round(100 * r / total)}%)" if total else ""
    return output.human_size(r) + pct


def run_df(args: argparse.Namespace, store: "Store") -> int:
    u = usage(store)
    if args.format == "json":
        output.print_json(u)
        return 0
    rows = []
    for kind in ("Images", "Containers", "Volumes", "Layers", "Blobs", "Partials"):
        x = u[kind]
        rows.append(
            (
                "Local Volumes" if kind == "Volumes" else kind,  # Docker's name for the row
                x["Total"],
                "-" if x["Active"] is None else x["Active"],
                output.human_size(x["Size"]),
                _reclaim(x["Reclaimable"], x["Size"]),
            )
        )
    output.table(("TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"), rows)
    print(f"\nDriver: {u['Driver']['Name']}")
    return 0


# ---- prune ------------------------------------------------------------------------------------
WARNING = """WARNING! This will remove:
  - all images without a name that no container uses
  - all layers and blobs that no image or container needs
  - driver data that the store has no record of
  - partial downloads older than the limit (--partials-older-than, --all-partials)
{volumes}Are you sure you want to continue? [y/N] """


def run_prune(args: argparse.Namespace, store: "Store") -> int:
    from graph.errors import LaminaError

    if not args.force:
        sys.stderr.write(WARNING.format(volumes="  - all anonymous volumes not used by at least one container\n"
                                            if args.volumes else ""))
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line.endswith("\n") or not sys.stdin.isatty():
            sys.stderr.write("\n")  # no terminal echoed the answer: end the prompt's line
        answer = line.strip().lower()
        if answer not in ("y", "yes"):
            raise LaminaError("system prune has been cancelled")
    rep = store.prune(partial_age=None if args.all_partials else args.partials_older_than)
    vols, vol_bytes = store.volumes.prune() if args.volumes else ([], 0)
    if vols:
        print("Deleted Volumes:")
        for name in vols:
            print(name)
        print()
    for title, items in (
        ("Deleted Images", rep.images),
        ("Deleted Layers", rep.layers),
        ("Deleted Blobs", rep.blobs),
        ("Deleted Driver Data", rep.orphans),
        ("Deleted Partial Downloads", rep.partials),
    ):
        if items:
            print(f"{title}:")
            for item in items:
                print(f"deleted: {item}")
            print()
    print(f"Total reclaimed space: {output.human_size(rep.reclaimed + vol_bytes)}")
    return 0


# ---- check ------------------------------------------------------------------------------------
def run_check(args: argparse.Namespace, store: "Store") -> int:
    """Damage exits 6; information (a resumable download, an operation in flight) is shown as
    ``info: ...`` lines and does not fail the check: a healthy store checks clean."""
    from graph.errors import Corrupt

    problems = store.check(verify_blobs=not args.quick)
    notes = store.notes()
    if args.format == "json":
        output.print_json(
            [{"Kind": p.kind, "Object": str(p.object), "Detail": p.detail, "Severity": "problem"} for p in problems]
            + [{"Kind": n.kind, "Object": str(n.object), "Detail": n.detail, "Severity": "info"} for n in notes]
        )
    else:
        for p in problems:
            print(output.cell(str(p)))
        if not problems:
            print("ok")
        for n in notes:
            print(output.cell(f"info: {n}"))
    if problems:
        sys.stdout.flush()
        raise Corrupt(f"store {store.root} has {len(problems)} problem{'s' if len(problems) != 1 else ''}")
    return 0
