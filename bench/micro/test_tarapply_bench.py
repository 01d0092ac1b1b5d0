"""Micro benchmarks of the tar applier (``drivers/tarapply.py``) against GNU ``tar -x``.

Run: ``.venv/bin/python -m pytest bench/micro/test_tarapply_bench.py --benchmark-only``
(add ``-s`` to see the MB/s and files/s summary). Needs root, losetup and mkfs.ext4.

The layer is deterministic (seeded): 5000 files of 1-64 KiB (log-uniform, so mostly small, as in
real images) in 40 dirs x 3 subdirs, 4 files of 10 MiB, 200 symlinks and 50 hardlinks; about
120 MB in 5.4k entries, close to MACHINE-NOTES' image B (121 MB, 6.7k entries). Everything runs
on a journaled ext4 on a loop device made for this module (the root fs here has no journal and
slows down run after run); each round extracts into a fresh dir, and the wipe + ``sync`` before
it is not timed.

- ``gnu-tar``: ``tar -x -f layer.tar -C dir`` in a subprocess (the target: apply within 1.5x).
- ``apply_tar``: the libarchive applier, REMOVE whiteouts (vfs/btrfs); ``overlay``: OVERLAY.
- ``tarfile``: the pure-Python twin (``apply_tar_py``).
- ``*-over-copy``: the same layer onto a copy of itself (every entry replaces a file), as an
  upgrade layer on a full-tree driver does; GNU tar does the same with its default unlinking.
- ``test_interleaved``: the fair comparison on a busy machine. Rounds alternate GNU tar and the
  appliers (so drift and neighbours hit all alike) and record wall *and* CPU time (getrusage:
  user+sys of this process, or of the tar child); ``extra_info`` and ``-s`` output carry the
  medians and the ratios to GNU tar. Its own benchmark time is the whole session (ignore it).
"""

from __future__ import annotations

import io
import os
import random
import resource
import statistics
import time
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from drivers.tar.apply import Whiteouts, apply_tar, apply_tar_py

if os.geteuid() != 0 or shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None:
    pytest.skip("needs root, losetup and mkfs.ext4", allow_module_level=True)

FILES, BIG, SYMLINKS, HARDLINKS = 5000, 4, 200, 50


@pytest.fixture(scope="module")
def ext4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh 2 GiB (sparse) journaled ext4 on a loop device; unmounted and detached after."""
    base = tmp_path_factory.mktemp("tarapply-bench")
    img, mnt = base / "fs.img", base / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(2 << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    str(img)], check=True, capture_output=True)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        subprocess.run(["mount", "-t", "ext4", dev, str(mnt)], check=True, capture_output=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=False, capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)
        img.unlink(missing_ok=True)


def build_layer(path: Path) -> tuple[int, int]:
    """Write the deterministic layer tar; return (bytes of file content, entries)."""
    rnd = random.Random(20240601)
    blob = rnd.randbytes(64 << 10)
    content = entries = 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        def add(ti: tarfile.TarInfo, data: bytes | None = None) -> None:
            nonlocal content, entries
            ti.mtime, ti.uname, ti.gname = 1_700_000_000, "", ""
            if data is not None:
                ti.size = len(data)
                content += len(data)
            t.addfile(ti, io.BytesIO(data) if data else None)
            entries += 1

        def directory(name: str) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            add(ti)

        dirs = [f"usr/share/d{i:02d}/s{j}" for i in range(40) for j in range(3)]
        for d in ["usr", "usr/share"] + [f"usr/share/d{i:02d}" for i in range(40)] + dirs:
            directory(d)
        files = []
        for i in range(FILES):
            size = int(2 ** rnd.uniform(10, 16))  # 1 KiB .. 64 KiB, log-uniform
            name = f"{rnd.choice(dirs)}/f{i:05d}"
            ti = tarfile.TarInfo(name)
            ti.mode = rnd.choice([0o644, 0o644, 0o755])
            add(ti, blob[:size])
            files.append(name)
        for i in range(BIG):
            ti = tarfile.TarInfo(f"opt/big{i}")
            ti.mode = 0o644
            add(ti, rnd.randbytes(10 << 20))
        for i in range(SYMLINKS):
            ti = tarfile.TarInfo(f"usr/lib{i}")
            ti.type, ti.linkname = tarfile.SYMTYPE, f"share/d{i % 40:02d}"
            add(ti)
        for i in range(HARDLINKS):
            ti = tarfile.TarInfo(f"{files[i * 7]}.hl")
            ti.type, ti.linkname = tarfile.LNKTYPE, files[i * 7]
            add(ti)
    return content, entries


@pytest.fixture(scope="module")
def layer(ext4: Path) -> tuple[Path, int, int]:
    path = ext4 / "layer.tar"
    content, entries = build_layer(path)
    return path, content, entries


def gnu_tar(tar: Path, dest: Path) -> None:
    subprocess.run(["tar", "-x", "-f", str(tar), "-C", str(dest)], check=True)


def lamina(whiteouts: Whiteouts) -> Callable[[Path, Path], None]:
    def run(tar: Path, dest: Path) -> None:
        with open(tar, "rb") as f:
            apply_tar(str(dest), f, whiteouts)
    return run


def lamina_py(tar: Path, dest: Path) -> None:
    with open(tar, "rb") as f:
        apply_tar_py(str(dest), f)


CASES = {
    "gnu-tar": (gnu_tar, False),
    "apply_tar": (lamina(Whiteouts.REMOVE), False),
    "apply_tar-overlay": (lamina(Whiteouts.OVERLAY), False),
    "tarfile": (lamina_py, False),
    "gnu-tar-over-copy": (gnu_tar, True),
    "apply_tar-over-copy": (lamina(Whiteouts.REMOVE), True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_extract(benchmark, case: str, ext4: Path, layer: tuple[Path, int, int]) -> None:
    tar, content, entries = layer
    fn, over_copy = CASES[case]
    dest = ext4 / "dest"

    def setup() -> tuple[tuple, dict]:
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir()
        if over_copy:
            gnu_tar(tar, dest)
        with open(tar, "rb") as f:  # the tar in the page cache, like a just-fetched layer
            while f.read(1 << 20):
                pass
        os.sync()  # the previous round's writeback must not land in this round
        return (tar, dest), {}

    benchmark.pedantic(fn, setup=setup, rounds=7, iterations=1, warmup_rounds=1)
    best = benchmark.stats.stats.min
    med = benchmark.stats.stats.median
    benchmark.extra_info.update(content_bytes=content, entries=entries,
                                mb_per_s_median=round(content / med / 1e6, 1),
                                files_per_s_median=round(entries / med))
    print(f"\n{case:22} min {best * 1e3:6.0f} ms  median {med * 1e3:6.0f} ms  "
          f"{content / med / 1e6:6.0f} MB/s  {entries / med:7.0f} entries/s")
    assert len(os.listdir(dest / "usr" / "share")) == 40
    shutil.rmtree(dest)


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def test_interleaved(benchmark, ext4: Path, layer: tuple[Path, int, int]) -> None:
    tar, content, entries = layer
    dest = ext4 / "dest"
    cases = {k: CASES[k][0] for k in ("gnu-tar", "apply_tar", "apply_tar-overlay", "tarfile")}
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}

    def session() -> None:
        for _ in range(7):
            for name, fn in cases.items():
                if dest.exists():
                    shutil.rmtree(dest)
                dest.mkdir()
                os.sync()
                who = resource.RUSAGE_CHILDREN if name == "gnu-tar" else resource.RUSAGE_SELF
                c0, t0 = _cpu(who), time.perf_counter()
                fn(tar, dest)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(_cpu(who) - c0)
        shutil.rmtree(dest)

    benchmark.pedantic(session, rounds=1, iterations=1)
    base_w, base_c = statistics.median(wall["gnu-tar"]), statistics.median(cpu["gnu-tar"])
    print()
    for name in cases:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        benchmark.extra_info[name] = {
            "wall_ms_median": round(w * 1e3), "wall_ms_min": round(min(wall[name]) * 1e3),
            "cpu_ms_median": round(c * 1e3), "wall_ratio_to_gnu_tar": round(w / base_w, 2),
            "cpu_ratio_to_gnu_tar": round(c / base_c, 2),
            "mb_per_s": round(content / w / 1e6), "entries_per_s": round(entries / w)}
        print(f"{name:18} wall median {w * 1e3:5.0f} ms (min {min(wall[name]) * 1e3:4.0f}, "
              f"x{w / base_w:.2f})  cpu {c * 1e3:4.0f} ms (x{c / base_c:.2f})  "
              f"{content / w / 1e6:4.0f} MB/s  {entries / w:6.0f} entries/s")
