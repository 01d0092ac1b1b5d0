"""graph/networks.py: network records and address management (no kernel objects: pure DB)."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

import pytest

from graph.db import DB
from graph.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from graph.networks import NetworkStore, mac_of, parse_pools


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    d = DB(tmp_path / "lamina.db")
    with d.transaction() as c:  # endpoints reference containers: two bare container rows
        for cid in ("a" * 64, "b" * 64, "c" * 64):
            c.execute("INSERT INTO containers (id, name, cache_id, config, created) VALUES (?, ?, ?, '{}', 0)",
                      (cid, f"n{cid[0]}", f"cache{cid[0]}"))
    try:
        yield d
    finally:
        d.close()


A, B, C = "a" * 64, "b" * 64, "c" * 64


def test_defaults_are_dockers(db: DB) -> None:
    nets = NetworkStore(db)
    names = [(n.name, n.driver, n.subnet, n.gateway, n.bridge) for n in nets.list()]
    assert names == [("bridge", "bridge", "172.17.0.0/16", "172.17.0.1", "lamina0"),
                     ("host", "host", None, None, None), ("none", "null", None, None, None)]
    first = nets.create("one")
    second = nets.create("two")
    assert (first.subnet, first.gateway) == ("172.18.0.0/16", "172.18.0.1")
    assert second.subnet == "172.19.0.0/16" and second.bridge == f"lm-{second.id[:12]}"
    assert nets.get(first.id[:6]) == first and nets.get("one") == first


def test_configured_pools_and_exhaustion(db: DB) -> None:
    nets = NetworkStore(db, parse_pools("10.5.0.0/23:24"))
    assert nets.list()[0].subnet == "10.5.0.0/24"  # the default bridge takes the first
    assert nets.create("x").subnet == "10.5.1.0/24"
    with pytest.raises(Conflict, match="no free address pool"):
        nets.create("y")
    for bad in ("10.5.0.1/24:24", "10.0.0.0/16:8", "nonsense", ""):
        with pytest.raises(InvalidInput):
            parse_pools(bad)


def test_bad_input_and_overlap(db: DB) -> None:
    nets = NetworkStore(db)
    nets.create("x", subnet="10.1.0.0/24")
    with pytest.raises(AlreadyExists):
        nets.create("x")
    with pytest.raises(Conflict, match="overlaps"):
        nets.create("y", subnet="10.1.0.128/25")
    with pytest.raises(Conflict, match="pre-defined"):
        nets.create("bridge")
    for kw in ({"subnet": "10.2.0.1/24"}, {"subnet": "10.2.0.0/31"}, {"gateway": "10.2.0.1"},
               {"subnet": "10.2.0.0/24", "gateway": "10.3.0.1"}, {"driver": "macvlan"}):
        with pytest.raises(InvalidInput):
            nets.create("z", **kw)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        nets.create("bad name")
    assert [n.name for n in nets.list()] == ["bridge", "host", "none", "x"]


def test_addresses_lowest_free_static_and_release(db: DB) -> None:
    nets = NetworkStore(db)
    n = nets.create("x", subnet="10.9.0.0/29", gateway="10.9.0.1")  # hosts .1-.6
    nets.join(n, A)
    nets.join(n, B, static_ip="10.9.0.2", aliases=["db"])
    with pytest.raises(Conflict, match="in use"):
        nets.join(n, C, static_ip="10.9.0.2")
    with pytest.raises(AlreadyExists):
        nets.join(n, A)
    ea = nets.allocate(n, A)
    assert ea.ip == "10.9.0.3" and ea.ifname == "eth0" and ea.mac == mac_of("10.9.0.3") == "02:42:0a:09:00:03"
    assert nets.allocate(n, A) == ea  # kept
    assert nets.allocate(n, B).ip == "10.9.0.2"
    nets.release(n.id, A)
    assert nets.endpoint(n, A).ip is None  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="active endpoints"):
        nets.remove(n)
    nets.release(n.id, B)
    nets.remove(n)  # stopped members do not hold it (Docker's rule)
    with pytest.raises(NotFound):
        nets.get("x")


def test_full_network_and_bad_static(db: DB) -> None:
    nets = NetworkStore(db)
    n = nets.create("tiny", subnet="10.8.0.0/30")  # one host address besides the gateway
    nets.join(n, A)
    nets.join(n, B)
    assert nets.allocate(n, A).ip == "10.8.0.2"
    with pytest.raises(Conflict, match="no free address"):
        nets.allocate(n, B)
    for ip in ("10.8.0.1", "10.8.0.3", "10.7.0.2", "nope"):
        with pytest.raises(InvalidInput):
            nets.join(n, C, static_ip=ip)
    with pytest.raises(InvalidInput, match="user defined"):
        nets.join(nets.get("bridge"), C, static_ip="172.17.0.9")
    with pytest.raises(InvalidInput, match="aliases"):
        nets.join(nets.get("bridge"), C, aliases=["x"])


def test_second_network_gets_eth1_and_rows_go_with_the_container(db: DB) -> None:
    nets = NetworkStore(db)
    x, y = nets.create("x"), nets.create("y")
    for n in (x, y):
        nets.join(n, A)
    assert [nets.allocate(n, A).ifname for n in (x, y)] == ["eth0", "eth1"]
    with db.transaction() as c:
        c.execute("DELETE FROM containers WHERE id = ?", (A,))
    assert nets.endpoints(container_id=A) == []


def test_concurrent_allocation_never_hands_out_one_address_twice(tmp_path: Path, db: DB) -> None:
    nets = NetworkStore(db)
    n = nets.create("x", subnet="10.6.0.0/24")
    with db.transaction() as c:
        for i in range(40):
            c.execute("INSERT INTO containers (id, name, cache_id, config, created) VALUES (?, ?, ?, '{}', 0)",
                      (f"{i:064x}", f"c{i}", f"k{i}"))
    for i in range(40):
        nets.join(n, f"{i:064x}")
    got: list[str] = []

    def worker(start: int) -> None:
        other = DB(tmp_path / "lamina.db")  # one connection per thread: like processes
        try:
            mine = NetworkStore(other)
            for i in range(start, 40, 4):
                got.append(str(mine.allocate(n, f"{i:064x}").ip))
        finally:
            other.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 40 and len(set(got)) == 40
    assert all(ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.6.0.0/24") for ip in got)
