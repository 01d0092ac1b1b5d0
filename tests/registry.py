"""A real OCI registry for tests and the bench: Debian's ``docker-registry`` (distribution 2.8) on
127.0.0.1 on a free port, with its own config and storage in a temp dir, stopped by PID.

Three flavours: anonymous; htpasswd Basic auth; Bearer tokens from a token server the caller runs
(``token_realm`` + ``token_cert``). Used as a context manager so it always stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    host: str  # "127.0.0.1:PORT"
    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}"


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
    """Start a registry and yield it; stop it (SIGTERM, then SIGKILL) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
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
    cfg = workdir / "config.yml"
    cfg.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        + auth
    )
    log = open(workdir / "registry.log", "wb")
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    reg = Registry(f"127.0.0.1:{port}", workdir, proc)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited: {(workdir / 'registry.log').read_text()[-2000:]}"
                )
            try:
                urllib.request.urlopen(f"{reg.url}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401 means it is up
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not come up in 20 s") from None
                time.sleep(0.05)
        yield reg
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
