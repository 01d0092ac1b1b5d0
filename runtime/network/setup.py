"""A container's network on bridge networks, kernel side: what ``start`` sets up before the
container's process runs, and what its exit, ``rm`` or the crash sweep take down.

Per running container, under ``<root>/runtime/network/``:

    <id>.netns   the container's network namespace (``runtime.network.netns``), named in its
                 bundle; it holds one interface per network (``eth0``, ``eth1``, ...)
    <id>.json    what was made: the namespace, the host ends of its veths, the proxy's pid and
                 start time, the published ports (``lamina port``); written *before* anything is
                 made, so a crash at any step leaves a record for ``sweep``

Records (networks, endpoints, addresses) are ``graph.networks``'; this module asks it for an
address when a container starts and gives it back when it stops. One ``flock`` on
``<root>/runtime/network/lock`` serialises set-up, teardown and hosts-file updates of a store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from graph import InvalidInput, LaminaError, NotFound
from runtime.network import etc, links, netns, ports
from runtime.network.mode import mode_of

if TYPE_CHECKING:
    from graph import Container, Store
    from graph import Endpoint, Network, NetworkStore

NOT_BRIDGE = ("none", "host")
_pending_ports: dict[str, list[tuple[socket.socket, ports.Binding]]] = {}


# ---- modes and names ------------------------------------------------------------------------------
def on_bridge(config: Mapping[str, Any]) -> bool:
    return mode_of(config) not in NOT_BRIDGE


def network_dir(store: "Store") -> str:
    return str(store.root / "runtime" / "network")


def netns_path(store: "Store", container_id: str) -> str:
    return os.path.join(network_dir(store), f"{container_id}.netns")


def netns_for(store: "Store", c: "Container") -> str | None:
    """The namespace path the bundle names, or None (``none``: the runtime makes an empty one;
    ``host``: none at all)."""
    return netns_path(store, c.id) if on_bridge(c.config) else None


def host_ifname(network_id: str, container_id: str) -> str:
    """The host end of a container's veth on a network: ``lv`` + 12 hex digits (15 at most)."""
    import hashlib

    return "lv" + hashlib.sha256(f"{network_id}/{container_id}".encode()).hexdigest()[:12]


address_pools: str | None = None
"""The address pools new networks take subnets from (``BASE/LEN:SIZE,...``, see
``graph.networks.parse_pools``); None: Docker's defaults. Set by the CLI from
``$LAMINA_ADDRESS_POOLS`` (``lamina.config``) and by an embedder as it likes."""


def records(store: "Store") -> "NetworkStore":
    from graph import NetworkStore, parse_network_pools

    return NetworkStore(store.db, parse_network_pools(address_pools) if address_pools else None)


@contextlib.contextmanager
def locked(store: "Store") -> Iterator[None]:
    d = network_dir(store)
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---- state file ----------------------------------------------------------------------------------
def _state_path(store: "Store", cid: str) -> str:
    return os.path.join(network_dir(store), f"{cid}.json")


def read_state(store: "Store", cid: str) -> dict[str, Any] | None:
    try:
        with open(_state_path(store, cid), encoding="utf-8") as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else {}
    except FileNotFoundError:
        return None
    except ValueError:
        return {}


def _write_state(store: "Store", cid: str, doc: Mapping[str, Any]) -> None:
    path = _state_path(store, cid)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


# ---- create ------------------------------------------------------------------------------------------
def join_configured(store: "Store", c: "Container") -> None:
    """At create: attach the container to the networks its record names (``NetworkMode`` first,
    then any other ``NetworkingConfig.EndpointsConfig`` entry), with their aliases and
    ``IPAMConfig.IPv4Address``. Raises NotFound (no such network), InvalidInput, Conflict."""
    if not on_bridge(c.config):
        if (c.config.get("HostConfig") or {}).get("PortBindings") or (
                (c.config.get("HostConfig") or {}).get("PublishAllPorts")):
            raise InvalidInput(f"published ports need a bridge network, not --network {mode_of(c.config)}")
        return
    nets = records(store)
    eps = dict(((c.config.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}))
    primary = mode_of(c.config)
    order = [primary] + [k for k in eps if k != primary]
    ports.bindings_of(c.config)  # validate now, not at start
    for key in order:
        net = nets.get(key)
        if net.driver != "bridge":
            raise InvalidInput(f"container cannot be connected to network {net.name} ({net.driver}) "
                               f"together with others")
        cfg = eps.get(key) or eps.get(net.name) or {}
        ipam = cfg.get("IPAMConfig") or {}
        nets.join(net, c.id, aliases=list(cfg.get("Aliases") or []),
                  static_ip=str(ipam["IPv4Address"]) if ipam.get("IPv4Address") else None)


# ---- start -------------------------------------------------------------------------------------------
def attach(store: "Store", c: "Container") -> None:
    """Before the container starts: its namespace, a veth on each of its networks' bridges
    (made if missing), addresses and the default route (via the first network's gateway),
    ``hosts`` and ``resolv.conf``, the other members' hosts files, and the published ports'
    sockets (bound now: a port in use fails the start). No-op off bridge networks.

    Raises: NotFound (a network was removed), Conflict (port in use, no free address),
    LaminaError (ip's refusal). On failure everything made is taken down again.
    """
    if not on_bridge(c.config):
        return
    nets = records(store)
    with locked(store):
        release_locked(store, nets, c.id)  # left by a crash of an earlier start
        eps = nets.endpoints(container_id=c.id)
        if not eps:
            raise NotFound(f"network {mode_of(c.config)} not found")
        by_id = {n.id: n for n in nets.list()}
        path = netns_path(store, c.id)
        plan = [(by_id[e.network_id], e) for e in eps]
        _write_state(store, c.id, {"netns": path, "links": [host_ifname(n.id, c.id) for n, _ in plan],
                                   "networks": [n.id for n, _ in plan]})
        try:
            got = [(n, nets.allocate(n, c.id)) for n, _ in plan]
            netns.create(path)
            for n, ep in got:
                _host_side(store, n, [(host_ifname(n.id, c.id), str(ep.ifname), str(ep.mac), path)])
            with netns.entered(path):
                for i, (n, ep) in enumerate(got):
                    links.container_side(str(ep.ifname), _cidr(n, str(ep.ip)),
                                         n.gateway if i == 0 and not n.internal else None)
            _write_etc(store, nets, c, got)
            _refresh_peers(store, nets, [n for n, _ in got], skip=c.id)
            bound = ports.bind_all(ports.bindings_of(c.config))
            if bound:
                _pending_ports[c.id] = bound
        except BaseException:
            with contextlib.suppress(LaminaError, OSError):
                release_locked(store, nets, c.id)
            raise


def started(store: "Store", c: "Container", monitor_pid: int) -> None:
    """The container runs under its monitor: hand the bound ports to a proxy that lives as
    long as the monitor, and record them."""
    bound = _pending_ports.pop(c.id, None)
    if not bound:
        return
    try:
        nets = records(store)
        eps = nets.endpoints(container_id=c.id)
        target = next((e.ip for e in eps if e.ip), None)
        if target is None:
            return
        from runtime.proc import start_time

        pid = ports.spawn_proxy(bound, target, monitor_pid)
        with locked(store):
            st = read_state(store, c.id) or {}
            st["proxy"] = {"pid": pid, "start": start_time(pid) or 0}
            st["ports"] = _ports_doc([b for _, b in bound])
            _write_state(store, c.id, st)
    finally:
        for s, _ in bound:
            s.close()


def _ports_doc(bound: Sequence[ports.Binding]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for b in bound:
        out.setdefault(b.key(), []).append({"HostIp": b.host_ip, "HostPort": str(b.host_port)})
    return out


def _cidr(n: "Network", ip: str) -> str:
    return f"{ip}/{n.ip_network().prefixlen}"


def _host_side(store: "Store", n: "Network", veths: Sequence[tuple[str, str, str, str]]) -> None:
    assert n.bridge and n.gateway
    links.host_side(n.bridge, _cidr(n, n.gateway), veths)
    _ensure_rules(store, n)


def _here() -> str:
    """This boot and network namespace: rules made under another (before a reboot, in another
    namespace) are not here."""
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
        boot = f.read().strip()
    return f"{boot} {os.stat('/proc/thread-self/ns/net').st_ino}"


def _rules_marker(store: "Store", n: "Network") -> str:
    return os.path.join(network_dir(store), f"{n.id}.rules")


def _ensure_rules(store: "Store", n: "Network") -> None:
    """The network's packet-filter rules, made once per boot and namespace (a marker file
    says they were: each ``iptables`` call costs about 5 ms, a start should not pay six)."""
    from runtime.network import firewall

    marker, here = _rules_marker(store, n), _here()
    with contextlib.suppress(OSError):
        with open(marker, encoding="utf-8") as f:
            if f.read().strip() == here:
                return
    firewall.ensure(n)
    with open(marker, "w", encoding="utf-8") as f:
        f.write(here + "\n")


def ensure_bridge(store: "Store", n: "Network") -> None:
    """The network's bridge, gateway address and rules (at ``network create``; idempotent)."""
    with locked(store):
        _host_side(store, n, [])


def remove_bridge(store: "Store", n: "Network") -> None:
    """Take down the network's bridge and rules (``network rm``)."""
    from runtime.network import firewall

    with locked(store):
        if n.bridge:
            links.delete([n.bridge])
        firewall.remove(n)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_rules_marker(store, n))


# ---- hosts files ------------------------------------------------------------------------------------
def _container_dir(store: "Store", cid: str) -> str:
    return str(store.root / "containers" / cid)


def _names(c: "Container", ep: "Endpoint") -> list[str]:
    return [c.name, *ep.aliases, c.id[:12]]


def _hosts_for(store: "Store", nets: "NetworkStore", c: "Container",
               mine: Sequence[tuple["Network", "Endpoint"]]) -> str:
    from runtime import bundle

    hostname = bundle.hostname_of(c.config, c.id)
    own = [(str(ep.ip), [hostname, *(_names(c, ep) if n.user_defined else [])]) for n, ep in mine if ep.ip]
    peers: list[tuple[str, list[str]]] = []
    for n, _ep in mine:
        if not n.user_defined:
            continue  # the default bridge: no names of others (Docker's rule; it had --link)
        for other in nets.endpoints(network_id=n.id):
            if other.container_id == c.id or not other.ip:
                continue
            try:
                oc = store.containers.get(other.container_id)
            except NotFound:
                continue
            peers.append((other.ip, _names(oc, other)))
    return etc.hosts(own[:1] + own[1:], peers)


def _write_etc(store: "Store", nets: "NetworkStore", c: "Container",
               mine: Sequence[tuple["Network", "Endpoint"]]) -> None:
    d = _container_dir(store, c.id)
    if not os.path.isdir(d):
        return
    etc.write_in_place(os.path.join(d, "hosts"), _hosts_for(store, nets, c, mine))
    host_resolv = None
    with contextlib.suppress(OSError):
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
            host_resolv = f.read(1 << 20)
    etc.write_in_place(os.path.join(d, "resolv.conf"), etc.resolv_conf(host_resolv))


def _refresh_peers(store: "Store", nets: "NetworkStore", changed: Sequence["Network"], skip: str) -> None:
    """Rewrite the hosts file of every running member of the user-defined networks in
    ``changed`` (someone joined or left)."""
    by_id = {n.id: n for n in nets.list()}
    todo: set[str] = set()
    for n in changed:
        if n.user_defined:
            todo |= {e.container_id for e in nets.endpoints(network_id=n.id) if e.ip and e.container_id != skip}
    for cid in sorted(todo):
        try:
            oc = store.containers.get(cid)
        except NotFound:
            continue
        mine = [(by_id[e.network_id], e) for e in nets.endpoints(container_id=cid) if e.ip and e.network_id in by_id]
        with contextlib.suppress(OSError):
            _write_etc(store, nets, oc, mine)


# ---- teardown ----------------------------------------------------------------------------------------
def release(store: "Store", container_id: str) -> None:
    """Take down what ``attach`` made for the container (after it exited, at ``rm``, after a
    crash): the proxy, the veths, the namespace, the addresses; the other members' hosts files
    updated. Idempotent; a cheap no-op when nothing was made (one ``stat``)."""
    _drop_pending(container_id)
    if not os.path.exists(_state_path(store, container_id)):
        return
    nets = records(store)
    with locked(store):
        release_locked(store, nets, container_id)


def _drop_pending(cid: str) -> None:
    for s, _ in _pending_ports.pop(cid, None) or []:
        s.close()


def release_locked(store: "Store", nets: "NetworkStore", cid: str) -> None:
    st = read_state(store, cid)
    if st is None:
        return
    proxy = st.get("proxy") or {}
    _kill_proxy(int(proxy.get("pid") or 0), int(proxy.get("start") or 0))
    links.delete([str(x) for x in st.get("links") or []])
    netns.remove(str(st.get("netns") or netns_path(store, cid)))
    changed = []
    by_id = {n.id: n for n in nets.list()}
    for e in nets.endpoints(container_id=cid):
        if e.ip:
            nets.release(e.network_id, cid)
            if e.network_id in by_id:
                changed.append(by_id[e.network_id])
    _refresh_peers(store, nets, changed, skip=cid)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_state_path(store, cid))


def _kill_proxy(pid: int, start: int) -> None:
    from runtime.proc import start_time

    if pid > 0 and start and start_time(pid) == start:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def sweep(store: "Store", active: Callable[[str], bool]) -> list[str]:
    """Take down the network of every container that is not running (``active`` says) but
    has a state file, a namespace file or an address: left by a crash or a killed monitor.
    The IDs cleaned."""
    d = network_dir(store)
    if not os.path.isdir(d):
        return []
    nets = records(store)
    done = []
    with locked(store):
        cids = {name.split(".")[0] for name in os.listdir(d) if name.endswith((".json", ".netns"))}
        cids |= {e.container_id for e in nets.endpoints() if e.ip}
        for cid in sorted(cids):
            if active(cid):
                continue
            if read_state(store, cid) is None:
                _write_state(store, cid, {"netns": netns_path(store, cid), "links": [
                    host_ifname(e.network_id, cid) for e in nets.endpoints(container_id=cid)]})
            release_locked(store, nets, cid)
            done.append(cid)
    return done


# ---- looking -------------------------------------------------------------------------------------------
def published(store: "Store", container_id: str) -> dict[str, list[dict[str, str]]]:
    """The container's published ports now (Docker's ``NetworkSettings.Ports`` shape, without
    the unpublished exposed ports)."""
    st = read_state(store, container_id) or {}
    return dict(st.get("ports") or {})
