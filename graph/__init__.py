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
    from graph.layers import Layer, LayerStore
    from graph.networks import Endpoint, Network, NetworkStore
    from graph.networks import inspect_doc as network_inspect_doc
    from graph.networks import parse_pools as parse_network_pools
    from graph.oci.reference import Reference, parse_reference
    from graph.store import Problem, PruneReport, Store
    from graph.volumes import Volume, check_name as check_volume_name

__all__ = [
    # the store and the records it hands out
    "Store", "Problem", "PruneReport", "Container", "Image", "Layer", "Volume", "check_volume_name",
    # the layer store a Store's ``layers`` is (register, get, list, release)
    "LayerStore",
    # identities and references
    "ChainID", "DiffID", "Digest", "ImageID", "chain_id", "chain_ids", "Reference", "parse_reference",
    # errors (the family of drivers.errors)
    "LaminaError", "AlreadyExists", "Bug", "Conflict", "Corrupt", "DigestMismatch", "InvalidInput",
    "NotFound", "Unsupported",
    # archives (docker save/load)
    "LoadedImage", "load_archive", "save_archive",
    # distribution (registries)
    "Credentials", "RegistryOptions", "pull", "PullResult", "push", "PushResult",
    # network records and address pools (the kernel side is runtime.network's)
    "Endpoint", "Network", "NetworkStore", "network_inspect_doc", "parse_network_pools",
]

# name -> (module, its name there); the archive, pull and push names bring tarfile, compression and
# HTTP libraries, the network names the address pools: none of them loads for ``lamina images``.
_ERRORS = ("AlreadyExists", "Bug", "Conflict", "Corrupt", "DigestMismatch", "InvalidInput", "LaminaError",
           "NotFound", "Unsupported")
_LAZY = {
    **{name: ("graph.errors", name) for name in _ERRORS},
    **{name: ("graph.digest", name) for name in ("ChainID", "DiffID", "Digest", "ImageID", "chain_id", "chain_ids")},
    "Container": ("graph.containers", "Container"),
    "Image": ("graph.images", "Image"),
    "Layer": ("graph.layers", "Layer"),
    "LayerStore": ("graph.layers", "LayerStore"),
    "Reference": ("graph.oci.reference", "Reference"),
    "parse_reference": ("graph.oci.reference", "parse_reference"),
    "Problem": ("graph.store", "Problem"),
    "PruneReport": ("graph.store", "PruneReport"),
    "Store": ("graph.store", "Store"),
    "Volume": ("graph.volumes", "Volume"),
    "check_volume_name": ("graph.volumes", "check_name"),
    "LoadedImage": ("graph.archive", "LoadedImage"),
    "load_archive": ("graph.archive", "load_archive"),
    "save_archive": ("graph.archive", "save_archive"),
    "pull": ("graph.distribution.pull", "pull"),
    "PullResult": ("graph.distribution.pull", "PullResult"),
    "push": ("graph.distribution.push", "push"),
    "PushResult": ("graph.distribution.push", "PushResult"),
    "RegistryOptions": ("graph.distribution.registry", "RegistryOptions"),
    "Credentials": ("graph.distribution.auth", "Credentials"),
    "Endpoint": ("graph.networks", "Endpoint"),
    "Network": ("graph.networks", "Network"),
    "NetworkStore": ("graph.networks", "NetworkStore"),
    "network_inspect_doc": ("graph.networks", "inspect_doc"),
    "parse_network_pools": ("graph.networks", "parse_pools"),
}


def __getattr__(name: str) -> object:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'graph' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(where[0]), where[1])
    globals()[name] = value
    return value

