"""``graph.distribution.auth`` in the registry client's hands, against the real registry with
Bearer token auth (``tests.tokenserver`` as its token service): which credentials are used, how
often a token is fetched, an expired token renewed, refusals named. (Config-file handling and
challenge parsing: ``test_registry_auth.py``.)"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from graph.digest import Digest
from graph.distribution.auth import Credentials, Unauthorized, scope, store_credentials
from graph.distribution.registry import RegistryClient, Repository
from tests.graph.distribution.conftest import fast_options, sha
from tests.registry import REGISTRY_BIN, run_registry
from tests.tokenserver import TokenServer, run_token_server

BLOB = b"token-auth blob\n"


@dataclass
class Secured:
    host: str
    ts: TokenServer


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    import os

    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed")
    d = tmp_path_factory.mktemp("token-reg")
    # lifetime 2 s: the client keeps a token for max(lifetime - leeway, 1 s), so expiry is testable
    with run_token_server(d / "ts", users={"bob": "pw"}, lifetime=2) as ts, \
            run_registry(d / "reg", token_realm=ts.realm, token_cert=ts.cert,
                         token_service=ts.service, token_issuer=ts.issuer) as reg:
        yield Secured(reg.host, ts)


def repo(c: RegistryClient, host: str, path: str, push: bool = True) -> Repository:
    return c.repository(path, c.origin(host), push=push)


def upload(r: Repository, data: bytes = BLOB) -> None:
    r.upload_blob(Digest(sha(data)), len(data), lambda: io.BytesIO(data))


def test_one_token_serves_a_whole_push(secured: Secured) -> None:
    ts = secured.ts
    with RegistryClient(fast_options(secured.host, credentials={secured.host: Credentials("bob", "pw")})) as c:
        r = repo(c, secured.host, "team/one")
        ts.requests.clear()
        upload(r)  # HEAD is not asked: POST, PUT
        assert r.blob_size(Digest(sha(BLOB))) == len(BLOB)
        upload(r, b"second blob")
        assert ts.requests == [("bob", (scope("team/one", "pull,push"),))]
        assert c.auth.token_requests == 1


def test_expired_token_is_renewed(secured: Secured) -> None:
    ts = secured.ts
    with RegistryClient(fast_options(secured.host, credentials={secured.host: Credentials("bob", "pw")})) as c:
        r = repo(c, secured.host, "team/expiry")
        upload(r)
        ts.requests.clear()
        assert r.blob_size(Digest(sha(BLOB))) == len(BLOB)
        assert ts.requests == []  # still valid: reused
        time.sleep(1.2)  # past the client's own expiry (lifetime 2 s - leeway, at least 1 s)
        assert r.blob_size(Digest(sha(BLOB))) == len(BLOB)
        assert ts.requests == [("bob", (scope("team/expiry", "pull,push"),))]


def test_anonymous_may_pull_but_not_push(secured: Secured) -> None:
    with RegistryClient(fast_options(secured.host, credentials={secured.host: Credentials("bob", "pw")})) as c:
        upload(repo(c, secured.host, "team/anon"))
    with RegistryClient(fast_options(secured.host)) as c:
        assert repo(c, secured.host, "team/anon", push=False).blob_size(Digest(sha(BLOB))) == len(BLOB)
        with pytest.raises(Unauthorized, match=f"anonymous access is not allowed to pull,push team/anon "
                                               rf"\(run: lamina login {secured.host}\)"):
            upload(repo(c, secured.host, "team/anon"), b"not allowed")


def test_credentials_file_is_read_and_explicit_ones_win(secured: Secured, tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    store_credentials(cfg, secured.host, Credentials("bob", "pw"))
    with RegistryClient(fast_options(secured.host, credentials_file=cfg)) as c:
        upload(repo(c, secured.host, "team/file"))
    store_credentials(cfg, secured.host, Credentials("bob", "wrong"))
    with RegistryClient(fast_options(secured.host, credentials_file=cfg)) as c:
        with pytest.raises(Unauthorized, match="token server refused credentials of 'bob'"):
            upload(repo(c, secured.host, "team/file"))
    explicit = {secured.host: Credentials("bob", "pw")}
    with RegistryClient(fast_options(secured.host, credentials_file=cfg, credentials=explicit)) as c:
        upload(repo(c, secured.host, "team/file"), b"explicit wins")


def test_login_check_pings_with_the_credentials(secured: Secured) -> None:
    with RegistryClient(fast_options(secured.host, credentials={secured.host: Credentials("bob", "pw")})) as c:
        c.ping(c.origin(secured.host))
    with RegistryClient(fast_options(secured.host, credentials={secured.host: Credentials("bob", "nope")})) as c:
        with pytest.raises(Unauthorized, match="refused"):
            c.ping(c.origin(secured.host))
