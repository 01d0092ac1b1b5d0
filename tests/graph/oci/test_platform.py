"""``graph.oci.platform.Platform`` beyond parsing (``test_formats.py`` has the ``--platform``
grammar, the host mapping and containerd's matching tables): normalisation as containerd's
``Normalize`` does it, the key two platforms are compared by, the constructor's checks, and the
image-spec JSON form in both directions with one-line refusals."""

from __future__ import annotations

from typing import Any

import pytest

from graph import InvalidInput
from graph.oci.platform import Platform


@pytest.mark.parametrize("a, b", [
    (("linux", "x86_64"), ("linux", "amd64")),
    (("linux", "amd64", "v1"), ("linux", "amd64")),
    (("linux", "aarch64", "v8"), ("linux", "arm64")),
    (("linux", "arm64", "8"), ("linux", "arm64")),
    (("linux", "arm64", "v8.0"), ("linux", "arm64")),
    (("linux", "arm64", "9"), ("linux", "arm64", "v9")),
    (("linux", "arm"), ("linux", "arm", "v7")),
    (("linux", "arm", "7"), ("linux", "arm", "v7")),
    (("linux", "armhf"), ("linux", "arm", "v7")),
    (("linux", "armel"), ("linux", "arm", "v6")),
    (("linux", "i386"), ("linux", "386")),
    (("Linux", "AMD64"), ("linux", "amd64")),
    (("macos", "arm64"), ("darwin", "arm64")),
])
def test_spellings_of_one_platform_share_a_key(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    pa, pb = Platform(*a), Platform(*b)
    assert pa.key() == pb.key() and pa.normalized() == pb.normalized()


@pytest.mark.parametrize("a, b", [
    (("linux", "amd64"), ("linux", "amd64", "v2")),
    (("linux", "arm", "v6"), ("linux", "arm", "v7")),
    (("linux", "arm64"), ("linux", "arm64", "v9")),
    (("linux", "amd64"), ("windows", "amd64")),
    (("linux", "386"), ("linux", "amd64")),
])
def test_different_platforms_differ(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    assert Platform(*a).key() != Platform(*b).key()


def test_normalized_keeps_os_version_and_sorts_features() -> None:
    p = Platform("windows", "x86_64", None, "10.0.17763", ("b", "a", "b"))
    n = p.normalized()
    assert n == Platform("windows", "amd64", None, "10.0.17763", ("a", "b"))
    assert n.normalized() == n  # idempotent
    assert p.key() == ("windows", "amd64", "")


def test_constructor_checks_and_coerces() -> None:
    assert Platform("linux", "amd64", "").variant is None  # "" means no variant
    assert Platform("linux", "amd64", os_features=["x"]).os_features == ("x",)  # type: ignore[arg-type]
    for bad in [dict(os="", architecture="amd64"), dict(os="linux", architecture=""),
                dict(os=None, architecture="amd64"), dict(os="linux", architecture="amd64", variant=7),
                dict(os="linux", architecture="amd64", os_version=10)]:
        with pytest.raises(InvalidInput, match="invalid platform"):
            Platform(**bad)  # type: ignore[arg-type]
    p = Platform("linux", "arm", "v7")
    with pytest.raises(AttributeError):
        p.os = "windows"  # type: ignore[misc]
    assert {p, Platform("linux", "arm", "v7")} == {p}


def test_json_round_trip_and_order() -> None:
    p = Platform("windows", "amd64", "v3", "10.0", ("win32k",))
    doc = p.to_json()
    assert list(doc) == ["architecture", "os", "os.version", "os.features", "variant"]
    assert Platform.from_json(doc) == p
    assert Platform("linux", "amd64").to_json() == {"architecture": "amd64", "os": "linux"}
    # "features" is reserved by the spec: type-checked, then dropped
    assert Platform.from_json({"architecture": "amd64", "os": "linux", "features": ["sse4"]}) == Platform("linux", "amd64")
    assert Platform.from_json({"architecture": "amd64", "os": "linux", "variant": ""}).variant is None


@pytest.mark.parametrize("doc, needle", [
    ([], "platform: must be an object"),
    ({"os": "linux"}, "architecture: missing"),
    ({"architecture": "amd64"}, "os: missing"),
    ({"architecture": "", "os": "linux"}, "must not be empty"),
    ({"architecture": 1, "os": "linux"}, "architecture: must be a string, got int"),
    ({"architecture": "amd64", "os": "linux", "variant": 8}, "variant: must be a string"),
    ({"architecture": "amd64", "os": "linux", "os.features": "x"}, "os.features: must be a list of strings"),
    ({"architecture": "amd64", "os": "linux", "features": [1]}, "features: must be a list of strings"),
    ({"architecture": "amd64", "os": "linux", "os.version": ["10"]}, "os.version: must be a string"),
])
def test_from_json_refusals_name_the_field(doc: Any, needle: str) -> None:
    with pytest.raises(InvalidInput, match="invalid manifest") as ei:
        Platform.from_json(doc, "manifest", "manifests[0].platform")
    msg = str(ei.value)
    assert needle in msg and "manifests[0].platform" in msg and "\n" not in msg
