"""Tests of the two tar parsers behind the applier, ``drivers/tar/libarchive.py`` and
``drivers/tar/tarfile_reader.py``: for the same tar both give the same ``Header``s and the same
data (names as raw bytes, link targets, modes incl. setuid/sticky, ids, ns times, device
numbers, xattrs from both PAX spellings, GNU and PAX long names, sparse files in every GNU tar
format), and both refuse a malformed tar the same way. Each case also states the expected
headers, so two parsers that agree on a wrong answer still fail. No root needed: nothing is
applied, the data goes into a scratch file."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Callable

import pytest

from drivers.errors import InvalidInput
from drivers.tar import libarchive
from drivers.tar.entry import HARDLINK, Header, Reader
from drivers.tar.tarfile_reader import TarfileReader
from tests.drivers.hostile_tars import (MTIME, LayerTar, end_of_archive, pad, pax_header,
                                        ustar_header)

NS = 1_000_000_000


def _libarchive(stream: io.BufferedIOBase) -> Reader:
    lib = libarchive.load()
    if lib is None:
        pytest.skip("libarchive not loadable")
    return libarchive.LibarchiveReader(lib, stream)


READERS: dict[str, Callable[[io.BufferedIOBase], Reader]] = {"libarchive": _libarchive,
                                                             "tarfile": TarfileReader}


def read(make: Callable[[io.BufferedIOBase], Reader], data: bytes,
         scratch: Path) -> list[tuple[Header, bytes | None]]:
    """Every header of ``data`` with its file's content (as ``write_data`` lays it out, holes
    read as zeros), read to the end as the applier does; the stream must be drained."""
    stream = io.BytesIO(data)
    reader = make(stream)
    out: list[tuple[Header, bytes | None]] = []
    try:
        for h in reader:
            content = None
            if h.kind == stat.S_IFREG:
                fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    end = reader.write_data(fd)
                    assert end <= h.size
                    os.ftruncate(fd, h.size)
                    content = os.pread(fd, h.size, 0) if h.size else b""
                finally:
                    os.close(fd)
            out.append((h, content))
    finally:
        reader.close()
    reader.drain()
    assert stream.read() == b"", "the stream was not read to its end"
    return out


def _same(h: Header) -> Header:
    """``h`` without what the applier ignores: a directory's trailing "/" (libarchive keeps
    it, tarfile drops it; the applier cleans names) and the order of xattrs."""
    name = h.name.rstrip(b"/") if h.kind == stat.S_IFDIR else h.name
    return h._replace(name=name, xattrs=sorted(h.xattrs))


def both(data: bytes, tmp_path: Path) -> list[tuple[Header, bytes | None]]:
    """The headers and data of ``data``, asserted equal between the two readers."""
    got = {name: [(_same(h), d) for h, d in read(make, data, tmp_path / name)]
           for name, make in READERS.items()}
    assert got["libarchive"] == got["tarfile"]
    return got["tarfile"]


def hdr(name: bytes, kind: int, *, size: int = 0, mode: int = 0o644, uid: int = 0, gid: int = 0,
        mtime_ns: int = MTIME * NS, atime_ns: int | None = None, link: bytes | None = None,
        dev: tuple[int, int] = (0, 0), xattrs: list[tuple[bytes, bytes]] | None = None) -> Header:
    return Header(name, kind, size, mode, uid, gid, mtime_ns, atime_ns, link, dev[0], dev[1],
                  xattrs or [])


def test_every_entry_type_with_modes_ids_and_times(tmp_path: Path) -> None:
    t = (LayerTar().dir("d", mode=0o1777, uid=1000, gid=1001)
         .file("d/suid", b"x" * 70000, mode=0o4755, uid=7, gid=8,
               pax={"mtime": "1500000000.000000001", "atime": "1500000001.5"})
         .file("empty", b"", mode=0o2600)
         .symlink("s", "../d/suid").hardlink("h", "d/suid").fifo("p", mode=0o640)
         .chardev("null", 1, 3).blockdev("loop0", 7, 0, mode=0o660))
    got = both(t.bytes(), tmp_path)
    assert [h for h, _ in got] == [
        hdr(b"d", stat.S_IFDIR, mode=0o1777, uid=1000, gid=1001),
        hdr(b"d/suid", stat.S_IFREG, size=70000, mode=0o4755, uid=7, gid=8,
            mtime_ns=1500000000 * NS + 1, atime_ns=1500000001 * NS + NS // 2),
        hdr(b"empty", stat.S_IFREG, mode=0o2600),
        hdr(b"s", stat.S_IFLNK, mode=0o777, link=b"../d/suid"),
        hdr(b"h", HARDLINK, link=b"d/suid"),
        hdr(b"p", stat.S_IFIFO, mode=0o640),
        hdr(b"null", stat.S_IFCHR, mode=0o600, dev=(1, 3)),
        hdr(b"loop0", stat.S_IFBLK, mode=0o660, dev=(7, 0)),
    ]
    assert got[1][1] == b"x" * 70000 and got[2][1] == b""


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_names_are_the_header_bytes(tmp_path: Path, fmt: int) -> None:
    """Non-UTF-8 names and links come through unchanged, and a decomposed (NFD) UTF-8 name is
    not normalised to NFC (libarchive would: two distinct names would become one)."""
    nfd, nfc = "cafe\u0301".encode(), "caf\u00e9".encode()
    latin1 = b"caf\xe9"
    t = LayerTar(format=fmt).file(nfd, b"1").file(nfc, b"2").symlink(b"s", nfd)
    if fmt == tarfile.GNU_FORMAT:  # PAX names are UTF-8 by definition
        t.file(latin1, b"3").symlink(b"s2", b"t\xff")
    got = both(t.bytes(), tmp_path)
    names = [(h.name, h.link) for h, _ in got]
    assert names[:3] == [(nfd, None), (nfc, None), (b"s", nfd)]
    if fmt == tarfile.GNU_FORMAT:
        assert names[3:] == [(latin1, None), (b"s2", b"t\xff")]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_long_names_and_link_targets(tmp_path: Path, fmt: int) -> None:
    deep = "/".join(["directory-%02d" % i for i in range(20)])  # 259 bytes: over ustar's 255
    assert len(deep) > 255
    target = "t" * 300
    t = (LayerTar(format=fmt).dir(deep).file(deep + "/f", b"data").symlink(deep + "/s", target)
         .hardlink("h" * 150, deep + "/f"))
    got = both(t.bytes(), tmp_path)
    assert [(h.name, h.kind, h.link) for h, _ in got] == [
        (deep.encode(), stat.S_IFDIR, None),
        (deep.encode() + b"/f", stat.S_IFREG, None),
        (deep.encode() + b"/s", stat.S_IFLNK, target.encode()),
        (b"h" * 150, HARDLINK, deep.encode() + b"/f"),
    ]


def test_non_ascii_long_name_in_a_gnu_record(tmp_path: Path) -> None:
    """A GNU ``L`` name that is not ASCII: libarchive's name is replaced by the raw record."""
    name = ("d\u00e9j\u00e0-" * 30).encode() + b"\xff"
    got = both(LayerTar(format=tarfile.GNU_FORMAT).file(name, b"x").bytes(), tmp_path)
    assert [h.name for h, _ in got] == [name]


def test_xattrs_from_both_pax_spellings(tmp_path: Path) -> None:
    """GNU tar/star's ``SCHILY.xattr.<name>=<raw bytes>`` and bsdtar's
    ``LIBARCHIVE.xattr.<url-quoted name>=<base64>`` give the same (name, value) pairs."""
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\0" * 12
    schily = (LayerTar().file("ping", b"p", mode=0o755,
                              xattrs={"security.capability": cap, "user.k": b"v\xff z"})
              .dir("d", xattrs={"user.dir": b"1"}).bytes())
    got = both(schily, tmp_path)
    assert [h.xattrs for h, _ in got] == [
        sorted([(b"security.capability", cap), (b"user.k", b"v\xff z")]), [(b"user.dir", b"1")]]
    bsd = (pax_header({b"LIBARCHIVE.xattr.user.a%20b": b"aGVsbG8"})  # base64 "hello", unpadded
           + ustar_header(b"f", size=4) + pad(b"data") + end_of_archive())
    got = both(bsd, tmp_path)
    assert [(h.name, h.xattrs, data) for h, data in got] == [(b"f", [(b"user.a b", b"hello")],
                                                              b"data")]


@pytest.mark.parametrize("fmt", [["--format=gnu"]] + [["--format=pax", f"--sparse-version={v}"]
                                                      for v in ("0.0", "0.1", "1.0")],
                         ids=["gnu", "pax0.0", "pax0.1", "pax1.0"])
def test_sparse_files(tmp_path: Path, fmt: list[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size = 8 << 20
    with open(src / "sp", "wb") as f:  # data, hole, data, hole at the end
        f.write(b"A" * 5000)
        f.seek(3 << 20)
        f.write(b"B" * 70000)
        f.truncate(size)
    (src / "dense").write_bytes(os.urandom(10000))
    tar = subprocess.run(["tar", "-c", "--sparse", *fmt, "--owner=0", "--group=0", "-f", "-",
                          "-C", str(src), "sp", "dense"], check=True, capture_output=True).stdout
    got = both(tar, tmp_path)
    assert [(h.name, h.kind, h.size) for h, _ in got] == [(b"sp", stat.S_IFREG, size),
                                                          (b"dense", stat.S_IFREG, 10000)]
    assert got[0][1] == (src / "sp").read_bytes()
    assert got[1][1] == (src / "dense").read_bytes()


def test_empty_stream_and_empty_archive(tmp_path: Path) -> None:
    assert both(b"", tmp_path) == []
    assert both(end_of_archive(), tmp_path) == []


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("damage", ["checksum", "truncated", "garbage"])
def test_malformed_tar_refused(tmp_path: Path, reader: str, damage: str) -> None:
    good = ustar_header(b"a", size=3) + pad(b"abc")
    if damage == "checksum":
        data = good + ustar_header(b"b", checksum=1) + end_of_archive()
    elif damage == "truncated":
        data = ustar_header(b"a", size=5000) + b"x" * 100
    else:
        data = b"this is not a tar at all" * 40
    with pytest.raises(InvalidInput, match="^malformed layer tar: "):
        read(READERS[reader], data, tmp_path / "scratch")
