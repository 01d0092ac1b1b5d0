"""The store's errors: lamina's error family (defined at the bottom of the import graph, in
``drivers.errors``) re-exported for users of ``graph``, which is the public library."""

from __future__ import annotations

from drivers.errors import (
    AlreadyExists,
    Bug,
    Conflict,
    Corrupt,
    DigestMismatch,
    InvalidInput,
    LaminaError,
    NoSpace,
    NotFound,
    Unsupported,
    no_space,
)

__all__ = [
    "AlreadyExists",
    "Bug",
    "Conflict",
    "Corrupt",
    "DigestMismatch",
    "InvalidInput",
    "LaminaError",
    "NoSpace",
    "NotFound",
    "Unsupported",
    "no_space",
]
