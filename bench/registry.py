"""A local registry for the bench: Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1 on
a free port, with its own config and storage in the bench's work dir, stopped by PID.

``push_layout`` uploads a workload's OCI layout with plain HTTP (monolithic blob uploads, then the
manifest). That is setup, never timed, and deliberately not lamina's own push: the images the
bench pulls must not depend on the code under test.
"""

from __future__ import annotations

import contextlib
import json
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

from bench.workloads import Workload

REGISTRY_BIN = "docker-registry"


class RegistryError(RuntimeError):
    """The registry did not start, or a push failed."""


def unavailable() -> str | None:
    if shutil.which(REGISTRY_BIN) is None:
        return "docker-registry is not installed (apt install docker-registry)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    host: str  # "127.0.0.1:PORT"
    root: Path
    pid: int

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, w: Workload) -> str:
        """The workload's reference in this registry."""
        return f"{self.host}/{w.ref}"

    def blob_files(self) -> list[Path]:
        """Where the registry keeps blob data (warmed before a timed pull)."""
        base = self.root / "storage" / "docker" / "registry" / "v2" / "blobs"
        return [p for p in base.rglob("data")] if base.exists() else []


@contextlib.contextmanager
def run_registry(workdir: Path, *, auth: str = "") -> Iterator[Registry]:
    """Start a registry, wait until it answers, yield it; stop it (SIGTERM, then SIGKILL) by PID.

    ``auth`` is an ``auth:`` section of distribution's config (htpasswd or token), for the tests
    of lamina's registry client; the bench itself runs anonymous."""
    reason = unavailable()
    if reason:
        raise RegistryError(reason)
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    if storage.exists():
        shutil.rmtree(storage)  # a fresh registry per run: pushes are cheap, stale state is not
    storage.mkdir()
    port = free_port()
    cfg = workdir / "config.yml"
    cfg.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        + auth
    )
    log = open(workdir / "registry.log", "wb")
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    reg = Registry(f"127.0.0.1:{port}", workdir, proc.pid)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RegistryError(f"docker-registry exited: {(workdir / 'registry.log').read_text()[-500:]}")
            try:
                urllib.request.urlopen(f"{reg.url}/v2/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # answered
            except OSError:
                if time.monotonic() > deadline:
                    raise RegistryError("docker-registry did not answer within 20 s") from None
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


def _request(method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
             body_file: Path | None = None) -> tuple[int, dict[str, str]]:
    hdrs = dict(headers or {})
    if body_file is not None:
        size = body_file.stat().st_size
        hdrs["Content-Length"] = str(size)
        with open(body_file, "rb") as f:
            req = urllib.request.Request(url, data=f, method=method, headers=hdrs)  # type: ignore[arg-type]
            with urllib.request.urlopen(req, timeout=600) as r:
                return r.status, dict(r.headers)
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def push_layout(reg: Registry, w: Workload) -> str:
    """Upload the workload's blobs and manifest; returns the pushed reference."""
    repo, _, tag = w.ref.rpartition(":")
    blobs = Path(w.layout) / "blobs" / "sha256"
    index = json.loads((Path(w.layout) / "index.json").read_text())
    mdesc = index["manifests"][0]
    manifest = (blobs / mdesc["digest"].split(":", 1)[1]).read_bytes()
    m = json.loads(manifest)
    for desc in [m["config"], *m["layers"]]:
        digest = desc["digest"]
        status, _ = _request("HEAD", f"{reg.url}/v2/{repo}/blobs/{digest}")
        if status == 200:
            continue
        status, hdrs = _request("POST", f"{reg.url}/v2/{repo}/blobs/uploads/", data=b"")
        if status != 202:
            raise RegistryError(f"push {w.name}: upload start for {digest}: HTTP {status}")
        loc = hdrs.get("Location") or hdrs.get("location") or ""
        if loc.startswith("/"):
            loc = reg.url + loc
        sep = "&" if "?" in loc else "?"
        status, _ = _request("PUT", f"{loc}{sep}digest={digest}",
                             headers={"Content-Type": "application/octet-stream"},
                             body_file=blobs / digest.split(":", 1)[1])
        if status != 201:
            raise RegistryError(f"push {w.name}: upload of {digest}: HTTP {status}")
    status, _ = _request("PUT", f"{reg.url}/v2/{repo}/manifests/{tag}", data=manifest,
                         headers={"Content-Type": mdesc["mediaType"]})
    if status != 201:
        raise RegistryError(f"push {w.name}: manifest: HTTP {status}")
    return reg.ref(w)
