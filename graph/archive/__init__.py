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
canonical OCI manifest built from the recorded layer blobs (``Store._manifest_for``); save never
changes the store. Several names may name one image (one ``manifest.json`` entry with several
RepoTags); a name that is an image ID (or a digest reference) saves the image untagged. A
multi-platform index an image was selected from is not written: only the selected platform's
blobs are stored.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Callable, Iterator

from graph.oci import formats
from graph.digest import ChainID, DiffID, Digest, ImageID, chain_id
from graph.errors import DigestMismatch, InvalidInput, LaminaError, NotFound, Unsupported
from graph.oci.formats import Descriptor, ImageConfig, Index, Manifest, Platform
from graph.oci.reference import Reference, parse_reference
from graph.unpack import decompressed
from graph.verify import CHUNK, HashingReader, VerifyingReader

if TYPE_CHECKING:
    from graph.references import RefRecord
    from graph.store import Store

__all__ = ["ANNOTATION_IMAGE_NAME", "ANNOTATION_REF_NAME", "LoadedImage", "load_archive", "save_archive"]

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
OCI_LAYOUT_VERSION = "1.0.0"

MAX_JSON = 16 << 20  # manifest.json, repositories, oci-layout: far above any real one
MAX_MEMBERS = 1_000_000  # an archive with more entries is an attack, not an image set
MAX_LINK_HOPS = 40
MAX_INDEX_DEPTH = 4  # nested indexes followed below a top-level entry

_HEX64 = r"[0-9a-f]{64}"
_BLOB_PATH_RE = re.compile(rf"blobs/sha256/({_HEX64})")
_LEGACY_CONFIG_RE = re.compile(rf"({_HEX64})\.json")

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)


@dataclass
class LoadedImage:
    """One image an archive held: its ID, the references now pointing at it (empty when the
    archive gave it no usable name), the digest of the manifest recorded for it, and anything
    a user should be told (a bare-tag name ignored, an artifact skipped)."""

    image_id: ImageID
    refs: list[Reference]
    manifest: Digest
    warnings: list[str] = field(default_factory=list)


# =============================================================================== path hygiene


def _clean_member(name: str, label: str) -> str:
    """An archive member name or a path from ``manifest.json``, normalised (``./`` and empty
    parts dropped). Absolute names and ``..`` parts are refused: such a name is an attack or a
    broken writer, and neither is loaded."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise InvalidInput(f"{label}: invalid path {name!r}")
    if name.startswith("/"):
        raise InvalidInput(f"{label}: absolute path {name!r} refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(f"{label}: path {name!r} escapes the archive")
    return "/".join(parts)


def _join_link(base: list[str], target: str, label: str) -> list[str]:
    """Parts of a link ``target`` seen from directory ``base``; ``..`` may climb but never above
    the archive's root."""
    if not target or target.startswith("/") or "\0" in target:
        raise InvalidInput(f"{label}: link to {target!r} refused (empty or absolute)")
    out = list(base)
    for p in target.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if not out:
                raise InvalidInput(f"{label}: link to {target!r} escapes the archive")
            out.pop()
        else:
            out.append(p)
    return out


# =============================================================================== streams


class _Slice(io.RawIOBase):
    """``size`` bytes of a file from ``offset``, by ``pread`` (no shared file position)."""

    def __init__(self, fd: int, offset: int, size: int, label: str) -> None:
        super().__init__()
        self._fd, self._pos, self._end, self._label = fd, offset, offset + size, label

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        want = min(len(mv), self._end - self._pos)
        if want <= 0:
            return 0
        n = os.preadv(self._fd, [mv[:want]], self._pos)
        if n == 0:
            raise InvalidInput(f"{self._label}: archive is truncated")
        self._pos += n
        return n


class _Tee(io.RawIOBase):
    """Bytes from ``raw`` handed on unchanged and copied into a content-store writer."""

    def __init__(self, raw: BinaryIO, sink: Any | None) -> None:
        super().__init__()
        self._raw, self._sink = raw, sink
        self._readinto = getattr(raw, "readinto", None)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        if self._readinto is not None:
            n = self._readinto(mv) or 0
        else:
            data = self._raw.read(len(mv)) or b""
            n = len(data)
            mv[:n] = data
        if n and self._sink is not None:
            try:
                self._sink.write(mv[:n])
            except OSError as e:  # disk full, I/O error: the store's trouble, not the archive's
                raise LaminaError(f"content store: cannot write blob: {e}") from e
        return n

    def drain(self) -> int:
        return _drain(self)


def _drain(stream: IO[bytes]) -> int:
    buf = bytearray(CHUNK)
    total = 0
    readinto = getattr(stream, "readinto", None)
    while True:
        if readinto is not None:
            n = readinto(buf)
        else:
            data = stream.read(CHUNK)
            n = len(data) if data else 0
        if not n:
            return total
        total += n


def _outer_errors() -> tuple[type[BaseException], ...]:
    """What decompressors raise for bad data (not OSError in general: a disk error is not a
    corrupt archive)."""
    import gzip
    import lzma

    import zstandard
    from isal import isal_zlib

    return (gzip.BadGzipFile, EOFError, zlib.error, isal_zlib.error, zstandard.ZstdError, lzma.LZMAError)


def _sniff(head: bytes) -> str:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "none"


def _strict_json(raw: bytes, what: str) -> Any:
    """Parse JSON refusing duplicate keys and NaN (two readers must not see two documents)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise InvalidInput(f"invalid JSON in {what}: duplicate key {k!r}")
            out[k] = v
        return out

    def constant(name: str) -> Any:
        raise InvalidInput(f"invalid JSON in {what}: {name} is not JSON")

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
    except UnicodeDecodeError as e:
        raise InvalidInput(f"invalid JSON in {what}: not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"invalid JSON in {what}: {e.msg} (line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise InvalidInput(f"invalid JSON in {what}: nested too deeply") from None


# =============================================================================== sources


class _Source:
    """Read access to an archive's members by cleaned name, links resolved inside it."""

    label: str

    # -- what a subclass provides ------------------------------------------------------------
    def _kind(self, name: str) -> tuple[str | None, str]:
        """("file" | "dir" | "symlink" | "hardlink" | None, link target) of one exact name."""
        raise NotImplementedError

    def _open_resolved(self, name: str) -> tuple[BinaryIO, int]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- shared ------------------------------------------------------------------------------
    def resolve(self, name: str, what: str) -> str:
        """The member a path names, after following links (within the archive only)."""
        parts = _clean_member(name, f"{self.label}: {what}").split("/")
        hops = 0
        i = 0
        while i < len(parts):
            prefix = "/".join(parts[: i + 1])
            kind, target = self._kind(prefix)
            if kind in ("symlink", "hardlink"):
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise InvalidInput(f"{self.label}: {what} {name}: too many levels of links")
                base = parts[:i] if kind == "symlink" else []
                parts = _join_link(base, target, f"{self.label}: {what} {name}") + parts[i + 1 :]
                i = 0
                continue
            if kind is None or (kind == "file" and i < len(parts) - 1):
                raise InvalidInput(f"{self.label}: {what} {name} is missing from the archive")
            i += 1
        if not parts:
            raise InvalidInput(f"{self.label}: {what} {name} is missing from the archive")
        resolved = "/".join(parts)
        if self._kind(resolved)[0] != "file":
            raise InvalidInput(f"{self.label}: {what} {name} is not a regular file")
        return resolved

    def has(self, name: str) -> bool:
        try:
            self.resolve(name, "member")
        except InvalidInput:
            return False
        return True

    def open(self, name: str, what: str) -> tuple[BinaryIO, int]:
        return self._open_resolved(self.resolve(name, what))

    def read_bytes(self, name: str, what: str, limit: int) -> bytes:
        f, size = self.open(name, what)
        with f:
            if size > limit:
                raise InvalidInput(f"{self.label}: {what} {name} is {size} bytes, over the {limit}-byte limit")
            chunks: list[bytes] = []
            got = 0
            while got <= size:  # one more byte than promised, to notice a file that grew
                chunk = f.read(size + 1 - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            data = b"".join(chunks)
        if len(data) != size:
            raise InvalidInput(f"{self.label}: {what} {name} changed while read")
        return data

    def head(self, name: str, what: str, n: int = 8) -> bytes:
        f, _ = self.open(name, what)
        with f:
            return f.read(n) or b""

    def read_blob(self, desc: Descriptor, what: str, limit: int) -> bytes:
        """A small blob (manifest, index, config) named by a descriptor, checked against it."""
        if desc.size > limit:
            raise InvalidInput(f"{self.label}: {what} {desc.digest} is {desc.size} bytes, over the {limit}-byte limit")
        name = f"blobs/sha256/{desc.digest.hex}"
        data = self.read_bytes(name, f"{what} blob", limit)
        actual = Digest.of(data)
        if len(data) != desc.size or actual != desc.digest:
            raise DigestMismatch(
                f"{self.label}: {what} blob {desc.digest}: got {actual} ({len(data)} bytes, expected {desc.size})"
            )
        return data


class _TarSource(_Source):
    """Members of an uncompressed tar file, indexed by one pass over the headers."""

    def __init__(self, f: BinaryIO, label: str) -> None:
        self.label = label
        self._f = f
        self._fd = f.fileno()
        self._files: dict[str, tuple[int, int]] = {}
        self._links: dict[str, tuple[str, str]] = {}
        self._dirs: set[str] = set()
        try:
            tf = tarfile.open(fileobj=f, mode="r:")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise InvalidInput(f"{label}: not a tar archive or OCI layout ({e})") from None
        count = 0
        try:
            while True:
                ti = tf.next()
                if ti is None:
                    break
                count += 1
                if count > MAX_MEMBERS:
                    raise InvalidInput(f"{label}: more than {MAX_MEMBERS} members")
                self._add(ti)
        except (tarfile.TarError, EOFError) as e:
            raise InvalidInput(f"{label}: corrupt or truncated tar: {e}") from None
        if not self._files and not self._dirs:
            raise InvalidInput(f"{label}: empty tar archive")

    def _add(self, ti: tarfile.TarInfo) -> None:
        name = _clean_member(ti.name, f"{self.label}: member")
        if not name:
            return  # the archive's root ("./")
        parent = name.rpartition("/")[0]
        while parent:
            self._dirs.add(parent)
            parent = parent.rpartition("/")[0]
        if ti.isdir():
            self._dirs.add(name)
            return
        if name in self._files or name in self._links:
            raise InvalidInput(f"{self.label}: two members named {name}")
        if ti.issparse():
            raise InvalidInput(f"{self.label}: sparse member {name} refused")
        if ti.isreg():
            self._files[name] = (ti.offset_data, ti.size)
        elif ti.issym():
            self._links[name] = ("symlink", ti.linkname)
        elif ti.islnk():
            self._links[name] = ("hardlink", ti.linkname)
        # devices, fifos: never part of an image archive; left out, so never found

    def _kind(self, name: str) -> tuple[str | None, str]:
        if name in self._files:
            return "file", ""
        link = self._links.get(name)
        if link is not None:
            return link
        if name in self._dirs:
            return "dir", ""
        return None, ""

    def _open_resolved(self, name: str) -> tuple[BinaryIO, int]:
        offset, size = self._files[name]
        return _Slice(self._fd, offset, size, f"{self.label}: {name}"), size  # type: ignore[return-value]

    def close(self) -> None:
        self._f.close()


class _DirSource(_Source):
    """Files of a directory (an OCI layout, or an unpacked ``docker save``). Symlinks inside
    it are followed by ``resolve`` within the directory; opening walks ``O_NOFOLLOW`` dir fds,
    so nothing outside can be reached even if the tree changes meanwhile."""

    def __init__(self, root: Path, label: str) -> None:
        self.label = label
        self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _kind(self, name: str) -> tuple[str | None, str]:
        try:
            st = os.lstat(name, dir_fd=self._root_fd)
        except (FileNotFoundError, NotADirectoryError):
            return None, ""
        if stat.S_ISLNK(st.st_mode):
            return "symlink", os.readlink(name, dir_fd=self._root_fd)
        if stat.S_ISDIR(st.st_mode):
            return "dir", ""
        if stat.S_ISREG(st.st_mode):
            return "file", ""
        return "other", ""

    def _open_resolved(self, name: str) -> tuple[BinaryIO, int]:
        parts = name.split("/")
        fd = os.dup(self._root_fd)
        try:
            for p in parts[:-1]:
                nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = nfd
            ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise InvalidInput(f"{self.label}: {name} changed into a link while loading") from None
            raise
        finally:
            os.close(fd)
        st = os.fstat(ffd)
        if not stat.S_ISREG(st.st_mode):
            os.close(ffd)
            raise InvalidInput(f"{self.label}: {name} is not a regular file")
        return os.fdopen(ffd, "rb", buffering=0), st.st_size  # type: ignore[return-value]

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1


def _open_source(path: Path, scratch: Path) -> _Source:
    """Open ``path`` as an archive: a directory, a tar, or a compressed tar (decompressed into
    an unnamed temporary file under ``scratch``)."""
    label = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"no such file or directory: {path}") from None
    if stat.S_ISDIR(st.st_mode):
        return _DirSource(path, label)
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"{label}: not a tar archive or OCI layout directory")
    f = open(path, "rb")
    try:
        comp = _sniff(f.read(8))
        f.seek(0)
        if comp != "none":
            tmp = tempfile.TemporaryFile(dir=scratch)
            try:
                _decompress_outer(f, tmp, comp, label)
                tmp.seek(0)
            except BaseException:
                tmp.close()
                raise
            f.close()
            f = tmp  # type: ignore[assignment]
        return _TarSource(f, label)
    except BaseException:
        f.close()
        raise


def _decompress_outer(src: BinaryIO, dst: IO[bytes], comp: str, label: str) -> None:
    if comp == "gzip":
        from isal import igzip

        reader: Any = igzip.IGzipFile(fileobj=src, mode="rb")
    elif comp == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True, closefd=False)
    elif comp == "xz":
        import lzma

        reader = lzma.LZMAFile(src)
    else:
        import bz2

        reader = bz2.BZ2File(src)
    try:
        shutil.copyfileobj(reader, dst, CHUNK)
    except LaminaError:
        raise
    except _outer_errors() as e:
        raise InvalidInput(f"{label}: corrupt {comp} compression: {e}") from None


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
    layout = _strict_json(src.read_bytes("oci-layout", "oci-layout", MAX_JSON), "oci-layout")
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
    doc = _strict_json(src.read_bytes("manifest.json", "manifest.json", MAX_JSON), "manifest.json")
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


# =============================================================================== load


@dataclass
class _Undo:
    """What a load changed, so a failure can take it back."""

    layers: list[ChainID] = field(default_factory=list)
    images: list[ImageID] = field(default_factory=list)
    manifests: list[Digest] = field(default_factory=list)
    layer_blobs: list[tuple[DiffID, Digest]] = field(default_factory=list)
    refs: list[tuple[Reference, "RefRecord | None"]] = field(default_factory=list)


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
    undo = _Undo()
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
        _rollback(store, undo)
        raise
    finally:
        src.close()


def _load_layers(store: "Store", src: _Source, plan: _Plan, lease: str, undo: _Undo) -> None:
    parent: ChainID | None = None
    for i, (ls, diff_id) in enumerate(zip(plan.layers, plan.config.diff_ids)):
        chain = chain_id(parent, diff_id)
        what = f"{src.label}: image {plan.config.id.hex[:12]} layer {i} ({ls.member})"
        if store.layers.exists(chain):
            store.lease_layer(lease, chain)
            if ls.digest is None or not _blob_recorded(store, diff_id, ls.digest):
                ls.digest = _ingest_layer(store, src, ls, diff_id, None, lease, what, undo, apply=False)
            else:
                store.lease_blob(lease, ls.digest)
        else:
            ls.digest = _ingest_layer(store, src, ls, diff_id, parent, lease, what, undo, apply=True)
        parent = chain


def _blob_recorded(store: "Store", diff_id: DiffID, blob: Digest) -> bool:
    row = store.db.one("SELECT 1 FROM layer_blobs WHERE diff_id = ? AND blob = ?", (diff_id, blob))
    return row is not None and store.content.exists(blob)


def _ingest_layer(
    store: "Store",
    src: _Source,
    ls: _LayerSrc,
    diff_id: DiffID,
    parent: ChainID | None,
    lease: str,
    what: str,
    undo: _Undo,
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
                tee = _Tee(VerifyingReader(raw, ls.digest, size), None)  # type: ignore[arg-type]
            else:  # the writer checks size and digest at commit
                tee = _Tee(raw, writer)
            plain = decompressed(tee, ls.compression, what)  # type: ignore[arg-type]
            if apply:
                layer = store.layers.register(plain, parent, expected_diff_id=diff_id, lease=lease)
                undo.layers.append(layer.chain_id)
                extra = _drain(plain)  # the applier reads to EOF; anything left escaped the DiffID
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


def _record(store: "Store", plan: _Plan, lease: str, undo: _Undo) -> LoadedImage:
    """Image row, manifest (and index) blobs and rows for one plan; layers are in place."""
    cfg = plan.config
    if not store.images.exists(cfg.id):
        undo.images.append(cfg.id)
    img = store.images.create(cfg.raw, lease=lease)
    if plan.manifest_raw is None:
        layers = []
        for ls in plan.layers:
            assert ls.digest is not None
            layers.append(Descriptor(ls.media_type, ls.digest, store.content.size(ls.digest)))
        config = Descriptor(formats.MEDIA_OCI_CONFIG, cfg.id, len(cfg.raw))
        plan.manifest_raw = formats.build_manifest(config, layers, oci=True)
    for blob in plan.index_blobs:
        store.lease_blob(lease, store.content.put_bytes(blob))
    mdigest = store.content.put_bytes(plan.manifest_raw)
    store.lease_blob(lease, mdigest)
    if store.db.one("SELECT 1 FROM manifests WHERE digest = ?", (mdigest,)) is None:
        undo.manifests.append(mdigest)
    store.images.add_manifest(mdigest, plan.manifest_media_type, img.id, plan.parent_index)
    return LoadedImage(image_id=img.id, refs=[], manifest=mdigest)


def _set_refs(store: "Store", loaded: LoadedImage, plan: _Plan, undo: _Undo) -> None:
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


def _rollback(store: "Store", undo: _Undo) -> None:
    """Take back what a failed load did (best effort: every step runs; the original error is
    what the caller sees)."""
    steps: list[Callable[[], object]] = []
    for ref, before in reversed(undo.refs):
        if before is None:
            steps.append(lambda ref=ref: store.refs.remove(ref))
        else:
            steps.append(lambda ref=ref, b=before: store.refs.add(ref, b.image_id, b.manifest))
    for digest in undo.manifests:
        steps.append(lambda d=digest: _delete_manifest_row(store, d))
    for image_id in undo.images:
        steps.append(lambda i=image_id: _delete_new_image(store, i))
    for diff_id, blob in undo.layer_blobs:
        steps.append(lambda d=diff_id, b=blob: _delete_layer_blob_row(store, d, b))
    for chain in reversed(undo.layers):
        steps.append(lambda c=chain: store.layers.release(c))
    steps.append(store.gc_blobs)
    for step in steps:
        with contextlib.suppress(Exception):
            step()


def _delete_manifest_row(store: "Store", digest: Digest) -> None:
    with store.db.transaction() as c:
        c.execute("DELETE FROM manifests WHERE digest = ?", (digest,))


def _delete_layer_blob_row(store: "Store", diff_id: DiffID, blob: Digest) -> None:
    with store.db.transaction() as c:
        c.execute("DELETE FROM layer_blobs WHERE diff_id = ? AND blob = ?", (diff_id, blob))


def _delete_new_image(store: "Store", image_id: ImageID) -> None:
    if store.images.exists(image_id) and not store.refs.list(image_id) and not store.containers.using_image(image_id):
        store.images.delete(image_id)


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
    raw = store._manifest_for(store.images.get(image_id))
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
            _fsync_dir(d)
        if target.exists():
            target.rmdir()
        os.rename(tmp, target)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as f:
            _write_tar(store, entries, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
