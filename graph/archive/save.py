"""``save_archive``: the named images written as a ``docker save`` tar or an OCI layout
(directory or tar), byte-identical for the same store and names."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Iterator

from drivers.sys.durable import atomic_file, fsync_dir
from graph.oci import formats
from graph.digest import Digest, ImageID
from graph.errors import DigestMismatch, InvalidInput, NotFound
from graph.oci.formats import Descriptor, Manifest
from graph.oci.reference import Reference, parse_reference
from graph.verify import CHUNK, VerifyingReader
from graph.archive.plan import ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, OCI_LAYOUT_VERSION

if TYPE_CHECKING:
    from graph.store import Store

# =============================================================================== save


@dataclass
class _SaveImage:
    image_id: ImageID
    manifest_raw: bytes
    manifest_media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    refs: list[Reference] = field(default_factory=list)

    @property
    def manifest_digest(self) -> Digest:
        return Digest.of(self.manifest_raw)


def _pick_manifest(store: "Store", image_id: ImageID, preferred: Digest | None) -> tuple[bytes, Manifest]:
    """The manifest to write for an image: the preferred (the reference's), else the first
    recorded, whose blobs are all stored; else the canonical one built from layer blobs."""
    candidates = ([preferred] if preferred else []) + [m.digest for m in store.images.manifests(image_id)]
    for d in candidates:
        if not store.content.exists(d):
            continue
        try:
            raw = store.content.read_bytes(d, formats.MAX_MANIFEST_SIZE)
            m = formats.parse_manifest(raw)
        except InvalidInput:
            continue  # an index, or not readable as a manifest
        if m.config.digest == image_id and all(store.content.exists(x.digest) for x in m.layers):
            return raw, m
    raw = store.images.build_manifest(store.images.get(image_id))
    return raw, formats.parse_manifest(raw)


def _resolve_for_save(store: "Store", names: list[str]) -> list[_SaveImage]:
    out: dict[ImageID, _SaveImage] = {}
    for name in names:
        img = store.resolve_image(name)
        ref: Reference | None = None
        preferred: Digest | None = None
        with contextlib.suppress(InvalidInput, NotFound):
            candidate = parse_reference(name)
            if candidate.digest is not None:
                preferred = candidate.digest  # ``repo@sha256:…`` names the manifest to write
            else:
                rec = store.refs.get(candidate)
                if rec.image_id == img.id:
                    ref, preferred = candidate, rec.manifest
        s = out.get(img.id)
        if s is None:
            if not store.content.exists(img.id):
                raise NotFound(f"image {img.id}: config blob missing; cannot save")
            raw, m = _pick_manifest(store, img.id, preferred)
            s = out[img.id] = _SaveImage(img.id, raw, m.media_type, m.config, m.layers)
        if ref is not None and ref not in s.refs:
            s.refs.append(ref)
    return list(out.values())


def _documents(images: list[_SaveImage], format: str) -> dict[str, bytes]:
    """The small files of the archive: oci-layout, index.json, and for docker format
    manifest.json and repositories."""
    docs: dict[str, bytes] = {}
    docs["oci-layout"] = formats.canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION})
    entries: list[Descriptor] = []
    for s in images:
        base = dict(media_type=s.manifest_media_type, digest=s.manifest_digest, size=len(s.manifest_raw))
        if not s.refs:
            entries.append(Descriptor(**base))  # type: ignore[arg-type]
        for r in s.refs:
            tag_name = str(r) if format == "oci" else (r.tag or "")
            ann = {ANNOTATION_IMAGE_NAME: str(r), ANNOTATION_REF_NAME: tag_name}
            entries.append(Descriptor(**base, annotations=ann))  # type: ignore[arg-type]
    docs["index.json"] = formats.build_index(entries, oci=True)
    if format == "docker":
        manifest_json = []
        repositories: dict[str, dict[str, str]] = {}
        for s in images:
            manifest_json.append(
                {
                    "Config": f"blobs/sha256/{s.config.digest.hex}",
                    "RepoTags": [r.familiar() for r in s.refs] or None,
                    "Layers": [f"blobs/sha256/{x.digest.hex}" for x in s.layers],
                }
            )
            top = (s.layers[-1].digest if s.layers else s.config.digest).hex
            for r in s.refs:
                repositories.setdefault(r.familiar_name(), {})[r.tag or "latest"] = top
        docs["manifest.json"] = formats.canonical_json(manifest_json)
        if repositories:
            docs["repositories"] = formats.canonical_json(
                {k: dict(sorted(v.items())) for k, v in sorted(repositories.items())}
            )
    return docs


@dataclass
class _Entry:
    name: str
    size: int
    data: bytes | None = None  # small documents and built manifests
    blob: Digest | None = None  # else: a content-store blob, verified while copied


def _entries(store: "Store", images: list[_SaveImage], format: str) -> list[_Entry]:
    files: dict[str, _Entry] = {}
    for s in images:
        mname = f"blobs/sha256/{s.manifest_digest.hex}"
        files[mname] = _Entry(mname, len(s.manifest_raw), data=s.manifest_raw)
        for d in (s.config, *s.layers):
            name = f"blobs/sha256/{d.digest.hex}"
            if name not in files:
                size = store.content.size(d.digest)
                if size != d.size:
                    raise DigestMismatch(f"blob {d.digest}: stored {size} bytes, manifest says {d.size}")
                files[name] = _Entry(name, size, blob=d.digest)
    for name, data in _documents(images, format).items():
        files[name] = _Entry(name, len(data), data=data)
    return [files[k] for k in sorted(files)]


@contextlib.contextmanager
def _entry_stream(store: "Store", e: _Entry) -> Iterator[BinaryIO]:
    if e.data is not None:
        yield io.BytesIO(e.data)
        return
    assert e.blob is not None
    with store.content.open(e.blob) as f:
        v = VerifyingReader(f, e.blob, e.size)
        yield v  # type: ignore[misc]
        v.drain()  # the verdict: the stored bytes are what the archive claims


class _Counting:
    """A write-only file object that knows its position (``tarfile`` asks ``tell()``)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f, self._n = f, 0

    def write(self, b: Any) -> int:
        self._f.write(b)
        n = len(memoryview(b).cast("B"))
        self._n += n
        return n

    def tell(self) -> int:
        return self._n


def _write_tar(store: "Store", entries: list[_Entry], out: IO[bytes]) -> None:
    tf = tarfile.TarFile(
        fileobj=_Counting(out), mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK  # type: ignore[arg-type]
    )
    try:
        for d in ("blobs", "blobs/sha256"):
            tf.addfile(_tarinfo(d, 0, tarfile.DIRTYPE, 0o755))
        for e in entries:
            with _entry_stream(store, e) as stream:
                tf.addfile(_tarinfo(e.name, e.size, tarfile.REGTYPE, 0o644), stream)
    except BaseException:
        tf.closed = True  # no end-of-archive blocks: a stream cut short must look cut short
        raise
    tf.close()


def _tarinfo(name: str, size: int, type_: bytes, mode: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.type, ti.mode = size, type_, mode
    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
    return ti


def _write_dir(store: "Store", entries: list[_Entry], target: Path) -> None:
    """Write the layout beside ``target`` and rename it into place (an existing empty
    directory is replaced; a non-empty one is refused)."""
    if target.exists():
        if not target.is_dir() or any(target.iterdir()):
            raise InvalidInput(f"save: {target} exists and is not an empty directory")
    parent = target.parent
    if not parent.is_dir():
        raise NotFound(f"save: no such directory: {parent}")
    tmp = parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    os.mkdir(tmp, 0o755)
    try:
        os.chmod(tmp, 0o755)
        os.makedirs(tmp / "blobs" / "sha256", 0o755)
        for d in (tmp / "blobs", tmp / "blobs" / "sha256"):
            os.chmod(d, 0o755)
        for e in entries:
            fd = os.open(tmp / e.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "wb") as f, _entry_stream(store, e) as stream:
                os.fchmod(fd, 0o644)
                shutil.copyfileobj(stream, f, CHUNK)
                f.flush()
                os.fsync(fd)
        for d in (tmp / "blobs" / "sha256", tmp / "blobs", tmp):
            fsync_dir(d)
        if target.exists():
            target.rmdir()
        os.rename(tmp, target)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_archive(
    store: "Store", names: list[str], out: str | os.PathLike[str] | BinaryIO, *, format: str = "docker"
) -> None:
    """Write the named images as one archive (see the module docstring).

    Requires: every name resolves (reference, image ID or short ID); ``out`` is a writable
    binary stream, a file path (its directory exists), or a directory path (existing and empty,
    or ending in ``/`` and not yet there).
    Effect: the archive is written; the store is not changed. A path is written atomically.
    Raises: InvalidInput (no names, unknown format, a non-empty output directory), NotFound (an
    image, or a blob one needs), DigestMismatch/Corrupt (a stored blob no longer matches).
    Repeat: the same names over the same store give byte-identical output.
    """
    if format not in ("docker", "oci"):
        raise InvalidInput(f"save: unknown format {format!r} (docker or oci)")
    if not names:
        raise InvalidInput("save: no images named")
    entries = _entries(store, _resolve_for_save(store, list(names)), format)
    if not isinstance(out, (str, os.PathLike)):
        _write_tar(store, entries, out)  # type: ignore[arg-type]
        return
    text = os.fspath(out)
    target = Path(text)
    if text.endswith("/") or target.is_dir():
        _write_dir(store, entries, target)
        return
    if not target.parent.is_dir():
        raise NotFound(f"save: no such directory: {target.parent}")
    with atomic_file(target, 0o644) as f:
        _write_tar(store, entries, f)  # type: ignore[arg-type]
