"""Micro benchmarks of ChainID derivation (graph.digest): one step, and a whole stack of 1, 128
and 500 layers (what every pull, load and register computes for an image).

Run: ``.venv/bin/python -m pytest bench/micro/test_chainid_bench.py --benchmark-only``.
"""

from __future__ import annotations

import hashlib

import pytest

from graph import DiffID, Digest, chain_id, chain_ids


def _diff_ids(n: int) -> list[DiffID]:
    return [DiffID(Digest("sha256:" + hashlib.sha256(str(i).encode()).hexdigest())) for i in range(n)]


def test_chain_id_step(benchmark) -> None:
    a, b = _diff_ids(2)
    parent = chain_id(None, a)
    result = benchmark(chain_id, parent, b)
    assert result.startswith("sha256:")


@pytest.mark.parametrize("depth", [1, 128, 500])
def test_chain_ids_stack(benchmark, depth: int) -> None:
    ids = _diff_ids(depth)
    chains = benchmark(chain_ids, ids)
    assert len(chains) == depth
    benchmark.extra_info["depth"] = depth
