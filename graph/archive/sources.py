"""Where an archive's members come from: a tar (decompressed first if the whole file is
compressed) or a directory (an OCI layout), behind one ``_Source`` with path hygiene (no member
leaves the archive, links followed within it) and bounded reads."""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import IO, Any, BinaryIO

from graph.digest import Digest
from graph.errors import DigestMismatch, InvalidInput, LaminaError, NotFound
from graph.oci.formats import Descriptor
from graph.verify import CHUNK


MAX_JSON = 16 << 20  # manifest.json, repositories, oci-layout: far above any real one
MAX_MEMBERS = 1_000_000  # an archive with more entries is an attack, not an image set
MAX_LINK_HOPS = 40
_HEX64 = r"[0-9a-f]{64}"
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)


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
