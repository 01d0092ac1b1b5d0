"""JSON as the image formats need it: strict when reading hostile bytes (``loads_strict``: UTF-8
only, no duplicate keys, no NaN/Infinity, no lone surrogates, bounded size and nesting; two
readers must never see two different documents), canonical when writing (``canonical_json``:
the same object always gives the same bytes, escaped as Go's encoding/json does). Used by
``graph.oci.formats`` and by archive loading (``oci-layout``, ``manifest.json``)."""

from __future__ import annotations

import json
import re
from typing import Any

from graph.errors import InvalidInput

_MAX_DEPTH = 64  # JSON nesting; real documents stay under 8



class _Problem(Exception):
    """Internal: a problem found while decoding; turned into InvalidInput with context."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Problem(f"duplicate key {short(k)}")
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    raise _Problem(f"{name} is not JSON")


def loads_strict(raw: bytes, what: str, limit: int) -> Any:
    """Strict JSON decode of ``raw``: UTF-8 only, no duplicate keys, no NaN/Infinity, no lone
    surrogates, bounded size and nesting. Raises ``InvalidInput("invalid JSON in <what>: ...")``."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise InvalidInput(f"invalid {what}: expected bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) > limit:
        raise InvalidInput(f"invalid {what}: {len(raw)} bytes is over the {limit}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"invalid JSON in {what}: not UTF-8 (byte {e.start})") from None
    try:
        doc = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"invalid JSON in {what}: {e.msg} (line {e.lineno} column {e.colno})") from None
    except _Problem as e:
        raise InvalidInput(f"invalid JSON in {what}: {e}") from None
    except RecursionError:
        raise InvalidInput(f"invalid JSON in {what}: nested too deeply") from None
    _check_tree(doc, what)
    return doc


def _check_tree(doc: Any, what: str) -> None:
    """Bound nesting and refuse strings that are not valid Unicode (``"\\ud800"`` decodes to a
    lone surrogate that cannot be encoded again, so it would fail far from here)."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise InvalidInput(f"invalid JSON in {what}: nested more than {_MAX_DEPTH} levels")
        if isinstance(node, dict):
            for k, v in node.items():
                _check_str(k, what)
                stack.append((v, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, str):
            _check_str(node, what)


def _check_str(s: str, what: str) -> None:
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"invalid JSON in {what}: string with a lone surrogate escape") from None


_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def canonical_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON with the dict's own key order, escaped the way Go's encoding/json
    does (``<`` ``>`` ``&`` U+2028 U+2029), so documents lamina writes look like Docker's and the
    same object always gives the same bytes. Callers fix key order by building dicts in order."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # These characters never occur in JSON syntax outside strings, so this only touches strings.
    return _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group(0)], text).encode("utf-8")


def short(v: Any) -> str:
    """``repr(v)`` cut to 80 characters, for one-line error messages about hostile input."""
    r = repr(v)
    return r if len(r) <= 80 else r[:76] + "...'"
