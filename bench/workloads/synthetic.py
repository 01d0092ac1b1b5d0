"""Synthetic layers, generated deterministically from a seed: the same seed gives the same tars
(and so the same DiffIDs, digests and ChainIDs) on every machine.

- ``small_files_layer``: ``count`` files of 1-16 KiB in a two-level tree (100 files a directory).
- ``large_files_layer``: three files of ``total`` bytes split 1/2, 1/4, 1/4.
- ``deep_layer(i)``: layer 0 is a base of 500 files of 1-8 KiB in 10 directories; layer i > 0
  rewrites two base files, adds ``layers/<i>.txt`` and deletes the previous layer's file with a
  whiteout, so every layer changes a few files and the merged tree stays 501 files however deep.

File contents are half pseudo-random, half repeated text, so gzip gets about 2:1 as on real
images (all-random data would make decompression a memcpy, all-zero data a no-op).
"""

from __future__ import annotations

import io
import os
import random
import tarfile
from pathlib import Path

MTIME = 1_700_000_000
BASE_FILES = 500
TEXT = (b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
        b"incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud ")


def content(rng: random.Random, size: int) -> bytes:
    """``size`` bytes: a random half and a text half (about 2:1 under gzip)."""
    half = size // 2
    text = (TEXT * (size // len(TEXT) + 1))[: size - half]
    return rng.randbytes(half) + text


class _StreamContent(io.RawIOBase):
    """A file's content produced in 1 MiB blocks (random half + text half each), never whole in
    memory: the large-files layer has files of hundreds of MiB."""

    BLOCK = 1 << 20

    def __init__(self, seed: str, size: int) -> None:
        self.rng = random.Random(seed)
        self.left = size
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if not self.pending:
            if self.left <= 0:
                return 0
            n = min(self.BLOCK, self.left)
            self.pending = content(self.rng, n)
            self.left -= n
        k = min(len(b), len(self.pending))
        b[:k] = self.pending[:k]
        self.pending = self.pending[k:]
        return k


def _dir(tf: tarfile.TarFile, name: str) -> None:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, MTIME
    tf.addfile(ti)


def _file(tf: tarfile.TarFile, name: str, data: bytes | None = None, *,
          stream: io.RawIOBase | None = None, size: int = 0, mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.mode, ti.mtime = mode, MTIME
    if stream is not None:
        ti.size = size
        tf.addfile(ti, io.BufferedReader(stream, 1 << 20))
    else:
        assert data is not None
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))


def _open(path: Path) -> tarfile.TarFile:
    return tarfile.open(path, "w", format=tarfile.PAX_FORMAT)


def _atomic(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def small_files_layer(path: Path, seed: int, count: int) -> None:
    tmp = _atomic(path)
    rng = random.Random(f"{seed}:small-files:{count}")
    with _open(tmp) as tf:
        _dir(tf, "data")
        per_dir, per_top = 100, 10
        for i in range(count):
            top, sub = divmod(i // per_dir, per_top)
            if i % (per_dir * per_top) == 0:
                _dir(tf, f"data/d{top:03d}")
            if i % per_dir == 0:
                _dir(tf, f"data/d{top:03d}/e{sub:02d}")
            _file(tf, f"data/d{top:03d}/e{sub:02d}/f{i:06d}.bin", content(rng, rng.randint(1024, 16384)))
    os.replace(tmp, path)


LARGE_SPLIT = (2, 1, 1)  # parts of the total, in quarters


def large_files_layer(path: Path, seed: int, total: int) -> None:
    tmp = _atomic(path)
    quarter = total // 4
    with _open(tmp) as tf:
        _dir(tf, "blobs")
        for i, parts in enumerate(LARGE_SPLIT):
            size = quarter * parts
            _file(tf, f"blobs/large-{i}.dat", stream=_StreamContent(f"{seed}:large:{total}:{i}", size),
                  size=size)
    os.replace(tmp, path)


def deep_layer(path: Path, seed: int, i: int) -> None:
    tmp = _atomic(path)
    with _open(tmp) as tf:
        if i == 0:
            rng = random.Random(f"{seed}:deep:base")
            _dir(tf, "base")
            for d in range(10):
                _dir(tf, f"base/d{d}")
            for n in range(BASE_FILES):
                _file(tf, f"base/d{n % 10}/f{n:04d}.txt", content(rng, rng.randint(1024, 8192)))
            _dir(tf, "layers")
            _file(tf, "layers/0.txt", b"layer 0\n")
        else:
            rng = random.Random(f"{seed}:deep:{i}")
            _dir(tf, "base")  # parents are in the tar, as in Docker's diffs
            changed = [(2 * i) % BASE_FILES, (2 * i + 1) % BASE_FILES]
            for d in sorted({n % 10 for n in changed}):
                _dir(tf, f"base/d{d}")
            for n in changed:
                _file(tf, f"base/d{n % 10}/f{n:04d}.txt", content(rng, rng.randint(1024, 8192)))
            _dir(tf, "layers")
            _file(tf, f"layers/{i}.txt", f"layer {i}\n".encode())
            wh = tarfile.TarInfo(f"layers/.wh.{i - 1}.txt")
            wh.mode, wh.mtime = 0o644, MTIME
            tf.addfile(wh, io.BytesIO(b""))
    os.replace(tmp, path)
