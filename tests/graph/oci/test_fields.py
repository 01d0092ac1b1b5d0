"""``graph.oci.fields``: the typed reads every image-format parser is built on. Go's decoder is
the reference (Docker and containerd read these documents with it): an int64 is not a bool nor
a float, a time is RFC 3339, and every refusal names the document and the field in one line."""

from __future__ import annotations

from typing import Any

import pytest

from graph import InvalidInput
from graph.oci import fields as f


def test_bad_and_join_name_the_place() -> None:
    assert str(f.bad("manifest", "layers[0].size", "missing")) == "invalid manifest: layers[0].size: missing"
    assert str(f.bad("config", "", "must be an object")) == "invalid config: must be an object"
    assert f.join("", "config") == "config" and f.join("config", "Env") == "config.Env"


def test_get_str() -> None:
    d = {"a": "x", "n": None, "i": 3}
    assert f.get_str(d, "a", "w", "") == "x"
    assert f.get_str(d, "missing", "w", "") is None and f.get_str(d, "n", "w", "") is None  # null is absent
    with pytest.raises(InvalidInput, match="invalid w: o.missing: missing"):
        f.get_str(d, "missing", "w", "o", required=True)
    with pytest.raises(InvalidInput, match="invalid w: o.i: must be a string, got int"):
        f.get_str(d, "i", "w", "o")


@pytest.mark.parametrize("value, ok", [
    (0, True), (1, True), (f.INT64_MAX, True),
    (f.INT64_MAX + 1, False), (-1, False), (True, False), (False, False), (1.0, False), ("1", False), (None, False),
])
def test_get_int64_is_gos_int64(value: Any, ok: bool) -> None:
    d = {"size": value}
    if ok:
        assert f.get_int64(d, "size", "manifest", "config") == value
    else:
        with pytest.raises(InvalidInput, match="invalid manifest: config.size: (missing|must be a non-negative 64-bit integer)"):
            f.get_int64(d, "size", "manifest", "config")


def test_lists_and_maps_of_strings() -> None:
    assert f.get_str_list({"l": ["a", "b"]}, "l", "w", "") == ("a", "b")
    assert f.get_str_list({}, "l", "w", "") == () and f.get_str_map({}, "m", "w", "") == {}
    assert f.get_str_map({"m": {"k": "v"}}, "m", "w", "") == {"k": "v"}
    for bad in ("a", ["a", 1], {"a": "b"}):
        with pytest.raises(InvalidInput, match="w: l: must be a list of strings"):
            f.get_str_list({"l": bad}, "l", "w", "")
    for bad in (["a"], {"k": 1}, "s"):
        with pytest.raises(InvalidInput, match="w: m: must be an object of strings"):
            f.get_str_map({"m": bad}, "m", "w", "")


@pytest.mark.parametrize("mt, ok", [
    ("application/vnd.oci.image.manifest.v1+json", True),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", True),
    ("text/plain", True),
    ("a/b", True),
    ("application", False), ("/json", False), ("application/", False), ("application/json; charset=utf-8", False),
    ("appl ication/json", False), ("-x/y", False), ("a/" + "b" * 127, True), ("a/" + "b" * 128, False), (None, False), (5, False),
])
def test_media_type_ok(mt: Any, ok: bool) -> None:
    assert f.media_type_ok(mt) is ok


@pytest.mark.parametrize("s", [
    "2024-01-01T00:00:00Z", "2024-02-29T23:59:59Z", "2000-02-29T12:00:00.123456789Z",
    "2024-05-01T12:00:00+02:00", "2024-05-01T12:00:00-23:59", "0001-01-01T00:00:00Z",
])
def test_rfc3339_accepted(s: str) -> None:
    f.check_rfc3339(s, "config", "created")


@pytest.mark.parametrize("s", [
    "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-04-31T00:00:00Z",
    "2024-01-01T24:00:00Z", "2024-01-01T00:60:00Z", "2024-01-01T00:00:60Z", "2024-01-01T00:00:00",
    "2024-01-01 00:00:00Z", "2024-01-01T00:00:00+24:00", "2024-01-01T00:00:00.Z", "2024-1-01T00:00:00Z",
    "", "yesterday", "2024-00-10T00:00:00Z", "2024-01-00T00:00:00Z",
])
def test_rfc3339_refused(s: str) -> None:
    with pytest.raises(InvalidInput, match="invalid config: created: not an RFC 3339 time"):
        f.check_rfc3339(s, "config", "created")


def test_rfc3339_now_is_accepted() -> None:
    now = f.rfc3339_now()
    f.check_rfc3339(now, "config", "created")
    assert now.endswith("Z") and len(now) == len("2024-05-01T12:00:00.123456Z")
