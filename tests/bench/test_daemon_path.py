"""The start phase's front doors (``bench.daemon_path``): a real lifecycle repetition on a tiny
runnable image (the tests' busybox) times ``start`` in process, ``start/cli`` (``lamina run
--rm``) and ``start/daemon`` (the docker CLI against a ``lamina daemon`` the bench starts on the
same store), stops the daemon by PID and leaves nothing running or mounted; the report shows the
paths under ``start``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import daemon_path, fs
from bench import results as R
from tests.runtime.busybox import busybox_layers, skip_reason
from tests.tarbuild import make_tar

pytestmark = [pytest.mark.integration]


def busybox_workload(base: Path) -> "object":
    from bench.workloads import Workload
    from bench.workloads import image

    base.mkdir(parents=True)
    layers = []
    for i, entries in enumerate(busybox_layers()):
        tar = base / f"layer{i}.tar"
        tar.write_bytes(make_tar(entries))
        layers.append(image.pack_layer(tar, base / "blobs"))
    cfg = image.image_config(layers, ["/bin/sh"], ["busybox"])
    (base / "config.json").write_bytes(cfg)
    ref = "bench/busybox:latest"
    digests = image.write_layout(base / "layout", layers, cfg, ref)
    return Workload(name="busybox", kind="realistic", spec={}, dir=str(base), layers=layers,
                    config=str(base / "config.json"), config_digest=digests["config"],
                    manifest_digest=digests["manifest"], layout=str(base / "layout"), ref=ref, runnable=True)


def _daemons_on(root: Path) -> list[int]:
    """PIDs of processes whose command line names ``root`` (a daemon left running)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"daemon" in cmd and any(str(root).encode() in a for a in cmd):
            found.append(int(pid))
    return found


def test_lifecycle_times_the_cli_and_the_daemon_beside_start(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    if daemon_path.docker_cli() is None:
        pytest.skip("no docker CLI installed")
    from bench.phases import Lifecycle

    w = busybox_workload(tmp_path / "w")
    stores = tmp_path / "stores"
    stores.mkdir()
    task = {"driver": "vfs", "workload": w.to_json(), "store_base": str(stores), "rep": 0,  # type: ignore[attr-defined]
            "phases": ["materialise", "create", "start"]}
    res = Lifecycle(task).run()
    phases = res["phases"]
    for name in ("start", "start/cli", "start/daemon"):
        assert "seconds" in phases[name], (name, phases[name], res["info"].get("tracebacks"))
        assert 0 < phases[name]["seconds"] < 60
    assert not _daemons_on(stores)
    assert not fs.mounts_under(tmp_path)
    assert not list(stores.iterdir())  # the lifecycle's teardown removed the store, socket dir and all


def test_a_workload_without_bin_true_skips_both_paths() -> None:
    got = daemon_path.measure(Path("/nonexistent"), "vfs", "x:1", runnable=False)
    assert set(got) == set(daemon_path.PATHS)
    assert all("/bin/true" in o["skipped"] for o in got.values())


def test_report_shows_the_paths_under_start() -> None:
    from bench import report

    suite = R.Suite(label="t", profile="quick")
    suite.drivers = {"overlay": None}
    for name, secs in (("start", [0.30, 0.31, 0.32]), ("start/cli", [0.40, 0.41, 0.42]),
                       ("start/daemon", [0.20, 0.21, 0.22])):
        for rep, s in enumerate(secs):
            suite.add_sample("phase", name, "overlay", "realistic", None, rep, s)
    suite.add_skip("phase", "start/cli", "vfs", "realistic", None, "why not")
    rows = report.workload_table(suite, "realistic")
    start_rows = [r for r in rows if r.startswith("| start |")]
    assert [r.split("|")[2].strip() for r in start_rows] == ["overlay", "overlay · cli", "overlay · daemon"]
    assert "410 ms" in start_rows[1] or "0.41" in start_rows[1], start_rows[1]
