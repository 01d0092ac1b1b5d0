"""lamina's storage library: a content store, a layer graph, images and references over a
graphdriver. A user embeds it as a storage backend in a few lines::

    from graph import Store, load_archive
    with Store("/var/lib/lamina", driver="overlay") as store:
        images = load_archive(store, "busybox.tar")
        c = store.create_container("busybox")
        print(store.containers.mount(c))     # the container's merged rootfs

Everything a user needs is exported here (``__all__``); other modules are implementation.
"""

from graph.containers import Container
from graph.digest import ChainID, DiffID, Digest, ImageID, chain_id, chain_ids
from graph.errors import (
    AlreadyExists,
    Bug,
    Conflict,
    Corrupt,
    DigestMismatch,
    InvalidInput,
    LaminaError,
    NotFound,
    Unsupported,
)
from graph.images import Image
from graph.layers import Layer
from graph.oci.reference import Reference, parse_reference
from graph.store import Problem, PruneReport, Store

__all__ = [
    "AlreadyExists",
    "Bug",
    "ChainID",
    "Conflict",
    "Container",
    "Corrupt",
    "Credentials",
    "DiffID",
    "Digest",
    "DigestMismatch",
    "Image",
    "ImageID",
    "InvalidInput",
    "Layer",
    "LoadedImage",
    "LaminaError",
    "NotFound",
    "Problem",
    "PruneReport",
    "PullResult",
    "PushResult",
    "Reference",
    "RegistryOptions",
    "Store",
    "Unsupported",
    "chain_id",
    "chain_ids",
    "load_archive",
    "parse_reference",
    "pull",
    "push",
    "save_archive",
]

# Archives, pulls and pushes pull in tarfile, compression and HTTP libraries; the CLI imports
# ``graph`` on every start, so these names load on first use (PEP 562).
_LAZY = {
    "LoadedImage": "graph.archive",
    "load_archive": "graph.archive",
    "save_archive": "graph.archive",
    "pull": "graph.distribution.pull",
    "PullResult": "graph.distribution.pull",
    "push": "graph.distribution.push",
    "PushResult": "graph.distribution.push",
    "RegistryOptions": "graph.distribution.registry",
    "Credentials": "graph.distribution.auth",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'graph' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

