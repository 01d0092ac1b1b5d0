"""The one rollback of pull and archive load: what an import added, taken back in reverse when it
fails. Every step runs (best effort); the caller re-raises the original error."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from graph.digest import ChainID, DiffID, Digest, ImageID
from graph.oci.reference import Reference

if TYPE_CHECKING:
    from graph.references import RefRecord
    from graph.store import Store


@dataclass
class Undo:
    """What an import changed: new layers, images, manifest rows, layer-blob rows, references
    (with what they pointed at before) and partial ingests."""

    layers: list[ChainID] = field(default_factory=list)
    images: list[ImageID] = field(default_factory=list)
    manifests: list[Digest] = field(default_factory=list)
    layer_blobs: list[tuple[DiffID, Digest]] = field(default_factory=list)
    refs: list[tuple[Reference, "RefRecord | None"]] = field(default_factory=list)
    ingests: set[str] = field(default_factory=set)

    def rollback(self, store: "Store", *, keep_partial: bool = False) -> None:
        """Take it all back: references restored, new manifests, images, layer-blob rows and
        layers removed, unreferenced blobs collected; partial ingests aborted unless
        ``keep_partial`` (a pull that may resume)."""
        steps: list[Callable[[], object]] = []
        for ref, before in reversed(self.refs):
            if before is None:
                steps.append(lambda ref=ref: store.refs.remove(ref))
            else:
                steps.append(lambda ref=ref, b=before: store.refs.add(ref, b.image_id, b.manifest))
        for digest in self.manifests:
            steps.append(lambda d=digest: store.images.remove_manifest(d))
        for image_id in self.images:
            steps.append(lambda i=image_id: _delete_new_image(store, i))
        for diff_id, blob in self.layer_blobs:
            steps.append(lambda d=diff_id, b=blob: store.layer_blobs.forget(d, b))
        for chain in reversed(self.layers):
            steps.append(lambda c=chain: store.layers.release(c))
        steps.append(store.gc_blobs)
        if not keep_partial:
            for ref in sorted(self.ingests):
                steps.append(lambda r=ref: store.content.abort(r))
        for step in steps:
            with contextlib.suppress(Exception):
                step()


def _delete_new_image(store: "Store", image_id: ImageID) -> None:
    if store.images.exists(image_id) and not store.refs.list(image_id) and not store.containers.using_image(image_id):
        store.images.delete(image_id)
