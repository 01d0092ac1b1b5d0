"""Planning a load: reading an archive's documents (OCI ``index.json`` or Docker
``manifest.json``) into ``_Plan``s, one per image: its config, layers, manifest and names,
checked before anything is stored."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

from graph.oci import formats
from graph.digest import Digest
from graph.errors import DigestMismatch, InvalidInput, NotFound, Unsupported
from graph.oci.formats import Descriptor, ImageConfig, Index, Manifest, Platform
from graph.oci.reference import Reference, parse_reference
from graph.oci.strictjson import loads_strict
from graph.archive.sources import MAX_JSON, _HEX64, _Source, _clean_member, _sniff


ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
OCI_LAYOUT_VERSION = "1.0.0"
MAX_INDEX_DEPTH = 4  # nested indexes followed below a top-level entry
_BLOB_PATH_RE = re.compile(rf"blobs/sha256/({_HEX64})")
_LEGACY_CONFIG_RE = re.compile(rf"({_HEX64})\.json")


# =============================================================================== planning


@dataclass
class _LayerSrc:
    member: str
    digest: Digest | None  # blob digest, when known before reading (descriptor or blob path)
    size: int  # bytes of the blob in the archive
    media_type: str
    compression: str


@dataclass
class _Plan:
    """One image to load, with everything small already read and checked."""

    config: ImageConfig
    layers: list[_LayerSrc]
    manifest_raw: bytes | None  # None: legacy, built after the layers are stored
    manifest_media_type: str
    parent_index: Digest | None = None
    index_blobs: list[bytes] = field(default_factory=list)
    refs: list[Reference] = field(default_factory=list)
    bare_tags: list[str] = field(default_factory=list)

    def add_refs(self, refs: list[Reference]) -> None:
        for r in refs:
            if r not in self.refs:
                self.refs.append(r)


def _names(annotations: dict[str, str], label: str) -> tuple[list[Reference], list[str]]:
    """References named by an index entry's annotations, and the bare tags among them (an
    ``org.opencontainers.image.ref.name`` with neither ``/`` nor ``:``, which names no
    repository)."""
    refs: list[Reference] = []
    bare: list[str] = []
    full = annotations.get(ANNOTATION_IMAGE_NAME)
    if full:
        refs.append(_parse_name(full, label, ANNOTATION_IMAGE_NAME))
    ref_name = annotations.get(ANNOTATION_REF_NAME)
    if ref_name:
        if "/" in ref_name or ":" in ref_name or "@" in ref_name:
            r = _parse_name(ref_name, label, ANNOTATION_REF_NAME)
            if r not in refs:
                refs.append(r)
        else:
            bare.append(ref_name)
    return refs, bare


def _parse_name(name: str, label: str, where: str) -> Reference:
    try:
        return parse_reference(name)
    except InvalidInput as e:
        raise InvalidInput(f"{label}: {where}: {e}") from None


def _plan_layers(src: _Source, manifest: Manifest, what: str) -> list[_LayerSrc]:
    out = []
    for i, d in enumerate(manifest.layers):
        comp = formats.layer_compression(d.media_type)
        member = f"blobs/sha256/{d.digest.hex}"
        src.resolve(member, f"{what} layer {i} blob")  # missing blobs fail before any work
        out.append(_LayerSrc(member, d.digest, d.size, d.media_type, comp))
    return out


def _select(
    src: _Source, desc: Descriptor, want: Platform, depth: int, blobs: list[bytes]
) -> tuple[Descriptor, Digest]:
    """The image manifest for ``want`` under index ``desc`` (nested indexes followed), and the
    digest of the index that listed it. Every index read is appended to ``blobs``."""
    raw = src.read_blob(desc, "index", formats.MAX_MANIFEST_SIZE)
    idx = formats.parse_manifest_or_index(raw, desc.media_type)
    if not isinstance(idx, Index):
        raise InvalidInput(f"{src.label}: {desc.digest} is described as an index but is a manifest")
    blobs.append(raw)
    try:
        return formats.select_platform(idx, want), idx.digest
    except NotFound as first:
        if depth < MAX_INDEX_DEPTH:
            for d in idx.manifests:
                if d.media_type in formats.INDEX_MEDIA_TYPES:
                    with contextlib.suppress(NotFound):
                        return _select(src, d, want, depth + 1, blobs)
        raise NotFound(f"{src.label}: {first}") from None


def _plan_manifest(
    src: _Source, desc: Descriptor, parent_index: Digest | None, index_blobs: list[bytes]
) -> _Plan | None:
    """Plan the image of one manifest descriptor; None (with nothing read further) for an
    artifact that is not a container image."""
    raw = src.read_blob(desc, "manifest", formats.MAX_MANIFEST_SIZE)
    m = formats.parse_manifest(raw, desc.media_type)
    if m.config.media_type not in formats.CONFIG_MEDIA_TYPES:
        return None
    m.check_image()
    what = f"manifest {desc.digest}"
    config_raw = src.read_blob(m.config, "config", formats.MAX_CONFIG_SIZE)
    cfg = formats.parse_config(config_raw)
    formats.check_manifest_config(m, cfg)
    return _Plan(
        config=cfg,
        layers=_plan_layers(src, m, what),
        manifest_raw=raw,
        manifest_media_type=m.media_type,
        parent_index=parent_index,
        index_blobs=list(index_blobs),
    )


def _plan_oci(src: _Source, want: Platform, warnings: list[str]) -> list[_Plan]:
    layout = loads_strict(src.read_bytes("oci-layout", "oci-layout", MAX_JSON), "oci-layout", MAX_JSON)
    version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
    if not isinstance(version, str):
        raise InvalidInput(f"{src.label}: oci-layout has no imageLayoutVersion")
    if version.split(".")[0] != "1":
        raise Unsupported(f"{src.label}: OCI image layout version {version} is not supported")
    raw = src.read_bytes("index.json", "index.json", formats.MAX_MANIFEST_SIZE)
    try:
        index = formats.parse_manifest_or_index(raw, formats.MEDIA_OCI_INDEX)
    except InvalidInput as e:
        raise InvalidInput(f"{src.label}: index.json: {e}") from None
    if not isinstance(index, Index):
        raise InvalidInput(f"{src.label}: index.json is not an image index")

    # Entries naming the same references (or all unnamed) that are platform-specific image
    # manifests are alternatives: keep the one for ``want``.
    entries: list[tuple[Descriptor, list[Reference], list[str]]] = []
    for i, d in enumerate(index.manifests):
        refs, bare = _names(d.annotations, f"{src.label}: index.json manifests[{i}]")
        if d.media_type not in formats.MANIFEST_MEDIA_TYPES | formats.INDEX_MEDIA_TYPES:
            raise InvalidInput(f"{src.label}: index.json manifests[{i}]: unsupported media type {d.media_type}")
        entries.append((d, refs, bare))
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, (d, refs, _) in enumerate(entries):
        if d.media_type in formats.MANIFEST_MEDIA_TYPES and d.platform is not None:
            groups.setdefault(tuple(sorted(str(r) for r in refs)), []).append(i)
    skip: set[int] = set()
    for members in groups.values():
        if len(members) > 1:
            alt = Index(formats.MEDIA_OCI_INDEX, tuple(entries[i][0] for i in members), {}, raw)
            chosen = formats.select_platform(alt, want)
            skip |= {i for i in members if entries[i][0] is not chosen}

    plans: dict[Digest, _Plan] = {}
    for i, (d, refs, bare) in enumerate(entries):
        if i in skip:
            continue
        blobs: list[bytes] = []
        parent: Digest | None = None
        desc = d
        if d.media_type in formats.INDEX_MEDIA_TYPES:
            desc, parent = _select(src, d, want, 0, blobs)
        plan = plans.get(desc.digest)
        if plan is None:
            plan = _plan_manifest(src, desc, parent, blobs)
            if plan is None:
                warnings.append(f"index.json manifests[{i}] ({desc.digest}) is not a container image; skipped")
                continue
            plans[desc.digest] = plan
        plan.add_refs(refs)
        plan.bare_tags += [t for t in bare if t not in plan.bare_tags]
    return list(plans.values())


def _expected_digest(path: str) -> Digest | None:
    """The digest a ``manifest.json`` path promises by its name, if it has that form."""
    m = _BLOB_PATH_RE.fullmatch(path) or _LEGACY_CONFIG_RE.fullmatch(path)
    return Digest.from_hex(m.group(1)) if m else None


def _plan_docker(src: _Source, by_config: dict[Digest, _Plan]) -> list[_Plan]:
    """Plans from ``manifest.json``. An entry whose config is already planned (from the OCI
    index of a Docker 25 tar) only adds its RepoTags to that plan."""
    label = f"{src.label}: manifest.json"
    doc = loads_strict(src.read_bytes("manifest.json", "manifest.json", MAX_JSON), "manifest.json", MAX_JSON)
    if not isinstance(doc, list):
        raise InvalidInput(f"{label}: must be a list of images")
    plans: list[_Plan] = []
    for i, e in enumerate(doc):
        where = f"{label}[{i}]"
        if not isinstance(e, dict):
            raise InvalidInput(f"{where}: must be an object")
        config_path, tags, layer_paths = e.get("Config"), e.get("RepoTags"), e.get("Layers")
        if not isinstance(config_path, str):
            raise InvalidInput(f"{where}: Config must be a path")
        if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            raise InvalidInput(f"{where}: RepoTags must be a list of strings")
        if not (isinstance(layer_paths, list) and all(isinstance(p, str) for p in layer_paths)):
            raise InvalidInput(f"{where}: Layers must be a list of paths")
        refs = []
        for t in tags or []:
            r = _parse_name(t, where, "RepoTags")
            if r.digest is not None:
                raise InvalidInput(f"{where}: RepoTags entry {t!r} has a digest")
            refs.append(r)
        config_member = _clean_member(config_path, f"{where}: Config")
        config_raw = src.read_bytes(config_member, "config", formats.MAX_CONFIG_SIZE)
        actual = Digest.of(config_raw)
        promised = _expected_digest(config_member)
        if promised is not None and promised != actual:
            raise DigestMismatch(f"{where}: config {config_path} hashes to {actual}")
        planned = by_config.get(actual)
        if planned is not None:
            planned.add_refs(refs)
            continue
        cfg = formats.parse_config(config_raw)
        if len(layer_paths) != len(cfg.diff_ids):
            raise InvalidInput(
                f"{where}: {len(layer_paths)} layers but its config lists {len(cfg.diff_ids)} diff_ids"
            )
        layers = []
        for j, p in enumerate(layer_paths):
            member = src.resolve(_clean_member(p, f"{where}: Layers[{j}]"), f"layer {p}")
            comp = _sniff(src.head(member, f"layer {p}"))
            if comp not in ("none", "gzip", "zstd"):
                raise Unsupported(f"{where}: layer {p} is {comp}-compressed; only gzip and zstd are supported")
            f, size = src.open(member, f"layer {p}")
            f.close()
            digest = _expected_digest(member) or _expected_digest(_clean_member(p, where))
            if digest is None and comp == "none":
                digest = Digest(cfg.diff_ids[j])  # an uncompressed layer's blob is its tar
            layers.append(_LayerSrc(member, digest, size, formats.layer_media_type(comp, oci=True), comp))
        plan = _Plan(config=cfg, layers=layers, manifest_raw=None, manifest_media_type=formats.MEDIA_OCI_MANIFEST)
        plan.add_refs(refs)
        by_config[actual] = plan
        plans.append(plan)
    return plans
