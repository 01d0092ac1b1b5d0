"""The results data model and its JSON file: every raw sample, with the machine and versions.

Model (pyperf's run -> benchmark -> suite, flattened): a ``Suite`` is one bench run; it holds
``Cell``s, one per thing measured, each with every sample in repetition order. A cell is keyed by
``(kind, name, driver, workload, param)``:

=========  =====================  ==============================  ========  =============
kind       name                   driver                          workload  param
=========  =====================  ==============================  ========  =============
phase      a phase (``pull``...)  the graphdriver                 yes       -
series     ``concurrent``         the graphdriver                 yes       N containers
roofline   ``tar-x``, ``gunzip-   the filesystem (``ext4``,       yes       -
           isal``, ...            ``btrfs``) or ``cpu``
machine    ``write-seq``,         the filesystem or ``cpu``       -         -
           ``calib``
peer       ``skopeo copy``, ...   -                               yes       -
=========  =====================  ==============================  ========  =============

A cell's ``status`` is ``ok`` (it has samples; some repetitions may still have failed, see
``errors``), ``error`` (every repetition failed) or ``skipped`` (it could not run here; ``reason``
says why). Every sample keeps its repetition index (``reps``), so ratios can be taken pairwise
within a repetition (a phase over its roofline limit measured in the same repetition).

The file carries ``schema_version``; ``load`` migrates older versions step by step and refuses
newer ones. Version history:

1. Prototype: ``{"version": 1, "results": {"driver/workload/phase": [seconds...]}, "machine":
   {...}}``, phases only.
2. Cells of several kinds with reps, errors and status; versions, config, workloads, drivers,
   micro benchmarks.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

SCHEMA_VERSION = 2
KINDS = ("phase", "series", "roofline", "machine", "peer")
MAX_MICRO_SAMPLES = 500


class ResultsError(ValueError):
    """A results file that cannot be read: not JSON, not a bench file, or from a newer bench."""


@dataclass
class Cell:
    kind: str
    name: str
    driver: str = ""
    workload: str = ""
    param: int | None = None
    unit: str = "s"
    samples: list[float] = field(default_factory=list)
    reps: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    status: str = "ok"
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str, int | None]:
        return (self.kind, self.name, self.driver, self.workload, self.param)

    def by_rep(self) -> dict[int, float]:
        return dict(zip(self.reps, self.samples))

    def label(self) -> str:
        parts = [self.kind, self.name, self.driver, self.workload]
        if self.param is not None:
            parts.append(f"N={self.param}")
        return " / ".join(p for p in parts if p)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Cell":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Suite:
    label: str = ""
    profile: str = ""
    created: str = ""
    duration_s: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    drivers: dict[str, str | None] = field(default_factory=dict)  # name -> None (ran) or why not
    workloads: dict[str, Any] = field(default_factory=dict)
    peers: dict[str, Any] = field(default_factory=dict)  # peer name -> {"phase", "what", "reason"}
    cells: list[Cell] = field(default_factory=list)
    micro: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self._index: dict[tuple[Any, ...], Cell] = {c.key: c for c in self.cells}

    # -- access
    def cell(self, kind: str, name: str, driver: str = "", workload: str = "",
             param: int | None = None) -> Cell | None:
        return self._index.get((kind, name, driver, workload, param))

    def get_or_add(self, kind: str, name: str, driver: str = "", workload: str = "",
                   param: int | None = None, unit: str = "s") -> Cell:
        key = (kind, name, driver, workload, param)
        c = self._index.get(key)
        if c is None:
            c = Cell(kind, name, driver, workload, param, unit, status="skipped")
            self.cells.append(c)
            self._index[key] = c
        return c

    def select(self, kind: str | None = None, **match: Any) -> list[Cell]:
        out = []
        for c in self.cells:
            if kind is not None and c.kind != kind:
                continue
            if all(getattr(c, k) == v for k, v in match.items()):
                out.append(c)
        return out

    # -- recording
    def add_sample(self, kind: str, name: str, driver: str, workload: str, param: int | None,
                   rep: int, seconds: float, extra: dict[str, Any] | None = None) -> Cell:
        c = self.get_or_add(kind, name, driver, workload, param)
        c.samples.append(float(seconds))
        c.reps.append(rep)
        c.status, c.reason = "ok", ""
        if extra:
            for k, v in extra.items():
                c.extra.setdefault(k, v)
        return c

    def add_error(self, kind: str, name: str, driver: str, workload: str, param: int | None,
                  rep: int, message: str) -> Cell:
        c = self.get_or_add(kind, name, driver, workload, param)
        c.errors.append(f"rep {rep}: {message}")
        if not c.samples:
            c.status, c.reason = "error", message
        return c

    def add_skip(self, kind: str, name: str, driver: str, workload: str, param: int | None,
                 reason: str) -> Cell:
        c = self.get_or_add(kind, name, driver, workload, param)
        if not c.samples and c.status != "error":
            c.status, c.reason = "skipped", reason
        return c

    # -- files
    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "label": self.label, "profile": self.profile, "created": self.created,
            "duration_s": self.duration_s, "machine": self.machine, "versions": self.versions,
            "config": self.config, "drivers": self.drivers, "workloads": self.workloads,
            "peers": self.peers, "notes": self.notes, "micro": self.micro,
            "cells": [c.to_json() for c in self.cells],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temp name, rename): a reader never sees half a file."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n")
        os.replace(tmp, p)


def _migrate_1_to_2(doc: dict[str, Any]) -> dict[str, Any]:
    cells = []
    for key, samples in sorted(doc.get("results", {}).items()):
        driver, workload, phase = key.split("/", 2)
        cells.append({"kind": "phase", "name": phase, "driver": driver, "workload": workload,
                      "samples": list(samples), "reps": list(range(len(samples))),
                      "status": "ok" if samples else "error"})
    return {
        "schema_version": 2, "label": doc.get("label", ""), "profile": doc.get("profile", ""),
        "created": doc.get("created", ""), "machine": doc.get("machine", {}),
        "versions": {}, "config": {}, "drivers": {}, "workloads": {}, "peers": {},
        "notes": ["migrated from schema version 1"], "micro": [], "cells": cells,
    }


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _migrate_1_to_2}


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """Bring a parsed results document to ``SCHEMA_VERSION``. Raises ResultsError."""
    if not isinstance(doc, dict):
        raise ResultsError("not a bench results document (expected a JSON object)")
    version = doc.get("schema_version", doc.get("version"))
    if not isinstance(version, int):
        raise ResultsError("not a bench results document (no schema_version)")
    if version > SCHEMA_VERSION:
        raise ResultsError(f"results schema {version} is newer than this bench ({SCHEMA_VERSION}); update lamina")
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ResultsError(f"no migration from results schema {version}")
        doc = step(doc)
        version = doc["schema_version"]
    return doc


def from_json(doc: dict[str, Any]) -> Suite:
    doc = migrate(doc)
    fields = {k: v for k, v in doc.items() if k in Suite.__dataclass_fields__ and k != "cells"}
    fields["cells"] = [Cell.from_json(c) for c in doc.get("cells", [])]
    fields["schema_version"] = SCHEMA_VERSION
    return Suite(**fields)


def load(path: str | os.PathLike[str]) -> Suite:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ResultsError(f"cannot read results {path}: {e}") from None
    return from_json(doc)


def merge_micro(suite: Suite, benchmarks: Iterable[dict[str, Any]]) -> None:
    """Keep pytest-benchmark results (their ``benchmarks`` list, raw data included) in the suite,
    replacing earlier ones of the same name. Statistics are pytest-benchmark's over every round;
    the raw data kept is at most ``MAX_MICRO_SAMPLES`` evenly spaced rounds (results/ stays small)."""
    by_name = {m["name"]: m for m in suite.micro}
    for b in benchmarks:
        stats = b.get("stats", {})
        data = list(stats.get("data", []))
        if len(data) > MAX_MICRO_SAMPLES:  # fast functions run 100k rounds: keep an even subsample
            step = len(data) / MAX_MICRO_SAMPLES
            data = [data[int(i * step)] for i in range(MAX_MICRO_SAMPLES)]
        by_name[b["fullname"]] = {
            "name": b["fullname"], "group": b.get("group"), "params": b.get("params"),
            "extra_info": b.get("extra_info", {}),
            "stats": {k: stats.get(k) for k in ("min", "max", "mean", "median", "stddev", "iqr",
                                                  "rounds", "iterations", "ops")},
            "data": data,
            "data_total": len(stats.get("data", [])),
        }
    suite.micro = sorted(by_name.values(), key=lambda m: m["name"])


def fmt_s(x: float) -> str:
    """Seconds for a person: µs, ms or s, three significant figures at most; "–" for none."""
    if x is None or not math.isfinite(x):
        return "–"
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1e3:.1f} ms" if x < 0.1 else f"{x * 1e3:.0f} ms"
    return f"{x:.2f} s"
