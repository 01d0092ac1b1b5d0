"""``lamina network create|ls|inspect|rm|prune|connect|disconnect``: bridge networks, as
``docker network``. ``bridge`` (the default bridge, ``lamina0``, 172.17.0.0/16), ``host`` and
``none`` always exist; ``create NAME`` makes a user-defined bridge network with the next free
subnet of the address pools (``$LAMINA_ADDRESS_POOLS``, ``BASE/LEN:SIZE,...``; Docker's defaults
172.17.0.0/16 ... 172.31.0.0/16, then 192.168.0.0/16 in /20s) or ``--subnet``/``--gateway``. On a user-defined network containers
reach each other by name, by ``--network-alias`` and by short ID. Outbound NAT is off unless
``--opt masquerade=true``; ``--internal`` gives the network's containers no default route.

Also the container options of ``create``/``run``: ``--network``, ``--ip``, ``--network-alias``,
``-p/--publish [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]`` (host address 127.0.0.1 unless given)
and ``-P/--publish-all`` (the image's exposed ports, on free ports of 127.0.0.1).
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


# ---- the options of create / run ---------------------------------------------------------------------
def add_container_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", "--net", default="none", metavar="NETWORK",
                   help="none (default), host, bridge or a network's name or ID")
    p.add_argument("--ip", default="", metavar="IPV4", help="the container's address on a user-defined network")
    p.add_argument("--network-alias", action="append", default=[], metavar="ALIAS",
                   help="another name of the container on its (user-defined) network")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:][HOST:]PORT[/PROTO]",
                   help="publish a container port (host address 127.0.0.1 unless given)")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish every exposed port on a free port of 127.0.0.1")


def use_configured_pools() -> None:
    """Hand ``$LAMINA_ADDRESS_POOLS`` to the runtime (the library reads no environment)."""
    from lamina import config
    from runtime.network import setup

    setup.address_pools = config.address_pools()


def apply_container_options(args: argparse.Namespace, record: dict[str, Any]) -> dict[str, Any]:
    from lamina import netconfig

    use_configured_pools()

    part = netconfig.network_config(network=args.network, aliases=args.network_alias, ip=args.ip,
                                    publish=args.publish, publish_all=args.publish_all)
    return netconfig.apply(record, part)


# ---- lamina network ... --------------------------------------------------------------------------------
def register(sub: Any) -> None:
    p = sub.add_parser("network", help="manage networks", description=(__doc__ or "").split("\n\n")[0])
    nsub = p.add_subparsers(dest="network_command", metavar="COMMAND", required=True)

    c = nsub.add_parser("create", help="create a bridge network")
    c.add_argument("-d", "--driver", dest="net_driver", default="bridge", help="network driver (bridge)")
    c.add_argument("--subnet", default=None, metavar="CIDR", help="e.g. 10.10.0.0/24")
    c.add_argument("--gateway", default=None, metavar="IPV4", help="the bridge's address in the subnet")
    c.add_argument("--internal", action="store_true", help="no default route for its containers")
    c.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="driver option: masquerade=true (outbound NAT; off by default)")
    c.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="set a label")
    c.add_argument("name", metavar="NAME")
    c.set_defaults(run=_create)

    ls = nsub.add_parser("ls", aliases=["list"], help="list networks")
    ls.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    ls.add_argument("--no-trunc", action="store_true", help="full IDs")
    ls.set_defaults(run=_ls)

    i = nsub.add_parser("inspect", help="show networks as JSON")
    i.add_argument("networks", nargs="+", metavar="NETWORK")
    i.set_defaults(run=_inspect)

    r = nsub.add_parser("rm", aliases=["remove"], help="remove networks")
    r.add_argument("networks", nargs="+", metavar="NETWORK")
    r.set_defaults(run=_rm)

    pr = nsub.add_parser("prune", help="remove every user-defined network no container uses")
    pr.add_argument("-f", "--force", action="store_true", help="do not ask (lamina never asks)")
    pr.set_defaults(run=_prune)

    cn = nsub.add_parser("connect", help="connect a container to a network")
    cn.add_argument("--alias", action="append", default=[], metavar="ALIAS", help="network-scoped alias")
    cn.add_argument("--ip", default=None, metavar="IPV4", help="the container's address on the network")
    cn.add_argument("network", metavar="NETWORK")
    cn.add_argument("container", metavar="CONTAINER")
    cn.set_defaults(run=_connect)

    dc = nsub.add_parser("disconnect", help="disconnect a container from a network")
    dc.add_argument("-f", "--force", action="store_true", help="(accepted for Docker's sake)")
    dc.add_argument("network", metavar="NETWORK")
    dc.add_argument("container", metavar="CONTAINER")
    dc.set_defaults(run=_disconnect)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    from graph.errors import InvalidInput

    out = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not k or not eq:
            raise InvalidInput(f"invalid {what} {item!r}: want KEY=VALUE")
        out[k] = v
    return out


def _create(args: argparse.Namespace, store: "Store") -> int:
    use_configured_pools()
    from runtime.network import api

    net = api.create_network(store, args.name, driver=args.net_driver, subnet=args.subnet, gateway=args.gateway,
                             internal=args.internal, options=_pairs(args.opt, "--opt"),
                             labels=_pairs(args.label, "--label"))
    print(net.id)
    return 0


def _ls(args: argparse.Namespace, store: "Store") -> int:
    use_configured_pools()
    from lamina.cli import output
    from runtime.network import api

    nets = api.list_networks(store)
    if args.quiet:
        for n in nets:
            print(n.id if args.no_trunc else n.id[:12])
        return 0
    output.table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                 [[n.id if args.no_trunc else n.id[:12], n.name, n.driver, "local"] for n in nets])
    return 0


def _inspect(args: argparse.Namespace, store: "Store") -> int:
    use_configured_pools()
    from lamina.cli import output
    from runtime.network import api

    docs = [api.inspect_network(store, key) for key in args.networks]
    output.print_json(docs, indent=4)
    return 0


def _rm(args: argparse.Namespace, store: "Store") -> int:
    use_configured_pools()
    from runtime.network import api

    for key in args.networks:
        api.remove_network(store, key)
        print(key, flush=True)
    return 0


def _prune(args: argparse.Namespace, store: "Store") -> int:
    use_configured_pools()
    from runtime.network import api

    gone = api.prune_networks(store)
    if gone:
        print("Deleted Networks:")
        for name in gone:
            print(name)
    return 0


def _connect(args: argparse.Namespace, store: "Store") -> int:
    use_configured_pools()
    from runtime.network import api

    api.connect(store, args.network, args.container, aliases=args.alias, ip=args.ip)
    return 0


def _disconnect(args: argparse.Namespace, store: "Store") -> int:
    use_configured_pools()
    from runtime.network import api

    api.disconnect(store, args.network, args.container, force=args.force)
    return 0
