"""Micro benchmark: what a bridge network adds to ``run --rm bb:1 /bin/true``, against
``--network none``; all inside a network namespace the benchmark makes (tests'
``own_netns``: nothing touches the machine's own network).

Run (as root)::

    .venv/bin/python -m pytest bench/micro/test_network_bench.py --benchmark-columns=min,median,max

- ``run_rm[none|bridge|user]``: ``runtime.run`` + ``runtime.wait`` in this process (imports
  warm), overlay on crun; ``bridge`` is the default network, ``user`` a user-defined one (hosts
  entries for names); ``extra_info`` has the median of the ``network`` step (namespace, veth,
  addresses, hosts files: ``runtime.network.setup.attach``) and of ``released`` (which holds the
  teardown).
- ``cli_run_rm[none|bridge]``: the real command in a fresh process, call to exit.
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.busybox import skip_reason, write_busybox_layout
from tests.runtime.netns_fixture import own_netns  # noqa: F401 - a fixture

ROUNDS = 15
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(own_netns: str, tmp_path: Path) -> Iterator[Any]:  # noqa: F811
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from graph import Store
    from graph.archive import load_archive
    from runtime.network import api

    layout = write_busybox_layout(tmp_path / "oci")
    s = Store(tmp_path / "root", driver="overlay")
    try:
        load_archive(s, layout)
        api.create_network(s, "user")
        yield s
    finally:
        import runtime

        for c in s.containers.list():
            runtime.remove(s, c.id, force=True)
        s.close()


@pytest.mark.parametrize("mode", ["none", "bridge", "user"])
def test_run_rm(benchmark: Any, store: Any, mode: str) -> None:
    import runtime
    from runtime import containers

    marks: dict[str, list[float]] = defaultdict(list)
    last = [0.0]

    def hook(name: str) -> None:
        now = time.perf_counter()
        marks[name].append(now - last[0])
        last[0] = now

    def once() -> None:
        last[0] = time.perf_counter()
        r = runtime.run(store, "bb:1", config={"Cmd": ["/bin/true"], "HostConfig": {
            "NetworkMode": mode, "AutoRemove": True}}, runtime="crun")
        assert runtime.wait(store, r, io.BytesIO(), io.BytesIO()) == 0

    containers.phase_hook = hook
    try:
        once()  # warm: the default bridge is made on first use
        marks.clear()
        benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
    finally:
        containers.phase_hook = None
    for k, v in marks.items():
        benchmark.extra_info[f"{k}_ms"] = round(statistics.median(v) * 1000, 2)


@pytest.mark.parametrize("mode", ["none", "bridge"])
def test_cli_run_rm(benchmark: Any, store: Any, mode: str) -> None:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = [sys.executable, "-m", "lamina", "--root", str(store.root), "run", "--rm", "--network", mode,
           "bb:1", "/bin/true"]
    subprocess.run(cmd, check=True, env=env, cwd=REPO)

    def once() -> None:
        subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
