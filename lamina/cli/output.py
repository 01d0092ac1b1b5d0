"""How the CLI shows things: Docker-like tables, sizes and ages for people, JSON for machines.

Tables follow the docker CLI's tabwriter (minimum column width 10, three spaces of padding, the last
column unpadded) so scripts and eyes used to ``docker images`` find the same shape. ``--format json``
prints one JSON array whose objects always have the same keys, in a fixed order.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any, TextIO

MIN_WIDTH = 10
PADDING = 3


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], out: TextIO | None = None) -> None:
    """Write rows under headers, columns aligned like the docker CLI's."""
    out = out if out is not None else sys.stdout
    cells = [list(map(str, headers))] + [[cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        parts = [v.ljust(max(MIN_WIDTH, widths[i] + PADDING)) for i, v in enumerate(r[:-1])]
        out.write(("".join(parts) + r[-1]).rstrip() + "\n")


def cell(v: object) -> str:
    s = "" if v is None else str(v)
    # one row is one line, whatever a name or command contains
    return s.replace("\n", "\\n").replace("\t", "\\t")


def print_json(obj: Any, out: TextIO | None = None, indent: int = 2) -> None:
    import json

    out = out if out is not None else sys.stdout
    out.write(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


_UNITS = ["B", "kB", "MB", "GB", "TB", "PB"]


def human_size(n: float) -> str:
    """Decimal units with three significant digits, as ``docker images`` shows sizes:
    ``0B``, ``512B``, ``12.3kB``, ``1.5MB``."""
    size = float(n)
    i = 0
    while i < len(_UNITS) - 1 and float(f"{size:.3g}") >= 1000:
        size /= 1000
        i += 1
    return f"{size:.3g}{_UNITS[i]}"


def human_duration(seconds: float) -> str:
    """docker's ``units.HumanDuration``: "Less than a second", "About a minute", "3 weeks"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def ago(when: float | None, now: float | None = None) -> str:
    """``2 minutes ago``; ``N/A`` when the time is unknown."""
    if when is None:
        return "N/A"
    now = time.time() if now is None else now
    return human_duration(max(0.0, now - when)) + " ago"


def parse_time(s: object) -> float | None:
    """An RFC 3339 timestamp from an image config (``2024-01-02T03:04:05.123456789Z``) as epoch
    seconds; None when absent or unreadable (configs from the wild are not always right)."""
    import datetime as _dt

    if not isinstance(s, str) or not s:
        return None
    txt = s.strip()
    if txt.endswith(("Z", "z")):
        txt = txt[:-1] + "+00:00"
    # Python takes at most 6 fractional digits; Go writes up to 9
    head, dot, frac = txt.partition(".")
    if dot:
        digits = "".join(ch for ch in frac if ch.isdigit())
        rest = frac[len(digits):]
        txt = head + "." + (digits[:6] or "0") + rest
    try:
        d = _dt.datetime.fromisoformat(txt)
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return d.timestamp()


def rfc3339(when: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC (``2024-01-02T03:04:05.123456Z``), for JSON output."""
    import datetime as _dt

    if when is None:
        return None
    d = _dt.datetime.fromtimestamp(when, tz=_dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def short_id(id_: str) -> str:
    """The 12 hex digits Docker shows for an image or container ID."""
    return id_.removeprefix("sha256:")[:12]


def print_ids(ids: Iterable[str], full: bool, out: TextIO | None = None) -> None:
    """``-q``: one ID a line, each once, in order; the short form unless ``full`` (``--no-trunc``)."""
    for id_ in dict.fromkeys(ids):
        print(id_ if full else short_id(id_), file=out or sys.stdout)


def print_rows_json(rows: Iterable[Mapping[str, Any]], out: TextIO | None = None) -> None:
    """``--format json`` of listing rows: their keys but the ``_private`` ones (kept for sorting)."""
    print_json([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], out)


def ellipsis(s: str, width: int) -> str:
    """Cut ``s`` to ``width`` characters, the last one an ellipsis (``docker ps`` COMMAND)."""
    return s if len(s) <= width else s[: width - 1] + "…"
