"""``graph.oci.strictjson``: hostile JSON refused with one-line messages; canonical JSON stable."""

from __future__ import annotations

import pytest

from graph import InvalidInput
from graph.oci.strictjson import canonical_json, loads_strict


@pytest.mark.parametrize("raw, why", [
    (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    (b'{"a": NaN}', "NaN is not JSON"),
    (b'{"a": Infinity}', "Infinity is not JSON"),
    (b'"\\ud800"', "lone surrogate"),
    (b"\xff", "not UTF-8"),
    (b"[" * 70 + b"]" * 70, "nested more than 64"),
    (b"{", "invalid JSON in doc"),
])
def test_hostile_json_is_refused(raw: bytes, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        loads_strict(raw, "doc", 1 << 20)


def test_size_limit_and_type() -> None:
    with pytest.raises(InvalidInput, match="over the 4-byte limit"):
        loads_strict(b'"abcd"', "doc", 4)
    with pytest.raises(InvalidInput, match="expected bytes"):
        loads_strict("{}", "doc", 10)  # type: ignore[arg-type]
    assert loads_strict(b'{"b": [1, "x"]}', "doc", 100) == {"b": [1, "x"]}


def test_canonical_json_is_compact_and_escapes_like_go() -> None:
    assert canonical_json({"z": 1, "a": "<&>\u2028é"}) == b'{"z":1,"a":"\\u003c\\u0026\\u003e\\u2028\xc3\xa9"}'
