"""A small Bearer token server for tests (the Distribution spec's token flow), on 127.0.0.1.

``run_token_server(workdir, users={...})`` makes an EC P-256 key and a self-signed certificate
(``cert``: give it to ``tests.registry.run_registry(token_cert=...)`` as the root bundle), and
serves ``GET /token?service=S&scope=repository:NAME:ACTIONS`` (scope repeated for several):
Basic credentials are checked against ``users`` (wrong ones: 401); a known user gets every
action asked for; anonymous requests get ``pull`` when ``anonymous_pull`` (else nothing, so the
registry then says 401 insufficient scope). Tokens are ES256 JWTs with the certificate in the
``x5c`` header, which is how docker-registry 2.8 verifies them against its root bundle.
``requests`` records (account, scopes) of every request, so tests can count token fetches.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator


@dataclass
class TokenServer:
    realm: str
    cert: Path
    service: str
    issuer: str
    users: dict[str, str]
    anonymous_pull: bool
    lifetime: int
    requests: list[tuple[str | None, tuple[str, ...]]] = field(default_factory=list)
    refused: int = 0


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def _keypair(workdir: Path) -> tuple[object, bytes, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lamina-test-token-signer")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = workdir / "token-cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert.public_bytes(serialization.Encoding.DER), path


def _sign(key: object, der_cert: bytes, claims: dict[str, object]) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der_cert).decode("ascii")]}
    signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
    r, s = decode_dss_signature(der)
    return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


@contextlib.contextmanager
def run_token_server(
    workdir: Path,
    *,
    users: dict[str, str] | None = None,
    anonymous_pull: bool = True,
    service: str = "lamina-test",
    issuer: str = "lamina-test-issuer",
    lifetime: int = 300,
) -> Iterator[TokenServer]:
    """Start the token server on a free port of 127.0.0.1; stop it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    key, der, cert_path = _keypair(workdir)
    state: dict[str, TokenServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _json(self, status: int, doc: dict[str, object]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            ts = state["ts"]
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/token":
                self._json(404, {"error": "not found"})
                return
            q = urllib.parse.parse_qs(url.query)
            scopes = tuple(s for v in q.get("scope", []) for s in v.split(" ") if s)
            account = None
            auth = self.headers.get("Authorization") or ""
            if auth.startswith("Basic "):
                try:
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    user, password = "", ""
                if ts.users.get(user) != password or not user:
                    ts.refused += 1
                    ts.requests.append((user or "?", scopes))
                    self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                    return
                account = user
            ts.requests.append((account, scopes))
            if q.get("service", [""])[0] != ts.service:
                self._json(400, {"error": "unknown service"})
                return
            access = []
            for s in scopes:
                kind, _, rest = s.partition(":")
                name, _, actions = rest.rpartition(":")
                want = [a for a in actions.split(",") if a]
                granted = want if account else (["pull"] if ts.anonymous_pull and "pull" in want else [])
                access.append({"type": kind, "name": name, "actions": granted})
            now = int(time.time())
            claims = {"iss": ts.issuer, "sub": account or "", "aud": ts.service, "exp": now + ts.lifetime,
                      "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
            token = _sign(key, der, claims)
            self._json(200, {"token": token, "access_token": token, "expires_in": ts.lifetime,
                             "issued_at": dt.datetime.now(dt.timezone.utc).isoformat()})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    ts = TokenServer(f"http://127.0.0.1:{port}/token", cert_path, service, issuer, dict(users or {}),
                     anonymous_pull, lifetime)
    state["ts"] = ts
    thread = threading.Thread(target=server.serve_forever, name="token-server", daemon=True)
    thread.start()
    try:
        yield ts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
