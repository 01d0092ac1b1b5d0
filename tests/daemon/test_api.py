"""The daemon's HTTP front with raw requests: version negotiation, Docker's error bodies and
statuses, bounded bodies and headers, the socket's permissions, the configuration."""

from __future__ import annotations

import grp
import http.client
import json
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from graph.errors import InvalidInput
from lamina.daemon import config
from tests.cli.conftest import lamina_command, run_cmd
from tests.daemon.conftest import DaemonProc, running_daemon


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def request(d: DaemonProc, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    c = UnixHTTP(str(d.sock))
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_ping_has_the_api_version(daemon: DaemonProc) -> None:
    status, headers, body = request(daemon, "GET", "/_ping")
    assert (status, body) == (200, b"OK")
    assert headers["api-version"] == "1.45"
    status, headers, _ = request(daemon, "HEAD", "/_ping")
    assert status == 200 and headers["api-version"] == "1.45"


@pytest.mark.parametrize("version", ["1.41", "1.43", "1.45"])
def test_versioned_paths(daemon: DaemonProc, version: str) -> None:
    status, _, body = request(daemon, "GET", f"/v{version}/version")
    assert status == 200 and json.loads(body)["ApiVersion"] == "1.45"


@pytest.mark.parametrize("version,word", [("1.46", "too new"), ("1.99", "too new"), ("1.40", "too old")])
def test_versions_out_of_range_are_refused(daemon: DaemonProc, version: str, word: str) -> None:
    status, headers, body = request(daemon, "GET", f"/v{version}/version")
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert word in json.loads(body)["message"]


def test_unknown_endpoint_is_404_with_docker_body(daemon: DaemonProc) -> None:
    status, _, body = request(daemon, "GET", "/v1.45/no/such/thing")
    assert status == 404 and json.loads(body) == {"message": "page not found"}


def test_malformed_json_is_400(daemon: DaemonProc) -> None:
    status, _, body = request(daemon, "POST", "/v1.45/containers/create", b"{not json",
                              {"Content-Type": "application/json"})
    assert status == 400 and "JSON" in json.loads(body)["message"]


def test_unknown_image_and_container_are_404(daemon: DaemonProc) -> None:
    status, _, body = request(daemon, "POST", "/v1.45/containers/create", json.dumps({"Image": "nope:1"}).encode(),
                              {"Content-Type": "application/json"})
    assert status == 404 and json.loads(body)["message"] == "No such image: nope:1"
    for method, path in [("GET", "/containers/nope/json"), ("POST", "/containers/nope/start"),
                         ("DELETE", "/containers/nope"), ("GET", "/images/nope:1/json"), ("DELETE", "/images/nope:1")]:
        status, _, body = request(daemon, method, "/v1.45" + path)
        assert status == 404, (method, path, body)
        assert "message" in json.loads(body)


def test_conflicts_are_409(daemon: DaemonProc) -> None:
    hdr = {"Content-Type": "application/json"}
    body = json.dumps({"Image": "bb:1", "Cmd": ["true"]}).encode()
    status, _, got = request(daemon, "POST", "/v1.45/containers/create?name=twice", body, hdr)
    assert status == 201
    status, _, got = request(daemon, "POST", "/v1.45/containers/create?name=twice", body, hdr)
    assert status == 409 and "already in use" in json.loads(got)["message"]
    status, _, got = request(daemon, "POST", "/v1.45/containers/twice/kill")
    assert status == 409
    assert request(daemon, "DELETE", "/v1.45/containers/twice")[0] == 204


def test_a_huge_body_is_refused_without_growing(daemon: DaemonProc) -> None:
    before = rss_kib(daemon.pid)
    # announced: refused from the header
    status, _, body = request(daemon, "POST", "/v1.45/containers/create", None,
                              {"Content-Length": str(1 << 30), "Content-Type": "application/json"})
    assert status == 413
    # chunked, 1 GiB of it offered: refused after the limit, not buffered
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(daemon.sock))
    s.sendall(b"POST /v1.45/containers/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
              b"Content-Type: application/json\r\n\r\n")
    chunk = b"%x\r\n" % (1 << 20) + b"[" * (1 << 20) + b"\r\n"
    answer = b""
    try:
        for _ in range(1024):
            s.sendall(chunk)
    except OSError:
        pass  # the daemon answered and closed: what we want
    try:
        answer = s.recv(4096)
    except OSError:
        pass
    s.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert rss_kib(daemon.pid) - before < 64 * 1024
    assert daemon.answers()


def test_header_floods_are_refused(daemon: DaemonProc) -> None:
    before = rss_kib(daemon.pid)
    for head in (b"".join(b"X-H%d: v\r\n" % i for i in range(20000)), b"X-Big: " + b"a" * (1 << 20) + b"\r\n"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(str(daemon.sock))
        try:
            s.sendall(b"GET /v1.45/version HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
        except OSError:
            pass
        try:
            answer = s.recv(4096)
        except OSError:
            answer = b""
        s.close()
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:100]
    assert rss_kib(daemon.pid) - before < 64 * 1024
    assert daemon.answers()


def test_socket_is_root_only(daemon: DaemonProc) -> None:
    st = os.stat(daemon.sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660 and st.st_uid == 0
    try:
        want = grp.getgrnam("docker").gr_gid
    except KeyError:
        want = 0
    assert st.st_gid == want


def test_tcp_only_on_loopback(tmp_path: Path) -> None:
    r = run_cmd(lamina_command() + ["--root", str(tmp_path / "r"), "daemon", "--host", "tcp://0.0.0.0:2375"],
                expect=5, timeout=30)
    assert "only loopback" in r.err and len(r.err.splitlines()) == 1
    with pytest.raises(InvalidInput):
        config.parse_host("tcp://10.1.2.3:2375")
    assert config.parse_host("tcp://127.0.0.1:2375") == ("tcp", "127.0.0.1", 2375)


def test_daemon_json_keys_and_flags_override(tmp_path: Path) -> None:
    f = tmp_path / "daemon.json"
    f.write_text(json.dumps({"data-root": "/srv/x", "storage-driver": "vfs", "hosts": ["unix:///tmp/a.sock"],
                             "default-runtime": "runc", "log-level": "warn",
                             "registry-mirrors": ["http://127.0.0.1:5001"], "insecure-registries": ["reg:5000"]}))
    doc = config.read_file(str(f))
    cfg = config.build(doc, root=None, root_default="/var/lib/lamina", driver=None, hosts=None, runtime=None,
                       log_level=None)
    assert (cfg.root, cfg.driver, cfg.hosts, cfg.runtime, cfg.log_level) == \
        ("/srv/x", "vfs", ["unix:///tmp/a.sock"], "runc", "warn")
    assert cfg.mirrors == ["http://127.0.0.1:5001"] and cfg.insecure == ["reg:5000"]
    cfg = config.build(doc, root="/r", root_default="/var/lib/lamina", driver="overlay",
                       hosts=["unix:///tmp/b.sock"], runtime="crun", log_level="debug")
    assert (cfg.root, cfg.driver, cfg.hosts, cfg.runtime, cfg.log_level) == \
        ("/r", "overlay", ["unix:///tmp/b.sock"], "crun", "debug")
    f.write_text(json.dumps({"no-such-key": 1}))
    with pytest.raises(InvalidInput, match="unknown key"):
        config.read_file(str(f))
    with pytest.raises(InvalidInput, match="does not exist"):
        config.read_file(str(tmp_path / "missing.json"))


def test_daemon_json_is_honoured(tmp_path: Path, bb_layout: Path) -> None:
    f = tmp_path / "daemon.json"
    f.write_text(json.dumps({"default-runtime": "runc", "insecure-registries": ["reg.example:5000"],
                             "registry-mirrors": ["http://127.0.0.1:1"], "log-level": "debug"}))
    with running_daemon(tmp_path / "d", bb_layout, extra=["--config-file", str(f)]) as d:
        status, _, body = request(d, "GET", "/v1.45/info")
        info = json.loads(body)
        assert info["DefaultRuntime"] == "runc"
        assert info["RegistryConfig"]["Mirrors"] == ["http://127.0.0.1:1"]
        assert "reg.example:5000" in info["RegistryConfig"]["IndexConfigs"]
        hdr = {"Content-Type": "application/json"}
        status, _, got = request(d, "POST", "/v1.45/containers/create",
                                 json.dumps({"Image": "bb:1", "Cmd": ["true"]}).encode(), hdr)
        cid = json.loads(got)["Id"]
        assert request(d, "POST", f"/v1.45/containers/{cid}/start")[0] == 204
        status, _, got = request(d, "POST", f"/v1.45/containers/{cid}/wait")
        assert json.loads(got)["StatusCode"] == 0
        status, _, got = request(d, "GET", f"/v1.45/containers/{cid}/json")
        assert json.loads(got)["Runtime"] == "runc"


def test_sigterm_keeps_containers_running_and_restart_reconciles(tmp_path: Path, bb_layout: Path) -> None:
    hdr = {"Content-Type": "application/json"}
    with running_daemon(tmp_path / "d", bb_layout) as d:
        status, _, got = request(d, "POST", "/v1.45/containers/create?name=keeps",
                                 json.dumps({"Image": "bb:1", "Cmd": ["sleep", "100"]}).encode(), hdr)
        assert status == 201
        assert request(d, "POST", "/v1.45/containers/keeps/start")[0] == 204
        assert d.stop() == 0
        assert not d.sock.exists()
        d.start()
        status, _, got = request(d, "GET", "/v1.45/containers/keeps/json")
        assert json.loads(got)["State"]["Status"] == "running"
        assert request(d, "POST", "/v1.45/containers/keeps/kill")[0] == 204
        end = time.monotonic() + 10
        while json.loads(request(d, "GET", "/v1.45/containers/keeps/json")[2])["State"]["Status"] != "exited":
            assert time.monotonic() < end
            time.sleep(0.05)


@pytest.mark.parametrize("body", [b"[]", b'"text"', b'{"Image": 5}', b'{"Image": "bb:1", "Cmd": [1]}',
                                  b'{"Image": "bb:1", "HostConfig": {"Memory": "lots"}}',
                                  b'{"Image": "bb:1", "Env": "A=1"}', b'{"Image": "bb:1", "HostConfig": []}',
                                  b'{"Image": "bb:1", "Labels": [1]}',
                                  # network fields fail validation before anything is made
                                  b'{"Image": "bb:1", "HostConfig": {"PortBindings": {"80/tcp": [{}]}}}',
                                  b'{"Image": "bb:1", "HostConfig": {"NetworkMode": "bridge", '
                                  b'"PortBindings": {"80/tcp": [{"HostPort": "99999"}]}}}',
                                  b'{"Image": "bb:1", "HostConfig": {"NetworkMode": "bridge", '
                                  b'"PortBindings": {"80/sctp": []}}}',
                                  b'{"Image": "bb:1", "HostConfig": {"NetworkMode": "bridge", "PortBindings": []}}',
                                  b'{"Image": "bb:1", "HostConfig": {"NetworkMode": "a b"}}',
                                  b'{"Image": "bb:1", "HostConfig": {"NetworkMode": "none"}, '
                                  b'"NetworkingConfig": {"EndpointsConfig": {"other": {}}}}',
                                  b'{"Image": "bb:1", "HostConfig": {"NetworkMode": "none"}, '
                                  b'"NetworkingConfig": {"EndpointsConfig": {"none": {"Aliases": ["a"]}}}}',
                                  b'{"Image": "bb:1", "HostConfig": {"NetworkMode": "no-such-net"}}'])
def test_wrong_shapes_are_400_and_the_daemon_lives_on(daemon: DaemonProc, body: bytes) -> None:
    status, _, got = request(daemon, "POST", "/v1.45/containers/create", body, {"Content-Type": "application/json"})
    assert status == 400, got
    assert json.loads(got)["message"]
    assert daemon.answers()
