"""Network records and address management (IPAM): the owner of the ``networks`` and
``network_endpoints`` tables.

A network is a row (name, driver, subnet, gateway, the Linux bridge that carries it, options,
labels); an endpoint is a container's membership of a network (its aliases and an address it
asked for with ``--ip``) and, while the container runs, the address, MAC and interface name it
got. The kernel side (bridges, veths, namespaces, published ports) is ``runtime.network``'s; this
module only decides and records, each decision in one transaction, so two ``run`` at once never
get the same address and a crash leaves either the whole row or none.

Pools are Docker's defaults: ``172.17.0.0/16`` for the default network ``bridge``, then
``172.18.0.0/16`` ... ``172.31.0.0/16``, then ``192.168.0.0/20`` ... for user-defined networks;
``pools`` (``$LAMINA_ADDRESS_POOLS`` in the CLI, ``BASE/LEN:SIZE,...``) replaces them. ``host``
and ``none`` are rows too (driver ``host`` / ``null``, no subnet), as ``docker network ls``
shows them.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from graph.db import DB
from graph.errors import AlreadyExists, Conflict, InvalidInput, NotFound

DEFAULT_POOLS: tuple[tuple[str, int], ...] = (*((f"172.{i}.0.0/16", 16) for i in range(17, 32)), ("192.168.0.0/16", 20))
DEFAULT_BRIDGE = "bridge"  # the default network's name (Docker's)
DEFAULT_BRIDGE_IFNAME = "lamina0"  # its Linux bridge (Docker's is docker0)
PREDEFINED = {"bridge": "bridge", "host": "host", "none": "null"}  # name -> driver
DRIVERS = ("bridge",)  # what ``create`` makes
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_ALIAS_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")

Pool = tuple[ipaddress.IPv4Network, int]


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    driver: str
    subnet: str | None
    gateway: str | None
    bridge: str | None  # the Linux bridge's interface name
    internal: bool
    options: dict[str, str] = field(hash=False, compare=False)
    labels: dict[str, str] = field(hash=False, compare=False)
    created: float

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    @property
    def user_defined(self) -> bool:
        """Docker's distinction: containers find each other by name only on these."""
        return self.driver == "bridge" and self.name != DEFAULT_BRIDGE

    def ip_network(self) -> ipaddress.IPv4Network:
        if self.subnet is None:
            raise InvalidInput(f"network {self.name} has no addresses")
        return ipaddress.IPv4Network(self.subnet)


@dataclass(frozen=True)
class Endpoint:
    network_id: str
    container_id: str
    aliases: list[str] = field(hash=False, compare=False)
    static_ip: str | None
    ip: str | None  # set while the container runs
    mac: str | None
    ifname: str | None
    joined: float


def parse_pools(text: str) -> list[Pool]:
    """``172.17.0.0/16:16,10.10.0.0/16:24`` (base and the size of each subnet carved out of it,
    Docker's ``default-address-pools``). Raises InvalidInput."""
    pools: list[Pool] = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        base, _, size = item.partition(":")
        try:
            net = ipaddress.IPv4Network(base.strip(), strict=True)
            n = int(size) if size else net.prefixlen
        except ValueError as e:
            raise InvalidInput(f"invalid address pool {item!r}: {e}") from None
        if not net.prefixlen <= n <= 30:
            raise InvalidInput(f"invalid address pool {item!r}: size must be between /{net.prefixlen} and /30")
        pools.append((net, n))
    if not pools:
        raise InvalidInput(f"invalid address pools {text!r}: none given")
    return pools


def mac_of(ip: str) -> str:
    """Docker's MAC for an address: ``02:42`` and the four bytes of the IPv4 address."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


class NetworkStore:
    """The network records of one store (``NetworkStore(store.db)``)."""

    def __init__(self, db: DB, pools: Sequence[Pool] | None = None) -> None:
        self.db = db
        self.pools = list(pools) if pools else [(ipaddress.IPv4Network(b), n) for b, n in DEFAULT_POOLS]

    # ---- rows ---------------------------------------------------------------------------------
    @staticmethod
    def _net(r: sqlite3.Row) -> Network:
        return Network(id=r["id"], name=r["name"], driver=r["driver"], subnet=r["subnet"], gateway=r["gateway"],
                       bridge=r["bridge"], internal=bool(r["internal"]), options=json.loads(r["options"]),
                       labels=json.loads(r["labels"]), created=r["created"])

    @staticmethod
    def _ep(r: sqlite3.Row) -> Endpoint:
        return Endpoint(network_id=r["network_id"], container_id=r["container_id"],
                        aliases=json.loads(r["aliases"]), static_ip=r["static_ip"], ip=r["ip"], mac=r["mac"],
                        ifname=r["ifname"], joined=r["joined"])

    def ensure_defaults(self) -> None:
        """The predefined networks ``bridge``, ``host`` and ``none`` (made once, on first use;
        a read when they exist)."""
        have = {r["name"] for r in self.db.query("SELECT name FROM networks WHERE name IN ('bridge','host','none')")}
        if len(have) == 3:
            return
        with self.db.transaction() as c:
            for name, driver in PREDEFINED.items():
                if c.execute("SELECT 1 FROM networks WHERE name = ?", (name,)).fetchone():
                    continue
                subnet = gateway = bridge = None
                if driver == "bridge":
                    subnet = str(self._free_subnet(c))
                    gateway = str(next(ipaddress.IPv4Network(subnet).hosts()))
                    bridge = DEFAULT_BRIDGE_IFNAME
                c.execute("INSERT INTO networks (id, name, driver, subnet, gateway, bridge, internal, options, "
                          "labels, created) VALUES (?, ?, ?, ?, ?, ?, 0, '{}', '{}', ?)",
                          (secrets.token_hex(32), name, driver, subnet, gateway, bridge, time.time()))

    def _free_subnet(self, c: sqlite3.Connection) -> ipaddress.IPv4Network:
        used = [ipaddress.IPv4Network(r[0]) for r in c.execute("SELECT subnet FROM networks WHERE subnet IS NOT NULL")]
        for base, size in self.pools:
            for cand in base.subnets(new_prefix=size):
                if not any(cand.overlaps(u) for u in used):
                    return cand
        raise Conflict("no free address pool left for a new network: remove a network or give --subnet")

    # ---- networks -----------------------------------------------------------------------------
    def create(self, name: str, *, driver: str = "bridge", subnet: str | None = None, gateway: str | None = None,
               internal: bool = False, options: dict[str, str] | None = None,
               labels: dict[str, str] | None = None) -> Network:
        """A user-defined network (``docker network create``): a free subnet from the pools unless
        ``subnet`` is given, the gateway its first address unless ``gateway`` is given.

        Raises: InvalidInput (name, driver, subnet, gateway), AlreadyExists (name), Conflict
        (the subnet overlaps another network's; no free pool).
        """
        if not _NAME_RE.match(name or ""):
            raise InvalidInput(f"invalid network name {name!r}: [a-zA-Z0-9][a-zA-Z0-9_.-]*")
        if name in PREDEFINED:
            raise Conflict(f"{name} is a pre-defined network and cannot be created")
        if driver not in DRIVERS:
            raise InvalidInput(f"network driver {driver!r} is not supported: lamina has {', '.join(DRIVERS)}")
        net: ipaddress.IPv4Network | None = None
        if subnet:
            try:
                net = ipaddress.IPv4Network(subnet, strict=True)
            except ValueError as e:
                raise InvalidInput(f"invalid subnet {subnet!r}: {e}") from None
            if net.prefixlen > 30:
                raise InvalidInput(f"invalid subnet {subnet}: too small (at most /30)")
        gw: ipaddress.IPv4Address | None = None
        if gateway:
            if net is None:
                raise InvalidInput("--gateway needs --subnet")
            try:
                gw = ipaddress.IPv4Address(gateway)
            except ValueError as e:
                raise InvalidInput(f"invalid gateway {gateway!r}: {e}") from None
            if gw not in net or gw in (net.network_address, net.broadcast_address):
                raise InvalidInput(f"gateway {gateway} is not a host address of subnet {net}")
        nid = secrets.token_hex(32)
        self.ensure_defaults()
        with self.db.transaction() as c:
            if c.execute("SELECT 1 FROM networks WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"network with name {name} already exists")
            if net is None:
                net = self._free_subnet(c)
            else:
                for r in c.execute("SELECT name, subnet FROM networks WHERE subnet IS NOT NULL"):
                    if ipaddress.IPv4Network(r["subnet"]).overlaps(net):
                        raise Conflict(f"subnet {net} overlaps network {r['name']} ({r['subnet']})")
            if gw is None:
                gw = next(net.hosts())
            c.execute("INSERT INTO networks (id, name, driver, subnet, gateway, bridge, internal, options, labels, "
                      "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (nid, name, driver, str(net), str(gw), f"lm-{nid[:12]}", int(internal),
                       json.dumps(options or {}), json.dumps(labels or {}), time.time()))
        return self.get(nid)

    def get(self, key: str) -> Network:
        """By full ID, name, or unique ID prefix (Docker's order)."""
        self.ensure_defaults()
        r = self.db.one("SELECT * FROM networks WHERE id = ? OR name = ?", (key, key))
        if r is None and key and all(ch in "0123456789abcdef" for ch in key):
            rows = self.db.query("SELECT * FROM networks WHERE id >= ? AND id < ? LIMIT 2", (key, key + "g"))
            if len(rows) > 1:
                raise Conflict(f"network ID prefix {key} is ambiguous")
            r = rows[0] if rows else None
        if r is None:
            raise NotFound(f"network {key} not found")
        return self._net(r)

    def list(self) -> list[Network]:
        self.ensure_defaults()
        return [self._net(r) for r in self.db.query("SELECT * FROM networks ORDER BY created, name")]

    def remove(self, net: Network) -> None:
        """Delete a user-defined network's row and the memberships of stopped containers (as
        Docker: such a container's next start fails, the network being gone). Raises Conflict
        (predefined; a running container is attached: Docker's "has active endpoints")."""
        if net.predefined:
            raise Conflict(f"{net.name} is a pre-defined network and cannot be removed")
        with self.db.transaction() as c:
            rows = c.execute("SELECT e.container_id, c.name FROM network_endpoints e JOIN containers c "
                             "ON c.id = e.container_id WHERE e.network_id = ? AND e.ip IS NOT NULL",
                             (net.id,)).fetchall()
            if rows:
                names = ", ".join(sorted(r["name"] for r in rows))
                raise Conflict(f"network {net.name} has active endpoints ({names})")
            c.execute("DELETE FROM network_endpoints WHERE network_id = ?", (net.id,))
            c.execute("DELETE FROM networks WHERE id = ?", (net.id,))

    # ---- endpoints ------------------------------------------------------------------------------
    def endpoints(self, *, network_id: str | None = None, container_id: str | None = None) -> list[Endpoint]:
        sql, args = "SELECT * FROM network_endpoints WHERE 1", []
        if network_id is not None:
            sql += " AND network_id = ?"
            args.append(network_id)
        if container_id is not None:
            sql += " AND container_id = ?"
            args.append(container_id)
        return [self._ep(r) for r in self.db.query(sql + " ORDER BY joined, network_id", args)]

    def endpoint(self, net: Network, container_id: str) -> Endpoint | None:
        r = self.db.one("SELECT * FROM network_endpoints WHERE network_id = ? AND container_id = ?",
                        (net.id, container_id))
        return self._ep(r) if r is not None else None

    def join(self, net: Network, container_id: str, *, aliases: Sequence[str] = (),
             static_ip: str | None = None) -> Endpoint:
        """Attach a container to a bridge network (at create, or ``network connect``).

        Raises: InvalidInput (not a bridge network, bad alias or address), AlreadyExists (already
        attached), Conflict (the address is taken by another member).
        """
        if net.driver != "bridge":
            raise InvalidInput(f"network {net.name} ({net.driver}) takes no endpoints")
        for a in aliases:
            if not _ALIAS_RE.match(a):
                raise InvalidInput(f"invalid network alias {a!r}: letters, digits, '_', '.', '-'")
        if aliases and not net.user_defined:
            raise InvalidInput("network-scoped aliases are only supported for user-defined networks")
        if static_ip is not None:
            static_ip = self._check_ip(net, static_ip)
        with self.db.transaction() as c:
            if c.execute("SELECT 1 FROM network_endpoints WHERE network_id = ? AND container_id = ?",
                         (net.id, container_id)).fetchone():
                raise AlreadyExists(f"container {container_id[:12]} is already attached to network {net.name}")
            if static_ip is not None and c.execute(
                    "SELECT 1 FROM network_endpoints WHERE network_id = ? AND (static_ip = ? OR ip = ?)",
                    (net.id, static_ip, static_ip)).fetchone():
                raise Conflict(f"address {static_ip} is already in use on network {net.name}")
            c.execute("INSERT INTO network_endpoints (network_id, container_id, aliases, static_ip, joined) "
                      "VALUES (?, ?, ?, ?, ?)", (net.id, container_id, json.dumps(list(aliases)), static_ip,
                                                time.time()))
        ep = self.endpoint(net, container_id)
        assert ep is not None
        return ep

    def _check_ip(self, net: Network, ip: str) -> str:
        if not net.user_defined:
            raise InvalidInput("user specified IP address is supported on user defined networks only")
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            raise InvalidInput(f"invalid IPv4 address {ip!r}") from None
        sub = net.ip_network()
        if addr not in sub or addr in (sub.network_address, sub.broadcast_address) or str(addr) == net.gateway:
            raise InvalidInput(f"address {ip} is not a free host address of network {net.name} ({sub})")
        return str(addr)

    def leave(self, net: Network, container_id: str) -> None:
        """Detach (``network disconnect``); NotFound if not attached."""
        with self.db.transaction() as c:
            n = c.execute("DELETE FROM network_endpoints WHERE network_id = ? AND container_id = ?",
                          (net.id, container_id)).rowcount
        if not n:
            raise NotFound(f"container {container_id[:12]} is not connected to network {net.name}")

    def allocate(self, net: Network, container_id: str) -> Endpoint:
        """Give a running container its address on ``net`` (its ``--ip``, else the lowest free
        host address), MAC and interface name (``eth0``, ``eth1``, ...), in one transaction.
        An endpoint that has them already keeps them. Raises NotFound (not attached), Conflict
        (the network is full, or the ``--ip`` was taken meanwhile)."""
        sub = net.ip_network()
        with self.db.transaction() as c:
            r = c.execute("SELECT * FROM network_endpoints WHERE network_id = ? AND container_id = ?",
                          (net.id, container_id)).fetchone()
            if r is None:
                raise NotFound(f"container {container_id[:12]} is not connected to network {net.name}")
            if r["ip"] is not None:
                return self._ep(r)
            used = {row[0] for row in c.execute("SELECT ip FROM network_endpoints WHERE network_id = ? "
                                                "AND ip IS NOT NULL", (net.id,))}
            reserved = {row[0] for row in c.execute(
                "SELECT static_ip FROM network_endpoints WHERE network_id = ? AND static_ip IS NOT NULL "
                "AND container_id != ?", (net.id, container_id))}
            ip = r["static_ip"]
            if ip is not None and ip in used:
                raise Conflict(f"address {ip} is already in use on network {net.name}")
            if ip is None:
                taken = used | reserved | {net.gateway}
                ip = next((str(a) for a in sub.hosts() if str(a) not in taken), None)
                if ip is None:
                    raise Conflict(f"network {net.name} ({sub}) has no free address left")
            names = {row[0] for row in c.execute("SELECT ifname FROM network_endpoints WHERE container_id = ? "
                                                 "AND ifname IS NOT NULL", (container_id,))}
            ifname = next(f"eth{i}" for i in range(len(names) + 1) if f"eth{i}" not in names)
            c.execute("UPDATE network_endpoints SET ip = ?, mac = ?, ifname = ? WHERE network_id = ? AND "
                      "container_id = ?", (ip, mac_of(ip), ifname, net.id, container_id))
        ep = self.endpoint(net, container_id)
        assert ep is not None
        return ep

    def release(self, network_id: str, container_id: str) -> None:
        """The container stopped: its address is free again (the membership stays)."""
        with self.db.transaction() as c:
            c.execute("UPDATE network_endpoints SET ip = NULL, mac = NULL, ifname = NULL WHERE network_id = ? "
                      "AND container_id = ?", (network_id, container_id))


def inspect_doc(net: Network, containers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Docker's ``NetworkResource`` (``docker network inspect``) for ``net``; ``containers``:
    the running members' ``EndpointResource`` by container ID."""
    from datetime import datetime, timezone

    config = [{"Subnet": net.subnet, "Gateway": net.gateway}] if net.subnet else []
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": datetime.fromtimestamp(net.created, timezone.utc).isoformat().replace("+00:00", "Z"),
        "Scope": "local",
        "Driver": net.driver,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": config},
        "Internal": net.internal,
        "Attachable": False,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": containers,
        "Options": ({"com.docker.network.bridge.name": net.bridge} if net.bridge else {}) | dict(net.options),
        "Labels": dict(net.labels),
    }
