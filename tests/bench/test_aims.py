"""bench/report.py's table of issue 15's aims: each row's ratio, aim and verdict from a suite's
cells (met, missed by how much, or not measured with the reason)."""

from __future__ import annotations

from bench import report
from bench import results as R


def _suite() -> R.Suite:
    s = R.Suite(label="t", profile="default")
    s.workloads = {w: {"kind": "x"} for w in ("realistic", "deep-64", "deep-500")}
    s.peers = {"podman pull": {"phase": "pull"}, "podman run": {"phase": "start"},
               "lamina run": {"phase": "start"}, "lamina images": {"phase": "start"}}
    for rep in range(3):
        s.add_sample("phase", "pull", "overlay", "realistic", None, rep, 1.0 + rep * 0.1)  # median 1.1
        s.add_sample("peer", "podman pull", "", "realistic", None, rep, 2.0 + rep * 0.2)  # median 2.2: 0.5
        s.add_sample("phase", "pull", "overlay", "deep-64", None, rep, 1.0)
        s.add_sample("peer", "podman pull", "", "deep-64", None, rep, 2.0)  # 0.5 against <= 0.25
        s.add_sample("phase", "pull", "overlay", "deep-500", None, rep, 4.0)
        s.add_sample("phase", "mount", "overlay", "deep-500", None, rep, 0.5)  # 4.5 s <= 5 s
        s.add_sample("peer", "lamina images", "", "realistic", None, rep, 0.09)  # 90 ms against 60
    s.add_error("peer", "podman run", "", "realistic", None, 0, "podman exit 125: no runtime")
    s.add_sample("peer", "lamina run", "", "realistic", None, 0, 0.2)
    return s


def _rows() -> dict[str, str]:
    lines = report.aims_table(_suite())
    assert lines[0].startswith("| work | lamina | podman |")
    return {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}


def test_each_aim_is_a_row_with_its_verdict() -> None:
    rows = _rows()
    assert len(rows) == len(report.AIMS) == 6
    gz = rows["pull, realistic image, gzip, overlay (realistic)"]
    assert "| 1.10 s | 2.20 s | 0.50 | <= 0.5 | **met** |" in gz
    assert "missed by 2.00x" in rows["pull, 64 tiny layers, overlay (deep-64)"]
    assert "| 4.50 s |" in rows["pull + mount, 500 tiny layers, overlay (deep-500)"]
    assert rows["pull + mount, 500 tiny layers, overlay (deep-500)"].endswith("**met** |")
    assert "missed by 1.50x" in rows["`lamina images` (one image, CLI) (realistic)"]


def test_a_row_that_could_not_be_measured_says_why() -> None:
    rows = _rows()
    assert "not measured: pull not run on realistic-zstd (not in this profile)" in \
        rows["pull, realistic image, zstd, overlay (realistic-zstd)"]
    assert "not measured: podman run: error: podman exit 125: no runtime" in \
        rows["`run --rm IMG /bin/true`, overlay (CLI) (realistic)"]
