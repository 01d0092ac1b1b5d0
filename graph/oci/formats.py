"""Image formats: OCI image-spec and Docker Image Manifest V2 Schema 2, parsed into typed,
validated, immutable objects, and the canonical builders for what lamina writes itself.

Beside it: ``strictjson`` (strict reading, canonical writing), ``fields`` (typed field checks),
``platform`` (``Platform``). What is here and why:

- Media types (``MEDIA_*``) of both families, and ``MANIFEST_ACCEPT`` for a registry's Accept.
- ``Descriptor``, ``Platform``, ``Manifest``, ``Index``, ``ImageConfig``: frozen dataclasses.
  Sequences are tuples; ``annotations`` and ``ImageConfig.config`` are plain dicts the caller
  must not mutate. ``raw`` keeps the exact bytes, because identities are hashes of bytes
  (a manifest's digest, an image id) and re-serialising would change them.
- ``parse_manifest_or_index`` / ``parse_config``: the only way bytes from a registry or an
  archive become objects. Input is hostile: JSON must be strict UTF-8 with no duplicate keys
  (two parsers reading different values from one document is a classic smuggling trick), no
  NaN/Infinity, no lone surrogates, bounded size and depth; every field the store relies on is
  type-checked; sizes are non-negative int64; digests are sha256 (``graph.digest``).
- ``select_platform``: containerd's ``platforms.Only`` matching on an index.
- ``build_manifest`` / ``build_index`` / ``build_config``: deterministic JSON (fixed key order,
  compact separators, Go's escaping of ``<>&``), so the same inputs give the same digest.

Errors: malformed or inconsistent input -> ``InvalidInput``; schema 1 and encrypted layers ->
``Unsupported``; embedded ``data`` that does not hash to its descriptor -> ``DigestMismatch``;
no manifest for the wanted platform -> ``NotFound``. Messages are one line and name the field.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Iterable, Mapping, Sequence

from graph.digest import DiffID, Digest, ImageID
from graph.errors import DigestMismatch, InvalidInput, NotFound, Unsupported
from graph.oci.strictjson import canonical_json, loads_strict
from graph.oci.strictjson import short as _short
from graph.oci.fields import INT64_MAX as _INT64_MAX
from graph.oci.fields import bad as _bad, check_rfc3339 as _check_rfc3339, get_int64 as _get_int64
from graph.oci.fields import get_str as _get_str, get_str_list as _get_str_list, get_str_map as _get_str_map
from graph.oci.fields import join as _join, media_type_ok as _media_type_ok, rfc3339_now
from graph.oci.platform import Platform

# --------------------------------------------------------------------------- media types

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_OCI_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
MEDIA_OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
MEDIA_OCI_LAYER_ND_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
MEDIA_OCI_EMPTY = "application/vnd.oci.empty.v1+json"
MEDIA_OCI_LAYOUT_HEADER = "application/vnd.oci.layout.header.v1+json"

MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"  # containerd's
MEDIA_DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar"
MEDIA_DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
MEDIA_DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
MEDIA_DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_MEDIA_TYPES = frozenset({MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST})
INDEX_MEDIA_TYPES = frozenset({MEDIA_OCI_INDEX, MEDIA_DOCKER_MANIFEST_LIST})
CONFIG_MEDIA_TYPES = frozenset({MEDIA_OCI_CONFIG, MEDIA_DOCKER_CONFIG})
SCHEMA1_MEDIA_TYPES = frozenset({MEDIA_DOCKER_SCHEMA1_MANIFEST, MEDIA_DOCKER_SCHEMA1_SIGNED})

# Accept header for a manifest GET/HEAD: indexes first so a multi-arch tag yields its index.
MANIFEST_ACCEPT = ", ".join(
    [MEDIA_OCI_INDEX, MEDIA_DOCKER_MANIFEST_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST]
)

_LAYER_COMPRESSION: dict[str, str] = {
    MEDIA_OCI_LAYER: "none",
    MEDIA_OCI_LAYER_GZIP: "gzip",
    MEDIA_OCI_LAYER_ZSTD: "zstd",
    MEDIA_OCI_LAYER_ND: "none",
    MEDIA_OCI_LAYER_ND_GZIP: "gzip",
    MEDIA_OCI_LAYER_ND_ZSTD: "zstd",
    MEDIA_DOCKER_LAYER: "none",
    MEDIA_DOCKER_LAYER_GZIP: "gzip",
    MEDIA_DOCKER_LAYER_ZSTD: "zstd",
    MEDIA_DOCKER_FOREIGN_LAYER: "none",
    MEDIA_DOCKER_FOREIGN_LAYER_GZIP: "gzip",
}
_NONDISTRIBUTABLE = frozenset(
    {
        MEDIA_OCI_LAYER_ND,
        MEDIA_OCI_LAYER_ND_GZIP,
        MEDIA_OCI_LAYER_ND_ZSTD,
        MEDIA_DOCKER_FOREIGN_LAYER,
        MEDIA_DOCKER_FOREIGN_LAYER_GZIP,
    }
)
_OCI_LAYERS = frozenset(t for t in _LAYER_COMPRESSION if t.startswith("application/vnd.oci."))
_DOCKER_LAYERS = frozenset(t for t in _LAYER_COMPRESSION if t.startswith("application/vnd.docker."))
_LAYER_FOR = {
    (True, "none"): MEDIA_OCI_LAYER,
    (True, "gzip"): MEDIA_OCI_LAYER_GZIP,
    (True, "zstd"): MEDIA_OCI_LAYER_ZSTD,
    (False, "none"): MEDIA_DOCKER_LAYER,
    (False, "gzip"): MEDIA_DOCKER_LAYER_GZIP,
    (False, "zstd"): MEDIA_DOCKER_LAYER_ZSTD,
}
# Content-Types that say nothing about a manifest (some registries and file servers send them).
_GENERIC_TYPES = frozenset({"", "application/json", "application/octet-stream", "text/plain"})

MAX_MANIFEST_SIZE = 4 << 20  # distribution and containerd refuse manifests over 4 MiB
MAX_CONFIG_SIZE = 32 << 20  # far above any real config; bounds what a hostile one costs


# --------------------------------------------------------------------------- Descriptor


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is (``media_type``), its ``digest`` and ``size``,
    and optional ``platform`` (index entries), ``annotations``, ``urls`` (where non-distributable
    layers live), ``artifact_type`` and embedded ``data``. Constructed values are validated and
    coerced (a ``str`` digest becomes ``Digest``, lists become tuples). Hash: (media type,
    digest, size); equality: every field."""

    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None
    data: bytes | None = None

    def __post_init__(self) -> None:
        if not _media_type_ok(self.media_type):
            raise InvalidInput(f"invalid descriptor: bad media type {_short(self.media_type)}")
        if not isinstance(self.digest, Digest):
            object.__setattr__(self, "digest", Digest(self.digest))
        if type(self.size) is not int or not 0 <= self.size <= _INT64_MAX:
            raise InvalidInput(f"invalid descriptor {self.digest}: bad size {_short(self.size)}")
        if not isinstance(self.urls, tuple):
            object.__setattr__(self, "urls", tuple(self.urls))
        if not isinstance(self.annotations, dict):
            object.__setattr__(self, "annotations", dict(self.annotations))
        if self.artifact_type is not None and not _media_type_ok(self.artifact_type):
            raise InvalidInput(f"invalid descriptor {self.digest}: bad artifactType {_short(self.artifact_type)}")
        if self.data is not None:
            if len(self.data) != self.size or Digest.of(self.data) != self.digest:
                raise DigestMismatch(f"descriptor {self.digest}: embedded data does not match its digest and size")

    def __hash__(self) -> int:
        return hash((self.media_type, self.digest, self.size))

    def to_json(self) -> dict[str, Any]:
        """The descriptor as a JSON object, in the image-spec's field order."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode("ascii")
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        return out


_DESCRIPTOR_FIELDS = ("mediaType", "digest", "size", "urls", "annotations", "data", "platform", "artifactType")


def _parse_descriptor(d: Any, what: str, where: str) -> Descriptor:
    if not isinstance(d, dict):
        raise _bad(what, where, f"descriptor must be an object, got {type(d).__name__}")
    _check_field_case(d, _DESCRIPTOR_FIELDS, what, where)
    mt = _get_str(d, "mediaType", what, where, required=True)
    if not _media_type_ok(mt):
        raise _bad(what, _join(where, "mediaType"), f"not a media type: {_short(mt)}")
    dg = _get_str(d, "digest", what, where, required=True)
    try:
        digest = Digest(dg)
    except InvalidInput as e:
        raise _bad(what, _join(where, "digest"), str(e)) from None
    size = _get_int64(d, "size", what, where)
    urls = _get_str_list(d, "urls", what, where)
    for u in urls:
        if not u or any(c.isspace() for c in u):
            raise _bad(what, _join(where, "urls"), f"not a URL: {_short(u)}")
    annotations = _get_str_map(d, "annotations", what, where)
    plat = None
    if d.get("platform") is not None:
        plat = Platform.from_json(d["platform"], what, _join(where, "platform"))
    at = _get_str(d, "artifactType", what, where)
    if at is not None and not _media_type_ok(at):
        raise _bad(what, _join(where, "artifactType"), f"not a media type: {_short(at)}")
    data = None
    if d.get("data") is not None:
        b64 = _get_str(d, "data", what, where)
        try:
            data = base64.b64decode(b64 or "", validate=True)
        except (binascii.Error, ValueError):
            raise _bad(what, _join(where, "data"), "not valid base64") from None
        if len(data) != size or Digest.of(data) != digest:
            raise DigestMismatch(f"invalid {what}: {_join(where, 'data')}: embedded data does not match {digest}")
    return Descriptor(mt, digest, size, plat, annotations, urls, at, data)


# --------------------------------------------------------------------------- Manifest, Index


class _Document:
    """What a manifest and an index share: their exact bytes (``raw``) decide everything, and
    ``digest`` is their sha256 (what a registry calls the manifest's digest)."""

    media_type: str
    raw: bytes
    OCI_MEDIA_TYPE: ClassVar[str]

    @cached_property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    @property
    def is_oci(self) -> bool:
        return self.media_type == self.OCI_MEDIA_TYPE

    def __hash__(self) -> int:  # the bytes determine every field
        return hash(self.raw)


@dataclass(frozen=True)
class Manifest(_Document):
    """An image manifest (OCI or Docker schema 2): one config and the ordered layers, bottom
    first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str]
    raw: bytes
    subject: Descriptor | None = None
    artifact_type: str | None = None
    OCI_MEDIA_TYPE: ClassVar[str] = MEDIA_OCI_MANIFEST
    __hash__ = _Document.__hash__  # a dataclass would make its own of the (unhashable) fields

    def check_image(self) -> None:
        """Raise ``Unsupported`` unless this manifest describes a container image (an image
        config, and layers whose compression lamina knows). Artifacts (Helm charts, SBOMs,
        signatures) are manifests too, and must not be unpacked as a root filesystem."""
        if self.config.media_type not in CONFIG_MEDIA_TYPES:
            raise Unsupported(
                f"manifest {self.digest} is not a container image (config media type "
                f"{self.config.media_type})"
            )
        for layer in self.layers:
            layer_compression(layer.media_type)


@dataclass(frozen=True)
class Index(_Document):
    """An image index (OCI) or manifest list (Docker): manifests for several platforms."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str]
    raw: bytes
    subject: Descriptor | None = None
    artifact_type: str | None = None
    OCI_MEDIA_TYPE: ClassVar[str] = MEDIA_OCI_INDEX
    __hash__ = _Document.__hash__


def _kind(mt: str) -> str | None:
    if mt in MANIFEST_MEDIA_TYPES:
        return "manifest"
    if mt in INDEX_MEDIA_TYPES:
        return "index"
    return None


def _detect(doc: dict[str, Any], given: str | None) -> str:
    """Decide the document's media type from its ``mediaType`` field, the transport's
    Content-Type, and its shape. The field wins over the Content-Type when both name a manifest
    or index of the same kind (the bytes are what the digest covers); a kind conflict (one says
    manifest, the other index) is refused, as containerd does."""
    field_mt = doc.get("mediaType")
    if field_mt is not None and not isinstance(field_mt, str):
        raise InvalidInput(f"invalid manifest: mediaType must be a string, got {type(field_mt).__name__}")
    g = (given or "").split(";", 1)[0].strip().lower()
    if (
        "fsLayers" in doc
        or "signatures" in doc
        or doc.get("schemaVersion") == 1
        or field_mt in SCHEMA1_MEDIA_TYPES
        or g in SCHEMA1_MEDIA_TYPES
    ):
        raise Unsupported(
            "Docker image manifest schema 1 is not supported (deprecated since Docker 1.10; "
            "push the image again with a current client)"
        )
    if field_mt is not None and _kind(field_mt) is None:
        if field_mt in CONFIG_MEDIA_TYPES or field_mt in _LAYER_COMPRESSION:
            raise InvalidInput(f"invalid manifest: media type {field_mt} is not a manifest or index")
        raise InvalidInput(f"invalid manifest: unknown manifest media type {_short(field_mt)}")
    if g and g not in _GENERIC_TYPES and _kind(g) is None:
        if field_mt is None:
            raise InvalidInput(f"invalid manifest: unknown manifest media type {_short(g)}")
        g = ""  # a stray Content-Type; the document names itself
    if field_mt is not None:
        if g and _kind(g) is not None and _kind(g) != _kind(field_mt):
            raise InvalidInput(f"invalid manifest: Content-Type says {g} but the document says {field_mt}")
        mt = field_mt
    elif _kind(g) is not None:
        mt = g
    elif "manifests" in doc:
        mt = MEDIA_OCI_INDEX
    elif "config" in doc or "layers" in doc:
        mt = MEDIA_OCI_MANIFEST
    else:
        raise InvalidInput("invalid manifest: neither mediaType nor config/layers/manifests fields")
    if _kind(mt) == "manifest" and "manifests" in doc:
        raise InvalidInput(f"invalid manifest: media type {mt} but the document has a manifests list")
    if _kind(mt) == "index" and ("config" in doc or "layers" in doc):
        raise InvalidInput(f"invalid manifest: media type {mt} but the document has config/layers")
    return mt


_MANIFEST_FIELDS = ("schemaVersion", "mediaType", "artifactType", "config", "layers", "manifests", "subject", "annotations")


def _check_field_case(doc: dict[str, Any], known: Iterable[str], what: str, where: str = "") -> None:
    """Refuse keys equal to a known field up to case (``Layers`` next to ``layers``): Go's JSON
    decoder matches field names case-insensitively, so another tool would read them."""
    lower = {k.lower(): k for k in known}
    for k in doc:
        canon = lower.get(k.lower())
        if canon is not None and canon != k:
            raise _bad(what, where, f"key {_short(k)} differs from the field {canon!r} only in case")


def parse_manifest_or_index(raw: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse manifest bytes from a registry, an archive or the store.

    ``media_type`` is the transport's Content-Type (parameters ignored), if any. Detection:
    the document's ``mediaType`` field, else a known ``media_type``, else the shape
    (``manifests`` -> OCI index, ``config``/``layers`` -> OCI manifest). Refuses with
    ``Unsupported`` schema 1; with ``InvalidInput`` bad JSON ("invalid JSON in manifest: ..."),
    unknown media types (named), a kind conflict, ``schemaVersion`` other than 2, missing or
    ill-typed fields, negative sizes, bad digests, a Docker list entry without platform.
    """
    doc = loads_strict(raw, "manifest", MAX_MANIFEST_SIZE)
    if not isinstance(doc, dict):
        raise InvalidInput(f"invalid manifest: top level must be an object, got {type(doc).__name__}")
    mt = _detect(doc, media_type)
    sv = doc.get("schemaVersion")
    if type(sv) is not int or sv != 2:
        raise InvalidInput(f"invalid manifest: schemaVersion must be 2, got {_short(sv)}")
    _check_field_case(doc, _MANIFEST_FIELDS, "manifest")
    what = "index" if _kind(mt) == "index" else "manifest"
    annotations = _get_str_map(doc, "annotations", what, "")
    subject = None
    if doc.get("subject") is not None:
        subject = _parse_descriptor(doc["subject"], what, "subject")
    at = _get_str(doc, "artifactType", what, "")
    if at is not None and not _media_type_ok(at):
        raise _bad(what, "artifactType", f"not a media type: {_short(at)}")
    raw = bytes(raw)
    if what == "manifest":
        if "config" not in doc:
            raise _bad(what, "config", "missing")
        config = _parse_descriptor(doc["config"], what, "config")
        # Required by both specs; may be empty (Docker makes zero-layer images from scratch).
        layers_doc = doc.get("layers")
        if not isinstance(layers_doc, list):
            raise _bad(what, "layers", "missing" if layers_doc is None else "must be a list")
        layers = tuple(_parse_descriptor(x, what, f"layers[{i}]") for i, x in enumerate(layers_doc))
        return Manifest(mt, config, layers, annotations, raw, subject, at)
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise _bad(what, "manifests", "missing" if entries is None else "must be a list")
    manifests = tuple(_parse_descriptor(x, what, f"manifests[{i}]") for i, x in enumerate(entries))
    if mt == MEDIA_DOCKER_MANIFEST_LIST:
        for i, m in enumerate(manifests):
            if m.platform is None:
                raise _bad(what, f"manifests[{i}].platform", "missing (required in a Docker manifest list)")
    return Index(mt, manifests, annotations, raw, subject, at)


def parse_manifest(raw: bytes, media_type: str | None = None) -> Manifest:
    """``parse_manifest_or_index`` for a place that needs an image manifest (an index entry,
    a digest pinned by the user after selection). An index is refused with ``InvalidInput``."""
    m = parse_manifest_or_index(raw, media_type)
    if not isinstance(m, Manifest):
        raise InvalidInput(f"invalid manifest: {m.digest} is an index ({m.media_type}), expected a manifest")
    return m


# --------------------------------------------------------------------------- ImageConfig

_RUNTIME_STR = ("User", "WorkingDir", "StopSignal", "Domainname", "Hostname")
_RUNTIME_LIST = ("Env", "Shell", "OnBuild")
_RUNTIME_ARGV = ("Entrypoint", "Cmd")  # Docker's StrSlice: a list, or one string
_RUNTIME_MAP = ("ExposedPorts", "Volumes", "Healthcheck")
_CONFIG_FIELDS = ("created", "author", "architecture", "os", "os.version", "os.features", "variant", "config", "rootfs", "history")
_RUNTIME_FIELDS = _RUNTIME_STR + _RUNTIME_LIST + _RUNTIME_ARGV + _RUNTIME_MAP + ("Labels", "ArgsEscaped")


@dataclass(frozen=True)
class ImageConfig:
    """An image configuration (OCI config or Docker container image v1). ``config`` is the
    runtime object (``Env``, ``Entrypoint``, ``Cmd``, ``WorkingDir``, ``User``, ``Labels``, ...)
    or ``{}``; a one-string ``Entrypoint``/``Cmd`` (Docker's StrSlice) is given as a one-item
    list. ``diff_ids`` are the uncompressed layers' digests, bottom first. ``id`` is the image
    id: sha256 of ``raw``."""

    raw: bytes
    architecture: str
    os: str
    variant: str | None
    diff_ids: tuple[DiffID, ...]
    config: dict[str, Any]
    history: tuple[dict[str, Any], ...]
    created: str | None
    author: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    @cached_property
    def id(self) -> ImageID:
        return ImageID(Digest.of(self.raw))

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant, self.os_version, self.os_features)

    def __hash__(self) -> int:  # the bytes determine every field
        return hash(self.raw)


def _parse_runtime_config(c: Any) -> dict[str, Any]:
    what, where = "image config", "config"
    if c is None:
        return {}
    if not isinstance(c, dict):
        raise _bad(what, where, f"must be an object, got {type(c).__name__}")
    seen: dict[str, str] = {}
    for k in c:
        if k.lower() in seen:
            raise _bad(what, where, f"keys {seen[k.lower()]!r} and {k!r} differ only in case")
        seen[k.lower()] = k
    _check_field_case(c, _RUNTIME_FIELDS, what, where)
    out = dict(c)
    for k in _RUNTIME_STR:
        _get_str(c, k, what, where)
    for k in _RUNTIME_LIST:
        if c.get(k) is not None:
            _get_str_list(c, k, what, where)
    for k in _RUNTIME_ARGV:
        v = c.get(k)
        if isinstance(v, str):
            out[k] = [v]
        elif v is not None:
            _get_str_list(c, k, what, where)
    for k in _RUNTIME_MAP:
        if c.get(k) is not None and not isinstance(c[k], dict):
            raise _bad(what, _join(where, k), "must be an object")
    _get_str_map(c, "Labels", what, where)
    if c.get("ArgsEscaped") is not None and not isinstance(c["ArgsEscaped"], bool):
        raise _bad(what, _join(where, "ArgsEscaped"), "must be a boolean")
    return out


def parse_config(raw: bytes) -> ImageConfig:
    """Parse and validate an image config: ``architecture`` and ``os`` non-empty strings,
    ``rootfs.type == "layers"``, ``rootfs.diff_ids`` sha256 digests, ``created`` times RFC 3339,
    runtime fields of the right types, and no more non-empty history entries than layers
    (moby's check). Raises ``InvalidInput`` naming the field."""
    what = "image config"
    doc = loads_strict(raw, what, MAX_CONFIG_SIZE)
    if not isinstance(doc, dict):
        raise InvalidInput(f"invalid {what}: top level must be an object, got {type(doc).__name__}")
    _check_field_case(doc, _CONFIG_FIELDS, what)
    arch = _get_str(doc, "architecture", what, "", required=True)
    os_ = _get_str(doc, "os", what, "", required=True)
    if not arch:
        raise _bad(what, "architecture", "must not be empty")
    if not os_:
        raise _bad(what, "os", "must not be empty")
    created = _get_str(doc, "created", what, "")
    if created is not None:
        _check_rfc3339(created, what, "created")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict):
        raise _bad(what, "rootfs", "missing" if rootfs is None else "must be an object")
    if rootfs.get("type") != "layers":
        raise _bad(what, "rootfs.type", f"must be \"layers\", got {_short(rootfs.get('type'))}")
    ids = rootfs.get("diff_ids")
    if not isinstance(ids, list):
        raise _bad(what, "rootfs.diff_ids", "missing" if ids is None else "must be a list")
    diff_ids: list[DiffID] = []
    for i, d in enumerate(ids):
        try:
            diff_ids.append(DiffID(Digest(d)))
        except InvalidInput as e:
            raise _bad(what, f"rootfs.diff_ids[{i}]", str(e)) from None
    hist = doc.get("history")
    if hist is not None and not isinstance(hist, list):
        raise _bad(what, "history", "must be a list")
    non_empty = 0
    for i, h in enumerate(hist or []):
        where = f"history[{i}]"
        if not isinstance(h, dict):
            raise _bad(what, where, "must be an object")
        for k in ("created", "author", "created_by", "comment"):
            _get_str(h, k, what, where)
        if h.get("created") is not None:
            _check_rfc3339(h["created"], what, _join(where, "created"))
        el = h.get("empty_layer")
        if el is not None and not isinstance(el, bool):
            raise _bad(what, _join(where, "empty_layer"), "must be a boolean")
        non_empty += not el
    if non_empty > len(diff_ids):
        raise _bad(what, "history", f"{non_empty} non-empty entries for {len(diff_ids)} layers")
    return ImageConfig(
        raw=bytes(raw),
        architecture=arch,
        os=os_,
        variant=_get_str(doc, "variant", what, "") or None,
        diff_ids=tuple(diff_ids),
        config=_parse_runtime_config(doc.get("config")),
        history=tuple(hist or ()),
        created=created,
        author=_get_str(doc, "author", what, ""),
        os_version=_get_str(doc, "os.version", what, "") or None,
        os_features=_get_str_list(doc, "os.features", what, ""),
    )


def check_manifest_config(manifest: Manifest, config: ImageConfig) -> None:
    """Check that a manifest and the config it names agree: the config's bytes hash to the
    manifest's config digest and there is one layer per DiffID (what Docker checks before it
    unpacks). Raises ``DigestMismatch`` / ``InvalidInput``."""
    if config.id != manifest.config.digest:
        raise DigestMismatch(f"manifest {manifest.digest}: config is {config.id}, expected {manifest.config.digest}")
    if len(manifest.layers) != len(config.diff_ids):
        raise InvalidInput(
            f"manifest {manifest.digest}: {len(manifest.layers)} layers but its config lists "
            f"{len(config.diff_ids)} diff_ids"
        )


# --------------------------------------------------------------------------- layers


def layer_compression(media_type: str) -> str:
    """``"gzip"``, ``"zstd"`` or ``"none"`` for a layer media type of either family.

    Non-distributable (OCI) and foreign (Docker) layers are ordinary tars and get their
    compression too: whether their bytes can be fetched is the puller's question (see
    ``is_nondistributable``), and once local (an archive) they apply like any other layer.
    Raises ``Unsupported`` for encrypted layers and ``InvalidInput`` for anything else unknown.
    """
    c = _LAYER_COMPRESSION.get(media_type)
    if c is not None:
        return c
    if isinstance(media_type, str) and "encrypted" in media_type:
        raise Unsupported(f"encrypted layers are not supported (media type {media_type})")
    if media_type in CONFIG_MEDIA_TYPES or media_type in MANIFEST_MEDIA_TYPES or media_type in INDEX_MEDIA_TYPES:
        raise InvalidInput(f"media type {media_type} is not a layer")
    raise InvalidInput(f"unknown layer media type {_short(media_type)}")


def is_nondistributable(media_type: str) -> bool:
    """True for OCI non-distributable and Docker foreign layers: a registry may not hold their
    bytes (the descriptor's ``urls`` say where they live). lamina fetches only from the
    registry; a puller that gets a 404 for one should raise ``Unsupported`` naming the layer."""
    return media_type in _NONDISTRIBUTABLE


def layer_media_type(compression: str, *, oci: bool = True) -> str:
    """The distributable layer media type for ``compression`` ("none" | "gzip" | "zstd")."""
    try:
        return _LAYER_FOR[(bool(oci), compression)]
    except KeyError:
        raise InvalidInput(f"unknown layer compression {_short(compression)}") from None


# --------------------------------------------------------------------------- platform selection


def _vnum(v: str) -> int | None:
    s = v[1:] if v.startswith("v") else v
    return int(s) if s.isascii() and s.isdigit() else None


def platform_vector(want: Platform) -> list[Platform]:
    """containerd's ``platformVector``: ``want`` and the platforms it can also run, best first.
    amd64/vN -> amd64/v(N-1)..v1, then 386; arm/vN -> arm/v(N-1)..v5; arm64/v8.x -> v8.(x-1)..v8,
    then arm/v8..v5; arm64/v9.x -> v9.(x-1)..v9, v8.(x+5)..v8, then arm."""
    n = want.normalized()
    os_, arch, variant = n.os, n.architecture, n.variant or ""
    vec = [n]
    if arch == "amd64":
        k = _vnum(variant)
        if k is not None and k > 1:
            vec += [Platform(os_, "amd64", f"v{j}") for j in range(k - 1, 0, -1)]
        vec.append(Platform(os_, "386"))
    elif arch == "arm":
        k = _vnum(variant)
        if k is not None and k > 5:
            vec += [Platform(os_, "arm", f"v{j}") for j in range(k - 1, 4, -1)]
    elif arch == "arm64":
        v = variant or "v8"
        major_s, dot, minor_s = v.partition(".")
        major = _vnum(major_s)
        if major is not None and major >= 8:
            minor = int(minor_s) if len(v) == 4 and dot and minor_s.isascii() and minor_s.isdigit() else 0
            if major == 9:
                vec += [Platform(os_, "arm64", f"v9.{m}" if m else "v9") for m in range(minor - 1, -1, -1)]
                minor, major = minor + 5, 8
                vec.append(Platform(os_, "arm64", f"v8.{minor}"))
            vec += [Platform(os_, "arm64", f"v{major}.{m}" if m else f"v{major}") for m in range(minor - 1, -1, -1)]
        if v.startswith(("v8.", "v9.")):
            v = "v8"
        vec += platform_vector(Platform(os_, "arm", v))
    return vec


def _is_attestation(d: Descriptor) -> bool:
    if "vnd.docker.reference.type" in d.annotations:
        return True
    return d.platform is not None and d.platform.os == "unknown" and d.platform.architecture == "unknown"


def _features_ok(have: Platform, want: Platform) -> bool:
    return set(have.os_features) <= set(want.os_features)


def select_platform(index: Index, want: Platform) -> Descriptor:
    """The index entry to pull for ``want``, as containerd's ``platforms.Only(want)`` picks it.

    Candidates are image manifest entries; attestation entries (a ``vnd.docker.reference.type``
    annotation, or platform ``unknown/unknown``) and nested indexes are skipped. The first
    platform of ``platform_vector(want)`` that some entry matches wins (exact variant first:
    arm/v7 before arm/v6), ties going to the earlier entry. Matching compares normalised os,
    architecture and variant (``arm64`` == ``arm64/v8``); an entry's ``os.features`` must be a
    subset of ``want``'s; ``os.version`` is ignored (it only matters on Windows).
    An entry without a platform is chosen only when it is the index's sole image manifest: the
    caller must then check the config's platform. Raises ``NotFound`` naming ``want`` and what
    the index offers.
    """
    cands = [d for d in index.manifests if d.media_type in MANIFEST_MEDIA_TYPES and not _is_attestation(d)]
    for p in platform_vector(want):
        key = p.key()
        for d in cands:
            if d.platform is not None and d.platform.key() == key and _features_ok(d.platform, want):
                return d
    if len(cands) == 1 and cands[0].platform is None:
        return cands[0]
    offered = sorted({str(d.platform) for d in cands if d.platform is not None})
    unnamed = sum(1 for d in cands if d.platform is None)
    extra = f" (+{unnamed} without platform)" if unnamed else ""
    raise NotFound(
        f"no manifest for platform {want} in index {index.digest}; available: "
        f"{', '.join(offered) or 'none'}{extra}"
    )


# --------------------------------------------------------------------------- builders


def build_manifest(
    config: Descriptor,
    layers: Sequence[Descriptor],
    *,
    oci: bool = True,
    annotations: Mapping[str, str] | None = None,
) -> bytes:
    """Canonical manifest bytes for an image lamina makes (commit, archive load, push).

    OCI (default): config of any non-Docker type, OCI layer types, optional annotations.
    Docker schema 2 (``oci=False``): Docker config and layer types, no annotations. Key order
    is fixed (schemaVersion, mediaType, config, layers, annotations sorted), separators compact:
    the same inputs give the same digest every time. Raises ``InvalidInput`` on a type mix.
    """
    if not isinstance(config, Descriptor) or not all(isinstance(x, Descriptor) for x in layers):
        raise InvalidInput("build_manifest: config and layers must be Descriptors")
    if oci:
        if config.media_type.startswith("application/vnd.docker."):
            raise InvalidInput(f"OCI manifest cannot have a Docker config ({config.media_type})")
        bad = [x.media_type for x in layers if x.media_type not in _OCI_LAYERS]
    else:
        if config.media_type != MEDIA_DOCKER_CONFIG:
            raise InvalidInput(f"Docker manifest needs config type {MEDIA_DOCKER_CONFIG}, got {config.media_type}")
        if annotations:
            raise InvalidInput("Docker schema 2 manifests carry no annotations")
        bad = [x.media_type for x in layers if x.media_type not in _DOCKER_LAYERS]
    if bad:
        kind = "OCI" if oci else "Docker"
        raise InvalidInput(f"{kind} manifest cannot have layer media type {bad[0]}")
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST if oci else MEDIA_DOCKER_MANIFEST,
        "config": config.to_json(),
        "layers": [x.to_json() for x in layers],
    }
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    raw = canonical_json(doc)
    parse_manifest_or_index(raw)  # what lamina writes, lamina must read back
    return raw


def build_index(
    manifests: Sequence[Descriptor],
    *,
    oci: bool = True,
    annotations: Mapping[str, str] | None = None,
) -> bytes:
    """Canonical index (OCI) or manifest list (Docker) bytes, e.g. an OCI layout's
    ``index.json`` on ``save``. Same determinism rules as ``build_manifest``."""
    if not all(isinstance(x, Descriptor) for x in manifests):
        raise InvalidInput("build_index: manifests must be Descriptors")
    if not oci and annotations:
        raise InvalidInput("Docker manifest lists carry no annotations")
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX if oci else MEDIA_DOCKER_MANIFEST_LIST,
        "manifests": [x.to_json() for x in manifests],
    }
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    raw = canonical_json(doc)
    parse_manifest_or_index(raw)
    return raw


# Keys of a parent config that describe how the *parent* was built; a child must not inherit
# them (Docker's v1 "id"/"parent", the build container and its config, the builder's version).
_STALE_KEYS = ("id", "parent", "container", "container_config", "docker_version")
_SORTED_MAPS = ("Labels", "ExposedPorts", "Volumes")


def build_config(
    parent: ImageConfig | None,
    diff_id: DiffID | None,
    *,
    created: str | None = None,
    created_by: str = "",
    author: str = "",
    comment: str = "",
    config: Mapping[str, Any] | None = None,
    config_changes: Mapping[str, Any] | None = None,
    platform: Platform | None = None,
) -> bytes:
    """A child image config (``commit``): the parent's fields with one layer and one history
    entry added.

    - ``parent``: keep all its keys, in its order (unknown ones too), except those describing
      the parent's own build (``_STALE_KEYS``); ``None`` starts from scratch with ``platform``
      (default: ``Platform.host()``).
    - ``diff_id``: appended to ``rootfs.diff_ids``; ``None`` records an ``empty_layer`` entry.
    - ``created`` (RFC 3339, default now), ``created_by``, ``author``, ``comment``: set on the
      image and the new history entry; empty strings are omitted, and the parent's ``author``
      is not inherited.
    - ``config`` replaces the runtime config; ``config_changes`` is then merged into it key by
      key (``None`` deletes a key), like ``docker commit --change``. Labels, ExposedPorts and
      Volumes come out sorted by key, so the result does not depend on dict order.

    Output is canonical (``canonical_json``) and parsed back with ``parse_config``, so an
    ill-typed change raises ``InvalidInput`` here rather than producing a broken image.
    """
    when = created if created is not None else rfc3339_now()
    _check_rfc3339(when, "image config", "created")
    for name, v in (("created_by", created_by), ("author", author), ("comment", comment)):
        if not isinstance(v, str):
            raise InvalidInput(f"build_config: {name} must be a string")
    new_id = None if diff_id is None else DiffID(Digest(diff_id))
    if parent is not None:
        doc: dict[str, Any] = loads_strict(parent.raw, "image config", MAX_CONFIG_SIZE)
        for k in _STALE_KEYS:
            doc.pop(k, None)
    else:
        p = platform or Platform.host()
        doc = {"created": when}
        doc.update(p.to_json())
        doc.update({"config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []})
    doc["created"] = when
    if author:
        doc["author"] = author
    else:
        doc.pop("author", None)

    runtime = dict(config) if config is not None else dict(doc.get("config") or {})
    for k, v in (config_changes or {}).items():
        if v is None:
            runtime.pop(k, None)
        else:
            runtime[k] = v
    for k in _SORTED_MAPS:
        if isinstance(runtime.get(k), dict):
            runtime[k] = dict(sorted(runtime[k].items()))
    doc["config"] = runtime

    rootfs = dict(doc.get("rootfs") or {"type": "layers"})
    rootfs["diff_ids"] = list(rootfs.get("diff_ids") or []) + ([str(new_id)] if new_id else [])
    doc["rootfs"] = rootfs

    entry: dict[str, Any] = {"created": when}
    if created_by:
        entry["created_by"] = created_by
    if author:
        entry["author"] = author
    if comment:
        entry["comment"] = comment
    if new_id is None:
        entry["empty_layer"] = True
    doc["history"] = list(doc.get("history") or []) + [entry]

    raw = canonical_json(doc)
    parse_config(raw)
    return raw


__all__ = [
    "CONFIG_MEDIA_TYPES",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_ACCEPT",
    "MANIFEST_MEDIA_TYPES",
    "MAX_CONFIG_SIZE",
    "MAX_MANIFEST_SIZE",
    "MEDIA_DOCKER_CONFIG",
    "MEDIA_DOCKER_FOREIGN_LAYER",
    "MEDIA_DOCKER_FOREIGN_LAYER_GZIP",
    "MEDIA_DOCKER_LAYER",
    "MEDIA_DOCKER_LAYER_GZIP",
    "MEDIA_DOCKER_LAYER_ZSTD",
    "MEDIA_DOCKER_MANIFEST",
    "MEDIA_DOCKER_MANIFEST_LIST",
    "MEDIA_DOCKER_SCHEMA1_MANIFEST",
    "MEDIA_DOCKER_SCHEMA1_SIGNED",
    "MEDIA_OCI_CONFIG",
    "MEDIA_OCI_EMPTY",
    "MEDIA_OCI_INDEX",
    "MEDIA_OCI_LAYER",
    "MEDIA_OCI_LAYER_GZIP",
    "MEDIA_OCI_LAYER_ND",
    "MEDIA_OCI_LAYER_ND_GZIP",
    "MEDIA_OCI_LAYER_ND_ZSTD",
    "MEDIA_OCI_LAYER_ZSTD",
    "MEDIA_OCI_LAYOUT_HEADER",
    "MEDIA_OCI_MANIFEST",
    "SCHEMA1_MEDIA_TYPES",
    "Descriptor",
    "ImageConfig",
    "Index",
    "Manifest",
    "Platform",
    "build_config",
    "build_index",
    "build_manifest",
    "canonical_json",
    "check_manifest_config",
    "is_nondistributable",
    "layer_compression",
    "layer_media_type",
    "parse_config",
    "parse_manifest",
    "parse_manifest_or_index",
    "platform_vector",
    "rfc3339_now",
    "select_platform",
]
