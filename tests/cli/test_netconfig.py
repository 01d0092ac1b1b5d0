"""lamina/netconfig.py: -p/-P/--network/--ip/--network-alias as the Engine API records them."""

from __future__ import annotations

import pytest

from graph.errors import InvalidInput
from lamina import netconfig


def test_publish_forms() -> None:
    b, exposed = netconfig.parse_publish(["80", "8080:81", "0.0.0.0:9000:82/udp", "127.0.0.2::83",
                                          "[::1]:9001:84", "7000-7001:90-91"])
    assert b == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
        "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
        "82/udp": [{"HostIp": "0.0.0.0", "HostPort": "9000"}],
        "83/tcp": [{"HostIp": "127.0.0.2", "HostPort": ""}],
        "84/tcp": [{"HostIp": "::1", "HostPort": "9001"}],
        "90/tcp": [{"HostIp": "127.0.0.1", "HostPort": "7000"}],
        "91/tcp": [{"HostIp": "127.0.0.1", "HostPort": "7001"}],
    }
    assert set(exposed) == set(b)


@pytest.mark.parametrize("spec", ["", "x", "80/sctp", "1:2:3:4", "999999", "a.b.c.d:1:2", "7000-7002:90-91",
                                  "[::1:80", "0:80"])
def test_publish_refuses(spec: str) -> None:
    with pytest.raises(InvalidInput):
        netconfig.parse_publish([spec])


def test_network_config() -> None:
    part = netconfig.network_config(network="app", aliases=["db"], ip="10.0.0.5", publish=["80"], publish_all=True)
    assert part["HostConfig"] == {"NetworkMode": "app", "PublishAllPorts": True,
                                  "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}}
    assert part["NetworkingConfig"] == {"EndpointsConfig": {"app": {"Aliases": ["db"],
                                                                     "IPAMConfig": {"IPv4Address": "10.0.0.5"}}}}
    rec = netconfig.apply({"HostConfig": {"Memory": 1}, "ExposedPorts": {"22/tcp": {}}}, part)
    assert rec["HostConfig"]["Memory"] == 1 and set(rec["ExposedPorts"]) == {"22/tcp", "80/tcp"}
    assert netconfig.network_config(network="default")["HostConfig"]["NetworkMode"] == "bridge"
    for kw in ({"network": "none", "publish": ["80"]}, {"network": "host", "ip": "10.0.0.1"},
               {"network": "none", "aliases": ["x"]}, {"network": "app", "ip": "300.1.1.1"},
               {"network": "bad name"}):
        with pytest.raises(InvalidInput):
            netconfig.network_config(**kw)  # type: ignore[arg-type]
