"""bench.roofline: a pull's limit is pipelined (max of the slowest step and the total over the
cores); other phases keep the sequential sum."""

from __future__ import annotations

import pytest

from bench import results as R
from bench.roofline import LIMITS, limit_samples


def _pull_suite(cpus: int, parts: dict[tuple[str, str, str], float]) -> R.Suite:
    s = R.Suite(label="x", workloads={"w": {"blob_bytes": 256 << 20, "manifest": "sha256:aa"}},
                drivers={"overlay": None})
    s.machine["cpus"] = cpus
    for (kind, name, where), v in parts.items():
        s.add_sample(kind, name, where, "" if kind == "machine" else "w", None, 0, v)
    return s


PARTS = {("roofline", "sha256-blob", "cpu"): 0.1, ("machine", "write-seq", "ext4"): 0.2,
         ("roofline", "gunzip-isal", "cpu"): 0.4, ("roofline", "sha256-tar", "cpu"): 0.1,
         ("roofline", "tar-x", "ext4"): 0.6}


def test_pull_limit_is_the_total_over_the_cores_when_that_is_larger() -> None:
    assert [c[1] for c in LIMITS["pull"]["*"]] == ["sha256-blob", "write-seq", "gunzip-isal", "sha256-tar", "tar-x"]
    # total 1.4 s of work: on 2 cores 0.7 s, more than the slowest step (tar -x, 0.6 s)
    assert limit_samples(_pull_suite(2, PARTS), "overlay", "w", "pull") == {0: pytest.approx(0.7)}
    assert limit_samples(_pull_suite(1, PARTS), "overlay", "w", "pull") == {0: pytest.approx(1.4)}


def test_pull_limit_is_the_slowest_step_on_many_cores() -> None:
    assert limit_samples(_pull_suite(8, PARTS), "overlay", "w", "pull") == {0: pytest.approx(0.6)}


def test_a_zstd_workload_s_pull_limit_decompresses_with_zstd() -> None:
    """realistic-zstd's blobs are zstd: its limit takes zstd -d where a gzip workload takes
    ISA-L gunzip (and has a limit even though no gunzip measure ran for it)."""
    parts = {k: v for k, v in PARTS.items() if k[1] != "gunzip-isal"}
    parts[("roofline", "zstd-d", "cpu")] = 0.2
    s = _pull_suite(2, parts)
    assert limit_samples(s, "overlay", "w", "pull") is None  # a gzip workload needs its gunzip
    s.workloads["w"]["spec"] = {"compression": "zstd"}
    # 0.1 + 0.2 + 0.2 + 0.1 + 0.6 = 1.2 s of work on 2 cores: 0.6 s, as tar -x alone
    assert limit_samples(s, "overlay", "w", "pull") == {0: pytest.approx(0.6)}
    s.machine["cpus"] = 1
    assert limit_samples(s, "overlay", "w", "pull") == {0: pytest.approx(1.2)}
