"""The start phase's front doors: the same ``/bin/true`` started the way users start it, beside
the phase's in-process ``runtime.start`` + ``runtime.wait`` and the peers' ``podman run --rm``.

====================  ===========================================================================
start/cli             ``lamina --root R --driver D run --rm --network none IMG /bin/true``: a fresh
                      process, call to exit (Python's start, imports, store open, create, mount,
                      start, exit recorded, removed)
start/daemon          ``docker run --rm --network none IMG /bin/true`` (the stock docker CLI)
                      against a ``lamina daemon`` the bench starts on the same store, call to
                      exit (create, attach, wait, start over the Engine API, removed)
====================  ===========================================================================

Both run on the lifecycle's own store (its image is there; the lifecycle's container is left
alone), with the code the worker runs (its ``lamina`` on ``PYTHONPATH``). Untimed around them:
the daemon's start (until ``/_ping`` answers), and one warm-up run of each path (bytecode
written, the daemon's worker thread has its store open: a daemon is long-lived). The daemon
listens on a unix socket in the lifecycle's store directory (a short directory in /tmp if that
path is too long for ``sun_path``) and is stopped by its PID (SIGTERM, then SIGKILL), also on
failure; what it leaves is the lifecycle's teardown's (``destroy_store``).

The cells are lifecycle phases named ``start/cli`` and ``start/daemon``; the report shows them
under ``start``. A path that cannot run here (no docker CLI, a revision without the daemon) is
recorded as skipped or failed with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PATHS = ("start/cli", "start/daemon")
TIMEOUT = 120.0
SUN_PATH_MAX = 100  # sun_path is 108 bytes with its NUL; keep a margin


def docker_cli() -> str | None:
    """The docker CLI to drive the daemon with (the newest first: /usr/local/bin on the team's
    machines has client 28, Debian's /usr/bin has 20.10)."""
    for p in ("/usr/local/bin/docker", "/usr/bin/docker"):
        if os.access(p, os.X_OK):
            return p
    return shutil.which("docker")


def _env(code_dir: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "DOCKER_HOST", "DOCKER_CONTEXT") and not k.startswith("LAMINA_")}
    env["PYTHONPATH"] = code_dir + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def _lamina(root: Path, driver: str) -> list[str]:
    return [sys.executable, "-m", "lamina", "--root", str(root), "--driver", driver]


def _timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=TIMEOUT)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        said = p.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"{Path(argv[0]).name} exited {p.returncode}: {said[-1] if said else ''}"[:300])
    return dt


def _answers(sock: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1)
        s.connect(sock)
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: lamina\r\nConnection: close\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        s.close()


def _stop(proc: "subprocess.Popen[bytes]") -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(15)


def _code_dir() -> str:
    import lamina

    return str(Path(lamina.__file__).resolve().parents[1])


def time_cli(root: Path, driver: str, image: str) -> dict[str, Any]:
    env = _env(_code_dir())
    argv = _lamina(root, driver) + ["run", "--rm", "--network", "none", image, "/bin/true"]
    try:
        _timed(argv, env)  # warm-up: bytecode, page cache
        return {"seconds": _timed(argv, env)}
    except Exception as e:  # noqa: BLE001 - recorded, the lifecycle goes on
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def time_daemon(root: Path, driver: str, image: str) -> dict[str, Any]:
    docker = docker_cli()
    if docker is None:
        return {"skipped": "no docker CLI installed (apt-get install docker.io)"}
    code = _code_dir()
    sockdir = root.parent / f"{root.name}-daemon"
    made_tmp = len(str(sockdir / "d.sock")) > SUN_PATH_MAX
    if made_tmp:
        sockdir = Path(tempfile.mkdtemp(prefix="lamina-bench-d-", dir="/tmp"))
    sockdir.mkdir(parents=True, exist_ok=True)
    sock = str(sockdir / "d.sock")
    (sockdir / "docker-config").mkdir(exist_ok=True)
    log = open(sockdir / "daemon.log", "ab")  # noqa: SIM115 - the daemon keeps it
    proc = subprocess.Popen(_lamina(root, driver) + ["daemon", "--host", f"unix://{sock}"], env=_env(code),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    try:
        end = time.monotonic() + 60
        while not _answers(sock):
            if proc.poll() is not None:
                tail = (sockdir / "daemon.log").read_text(errors="replace").strip().splitlines()
                return {"error": f"lamina daemon exited {proc.returncode}: {tail[-1] if tail else ''}"[:300]}
            if time.monotonic() > end:
                return {"error": "lamina daemon did not answer within 60 s"}
            time.sleep(0.02)
        env = _env(code, DOCKER_HOST=f"unix://{sock}", DOCKER_CONFIG=str(sockdir / "docker-config"))
        argv = [docker, "run", "--rm", "--network", "none", image, "/bin/true"]
        try:
            _timed(argv, env)  # warm-up: the daemon's worker has its store open
            return {"seconds": _timed(argv, env)}
        except Exception as e:  # noqa: BLE001 - recorded, the lifecycle goes on
            return {"error": f"{type(e).__name__}: {e}"[:300]}
    finally:
        _stop(proc)
        shutil.rmtree(sockdir, ignore_errors=True)


def measure(root: Path, driver: str, image: str, runnable: bool) -> dict[str, dict[str, Any]]:
    """Both paths on the store at ``root`` (the lifecycle's), as lifecycle outcomes by name."""
    if not runnable:
        why = {"skipped": "the workload has no /bin/true to run"}
        return {name: dict(why) for name in PATHS}
    return {"start/cli": time_cli(root, driver, image), "start/daemon": time_daemon(root, driver, image)}
