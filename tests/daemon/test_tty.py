"""Terminals through ``lamina daemon``: the real docker CLI on a real pty (the test is the
terminal emulator: ``tests.integration.test_run_tty.PtyProcess``) for ``run -it``, ``run -t``,
``exec -it``, ``attach`` and window resizes, and docker-py with ``tty=True``. A terminal's stream
is raw both ways (no multiplexing header), as Docker's."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonProc, DockerCLI
from tests.daemon.test_api import request
from tests.integration.test_run_tty import RUNTIMES, PtyProcess


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def on_pty(docker: DockerCLI, *args: str, rows: int = 40, cols: int = 120) -> PtyProcess:
    env = docker.d.env(docker.config_dir)
    env["TERM"] = "xterm"
    return PtyProcess([docker.binary, *args], env, rows=rows, cols=cols)


def size_becomes(t: PtyProcess, rows: int, cols: int) -> None:
    """Ask the shell for its size until it shows ``rows cols`` (the client's resize call and the
    daemon's relay of it are asynchronous to the keys typed). The window change is signalled
    again before each retry: docker 20.10 starts watching SIGWINCH only after its first resize
    call has returned, so a change before that is lost to it (a race of the client's own)."""
    for i in range(20):
        if i:
            os.kill(t.proc.pid, signal.SIGWINCH)
        t.type("stty size\r")
        try:
            t.expect(rf"\r\n{rows} {cols}\r\n", timeout=0.5)
            return
        except AssertionError:
            continue
    raise AssertionError(f"the terminal never became {rows}x{cols}; the screen shows {t.screen[-300:]!r}")


def until(check, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.05)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_run_it_gives_a_working_shell(docker: DockerCLI, rt: str) -> None:
    name = uniq("it")
    t = on_pty(docker, "run", "--rm", "-it", "--runtime", rt, "--name", name, "bb:1", "sh", rows=40, cols=120)
    try:
        t.expect(r"# ")  # busybox's prompt for root
        t.type("tty; echo $((6*7))\r")
        t.expect(r"/dev/pts/\d+\r\n42\r\n")
        # docker 28 sends the size with the create (HostConfig.ConsoleSize), 20.10 only in a
        # resize call after the start, which may come after the shell's first command
        size_becomes(t, 40, 120)
        t.resize(50, 100)  # SIGWINCH to the docker CLI, which calls /containers/{id}/resize
        size_becomes(t, 50, 100)
        t.type("\x03")  # Ctrl-C reaches the container's shell through the raw stream
        t.expect(r"# ")
        t.type("echo hi; exit 3\r")
        t.expect(r"\r\nhi\r\n")
        assert t.wait() == 3
        assert t.saved == __import__("termios").tcgetattr(t.slave)  # the CLI restored the terminal
    finally:
        t.close()
    until(lambda: name not in docker("ps", "-a", "--format", "{{.Names}}").out.split())


def test_run_t_is_one_raw_stream(docker: DockerCLI) -> None:
    """-t without -i, output not a terminal: the pty's output (\\r\\n, stderr merged) as it is."""
    r = docker("run", "--rm", "-t", "bb:1", "sh", "-c", "tty; echo out; echo err >&2; exit 4", expect=4)
    assert re.fullmatch(r"/dev/pts/\d+\r\nout\r\nerr\r\n", r.out), repr(r.out)
    name = uniq("t")
    docker("run", "-t", "--name", name, "bb:1", "sh", "-c", "echo logged", expect=0)
    assert docker("logs", name).out == "logged\r\n"
    assert docker("inspect", "--format", "{{.Config.Tty}}", name).out.strip() == "true"
    docker("rm", name)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_exec_it_and_its_resize(docker: DockerCLI, rt: str) -> None:
    name = uniq("ex")
    docker("run", "-d", "--runtime", rt, "--name", name, "bb:1", "sleep", "120")
    t = on_pty(docker, "exec", "-it", name, "sh", rows=33, cols=77)
    try:
        t.expect(r"# ")
        t.type("tty; echo $((6*7))\r")
        t.expect(r"/dev/pts/\d+\r\n42\r\n")
        size_becomes(t, 33, 77)
        t.resize(20, 60)  # the CLI calls /exec/{id}/resize
        size_becomes(t, 20, 60)
        t.type("exit 3\r")
        assert t.wait() == 3
    finally:
        t.close()
    r = docker("exec", "-t", name, "sh", "-c", "echo a; echo b >&2; exit 2", expect=2)
    assert r.out == "a\r\nb\r\n"
    docker("rm", "-f", name)


def test_attach_to_a_detached_terminal_container(docker: DockerCLI) -> None:
    """``run -dit`` then ``attach``: the daemon stays the container's terminal's caller, so a
    later attach types into it and resizes it; its exit code is attach's."""
    name = uniq("at")
    docker("run", "-dit", "--name", name, "bb:1", "sh")
    t = on_pty(docker, "attach", name, rows=30, cols=90)
    try:
        t.type("echo $((5*5))\r")  # the keys wait in the pty until the CLI reads them
        t.expect(r"\r\n25\r\n")
        size_becomes(t, 30, 90)  # the CLI's resize after attaching
        t.type("exit 6\r")
        assert t.wait() == 6
    finally:
        t.close()
    until(lambda: docker("inspect", "--format", "{{.State.Status}}", name).out.strip() == "exited")
    assert docker("inspect", "--format", "{{.State.ExitCode}}", name).out.strip() == "6"
    assert "25\r\n" in docker("logs", name).out
    docker("rm", name)


def test_resize_endpoints_check_their_input(daemon: DaemonProc) -> None:
    name = uniq("rs")
    body = json.dumps({"Image": "bb:1", "Cmd": ["sleep", "60"], "Tty": True}).encode()
    status, _, got = request(daemon, "POST", f"/v1.45/containers/create?name={name}", body,
                             {"Content-Type": "application/json"})
    assert status == 201, got
    assert request(daemon, "POST", f"/v1.45/containers/{name}/resize?h=10&w=20")[0] == 409  # not running
    assert request(daemon, "POST", f"/v1.45/containers/{name}/start")[0] == 204
    assert request(daemon, "POST", f"/v1.45/containers/{name}/resize?h=10&w=20")[0] == 200
    assert request(daemon, "POST", f"/v1.45/containers/{name}/resize?h=0&w=20")[0] == 400
    assert request(daemon, "POST", f"/v1.45/containers/{name}/resize?h=x&w=20")[0] == 400
    assert request(daemon, "POST", "/v1.45/containers/no-such-thing/resize?h=1&w=1")[0] == 404
    assert request(daemon, "POST", "/v1.45/exec/no-such-exec/resize?h=1&w=1")[0] == 404
    assert request(daemon, "DELETE", f"/v1.45/containers/{name}?force=1")[0] == 204


def test_docker_py_tty(daemon: DaemonProc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docker_py = pytest.importorskip("docker")  # only this test needs docker-py
    monkeypatch.setenv("DOCKER_HOST", daemon.host)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    client = docker_py.from_env(version="auto")
    try:
        out = client.containers.run("bb:1", ["sh", "-c", "echo hi; echo err >&2"], tty=True, remove=True)
        assert out == b"hi\r\nerr\r\n"
        c = client.containers.run("bb:1", ["sh", "-c", "echo one; sleep 60"], tty=True, detach=True)
        try:
            until(lambda: b"one" in c.logs())
            assert c.logs() == b"one\r\n"  # raw: no 8-byte frame headers
            code, got = c.exec_run(["sh", "-c", "tty; echo x >&2"], tty=True)
            assert code == 0 and re.fullmatch(rb"/dev/pts/\d+\r\nx\r\n", got), got
            client.api.resize(c.id, 24, 80)
            ex = client.api.exec_create(c.id, ["sleep", "1"], tty=True)
            assert client.api.exec_inspect(ex["Id"])["ProcessConfig"]["tty"] is True
        finally:
            c.remove(force=True)
    finally:
        client.close()


def test_detach_keys_leave_the_container_running_for_a_later_attach(docker: DockerCLI) -> None:
    """Ctrl-P Ctrl-Q (the docker CLI's detach keys) ends ``run -it`` with 0 and the container
    runs on; ``attach`` gets its terminal back."""
    name = uniq("dk")
    t = on_pty(docker, "run", "-it", "--name", name, "bb:1", "sh")
    try:
        t.expect(r"# ")
        t.type("\x10\x11")
        assert t.wait() == 0
    finally:
        t.close()
    assert docker("inspect", "--format", "{{.State.Status}}", name).out.strip() == "running"
    t = on_pty(docker, "attach", name)
    try:
        t.type("echo again-$((2+3))\r")
        t.expect(r"again-5\r\n")
        t.type("exit 4\r")
        assert t.wait() == 4
    finally:
        t.close()
    docker("rm", "-f", name)
