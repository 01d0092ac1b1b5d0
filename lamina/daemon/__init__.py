"""``lamina daemon``: the Docker Engine API (v1.41-1.45) on a unix socket, so the stock docker CLI
and docker-py drive lamina.

The daemon is a front door like the CLI: it keeps no state the store does not (containers,
images, references and their states are all in the root), so ``lamina`` commands and the daemon
work on one root at once. What it holds in memory is only what Docker also loses on restart:
exec instances, the recent event log, attach connections waiting for a start.

Modules: ``server`` (listeners, routing, version negotiation, errors, worker threads, life),
``wire`` (request bodies, streams, hijacked connections, the multiplexed frame format),
``config`` (``daemon.json``), one module per API group: ``system``, ``images``, ``containers``,
``exec``, ``events``, ``auth``.
"""
