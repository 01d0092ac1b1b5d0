"""Bridge networks with real namespaces, bridges, veths and traffic, all inside a network
namespace each test makes for itself (``own_netns``: nothing appears in the machine's own
namespace, which the fixture checks, and no packet can leave).

lamina runs as the CLI (``python -m lamina``, a child of the test process, so in the test's
namespace); the store is also opened in-process for the teardown that removes every container
and checks nothing leaked (``cleanup_store``), plus the network's own leftovers: veths, the
namespace and state files, proxies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.busybox import cleanup_store, skip_reason, wait_pids_gone, write_busybox_layout
from tests.runtime.netns_fixture import own_netns  # noqa: F401 - a fixture
from tests.tarbuild import E

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SERVER = "while true; do echo hello-from-$(hostname) | nc -l -p 80; done"
# a client that waits for the server to listen: up to 5 s
# (a connection the server's previous nc accepted while exiting gives no data: try again)
CLIENT = ('(for i in $(seq 50); do out=$(nc {host} 80 </dev/null) && [ -n "$out" ] && echo "$out" && exit 0; '
          'sleep 0.1; done; exit 1)')
RUNTIMES = ["crun", "runc"]
UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 81))
while True:
    data, addr = s.recvfrom(100)
    s.sendto(b"echo:" + data, addr)
"""


@pytest.fixture(scope="session")
def net_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox with nc, and ``nsswitch.conf`` saying hosts come from files (as real images do;
    without it glibc asks DNS first)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    extra = [E("etc/nsswitch.conf", b"hosts: files\n")]
    extra += [E(f"bin/{a}", kind="symlink", target="busybox") for a in ("nc", "wget", "ping", "sed", "awk")]
    return write_busybox_layout(tmp_path_factory.mktemp("bbnet") / "oci", extra=extra)


class Lamina:
    def __init__(self, root: Path, runtime: str) -> None:
        self.root, self.runtime = root, runtime

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "lamina", "--root", str(self.root), "--runtime", self.runtime, *args]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        if check and p.returncode != 0:
            raise AssertionError(f"lamina {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def out(self, *args: str) -> str:
        return self.run(*args).stdout


def net_leftovers(root: Path) -> list[str]:
    """What a removed container's network could leak, in the test's namespace."""
    found = []
    d = root / "runtime" / "network"
    if d.is_dir():
        found += [f"state {p.name}" for p in d.iterdir() if p.suffix in (".json", ".netns", ".tmp")]
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout or "[]")
    found += [f"veth {x['ifname']}" for x in links if x["ifname"].startswith("lv")]
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {ln.split()[4]}" for ln in mounts.splitlines() if str(d) in ln]
    return found


def bridge_ports(bridge: str) -> list[str]:
    links = json.loads(subprocess.run(["ip", "-j", "link", "show", "master", bridge], capture_output=True,
                                      text=True).stdout or "[]")
    return [x["ifname"] for x in links]


@pytest.fixture
def net_env(own_netns: str, net_layout: Path, tmp_path: Path,  # noqa: F811
            request: pytest.FixtureRequest) -> Iterator[Lamina]:
    """A store (overlay or vfs: ``driver`` param, default overlay) with ``bb:1``, used through
    the CLI with the runtime ``runtime`` (param, default crun), inside the test's namespace."""
    import drivers
    from graph import Store
    from graph.archive import load_archive

    driver = getattr(request, "param", ("overlay", "crun"))[0]
    rt = getattr(request, "param", ("overlay", "crun"))[1]
    root = tmp_path / "root"
    reason = drivers.supported(driver, root / "drivers" / driver)
    if reason is not None:
        pytest.skip(f"driver {driver}: {reason}")
    if subprocess.run(["sh", "-c", f"command -v {rt}"], capture_output=True).returncode != 0:
        pytest.skip(f"{rt} is not installed")
    store = Store(root, driver=driver)
    try:
        load_archive(store, net_layout)
        yield Lamina(root, rt)
    finally:
        try:
            problems = cleanup_store(store, root)
        finally:
            store.close()
        problems += net_leftovers(root)
        assert not problems, "left behind:\n" + "\n".join(problems)


def _ip_of(lam: Lamina, name: str, network: str) -> str:
    doc = json.loads(lam.out("inspect", name))[0]
    return str(doc["NetworkSettings"]["Networks"][network]["IPAddress"])


MATRIX = [(d, r) for d in ("overlay", "vfs") for r in RUNTIMES]


@pytest.mark.parametrize("net_env", MATRIX, indirect=True, ids=[f"{d}-{r}" for d, r in MATRIX])
def test_two_containers_on_a_user_network_talk_by_name_and_alias(net_env: Lamina) -> None:
    lam = net_env
    nid = lam.out("network", "create", "app").strip()
    assert len(nid) == 64
    lam.run("run", "-d", "--name", "srv", "--network", "app", "--network-alias", "db", "bb:1", "sh", "-c", SERVER)
    r = lam.run("run", "--rm", "--network", "app", "bb:1", "sh", "-c",
                CLIENT.format(host="srv") + " && " + CLIENT.format(host="db") + " && cat /etc/hosts", check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("hello-from-") == 2, r.stdout
    srv_ip = _ip_of(lam, "srv", "app")
    assert srv_ip.startswith("172.18.")  # the first user-defined network gets 172.18.0.0/16
    assert any(ln.split()[:3] == [srv_ip, "srv", "db"] for ln in r.stdout.splitlines()), r.stdout
    bridge = f"lm-{nid[:12]}"
    assert len(bridge_ports(bridge)) == 1  # srv's veth; the --rm client's is gone
    lam.run("rm", "-f", "srv")
    assert bridge_ports(bridge) == []
    assert net_leftovers(lam.root) == []
    lam.run("network", "rm", "app")
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0


def test_default_bridge_has_no_names_but_addresses(net_env: Lamina) -> None:
    lam = net_env
    lam.run("run", "-d", "--name", "srv", "--network", "bridge", "bb:1", "sh", "-c", SERVER)
    ip = _ip_of(lam, "srv", "bridge")
    assert ip.startswith("172.17.")
    r = lam.run("run", "--rm", "--network", "bridge", "bb:1", "sh", "-c",
                f"nc -w 1 srv 80 </dev/null; echo rc=$?; {CLIENT.format(host=ip)}", check=False)
    assert "rc=1" in r.stdout and "hello-from-" in r.stdout, r.stdout + r.stderr
    assert "lamina0" in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_published_port_reaches_a_server_from_loopback(net_env: Lamina) -> None:
    lam = net_env
    lam.run("run", "-d", "--name", "web", "-p", "127.0.0.1:18080:80", "-p", "18081:81/udp", "--network",
            "bridge", "bb:1", "sh", "-c", SERVER)
    assert lam.out("port", "web").splitlines() == ["80/tcp -> 127.0.0.1:18080", "81/udp -> 127.0.0.1:18081"]
    assert lam.out("port", "web", "80").strip() == "127.0.0.1:18080"
    got = b""
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", 18080), timeout=5) as s:
            got = s.recv(100)
        if got:
            break
        time.sleep(0.1)
    assert got.startswith(b"hello-from-"), got
    # UDP: busybox's nc has no -u, so the echo server is a Python one in the container's
    # network namespace (its SandboxKey); the datagrams go through the proxy and the bridge
    sandbox = json.loads(lam.out("inspect", "web"))[0]["NetworkSettings"]["SandboxKey"]
    echo = subprocess.Popen(["nsenter", f"--net={sandbox}", sys.executable, "-c", UDP_ECHO])
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(0.3)
        answer = b""
        for _ in range(30):
            u.sendto(b"ping-udp", ("127.0.0.1", 18081))
            try:
                answer = u.recv(100)
                break
            except TimeoutError:
                continue
        u.close()
    finally:
        echo.kill()
        echo.wait()
    assert answer == b"echo:ping-udp"
    # the port is held: a second container cannot take it, and nothing of it is left
    r = lam.run("run", "-d", "--name", "web2", "-p", "127.0.0.1:18080:80", "--network", "bridge", "bb:1",
                "sleep", "5", check=False)
    assert r.returncode != 0 and "port is already allocated" in r.stderr
    lam.run("rm", "-f", "web")
    with socket.socket() as s:  # free again: the proxy went with the container (SO_REUSEADDR:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the test's connection is in TIME_WAIT)
        s.bind(("127.0.0.1", 18080))
        s.listen()
    assert net_leftovers(lam.root) == []


def test_publish_all_binds_exposed_ports_on_loopback(net_env: Lamina) -> None:
    from graph import Store
    import runtime

    with Store(net_env.root) as store:
        r = runtime.run(store, "bb:1", name="pall", attach=False, runtime=net_env.runtime, config={
            "Cmd": ["sh", "-c", SERVER], "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {"NetworkMode": "bridge", "PublishAllPorts": True}})
        del r
    lines = net_env.out("port", "pall").splitlines()
    assert len(lines) == 1 and lines[0].startswith("80/tcp -> 127.0.0.1:")
    port = int(lines[0].rsplit(":", 1)[1])
    assert port > 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert s.recv(100).startswith(b"hello-from-")


def _forwarding(name: str, on: bool) -> None:
    # /proc/sys/net follows the network namespace of the process that opens it: the test's
    subprocess.run(["nsenter", f"--net=/run/netns/{name}", "sh", "-c",
                    f"echo {1 if on else 0} > /proc/sys/net/ipv4/ip_forward"], check=True)


def test_containers_on_different_networks_cannot_reach_each_other(net_env: Lamina, own_netns: str) -> None:  # noqa: F811
    lam = net_env
    lam.run("network", "create", "a")
    lam.run("network", "create", "b")
    lam.run("run", "-d", "--name", "srv", "--network", "a", "bb:1", "sh", "-c", SERVER)
    ip = _ip_of(lam, "srv", "a")
    probe = f"nc -w 2 {ip} 80 </dev/null; echo rc=$?"
    same = lam.run("run", "--rm", "--network", "a", "bb:1", "sh", "-c", CLIENT.format(host=ip))
    assert "hello-from-" in same.stdout
    other = lam.run("run", "--rm", "--network", "b", "bb:1", "sh", "-c", probe + "; nc -w 1 srv 80; echo rc=$?")
    assert "hello-from-" not in other.stdout and other.stdout.count("rc=1") == 2, other.stdout
    # with routing on in the namespace, the isolation rules still keep the networks apart
    _forwarding(own_netns, True)
    other = lam.run("run", "--rm", "--network", "b", "bb:1", "sh", "-c", probe)
    assert "hello-from-" not in other.stdout, other.stdout
    # ... and they are what does it: without them the same probe gets through
    subprocess.run(["iptables", "-w", "-F", "LAMINA-ISOLATION"], check=True)
    through = lam.run("run", "--rm", "--network", "b", "bb:1", "sh", "-c", probe)
    assert "hello-from-" in through.stdout, through.stdout


def test_killed_monitor_leaves_no_veth_namespace_or_proxy(net_env: Lamina) -> None:
    lam = net_env
    nid = lam.out("network", "create", "app").strip()
    cid = lam.out("run", "-d", "--name", "victim", "--network", "app", "-p", "127.0.0.1:18090:80", "bb:1",
                  "sh", "-c", SERVER).strip()
    state = json.loads((lam.root / "containers" / cid / "state.json").read_text())
    net_state = json.loads((lam.root / "runtime" / "network" / f"{cid}.json").read_text())
    proxy = int(net_state["proxy"]["pid"])
    assert len(bridge_ports(f"lm-{nid[:12]}")) == 1
    os.kill(int(state["MonitorPid"]), signal.SIGKILL)
    assert wait_pids_gone([proxy], 10.0) == []  # the proxy follows its monitor
    assert net_leftovers(lam.root)  # veth and namespace still there ...
    lam.run("ps", "-a")  # ... until the next command looks
    assert net_leftovers(lam.root) == []
    assert bridge_ports(f"lm-{nid[:12]}") == []
    # the address is free again: a new container gets the same one
    lam.run("run", "-d", "--name", "again", "--network", "app", "bb:1", "sleep", "30")
    assert _ip_of(lam, "again", "app") == "172.18.0.2"


def test_sweep_cleans_a_namespace_left_by_a_crash(net_env: Lamina) -> None:
    """A state file and a bound namespace with no running container (a crash between attach
    and start): the next command takes them down."""
    from graph import Store
    from runtime.network import netns, setup

    cid = "f" * 64
    d = net_env.root / "runtime" / "network"
    d.mkdir(parents=True, exist_ok=True)
    path = str(d / f"{cid}.netns")
    netns.create(path)
    assert netns.is_bound(path)
    with Store(net_env.root) as store:
        setup._write_state(store, cid, {"netns": path, "links": []})
    net_env.run("ps")
    assert net_leftovers(net_env.root) == []


def test_ip_hostname_and_connect_disconnect(net_env: Lamina) -> None:
    lam = net_env
    lam.run("network", "create", "--subnet", "10.77.0.0/24", "--gateway", "10.77.0.254", "front")
    lam.run("network", "create", "back")
    lam.run("run", "-d", "--name", "db", "--network", "back", "bb:1", "sh", "-c", SERVER)
    lam.run("run", "-d", "--name", "app", "--hostname", "apphost", "--network", "front", "--ip", "10.77.0.50",
            "bb:1", "sleep", "60")
    addr = lam.out("exec", "app", "sh", "-c", "ip -o -4 addr show eth0; ip route; hostname")
    assert "10.77.0.50/24" in addr and "default via 10.77.0.254" in addr and "apphost" in addr, addr
    # a taken --ip is refused, with nothing left
    r = lam.run("run", "-d", "--network", "front", "--ip", "10.77.0.50", "bb:1", "true", check=False)
    assert r.returncode != 0 and "in use" in r.stderr
    # db is not reachable by name from app ... until app is connected to back
    r = lam.run("exec", "app", "sh", "-c", "nc -w 1 db 80 </dev/null; echo rc=$?")
    assert "rc=1" in r.stdout
    lam.run("network", "connect", "--alias", "theapp", "back", "app")
    got = lam.out("exec", "app", "sh", "-c", CLIENT.format(host="db") + "; ip -o link show eth1")
    assert "hello-from-" in got and "eth1" in got
    assert "theapp" in lam.out("exec", "db", "cat", "/etc/hosts")  # db's hosts file was updated
    doc = json.loads(lam.out("network", "inspect", "back"))[0]
    assert {v["Name"] for v in doc["Containers"].values()} == {"db", "app"}
    lam.run("network", "disconnect", "back", "app")
    r = lam.run("exec", "app", "sh", "-c", "ip link show eth1; echo rc=$?")
    assert "rc=0" not in r.stdout and "can't find device" in r.stderr
    assert "theapp" not in lam.out("exec", "db", "cat", "/etc/hosts")
    r = lam.run("network", "rm", "front", check=False)
    assert r.returncode != 0 and "active endpoints" in r.stderr


def test_masquerade_is_opt_in_and_removed_with_the_network(net_env: Lamina) -> None:
    lam = net_env
    lam.run("network", "create", "--subnet", "10.88.0.0/24", "plain")
    nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    assert "MASQUERADE" not in nat
    lam.run("network", "create", "--subnet", "10.89.0.0/24", "--opt", "masquerade=true", "out")
    nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    assert "-s 10.89.0.0/24" in nat and "MASQUERADE" in nat
    lam.run("network", "rm", "out", "plain")
    nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    assert "MASQUERADE" not in nat
    filt = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout
    assert "lamina:" not in filt


def test_network_ls_inspect_prune_and_bad_input(net_env: Lamina) -> None:
    lam = net_env
    names = [ln.split()[1] for ln in lam.out("network", "ls").splitlines()[1:]]
    assert names[:3] == ["bridge", "host", "none"]
    lam.run("network", "create", "x")
    r = lam.run("network", "create", "x", check=False)
    assert r.returncode == 3 and r.stderr.count("\n") == 1
    r = lam.run("network", "create", "--subnet", "172.18.5.0/24", "y", check=False)
    assert r.returncode == 4 and "overlaps" in r.stderr
    r = lam.run("run", "--network", "nosuch", "bb:1", "true", check=False)
    assert r.returncode == 2 and "nosuch" in r.stderr
    r = lam.run("run", "-p", "80", "--network", "none", "bb:1", "true", check=False)
    assert r.returncode == 5
    assert lam.run("ps", "-a", "-q").stdout.strip() == ""  # nothing half-made
    doc = json.loads(lam.out("network", "inspect", "bridge"))[0]
    assert doc["IPAM"]["Config"] == [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]
    assert lam.out("network", "prune").split() == ["Deleted", "Networks:", "x"]
    r = lam.run("network", "rm", "bridge", check=False)
    assert r.returncode == 4


def test_connect_a_created_container_then_start_and_network_rm_of_a_stopped_member(net_env: Lamina) -> None:
    lam = net_env
    lam.run("network", "create", "x")
    lam.run("network", "create", "y")
    lam.run("create", "--name", "c1", "--network", "x", "bb:1", "sleep", "60")
    lam.run("network", "connect", "y", "c1")
    lam.run("start", "c1")
    got = lam.out("exec", "c1", "sh", "-c", "ip -o -4 addr show | grep -c 'eth[01] '")
    assert got.strip() == "2"
    settings = json.loads(lam.out("inspect", "c1"))[0]["NetworkSettings"]
    assert set(settings["Networks"]) == {"x", "y"} and settings["IPAddress"].startswith("172.18.")
    lam.run("stop", "-t", "0", "c1")
    assert net_leftovers(lam.root) == []
    lam.run("network", "rm", "y")  # a stopped member does not hold it (Docker's rule) ...
    r = lam.run("start", "c1", check=False)
    assert r.returncode == 0  # ... and c1 still has x
    lam.run("rm", "-f", "c1")
    lam.run("network", "rm", "x")
