"""``lamina ps [-a] [-q] [--format json]``: list containers, newest first, like ``docker ps``.
Without ``-a`` only running containers are listed (none run yet: containers are ``created``)."""

from __future__ import annotations

import argparse

from lamina.cli import output

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Container, Store

HEADERS = ("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")
ACTIVE = ("running", "paused")


def register(sub: Any) -> None:
    p = sub.add_parser("ps", help="list containers", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default: running only)")
    p.add_argument("-q", "--quiet", action="store_true", help="only show container IDs")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate IDs and commands")
    p.set_defaults(run=run)


def command_of(c: "Container") -> str:
    import shlex

    argv = list(c.config.get("Entrypoint") or []) + list(c.config.get("Cmd") or [])
    return " ".join(shlex.quote(a) if a else "''" for a in argv)


def status_of(c: "Container", st: Any = None, now: float | None = None) -> str:
    """Docker's STATUS column: ``Created``, ``Up 5 seconds``, ``Up 2 minutes (Paused)``,
    ``Exited (0) 3 seconds ago``; ``st`` is the runtime's state (runtime.State)."""
    import time

    if st is None:
        return {"created": "Created", "running": "Up", "paused": "Up (Paused)"}.get(c.state, c.state.capitalize())
    now = time.time() if now is None else now
    if st.Status in ACTIVE and getattr(st, "Restarting", False):
        return f"Restarting ({st.ExitCode}) {output.human_duration(max(0.0, now - st.FinishedAt / 1e9))} ago"
    if st.Status in ACTIVE:
        up = "Up " + output.human_duration(max(0.0, now - st.StartedAt / 1e9))
        health = (getattr(st, "Health", None) or {}).get("Status")
        if health:
            up += " (health: starting)" if health == "starting" else f" ({health})"
        return up + (" (Paused)" if st.Status == "paused" else "")
    if st.Status == "exited":
        if not st.FinishedAt:
            return f"Exited ({st.ExitCode})"
        return f"Exited ({st.ExitCode}) {output.human_duration(max(0.0, now - st.FinishedAt / 1e9))} ago"
    return "Created"


def rows(store: "Store", all_: bool) -> list[dict[str, Any]]:
    import runtime as rc

    out = []
    # containers whose monitor died, or that exited unseen, are recorded first
    for c, st in rc.list_reconciled(store):
        if not all_ and c.state not in ACTIVE:
            continue
        out.append(
            {
                "ID": c.id,
                "Name": c.name,
                "Image": c.config.get("Image") or (str(c.image_id) if c.image_id else ""),
                "ImageID": str(c.image_id) if c.image_id else None,
                "Command": command_of(c),
                "Created": output.rfc3339(c.created),
                "State": c.state,
                "Status": status_of(c, st),
                "_created": c.created,
            }
        )
    return out


def run(args: argparse.Namespace, store: "Store") -> int:
    listing = rows(store, args.all)
    if args.quiet:
        output.print_ids((r["ID"] for r in listing), args.no_trunc)
        return 0
    if args.format == "json":
        output.print_rows_json(listing)
        return 0
    output.table(
        HEADERS,
        (
            (
                r["ID"] if args.no_trunc else output.short_id(r["ID"]),
                r["Image"],
                '"' + (r["Command"] if args.no_trunc else output.ellipsis(r["Command"], 20)) + '"',
                output.ago(r["_created"]),
                r["Status"],
                r["Name"],
            )
            for r in listing
        ),
    )
    return 0
