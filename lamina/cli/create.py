"""``lamina create [OPTIONS] IMAGE [COMMAND [ARG...]]``: make a container, a read-write layer on
the image, with its configuration recorded as Docker records it (``Config`` and ``HostConfig``
fields, merged with the image's defaults). Prints the container's ID. Nothing runs yet.

Options follow ``docker create``: ``--name``, ``-e/--env``, ``-w/--workdir``, ``-u/--user``,
``--entrypoint``, ``--hostname``, ``--network none|host|bridge|NAME``, ``--ip``,
``--network-alias``, ``-p/--publish``, ``-P/--publish-all``, ``--memory``, ``--cpus``,
``--pids-limit``. Everything after IMAGE is the command, options included.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("create", help="create a container (a read-write layer on an image)",
                       description=(__doc__ or "").split("\n\n")[0])
    add_options(p)
    p.set_defaults(run=run)


def add_options(p: argparse.ArgumentParser, *, terminal: bool = True) -> None:
    """The container options ``create`` takes (``run`` will take the same)."""
    p.add_argument("--name", help="container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set an environment variable (KEY alone copies it from this environment)")
    p.add_argument("-w", "--workdir", default="", metavar="DIR", help="working directory (absolute)")
    p.add_argument("-u", "--user", default="", metavar="USER[:GROUP]", help="user to run as")
    p.add_argument("--entrypoint", default=None, help="override the image's entrypoint ('' clears it)")
    p.add_argument("--hostname", default="", help="container host name")
    # -- network options (lamina.cli.network owns them): --network, --ip, --network-alias, -p, -P
    from lamina.cli import network as network_cli

    network_cli.add_container_options(p)
    # -- end of network options
    p.add_argument("--memory", "-m", default=None, metavar="BYTES", help="memory limit, e.g. 512m, 1g")
    p.add_argument("--cpus", default=None, help="number of CPUs, e.g. 1.5")
    p.add_argument("--pids-limit", type=int, default=None, metavar="N", help="process limit (-1: unlimited)")
    # ---- issue 17 (volumes, terminals, restart, security): lamina/runopts.py ----
    from lamina import runopts

    runopts.add_options(p, terminal=terminal)
    # ---- end of issue 17's block ----
    p.add_argument("image", metavar="IMAGE", help="image name or ID")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND", help="command and arguments")


def build_config(args: argparse.Namespace, store: "Store") -> tuple[str, dict[str, Any]]:
    """The image's ID (``args.image`` resolved once) and the container's record from the options
    and the image's config (validated; may raise InvalidInput or NotFound for the image)."""
    from lamina import config, containerconfig as cc

    img = store.resolve_image(args.image)
    image_cfg = store.images.runtime_config(img.id)  # not the full parse (graph.oci.formats)
    user = cc.user_config(
        args.image,
        cmd=args.command,
        entrypoint=args.entrypoint,
        env=cc.parse_env(args.env, config.client_env),
        workdir=args.workdir,
        user=args.user,
        hostname=args.hostname,
        network=args.network,
        memory=cc.parse_memory(args.memory) if args.memory is not None else 0,
        nano_cpus=cc.parse_cpus(args.cpus) if args.cpus is not None else 0,
        pids_limit=args.pids_limit,
        runtime=args.runtime,
    )
    from lamina import runopts  # issue 17's flags
    from lamina.cli import network as network_cli

    runopts.apply(args, user)
    return str(img.id), network_cli.apply_container_options(args, cc.merge(user, image_cfg))


def run(args: argparse.Namespace, store: "Store") -> int:
    import runtime

    image_id, cfg = build_config(args, store)
    c = runtime.create(store, image_id, name=args.name, config=cfg)  # record + OCI bundle
    print(c.id)
    return 0
