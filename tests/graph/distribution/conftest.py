"""Shared fixtures for the distribution unit tests: one real registry (Debian's ``docker-registry``
on 127.0.0.1, anonymous, started once for the package and stopped by PID) and a second HTTP client
that is not lamina's (``Raw``: ``http.client``), so what lamina's client wrote is checked by
something that does not share its code, and images are put in place without it."""

from __future__ import annotations

import hashlib
import http.client
import os
from dataclasses import dataclass
from typing import Iterator

import pytest

from graph.distribution.registry import RegistryClient, RegistryOptions
from tests.faultproxy import FaultProxy, run_fault_proxy
from tests.registry import REGISTRY_BIN, run_registry


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Raw:
    """Plain HTTP to the registry with ``http.client``: the oracle beside lamina's client."""

    host: str

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        h, _, port = self.host.partition(":")
        c = http.client.HTTPConnection(h, int(port), timeout=30)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = sha(data)
        status, hdrs, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/", b"")
        assert status == 202, status
        loc = hdrs["location"]
        if loc.startswith("http"):
            loc = "/" + loc.split("/", 3)[3]
        sep = "&" if "?" in loc else "?"
        status, _, body = self.request("PUT", f"{loc}{sep}digest={digest}", data,
                                       {"Content-Type": "application/octet-stream"})
        assert status == 201, (status, body)
        return digest

    def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> None:
        status, _, body = self.request("PUT", f"/v2/{repo}/manifests/{reference}", raw, {"Content-Type": media_type})
        assert status == 201, (status, body)

    def put_image(self, repo: str, tag: str, blobs: list[bytes], manifest: bytes, media_type: str) -> None:
        for b in blobs:
            self.put_blob(repo, b)
        self.put_manifest(repo, tag, manifest, media_type)

    def blob(self, repo: str, digest: str) -> bytes | None:
        status, _, body = self.request("GET", f"/v2/{repo}/blobs/{digest}")
        return body if status == 200 else None

    def manifest(self, repo: str, reference: str, accept: str) -> tuple[int, bytes, dict[str, str]]:
        status, hdrs, body = self.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": accept})
        return status, body, hdrs


@pytest.fixture(scope="package")
def registry_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed")
    with run_registry(tmp_path_factory.mktemp("dist-registry")) as reg:
        yield reg.host


@pytest.fixture(scope="package")
def _shared_proxy(registry_host: str) -> Iterator[FaultProxy]:
    with run_fault_proxy(registry_host) as p:
        yield p


@pytest.fixture
def proxy(_shared_proxy: FaultProxy) -> Iterator[FaultProxy]:
    """A fault proxy (``tests.faultproxy``) in front of the package's registry, with no faults
    and an empty log (one proxy for the package: starting one costs half a second)."""
    _shared_proxy.clear()
    _shared_proxy.stalled.clear()
    yield _shared_proxy
    _shared_proxy.clear()


@pytest.fixture
def raw(registry_host: str) -> Raw:
    return Raw(registry_host)


def fast_options(*hosts: str, **kw: object) -> RegistryOptions:
    """Plain HTTP to ``hosts``, quick retries (the tests' registries fail on purpose)."""
    kw.setdefault("backoff", 0.01)
    kw.setdefault("max_backoff", 0.02)
    kw.setdefault("retries", 2)
    return RegistryOptions(insecure=frozenset(hosts), **kw)  # type: ignore[arg-type]


@pytest.fixture
def client(registry_host: str) -> Iterator[RegistryClient]:
    with RegistryClient(fast_options(registry_host)) as c:
        yield c


