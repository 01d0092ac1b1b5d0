"""``/auth`` (``docker login``) and the registry options every registry call of the daemon uses:
credentials as the client sends them (the ``X-Registry-Auth`` header, base64url JSON: Docker's
daemon keeps no credentials of its own), mirrors and insecure registries from ``daemon.json``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from lamina.daemon import wire
from lamina.daemon.config import is_loopback_registry
from lamina.daemon.wire import ApiError

if TYPE_CHECKING:
    from graph.distribution.auth import Credentials
    from graph.distribution.registry import RegistryOptions
    from lamina.daemon.context import Daemon


def decode_auth_header(value: str | None) -> dict[str, Any]:
    """``X-Registry-Auth``: base64url JSON (padding optional); {} when absent or empty."""
    if not value or not value.strip():
        return {}
    v = value.strip()
    try:
        raw = base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid X-Registry-Auth header: not base64 JSON") from None
    return doc if isinstance(doc, dict) else {}


def credentials_of(doc: dict[str, Any]) -> "Credentials | None":
    from graph.distribution.auth import Credentials

    user = str(doc.get("username") or "")
    password = str(doc.get("password") or "")
    token = doc.get("identitytoken") or None
    if not user and doc.get("auth"):
        with_colon = base64.b64decode(str(doc["auth"])).decode("utf-8", "replace")
        user, _, password = with_colon.partition(":")
    if not user and not token:
        return None
    return Credentials(user, password, identity_token=str(token) if token else None)


def registry_options(d: "Daemon", domain: str, auth: dict[str, Any] | None = None) -> "RegistryOptions":
    """Options for talking to ``domain``'s registry with the client's credentials."""
    from graph.distribution.registry import RegistryOptions

    creds = credentials_of(auth or {})
    insecure = set(d.cfg.insecure)
    if is_loopback_registry(domain):
        insecure.add(domain)
    return RegistryOptions(
        insecure=frozenset(insecure),
        mirrors={"docker.io": tuple(d.cfg.mirrors)} if d.cfg.mirrors else {},
        credentials={domain: creds} if creds is not None else {},
    )


def _login(d: "Daemon", doc: dict[str, Any]) -> None:
    from graph.distribution.auth import normalize_host
    from graph.distribution.registry import RegistryClient

    host = normalize_host(str(doc.get("serveraddress") or "docker.io"))
    if credentials_of(doc) is None:
        raise ApiError(400, "login: username and password are required")
    with RegistryClient(registry_options(d, host, doc)) as client:
        client.ping(client.origin(host))


async def login(d: "Daemon", request: web.Request) -> web.StreamResponse:
    doc = await wire.json_body(request)
    if not isinstance(doc, dict):
        raise ApiError(400, "login: want a JSON object")
    await d.blocking(_login, d, doc)
    return wire.json_response({"Status": "Login Succeeded", "IdentityToken": ""})


ROUTES = [("POST", r"/auth", login)]
