"""bench.peers: which peers run for a workload, and one peer's failure staying its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench import peers as P
from bench import workloads as W


def test_umoci_and_its_bundle_runners_are_not_run_on_zstd_layers() -> None:
    """Debian 12's umoci refuses tar+zstd blobs; the bare runtimes run umoci's bundle."""
    for name in ("umoci unpack", "crun run", "runc run"):
        peer = P.BY_NAME[name]
        if P.tool_missing(peer.tool) or P.tool_missing("umoci"):
            pytest.skip(f"{peer.tool} is not installed")
        assert P.applicable(peer, True, True, 3, "gzip") is None
        assert "gzip layers only" in (P.applicable(peer, True, True, 3, "zstd") or "")
    assert P.applicable(P.BY_NAME["podman pull"], True, True, 3, "zstd") == P.applicable(
        P.BY_NAME["podman pull"], True, True, 3, "gzip")


def test_a_bundle_umoci_cannot_unpack_fails_the_runtimes_alone(tmp_path: Path) -> None:
    """A real umoci on a layout it cannot unpack: ``umoci unpack``, ``crun run`` and ``runc run``
    each carry the error; the task itself returns (the other peers of the workload still run)."""
    if P.tool_missing("umoci"):
        pytest.skip("umoci is not installed")
    w = W.build(W.parse("small-files-40"), tmp_path / "w", seed=1)
    broken = dataclasses.replace(w, layout=str(tmp_path / "no-such-layout"), runnable=True)
    res = P.measure_peers({"workload": broken.to_json(), "peers": ["umoci unpack", "crun run", "runc run"],
                           "registry": None, "scratch": str(tmp_path / "scratch")})
    cells = res["cells"]
    assert set(cells) == {"umoci unpack", "crun run", "runc run"}
    assert all("error" in c and "seconds" not in c for c in cells.values()), cells
    assert "no bundle to run" in cells["runc run"]["error"]
    assert not (tmp_path / "scratch").exists()
