"""Fixtures for the daemon tests: ``lamina daemon`` started as a subprocess on a temporary unix
socket over a root (overlay where the kernel has it, else vfs) with the busybox image ``bb:1``
loaded, and the real clients pointed at it: the docker CLI (every one installed: client 28 at
/usr/local/bin on the team's machines, Debian's 20.10 at /usr/bin) and docker-py.

Teardown stops the daemon by PID (SIGTERM, then SIGKILL), removes every container through the
runtime (killing running ones, waiting for their monitors by PID), checks that no mount,
runtime state, cgroup or monitor is left, and unmounts the driver's mounts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Result, clean_env, lamina_command, run_cmd
from tests.runtime.busybox import cleanup_store, skip_reason, write_busybox_layout

DOCKER_CLIENTS = [p for p in ("/usr/local/bin/docker", "/usr/bin/docker") if os.path.exists(p)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    here = str(Path(__file__).parent)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)


class DaemonProc:
    """One ``lamina daemon`` subprocess; ``stop`` always ends it by PID."""

    def __init__(self, root: Path, sockdir: Path, driver: str, extra: list[str] | None = None) -> None:
        self.root = root
        self.driver = driver
        self.sock = sockdir / "lamina.sock"
        self.host = f"unix://{self.sock}"
        self.log = root.parent / f"{root.name}-daemon.log"
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> "DaemonProc":
        cmd = lamina_command() + ["--root", str(self.root), "--driver", self.driver, "daemon",
                                  "--host", self.host, *self.extra]
        logf = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, env=clean_env(), stdin=subprocess.DEVNULL)
        logf.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if self.answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"daemon did not answer within {timeout} s:\n{self.log.read_text()}")

    def answers(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(1)
            s.connect(str(self.sock))
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False
        finally:
            s.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def env(self, config_dir: Path) -> dict[str, str]:
        return clean_env(DOCKER_HOST=self.host, DOCKER_CONFIG=str(config_dir))


def _driver(root: Path) -> str:
    import drivers

    return "overlay" if drivers.supported("overlay", root / "drivers" / "overlay") is None else "vfs"


@pytest.fixture(scope="session")
def bb_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    return write_busybox_layout(tmp_path_factory.mktemp("bb") / "oci")


def load_bb(root: Path, driver: str, layout: Path) -> None:
    from graph import Store
    from graph.archive import load_archive

    with Store(root, driver=driver) as store:
        load_archive(store, layout)


def teardown_root(root: Path) -> list[str]:
    """Remove every container of the root, check nothing leaked, unmount; the leftovers."""
    from graph import Store

    with Store(root) as store:
        try:
            return cleanup_store(store, root)
        finally:
            store.driver.cleanup()


@contextlib.contextmanager
def running_daemon(base: Path, layout: Path | None, extra: list[str] | None = None) -> Iterator[DaemonProc]:
    """A daemon over a fresh root in ``base`` (with bb:1 loaded when ``layout`` is given)."""
    root = base / "root"
    root.mkdir(parents=True, exist_ok=True)
    driver = _driver(root)
    if layout is not None:
        load_bb(root, driver, layout)
    sockdir = Path(tempfile.mkdtemp(prefix="lamina-d-", dir="/tmp"))  # short: sun_path is 108 bytes
    d = DaemonProc(root, sockdir, driver, extra)
    try:
        d.start()
        yield d
    finally:
        try:
            d.stop()
        finally:
            shutil.rmtree(sockdir, ignore_errors=True)
            problems = teardown_root(root)
        assert not problems, "left behind:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, bb_layout: Path) -> Iterator[DaemonProc]:
    if os.geteuid() != 0:
        pytest.skip("the daemon's containers need root")
    with running_daemon(tmp_path_factory.mktemp("daemon"), bb_layout) as d:
        yield d


class DockerCLI:
    """``docker ARGS...`` with DOCKER_HOST at the daemon and a private client config."""

    def __init__(self, binary: str, d: DaemonProc, config_dir: Path) -> None:
        self.binary = binary
        self.d = d
        self.config_dir = config_dir

    def __call__(self, *args: str, expect: int | None = 0, input: bytes | None = None,
                 timeout: float = 120) -> Result:
        return run_cmd([self.binary, *args], expect=expect, input=input, env=self.d.env(self.config_dir),
                       timeout=timeout)

    def popen(self, *args: str) -> "subprocess.Popen[bytes]":
        return subprocess.Popen([self.binary, *args], env=self.d.env(self.config_dir),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(params=DOCKER_CLIENTS or [None], ids=lambda p: "none" if p is None else p.replace("/", "_").strip("_"))
def docker_bin(request: pytest.FixtureRequest) -> str:
    if request.param is None:
        pytest.skip("no docker CLI installed (apt-get install docker.io)")
    return str(request.param)


@pytest.fixture
def docker(docker_bin: str, daemon: DaemonProc, tmp_path: Path) -> DockerCLI:
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    return DockerCLI(docker_bin, daemon, cfg)


def lamina_on(root: Path, driver: str, *args: str, expect: int | None = 0) -> Result:
    """The ``lamina`` CLI on the daemon's root (the two front doors on one store)."""
    return run_cmd(lamina_command() + ["--root", str(root), "--driver", driver, *args], expect=expect)
