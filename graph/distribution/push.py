"""Push an image from a store to a registry: blobs the registry lacks, then the manifest.

What happens
------------
1. **Pick the manifest.** The one recorded for the reference pushed (a pulled or loaded image
   keeps the very bytes it came with, so a pull followed by a push to another repository keeps
   every digest), else the first recorded manifest of the image whose blobs are all stored, else
   the canonical OCI manifest built from the recorded layer blobs (``ImageStore.build_manifest``;
   commits and legacy loads). Every blob it names must be in the content store (checked before
   anything is sent).
2. **Blobs**, up to ``concurrency`` at once, config and layers alike: ``HEAD`` first (present:
   nothing to send); else, if another repository *on the same registry* is known to hold it
   (a reference in the store whose image's manifests name the blob), a cross-repository mount;
   else an upload: one ``PUT`` for blobs up to ``options.chunk_size``, ``PATCH`` chunks and a
   closing ``PUT`` above. Bytes go out of the content store as stored; the registry checks the
   digest. Non-distributable (foreign) layers are not pushed, as Docker does by default.
3. **Manifest last**, under the tag (or the digest, for a ``repo@sha256:...`` reference). The
   registry's ``Docker-Content-Digest`` must equal the digest of the bytes sent.

Nothing in the store changes. A failure leaves the registry with some blobs and no manifest,
which is harmless (a registry GC removes unreferenced blobs) and makes a retry cheaper.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from graph.oci import formats
from graph.distribution import progress
from graph.digest import Digest, ImageID
from graph.errors import Corrupt, InvalidInput, LaminaError, NotFound
from graph.oci.formats import Descriptor, Manifest
from graph.distribution.pull import result_of
from graph.oci.reference import Reference, parse_reference
from graph.distribution.registry import Cancel, RegistryClient, RegistryOptions, Repository

if TYPE_CHECKING:
    from graph.store import Store

DEFAULT_CONCURRENCY = 3


@dataclass
class PushResult:
    """What a push did: the manifest digest and size (``docker push``'s last line), and how
    many blobs were sent, found present, or mounted."""

    reference: Reference
    digest: Digest
    size: int
    media_type: str
    pushed: int = 0
    existed: int = 0
    mounted: int = 0
    skipped_foreign: int = 0


def push(
    store: "Store",
    reference: str | Reference,
    *,
    options: RegistryOptions | None = None,
    client: RegistryClient | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress_fn: progress.ProgressFn | None = None,
) -> PushResult:
    """Push the image named ``reference`` to the registry and repository the name says.

    Requires: the reference names an image in the store, with every blob of its manifest
    stored.
    Effect: the registry's repository holds the blobs and the manifest, tagged.
    Raises: NotFound (no such image; a blob not stored locally), InvalidInput (the registry
    refused the manifest or a blob), DigestMismatch (the registry stored other bytes than
    sent), Unauthorized, Unreachable, RegistryError.
    Repeat: yes; a second push sends only the manifest.
    """
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    if not 1 <= concurrency <= 32:
        raise InvalidInput(f"concurrency must be 1..32, got {concurrency}")
    img = store.resolve_image(str(ref))
    raw, media_type = pick_manifest(store, img.id, ref)
    manifest = formats.parse_manifest(raw, media_type)
    blobs = [manifest.config] + [d for d in manifest.layers if not formats.is_nondistributable(d.media_type)]
    for d in blobs:
        if not store.content.exists(d.digest):
            raise NotFound(f"{ref.familiar()}: blob {d.digest} is not stored locally; cannot push")
    mount_from = _mount_sources(store, ref, {d.digest for d in blobs})
    report = progress.Reporter(progress_fn)
    own = client is None
    cli = client if client is not None else RegistryClient(options)
    try:
        repo = cli.repository(ref.path, cli.origin(ref.domain), push=True)
        cli.ping(repo.endpoint)
        result = PushResult(ref, Digest.of(raw), len(raw), media_type,
                            skipped_foreign=len(manifest.layers) + 1 - len(blobs))
        counts_lock = threading.Lock()
        cancel = Cancel()
        for d in blobs:
            report(d.digest, progress.WAITING, 0, d.size)

        def one(d: Descriptor) -> None:
            outcome = _push_blob(store, repo, d, mount_from.get(d.digest, []), report, cancel)
            with counts_lock:
                setattr(result, outcome, getattr(result, outcome) + 1)

        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="lamina-push") as pool:
            futures = [pool.submit(one, d) for d in blobs]
            try:
                for f in futures:
                    result_of(f)
            except BaseException:
                cancel.set()
                raise
        target = ref.tag if ref.tag is not None else str(ref.digest)
        if ref.digest is not None and ref.digest != result.digest:
            raise InvalidInput(f"{ref}: the image's manifest is {result.digest}, not {ref.digest}")
        repo.put_manifest(target, raw, media_type)
        return result
    finally:
        if own:
            cli.close()


def pick_manifest(store: "Store", image_id: ImageID, ref: Reference | None = None) -> tuple[bytes, str]:
    """The manifest bytes and media type to push (or save) for an image; see the module
    docstring for the order of preference."""
    preferred: Digest | None = None
    if ref is not None:
        try:
            preferred = store.refs.get(ref).manifest
        except NotFound:
            preferred = None
    records = store.images.manifests(image_id)
    records.sort(key=lambda m: 0 if m.digest == preferred else 1)
    for m in records:
        if not store.content.exists(m.digest):
            continue
        try:
            raw = store.content.read_bytes(m.digest, formats.MAX_MANIFEST_SIZE)
            parsed = formats.parse_manifest(raw, m.media_type)
        except LaminaError:
            continue
        if parsed.config.digest != image_id:
            continue
        if all(store.content.exists(d.digest) for d in parsed.layers if not formats.is_nondistributable(d.media_type)):
            return raw, parsed.media_type
    raw = store.images.build_manifest(store.images.get(image_id))
    return raw, formats.MEDIA_OCI_MANIFEST


def _mount_sources(store: "Store", ref: Reference, wanted: set[Digest]) -> dict[Digest, list[str]]:
    """For each wanted blob, other repositories on the same registry that (by the store's
    records) hold it: references on that registry whose image's manifests name the blob."""
    out: dict[Digest, list[str]] = {}
    for rec in store.refs.list():
        try:
            other = rec.reference
        except LaminaError:
            continue
        if other.domain != ref.domain or other.path == ref.path:
            continue
        for m in store.images.manifests(rec.image_id):
            try:
                parsed: Manifest = formats.parse_manifest(store.content.read_bytes(m.digest, formats.MAX_MANIFEST_SIZE), m.media_type)
            except LaminaError:
                continue
            for d in [parsed.config, *parsed.layers]:
                if d.digest in wanted and other.path not in out.setdefault(d.digest, []):
                    out[d.digest].append(other.path)
    return out


def _push_blob(
    store: "Store",
    repo: Repository,
    d: Descriptor,
    sources: list[str],
    report: progress.Reporter,
    cancel: threading.Event,
) -> str:
    """Make the repository hold blob ``d``; returns which counter to bump."""
    have = repo.blob_size(d.digest)
    if have is not None:
        report(d.digest, progress.EXISTS, d.size, d.size)
        return "existed"
    upload_url = None
    for source in sources[:1]:  # one try: a refusal opens an upload session we then use
        mounted = repo.mount_blob(d.digest, source)
        if mounted.mounted:
            report(d.digest, progress.MOUNTED, d.size, d.size, detail=source)
            return "mounted"
        upload_url = mounted.upload_url
    size = store.content.size(d.digest)
    if size != d.size:
        raise Corrupt(f"blob {d.digest}: stored copy has {size} bytes, the manifest says {d.size}")
    report(d.digest, progress.PUSHING, 0, d.size)
    repo.upload_blob(
        d.digest, d.size, lambda: store.content.open(d.digest), upload_url=upload_url,
        on_bytes=report.bytes_fn(d.digest, progress.PUSHING, d.size), cancel=cancel,
    )
    report(d.digest, progress.PUSHED, d.size, d.size)
    return "pushed"


__all__ = ["DEFAULT_CONCURRENCY", "PushResult", "pick_manifest", "push"]
