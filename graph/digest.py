"""Identities. Every identity in lamina is a sha256 digest string ``sha256:<64 hex>``; what
differs is what was hashed, so the kinds are distinct types a checker keeps apart:

- ``Digest``: bytes as stored in a registry (a compressed layer, a config, a manifest).
- ``DiffID``: the *uncompressed* layer tar.
- ``ChainID``: a layer together with all its parents (see ``chain_id``).
- ``ImageID``: the image config's bytes (equal to the config blob's ``Digest``).

Drivers never see any of these: they get a random ``CacheID`` (``drivers.base``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, NewType

from drivers.errors import InvalidInput

if TYPE_CHECKING:
    import hashlib

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ALGO_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


class Digest(str):
    """A validated ``sha256:<hex>`` string. Other algorithms are refused with a clear error
    (OCI allows sha512; no registry lamina targets serves it, and one algorithm keeps the store's
    paths and dedupe simple)."""

    __slots__ = ()

    def __new__(cls, value: str) -> "Digest":
        if not isinstance(value, str) or not _DIGEST_RE.match(value):
            if isinstance(value, str) and _ALGO_RE.match(value) and not value.startswith("sha256:"):
                raise InvalidInput(f"unsupported digest algorithm: {value.split(':', 1)[0]}")
            raise InvalidInput(f"invalid digest: {value!r}")
        return super().__new__(cls, value)

    @property
    def hex(self) -> str:
        return self[7:]

    @classmethod
    def from_hex(cls, hex_: str) -> "Digest":
        return cls("sha256:" + hex_)

    @classmethod
    def of(cls, data: bytes) -> "Digest":
        return cls("sha256:" + sha256(data).hexdigest())


def sha256(data: bytes = b"") -> "hashlib._Hash":
    """hashlib.sha256, imported on first use: OpenSSL's binding costs milliseconds to load, and
    ``lamina images`` (which opens a store) hashes nothing. Every sha256 of the graph is made here."""
    import hashlib

    return hashlib.sha256(data)


DiffID = NewType("DiffID", Digest)
ChainID = NewType("ChainID", Digest)
ImageID = NewType("ImageID", Digest)


def chain_id(parent: ChainID | None, diff_id: DiffID) -> ChainID:
    """ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    if parent is None:
        return ChainID(diff_id)
    return ChainID(Digest.of(f"{parent} {diff_id}".encode()))


def chain_ids(diff_ids: Iterable[DiffID]) -> list[ChainID]:
    """ChainIDs of every prefix of a layer stack, bottom first."""
    out: list[ChainID] = []
    parent: ChainID | None = None
    for d in diff_ids:
        parent = chain_id(parent, d)
        out.append(parent)
    return out
