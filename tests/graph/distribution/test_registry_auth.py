"""Registry credentials and challenges (``graph.distribution.auth``): Docker's config.json read and written
(0600, other keys kept), ``WWW-Authenticate`` parsing, and the Bearer flow against the real token
server fixture (tokens cached per scope, refused credentials named)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Iterator

import pytest

from graph.distribution.auth import (
    DOCKER_HUB_KEY,
    Authenticator,
    Credentials,
    Unauthorized,
    config_key,
    load_credentials,
    normalize_host,
    parse_challenges,
    remove_credentials,
    store_credentials,
)
from graph.errors import InvalidInput
from graph.distribution.registry import RegistryClient, RegistryOptions
from tests.tokenserver import TokenServer, run_token_server


# ------------------------------------------------------------------------------ config.json


def test_hosts_are_normalised_like_docker() -> None:
    assert normalize_host("https://index.docker.io/v1/") == "docker.io"
    assert normalize_host("registry-1.docker.io") == "docker.io"
    assert normalize_host("http://127.0.0.1:5000/") == "127.0.0.1:5000"
    assert normalize_host("Example.COM") == "example.com"
    assert config_key("docker.io") == DOCKER_HUB_KEY
    assert config_key("127.0.0.1:5000") == "127.0.0.1:5000"


def test_store_load_remove_keep_other_keys_and_mode(tmp_path: Path) -> None:
    cfg = tmp_path / "d" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"auths": {"other.example": {"auth": base64.b64encode(b"o:p").decode()}},
                               "psFormat": "table {{.ID}}"}))
    cfg.chmod(0o644)
    store_credentials(cfg, "127.0.0.1:5000", Credentials("alice", "p:w"))  # a colon in the password
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    doc = json.loads(cfg.read_text())
    assert doc["psFormat"] == "table {{.ID}}"
    assert base64.b64decode(doc["auths"]["127.0.0.1:5000"]["auth"]) == b"alice:p:w"
    assert load_credentials(cfg, "127.0.0.1:5000") == Credentials("alice", "p:w")
    assert load_credentials(cfg, "other.example") == Credentials("o", "p")
    assert load_credentials(cfg, "nowhere.example") is None
    assert remove_credentials(cfg, "127.0.0.1:5000") is True
    assert remove_credentials(cfg, "127.0.0.1:5000") is False
    assert load_credentials(cfg, "127.0.0.1:5000") is None
    assert load_credentials(cfg, "other.example") == Credentials("o", "p")
    assert [p.name for p in cfg.parent.iterdir()] == ["config.json"]  # no temp files left


def test_hub_entries_under_any_spelling(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"username": "u", "password": "p"}}}))
    assert load_credentials(cfg, "docker.io") == Credentials("u", "p")
    store_credentials(cfg, "docker.io", Credentials("v", "q"))
    assert list(json.loads(cfg.read_text())["auths"]) == [DOCKER_HUB_KEY]


def test_missing_and_helper_only_entries_are_anonymous(tmp_path: Path) -> None:
    assert load_credentials(tmp_path / "absent.json", "x.example") is None
    assert load_credentials(None, "x.example") is None
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {"x.example": {}}, "credsStore": "desktop"}))
    assert load_credentials(cfg, "x.example") is None


@pytest.mark.parametrize("content, match, whole_file_bad", [
    ("{not json", "invalid JSON", True),
    ('["a"]', "object", True),
    ('{"auths": []}', "auths", True),
    ('{"auths": {"x.example": {"auth": "%%%"}}}', "base64", False),
    ('{"auths": {"x.example": {"auth": "' + base64.b64encode(b"nocolon").decode() + '"}}}', "user:password", False),
    ('{"auths": {"x.example": "str"}}', "object", False),
])
def test_malformed_config_is_refused_and_not_overwritten(tmp_path: Path, content: str, match: str,
                                                        whole_file_bad: bool) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(content)
    with pytest.raises(InvalidInput, match=match):
        load_credentials(cfg, "x.example")
    if whole_file_bad:  # a login must not replace a file it cannot read
        with pytest.raises(InvalidInput):
            store_credentials(cfg, "y.example", Credentials("a", "b"))
        assert cfg.read_text() == content
    else:  # one bad entry: a login for another registry keeps it as it is
        store_credentials(cfg, "y.example", Credentials("a", "b"))
        assert json.loads(cfg.read_text())["auths"]["x.example"] == json.loads(content)["auths"]["x.example"]


def test_credentials_repr_hides_the_password() -> None:
    assert "s3cret" not in repr(Credentials("alice", "s3cret", "tok"))


# ------------------------------------------------------------------------------ challenges


def test_parse_challenges() -> None:
    [c] = parse_challenges(['Bearer realm="https://auth.example/token",service="registry.example",'
                            'scope="repository:a/b:pull,push"'])
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "registry.example",
                        "scope": "repository:a/b:pull,push"}
    cs = parse_challenges(['Basic realm="x y", Bearer realm="r", error=insufficient_scope', 'Negotiate'])
    assert [(c.scheme, c.params) for c in cs] == [("basic", {"realm": "x y"}),
                                                 ("bearer", {"realm": "r", "error": "insufficient_scope"}),
                                                 ("negotiate", {})]
    assert parse_challenges(['Bearer realm="esc\\"aped"'])[0].params["realm"] == 'esc"aped'
    assert parse_challenges(["", ",,, =", "Bearer"])[-1].scheme == "bearer"


# ------------------------------------------------------------------------------ token flow


@pytest.fixture(scope="module")
def ts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    with run_token_server(tmp_path_factory.mktemp("ts"), users={"bob": "pw"}) as server:
        yield server


def _auth(ts: TokenServer, creds: Credentials | None) -> tuple[RegistryClient, Authenticator]:
    client = RegistryClient(RegistryOptions())
    return client, Authenticator(lambda host: creds, client.http)


def _challenge(ts: TokenServer) -> list[str]:
    return [f'Bearer realm="{ts.realm}",service="{ts.service}"']


def _claims(header: str) -> dict[str, object]:
    token = header.removeprefix("Bearer ")
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_tokens_are_fetched_once_per_scope_and_carry_the_rights(ts: TokenServer) -> None:
    client, auth = _auth(ts, Credentials("bob", "pw"))
    with client:
        ts.requests.clear()
        pull = ("repository:a:pull",)
        assert auth.header("h", pull) is None  # nothing known about h yet
        h1 = auth.answer("h", _challenge(ts), pull, refused=None)
        assert _claims(h1)["access"] == [{"type": "repository", "name": "a", "actions": ["pull"]}]
        assert auth.header("h", pull) == h1  # cached: no second request
        assert auth.answer("h", _challenge(ts), pull, refused=None) == h1
        push = ("repository:a:pull,push",)
        h2 = auth.answer("h", _challenge(ts), push, refused=None)
        assert _claims(h2)["access"] == [{"type": "repository", "name": "a", "actions": ["pull", "push"]}]
        assert ts.requests == [("bob", pull), ("bob", push)]
        h3 = auth.answer("h", _challenge(ts), pull, refused=h1)  # the registry refused it: fetch anew
        assert h3 != h1 and len(ts.requests) == 3
        assert _claims(h3)["sub"] == "bob"


def test_anonymous_tokens_get_pull_only(ts: TokenServer) -> None:
    client, auth = _auth(ts, None)
    with client:
        h = auth.answer("h", _challenge(ts), ("repository:a:pull,push",), refused=None)
        assert _claims(h)["access"] == [{"type": "repository", "name": "a", "actions": ["pull"]}]
        e = auth.refusal("h", ("repository:a:pull,push",))
        assert "anonymous access is not allowed to pull,push a" in str(e) and "lamina login h" in str(e)


def test_wrong_password_is_refused_by_the_token_server(ts: TokenServer) -> None:
    client, auth = _auth(ts, Credentials("bob", "nope"))
    with client, pytest.raises(Unauthorized, match="token server refused credentials of 'bob'"):
        auth.answer("h", _challenge(ts), ("repository:a:pull",), refused=None)


def test_basic_challenges(ts: TokenServer) -> None:
    client, auth = _auth(ts, Credentials("bob", "pw"))
    with client:
        value = auth.answer("h", ['Basic realm="r"'], (), refused=None)
        assert value == Credentials("bob", "pw").basic()
        assert auth.header("h", ("anything",)) == value  # Basic goes with every request now
        with pytest.raises(Unauthorized, match="refused"):
            auth.answer("h", ['Basic realm="r"'], (), refused=value)
    client, anon = _auth(ts, None)
    with client:
        with pytest.raises(Unauthorized, match="authentication required"):
            anon.answer("h", ['Basic realm="r"'], (), refused=None)
        with pytest.raises(Unauthorized, match="no usable authentication"):
            anon.answer("h", ['Digest realm="r"'], (), refused=None)
