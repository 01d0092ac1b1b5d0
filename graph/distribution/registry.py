"""A client for the OCI Distribution Spec (and Docker's registry API v2, which it is).

The model
---------
A *registry* (``docker.io``, ``127.0.0.1:5000``) holds *repositories* (``library/busybox``);
a repository holds *blobs* (layers, configs) by digest and *manifests* by digest and by tag.
This module speaks the HTTP API over one pooled ``httpx.Client`` (HTTP/1.1, keep-alive); it
knows nothing of the store. ``graph.distribution.pull`` and ``graph.distribution.push`` drive it.

- ``RegistryClient(options)``: the pool, the authenticator (``graph.distribution.auth``) and the options;
  ``endpoints(domain)`` says where a registry's API lives (mirrors first for pulls, as Docker's
  ``registry-mirrors``; ``registry-1.docker.io`` for ``docker.io``; plain HTTP only for hosts in
  ``options.insecure``); ``repository(domain, path, endpoint)`` binds one.
- ``Repository``: ``get_manifest`` (Accept: OCI index and manifest, Docker list and schema 2;
  bytes checked against the digest asked for, or the ``Docker-Content-Digest`` the registry
  claims), ``head_manifest``, ``put_manifest``, ``blob_size`` (HEAD), ``fetch_blob`` (streamed
  into a content-store writer, resumed with ``Range`` after a dropped connection), ``mount_blob``
  (cross-repository mount), ``upload_blob`` (POST, then one PUT or PATCH chunks and a PUT),
  ``tags``.

Faults: a request that fails for a transient reason (connection dropped or reset, timeout,
HTTP 429/500/502/503/504) is retried ``options.retries`` times with exponential backoff
(``Retry-After`` honoured, capped); a blob download resumes from the bytes it already has.
A refused connection on the first contact with an endpoint is not retried (a registry that is
not there is not coming): it raises ``Unreachable`` at once, so a pull can fall back from a dead
mirror to the origin quickly.

Errors: ``NotFound`` (repository, manifest, tag or blob unknown), ``Unauthorized``
(``graph.distribution.auth``), ``DigestMismatch`` (bytes are not what was asked for), ``InvalidInput``
(the registry refused what we sent, or sent something malformed: an oversized manifest),
``RegistryError`` (the registry or the network failed: 5xx after retries, protocol errors),
``Unreachable`` (nobody listens there). Messages are one line and name the registry and object.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from graph.distribution.errors import RegistryError, Unreachable
from graph.distribution.auth import Authenticator, Credentials, Unauthorized, load_credentials, normalize_host, scope
from graph.digest import Digest
from graph.errors import DigestMismatch, InvalidInput, LaminaError, NotFound, Unsupported
from graph.oci.formats import MANIFEST_ACCEPT, MAX_MANIFEST_SIZE

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from graph.content import Writer

DOCKER_HUB_API = "https://registry-1.docker.io"
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_ERROR_BODY = 64 << 10
MAX_TAG_PAGES = 1000
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries. All fields have working defaults.

    ``insecure``: registry hosts (``127.0.0.1:5000``) reached over plain HTTP; every other
    host is HTTPS. ``mirrors``: registry host -> mirror base URLs (``http://127.0.0.1:5001``,
    scheme required) tried in order before the registry itself, for pulls only (Docker applies
    its ``registry-mirrors`` to ``docker.io``; give them under that key). ``credentials_file``:
    a Docker client ``config.json``; ``credentials``: explicit credentials by host, which win
    over the file (``lamina login`` checks new ones this way). ``retries``/``backoff``/
    ``max_backoff``: transient failures are retried ``retries`` times, waiting ``backoff``,
    doubled each time up to ``max_backoff`` seconds. ``chunk_size``: a push uploads blobs larger
    than this in PATCH chunks of this size, smaller ones in a single PUT.
    """

    insecure: frozenset[str] = frozenset()
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    credentials_file: "Path | None" = None
    credentials: Mapping[str, Credentials] = field(default_factory=dict)
    retries: int = 4
    backoff: float = 0.25
    max_backoff: float = 4.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    chunk_size: int = 64 << 20
    max_connections: int = 16
    user_agent: str = "lamina/0.1"


@dataclass(frozen=True)
class Endpoint:
    """Where a registry's API answers: ``base`` URL (scheme and host, no path), ``host``
    (``host:port``, for credentials and messages) and whether it is a mirror."""

    base: str
    host: str
    mirror: bool = False

    def __str__(self) -> str:
        return f"mirror {self.base}" if self.mirror else self.host


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest or index as the registry served it: exact bytes, the Content-Type it said,
    and the digest of the bytes."""

    raw: bytes
    media_type: str
    digest: Digest


@dataclass(frozen=True)
class MountResult:
    """``mounted``: the blob is now in the repository. Otherwise the registry opened an upload
    session instead (``upload_url``) that ``upload_blob`` can use."""

    mounted: bool
    upload_url: str | None = None


def _load_httpx() -> None:
    """Import httpx and httpcore without trio, once.

    httpcore imports trio (installed here for pyfuse3) just in case an *async* client runs under
    trio: about a third of a second of start-up, more than the rest of a small pull's CPU.
    lamina uses httpx's synchronous client only, so while httpcore loads, ``import trio`` is made
    to fail (a ``None`` entry in ``sys.modules``, the documented way to block an import); the entry
    is removed at once, so pyfuse3 (or anyone) importing trio later gets the real module. When
    trio or httpcore is already loaded this does nothing."""
    import sys

    if "httpcore" in sys.modules or "trio" in sys.modules:
        import httpx  # noqa: F401
        return
    sys.modules["trio"] = None  # type: ignore[assignment]
    try:
        import httpcore  # noqa: F401
        import httpx  # noqa: F401
    finally:
        if sys.modules.get("trio", 0) is None:
            del sys.modules["trio"]


class _SchemeTransport:
    """httpx's transport, one pool per scheme, the TLS one built on the first https request.

    ``httpx.Client()`` builds an SSL context and loads the CA bundle when it is made (hundreds of
    ms on a loaded machine), which a pull from a plain-HTTP registry never uses. HTTP/1.1 only,
    keep-alive, and no proxies from the environment, as before."""

    def __init__(self, limits: "httpx.Limits") -> None:
        import httpx

        self._limits = limits
        # verify=False: an http:// pool never does TLS, so it needs no CA bundle
        self._plain = httpx.HTTPTransport(verify=False, http1=True, http2=False, limits=limits, trust_env=False)
        self._tls: httpx.HTTPTransport | None = None
        self._lock = threading.Lock()

    def _tls_transport(self) -> "httpx.HTTPTransport":
        with self._lock:
            if self._tls is None:
                import httpx

                self._tls = httpx.HTTPTransport(http1=True, http2=False, limits=self._limits, trust_env=False)
            return self._tls

    def handle_request(self, request: "httpx.Request") -> "httpx.Response":
        if request.url.scheme == "http":
            return self._plain.handle_request(request)
        return self._tls_transport().handle_request(request)

    def close(self) -> None:
        self._plain.close()
        if self._tls is not None:
            self._tls.close()

    def __enter__(self) -> "_SchemeTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RegistryClient:
    """One pooled HTTP client and authenticator for a pull or push (or a login check). Use it
    as a context manager, or call ``close``. Thread-safe."""

    def __init__(self, options: RegistryOptions | None = None) -> None:
        _load_httpx()
        import httpx

        self.options = options or RegistryOptions()
        o = self.options
        limits = httpx.Limits(max_connections=o.max_connections, max_keepalive_connections=o.max_connections)
        self.http = httpx.Client(
            timeout=httpx.Timeout(o.read_timeout, connect=o.connect_timeout),
            transport=_SchemeTransport(limits),
            headers={"User-Agent": o.user_agent},
            follow_redirects=False,
            trust_env=False,  # no proxies or netrc from the environment: the CLI decides config
        )
        self.auth = Authenticator(self._credentials_for, self.http, user_agent=o.user_agent)
        self._cred_cache: dict[str, Credentials | None] = {}
        self._cred_lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- where ---------------------------------------------------------------------------------

    def origin(self, domain: str) -> Endpoint:
        """The registry's own API endpoint."""
        host = normalize_host(domain)
        if host == "docker.io":
            return Endpoint(DOCKER_HUB_API, "docker.io")
        scheme = "http" if domain in self.options.insecure or host in self.options.insecure else "https"
        return Endpoint(f"{scheme}://{domain}", domain)

    def endpoints(self, domain: str, *, pull: bool = True) -> list[Endpoint]:
        """Endpoints to try in order: for a pull the configured mirrors of ``domain``, then the
        registry itself; for a push only the registry."""
        out: list[Endpoint] = []
        if pull:
            for url in self.options.mirrors.get(domain, ()) or self.options.mirrors.get(normalize_host(domain), ()):
                out.append(mirror_endpoint(url))
        out.append(self.origin(domain))
        return out

    def repository(
        self, path: str, endpoint: Endpoint, fallbacks: list[Endpoint] | None = None, *, push: bool = False
    ) -> "Repository":
        """Repository ``path`` on ``endpoint``. ``push``: every request asks for the push scope
        (one token for the whole push instead of a pull token and a push token)."""
        return Repository(self, path, endpoint, list(fallbacks or []), push=push)

    def _credentials_for(self, host: str) -> Credentials | None:
        key = normalize_host(host)
        explicit = self.options.credentials.get(host) or self.options.credentials.get(key)
        if explicit is not None:
            return explicit
        with self._cred_lock:
            if key not in self._cred_cache:
                self._cred_cache[key] = load_credentials(self.options.credentials_file, key)
            return self._cred_cache[key]

    # -- the request core ----------------------------------------------------------------------

    def ping(self, endpoint: Endpoint) -> None:
        """``GET /v2/``, authenticating if challenged (a login check: with Bearer auth this asks
        the token server for a token with the credentials, so wrong ones are refused).
        Raises: Unreachable, Unauthorized, RegistryError (not a v2 registry)."""
        with self.request(endpoint, "GET", "/v2/", (), first_contact=True) as r:
            if r.status_code != 200:
                raise _error(r, f"{endpoint}: /v2/ probe")

    def request(
        self,
        endpoint: Endpoint,
        method: str,
        url: str,
        scopes: tuple[str, ...],
        *,
        headers: dict[str, str] | None = None,
        content: Callable[[], Any] | None = None,
        stream: bool = False,
        retry: bool = True,
        first_contact: bool = False,
        follow_redirects: bool = False,
        cancel: threading.Event | None = None,
    ) -> "_Response":
        """Send one request and return the response (a context manager: close it). ``url`` is
        a path on ``endpoint`` or an absolute URL (upload locations). ``content()`` makes the
        body anew for each attempt. 401 is answered through the authenticator (once); transient
        failures are retried when ``retry``. Non-transient error statuses are returned for the
        caller to classify.
        """
        import httpx

        full = url if url.startswith(("http://", "https://")) else endpoint.base + url
        # credentials go to the endpoint only: an upload Location on another host gets none
        ours = full == endpoint.base or full.startswith(endpoint.base + "/")
        o = self.options
        attempt = 0
        auth_header = self.auth.header(endpoint.host, scopes) if ours else None
        answered = False
        while True:
            h = dict(headers or {})
            if auth_header is not None:
                h["Authorization"] = auth_header
            try:
                req = self.http.build_request(method, full, headers=h, content=content() if content else None)
                resp = self.http.send(req, stream=True, follow_redirects=follow_redirects)
            except httpx.ConnectError as e:
                if first_contact or not retry or attempt >= o.retries:
                    raise Unreachable(f"cannot reach {endpoint}: {_reason(e)}") from None
                attempt += 1
                _sleep(_delay(o, attempt, None), cancel)
                continue
            except httpx.TransportError as e:
                if not retry or attempt >= o.retries:
                    raise RegistryError(f"{endpoint}: {method} {_path(full)} failed: {_reason(e)}") from None
                attempt += 1
                _sleep(_delay(o, attempt, None), cancel)
                continue
            first_contact = False
            if resp.status_code == 401 and ours:
                challenge = resp.headers.get_list("www-authenticate")
                resp.close()
                if answered:
                    raise self.auth.refusal(endpoint.host, scopes)
                auth_header = self.auth.answer(endpoint.host, challenge, scopes, refused=auth_header)
                answered = True
                continue
            if resp.status_code in TRANSIENT_STATUS and retry and attempt < o.retries:
                after = resp.headers.get("retry-after")
                resp.close()
                attempt += 1
                _sleep(_delay(o, attempt, after), cancel)
                continue
            r = _Response(resp)
            if not stream:
                try:
                    r.read_limited(MAX_ERROR_BODY if resp.status_code >= 300 else MAX_MANIFEST_SIZE)
                except BaseException:
                    r.close()
                    raise
            return r


class _Response:
    """An ``httpx.Response`` opened for streaming, closed by the context manager."""

    def __init__(self, resp: "httpx.Response") -> None:
        self.resp = resp
        self.status_code = resp.status_code
        self.headers = resp.headers
        self.body: bytes | None = None

    def read_limited(self, limit: int) -> bytes:
        """The whole body, refusing more than ``limit`` bytes (InvalidInput)."""
        if self.body is not None:
            return self.body
        import httpx

        n = self.resp.headers.get("content-length")
        if n is not None and n.isdigit() and int(n) > limit:
            raise InvalidInput(f"{_path(str(self.resp.url))}: response of {n} bytes, over the {limit}-byte limit")
        parts: list[bytes] = []
        total = 0
        try:
            for chunk in self.resp.iter_raw():
                total += len(chunk)
                if total > limit:
                    raise InvalidInput(f"{_path(str(self.resp.url))}: response over the {limit}-byte limit")
                parts.append(chunk)
        except httpx.TransportError as e:
            raise RegistryError(f"{_path(str(self.resp.url))}: reading the response failed: {_reason(e)}") from None
        self.body = b"".join(parts)
        return self.body

    def close(self) -> None:
        self.resp.close()

    def __enter__(self) -> "_Response":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Repository:
    """One repository on one endpoint (``fallbacks``: endpoints a blob is fetched from when
    this one does not have it, e.g. the origin behind a mirror)."""

    def __init__(
        self, client: RegistryClient, path: str, endpoint: Endpoint, fallbacks: list[Endpoint], *, push: bool = False
    ) -> None:
        self.client = client
        self.path = path
        self.endpoint = endpoint
        self.fallbacks = fallbacks
        self.push_mode = push

    def __repr__(self) -> str:
        return f"<Repository {self.endpoint.base}/{self.path}>"

    @property
    def name(self) -> str:
        return f"{self.endpoint.host}/{self.path}"

    def _pull(self) -> tuple[str, ...]:
        return (scope(self.path, "pull,push" if self.push_mode else "pull"),)

    def _push(self) -> tuple[str, ...]:
        return (scope(self.path, "pull,push"),)

    # -- manifests -----------------------------------------------------------------------------

    def get_manifest(self, reference: str, *, first_contact: bool = False) -> FetchedManifest:
        """The manifest (or index) for a tag or digest, verified.

        Requires: nothing.  Effect: none.
        Raises: NotFound, Unauthorized, Unreachable, RegistryError; InvalidInput (over
        ``MAX_MANIFEST_SIZE``); DigestMismatch (bytes do not hash to the digest asked for, or
        to the ``Docker-Content-Digest`` the registry sent).
        Repeat: yes.
        """
        url = f"/v2/{self.path}/manifests/{reference}"
        with self.client.request(self.endpoint, "GET", url, self._pull(), headers={"Accept": MANIFEST_ACCEPT},
                                 first_contact=first_contact) as r:
            if r.status_code != 200:
                raise _error(r, f"{self.name}:{reference}" if not reference.startswith("sha256:") else f"{self.name}@{reference}")
            raw = r.body or b""
            mt = (r.headers.get("content-type") or "").split(";", 1)[0].strip()
            claimed = r.headers.get("docker-content-digest")
        digest = Digest.of(raw)
        if reference.startswith("sha256:"):
            if digest != reference:
                raise DigestMismatch(f"{self.name}@{reference}: registry sent a manifest that hashes to {digest}")
        elif claimed and claimed.startswith("sha256:") and claimed != digest:
            raise DigestMismatch(f"{self.name}:{reference}: manifest hashes to {digest}, registry claims {claimed}")
        return FetchedManifest(raw, mt, digest)

    def head_manifest(self, reference: str) -> tuple[Digest, str, int] | None:
        """(digest, media type, size) of a manifest without its body, or None when unknown.
        The digest is the registry's ``Docker-Content-Digest`` claim (None-safe: a registry
        that sends none gets a GET instead)."""
        url = f"/v2/{self.path}/manifests/{reference}"
        with self.client.request(self.endpoint, "HEAD", url, self._pull(), headers={"Accept": MANIFEST_ACCEPT}) as r:
            if r.status_code == 404:
                return None
            if r.status_code != 200:
                raise _error(r, f"{self.name}:{reference}")
            claimed = r.headers.get("docker-content-digest")
            mt = (r.headers.get("content-type") or "").split(";", 1)[0].strip()
            size = int(r.headers.get("content-length") or 0)
        if not claimed:
            m = self.get_manifest(reference)
            return m.digest, m.media_type, len(m.raw)
        return Digest(claimed), mt, size

    def put_manifest(self, reference: str, raw: bytes, media_type: str) -> Digest:
        """Upload a manifest under a tag or its digest; returns its digest.

        Requires: every blob it references is in the repository (the registry checks).
        Effect: the tag points at the manifest.
        Raises: InvalidInput (the registry refused it: MANIFEST_INVALID, BLOB_UNKNOWN...),
        Unauthorized, RegistryError; DigestMismatch (the registry computed another digest).
        Repeat: yes.
        """
        digest = Digest.of(raw)
        url = f"/v2/{self.path}/manifests/{reference}"
        with self.client.request(self.endpoint, "PUT", url, self._push(), headers={"Content-Type": media_type},
                                 content=lambda: raw) as r:
            if r.status_code not in (200, 201, 202):
                raise _error(r, f"manifest {digest} to {self.name}:{reference}")
            claimed = r.headers.get("docker-content-digest")
        if claimed and claimed != digest:
            raise DigestMismatch(f"{self.name}:{reference}: registry stored the manifest as {claimed}, not {digest}")
        return digest

    def tags(self) -> list[str]:
        """Every tag of the repository (following ``Link`` pagination)."""
        out: list[str] = []
        url: str | None = f"/v2/{self.path}/tags/list?n=1000"
        pages = 0
        while url is not None and pages < MAX_TAG_PAGES:
            pages += 1
            with self.client.request(self.endpoint, "GET", url, self._pull()) as r:
                if r.status_code != 200:
                    raise _error(r, f"tags of {self.name}")
                try:
                    doc = json.loads(r.body or b"")
                except (ValueError, UnicodeDecodeError):
                    raise InvalidInput(f"tags of {self.name}: invalid JSON") from None
                link = r.headers.get("link")
            tags = doc.get("tags") if isinstance(doc, dict) else None
            if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
                raise InvalidInput(f"tags of {self.name}: \"tags\" must be a list of strings")
            out += tags or []
            url = _next_link(link)
        return out

    # -- blobs ---------------------------------------------------------------------------------

    def blob_size(self, digest: Digest) -> int | None:
        """Size of a blob the repository has (HEAD), or None if it has not."""
        with self.client.request(self.endpoint, "HEAD", f"/v2/{self.path}/blobs/{digest}", self._pull(),
                                 follow_redirects=True) as r:
            if r.status_code == 404:
                return None
            if r.status_code != 200:
                raise _error(r, f"blob {digest} in {self.name}")
            n = r.headers.get("content-length")
            return int(n) if n and n.isdigit() else -1

    def fetch_blob(
        self,
        digest: Digest,
        size: int,
        writer: "Writer",
        *,
        on_bytes: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
        nondistributable: bool = False,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        """Stream blob ``digest`` into ``writer`` from ``writer.offset`` on (a resumed ingest
        asks only for the rest, with ``Range``); the caller commits the writer, which checks
        size and digest. A dropped connection or a transient status resumes from the bytes
        already written; the retry budget is spent only by attempts that made no progress.
        A mirror that lacks the blob hands over to the fallbacks. ``on_retry(reason)`` is
        called before each wait for another attempt.

        Requires: ``writer`` was opened with ``digest`` and ``size``.
        Effect: ``writer.offset == size`` on return (unless the registry sent more or other
        bytes: the writer refuses more than ``size`` with DigestMismatch at once).
        Raises: NotFound (no endpoint has it; Unsupported for a non-distributable layer),
        DigestMismatch, Unauthorized, Unreachable, RegistryError (retries exhausted),
        ``Cancelled`` when ``cancel`` is set.
        Repeat: yes (it resumes).
        """
        endpoints = [self.endpoint] + self.fallbacks
        last: LaminaError | None = None
        for i, ep in enumerate(endpoints):
            try:
                self._fetch_from(ep, digest, size, writer, on_bytes, cancel, on_retry)
                return
            except NotFound as e:
                last = e
            except (Unreachable, RegistryError, Unauthorized) as e:
                if not ep.mirror or i == len(endpoints) - 1:
                    raise
                last = e
        if nondistributable:
            raise Unsupported(f"{self.name}: non-distributable layer {digest} is not in the registry; lamina fetches only from registries")
        assert last is not None
        raise last

    def _fetch_from(
        self,
        ep: Endpoint,
        digest: Digest,
        size: int,
        writer: "Writer",
        on_bytes: Callable[[int], None] | None,
        cancel: threading.Event | None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        import httpx

        o = self.client.options
        failures = 0
        url = f"/v2/{self.path}/blobs/{digest}"
        while writer.offset < size or size == 0:
            _check_cancel(cancel)
            start = writer.offset
            headers = {"Accept-Encoding": "identity"}
            if start > 0:
                headers["Range"] = f"bytes={start}-"
            progressed = False
            try:
                with self.client.request(ep, "GET", url, self._pull(), headers=headers, stream=True, retry=False,
                                         follow_redirects=True, cancel=cancel) as r:
                    if r.status_code == 404:
                        raise _error(r, f"blob {digest} in {ep.host}/{self.path}", read=True)
                    if r.status_code == 416 and start > 0:
                        raise DigestMismatch(f"blob {digest}: registry has fewer bytes than the {start} already received")
                    if r.status_code not in (200, 206):
                        raise _error(r, f"blob {digest} in {ep.host}/{self.path}", read=True)
                    skip = 0
                    if r.status_code == 206:
                        got, total = _content_range(r.headers.get("content-range"))
                        if got != start:
                            raise RegistryError(f"blob {digest}: asked for bytes from {start}, registry sent from {got}")
                    else:
                        skip = start  # no Range support: the whole blob again; drop what we have
                        n = r.headers.get("content-length")
                        total = int(n) if n is not None and n.isdigit() else None
                    if total is not None and total != size:
                        raise DigestMismatch(f"blob {digest}: registry has {total} bytes, the descriptor says {size}")
                    hook = cancel.hook(_interrupter(r)) if isinstance(cancel, Cancel) else None
                    try:
                        for chunk in r.resp.iter_raw():
                            if cancel is not None and cancel.is_set():
                                raise Cancelled(f"download of {digest} cancelled")
                            if skip:
                                if len(chunk) <= skip:
                                    skip -= len(chunk)
                                    continue
                                chunk = chunk[skip:]
                                skip = 0
                            writer.write(chunk)
                            progressed = True
                            if on_bytes is not None:
                                on_bytes(writer.offset)
                    finally:
                        if hook is not None:
                            cancel.unhook(hook)  # type: ignore[union-attr]
                    _check_cancel(cancel)
                if size == 0 or writer.offset >= size:
                    return
                # the body ended early without a transport error (a lying Content-Length is
                # caught by httpx; a short 200 is not): treat as a dropped connection
                raise httpx.RemoteProtocolError(f"body ended after {writer.offset} of {size} bytes")
            except (httpx.TransportError, RegistryError) as e:
                _check_cancel(cancel)  # the socket was shut down on purpose
                if isinstance(e, Unreachable) and ep.mirror:
                    raise
                failures = 0 if progressed else failures + 1
                if failures > o.retries:
                    raise RegistryError(
                        f"download of {digest} from {ep} failed after {o.retries + 1} tries: {_reason(e)}"
                    ) from None
                if on_retry is not None:
                    on_retry(_reason(e))
                _sleep(_delay(o, max(failures, 1), None), cancel)

    def mount_blob(self, digest: Digest, from_path: str) -> MountResult:
        """Ask the registry to link blob ``digest`` from repository ``from_path`` (same
        registry) into this one, without sending its bytes.

        Effect: 201 -> mounted. A registry that cannot (no such blob there, no pull right on
        the source, mounts disabled) opens an upload session instead (202), handed back for
        ``upload_blob``.
        Raises: Unauthorized (no push right), RegistryError.
        Repeat: yes.
        """
        scopes = (scope(self.path, "pull,push"), scope(from_path, "pull"))
        url = f"/v2/{self.path}/blobs/uploads/?mount={digest}&from={from_path}"
        with self.client.request(self.endpoint, "POST", url, scopes, content=lambda: b"") as r:
            if r.status_code == 201:
                return MountResult(True)
            if r.status_code == 202 and r.headers.get("location"):
                return MountResult(False, self._absolute(r.headers["location"]))
            if r.status_code in (404, 405):
                return MountResult(False)
            raise _error(r, f"mount of {digest} from {from_path} into {self.name}")

    def upload_blob(
        self,
        digest: Digest,
        size: int,
        open_blob: Callable[[], Any],
        *,
        upload_url: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        """Upload a blob: POST a session, then one PUT with the bytes (``size`` up to
        ``options.chunk_size``), or PATCH chunks followed by a closing PUT. ``open_blob()``
        opens the bytes anew (a file), for each attempt; a failed attempt starts a new session.

        Requires: ``open_blob()`` yields exactly the blob's bytes.
        Effect: the repository has the blob.
        Raises: DigestMismatch (the registry computed another digest: our bytes are wrong),
        InvalidInput (refused), Unauthorized, RegistryError (retries exhausted).
        Repeat: yes.
        """
        import httpx

        o = self.client.options
        failures = 0
        while True:
            _check_cancel(cancel)
            try:
                url = upload_url or self._start_upload()
                upload_url = None
                if size <= o.chunk_size:
                    self._put_whole(url, digest, size, open_blob, on_bytes)
                else:
                    self._put_chunked(url, digest, size, open_blob, on_bytes, cancel)
                return
            except (httpx.TransportError, RegistryError) as e:
                failures += 1
                if failures > o.retries or isinstance(e, Unreachable):
                    raise RegistryError(f"upload of {digest} to {self.name} failed: {_reason(e)}") from None
                _sleep(_delay(o, failures, None), cancel)

    def _absolute(self, location: str) -> str:
        if location.startswith(("http://", "https://")):
            return location
        return self.endpoint.base + (location if location.startswith("/") else "/" + location)

    def _start_upload(self) -> str:
        with self.client.request(self.endpoint, "POST", f"/v2/{self.path}/blobs/uploads/", self._push(),
                                 content=lambda: b"") as r:
            if r.status_code != 202 or not r.headers.get("location"):
                raise _error(r, f"upload session in {self.name}")
            return self._absolute(r.headers["location"])

    def _put_whole(self, url: str, digest: Digest, size: int, open_blob: Callable[[], Any],
                   on_bytes: Callable[[int], None] | None) -> None:
        import httpx

        target = str(httpx.URL(url).copy_merge_params({"digest": str(digest)}))
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with self.client.request(self.endpoint, "PUT", target, self._push(), headers=headers, retry=False,
                                 content=lambda: _file_body(open_blob, 0, size, on_bytes)) as r:
            self._check_done(r, digest)

    def _put_chunked(self, url: str, digest: Digest, size: int, open_blob: Callable[[], Any],
                     on_bytes: Callable[[int], None] | None, cancel: threading.Event | None) -> None:
        import httpx

        step = self.client.options.chunk_size
        offset = 0
        while offset < size:
            _check_cancel(cancel)
            n = min(step, size - offset)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(n),
                       "Content-Range": f"{offset}-{offset + n - 1}"}
            with self.client.request(self.endpoint, "PATCH", url, self._push(), headers=headers, retry=False,
                                     content=lambda o=offset, k=n: _file_body(open_blob, o, k, on_bytes)) as r:
                if r.status_code != 202 or not r.headers.get("location"):
                    raise _error(r, f"chunk {offset}-{offset + n - 1} of {digest} to {self.name}")
                url = self._absolute(r.headers["location"])
            offset += n
        target = str(httpx.URL(url).copy_merge_params({"digest": str(digest)}))
        with self.client.request(self.endpoint, "PUT", target, self._push(), retry=False,
                                 headers={"Content-Length": "0"}, content=lambda: b"") as r:
            self._check_done(r, digest)

    def _check_done(self, r: _Response, digest: Digest) -> None:
        if r.status_code != 201:
            err = _error(r, f"blob {digest} to {self.name}")
            if isinstance(err, InvalidInput) and "DIGEST_INVALID" in str(err):
                raise DigestMismatch(f"{self.name}: registry says the uploaded bytes are not {digest}")
            raise err
        claimed = r.headers.get("docker-content-digest")
        if claimed and claimed != digest:
            raise DigestMismatch(f"{self.name}: registry stored {claimed}, not {digest}")


class Cancelled(LaminaError):
    """An operation was stopped because another part of it failed (or the user interrupted)."""


class Cancel(threading.Event):
    """A cancel flag that also interrupts transfers in flight: ``set()`` shuts down the sockets
    of responses being read (a download blocked on a stalled server wakes at once, instead of
    at its read timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self._hooks: dict[int, Callable[[], None]] = {}
        self._hooks_lock = threading.Lock()
        self._next = 0

    def set(self) -> None:
        super().set()
        with self._hooks_lock:
            hooks = list(self._hooks.values())
        for hook in hooks:
            try:
                hook()
            except OSError:
                pass

    def hook(self, fn: Callable[[], None]) -> int:
        with self._hooks_lock:
            self._next += 1
            self._hooks[self._next] = fn
            key = self._next
        if self.is_set():
            fn()
        return key

    def unhook(self, key: int) -> None:
        with self._hooks_lock:
            self._hooks.pop(key, None)


def _interrupter(r: "_Response") -> Callable[[], None]:
    """A function that shuts down the socket under a streaming response."""
    import socket

    stream = r.resp.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None

    def shut() -> None:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)

    return shut


# ------------------------------------------------------------------------------ helpers


def mirror_endpoint(url: str) -> Endpoint:
    """An endpoint for a mirror base URL (``http://127.0.0.1:5001``, ``https://mirror.example``).
    Raises InvalidInput for anything else (a scheme is required: plain HTTP must be explicit)."""
    u = url.strip().rstrip("/")
    if not u.startswith(("http://", "https://")):
        raise InvalidInput(f"registry mirror {url!r}: needs http:// or https://")
    rest = u.split("://", 1)[1]
    if not rest or "/" in rest or any(c.isspace() for c in rest):
        raise InvalidInput(f"registry mirror {url!r}: give scheme and host[:port] only")
    return Endpoint(u, rest, mirror=True)


def _file_body(open_blob: Callable[[], Any], offset: int, count: int,
               on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
    f = open_blob()
    try:
        if offset:
            f.seek(offset)
        left = count
        sent = offset
        while left > 0:
            data = f.read(min(_CHUNK, left))
            if not data:
                raise InvalidInput(f"blob file ended {left} bytes early")
            left -= len(data)
            sent += len(data)
            yield data
            if on_bytes is not None:
                on_bytes(sent)
    finally:
        f.close()


def _next_link(link: str | None) -> str | None:
    if not link:
        return None
    for part in link.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            start, end = part.find("<"), part.find(">")
            if 0 <= start < end:
                target = part[start + 1:end]
                if target.startswith("/v2/") or target.startswith(("http://", "https://")):
                    return target
    return None


def _content_range(content_range: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of ``bytes 100-199/200``; None for parts that are missing."""
    if not content_range or not content_range.startswith("bytes "):
        return None, None
    span, _, total = content_range[6:].partition("/")
    first = span.split("-", 1)[0]
    return (int(first) if first.isdigit() else None), (int(total) if total.isdigit() else None)


def _delay(o: RegistryOptions, attempt: int, retry_after: str | None) -> float:
    d = min(o.backoff * (2 ** (attempt - 1)), o.max_backoff)
    if retry_after and retry_after.strip().isdigit():
        d = max(d, min(float(retry_after.strip()), o.max_backoff * 4))
    return d


def _sleep(seconds: float, cancel: threading.Event | None) -> None:
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise Cancelled("cancelled")


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")


def _reason(e: BaseException) -> str:
    s = " ".join(str(e).split())
    if "Connection refused" in s or "Errno 111" in s:
        return "connection refused"
    return s[:200] or type(e).__name__


def _path(url: str) -> str:
    return url.split("?", 1)[0]


def _error(r: _Response, what: str, *, read: bool = False) -> LaminaError:
    """The lamina error for a registry's error answer (the spec's ``{"errors": [...]}`` body
    gives the code and message)."""
    body = b""
    try:
        body = r.read_limited(MAX_ERROR_BODY) if (read or r.body is None) else r.body
    except LaminaError:
        pass
    detail = ""
    code = ""
    try:
        doc = json.loads(body) if body else None
        errs = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            code = str(errs[0].get("code") or "")
            detail = str(errs[0].get("message") or "")
    except (ValueError, UnicodeDecodeError):
        pass
    detail = " ".join(f"{code} {detail}".split())[:200]
    text = f"{what}: {detail or 'HTTP ' + str(r.status_code)}"
    s = r.status_code
    if s == 404:
        return NotFound(f"{what}: not found" + (f" ({detail})" if detail else ""))
    if s in (401, 403):
        return Unauthorized(f"{what}: denied" + (f" ({detail})" if detail else ""))
    if s in (400, 405, 411, 413, 415, 416, 422):
        return InvalidInput(f"{text} (HTTP {s})" if detail else text)
    return RegistryError(text)


__all__ = ["Cancel", "Cancelled", "Endpoint", "FetchedManifest", "MountResult", "RegistryClient", "RegistryError",
           "RegistryOptions", "Repository", "Unreachable", "mirror_endpoint"]
