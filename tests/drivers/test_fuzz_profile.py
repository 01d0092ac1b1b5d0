"""The differential fuzzer's bounded profile draws the same stacks on every machine
(``tests/drivers/fuzzstacks.py`` says why that needs more than ``derandomize``).

Each check runs the profile's generator in a fresh interpreter, as ``make test`` in another tree
would: bare, and after importing most of the project (what a full run has imported by the time
the fuzzer starts, and what feeds hypothesis's local-constants pool), with different hash seeds
and working directories. Every run must give ``PROFILE_DIGEST``, the digest of the stacks drawn
on the machine that wrote it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.drivers.fuzzstacks import LONG, PROFILE_DIGEST

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ["lamina.cli.main", "lamina.daemon", "runtime", "graph.gc", "graph.distribution.pull",
           "drivers.overlay", "drivers.btrfs", "bench.runner", "bench.phases"]


def _digest(modules: list[str], hash_seed: str, cwd: Path) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(ROOT))
    env.pop("LAMINA_FUZZ", None)
    env.pop("LAMINA_FUZZ_EXAMPLES", None)
    p = subprocess.run([sys.executable, "-m", "tests.drivers.fuzzstacks", *modules],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.mark.skipif(LONG, reason="the long profile draws random stacks")
@pytest.mark.parametrize("imported,hash_seed", [([], "0"), (PROJECT, "12345")],
                         ids=["bare", "after-the-project"])
def test_the_bounded_profile_draws_the_same_stacks_everywhere(
        imported: list[str], hash_seed: str, tmp_path: Path) -> None:
    got = _digest(imported, hash_seed, tmp_path)
    assert got == f"200 {PROFILE_DIGEST}", (
        f"the bounded fuzz profile drew other stacks ({got}, want 200 {PROFILE_DIGEST}): if the "
        f"generator, the model or hypothesis changed on purpose, set PROFILE_DIGEST in "
        f"tests/drivers/fuzzstacks.py to what `python -m tests.drivers.fuzzstacks` prints; "
        f"otherwise something machine-dependent leaked into the draws")
