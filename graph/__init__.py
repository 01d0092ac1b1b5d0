"""lamina's storage library: a content store, a layer graph, images and references over a
graphdriver. A user embeds it as a storage backend in a few lines::

    from graph import Store, load_archive
    with Store("/var/lib/lamina", driver="overlay") as store:
        images = load_archive(store, "busybox.tar")
        c = store.create_container("busybox")
        print(store.containers.mount(c))     # the container's merged rootfs

Everything a user needs is exported here (``__all__``); other modules are implementation.
"""

# Every name loads on first use (PEP 562): ``from graph import Store`` imports the store and what
# it needs, not containers, volumes, archives, pulls or the HTTP client; the CLI imports ``graph``
# on every start (tests/cli/test_imports.py). Type checkers read the imports below.
TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing here
if TYPE_CHECKING:
    from graph.archive import LoadedImage, load_archive, save_archive
    from graph.containers import Container
    from graph.digest import ChainID, DiffID, Digest, ImageID, chain_id, chain_ids
    from graph.distribution.auth import Credentials
    from graph.distribution.pull import PullResult, pull
    from graph.distribution.push import PushResult, push
    from graph.distribution.registry import RegistryOptions
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
    from graph.volumes import Volume, check_name as check_volume_name

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
    "Volume",
    "chain_id",
    "chain_ids",
    "check_volume_name",
    "load_archive",
    "parse_reference",
    "pull",
    "push",
    "save_archive",
]

_ERRORS = ("AlreadyExists", "Bug", "Conflict", "Corrupt", "DigestMismatch", "InvalidInput", "LaminaError",
           "NotFound", "Unsupported")
_LAZY = {
    **{name: "graph.errors" for name in _ERRORS},
    **{name: "graph.digest" for name in ("ChainID", "DiffID", "Digest", "ImageID", "chain_id", "chain_ids")},
    "Container": "graph.containers",
    "Image": "graph.images",
    "Layer": "graph.layers",
    "Reference": "graph.oci.reference",
    "parse_reference": "graph.oci.reference",
    "Problem": "graph.store",
    "PruneReport": "graph.store",
    "Store": "graph.store",
    "Volume": "graph.volumes",
    "check_volume_name": "graph.volumes",
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

    value = getattr(importlib.import_module(module), "check_name" if name == "check_volume_name" else name)
    globals()[name] = value
    return value

