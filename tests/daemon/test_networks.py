"""Networks through the daemon: ``docker network ...``, ``docker run --network NAME -p ...`` and
docker-py's ``networks``/``ports``, with the same code as ``lamina run`` (``lamina.netconfig``,
``runtime.network``).

The daemon runs inside a network namespace the test made (``own_netns`` moves the test's thread
there before the daemon starts, so the daemon and everything it makes live in it; the clients
reach it through its unix socket, which crosses namespaces). The fixture checks that the host's
links, addresses, rules and ``ip_forward`` are unchanged, and the teardown that nothing of the
networks is left.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonProc, DockerCLI, running_daemon
from tests.runtime.busybox import skip_reason, write_busybox_layout
from tests.runtime.netns_fixture import own_netns  # noqa: F401 - a fixture
from tests.tarbuild import E

SERVER = "while true; do echo hello-from-$(hostname) | nc -l -p 80; done"
CLIENT = ('(for i in $(seq 50); do out=$(nc {host} 80 </dev/null) && [ -n "$out" ] && echo "$out" && exit 0; '
          'sleep 0.1; done; exit 1)')


@pytest.fixture(scope="module")
def nc_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox with nc, hosts from files (as real images say in nsswitch.conf)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    extra = [E("etc/nsswitch.conf", b"hosts: files\n")]
    extra += [E(f"bin/{a}", kind="symlink", target="busybox") for a in ("nc", "hostname")]
    return write_busybox_layout(tmp_path_factory.mktemp("bbnc") / "oci", extra=extra)


@pytest.fixture
def netd(own_netns: str, nc_layout: Path, tmp_path: Path) -> Iterator[DaemonProc]:  # noqa: F811
    del own_netns  # entered: the daemon below starts in it
    with running_daemon(tmp_path / "d", nc_layout) as d:
        yield d
        leftovers = _net_leftovers(d.root)
    assert leftovers == [], leftovers


def _net_leftovers(root: Path, bridges: bool = True) -> list[str]:
    found = []
    d = root / "runtime" / "network"
    if d.is_dir():
        found += [f"state {p.name}" for p in d.iterdir() if p.suffix in (".json", ".netns", ".tmp")]
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout or "[]")
    found += [f"link {x['ifname']}" for x in links if x["ifname"].startswith(("lv", "lm-") if bridges else "lv")]
    return found


def _fetch(port: int) -> bytes:
    """What the server behind 127.0.0.1:port says (its nc loop may drop the first connection)."""
    got = b""
    for _ in range(50):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                got = s.recv(100)
        except OSError:
            got = b""
        if got:
            return got
        time.sleep(0.1)
    return got


def _docker(docker_bin: str, d: DaemonProc, tmp_path: Path) -> DockerCLI:
    cfg = tmp_path / "docker-config"
    cfg.mkdir(exist_ok=True)
    return DockerCLI(docker_bin, d, cfg)


def test_docker_cli_user_networks_names_ports_and_isolation(netd: DaemonProc, docker_bin: str,
                                                            tmp_path: Path) -> None:
    docker = _docker(docker_bin, netd, tmp_path)
    nid = docker("network", "create", "app").out.strip()
    assert len(nid) == 64
    docker("network", "create", "other")
    assert {"app", "other", "bridge", "host", "none"} <= set(docker("network", "ls", "--format", "{{.Name}}").lines)
    docker("run", "-d", "--name", "srv", "--network", "app", "--network-alias", "db", "bb:1", "sh", "-c", SERVER)
    r = docker("run", "--rm", "--network", "app", "bb:1", "sh", "-c",
               CLIENT.format(host="srv") + " && " + CLIENT.format(host="db"))
    assert r.out.count("hello-from-") == 2, r.out
    ip = docker("inspect", "--format", "{{(index .NetworkSettings.Networks \"app\").IPAddress}}", "srv").out.strip()
    assert ip.startswith("172.18."), ip
    aliases = docker("inspect", "--format", "{{json (index .NetworkSettings.Networks \"app\").Aliases}}", "srv").out
    assert "db" in json.loads(aliases)
    assert docker("network", "inspect", "--format", "{{range .Containers}}{{.Name}}{{end}}", "app").out.strip() == "srv"

    # another network cannot reach srv, by name or by address
    r = docker("run", "--rm", "--network", "other", "bb:1", "sh", "-c",
               f"nc -w 1 {ip} 80 </dev/null; echo rc=$?; nc -w 1 srv 80 </dev/null; echo rc=$?", expect=None)
    assert "hello-from-" not in r.out and r.out.count("rc=1") == 2, r.out + r.err

    # published ports: reachable from this namespace's loopback; docker port; ps shows them
    docker("run", "-d", "--name", "web", "--network", "bridge", "-p", "127.0.0.1:18080:80", "bb:1", "sh", "-c", SERVER)
    assert docker("port", "web").lines == ["80/tcp -> 127.0.0.1:18080"]
    assert _fetch(18080).startswith(b"hello-from-")
    assert "127.0.0.1:18080->80/tcp" in docker("ps", "--filter", "name=web", "--format", "{{.Ports}}").out
    # -P: every exposed port on a free loopback port
    docker("run", "-d", "--name", "webp", "--network", "bridge", "--expose", "80", "-P", "bb:1", "sh", "-c", SERVER)
    (line,) = docker("port", "webp").lines
    assert line.startswith("80/tcp -> 127.0.0.1:"), line
    assert _fetch(int(line.rsplit(":", 1)[1])).startswith(b"hello-from-")

    # connect/disconnect a running container
    docker("network", "connect", "other", "srv")
    nets = json.loads(docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", "srv").out)
    assert set(nets) == {"app", "other"} and nets["other"]["IPAddress"].startswith("172.19."), nets
    docker("network", "disconnect", "other", "srv")
    nets = json.loads(docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", "srv").out)
    assert set(nets) == {"app"}

    # errors as Docker's: an unknown network, a network still in use
    r = docker("run", "--rm", "--network", "nope", "bb:1", "true", expect=None)
    assert r.rc != 0 and "nope" in r.err, r.err
    r = docker("network", "rm", "app", expect=None)
    assert r.rc != 0, r.out

    docker("rm", "-f", "srv", "web", "webp")
    assert _net_leftovers(netd.root, bridges=False) == []
    docker("network", "rm", "app", "other")
    assert _net_leftovers(netd.root) == []
    assert "app" not in docker("network", "ls", "--format", "{{.Name}}").lines


def test_default_network_is_none_and_ports_need_a_bridge(netd: DaemonProc, docker_bin: str, tmp_path: Path) -> None:
    docker = _docker(docker_bin, netd, tmp_path)
    r = docker("run", "--rm", "bb:1", "sh", "-c", "cat /proc/net/dev | grep -c :")
    assert r.out.strip() == "1"  # lo only: lamina's default network is none (README)
    r = docker("run", "--rm", "-p", "18085:80", "bb:1", "true", expect=None)
    assert r.rc != 0 and "bridge" in r.err, r.err


def test_docker_py_networks_and_ports(netd: DaemonProc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docker = pytest.importorskip("docker")
    monkeypatch.setenv("DOCKER_HOST", netd.host)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    client = docker.from_env(version="auto")
    try:
        net = client.networks.create("pynet", driver="bridge")
        assert client.networks.get(net.id).name == "pynet"
        c = client.containers.run("bb:1", ["sh", "-c", SERVER], detach=True, name="pyweb", network="pynet",
                                  ports={"80/tcp": ("127.0.0.1", 18090)})
        c.reload()
        assert c.ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18090"}]}
        assert c.attrs["NetworkSettings"]["Networks"]["pynet"]["IPAddress"].startswith("172.18.")
        assert _fetch(18090).startswith(b"hello-from-")
        net.reload()
        assert [x.name for x in net.containers] == ["pyweb"]
        c.remove(force=True)
        net.remove()
        assert "pynet" not in [n.name for n in client.networks.list()]
    finally:
        client.close()
