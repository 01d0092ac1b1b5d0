"""bench.results: the data model, the JSON file, migrations and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import results as R


def _suite() -> R.Suite:
    s = R.Suite(label="t", profile="quick", machine={"cpu": "x"})
    s.add_sample("phase", "materialise", "vfs", "deep-8", None, 0, 0.5, {"bytes": 3})
    s.add_sample("phase", "materialise", "vfs", "deep-8", None, 1, 0.6)
    s.add_error("phase", "materialise", "vfs", "deep-8", None, 2, "boom")
    s.add_skip("phase", "start", "vfs", "deep-8", None, "no runtime")
    s.add_error("phase", "commit", "vfs", "deep-8", None, 0, "broken")
    s.add_sample("series", "concurrent", "vfs", "deep-8", 4, 0, 0.1)
    return s


def test_status_rules() -> None:
    s = _suite()
    m = s.cell("phase", "materialise", "vfs", "deep-8")
    assert m is not None and m.status == "ok" and m.samples == [0.5, 0.6] and m.reps == [0, 1]
    assert m.errors == ["rep 2: boom"] and m.extra == {"bytes": 3}
    start = s.cell("phase", "start", "vfs", "deep-8")
    assert start is not None and start.status == "skipped" and start.reason == "no runtime"
    commit = s.cell("phase", "commit", "vfs", "deep-8")
    assert commit is not None and commit.status == "error" and commit.reason == "broken"
    # a later skip does not hide an error; a later sample turns an error into ok
    s.add_skip("phase", "commit", "vfs", "deep-8", None, "later")
    assert commit.status == "error"
    s.add_sample("phase", "commit", "vfs", "deep-8", None, 1, 0.2)
    assert commit.status == "ok" and commit.reason == ""
    assert s.cell("series", "concurrent", "vfs", "deep-8", 4) is not None
    assert s.cell("series", "concurrent", "vfs", "deep-8", 8) is None


def test_roundtrip(tmp_path: Path) -> None:
    s = _suite()
    path = tmp_path / "r.json"
    s.save(path)
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == R.SCHEMA_VERSION
    back = R.load(path)
    assert [c.to_json() for c in back.cells] == [c.to_json() for c in s.cells]
    assert back.machine == {"cpu": "x"} and back.label == "t"
    assert back.cell("phase", "materialise", "vfs", "deep-8").by_rep() == {0: 0.5, 1: 0.6}
    assert not list(tmp_path.glob(".*.tmp"))


def test_migrates_version_1(tmp_path: Path) -> None:
    old = {"version": 1, "label": "proto", "machine": {"cpu": "y"},
           "results": {"overlay/realistic/pull": [1.0, 1.2], "vfs/deep-8/mount": []}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    s = R.load(path)
    assert s.schema_version == R.SCHEMA_VERSION
    pull = s.cell("phase", "pull", "overlay", "realistic")
    assert pull is not None and pull.samples == [1.0, 1.2] and pull.reps == [0, 1] and pull.status == "ok"
    mount = s.cell("phase", "mount", "vfs", "deep-8")
    assert mount is not None and mount.status == "error"
    assert "migrated from schema version 1" in s.notes


@pytest.mark.parametrize("doc, message", [
    ({"schema_version": R.SCHEMA_VERSION + 1, "cells": []}, "newer"),
    ({"cells": []}, "no schema_version"),
    ([1, 2], "JSON object"),
])
def test_refuses_what_it_cannot_read(tmp_path: Path, doc: object, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(R.ResultsError, match=message):
        R.load(path)


def test_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(R.ResultsError, match="cannot read"):
        R.load(path)


def test_merge_micro_replaces_by_name() -> None:
    s = R.Suite()
    bench = {"fullname": "bench/micro/x.py::test_a", "group": None, "params": None, "extra_info": {"k": 1},
             "stats": {"min": 1.0, "median": 2.0, "rounds": 3, "data": [1.0, 2.0, 3.0]}}
    R.merge_micro(s, [bench])
    R.merge_micro(s, [dict(bench, stats={"min": 0.5, "median": 0.7, "rounds": 3, "data": [0.5, 0.7, 0.9]})])
    assert len(s.micro) == 1
    assert s.micro[0]["stats"]["median"] == 0.7 and s.micro[0]["data"] == [0.5, 0.7, 0.9]


def test_merge_micro_subsamples_huge_raw_data() -> None:
    s = R.Suite()
    data = [float(i) for i in range(100_000)]
    R.merge_micro(s, [{"fullname": "f", "stats": {"median": 1.0, "data": data}}])
    kept = s.micro[0]["data"]
    assert len(kept) == R.MAX_MICRO_SAMPLES and s.micro[0]["data_total"] == 100_000
    assert kept[0] == 0.0 and kept == sorted(kept)
