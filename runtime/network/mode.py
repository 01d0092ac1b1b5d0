"""A container's network mode from its record: the one fact ``runtime.bundle`` needs from the
network code (its own module, so bundle and ``runtime.network.setup``, which uses bundle's host
name, do not import each other)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph import InvalidInput


def mode_of(config: Mapping[str, Any]) -> str:
    """``HostConfig.NetworkMode``: ``none`` (lamina's default), ``host``, ``bridge`` (also for
    Docker's ``default``) or a network's name or ID. Raises InvalidInput for ``container:``."""
    mode = str((config.get("HostConfig") or {}).get("NetworkMode") or "none")
    if mode == "default":
        return "bridge"
    if mode.startswith("container:"):
        raise InvalidInput("--network container:NAME is not supported")
    return mode
