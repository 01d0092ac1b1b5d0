"""``lamina daemon [--host URL]... [--config-file PATH]``: serve the Docker Engine API (v1.41-1.45)
so the stock docker CLI and docker-py drive this store (``DOCKER_HOST=unix:///run/lamina/lamina.sock``).

The socket is root's (mode 0660, group ``docker`` when that group exists); a TCP listener is
opened only when asked for (``--host tcp://127.0.0.1:2375``) and only on a loopback address.
Settings come from Docker's ``daemon.json`` keys in ``--config-file`` (default
``/etc/lamina/daemon.json``): registry-mirrors, insecure-registries, data-root, storage-driver,
hosts, default-runtime, log-level; flags override the file. SIGTERM stops the daemon; running
containers go on under their monitors.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("daemon", help="serve the Docker Engine API on a unix socket",
                       description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-H", "--host", action="append", default=None, metavar="URL", dest="hosts",
                   help="listen here: unix:///PATH (default unix:///run/lamina/lamina.sock) or tcp://127.0.0.1:PORT")
    p.add_argument("--config-file", default=None, metavar="PATH",
                   help="daemon.json to read (default /etc/lamina/daemon.json, if it exists)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="the store's root (overrides --root)")
    p.add_argument("-s", "--storage-driver", default=None, metavar="NAME", help="graphdriver for a new root")
    p.add_argument("--default-runtime", default=None, choices=["crun", "runc"], help="OCI runtime for containers")
    p.add_argument("--registry-mirror", action="append", default=None, metavar="URL", dest="mirrors",
                   help="a Docker Hub mirror (repeatable)")
    p.add_argument("--insecure-registry", action="append", default=None, metavar="HOST", dest="insecure",
                   help="a registry reached over plain HTTP (repeatable)")
    p.add_argument("-l", "--log-level", default=None, choices=["debug", "info", "warn", "error", "fatal"])
    p.set_defaults(run=run, opens_store=False)


def run(args: argparse.Namespace, store: object) -> int:
    del store
    from lamina import config as lconfig
    from lamina.daemon import config, server

    doc = config.read_file(args.config_file)
    root_flag = args.data_root or (args.root if args.root != lconfig.DEFAULT_ROOT else None)
    cfg = config.build(doc, root=root_flag, root_default=args.root, driver=args.storage_driver or args.driver,
                       hosts=args.hosts, runtime=args.default_runtime or args.runtime, log_level=args.log_level,
                       mirrors=args.mirrors, insecure=args.insecure)
    return server.main(cfg)
