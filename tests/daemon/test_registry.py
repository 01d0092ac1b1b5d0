"""Registries through the daemon: ``docker push`` / ``pull`` / ``login`` against the tests' own
Debian docker-registry on 127.0.0.1 (loopback registries are plain HTTP, as in Docker), a pull
that stalls (a fault proxy) while other clients go on, and a daemon killed mid-pull."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import DockerCLI, lamina_on, running_daemon
from tests.faultproxy import Fault, run_fault_proxy
from tests.registry import REGISTRY_BIN, Registry, run_registry

pytestmark = pytest.mark.skipif(not Path(REGISTRY_BIN).exists(), reason="docker-registry not installed")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("reg")) as reg:
        yield reg


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("authreg"), htpasswd={"alice": "s3cret"}) as reg:
        yield reg


def test_push_rmi_pull_run(docker: DockerCLI, registry: Registry) -> None:
    ref = f"{registry.host}/lamina/bb-{uuid.uuid4().hex[:6]}:1"
    docker("tag", "bb:1", ref)
    r = docker("push", ref)
    assert "digest: sha256:" in r.out
    docker("rmi", ref)
    r = docker("pull", ref)
    assert "Downloaded newer image" in r.out or "Image is up to date" in r.out
    assert r.out.strip().splitlines()[-1] == ref
    assert docker("run", "--rm", ref, "echo", "pulled").out == "pulled\n"
    r = docker("pull", ref)
    assert "Image is up to date" in r.out
    docker("rmi", ref)


def test_pull_of_a_missing_repository_fails_with_one_message(docker: DockerCLI, registry: Registry) -> None:
    r = docker("pull", f"{registry.host}/lamina/not-there:1", expect=1)
    assert "Error response from daemon" in r.err


def test_run_pulls_a_missing_image(docker: DockerCLI, registry: Registry) -> None:
    ref = f"{registry.host}/lamina/autopull-{uuid.uuid4().hex[:6]}:1"
    docker("tag", "bb:1", ref)
    docker("push", ref)
    docker("rmi", ref)
    r = docker("run", "--rm", ref, "echo", "auto")
    assert r.out == "auto\n" and "Unable to find image" in r.err
    docker("rmi", ref)


def test_login_and_push_with_credentials(docker: DockerCLI, auth_registry: Registry) -> None:
    r = docker("login", "-u", "alice", "--password-stdin", auth_registry.host, input=b"wrong\n", expect=1)
    assert "Error response from daemon" in r.err
    r = docker("login", "-u", "alice", "--password-stdin", auth_registry.host, input=b"s3cret\n")
    assert "Login Succeeded" in r.out
    ref = f"{auth_registry.host}/team/bb:1"
    docker("tag", "bb:1", ref)
    docker("push", ref)  # the CLI sends the stored credentials in X-Registry-Auth
    docker("rmi", ref)
    docker("pull", ref)
    docker("rmi", ref)


def _wait_for(pred: Callable[[], bool], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def push_unique(docker: DockerCLI, ref: str) -> None:
    """Push an image with a layer of its own (2 MiB random), so a pull must download it, and
    remove it locally."""
    name = f"mk-{uuid.uuid4().hex[:8]}"
    docker("run", "--name", name, "bb:1", "dd", "if=/dev/urandom", "of=/big", "bs=1048576", "count=2")
    docker("commit", name, ref)
    docker("rm", name)
    docker("push", ref)
    docker("rmi", ref)


def test_a_stalled_pull_does_not_block_other_clients(docker: DockerCLI, registry: Registry) -> None:
    ref_path = f"lamina/slow-{uuid.uuid4().hex[:6]}:1"
    push_unique(docker, f"{registry.host}/{ref_path}")
    with run_fault_proxy(registry.host) as proxy:
        proxy.add(Fault.stall(r"/blobs/sha256:", after=4096, seconds=8, times=-1))
        pull = docker.popen("pull", f"{proxy.host}/{ref_path}")
        try:
            _wait_for(lambda: proxy.count("GET", r"/manifests/") > 0)
            time.sleep(1.0)  # into the stalled blob transfers
            docker("ps", "-a")
            docker("images")
            docker("run", "--rm", "bb:1", "true")
            assert pull.poll() is None, "the pull was expected to still be stalled"
            proxy.clear()
            out, err = pull.communicate(timeout=120)
            assert pull.returncode == 0, err.decode()
        finally:
            if pull.poll() is None:
                pull.kill()
                pull.wait()
    docker("rmi", f"{proxy.host}/{ref_path}")


def test_daemon_killed_mid_pull_leaves_a_clean_store(tmp_path: Path, bb_layout: Path, registry: Registry,
                                                    docker_bin: str) -> None:
    ref_path = f"lamina/killed-{uuid.uuid4().hex[:6]}:1"
    with running_daemon(tmp_path / "k", bb_layout) as d:
        cfg = tmp_path / "cfg"
        cfg.mkdir()
        docker = DockerCLI(docker_bin, d, cfg)
        push_unique(docker, f"{registry.host}/{ref_path}")
        with run_fault_proxy(registry.host) as proxy:
            proxy.add(Fault.stall(r"/blobs/sha256:", after=65536, seconds=30, times=1))
            pull = docker.popen("pull", f"{proxy.host}/{ref_path}")
            try:
                _wait_for(lambda: proxy.count("GET", r"/manifests/") > 0)
                time.sleep(1.0)  # into the stalled blob transfer
                d.stop(signal.SIGKILL)
                pull.wait(30)
            finally:
                if pull.poll() is None:
                    pull.kill()
                    pull.wait()
            assert pull.returncode != 0
            r = lamina_on(d.root, d.driver, "system", "check")
            assert r.out.strip() == "ok", r.out
            proxy.clear()
            d.start()
            r = docker("pull", f"{proxy.host}/{ref_path}")
            assert "Downloaded newer image" in r.out
        assert docker("run", "--rm", f"{proxy.host}/{ref_path}", "echo", "after").out == "after\n"
        assert lamina_on(d.root, d.driver, "system", "check").out.strip() == "ok"


def test_sixteen_concurrent_runs(docker: DockerCLI) -> None:
    procs = [docker.popen("run", "--rm", "bb:1", "sh", "-c", f"echo run-{i}; exit {i % 4}") for i in range(16)]
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=240)
        assert out == f"run-{i}\n".encode(), err.decode()
        assert p.returncode == i % 4
