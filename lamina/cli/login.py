"""``lamina login [-u USER] [-p PASS | --password-stdin] [--insecure] [REGISTRY]`` and
``lamina logout [REGISTRY]``: keep a registry's credentials in Docker's client config.

``login`` checks the credentials with the registry first (``GET /v2/``; with token auth this
asks the token server, so a wrong password is refused here, not at the next pull) and then writes
``auths`` of ``$DOCKER_CONFIG/config.json`` (else ``~/.docker/config.json``), mode 0600, keeping
every other entry. Without ``-u``/``-p`` it asks on the terminal. REGISTRY defaults to Docker Hub.
``logout`` removes the entry.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graph import Store

DEFAULT_REGISTRY = "docker.io"


def register(sub: Any) -> None:
    p = sub.add_parser("login", help="log in to a registry", description=__doc__.split("\n\n")[0])
    p.add_argument("-u", "--username", metavar="USER")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-p", "--password", metavar="PASS", help="the password (visible to other users: prefer --password-stdin)")
    g.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--insecure", action="store_true", help="plain HTTP to the registry (no TLS)")
    p.add_argument("registry", nargs="?", default=DEFAULT_REGISTRY, metavar="REGISTRY")
    p.set_defaults(run=run_login)

    q = sub.add_parser("logout", help="forget a registry's credentials", description="Remove a registry's credentials.")
    q.add_argument("registry", nargs="?", default=DEFAULT_REGISTRY, metavar="REGISTRY")
    q.set_defaults(run=run_logout)


def _registry_host(name: str) -> str:
    from graph.distribution.auth import normalize_host
    from graph.errors import InvalidInput
    from graph.oci.reference import Reference

    host = normalize_host(name)
    try:
        Reference(host, "x")  # validates host[:port]
    except InvalidInput:
        raise InvalidInput(f"invalid registry name {name!r}") from None
    return host


def run_login(args: argparse.Namespace, store: "Store") -> int:
    del store  # credentials live in the client config, not in the store
    from pathlib import Path

    from graph.distribution.auth import Credentials, store_credentials
    from graph.errors import InvalidInput
    from graph.distribution.registry import RegistryClient
    from lamina import config
    from lamina.cli.pull import registry_options

    host = _registry_host(args.registry)
    user, password = args.username, args.password
    if args.password_stdin:
        if not user:
            raise InvalidInput("--password-stdin needs --username")
        password = sys.stdin.read()
        password = password[:-1] if password.endswith("\n") else password
        password = password[:-1] if password.endswith("\r") else password
    elif password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if not user or password is None:
        if not sys.stdin.isatty():
            raise InvalidInput("cannot ask for credentials: standard input is not a terminal (use -u and --password-stdin)")
        import getpass

        user = user or input("Username: ").strip()
        password = password if password is not None else getpass.getpass("Password: ")
    if not user or not password:
        raise InvalidInput("username and password must not be empty")
    creds = Credentials(user, password)
    options = registry_options(insecure_host=host if args.insecure else None, credentials={host: creds})
    with RegistryClient(options) as client:
        client.ping(client.origin(host))
    store_credentials(Path(config.docker_config_path()), host, creds)
    print("Login Succeeded")
    return 0


def run_logout(args: argparse.Namespace, store: "Store") -> int:
    del store
    from pathlib import Path

    from graph.distribution.auth import remove_credentials
    from lamina import config

    host = _registry_host(args.registry)
    if remove_credentials(Path(config.docker_config_path()), host):
        print(f"Removing login credentials for {host}")
    else:
        print(f"Not logged in to {host}")
    return 0
