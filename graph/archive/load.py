"""``load_archive``: the load transaction. Every planned image's layers are applied (or found),
its config, manifest and references recorded under one lease; any failure takes it all back
(``graph.undo``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from graph.oci import formats
from graph.digest import ChainID, DiffID, Digest, ImageID, chain_id
from graph.errors import DigestMismatch, InvalidInput, NotFound
from graph.oci.formats import Descriptor, Platform
from graph.oci.reference import Reference
from graph.undo import Undo
from graph.unpack import decompressed
from graph.verify import HashingReader, TeeReader, VerifyingReader, drain
from graph.archive.sources import _Source, _open_source
from graph.archive.plan import ANNOTATION_REF_NAME, _LayerSrc, _Plan, _plan_docker, _plan_oci

if TYPE_CHECKING:
    from graph.references import RefRecord
    from graph.store import Store

@dataclass
class LoadedImage:
    """One image an archive held: its ID, the references now pointing at it (empty when the
    archive gave it no usable name), the digest of the manifest recorded for it, and anything
    a user should be told (a bare-tag name ignored, an artifact skipped)."""

    image_id: ImageID
    refs: list[Reference]
    manifest: Digest
    warnings: list[str] = field(default_factory=list)


# =============================================================================== load


def load_archive(
    store: "Store", path: str | os.PathLike[str], *, platform: Platform | None = None
) -> list[LoadedImage]:
    """Load every image of a ``docker save`` tar or an OCI image layout (directory or tar,
    compressed or not) into ``store``; see the module docstring for formats and rules.

    Requires: ``path`` exists.
    Effect: blobs stored and verified, layers registered, images recorded with their manifest,
    references set (moving a name that pointed elsewhere, as ``docker load`` does). All or
    nothing: on any error nothing of this load remains.
    Raises: NotFound (no such path; no manifest for ``platform`` in an index), InvalidInput
    (not an archive, missing or malformed documents, missing blobs, paths leaving the archive,
    hostile layer tars, bad names), DigestMismatch (a blob, config or DiffID that is not what
    it claims), Unsupported (unknown layout version, encrypted or oddly compressed layers).
    Repeat: loading the same archive again changes nothing and returns the same images.
    """
    want = platform or Platform.host()
    src = _open_source(Path(path), store.root)
    undo = Undo()
    try:
        warnings: list[str] = []
        oci = src.has("oci-layout") and src.has("index.json")
        docker = src.has("manifest.json")
        if not oci and not docker:
            if src.has("index.json") or src.has("oci-layout"):
                raise InvalidInput(f"{src.label}: OCI layout without both oci-layout and index.json")
            raise InvalidInput(f"{src.label}: not an image archive (no index.json with oci-layout, no manifest.json)")
        plans: list[_Plan] = []
        if oci:
            plans += _plan_oci(src, want, warnings)
        if docker:
            by_config = {p.config.id: p for p in plans}
            plans += _plan_docker(src, by_config)
        if not plans:
            raise InvalidInput(f"{src.label}: the archive holds no container image")
        with store.lease() as lease:
            for plan in plans:
                _load_layers(store, src, plan, lease, undo)
            out = [_record(store, plan, lease, undo) for plan in plans]
            for img, plan in zip(out, plans):
                _set_refs(store, img, plan, undo)
        if warnings and out:
            out[0].warnings = warnings + out[0].warnings
        return out
    except BaseException:
        undo.rollback(store)
        raise
    finally:
        src.close()


def _load_layers(store: "Store", src: _Source, plan: _Plan, lease: str, undo: Undo) -> None:
    parent: ChainID | None = None
    for i, (ls, diff_id) in enumerate(zip(plan.layers, plan.config.diff_ids)):
        chain = chain_id(parent, diff_id)
        what = f"{src.label}: image {plan.config.id.hex[:12]} layer {i} ({ls.member})"
        if ls.digest is not None:
            store.lease_blob(lease, ls.digest)  # before looking: see graph.gc
        if store.lease_layer(lease, chain):
            if ls.digest is None or not _blob_recorded(store, diff_id, ls.digest):
                ls.digest = _ingest_layer(store, src, ls, diff_id, None, lease, what, undo, apply=False)
            else:
                store.lease_blob(lease, ls.digest)
        else:
            ls.digest = _ingest_layer(store, src, ls, diff_id, parent, lease, what, undo, apply=True)
        parent = chain


def _blob_recorded(store: "Store", diff_id: DiffID, blob: Digest) -> bool:
    return store.layer_blobs.recorded(diff_id, blob) and store.content.exists(blob)


def _ingest_layer(
    store: "Store",
    src: _Source,
    ls: _LayerSrc,
    diff_id: DiffID,
    parent: ChainID | None,
    lease: str,
    what: str,
    undo: Undo,
    *,
    apply: bool,
) -> Digest:
    """One pass over a layer blob: verified, teed into the content store, decompressed and
    either applied (``apply``) or only hashed to check its DiffID. Returns the blob digest."""
    raw, size = src.open(ls.member, "layer")
    with raw:
        if size != ls.size:
            raise DigestMismatch(f"{what}: blob has {size} bytes, its descriptor says {ls.size}")
        with store.content.ingest(ls.digest, size) as writer:
            if writer.done:  # stored already: only verify what we read
                assert ls.digest is not None
                tee = TeeReader(VerifyingReader(raw, ls.digest, size), None)  # type: ignore[arg-type]
            else:  # the writer checks size and digest at commit
                tee = TeeReader(raw, writer)
            plain = decompressed(tee, ls.compression, what)  # type: ignore[arg-type]
            if apply:
                layer = store.layers.register(plain, parent, expected_diff_id=diff_id, lease=lease)
                undo.layers.append(layer.chain_id)
                extra = drain(plain)  # the applier reads to EOF; anything left escaped the DiffID
                if extra:
                    raise DigestMismatch(f"{what}: {extra} bytes after the end of the layer tar")
            else:
                h = HashingReader(plain)
                h.drain()
                if h.digest() != diff_id:
                    raise DigestMismatch(f"{what}: DiffID mismatch: expected {diff_id}, got {h.digest()}")
            tee.drain()  # compressed bytes after the stream's end are part of the blob
            blob = writer.commit()
    store.lease_blob(lease, blob)
    if not _blob_recorded(store, diff_id, blob):
        undo.layer_blobs.append((diff_id, blob))
    store.record_layer_blob(diff_id, blob, ls.media_type, size)
    return blob


def _record(store: "Store", plan: _Plan, lease: str, undo: Undo) -> LoadedImage:
    """Image row, manifest (and index) blobs and rows for one plan; layers are in place."""
    cfg = plan.config
    if not store.images.exists(cfg.id):
        undo.images.append(cfg.id)
    store.lease_blob(lease, cfg.id)  # before storing: see graph.gc
    img = store.images.create(cfg.raw, lease=lease)
    if plan.manifest_raw is None:
        layers = []
        for ls in plan.layers:
            assert ls.digest is not None
            layers.append(Descriptor(ls.media_type, ls.digest, store.content.size(ls.digest)))
        config = Descriptor(formats.MEDIA_OCI_CONFIG, cfg.id, len(cfg.raw))
        plan.manifest_raw = formats.build_manifest(config, layers, oci=True)
    for blob in plan.index_blobs:
        store.lease_blob(lease, Digest.of(blob))  # before storing: see graph.gc
        store.content.put_bytes(blob)
    store.lease_blob(lease, Digest.of(plan.manifest_raw))
    mdigest = store.content.put_bytes(plan.manifest_raw)
    if not store.images.has_manifest(mdigest):
        undo.manifests.append(mdigest)
    store.images.add_manifest(mdigest, plan.manifest_media_type, img.id, plan.parent_index)
    return LoadedImage(image_id=img.id, refs=[], manifest=mdigest)


def _set_refs(store: "Store", loaded: LoadedImage, plan: _Plan, undo: Undo) -> None:
    for ref in plan.refs:
        if ref.digest is not None and ref.digest not in (loaded.manifest, plan.parent_index):
            loaded.warnings.append(f"name {ref} names another manifest than the one loaded; ignored")
            continue
        try:
            before: RefRecord | None = store.refs.get(ref)
        except NotFound:
            before = None
        undo.refs.append((ref, before))
        store.refs.add(ref, loaded.image_id, loaded.manifest)
        loaded.refs.append(ref)
    if loaded.refs:
        return
    if plan.bare_tags:
        tags = ", ".join(repr(t) for t in plan.bare_tags)
        loaded.warnings.append(
            f"{ANNOTATION_REF_NAME} {tags} is a bare tag without a repository; image loaded untagged"
        )
    else:
        loaded.warnings.append("the archive gives this image no name; loaded untagged")
