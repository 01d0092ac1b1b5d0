"""Registry authentication: credentials from Docker's ``config.json``, and the challenge flow of
the Distribution spec (``WWW-Authenticate: Bearer`` tokens, or ``Basic``).

The model
---------
A registry answers an unauthorised request with 401 and one or more *challenges*. ``Basic``
means: send the user's name and password with every request. ``Bearer realm=R,service=S`` means:
ask the token server at ``R`` for a token for ``service=S`` and the *scopes* the request needs
(``repository:library/busybox:pull``, ``repository:me/app:pull,push``), anonymously or with the
user's credentials (Basic auth on the token request; an ``identitytoken`` is sent as an OAuth2
refresh token instead), then send ``Authorization: Bearer <token>``. Tokens are cached per
(realm, service, scopes) until shortly before they expire, so a pull of many layers asks once.

Credentials live in Docker's client config (``~/.docker/config.json``; which file is the
caller's choice: the CLI's ``lamina/config.py`` decides, the library never reads the
environment). Only the ``auths`` map is read: ``{"auths": {"host:port": {"auth": base64("user:
pass")}}}``; Docker Hub's key is ``https://index.docker.io/v1/``. Credential helpers
(``credsStore``, ``credHelpers``) run external programs and are not supported: a registry whose
entry is only in a helper is treated as anonymous. ``store_credentials`` / ``remove_credentials``
(``lamina login`` / ``logout``) rewrite the file atomically with mode 0600 and keep every other
key as it was.

Errors: ``Unauthorized`` (credentials refused, missing, or the token server said no) is a
``LaminaError`` with a one-line message naming the registry; malformed config files are
``InvalidInput`` naming the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from graph.distribution.errors import RegistryError
from graph.errors import InvalidInput, LaminaError

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
MAX_CONFIG_FILE = 4 << 20
MAX_TOKEN_RESPONSE = 1 << 20
TOKEN_LEEWAY = 10.0  # seconds before expiry a cached token is no longer handed out
DEFAULT_TOKEN_LIFETIME = 60.0  # the spec's default when expires_in is absent


class Unauthorized(LaminaError):
    """The registry (or its token server) refused the request: no credentials, wrong ones, or
    not allowed to do this on this repository."""


@dataclass(frozen=True)
class Credentials:
    """A user's name and password for one registry, or an identity (refresh) token."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def basic(self) -> str:
        """The value of an ``Authorization: Basic`` header."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


# ------------------------------------------------------------------------------ config.json


def config_key(registry: str) -> str:
    """The ``auths`` key Docker uses for ``registry`` (``docker.io`` -> Hub's legacy URL)."""
    host = normalize_host(registry)
    return DOCKER_HUB_KEY if host == "docker.io" else host


def normalize_host(key: str) -> str:
    """``https://host:port/v1/`` or ``host:port`` -> ``host:port``; Hub's names -> ``docker.io``."""
    k = key.strip()
    k = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", k)
    k = k.split("/", 1)[0].lower()
    return "docker.io" if k in _HUB_NAMES else k


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_FILE + 1)
    except FileNotFoundError:
        return {}
    if len(raw) > MAX_CONFIG_FILE:
        raise InvalidInput(f"{path}: over {MAX_CONFIG_FILE} bytes; not a Docker client config")
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path}: top level must be an object")
    auths = doc.get("auths")
    if auths is not None and not isinstance(auths, dict):
        raise InvalidInput(f"{path}: \"auths\" must be an object")
    return doc


def _entry_credentials(entry: Any, path: Path, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        raise InvalidInput(f"{path}: auths[{key!r}] must be an object")
    ident = entry.get("identitytoken")
    if ident is not None and not isinstance(ident, str):
        raise InvalidInput(f"{path}: auths[{key!r}].identitytoken must be a string")
    auth = entry.get("auth")
    user, password = entry.get("username"), entry.get("password")
    if auth:
        if not isinstance(auth, str):
            raise InvalidInput(f"{path}: auths[{key!r}].auth must be a string")
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise InvalidInput(f"{path}: auths[{key!r}].auth is not base64 of user:password") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidInput(f"{path}: auths[{key!r}].auth is not base64 of user:password")
    if user is None and ident is None:
        return None  # an empty entry (Docker leaves {} behind a credential helper)
    if not isinstance(user, str) or not isinstance(password or "", str):
        raise InvalidInput(f"{path}: auths[{key!r}] username/password must be strings")
    return Credentials(user or "", password or "", ident or None)


def load_credentials(path: Path | None, registry: str) -> Credentials | None:
    """The credentials ``path`` (a Docker client config) holds for ``registry``, or None.

    Requires: nothing (a missing file is no credentials).
    Effect: none.
    Raises: InvalidInput (the file is not valid JSON, or the entry is malformed).
    Repeat: yes.
    """
    if path is None:
        return None
    path = Path(path)
    auths = _read_config(path).get("auths") or {}
    want = normalize_host(registry)
    exact = config_key(registry)
    if exact in auths:
        return _entry_credentials(auths[exact], path, exact)
    for key, entry in auths.items():
        if isinstance(key, str) and normalize_host(key) == want:
            return _entry_credentials(entry, path, key)
    return None


def _write_config(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.lamina-{os.getpid()}.tmp")
    data = (json.dumps(doc, indent="\t") + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


def store_credentials(path: Path, registry: str, creds: Credentials) -> str:
    """Save ``creds`` for ``registry`` into the Docker client config at ``path`` (``lamina
    login``). Returns the key written.

    Requires: nothing (the file and its directory are created, 0600 and 0700).
    Effect: ``auths[key] = {"auth": base64(user:password)}``; other keys and entries unchanged;
    the file is replaced atomically and is 0600 afterwards.
    Raises: InvalidInput (the existing file is malformed: it is not overwritten).
    Repeat: yes; the last login wins.
    """
    path = Path(path)
    doc = _read_config(path)
    auths = dict(doc.get("auths") or {})
    key = config_key(registry)
    for k in list(auths):  # one entry per registry, whatever spelling an older tool used
        if isinstance(k, str) and normalize_host(k) == normalize_host(registry) and k != key:
            del auths[k]
    entry: dict[str, str] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    if creds.identity_token:
        entry["identitytoken"] = creds.identity_token
    auths[key] = entry
    doc["auths"] = auths
    _write_config(path, doc)
    return key


def remove_credentials(path: Path, registry: str) -> bool:
    """Forget the credentials for ``registry`` (``lamina logout``). Returns whether any were
    stored.

    Requires: nothing.  Effect: the entry (any spelling) is removed; the file stays 0600.
    Raises: InvalidInput (malformed file).  Repeat: a second call returns False.
    """
    path = Path(path)
    doc = _read_config(path)
    auths = dict(doc.get("auths") or {})
    gone = [k for k in auths if isinstance(k, str) and normalize_host(k) == normalize_host(registry)]
    if not gone:
        return False
    for k in gone:
        del auths[k]
    doc["auths"] = auths
    _write_config(path, doc)
    return True


# ------------------------------------------------------------------------------ challenges


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: ``scheme`` lower-cased, parameter names lower-cased."""

    scheme: str
    params: dict[str, str]


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values (RFC 7235): ``Bearer realm="...",service="..."``;
    several challenges may share one value. Malformed parts are skipped (a registry's odd header
    should not hide a usable challenge next to it)."""
    out: list[Challenge] = []
    for value in values:
        s, i, n = value, 0, len(value)
        current: Challenge | None = None
        while i < n:
            while i < n and s[i] in " \t,":
                i += 1
            m = _TOKEN.match(s, i)
            if not m:
                i += 1
                continue
            word, j = m.group(0), m.end()
            k = j
            while k < n and s[k] in " \t":
                k += 1
            if k < n and s[k] == "=" and current is not None:
                k += 1
                while k < n and s[k] in " \t":
                    k += 1
                if k < n and s[k] == '"':
                    k += 1
                    buf = []
                    while k < n and s[k] != '"':
                        if s[k] == "\\" and k + 1 < n:
                            k += 1
                        buf.append(s[k])
                        k += 1
                    val, i = "".join(buf), k + 1
                else:
                    vm = _TOKEN.match(s, k)
                    val, i = (vm.group(0), vm.end()) if vm else ("", k)
                current.params[word.lower()] = val
            else:
                current = Challenge(word.lower(), {})
                out.append(current)
                i = j
    return out


def scope(repository: str, actions: str) -> str:
    """``repository:<name>:<actions>`` (actions: ``pull`` or ``pull,push``)."""
    return f"repository:{repository}:{actions}"


# ------------------------------------------------------------------------------ authenticator


@dataclass
class _Token:
    value: str
    expires: float


class Authenticator:
    """Authorization headers for one registry client: answers challenges and caches tokens.

    ``credentials(host)`` gives the credentials for a host (or None: anonymous); ``http`` is
    the caller's pooled HTTP client (an ``httpx.Client``) used for token requests. Thread-safe:
    layer downloads in several threads share one authenticator.
    """

    def __init__(self, credentials: Callable[[str], Credentials | None], http: Any, *, user_agent: str = "lamina") -> None:
        self._credentials = credentials
        self._http = http
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._challenge: dict[str, Challenge] = {}  # host -> the challenge it answered with
        self._tokens: dict[tuple[str, str, tuple[str, ...]], _Token] = {}
        self.token_requests = 0  # for tests and the bench: how often a token server was asked

    def header(self, host: str, scopes: tuple[str, ...]) -> str | None:
        """The ``Authorization`` value to send to ``host`` for ``scopes`` before any 401, when
        the host's scheme is known: Basic with credentials, or a cached, unexpired token."""
        with self._lock:
            ch = self._challenge.get(host)
            if ch is None:
                return None
            if ch.scheme == "basic":
                creds = self._credentials(host)
                return creds.basic() if creds is not None else None
            tok = self._tokens.get(self._key(ch, scopes))
            if tok is not None and tok.expires > time.monotonic():
                return "Bearer " + tok.value
        return None

    def answer(self, host: str, www_authenticate: list[str], scopes: tuple[str, ...], *, refused: str | None) -> str:
        """The ``Authorization`` value to retry a request that got 401 from ``host``.

        ``refused`` is the value that request carried (None: none). A cached token equal to it
        is dropped and a fresh one fetched; a Basic answer equal to it means the credentials are
        wrong. The caller retries once with the result and, if refused again, raises
        ``refusal(host, scopes)``.
        Raises: Unauthorized (no usable challenge; Basic without credentials or with refused
        ones; the token server refused), RegistryError (token server unreachable or broken).
        """
        chs = parse_challenges(www_authenticate)
        ch = next((c for c in chs if c.scheme == "bearer" and c.params.get("realm")), None)
        if ch is None:
            ch = next((c for c in chs if c.scheme == "basic"), None)
        if ch is None:
            raise Unauthorized(f"{host}: unauthorized, and the registry offers no usable authentication scheme")
        with self._lock:
            self._challenge[host] = ch
        creds = self._credentials(host)
        if ch.scheme == "basic":
            if creds is None:
                raise Unauthorized(f"{host}: authentication required (run: lamina login {host})")
            value = creds.basic()
            if refused == value:
                raise Unauthorized(f"{host}: credentials of {creds.username!r} refused (wrong user or password)")
            return value
        key = self._key(ch, scopes)
        with self._fetch_lock:
            with self._lock:
                tok = self._tokens.get(key)
                usable = tok is not None and tok.expires > time.monotonic() and refused != "Bearer " + tok.value
            if not usable:
                tok = self._fetch(host, ch, scopes, creds)
                with self._lock:
                    self._tokens[key] = tok
        assert tok is not None
        return "Bearer " + tok.value

    def refusal(self, host: str, scopes: tuple[str, ...]) -> Unauthorized:
        """The error for a request refused even with a fresh answer to the registry's challenge."""
        creds = self._credentials(host)
        with self._lock:
            ch = self._challenge.get(host)
        if ch is not None and ch.scheme == "basic" and creds is not None:
            return Unauthorized(f"{host}: credentials of {creds.username!r} refused (wrong user or password)")
        who = f"user {creds.username!r}" if creds else "anonymous access"
        hint = "" if creds else f" (run: lamina login {host})"
        return Unauthorized(f"{host}: {who} is not allowed to {_actions(scopes)}{hint}")

    @staticmethod
    def _key(ch: Challenge, scopes: tuple[str, ...]) -> tuple[str, str, tuple[str, ...]]:
        return (ch.params.get("realm", ""), ch.params.get("service", ""), tuple(sorted(scopes)))

    def _fetch(self, host: str, ch: Challenge, scopes: tuple[str, ...], creds: Credentials | None) -> _Token:
        import httpx

        realm = ch.params["realm"]
        if not realm.startswith(("https://", "http://")):
            raise Unauthorized(f"{host}: token realm {realm!r} is not an http(s) URL")
        service = ch.params.get("service")
        headers = {"User-Agent": self._user_agent, "Accept": "application/json"}
        self.token_requests += 1
        try:
            if creds is not None and creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "client_id": "lamina", "scope": " ".join(scopes)}
                if service:
                    form["service"] = service
                r = self._http.post(realm, data=form, headers=headers)
            else:
                params: list[tuple[str, str]] = []
                if service:
                    params.append(("service", service))
                params += [("scope", s) for s in scopes]
                if creds is not None:
                    headers["Authorization"] = creds.basic()
                    params.append(("account", creds.username))
                r = self._http.get(realm, params=params, headers=headers)
        except httpx.HTTPError as e:
            raise RegistryError(f"{host}: token server {realm} unreachable: {_one_line(e)}") from None
        if r.status_code in (401, 403):
            who = f"credentials of {creds.username!r}" if creds else "anonymous access"
            raise Unauthorized(f"{host}: token server refused {who} (wrong user or password?)")
        if r.status_code != 200:
            raise RegistryError(f"{host}: token server {realm} answered HTTP {r.status_code}")
        body = r.content
        if len(body) > MAX_TOKEN_RESPONSE:
            raise Unauthorized(f"{host}: token server response over {MAX_TOKEN_RESPONSE} bytes")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Unauthorized(f"{host}: token server sent invalid JSON") from None
        value = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value or any(c.isspace() or ord(c) < 33 or ord(c) > 126 for c in value):
            raise Unauthorized(f"{host}: token server sent no usable token")
        life = doc.get("expires_in")
        if not isinstance(life, (int, float)) or isinstance(life, bool) or life <= 0:
            life = DEFAULT_TOKEN_LIFETIME
        return _Token(value, time.monotonic() + max(float(life) - TOKEN_LEEWAY, 1.0))


def _actions(scopes: tuple[str, ...]) -> str:
    parts = []
    for s in scopes:
        kind, _, rest = s.partition(":")
        name, _, acts = rest.rpartition(":")
        parts.append(f"{acts} {name}" if kind == "repository" else s)
    return ", ".join(parts)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


__all__ = ["DOCKER_HUB_KEY", "Authenticator", "Challenge", "Credentials", "Unauthorized", "config_key",
           "load_credentials", "normalize_host", "parse_challenges", "remove_credentials", "scope",
           "store_credentials"]
