"""What ``lamina network ...``, ``lamina port`` and the Engine API's ``/networks`` endpoints call:
one function per operation, taking the store first (the CLI and the daemon share them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from graph import Conflict, InvalidInput, LaminaError, NotFound
from runtime.network import links, netns, setup

if TYPE_CHECKING:
    from graph import Container, Store
    from graph import Network


def list_networks(store: "Store") -> list["Network"]:
    return setup.records(store).list()


def get_network(store: "Store", key: str) -> "Network":
    return setup.records(store).get(key)


def create_network(store: "Store", name: str, *, driver: str = "bridge", subnet: str | None = None,
                   gateway: str | None = None, internal: bool = False,
                   options: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None) -> "Network":
    """``docker network create``: the record, then its bridge and rules (made now, so a
    failure is seen now; the record is removed again if they cannot be made).
    Raises: InvalidInput, AlreadyExists, Conflict (overlapping subnet), LaminaError (ip)."""
    known = {"masquerade", "com.docker.network.bridge.enable_ip_masquerade"}
    for k in options or {}:
        if k not in known:
            raise InvalidInput(f"unknown network option {k!r}: lamina knows masquerade=true|false")
    opts = dict(options or {})
    if "com.docker.network.bridge.enable_ip_masquerade" in opts:  # Docker's name for it
        opts["masquerade"] = opts.pop("com.docker.network.bridge.enable_ip_masquerade")
    nets = setup.records(store)
    net = nets.create(name, driver=driver, subnet=subnet, gateway=gateway, internal=internal,
                      options=opts, labels=dict(labels or {}))
    try:
        setup.ensure_bridge(store, net)
    except BaseException:
        with contextlib.suppress(LaminaError, OSError):
            setup.remove_bridge(store, net)
        nets.remove(net)
        raise
    return net


def remove_network(store: "Store", key: str) -> "Network":
    """``docker network rm``: refused while a running container is attached.
    Raises NotFound, Conflict."""
    sweep(store)
    nets = setup.records(store)
    net = nets.get(key)
    nets.remove(net)
    setup.remove_bridge(store, net)
    return net


def prune_networks(store: "Store") -> list[str]:
    """``docker network prune``: every user-defined network no container is attached to; the
    names removed."""
    sweep(store)
    nets = setup.records(store)
    used = {e.network_id for e in nets.endpoints()}
    gone = []
    for net in nets.list():
        if net.predefined or net.id in used:
            continue
        with contextlib.suppress(Conflict, NotFound):
            nets.remove(net)
            setup.remove_bridge(store, net)
            gone.append(net.name)
    return gone


def sweep(store: "Store") -> list[str]:
    """Clean the network of containers that are no longer running (crash leftovers)."""
    from runtime.reconcile import network_active  # (runtime.reconcile the name is the function)

    return setup.sweep(store, lambda cid: network_active(store, cid))


def _running(store: "Store", key: str) -> tuple["Container", bool]:
    from runtime.reconcile import reconcile
    from runtime.state import ACTIVE

    c = store.containers.get(key)
    got = reconcile(store, c)
    if got is None:
        raise NotFound(f"no such container: {key}")
    return got[0], got[1].Status in ACTIVE


def connect(store: "Store", net_key: str, container_key: str, *, aliases: Sequence[str] = (),
            ip: str | None = None) -> None:
    """``docker network connect``: attach a container; a running one gets its interface at
    once (``ethN`` in its namespace, no default route), and every member's hosts file is
    updated. Raises NotFound, AlreadyExists, InvalidInput (not a bridge container), Conflict."""
    nets = setup.records(store)
    net = nets.get(net_key)
    c, running = _running(store, container_key)
    if not setup.on_bridge(c.config):
        raise InvalidInput(f"container {c.name} uses --network {setup.mode_of(c.config)}: "
                           f"it cannot be connected to a bridge network")
    nets.join(net, c.id, aliases=aliases, static_ip=ip)
    if not running:
        return
    try:
        with setup.locked(store):
            st = setup.read_state(store, c.id) or {}
            path = str(st.get("netns") or setup.netns_path(store, c.id))
            if not netns.is_bound(path):
                raise Conflict(f"container {c.name} has no network namespace to connect")
            host_if = setup.host_ifname(net.id, c.id)
            st["links"] = [*(st.get("links") or []), host_if]
            st["networks"] = [*(st.get("networks") or []), net.id]
            setup._write_state(store, c.id, st)
            ep = nets.allocate(net, c.id)
            setup._host_side(store, net, [(host_if, str(ep.ifname), str(ep.mac), path)])
            with netns.entered(path):
                links.container_side(str(ep.ifname), setup._cidr(net, str(ep.ip)), None)
            _rewrite(store, c)
            setup._refresh_peers(store, nets, [net], skip=c.id)
    except BaseException:
        with contextlib.suppress(LaminaError, OSError):
            _disconnect_running(store, net, c)
        with contextlib.suppress(NotFound):
            nets.leave(net, c.id)
        raise


def _rewrite(store: "Store", c: "Container") -> None:
    nets = setup.records(store)
    by_id = {n.id: n for n in nets.list()}
    mine = [(by_id[e.network_id], e) for e in nets.endpoints(container_id=c.id) if e.ip]
    setup._write_etc(store, nets, c, mine)


def _disconnect_running(store: "Store", net: "Network", c: "Container") -> None:
    nets = setup.records(store)
    with setup.locked(store):
        host_if = setup.host_ifname(net.id, c.id)
        links.delete([host_if])
        nets.release(net.id, c.id)
        st = setup.read_state(store, c.id)
        if st is not None:
            st["links"] = [x for x in st.get("links") or [] if x != host_if]
            st["networks"] = [x for x in st.get("networks") or [] if x != net.id]
            setup._write_state(store, c.id, st)
        _rewrite(store, c)
        setup._refresh_peers(store, nets, [net], skip=c.id)


def disconnect(store: "Store", net_key: str, container_key: str, *, force: bool = False) -> None:
    """``docker network disconnect``: a running container loses its interface at once.
    Raises NotFound (network, container, not connected)."""
    del force  # nothing to force: lamina's endpoints are always its own
    nets = setup.records(store)
    net = nets.get(net_key)
    c, running = _running(store, container_key)
    if nets.endpoint(net, c.id) is None:
        raise NotFound(f"container {c.name} is not connected to network {net.name}")
    if running:
        _disconnect_running(store, net, c)
    nets.leave(net, c.id)


def inspect_network(store: "Store", key: str) -> dict[str, Any]:
    """Docker's ``NetworkResource`` with the running members."""
    from graph import network_inspect_doc

    nets = setup.records(store)
    net = nets.get(key)
    members: dict[str, dict[str, Any]] = {}
    for e in nets.endpoints(network_id=net.id):
        if not e.ip:
            continue
        with contextlib.suppress(NotFound):
            oc = store.containers.get(e.container_id)
            members[oc.id] = {"Name": oc.name, "EndpointID": setup.host_ifname(net.id, oc.id),
                              "MacAddress": e.mac, "IPv4Address": setup._cidr(net, e.ip), "IPv6Address": ""}
    return network_inspect_doc(net, members)


def port(store: "Store", container_key: str) -> dict[str, list[dict[str, str]]]:
    """``docker port``: the published ports of a running container (``{"80/tcp": [{"HostIp":
    "127.0.0.1", "HostPort": "18080"}]}``); empty when it does not run."""
    c, running = _running(store, container_key)
    return setup.published(store, c.id) if running else {}


def settings(store: "Store", c: "Container") -> dict[str, Any]:
    """Docker's ``NetworkSettings`` of a container (``inspect``)."""
    nets = setup.records(store)
    by_id = {n.id: n for n in nets.list()}
    networks: dict[str, Any] = {}
    mode = setup.mode_of(c.config)
    if not setup.on_bridge(c.config):
        with contextlib.suppress(NotFound):
            n = nets.get(mode)
            networks[n.name] = {"NetworkID": n.id, "Aliases": None, "IPAddress": "", "Gateway": "",
                                "IPPrefixLen": 0, "MacAddress": ""}
    for e in nets.endpoints(container_id=c.id):
        n = by_id.get(e.network_id)
        if n is None:
            continue
        networks[n.name] = {
            "NetworkID": n.id, "EndpointID": setup.host_ifname(n.id, c.id) if e.ip else "",
            "Aliases": list(e.aliases) or None,
            "IPAMConfig": {"IPv4Address": e.static_ip} if e.static_ip else None,
            "IPAddress": e.ip or "", "IPPrefixLen": n.ip_network().prefixlen if e.ip else 0,
            "Gateway": n.gateway if e.ip else "", "MacAddress": e.mac or "",
        }
    first = next((v for v in networks.values() if v.get("IPAddress")), {})
    exposed = {k: None for k in (c.config.get("ExposedPorts") or {})}
    st = setup.read_state(store, c.id) or {}
    return {
        "Networks": networks,
        "Ports": {**exposed, **dict(st.get("ports") or {})},
        "SandboxKey": str(st.get("netns") or "") if os.path.exists(setup.netns_path(store, c.id)) else "",
        "IPAddress": first.get("IPAddress", ""), "IPPrefixLen": first.get("IPPrefixLen", 0),
        "Gateway": first.get("Gateway", ""), "MacAddress": first.get("MacAddress", ""),
    }
