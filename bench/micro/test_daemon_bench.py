"""Micro benchmark: the docker CLI against ``lamina daemon``, side by side with podman and with
the ``lamina`` CLI on the same store (issue 16's figures).

Run (as root; the store sits on a journaled ext4 loop filesystem made here, see MACHINE-NOTES)::

    .venv/bin/python -m pytest bench/micro/test_daemon_bench.py --benchmark-columns=min,median,max -s

What each benchmark times (call to exit of a fresh client process, overlay driver):

- ``docker_run_rm[crun|runc]``: ``docker run --rm --network none bb:1 /bin/true`` through the
  daemon (the aim: at most 0.5x ``podman run --rm``);
- ``podman_run_rm[crun|runc]``: ``podman run --rm`` of the same image on the same filesystem
  (as in ``test_run_bench.py``); ``lamina_run_rm``: ``lamina run --rm`` without the daemon;
- ``docker_images_50`` / ``docker_ps_50``: ``docker images`` and ``docker ps -a`` with 50 images
  and 50 containers in the store (aim: under 50 ms); ``lamina_images_50`` / ``lamina_ps_50``: the
  ``lamina`` CLI on the same store; ``api_images_50`` / ``api_ps_50``: the daemon's own share, one
  HTTP request over the socket from this process; ``handler_images_50`` / ``handler_ps_50``:
  the handlers' store and runtime work alone, called in this process (no HTTP);
- ``docker_version``: ``docker version`` (the client's start plus one round trip: the floor of
  every docker command).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.loopfs import loop_filesystem, loopfs_skip_reason
from tests.runtime.busybox import skip_reason, write_busybox_layout

ROUNDS = 15
SCRIPT = Path(sys.executable).parent / "lamina"
LAMINA = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "lamina"]
DOCKER = shutil.which("docker")
PODMAN = shutil.which("podman")
RESULTS: dict[str, Any] = {}

_reason = skip_reason() or loopfs_skip_reason("ext4") or (None if DOCKER else "no docker CLI")
if _reason:
    pytest.skip(_reason, allow_module_level=True)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("LAMINA_")}
    env.update(extra)
    return env


class Fixture:
    def __init__(self, base: Path, layout: Path) -> None:
        self.base = base
        self.layout = layout
        self.root = base / "lamina"
        self.sockdir = Path(tempfile.mkdtemp(prefix="lamina-bench-d-", dir="/tmp"))
        self.sock = self.sockdir / "d.sock"
        self.podman_run = Path(tempfile.mkdtemp(prefix="lamina-bench-pm-", dir="/tmp"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.docker_config = base / "docker-config"
        self.docker_config.mkdir()

    @property
    def denv(self) -> dict[str, str]:
        return _env(DOCKER_HOST=f"unix://{self.sock}", DOCKER_CONFIG=str(self.docker_config))

    def docker(self, *args: str) -> str:
        p = subprocess.run([str(DOCKER), *args], env=self.denv, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return p.stdout


def _answers(sock: Path) -> bool:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(sock))
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    tmp = tmp_path_factory.mktemp("daemon-bench")
    layout = write_busybox_layout(tmp / "oci")
    with loop_filesystem(tmp, "ext4", size="1G") as fs:
        f = Fixture(Path(fs.mountpoint), layout)
        subprocess.run(LAMINA + ["--root", str(f.root), "--driver", "overlay", "load", "-i", str(layout)],
                       check=True, capture_output=True, env=_env())
        log = open(f.base / "daemon.log", "ab")  # noqa: SIM115
        f.proc = subprocess.Popen(LAMINA + ["--root", str(f.root), "daemon", "--host", f"unix://{f.sock}"],
                                  stdout=log, stderr=log, env=_env())
        end = time.monotonic() + 30
        while not _answers(f.sock):
            assert time.monotonic() < end and f.proc.poll() is None, "daemon did not start"
            time.sleep(0.05)
        try:
            yield f
        finally:
            with pytest.MonkeyPatch.context():
                subprocess.run([str(DOCKER), "rm", "-f", *f.docker("ps", "-aq").split()], env=f.denv,
                               capture_output=True)
            f.proc.send_signal(signal.SIGTERM)
            try:
                f.proc.wait(15)
            except subprocess.TimeoutExpired:
                f.proc.kill()
                f.proc.wait()
            from graph import Store
            from tests.runtime.busybox import cleanup_store

            with Store(f.root) as store:
                cleanup_store(store, f.root)
            if PODMAN:
                subprocess.run(_podman(f) + ["rm", "-af"], capture_output=True, env=_env())
                subprocess.run(_podman(f) + ["system", "reset", "-f"], capture_output=True, env=_env())
                for d in (f.base / "podman", f.podman_run):
                    subprocess.run(["umount", "-R", str(d)], capture_output=True)
            shutil.rmtree(f.podman_run, ignore_errors=True)
            shutil.rmtree(f.sockdir, ignore_errors=True)


def _timed(cmd: list[str], env: dict[str, str], preexec: Any = None) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec)
    dt = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    return dt


def _record(name: str, benchmark: Any) -> None:
    s = benchmark.stats.stats
    RESULTS[name] = {"median": s.median, "min": s.min}


@pytest.mark.parametrize("rt", ["crun", "runc"])
def test_docker_run_rm(benchmark: Any, fx: Fixture, rt: str) -> None:
    cmd = [str(DOCKER), "run", "--rm", "--network", "none", "--runtime", rt, "bb:1", "/bin/true"]
    _timed(cmd, fx.denv)
    benchmark.pedantic(_timed, args=(cmd, fx.denv), rounds=ROUNDS, iterations=1)
    _record(f"docker_run_rm[{rt}]", benchmark)


def test_lamina_run_rm(benchmark: Any, fx: Fixture) -> None:
    cmd = LAMINA + ["--root", str(fx.root), "run", "--rm", "bb:1", "/bin/true"]
    _timed(cmd, _env())
    benchmark.pedantic(_timed, args=(cmd, _env()), rounds=ROUNDS, iterations=1)
    _record("lamina_run_rm", benchmark)


def _podman(fx: Fixture) -> list[str]:
    d = fx.base / "podman"
    return [str(PODMAN), "--root", str(d / "root"), "--runroot", str(fx.podman_run), "--storage-driver", "overlay",
            "--cgroup-manager", "cgroupfs", "--events-backend", "none"]


@pytest.mark.skipif(PODMAN is None, reason="podman not installed")
@pytest.mark.parametrize("rt", ["crun", "runc"])
def test_podman_run_rm(benchmark: Any, fx: Fixture, rt: str) -> None:
    archive = fx.base / "bb.tar"
    if not archive.exists():
        subprocess.run(["tar", "-C", str(fx.layout), "-cf", str(archive), "."], check=True)
        subprocess.run(_podman(fx) + ["load", "-i", str(archive)], check=True, capture_output=True, env=_env())
    got = subprocess.run(_podman(fx) + ["images", "-q"], capture_output=True, text=True, env=_env())
    if got.returncode != 0 or not got.stdout.split():
        pytest.skip(f"podman cannot list its images here: {got.stderr.strip()[-300:]}")
    from runtime.oci import open_runtime

    preexec = open_runtime(rt, str(fx.base / "unused-state")).preexec()  # crun refuses hybrid cgroups
    cmd = _podman(fx) + ["--runtime", rt, "run", "--rm", "--pull", "never", "--network", "none",
                         "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", got.stdout.split()[0],
                         "/bin/true"]
    try:
        _timed(cmd, _env(), preexec)
    except AssertionError as e:
        pytest.skip(f"podman cannot run here: {str(e)[-200:]}")
    benchmark.pedantic(_timed, args=(cmd, _env(), preexec), rounds=ROUNDS, iterations=1)
    _record(f"podman_run_rm[{rt}]", benchmark)


def _populate(fx: Fixture) -> None:
    """50 images (commits of one container) and 50 containers (created)."""
    have = fx.docker("images", "-q")
    if len(have.split()) >= 50:
        return
    fx.docker("create", "--name", "seed", "bb:1", "true")
    for i in range(49):
        fx.docker("commit", "seed", f"img{i}:1")
    for i in range(49):
        fx.docker("create", "--name", f"c{i}", f"img{i}:1", "true")


def test_docker_version(benchmark: Any, fx: Fixture) -> None:
    cmd = [str(DOCKER), "version"]
    benchmark.pedantic(_timed, args=(cmd, fx.denv), rounds=ROUNDS, iterations=1)
    _record("docker_version", benchmark)


@pytest.mark.parametrize("what", ["images", "ps"])
def test_docker_list_50(benchmark: Any, fx: Fixture, what: str) -> None:
    _populate(fx)
    cmd = [str(DOCKER), what] + (["-a"] if what == "ps" else [])
    assert len(fx.docker(*cmd[1:]).splitlines()) >= 51
    benchmark.pedantic(_timed, args=(cmd, fx.denv), rounds=ROUNDS, iterations=1)
    _record(f"docker_{what}_50", benchmark)


@pytest.mark.parametrize("what", ["images", "ps"])
def test_lamina_list_50(benchmark: Any, fx: Fixture, what: str) -> None:
    _populate(fx)
    cmd = LAMINA + ["--root", str(fx.root), what] + (["-a"] if what == "ps" else [])
    benchmark.pedantic(_timed, args=(cmd, _env()), rounds=ROUNDS, iterations=1)
    _record(f"lamina_{what}_50", benchmark)


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


@pytest.mark.parametrize("what", ["images", "ps"])
def test_api_list_50(benchmark: Any, fx: Fixture, what: str) -> None:
    _populate(fx)
    path = "/v1.45/images/json" if what == "images" else "/v1.45/containers/json?all=1"

    def once() -> float:
        c = _Unix(str(fx.sock))
        t0 = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        dt = time.perf_counter() - t0
        c.close()
        assert r.status == 200 and len(body) > 100
        return dt

    benchmark.pedantic(once, rounds=ROUNDS * 2, iterations=1)
    _record(f"api_{what}_50", benchmark)


@pytest.mark.parametrize("what", ["images", "ps"])
def test_handler_list_50(benchmark: Any, fx: Fixture, what: str) -> None:
    """The daemon's own work for one list request, in this process: the handler's store and
    runtime calls (``list_images``, ``list_containers`` with ``all``), no HTTP, no client."""
    _populate(fx)
    from graph import Store
    from lamina.daemon import containers, images

    with Store(fx.root, driver="overlay") as store:
        if what == "images":
            def once() -> Any:
                return images.list_images(store, all_=False, flt={})
        else:
            def once() -> Any:
                return containers.list_containers(store, all_=True, flt={})
        assert len(once()) >= 50
        benchmark.pedantic(once, rounds=ROUNDS * 4, iterations=1, warmup_rounds=2)
    _record(f"handler_{what}_50", benchmark)


def test_zz_report() -> None:
    if not RESULTS:
        pytest.skip("nothing measured")

    def ms(k: str) -> float:
        return float(RESULTS[k]["median"]) * 1000

    lines = [f"  {k:<24} median {ms(k):7.1f} ms   min {RESULTS[k]['min'] * 1000:7.1f} ms" for k in sorted(RESULTS)]
    for rt in ("crun", "runc"):
        if f"docker_run_rm[{rt}]" in RESULTS and f"podman_run_rm[{rt}]" in RESULTS:
            lines.append(f"  docker->lamina / podman ({rt}): {ms(f'docker_run_rm[{rt}]') / ms(f'podman_run_rm[{rt}]'):.2f}")
    print("\n" + "\n".join(lines))

