"""graph/refs.py: Docker's reference grammar and normalisation.

Most tables are taken from distribution/reference's normalize_test.go and reference_test.go,
run through ``parse_reference`` (ParseNormalizedNamed + TagNameOnly), so lamina names images
exactly as ``docker pull`` does. Cases where lamina is deliberately stricter say so.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graph.digest import Digest
from graph.errors import InvalidInput, LaminaError
from graph.oci.reference import (
    Reference,
    image_id_hex_prefix,
    is_full_image_id,
    is_image_id_prefix,
    parse_reference,
)

HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"
FFF = "sha256:" + "f" * 64
DBCC = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"

# --------------------------------------------------------------- normalize_test.go: valid/invalid

VALID_NAMES = [
    # TestValidateReferenceName
    "docker/docker",
    "library/debian",
    "debian",
    "docker.io/docker/docker",
    "docker.io/library/debian",
    "docker.io/debian",
    "index.docker.io/docker/docker",
    "index.docker.io/library/debian",
    "index.docker.io/debian",
    "127.0.0.1:5000/docker/docker",
    "127.0.0.1:5000/library/debian",
    "127.0.0.1:5000/debian",
    "192.168.0.1",
    "192.168.0.1:80",
    "192.168.0.1:8/debian",
    "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    "[fc00::1]:5000/docker",
    "[fc00::1]:5000/docker/docker",
    "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
    "docker.io/" + HEX64,  # a hex path is fine once a host makes it unambiguous
    "Docker/docker",  # uppercase first component: it is a (strange) registry host
    "DOCKER/docker",
    # TestValidateRemoteName
    "docker-rules/docker",
    "docker---rules/docker",
    "doc/docker",
    "d/docker",
    "jess/t",
    "dock__er/docker",
]

INVALID_NAMES = [
    # TestValidateReferenceName
    "https://github.com/docker/docker",
    "docker/Docker",
    "-docker",
    "-docker/docker",
    "-docker.io/docker/docker",
    "docker///docker",
    "docker.io/docker/Docker",
    "docker.io/docker///docker",
    "[fc00::1]",
    "[fc00::1]:5000",
    "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian",
    "[2001:db8:3:4::192.0.2.33]:5000/debian",
    HEX64,
    # TestValidateRemoteName
    "docker-/docker",
    "-docker-/docker",
    "____/____",
    "_docker/_docker",
    "dock..er/docker",
    "dock_.er/docker",
    "dock-.er/docker",
    "docker/",
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_" * 4 + "/docker",
    # reference_test.go TestReferenceParse errors
    "",
    ":justtag",
    "@" + FFF,
    "repo@sha256:" + "f" * 34,
    "validname@invaliddigest:" + "f" * 64,
    "Uppercase:tag",
    "test:5000/Uppercase/lowercase:tag",
    "aa/asdf$$^/aa",
    "[2001:db8::1]",
    "[2001:db8::1]:5000",
    "[2001:db8::1]:tag",
    "[fe80::1%eth0]:5000/repo",
    "[fe80::1%@invalidzone]:5000/repo",
    # lamina's own: whitespace, control characters, trailing newline (Python's $ trap)
    "busybox\n",
    "busybox ",
    " busybox",
    "busy box",
    "busybox:la test",
    "busybox:\x00",
    "busybox:-foo",
    "busybox:.foo",
    "busybox:" + "a" * 129,
    "busybox@sha256:" + "F" * 64,
    "bu\u017fybox",  # a non-ASCII letter that lowercases/normalises into ASCII elsewhere
    "busybox:t\u0430g",  # Cyrillic a in the tag: Python's \w would have accepted it
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names_parse(name: str) -> None:
    r = parse_reference(name)
    assert str(r).startswith(r.name)
    assert parse_reference(str(r)) == r


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_reference(name)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------- TestParseRepositoryInfo

REPO_INFO = [
    # (path, familiar, full, ambiguous, domain)
    ("fooo/bar", "fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar", "docker.io"),
    ("library/ubuntu", "ubuntu", "docker.io/library/ubuntu", "library/ubuntu", "docker.io"),
    ("nonlibrary/ubuntu", "nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu", "", "docker.io"),
    ("other/library", "other/library", "docker.io/other/library", "", "docker.io"),
    ("private/moonbase", "127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase", "", "127.0.0.1:8000"),
    ("privatebase", "127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase", "", "127.0.0.1:8000"),
    ("private/moonbase", "example.com/private/moonbase", "example.com/private/moonbase", "", "example.com"),
    ("privatebase", "example.com/privatebase", "example.com/privatebase", "", "example.com"),
    ("private/moonbase", "example.com:8000/private/moonbase", "example.com:8000/private/moonbase", "", "example.com:8000"),
    ("privatebasee", "example.com:8000/privatebasee", "example.com:8000/privatebasee", "", "example.com:8000"),
    ("library/ubuntu-12.04-base", "ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base",
     "index.docker.io/library/ubuntu-12.04-base", "docker.io"),
    ("library/foo", "foo", "docker.io/library/foo", "docker.io/foo", "docker.io"),
    ("library/foo/bar", "library/foo/bar", "docker.io/library/foo/bar", "", "docker.io"),
    ("store/foo/bar", "store/foo/bar", "docker.io/store/foo/bar", "", "docker.io"),
    ("bar", "Foo/bar", "Foo/bar", "", "Foo"),
    ("bar", "FOO/bar", "FOO/bar", "", "FOO"),
]


@pytest.mark.parametrize(
    "spelling,path,familiar,full,domain",
    [
        (s, path, fam, full, dom)
        for path, fam, full, amb, dom in REPO_INFO
        for s in (fam, full) + ((amb,) if amb else ())
    ],
)
def test_repository_info(spelling: str, path: str, familiar: str, full: str, domain: str) -> None:
    r = parse_reference(spelling, default_tag=False)
    assert r.path == path == r.repository
    assert r.domain == domain
    assert r.name == full == str(r)
    assert r.familiar_name() == familiar == r.familiar()


# --------------------------------------------------------------- TestNormalizedSplitHostname

@pytest.mark.parametrize(
    "s,domain,path",
    [
        ("test.com/foo", "test.com", "foo"),
        ("test_com/foo", "docker.io", "test_com/foo"),
        ("docker/migrator", "docker.io", "docker/migrator"),
        ("test.com:8080/foo", "test.com:8080", "foo"),
        ("test-com:8080/foo", "test-com:8080", "foo"),
        ("foo", "docker.io", "library/foo"),
        ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
        ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
        ("docker.io/foo", "docker.io", "library/foo"),
        ("docker.io/library/foo", "docker.io", "library/foo"),
        ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
        ("localhost/foo", "localhost", "foo"),
        ("localhost:5000/foo/bar", "localhost:5000", "foo/bar"),
        ("[::1]:5000/repo", "[::1]:5000", "repo"),
        ("[2001:db8::]:5000/repo", "[2001:db8::]:5000", "repo"),
        ("[2001:db8::1]/repo", "[2001:db8::1]", "repo"),
        ("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com", "bar/baz/quux"),
        ("b.gcr.io/test.example.com/my-app", "b.gcr.io", "test.example.com/my-app"),
        ("foo/foo_bar.com", "docker.io", "foo/foo_bar.com"),
        ("192.168.1.1/repo", "192.168.1.1", "repo"),
        ("192.168.1.1:5000/repo", "192.168.1.1:5000", "repo"),
    ],
)
def test_split_domain(s: str, domain: str, path: str) -> None:
    r = parse_reference(s)
    assert (r.domain, r.path, r.tag) == (domain, path, "latest")


# --------------------------------------------------------------- tags and digests

@pytest.mark.parametrize(
    "s,full,tag,digest",
    [
        ("busybox", "docker.io/library/busybox:latest", "latest", None),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "1.36", None),
        ("org/x", "docker.io/org/x:latest", "latest", None),
        ("localhost/x", "localhost/x:latest", "latest", None),
        ("host:5000/x", "host:5000/x:latest", "latest", None),
        ("x@" + DBCC, "docker.io/library/x@" + DBCC, None, DBCC),
        ("x:tag@" + DBCC, "docker.io/library/x:tag@" + DBCC, "tag", DBCC),
        ("test.com:5000", "docker.io/library/test.com:5000", "5000", None),  # no '/': a tag
        ("test.com:tag", "docker.io/library/test.com:tag", "tag", None),
        ("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080", "8080", None),
        ("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080", "8080", None),
        ("192.168.1.1:5000", "docker.io/library/192.168.1.1:5000", "5000", None),
        ("lowercase:Uppercase", "docker.io/library/lowercase:Uppercase", "Uppercase", None),
        ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo:5050", "5050", None),
        ("test:5000/repo:tag@" + FFF, "test:5000/repo:tag@" + FFF, "tag", FFF),
        ("[2001:db8::1]:5000/repo:tag@" + FFF, "[2001:db8::1]:5000/repo:tag@" + FFF, "tag", FFF),
        ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com", None),
        ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
         "some-long-tag", None),
        ("busybox:" + "a" * 128, "docker.io/library/busybox:" + "a" * 128, "a" * 128, None),
        ("busybox:_x", "docker.io/library/busybox:_x", "_x", None),
    ],
)
def test_tags_and_digests(s: str, full: str, tag: str | None, digest: str | None) -> None:
    r = parse_reference(s)
    assert str(r) == full
    assert r.tag == tag
    assert r.digest == digest
    if digest is not None:
        assert isinstance(r.digest, Digest)


def test_tag_and_digest_familiar_round_trip() -> None:
    """TestParseReferenceWithTagAndDigest: both kept, familiar form is the input."""
    short = "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
    r = parse_reference(short)
    assert str(r) == "docker.io/library/" + short
    assert r.familiar() == short


def test_default_tag_off_leaves_name_only() -> None:
    r = parse_reference("busybox", default_tag=False)
    assert r.tag is None and r.digest is None
    assert str(r) == "docker.io/library/busybox"
    assert r.familiar() == "busybox"


def test_parse_any_reference_names() -> None:
    """TestParseAnyReference: short hex strings and 63 hex digits are names, 64 is not."""
    assert str(parse_reference("dbcc1", default_tag=False)) == "docker.io/library/dbcc1"
    h63 = DBCC[7:-1]
    assert str(parse_reference(h63, default_tag=False)) == "docker.io/library/" + h63
    with pytest.raises(InvalidInput, match="image id"):
        parse_reference(DBCC[7:])


def test_familiar_forms() -> None:
    assert parse_reference("busybox").familiar() == "busybox:latest"
    assert parse_reference("docker.io/org/app@" + DBCC).familiar() == "org/app@" + DBCC
    assert parse_reference("localhost:5000/x:1").familiar() == "localhost:5000/x:1"
    assert parse_reference("index.docker.io/library/foo/bar:2").familiar() == "library/foo/bar:2"


# --------------------------------------------------------------- error messages

@pytest.mark.parametrize(
    "s,needle",
    [
        ("", "empty"),
        (HEX64, "64-hex string is an image id"),
        ("Uppercase:tag", "must be lowercase"),
        ("docker.io/docker/Docker", "must be lowercase (docker/Docker)"),
        ("foo_bar.com/x", "invalid registry host 'foo_bar.com'"),  # Go silently makes this a path
        ("localhost:99999/x", "invalid registry host"),  # lamina: ports are 16-bit
        ("busybox:-x", "invalid tag '-x'"),
        ("busybox@sha256:abc", "invalid digest"),
        ("busybox@sha512:" + "f" * 128, "unsupported digest algorithm: sha512"),
        ("docker///docker", "invalid repository name 'docker///docker'"),
        ("a/" * 127 + "a:tag", "not be more than 255 characters"),
        ("x" * 2000, "too long (2000 characters)"),
    ],
)
def test_error_messages(s: str, needle: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_reference(s)
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg and len(msg) < 400


def test_name_length_counts_the_normalised_name() -> None:
    """255 is distribution's limit on the whole name, domain included."""
    ok = "localhost/" + "a" * 245  # 9 + 1 + 245 = 255
    assert len(parse_reference(ok).name) == 255
    with pytest.raises(InvalidInput, match="255"):
        parse_reference("localhost/" + "a" * 246)
    # "a/"*127 + "a" is 255 on its own, but becomes docker.io/... (265) once normalised.
    with pytest.raises(InvalidInput, match="255"):
        parse_reference("a/" * 127 + "a:tag-puts-this-over-max")


def test_non_string_input() -> None:
    with pytest.raises(InvalidInput, match="expected a string"):
        parse_reference(b"busybox")  # type: ignore[arg-type]


# --------------------------------------------------------------- Reference object

def test_with_tag_and_digest() -> None:
    r = parse_reference("busybox")
    assert str(r.with_tag("1.36")) == "docker.io/library/busybox:1.36"
    assert str(r.with_digest(DBCC)) == "docker.io/library/busybox:latest@" + DBCC
    assert str(r.with_tag(None).with_digest(DBCC)) == "docker.io/library/busybox@" + DBCC
    assert r.with_digest(DBCC).with_digest(None) == r
    assert r.name_only() == parse_reference("busybox", default_tag=False)
    # TestInvalidReferenceComponents
    with pytest.raises(InvalidInput, match="invalid tag"):
        r.with_tag("-foo")
    with pytest.raises(InvalidInput, match="invalid digest"):
        r.with_digest("foo")


def test_reference_constructor_validates() -> None:
    assert Reference("docker.io", "library/x", "1").tag == "1"
    assert isinstance(Reference("docker.io", "library/x", None, DBCC).digest, Digest)  # type: ignore[arg-type]
    for bad in [
        dict(domain="-x.io", path="a"),
        dict(domain="docker.io", path="A"),
        dict(domain="docker.io", path="a", tag="-x"),
        dict(domain="docker.io", path="a", digest="sha256:zz"),
        dict(domain="docker.io", path="a" * 300),
    ]:
        with pytest.raises(InvalidInput):
            Reference(**bad)  # type: ignore[arg-type]


def test_reference_is_hashable_and_frozen() -> None:
    a, b = parse_reference("busybox"), parse_reference("docker.io/library/busybox:latest")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.tag = "x"  # type: ignore[misc]


# --------------------------------------------------------------- image ids

@pytest.mark.parametrize(
    "s,ok",
    [
        ("abcd", True),
        ("abc", False),  # moby: at least 4 hex digits
        ("sha256:abcd", True),
        ("sha256:" + "a" * 64, True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("ABCD", False),
        ("abcg", False),
        ("sha256:", False),
        ("sha512:abcd", False),
        ("abcd\n", False),
        ("", False),
    ],
)
def test_is_image_id_prefix(s: str, ok: bool) -> None:
    assert is_image_id_prefix(s) is ok
    if ok:
        assert image_id_hex_prefix(s) == s.removeprefix("sha256:")
    else:
        with pytest.raises(InvalidInput, match="invalid image id"):
            image_id_hex_prefix(s)


def test_full_image_id_vs_reference() -> None:
    """How a caller tells them apart: a full id is never a reference; a short prefix may be
    both, and the reference is tried first."""
    assert is_full_image_id(DBCC) and is_full_image_id(DBCC[7:])
    assert not is_full_image_id(DBCC[:-1]) and not is_full_image_id(None)  # type: ignore[arg-type]
    assert is_image_id_prefix("cafe") and parse_reference("cafe").path == "library/cafe"
    with pytest.raises(InvalidInput):
        parse_reference(DBCC[7:])


# --------------------------------------------------------------- property

_REF_ALPHABET = "abcxyz019._-/:@ABC[]" + "sha256"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=_REF_ALPHABET, max_size=40) | st.text(max_size=40))
def test_parse_only_raises_invalid_input_and_round_trips(s: str) -> None:
    try:
        r = parse_reference(s)
    except InvalidInput as e:
        assert "\n" not in str(e)
        return
    except LaminaError as e:  # pragma: no cover - a wrong class is a failure
        pytest.fail(f"{s!r}: {type(e).__name__}: {e}")
    assert parse_reference(str(r)) == r
    assert parse_reference(r.familiar()) == r
