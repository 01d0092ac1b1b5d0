"""Workloads: the images the bench measures, generated deterministically and cached.

Names (as ``--workloads`` takes them):

- ``small-files[-COUNT]``: one layer of COUNT files of 1-16 KiB (default 20k). Series: file count.
- ``large-files[-SIZE]``: one layer of three files totalling SIZE (default 512m). Series: size.
- ``deep-N``: N layers (1..500), each changing a few files of a 500-file base. Series: depth.
- ``realistic``: Debian minbase (debootstrap) + python3 + an application layer with many small
  files and deletions (see ``realistic.py``).

COUNT and SIZE take ``k``/``m``/``g`` suffixes (``small-files-2k``, ``large-files-64m``). A built
workload lives in ``<cache>/<key>/`` with its layer tars, gzip blobs, an OCI image layout and
``meta.json``, written last: a directory without it is incomplete and rebuilt. Synthetic layers
depend only on the seed, so every machine builds identical bytes; ``deep-N`` images share the
layers of one stack (``deep-8`` is a prefix of ``deep-128``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.workloads import image, realistic, synthetic
from bench.workloads.image import LayerFile

GEN_VERSION = 1  # bump when a generator changes its output: caches of older versions are ignored
DEFAULT_SMALL = 20_000
DEFAULT_LARGE = 512 << 20
MAX_DEPTH = 500
KINDS = ("small-files", "large-files", "deep", "realistic")
_SUFFIX = {"": 1, "k": 1000, "m": 1 << 20, "g": 1 << 30}


class WorkloadError(ValueError):
    """A workload name that does not parse, or a workload that cannot be built here."""


@dataclass(frozen=True)
class WorkloadSpec:
    """A parsed workload name. ``series`` and ``x`` place it on a series plot."""

    name: str
    kind: str
    files: int = 0
    size: int = 0
    depth: int = 0
    compression: str = "gzip"  # of the layer blobs: gzip, or zstd (realistic-zstd)

    @property
    def series(self) -> str | None:
        return {"small-files": "files", "large-files": "size", "deep": "depth"}.get(self.kind)

    @property
    def x(self) -> int:
        return {"small-files": self.files, "large-files": self.size, "deep": self.depth}.get(self.kind, 0)


def _number(text: str, unit_bytes: bool) -> int:
    m = re.fullmatch(r"(\d+)([kmg]?)", text.lower())
    if not m:
        raise WorkloadError(f"bad number {text!r}")
    n, suf = int(m.group(1)), m.group(2)
    if unit_bytes:
        return n * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[suf]
    return n * _SUFFIX[suf] if suf in ("", "k") else n * {"m": 1_000_000, "g": 1_000_000_000}[suf]


def parse(name: str) -> WorkloadSpec:
    """``small-files-2k`` -> WorkloadSpec(kind="small-files", files=2000). Raises WorkloadError."""
    n = name.strip().lower()
    if n == "realistic":
        return WorkloadSpec(n, "realistic")
    if n == "realistic-zstd":  # the same layers, zstd blobs (issue 15's zstd pull aim)
        return WorkloadSpec(n, "realistic", compression="zstd")
    if n == "small-files":
        return WorkloadSpec(n, "small-files", files=DEFAULT_SMALL)
    if n == "large-files":
        return WorkloadSpec(n, "large-files", size=DEFAULT_LARGE)
    if n.startswith("small-files-"):
        count = _number(n.removeprefix("small-files-"), unit_bytes=False)
        if not 1 <= count <= 1_000_000:
            raise WorkloadError(f"{name}: file count must be 1..1M")
        return WorkloadSpec(n, "small-files", files=count)
    if n.startswith("large-files-"):
        size = _number(n.removeprefix("large-files-"), unit_bytes=True)
        if not (4 << 10) <= size <= (16 << 30):
            raise WorkloadError(f"{name}: size must be 4k..16g")
        return WorkloadSpec(n, "large-files", size=size)
    if n.startswith("deep-"):
        depth = _number(n.removeprefix("deep-"), unit_bytes=False)
        if not 1 <= depth <= MAX_DEPTH:
            raise WorkloadError(f"{name}: depth must be 1..{MAX_DEPTH}")
        return WorkloadSpec(n, "deep", depth=depth)
    raise WorkloadError(f"unknown workload {name!r} (realistic, realistic-zstd, small-files[-N], large-files[-SIZE], deep-N)")


def human_size(n: int) -> str:
    for unit, k in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k}{unit}"
    return str(n)


@dataclass
class Workload:
    """A built workload: what the bench needs to run phases on it."""

    name: str
    kind: str
    spec: dict[str, Any]
    dir: str
    layers: list[LayerFile]
    config: str  # path of the config JSON
    config_digest: str
    manifest_digest: str
    layout: str  # OCI image layout directory
    ref: str  # the image's name in stores and layouts ("bench/<name>:latest")
    runnable: bool  # has /bin/true (the start phase and its peers need it)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tar_bytes(self) -> int:
        return sum(lf.size for lf in self.layers)

    @property
    def blob_bytes(self) -> int:
        return sum(lf.blob_size for lf in self.layers)

    @property
    def compression(self) -> str:
        """Of the layer blobs: "gzip" or "zstd"."""
        return str(self.spec.get("compression", "gzip"))

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["layers"] = [lf.to_json() for lf in self.layers]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Workload":
        d = dict(d)
        d["layers"] = [LayerFile.from_json(x) for x in d["layers"]]
        return cls(**d)

    def summary(self) -> dict[str, Any]:
        """What a results file records about the workload (identity and size)."""
        return {"kind": self.kind, "spec": self.spec, "layers": len(self.layers),
                "tar_bytes": self.tar_bytes, "blob_bytes": self.blob_bytes,
                "manifest": self.manifest_digest, "runnable": self.runnable, **self.extra}

    @property
    def tree(self) -> dict[str, Any]:
        return dict(self.extra.get("tree", {}))


def tree_stats(tars: list[Path] | list[str]) -> dict[str, Any]:
    """What the merged tree of these layers holds, from the tar listings alone (whiteouts and
    opaque directories applied as the OCI spec says): counts, bytes and the largest regular file.
    Every driver's materialised tree is checked against it."""
    import tarfile

    entries: dict[str, tuple[str, int]] = {}
    for t in tars:
        ours: set[str] = set()
        with tarfile.open(t, "r:") as tf:
            for m in tf:
                name = m.name.lstrip("./").rstrip("/") if m.name not in (".", "./") else ""
                if not name:
                    continue
                parent, _, base = name.rpartition("/")
                if base == ".wh..wh..opq":
                    pre = parent + "/" if parent else ""
                    for k in [k for k in entries if k.startswith(pre) and k != parent and k not in ours]:
                        del entries[k]
                    continue
                if base.startswith(".wh."):
                    gone = f"{parent}/{base[4:]}" if parent else base[4:]
                    for k in [k for k in entries if k == gone or k.startswith(gone + "/")]:
                        del entries[k]
                    continue
                if m.isdir():
                    kind, size = "dir", 0
                elif m.issym():
                    kind, size = "symlink", 0
                elif m.islnk():
                    target = m.linkname.lstrip("./")
                    kind, size = "file", entries.get(target, ("file", 0))[1]
                elif m.isreg():
                    kind, size = "file", m.size
                else:
                    kind, size = "other", 0
                entries[name] = (kind, size)
                ours.add(name)
    files = [(size, k) for k, (kind, size) in entries.items() if kind == "file"]
    largest = max(files, key=lambda x: (x[0], x[1]), default=(0, ""))
    return {
        "files": len(files),
        "dirs": sum(1 for kind, _ in entries.values() if kind == "dir"),
        "symlinks": sum(1 for kind, _ in entries.values() if kind == "symlink"),
        "entries": len(entries),
        "bytes": sum(size for size, _ in files),
        "largest": largest[1],
        "largest_size": largest[0],
    }


def _key(spec: WorkloadSpec, seed: int) -> str:
    if spec.kind == "small-files":
        return f"small-files-{spec.files}-s{seed}-g{GEN_VERSION}"
    if spec.kind == "large-files":
        return f"large-files-{human_size(spec.size)}-s{seed}-g{GEN_VERSION}"
    if spec.kind == "deep":
        return f"deep-s{seed}-g{GEN_VERSION}/deep-{spec.depth}"
    zstd = "-zstd" if spec.compression == "zstd" else ""
    return f"realistic{zstd}-{realistic.SUITE}-s{seed}-g{GEN_VERSION}"


def cached(spec: WorkloadSpec, cache: Path, seed: int) -> Workload | None:
    meta = cache / _key(spec, seed) / "meta.json"
    try:
        w = Workload.from_json(json.loads(meta.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not all(os.path.exists(lf.tar) and os.path.exists(lf.blob) for lf in w.layers):
        return None
    if "tree" not in w.extra:  # made by an older bench: derive and keep
        w.extra["tree"] = tree_stats([lf.tar for lf in w.layers])
        tmp = meta.with_name("meta.json.tmp")
        tmp.write_text(json.dumps(w.to_json(), indent=1))
        os.replace(tmp, meta)
    return w


def build(spec: WorkloadSpec, cache: Path, seed: int, *, mirror: str = realistic.DEFAULT_MIRROR,
          log: Callable[[str], None] = lambda s: None) -> Workload:
    """The workload, from the cache or generated now. Raises WorkloadError when it cannot be
    built here (the realistic image without debootstrap or network)."""
    cache = Path(cache).absolute()
    hit = cached(spec, cache, seed)
    if hit is not None:
        return hit
    wdir = cache / _key(spec, seed)
    if wdir.exists():
        shutil.rmtree(wdir)  # incomplete: no meta.json
    wdir.mkdir(parents=True)
    history: list[str]
    cmd = ["/bin/sh"]
    if spec.kind == "small-files":
        log(f"generating {spec.name}: {spec.files} files")
        tars = [wdir / "layer.tar"]
        synthetic.small_files_layer(tars[0], seed, spec.files)
        history = [f"bench small-files {spec.files} seed {seed}"]
        blob_dir = wdir / "blobs"
    elif spec.kind == "large-files":
        log(f"generating {spec.name}: {human_size(spec.size)} in 3 files")
        tars = [wdir / "layer.tar"]
        synthetic.large_files_layer(tars[0], seed, spec.size)
        history = [f"bench large-files {spec.size} seed {seed}"]
        blob_dir = wdir / "blobs"
    elif spec.kind == "deep":
        shared = wdir.parent / "layers"
        shared.mkdir(exist_ok=True)
        tars = []
        for i in range(spec.depth):
            t = shared / f"{i:04d}.tar"
            if not t.exists():
                synthetic.deep_layer(t, seed, i)
            tars.append(t)
        log(f"generating {spec.name}: {spec.depth} layers")
        history = [f"bench deep layer {i} seed {seed}" for i in range(spec.depth)]
        blob_dir = wdir.parent / "blobs"
    else:
        try:
            tars = realistic.build_layers(cache / f"realistic-{realistic.SUITE}-g{GEN_VERSION}", seed,
                                          mirror, log)
        except realistic.RealisticError as e:
            shutil.rmtree(wdir, ignore_errors=True)
            raise WorkloadError(f"realistic: {e}") from None
        history = ["debootstrap --variant=minbase " + realistic.SUITE,
                   "debootstrap --include=python3", f"bench application layer seed {seed}"]
        blob_dir = wdir / "blobs"
    log(f"packing {spec.name}: {len(tars)} layer(s)")
    layers = [image.pack_layer(t, blob_dir, spec.compression) for t in tars]
    cfg = image.image_config(layers, cmd, history)
    (wdir / "config.json").write_bytes(cfg)
    ref = f"bench/{spec.name}:latest"
    layout = wdir / "layout"
    if layout.exists():
        shutil.rmtree(layout)
    digests = image.write_layout(layout, layers, cfg, ref)
    w = Workload(
        name=spec.name, kind=spec.kind,
        spec={"files": spec.files, "size": spec.size, "depth": spec.depth, "seed": seed,
              "generator": GEN_VERSION, "compression": spec.compression},
        dir=str(wdir), layers=layers, config=str(wdir / "config.json"),
        config_digest=digests["config"], manifest_digest=digests["manifest"], layout=str(layout),
        ref=ref, runnable=spec.kind == "realistic", extra={"tree": tree_stats(tars)},
    )
    tmp = wdir / "meta.json.tmp"
    tmp.write_text(json.dumps(w.to_json(), indent=1))
    os.replace(tmp, wdir / "meta.json")
    return w
