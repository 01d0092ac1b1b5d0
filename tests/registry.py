"""A real OCI registry for tests: the bench's starter (``bench.registry``: Debian's
``docker-registry`` on 127.0.0.1 on a free port, own config and storage, stopped by PID) with the
auth flavours the registry-client tests need: anonymous; htpasswd Basic auth; Bearer tokens from a
token server the caller runs (``token_realm`` + ``token_cert``)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator

from bench.registry import REGISTRY_BIN as _REGISTRY_NAME
from bench.registry import Registry, free_port
from bench.registry import run_registry as _run_registry

REGISTRY_BIN = shutil.which(_REGISTRY_NAME) or "/usr/bin/docker-registry"  # a path, for skipif

__all__ = ["REGISTRY_BIN", "Registry", "free_port", "run_registry"]


def _htpasswd_line(user: str, password: str) -> str:
    import bcrypt  # docker-registry accepts bcrypt only

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"


@contextlib.contextmanager
def run_registry(
    workdir: Path,
    *,
    htpasswd: dict[str, str] | None = None,
    token_realm: str | None = None,
    token_service: str = "lamina-test",
    token_issuer: str = "lamina-test-issuer",
    token_cert: Path | None = None,
) -> Iterator[Registry]:
    """Start a registry and yield it; it is always stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    auth = ""
    if htpasswd:
        pw = workdir / "htpasswd"
        pw.write_text("".join(_htpasswd_line(u, p) for u, p in htpasswd.items()))
        auth = f"auth:\n  htpasswd:\n    realm: lamina-test\n    path: {pw}\n"
    elif token_realm:
        assert token_cert is not None
        auth = (
            "auth:\n  token:\n"
            f"    realm: {token_realm}\n    service: {token_service}\n"
            f"    issuer: {token_issuer}\n    rootcertbundle: {token_cert}\n"
        )
    with _run_registry(workdir, auth=auth) as reg:
        yield reg
