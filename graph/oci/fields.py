"""Field checks shared by the image-format parsers: typed reads of a JSON object's keys with
one-line errors that name the document and the field (``bad``), int64 sizes, media types,
RFC 3339 times."""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timezone
from typing import Any, Mapping

from graph.errors import InvalidInput
from graph.oci.strictjson import short as _short

INT64_MAX = (1 << 63) - 1

_MEDIA_TYPE_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:Z|[+-]([0-9]{2}):([0-9]{2}))"
)



def bad(what: str, where: str, problem: str) -> InvalidInput:
    return InvalidInput(f"invalid {what}: {where}: {problem}" if where else f"invalid {what}: {problem}")


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def get_str(d: Mapping[str, Any], key: str, what: str, where: str, *, required: bool = False) -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise bad(what, join(where, key), "missing")
        return None
    if not isinstance(v, str):
        raise bad(what, join(where, key), f"must be a string, got {type(v).__name__}")
    return v


def get_str_list(d: Mapping[str, Any], key: str, what: str, where: str) -> tuple[str, ...]:
    v = d.get(key)
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise bad(what, join(where, key), "must be a list of strings")
    return tuple(v)


def get_str_map(d: Mapping[str, Any], key: str, what: str, where: str) -> dict[str, str]:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise bad(what, join(where, key), "must be an object of strings")
    return dict(v)


def get_int64(d: Mapping[str, Any], key: str, what: str, where: str) -> int:
    v = d.get(key)
    if v is None:
        raise bad(what, join(where, key), "missing")
    # bool is an int in Python, and 1.0 would pass == 1; Go's int64 accepts neither.
    if type(v) is not int or v < 0 or v > INT64_MAX:
        raise bad(what, join(where, key), f"must be a non-negative 64-bit integer, got {_short(v)}")
    return v


def media_type_ok(mt: Any) -> bool:
    return isinstance(mt, str) and _MEDIA_TYPE_RE.fullmatch(mt) is not None


def check_rfc3339(s: str, what: str, where: str) -> None:
    """Go's time.Time (which Docker unmarshals ``created`` into) accepts RFC 3339 only."""
    m = _RFC3339_RE.fullmatch(s)
    ok = m is not None
    if m is not None:
        y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
        ok = (
            1 <= mo <= 12
            and 1 <= d <= calendar.monthrange(max(y, 1), mo)[1]
            and h <= 23
            and mi <= 59
            and sec <= 59
            and (m.group(7) is None or (int(m.group(7)) <= 23 and int(m.group(8)) <= 59))
        )
    if not ok:
        raise bad(what, where, f"not an RFC 3339 time: {_short(s)}")


def rfc3339_now() -> str:
    """The current UTC time as RFC 3339 with microseconds (``2024-05-01T12:00:00.123456Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
