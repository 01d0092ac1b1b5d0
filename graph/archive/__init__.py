"""Image archives: ``docker save`` tarballs and OCI image layouts, in (``load_archive``) and out
(``save_archive``).

What an archive can be
----------------------
- an **OCI image layout**: a directory (or a tar of one) with ``oci-layout``, ``index.json`` and
  ``blobs/sha256/<hex>`` (skopeo, umoci, buildx, ``ctr export``);
- a **Docker >= 25 ``docker save``** tar: an OCI layout *plus* ``manifest.json`` (Config,
  RepoTags, Layers as ``blobs/sha256/<hex>`` paths) and ``repositories``. The index is used for
  the images (its manifests are kept byte-exact); ``manifest.json`` only adds its RepoTags, and
  any of its entries the index does not describe is loaded the legacy way;
- a **legacy ``docker save``** tar (Docker < 25, ``skopeo copy ... docker-archive:``):
  ``manifest.json`` whose Config is ``<hex>.json`` and whose Layers are ``<id>/layer.tar``
  (possibly symlinks to another image's copy), plus ``repositories``;
- any of the tars compressed as a whole (gzip, zstd, xz, bzip2; sniffed by magic bytes). A
  compressed tar is first decompressed into an unnamed temporary file in the store's root
  (``O_TMPFILE``: nothing to clean after a crash), because loading reads members out of order.

Load: trust nothing
-------------------
Names in an archive are claims. Every blob goes through the content store under the digest its
descriptor claims (or, for a legacy layer path, the digest computed from its bytes) and is
verified in the stream: manifest and config bytes are hashed before they are parsed; a layer is
read once, its compressed bytes teed into a content-store ingest (which checks size and digest at
commit), decompressed in the stream by ``graph.unpack.decompressed`` (``isal.igzip`` for gzip,
``zstandard``, or none, chosen by media type; legacy layers are sniffed) and applied by
``LayerStore.register`` with the config's DiffID as ``expected_diff_id``. A layer whose ChainID is registered already is not applied again,
but when its blob is not yet recorded for that DiffID the blob is still read, stored and its
DiffID checked by hashing the decompressed stream, so ``save`` can later hand out exactly these
bytes. Member names and manifest paths are cleaned and refused when absolute or containing
``..``; symlinks and hardlinks between members are followed only inside the archive; a directory
layout is opened with ``O_NOFOLLOW`` at every step. JSON is strict (no duplicate keys) and sized.

All or nothing: everything happens under one ``Store.lease``; the whole archive is planned and
its small documents checked before any layer is applied; references are set last. On any error
(or interrupt) the references set are restored, manifest rows, layer-blob records and images
this load created are removed, layers it registered are released, and ``Store.gc_blobs`` drops
the blobs nothing reachable needs (including unreferenced blobs some earlier crash left: the GC
does not know who wrote them). ``Store.check()`` is then as clean as before.

Which manifest is kept
----------------------
For an OCI layout (and a Docker 25 tar) the manifest is the layout's own, byte-exact, recorded
with ``parent_index`` when it was selected from a (nested) multi-platform index, whose bytes are
stored too. A legacy ``docker save`` has no manifest: load builds the canonical **OCI** manifest
(``formats.build_manifest(..., oci=True)``, config type ``application/vnd.oci.image.config.v1+
json``) over the layer blobs as found (``application/vnd.oci.image.layer.v1.tar`` for the usual
uncompressed ``layer.tar``, ``+gzip``/``+zstd`` when a layer was compressed). OCI, because
``Store.commit`` records OCI manifests too and Docker 25 writes OCI manifests in its own saves, so
every manifest lamina makes is of one kind. Since ``save`` writes that manifest and every blob
byte-exact, ``load -> save -> load -> save`` yields byte-identical archives and keeps every digest.

Names: RepoTags of ``manifest.json``; for index entries ``io.containerd.image.name`` and
``org.opencontainers.image.ref.name``. The OCI annotation is by convention often only a tag: a
value with neither ``/`` nor ``:`` (``latest``, ``1.0``, ``v2``) is taken as a bare tag without a
repository and does not name the image (``io.containerd.image.name`` does, when present); an
image left without any name is loaded untagged and ``LoadedImage.warnings`` says why.

Top-level entries of ``index.json``: an index is resolved with ``formats.select_platform`` for
the requested platform (default: this machine's), descending into nested indexes; several image
manifests under the same names (or all unnamed) that carry platforms are treated the same way, so
a layout listing one manifest per architecture loads only the matching one. Artifacts (manifests
whose config is not an image config) are skipped with a warning.

Save
----
``save_archive(store, names, out, format=...)``. ``format="docker"`` writes what Docker 25
writes: ``blobs/sha256/...``, ``index.json`` (one entry per name, annotated with
``io.containerd.image.name`` = the full reference and ``org.opencontainers.image.ref.name`` = the
tag), ``manifest.json`` (Config, RepoTags, Layers as ``blobs/sha256/<hex>`` paths),
``oci-layout`` and ``repositories``. ``format="oci"`` writes an OCI image layout whose index
entries carry the *full* reference in both annotations (unambiguous when two repositories share a
tag; umoci and skopeo accept it as the layout "tag"). The output is a tar, or a directory when
``out`` is an existing directory or a path ending in ``/`` (written beside the target and renamed
into place). A file is written to a temporary name and renamed, so a failed save leaves nothing.

Blobs are written from the content store byte for byte and re-verified while written (a damaged
store never produces an archive). The tar is deterministic: sorted names, directories
``blobs/`` and ``blobs/sha256/`` mode 0755, files 0644, mtime 0, uid/gid 0, no user/group names,
PAX format. For each image the manifest written is the one recorded for the reference named (if
its blobs are all stored), else the first recorded manifest whose blobs are all stored, else the
canonical OCI manifest built from the recorded layer blobs (``ImageStore.build_manifest``); save never
changes the store. Several names may name one image (one ``manifest.json`` entry with several
RepoTags); a name that is an image ID (or a digest reference) saves the image untagged. A
multi-platform index an image was selected from is not written: only the selected platform's
blobs are stored.
"""

from graph.archive.load import LoadedImage, load_archive
from graph.archive.plan import ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME
from graph.archive.save import save_archive

__all__ = ["ANNOTATION_IMAGE_NAME", "ANNOTATION_REF_NAME", "LoadedImage", "load_archive", "save_archive"]
