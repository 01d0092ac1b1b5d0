"""``lamina --host``: the CLI as a thin client of the daemon (same output and exit codes as the
local commands, and no store or runtime imported)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from tests.cli.conftest import clean_env, lamina_command, run_cmd
from tests.daemon.conftest import DaemonProc


def remote(d: DaemonProc, *args: str, expect: int | None = 0, env_host: bool = False):  # type: ignore[no-untyped-def]
    if env_host:
        return run_cmd(lamina_command() + list(args), expect=expect, env=clean_env(LAMINA_HOST=d.host))
    return run_cmd(lamina_command() + ["--host", d.host, *args], expect=expect)


def test_images_ps_inspect(daemon: DaemonProc) -> None:
    r = remote(daemon, "images")
    assert r.lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert any(line.split()[:2] == ["bb", "1"] for line in r.lines[1:])
    assert remote(daemon, "ps", env_host=True).lines[0].startswith("CONTAINER ID")
    doc = json.loads(remote(daemon, "inspect", "bb:1").out)
    assert doc[0]["RepoTags"] == ["bb:1"]


def test_run_attached_detached_logs_stop_rm(daemon: DaemonProc) -> None:
    r = remote(daemon, "run", "--rm", "bb:1", "sh", "-c", "echo remote-out; echo remote-err >&2; exit 6", expect=6)
    assert r.out == "remote-out\n" and r.err == "remote-err\n"
    name = f"rem-{uuid.uuid4().hex[:6]}"
    cid = remote(daemon, "run", "-d", "--name", name, "bb:1", "sh", "-c", "echo started; sleep 100").out.strip()
    assert len(cid) == 64
    rows = json.loads(remote(daemon, "ps", "--format", "json").out)
    assert [x["State"] for x in rows if x["Name"] == name] == ["running"]
    import time

    end = time.monotonic() + 10
    while remote(daemon, "logs", name).out != "started\n":
        assert time.monotonic() < end
        time.sleep(0.05)
    remote(daemon, "stop", "-t", "0", name)
    assert remote(daemon, "rm", name).out.strip() == name
    r = remote(daemon, "rm", name, expect=2)
    assert r.err.startswith("lamina: ") and len(r.err_lines) == 1


def test_errors_are_one_line_with_the_local_exit_codes(daemon: DaemonProc) -> None:
    r = remote(daemon, "inspect", "no-such-thing", expect=2)
    assert r.err_lines == ["lamina: no such object: no-such-thing"]
    r = remote(daemon, "system", "df", expect=7)
    assert "not available through a daemon" in r.err
    r = run_cmd(lamina_command() + ["--host", "unix:///nonexistent/sock", "ps"], expect=1)
    assert "cannot reach the daemon" in r.err


def test_remote_commands_import_neither_graph_nor_runtime(daemon: DaemonProc) -> None:
    code = ("import sys; from lamina.cli.main import main; rc = main(['--host', sys.argv[1], 'ps', '-a']);"
            "bad = [m for m in ('graph', 'runtime', 'drivers', 'aiohttp') if m in sys.modules];"
            "print(bad); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, daemon.host], capture_output=True, text=True, env=clean_env())
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"


def test_logs_of_a_terminal_container_are_raw(daemon: DaemonProc) -> None:
    """A ``-t`` container's log comes as the raw stream (no frame headers to strip)."""
    name = f"remt-{uuid.uuid4().hex[:6]}"
    body = json.dumps({"Image": "bb:1", "Cmd": ["sh", "-c", "echo tty-out; echo tty-err >&2"], "Tty": True})
    from tests.daemon.test_api import request

    assert request(daemon, "POST", f"/v1.45/containers/create?name={name}", body.encode(),
                   {"Content-Type": "application/json"})[0] == 201
    assert request(daemon, "POST", f"/v1.45/containers/{name}/start")[0] == 204
    import time

    end = time.monotonic() + 10
    while json.loads(request(daemon, "GET", f"/v1.45/containers/{name}/json")[2])["State"]["Status"] != "exited":
        assert time.monotonic() < end
        time.sleep(0.05)
    assert remote(daemon, "logs", name).out == "tty-out\r\ntty-err\r\n"
    remote(daemon, "rm", name)
