"""The registry client's own errors, apart from the client so that ``auth`` (which the client
uses) can raise them without importing the client back."""

from __future__ import annotations

from graph.errors import LaminaError


class RegistryError(LaminaError):
    """The registry or the network failed (after retries): 5xx answers, dropped connections,
    protocol violations. Exit code 1."""


class Unreachable(RegistryError):
    """Nothing answers at the registry's address (connection refused, no such host)."""
