"""Where the CLI's defaults come from. This is the only module that reads the environment
(tests/test_architecture.py checks it): library code takes parameters, so an embedder of ``graph``
is never surprised by a variable set in its process.

Variables: ``LAMINA_HOST`` (a ``lamina daemon`` to use instead of the store: ``unix:///PATH``),
``LAMINA_ROOT`` (the store's root directory, default ``/var/lib/lamina``) and
``LAMINA_DRIVER`` (the graphdriver for a new root; an existing root keeps the driver it was made
with, see ``graph.Store``), ``LAMINA_ADDRESS_POOLS`` (where new networks' subnets come from,
``BASE/LEN:SIZE,...``; Docker's defaults when unset, see ``graph.networks``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_ROOT = "/var/lib/lamina"
RUNTIMES = ("crun", "runc")


class Defaults:
    """The values global options fall back to when not given on the command line. (A plain
    class: dataclasses and typing cost milliseconds at every start.)"""

    __slots__ = ("root", "driver")

    def __init__(self, root: str, driver: str | None) -> None:
        self.root = root
        self.driver = driver  # None: the root's own driver, else the machine's default

    def __repr__(self) -> str:
        return f"Defaults(root={self.root!r}, driver={self.driver!r})"


def defaults(environ: Mapping[str, str] | None = None) -> Defaults:
    """Defaults from the environment (``os.environ`` unless another mapping is given, for tests)."""
    env = os.environ if environ is None else environ
    return Defaults(
        root=env.get("LAMINA_ROOT") or DEFAULT_ROOT,
        driver=env.get("LAMINA_DRIVER") or None,
    )


def daemon_host(environ: Mapping[str, str] | None = None) -> str | None:
    """``$LAMINA_HOST``: the daemon the CLI talks to instead of opening the store (``--host``)."""
    env = os.environ if environ is None else environ
    return env.get("LAMINA_HOST") or None


def address_pools() -> str | None:
    """``$LAMINA_ADDRESS_POOLS``, or None for Docker's default pools."""
    return os.environ.get("LAMINA_ADDRESS_POOLS") or None


def client_env(name: str) -> str | None:
    """The value of ``name`` in the caller's environment: ``create -e NAME`` (without ``=``)
    copies it into the container, as ``docker create -e NAME`` does; None when unset."""
    return os.environ.get(name)


def terminal_columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` reads it: ``$COLUMNS``, else the
    terminal of stdout, else 80 (argparse's help layout; lamina/cli/main.py says why not shutil)."""
    import sys

    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def docker_config_path(environ: Mapping[str, str] | None = None) -> str:
    """Docker's client config file, where ``lamina login`` keeps credentials and ``pull``/``push``
    read them: ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (Docker's rule)."""
    env = os.environ if environ is None else environ
    base = env.get("DOCKER_CONFIG") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


def registry_mirrors(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``$LAMINA_REGISTRY_MIRRORS``: mirrors tried before a registry on pull, separated by commas
    or spaces. ``URL`` mirrors Docker Hub (as Docker's ``registry-mirrors``); ``HOST=URL`` mirrors
    the registry HOST. URLs need their scheme (``http://127.0.0.1:5001``)."""
    env = os.environ if environ is None else environ
    raw = env.get("LAMINA_REGISTRY_MIRRORS") or ""
    return tuple(p for p in raw.replace(",", " ").split() if p)
