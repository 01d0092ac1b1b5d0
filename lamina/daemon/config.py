"""The daemon's configuration: Docker's ``daemon.json`` keys lamina honours, with command-line
flags overriding the file (as ``dockerd`` does, except that dockerd refuses a key given both
ways; lamina lets the flag win, which is what a one-off ``--host`` for a test wants).

File: ``--config-file PATH``, default ``/etc/lamina/daemon.json`` (a missing default file is an
empty configuration; a missing file named explicitly is an error). Keys:

- ``registry-mirrors``: mirror URLs for Docker Hub (``http://127.0.0.1:5001``);
- ``insecure-registries``: registry hosts (``host:port``) reached over plain HTTP; loopback
  registries (``127.0.0.0/8``, ``localhost``, ``::1``) are always insecure, as in Docker;
- ``data-root``: the store's root; ``storage-driver``: its graphdriver for a new root;
- ``hosts``: listeners (``unix:///run/lamina/lamina.sock``, ``tcp://127.0.0.1:2375``);
- ``default-runtime``: ``crun`` or ``runc``;
- ``log-level``: ``debug``, ``info``, ``warn``, ``error``, ``fatal``.

Unknown keys are refused (a typo must not be silently ignored).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from graph.errors import InvalidInput

DEFAULT_CONFIG_FILE = "/etc/lamina/daemon.json"
DEFAULT_HOST = "unix:///run/lamina/lamina.sock"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
KNOWN = {"registry-mirrors", "insecure-registries", "data-root", "storage-driver", "hosts",
         "default-runtime", "log-level"}


@dataclass
class DaemonConfig:
    root: str
    driver: str | None = None
    hosts: list[str] = field(default_factory=lambda: [DEFAULT_HOST])
    mirrors: list[str] = field(default_factory=list)
    insecure: list[str] = field(default_factory=list)
    runtime: str | None = None
    log_level: str = "info"


def read_file(path: str | None) -> dict[str, Any]:
    """The JSON object in ``path`` (``None``: the default file, which may be absent)."""
    explicit = path is not None
    path = path or DEFAULT_CONFIG_FILE
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if explicit:
            raise InvalidInput(f"daemon config file {path} does not exist") from None
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise InvalidInput(f"daemon config file {path}: not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"daemon config file {path}: want a JSON object")
    unknown = sorted(set(doc) - KNOWN)
    if unknown:
        raise InvalidInput(f"daemon config file {path}: unknown key(s) {', '.join(unknown)}")
    return doc


def _strings(doc: dict[str, Any], key: str) -> list[str] | None:
    if key not in doc:
        return None
    v = doc[key]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise InvalidInput(f"daemon config: {key} must be a list of strings")
    return list(v)


def _string(doc: dict[str, Any], key: str) -> str | None:
    if key not in doc:
        return None
    v = doc[key]
    if not isinstance(v, str) or not v:
        raise InvalidInput(f"daemon config: {key} must be a non-empty string")
    return v


def build(doc: dict[str, Any], *, root: str | None, root_default: str, driver: str | None,
          hosts: list[str] | None, runtime: str | None, log_level: str | None,
          mirrors: list[str] | None = None, insecure: list[str] | None = None) -> DaemonConfig:
    """The effective configuration: each flag given (not None) wins over the file's key."""
    cfg = DaemonConfig(root=root or _string(doc, "data-root") or root_default)
    cfg.driver = driver or _string(doc, "storage-driver")
    cfg.hosts = hosts or _strings(doc, "hosts") or [DEFAULT_HOST]
    cfg.mirrors = mirrors if mirrors else (_strings(doc, "registry-mirrors") or [])
    cfg.insecure = insecure if insecure else (_strings(doc, "insecure-registries") or [])
    cfg.runtime = runtime or _string(doc, "default-runtime")
    cfg.log_level = log_level or _string(doc, "log-level") or "info"
    if cfg.log_level not in LOG_LEVELS:
        raise InvalidInput(f"invalid log-level {cfg.log_level!r}: one of {', '.join(LOG_LEVELS)}")
    if cfg.runtime is not None and cfg.runtime not in ("crun", "runc"):
        raise InvalidInput(f"invalid default-runtime {cfg.runtime!r}: crun or runc")
    for h in cfg.hosts:
        parse_host(h)
    for m in cfg.mirrors:
        u = urlsplit(m)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise InvalidInput(f"invalid registry mirror {m!r}: want http(s)://host[:port]")
    return cfg


def parse_host(url: str) -> tuple[str, str, int]:
    """``unix:///path`` -> ("unix", path, 0); ``tcp://127.0.0.1:2375`` -> ("tcp", host, port).
    A TCP listener must be on a loopback address: the API gives root to whoever reaches it."""
    if url.startswith("unix://"):
        path = url[len("unix://"):]
        if not path.startswith("/"):
            raise InvalidInput(f"invalid host {url!r}: want unix:///absolute/path")
        return "unix", path, 0
    if url.startswith("tcp://"):
        u = urlsplit(url)
        host = u.hostname or ""
        try:
            port = u.port or 2375
        except ValueError:
            raise InvalidInput(f"invalid host {url!r}: bad port") from None
        if host != "localhost":
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise InvalidInput(f"refusing to listen on {url}: only loopback addresses (127.0.0.1, ::1)")
        return "tcp", host, port
    raise InvalidInput(f"invalid host {url!r}: want unix:///path or tcp://127.0.0.1:PORT")


def is_loopback_registry(domain: str) -> bool:
    """Docker treats registries on 127.0.0.0/8 (and localhost, ::1) as insecure by default."""
    host = domain
    if host.startswith("["):
        host = host[1:].split("]")[0]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
