"""Micro benchmark: ``lamina run --rm IMG /bin/true`` from call to exit, split into lamina's own
share and the OCI runtime's, side by side with a bare runtime run of the same bundle and with
``podman run --rm`` of the same image (MACHINE-NOTES: podman 134 ms with crun on a quiet
machine; the aim is at most half of that for the whole ``run --rm``, and lamina's own share
under 50 ms on overlay).

Run (as root; the store sits on a journaled ext4 loop filesystem made here, see MACHINE-NOTES)::

    .venv/bin/python -m pytest bench/micro/test_run_bench.py --benchmark-columns=min,median,max

What each benchmark times:

- ``cli_run_rm[overlay-crun|overlay-runc|vfs-crun]``: the real command in a fresh process,
  ``lamina --root R [--runtime X] run --rm bb:1 /bin/true``, call to exit. Bytecode caching is on
  for the child (the sessions here set PYTHONDONTWRITEBYTECODE=1, which makes every start compile
  all of lamina: about +80 ms that no user pays).
- ``bare_runtime[crun|runc]``: ``<runtime> run`` of the bundle lamina writes for the same image
  and command (rootfs mounted, same spec), a fresh container ID per round, from this process;
  crun inside a private mount namespace with the cgroup2 mount hidden, exactly as lamina's
  monitor calls it (same pre-exec function).
- ``podman_run_rm[crun|runc]``: ``podman run --rm`` of the same image loaded into a podman store
  on the same filesystem (cgroupfs manager; ``--ulimit`` set because podman's default nofile
  cannot be set here; crun started in the same private namespace, since it refuses hybrid
  cgroups). Skipped without podman.
- ``python_start``: ``python -c pass`` (the interpreter with site and the editable install's
  import hook); ``python_imports``: ``python -c 'import lamina.cli.main, graph, runtime'``.
- ``phases[overlay|vfs]``: ``runtime.run`` + ``runtime.wait`` in this process (imports warm),
  with ``runtime.lifecycle.phase_hook`` marking the steps; ``extra_info`` has the median of each
  step: store open, create (record + RW layer), mount, bundle (user, spec, checks, files),
  spawn (fork of the monitor), started (the monitor starts the runtime's foreground ``run``
  until the pid file appears), recorded (state written), exited (the container ran
  ``/bin/true``, the runtime deleted it, the monitor reported), released (unmount, record, RW
  layer and directory removed), finished (the monitor told).

The report at the end of the module (``test_zz_report``) prints the split: lamina's share =
interpreter + imports + the lamina steps; the runtime's = started + exited (which also hold the
monitor's fork and exec of the runtime, a millisecond or two).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.loopfs import loop_filesystem, loopfs_skip_reason
from tests.runtime.busybox import skip_reason, write_busybox_layout

ROUNDS = 15
LAMINA = [sys.executable, "-m", "lamina"]
SCRIPT = Path(sys.executable).parent / "lamina"
PODMAN = shutil.which("podman")
RESULTS: dict[str, Any] = {}

_reason = skip_reason() or loopfs_skip_reason("ext4")
if _reason:
    pytest.skip(_reason, allow_module_level=True)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("LAMINA_")}


def _lamina() -> list[str]:
    return [str(SCRIPT)] if SCRIPT.exists() else LAMINA


class Fixture:
    def __init__(self, base: Path, layout: Path) -> None:
        self.base = base
        self.layout = layout
        self.roots: dict[str, Path] = {}
        # podman wants a run root of at most 50 characters: a short temp dir, removed at the end
        self.podman_run = Path(tempfile.mkdtemp(prefix="lamina-bench-pm-", dir="/tmp"))


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    tmp = tmp_path_factory.mktemp("run-bench")
    layout = write_busybox_layout(tmp / "oci")
    with loop_filesystem(tmp, "ext4", size="1G") as fs:
        f = Fixture(Path(fs.mountpoint), layout)
        try:
            yield f
        finally:
            for root in f.roots.values():
                _teardown_root(root)
            if PODMAN:
                subprocess.run(_podman(f) + ["rm", "-af"], capture_output=True, env=_env())
                subprocess.run(_podman(f) + ["system", "reset", "-f"], capture_output=True, env=_env())
                for d in (f.base / "podman", f.podman_run):
                    subprocess.run(["umount", "-R", str(d)], capture_output=True)
            shutil.rmtree(f.podman_run, ignore_errors=True)


def _teardown_root(root: Path) -> None:
    from graph import Store
    from tests.runtime.busybox import cleanup_store

    with Store(root) as store:
        cleanup_store(store, root)


def _root(fx: Fixture, driver: str) -> Path:
    """A lamina root on the loop filesystem with ``bb:1`` loaded, and bytecode compiled."""
    if driver not in fx.roots:
        root = fx.base / f"lamina-{driver}"
        subprocess.run(_lamina() + ["--root", str(root), "--driver", driver, "load", "-i", str(fx.layout)],
                       check=True, capture_output=True, env=_env())
        fx.roots[driver] = root
    return fx.roots[driver]


def _timed(cmd: list[str], env: dict[str, str], preexec: Any = None) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec)
    dt = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    return dt


def _record(name: str, benchmark: Any) -> None:
    stats = benchmark.stats.stats
    RESULTS[name] = {"median": stats.median, "min": stats.min}


# ---- the whole command ------------------------------------------------------------------------------
@pytest.mark.parametrize("driver,rt", [("overlay", "crun"), ("overlay", "runc"), ("vfs", "crun")])
def test_cli_run_rm(benchmark: Any, fx: Fixture, driver: str, rt: str) -> None:
    if shutil.which(rt) is None:
        pytest.skip(f"{rt} not installed")
    root = _root(fx, driver)
    env = _env()
    cmd = _lamina() + ["--root", str(root), "--runtime", rt, "run", "--rm", "bb:1", "/bin/true"]
    for _ in range(2):
        _timed(cmd, env)  # bytecode, page cache
    benchmark.pedantic(_timed, args=(cmd, env), rounds=ROUNDS, iterations=1)
    _record(f"cli_run_rm[{driver}-{rt}]", benchmark)


# ---- the runtime alone --------------------------------------------------------------------------------
@pytest.mark.parametrize("rt", ["crun", "runc"])
def test_bare_runtime(benchmark: Any, fx: Fixture, rt: str) -> None:
    """``<rt> run`` of lamina's bundle for the same container, nothing else."""
    if shutil.which(rt) is None:
        pytest.skip(f"{rt} not installed")
    import runtime
    from graph import Store

    root = _root(fx, "overlay")
    bundle = fx.base / f"bundle-{rt}"
    state = fx.base / f"state-{rt}"
    bundle.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    with Store(root) as store:
        from lamina import containerconfig as cc

        img = store.resolve_image("bb:1")
        cfg = cc.merge(cc.user_config("bb:1", cmd=["/bin/true"]), store.images.config(img.id).config)
        c = runtime.create(store, str(img.id), name=f"bare-{rt}", config=cfg)
        spec = json.loads((root / "containers" / c.id / "config.json").read_text())
        spec["root"]["path"] = store.containers.mount(c)
        etc = root / "containers" / c.id
        from runtime import bundle as rb

        rb.write_etc_files(str(etc), spec["hostname"], "none")
        (bundle / "config.json").write_text(json.dumps(spec))
        n = [0]
        from runtime.oci import open_runtime

        preexec = open_runtime(rt, str(state)).preexec()  # crun: the same private namespace as lamina's

        def once() -> float:
            n[0] += 1
            return _timed([rt, "--root", str(state), "run", "--bundle", str(bundle), f"bare{n[0]}"], _env(), preexec)

        try:
            once()
            benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
        finally:
            store.containers.unmount(c)
            runtime.remove(store, c.id, force=True)
    _record(f"bare_runtime[{rt}]", benchmark)


# ---- podman ------------------------------------------------------------------------------------------
def _podman(fx: Fixture) -> list[str]:
    d = fx.base / "podman"
    return [str(PODMAN), "--root", str(d / "root"), "--runroot", str(fx.podman_run), "--storage-driver", "overlay",
            "--cgroup-manager", "cgroupfs", "--events-backend", "none"]


@pytest.mark.skipif(PODMAN is None, reason="podman not installed")
@pytest.mark.parametrize("rt", ["crun", "runc"])
def test_podman_run_rm(benchmark: Any, fx: Fixture, rt: str) -> None:
    archive = fx.base / "bb.tar"
    if not archive.exists():
        subprocess.run(["tar", "-C", str(fx.layout), "-cf", str(archive), "."], check=True)
        subprocess.run(_podman(fx) + ["load", "-i", str(archive)], check=True, capture_output=True, env=_env())
    got = subprocess.run(_podman(fx) + ["images", "-q"], capture_output=True, text=True, env=_env())
    if got.returncode != 0 or not got.stdout.split():
        pytest.skip(f"podman cannot list its images here: {got.stderr.strip()[-300:]}")
    ident = got.stdout.split()[0]
    from runtime.oci import open_runtime

    preexec = open_runtime(rt, str(fx.base / "unused-state")).preexec()  # crun refuses hybrid cgroups
    cmd = _podman(fx) + ["--runtime", rt, "run", "--rm", "--pull", "never", "--network", "none",
                         "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", ident, "/bin/true"]
    env = _env()
    try:
        _timed(cmd, env, preexec)
    except AssertionError as e:
        pytest.skip(f"podman cannot run here: {str(e)[-200:]}")
    benchmark.pedantic(_timed, args=(cmd, env, preexec), rounds=ROUNDS, iterations=1)
    _record(f"podman_run_rm[{rt}]", benchmark)


# ---- the interpreter --------------------------------------------------------------------------------
def test_python_start(benchmark: Any) -> None:
    cmd = [sys.executable, "-c", "pass"]
    _timed(cmd, _env())
    benchmark.pedantic(_timed, args=(cmd, _env()), rounds=ROUNDS, iterations=1)
    _record("python_start", benchmark)


def test_python_imports(benchmark: Any) -> None:
    cmd = [sys.executable, "-c", "import lamina.cli.main, graph, runtime"]
    _timed(cmd, _env())
    benchmark.pedantic(_timed, args=(cmd, _env()), rounds=ROUNDS, iterations=1)
    _record("python_imports", benchmark)


# ---- lamina's steps, in this process ------------------------------------------------------------------
@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_phases(benchmark: Any, fx: Fixture, driver: str) -> None:
    import runtime
    from graph import Store
    from lamina import containerconfig as cc
    from runtime import lifecycle as rc

    root = _root(fx, driver)
    steps: dict[str, list[float]] = defaultdict(list)

    def once() -> None:
        marks: list[tuple[str, float]] = [("begin", time.perf_counter())]
        rc.phase_hook = lambda name: marks.append((name, time.perf_counter()))
        try:
            with Store(root) as store:
                marks.append(("store", time.perf_counter()))
                img = store.resolve_image("bb:1")
                cfg = cc.merge(cc.user_config("bb:1", cmd=["/bin/true"]), store.images.config(img.id).config)
                cfg["HostConfig"]["AutoRemove"] = True
                r = runtime.run(store, str(img.id), config=cfg, attach=True)
                code = runtime.wait(store, r, io.BytesIO(), io.BytesIO())
                assert code == 0
        finally:
            rc.phase_hook = None
        for (_, a), (name, b) in zip(marks, marks[1:]):
            steps[name].append(b - a)
        steps["total"].append(marks[-1][1] - marks[0][1])

    once()
    steps.clear()
    benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
    med = {k: round(statistics.median(v) * 1000, 2) for k, v in steps.items()}
    benchmark.extra_info.update({f"{k}_ms": v for k, v in med.items()})
    RESULTS[f"phases[{driver}]"] = med


LAMINA_STEPS = ("store", "create", "mount", "bundle", "spawn", "recorded", "released", "finished")
RUNTIME_STEPS = ("started", "exited")


def test_zz_report() -> None:
    """Print the split (runs last in this module; needs the benchmarks above)."""
    need = ["python_start", "python_imports", "phases[overlay]", "cli_run_rm[overlay-crun]", "bare_runtime[crun]"]
    if any(k not in RESULTS for k in need):
        pytest.skip("needs the benchmarks of this module (run without -k)")
    ms = lambda k: RESULTS[k]["median"] * 1000  # noqa: E731
    lines = ["", "lamina run --rm bb:1 /bin/true (medians, ms)"]
    for k in sorted(RESULTS):
        if not k.startswith("phases"):
            lines.append(f"  {k:28s} {ms(k):7.1f}  (min {RESULTS[k]['min'] * 1000:.1f})")
    for drv in ("overlay", "vfs"):
        ph = RESULTS.get(f"phases[{drv}]")
        if not ph:
            continue
        own = sum(ph.get(s, 0.0) for s in LAMINA_STEPS)
        rt = sum(ph.get(s, 0.0) for s in RUNTIME_STEPS)
        lines.append(f"  in-process steps [{drv}]: " + ", ".join(f"{k} {v}" for k, v in ph.items()))
        start, imports = ms("python_start"), ms("python_imports") - ms("python_start")
        lines.append(f"  split [{drv}]: interpreter {start:.1f} + imports {imports:.1f} + lamina steps {own:.1f}"
                     f" = lamina {start + imports + own:.1f}; runtime steps {rt:.1f}")
    lines.append(f"  lamina run --rm over bare crun run: {ms('cli_run_rm[overlay-crun]') - ms('bare_runtime[crun]'):.1f}")
    if "podman_run_rm[crun]" in RESULTS:
        lines.append(f"  lamina / podman (crun, overlay): {ms('cli_run_rm[overlay-crun]') / ms('podman_run_rm[crun]'):.2f}")
    print("\n".join(lines))
