"""Power cuts at random points of pull, load, commit, rmi, prune, container create and rm, on a
store rooted on the simulator (``tests/powercut/simfs.py``); see ``trials.py`` for the checks.

``make test`` runs a bounded profile (``POWERCUT_CUTS``, default 24 per driver); ``make
test-powercut`` runs the long one (500). ``POWERCUT_SEED`` picks the random sequence (the failure
message names it, so a failing sequence can be replayed).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Lamina, app_image, small_image, write_oci_layout
from tests.powercut.harness import Machine, scratch_tmpfs
from tests.powercut.trials import run_trials, tree
from tests.registry import REGISTRY_BIN, run_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts tmpfs and FUSE: needs root"),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse"),
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="docker-registry is not installed"),
]

CUTS = int(os.environ.get("POWERCUT_CUTS", "24"))


def _seed() -> int:
    return int(os.environ.get("POWERCUT_SEED") or random.SystemRandom().randrange(1 << 30))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A registry holding app:1, an OCI layout holding small:1, and the trees both should have."""
    d = tmp_path_factory.mktemp("powercut-world")
    app, small = app_image(), small_image()
    app_dir = write_oci_layout(d / "app", [(app, "app:1")])
    small_dir = write_oci_layout(d / "small", [(small, "small:1")])
    ref = Lamina(d / "reference")
    ref("load", "-i", str(app_dir))
    ref("load", "-i", str(small_dir))
    from graph import Store

    expected = {}
    with Store(ref.root) as s:
        for name, key in (("app:1", "app"), ("small:1", "small")):
            layer = s.layers.get(s.resolve_image(name).top_layer)
            expected[key] = tree(s.layers.mount(layer.cache_id))
            s.layers.unmount(layer.cache_id)
    with run_registry(d / "reg") as reg:
        ref("tag", "app:1", f"{reg.host}/app:1")
        ref("push", "--insecure", f"{reg.host}/app:1")
        yield {"pull_ref": f"{reg.host}/app:1", "load_dir": small_dir, "expected": expected}
    shutil.rmtree(d / "reference", ignore_errors=True)


@pytest.mark.timeout(120 + 20 * CUTS)  # a trial takes 2-5 s here; the default 300 s is for one scenario
@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_power_cuts_leave_a_store_that_checks_clean_and_works(driver: str, tmp_path: Path, world: dict) -> None:
    seed = _seed()
    with scratch_tmpfs(tmp_path / "tmpfs") as t:
        m = Machine(t, tmp_path / "mnt", driver=driver)
        m.boot()
        try:
            fig = run_trials(m, CUTS, seed=seed, **world)
        finally:
            m.close()
    print(f"\npowercut {driver} seed {seed}: {fig.summary()}")
    assert not fig.failures, f"seed {seed}:\n" + "\n".join(fig.failures) + "\n\n" + "\n".join(fig.log)
    assert fig.cuts_inside + fig.cuts_after == CUTS
    assert fig.cuts_inside >= CUTS // 3, fig.summary()  # most cuts land inside an operation
