"""Bridge networks for lamina's containers (Docker's ``bridge`` driver): a Linux bridge per
network, a veth pair into each running container's network namespace, addresses from the
network's subnet (``graph.networks`` keeps the records and hands out addresses), hosts entries
kept current so containers on a user-defined network find each other by name and alias, and
published ports through a userland proxy.

- ``runtime.network.setup``: per container, what ``runtime.containers`` calls at create
  (``join_configured``), before the process starts (``attach``), once it runs (``started``),
  and when it has exited or is removed (``release``); ``sweep`` after a crash;
- ``runtime.network.api``: the operations of ``lamina network ...`` and ``lamina port``
  (and the Engine API's ``/networks``): create, list, inspect, remove, prune, connect,
  disconnect, port, and ``settings`` (``NetworkSettings`` of ``inspect``);
- ``netns`` (namespace files), ``links`` (iproute2), ``etc`` (hosts, resolv.conf), ``ports``
  (the proxy), ``firewall`` (isolation, opt-in masquerade).

Not here: IPv6, macvlan/ipvlan, overlay (multi-host) networks, an embedded DNS server,
``--link``, ``--network container:NAME``.
"""
