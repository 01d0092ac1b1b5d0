"""The roofline: what this machine can do, measured in the same run, and each phase's limit.

Measured every repetition, next to the phases (so a busy neighbour slows both):

- per workload, CPU (``cpu``): ``sha256-tar`` and ``sha256-blob`` (hashlib/OpenSSL over the
  layer tars and gzip blobs, read from the page cache), ``gunzip-zlib``, ``gunzip-isal`` (ISA-L)
  and ``zstd-d`` (the same tars as zstd level 3) decompression;
- per workload and filesystem (``ext4``, ``btrfs``: the bench's own loop filesystems):
  ``tar-x`` (GNU tar extracting every layer tar, concatenated, into one directory, then
  ``syncfs``), ``walk-plain`` and ``read-plain`` (the phases' own walk and read, caches dropped,
  on that plain directory), ``write-1b`` (1 byte into its largest file), ``cp-a`` (``cp -a`` of
  the tree, then ``syncfs``) and ``rm-plain`` (``rm -rf`` of it);
- per machine: ``write-seq`` (256 MiB written and fsynced, per filesystem) and ``calib`` (a fixed
  mix of Python work, hashing and small-file create/stat/unlink on each filesystem: the reference
  for phases that have no bandwidth limit).

A phase's *limit* is the time the machine's fastest tools need for the same work done one step
after another (``LIMITS``); the report gives limit / phase, so 100% means "as fast as the
machine's own tools", and more than 100% is possible for phases that overlap steps (pull). Phases
with no meaningful limit (mount, create on a snapshot driver) are compared on ``calib`` instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bench import fs
from bench.phases import read_tree, walk_tree, write_one_byte

if TYPE_CHECKING:
    from bench.results import Suite

WRITE_SEQ_BYTES = 256 << 20
CHUNK = 1 << 20

CPU_MEASURES = ("sha256-tar", "sha256-blob", "gunzip-zlib", "gunzip-isal", "zstd-d")
FS_MEASURES = ("tar-x", "walk-plain", "read-plain", "write-1b", "cp-a", "rm-plain")
MACHINE_MEASURES = ("write-seq", "calib")

# phase -> components of its limit: (kind, name, on the driver's filesystem?, scale). A scale
# "blob/write" means blob bytes written at the write-seq rate. Drivers with their own list
# (create on vfs is a full copy) override the default.
Component = tuple[str, str, bool, str]
LIMITS: dict[str, dict[str, list[Component]]] = {
    "pull": {"*": [("roofline", "sha256-blob", False, ""), ("machine", "write-seq", True, "blob/write"),
                   ("roofline", "gunzip-isal", False, ""), ("roofline", "sha256-tar", False, ""),
                   ("roofline", "tar-x", True, "")]},
    "load": {"*": [("roofline", "sha256-blob", False, ""), ("machine", "write-seq", True, "blob/write"),
                   ("roofline", "gunzip-isal", False, ""), ("roofline", "sha256-tar", False, ""),
                   ("roofline", "tar-x", True, "")]},
    "materialise": {"*": [("roofline", "sha256-tar", False, ""), ("roofline", "tar-x", True, "")]},
    "create": {"vfs": [("roofline", "cp-a", True, "")]},
    "walk": {"*": [("roofline", "walk-plain", True, "")]},
    "read": {"*": [("roofline", "read-plain", True, "")]},
    "copy-up": {"*": [("roofline", "write-1b", True, "")]},
    "remove": {"*": [("roofline", "rm-plain", True, "")]},
    "start": {"*": [("peer", "crun run", False, "")]},
}
# Phases whose steps overlap (a pull hashes, decompresses and extracts while it downloads): their
# limit is the pipelined one, the larger of the slowest single step and all steps' work spread over
# the machine's cores (``suite.machine["cpus"]``), not the sequential sum.
PIPELINED = {"pull"}
LIMIT_TEXT = {
    "pull": "sha256 + write of the blobs, ISA-L gunzip (zstd layers: zstd -d), sha256 of the tars, GNU tar -x "
            "(pipelined: the slowest of them, or their sum over the cores if larger)",
    "load": "sha256 + write of the blobs, ISA-L gunzip, sha256 of the tars, GNU tar -x (sequential)",
    "materialise": "sha256 of the tars + GNU tar -x of every layer",
    "create": "cp -a of the tree (vfs copies it); others: none (metadata only)",
    "walk": "the same walk on a plain directory",
    "read": "the same read on a plain directory",
    "copy-up": "1-byte write into a plain file",
    "remove": "rm -rf of one plain copy of the tree",
    "start": "bare crun run of a prepared bundle",
}
DRIVER_FS = {"btrfs": "btrfs"}  # every other driver runs on the bench's ext4


def driver_fs(driver: str) -> str:
    return DRIVER_FS.get(driver, "ext4")


# ---- measuring (in worker processes) ----------------------------------------------------------


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def _stream(paths: list[str], sink: Callable[[memoryview], Any]) -> int:
    buf = bytearray(CHUNK)
    n = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while True:
                k = f.readinto(buf)
                if not k:
                    break
                sink(memoryview(buf)[:k])
                n += k
    return n


def _sha256(paths: list[str]) -> int:
    h = hashlib.sha256()
    return _stream(paths, h.update)


def _gunzip(paths: list[str], make: Callable[[], Any]) -> int:
    out = 0
    for p in paths:
        d = make()

        def feed(chunk: memoryview, d: Any = d) -> None:
            nonlocal out
            out += len(d.decompress(chunk))

        _stream([p], feed)
        out += len(d.flush())
    return out


def _zstd_paths(tars: list[str]) -> list[str]:
    """zstd (level 3) copies of the tars, made once next to them (untimed)."""
    import zstandard

    out = []
    for t in tars:
        z = t + ".zst"
        if not os.path.exists(z):
            tmp = f"{z}.{os.getpid()}.tmp"
            with open(t, "rb") as fin, open(tmp, "wb") as fout:
                zstandard.ZstdCompressor(level=3).copy_stream(fin, fout)
            os.replace(tmp, z)
        out.append(z)
    return out


def _unzstd(paths: list[str]) -> int:
    import zstandard

    out = 0
    for p in paths:
        with open(p, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f, read_size=CHUNK) as r:
            while True:
                chunk = r.read(CHUNK)
                if not chunk:
                    break
                out += len(chunk)
    return out


def measure_workload(task: dict[str, Any]) -> dict[str, Any]:
    """One repetition of the workload's roofline: its CPU measures (when ``task["cpu"]``) and its
    filesystem measures on each of ``task["scratches"]`` ({fs name: scratch dir on it}).
    Returns ``{"cells": {name or name@fs: {"seconds"|"error": ..., "extra": ...}}}``."""
    from isal import isal_zlib

    from bench.workloads import Workload

    w = Workload.from_json(task["workload"])
    tars = [lf.tar for lf in w.layers]
    blobs = [lf.blob for lf in w.layers]
    out: dict[str, dict[str, Any]] = {}

    def record(name: str, fn: Callable[[], Any], extra: Callable[[Any], dict[str, Any]] | None = None) -> Any:
        try:
            dt, r = _timed(fn)
        except Exception as e:  # recorded; the other measures go on
            out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            return None
        out[name] = {"seconds": dt}
        if extra is not None:
            out[name]["extra"] = extra(r)
        return r

    if task.get("cpu"):
        zst = _zstd_paths(tars)
        fs.warm(tars + blobs + zst)
        record("sha256-tar", lambda: _sha256(tars), lambda n: {"bytes": n})
        record("sha256-blob", lambda: _sha256(blobs), lambda n: {"bytes": n})
        if w.compression == "gzip":  # a zstd workload's blobs are not gzip: its limits use zstd-d
            record("gunzip-zlib", lambda: _gunzip(blobs, lambda: zlib.decompressobj(31)), lambda n: {"bytes": n})
            record("gunzip-isal", lambda: _gunzip(blobs, lambda: isal_zlib.decompressobj(31)), lambda n: {"bytes": n})
        record("zstd-d", lambda: _unzstd(zst), lambda n: {"bytes": n})
    for fsname, scratch_dir in task.get("scratches", {}).items():
        _measure_fs(w, tars, Path(scratch_dir), fsname, record)
    return {"cells": out}


def _measure_fs(w: Any, tars: list[str], scratch: Path, fsname: str,
                record: Callable[..., Any]) -> None:
    """The filesystem measures of one workload on one filesystem (names get ``@fsname``)."""
    fs.rmtree(scratch)
    scratch.mkdir(parents=True)
    tree, copy = scratch / "tree", scratch / "copy"
    tree.mkdir()
    fs.warm(tars)
    try:
        def tar_x() -> bool:
            cat = subprocess.Popen(["cat", *tars], stdout=subprocess.PIPE)
            p = subprocess.run(["tar", "-x", "-i", "-f", "-", "-C", str(tree)], stdin=cat.stdout,
                               capture_output=True)
            assert cat.stdout is not None
            cat.stdout.close()
            cat.wait()
            if p.returncode != 0:
                raise RuntimeError(f"tar -x: {p.stderr.decode(errors='replace').strip()[:200]}")
            fs.syncfs(tree)
            return True

        if not record(f"tar-x@{fsname}", tar_x):
            return
        fs.drop_caches([tree])
        record(f"walk-plain@{fsname}", lambda: walk_tree(str(tree)), lambda r: {"entries": r[0]})
        fs.drop_caches([tree])
        record(f"read-plain@{fsname}", lambda: read_tree(str(tree)), lambda r: {"files": r[0], "bytes": r[1]})
        largest = w.tree.get("largest")
        if largest and os.path.isfile(tree / largest):
            record(f"write-1b@{fsname}", lambda: write_one_byte(str(tree / largest)))

        def cp_a() -> None:
            subprocess.run(["cp", "-a", str(tree), str(copy)], check=True, capture_output=True)
            fs.syncfs(copy)

        record(f"cp-a@{fsname}", cp_a)
        record(f"rm-plain@{fsname}", lambda: subprocess.run(["rm", "-rf", str(tree)], check=True,
                                                            capture_output=True))
    finally:
        fs.rmtree(scratch)


def _calib(directory: Path) -> None:
    """A fixed small mix: 200k Python loop steps, sha256 of 8 MiB, 300 files created (4 KiB),
    stat'ed and unlinked on ``directory``'s filesystem."""
    x = 0
    for i in range(200_000):
        x += i & 7
    hashlib.sha256(b"\0" * (8 << 20)).digest()
    directory.mkdir(parents=True, exist_ok=True)
    block = b"c" * 4096
    names = [directory / f"c{i}" for i in range(300)]
    for n in names:
        with open(n, "wb") as f:
            f.write(block)
    for n in names:
        os.stat(n)
    for n in names:
        os.unlink(n)


def measure_machine(task: dict[str, Any]) -> dict[str, Any]:
    """One repetition of the machine-wide measures on each filesystem in ``task["fs"]``."""
    out: dict[str, dict[str, Any]] = {}
    block = os.urandom(CHUNK)
    for fsname, base in task["fs"].items():
        d = Path(base) / "machine"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        try:
            def write_seq(path: Path = d / "seq") -> None:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    for _ in range(WRITE_SEQ_BYTES // CHUNK):
                        os.write(fd, block)
                    os.fsync(fd)
                finally:
                    os.close(fd)

            for name, fn in (("write-seq", write_seq), ("calib", lambda: _calib(d / "calib"))):
                try:
                    dt, _ = _timed(fn)
                    out[f"{name}@{fsname}"] = {"seconds": dt}
                except Exception as e:
                    out[f"{name}@{fsname}"] = {"error": f"{type(e).__name__}: {e}"[:300]}
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return {"cells": out}


# ---- limits (read from a results suite) -------------------------------------------------------


def limit_samples(suite: "Suite", driver: str, workload: str, phase: str) -> dict[int, float] | None:
    """The phase's limit per repetition (the sum of its components measured in that same
    repetition), or None when the phase has no limit or a component is missing."""
    spec = LIMITS.get(phase)
    if spec is None:
        return None
    comps = spec.get(driver, spec.get("*"))
    if comps is None:
        return None
    fsname = driver_fs(driver)
    wl = suite.workloads.get(workload, {})
    if (wl.get("spec") or {}).get("compression") == "zstd":  # its blobs decompress with zstd
        comps = [(k, "zstd-d" if n == "gunzip-isal" else n, f, sc) for k, n, f, sc in comps]
    per_rep: dict[int, float] | None = None
    slowest: dict[int, float] = {}
    for kind, name, on_fs, scale in comps:
        if kind == "machine":
            cell = suite.cell("machine", name, fsname if on_fs else "cpu")
        elif kind == "peer":
            cell = suite.cell("peer", name, "", workload)
        else:
            cell = suite.cell("roofline", name, fsname if on_fs else "cpu", workload)
        if cell is None or not cell.samples:
            return None
        factor = 1.0
        if scale == "blob/write":
            factor = float(wl.get("blob_bytes", 0)) / WRITE_SEQ_BYTES
        vals = {r: v * factor for r, v in cell.by_rep().items()}
        if kind == "peer":  # a peer has no pairing with the phase: use its median for every rep
            import statistics

            m = statistics.median(cell.samples)
            vals = {r: m for r in range(max(cell.reps) + 1 if cell.reps else 1)}
        if per_rep is None:
            per_rep = dict(vals)
        else:
            per_rep = {r: per_rep[r] + vals[r] for r in per_rep if r in vals}
        slowest = {r: max(slowest.get(r, 0.0), v) for r, v in vals.items()}
    if per_rep and phase in PIPELINED:
        cores = max(1, int(suite.machine.get("cpus") or 1))
        per_rep = {r: max(slowest[r], total / cores) for r, total in per_rep.items()}
    return per_rep or None


def reference_samples(suite: "Suite", driver: str, workload: str, phase: str) -> tuple[dict[int, float], str] | None:
    """What a phase is compared against across runs: its limit when it has one, else ``calib``
    on the driver's filesystem. Returns (samples by repetition, name of the reference)."""
    lim = limit_samples(suite, driver, workload, phase)
    if lim:
        return lim, "limit"
    cal = suite.cell("machine", "calib", driver_fs(driver))
    if cal is not None and cal.samples:
        return cal.by_rep(), "calib"
    return None
