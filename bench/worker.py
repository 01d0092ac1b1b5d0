"""One repetition in a fresh process (pyperf-style): ``python -m bench.worker TASK.json``.

The runner writes a task file and starts this module for every repetition of every cell, so no
state (open stores, warmed Python caches, leaked mounts) carries from one sample to the next. The
worker runs the task and writes its result as JSON to ``task["out"]``; the runner reads it. A
worker that dies leaves no result, and the runner records the repetition as an error.

Task kinds: ``lifecycle`` (``phases.Lifecycle``), ``concurrent`` (``phases.concurrent``),
``roofline`` and ``machine`` (``roofline``), ``peers`` (``peers``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    kind = task["kind"]
    if kind == "lifecycle":
        from bench.phases import Lifecycle

        return Lifecycle(task).run()
    if kind == "concurrent":
        from bench.phases import concurrent

        return concurrent(task)
    if kind == "roofline":
        from bench.roofline import measure_workload

        return measure_workload(task)
    if kind == "machine":
        from bench.roofline import measure_machine

        return measure_machine(task)
    if kind == "peers":
        from bench.peers import measure_peers

        return measure_peers(task)
    raise ValueError(f"unknown task kind {kind!r}")


KNOBS = ("LAMINA_BENCH_SLOWDOWN_APPLY", "LAMINA_BENCH_SLOWDOWN_REGISTER")
"""The instrument's test-only slowdowns (bench/instrument.py), read only here, on the A/B side
that asks for one (``revs.Side.environ`` strips them from every other side)."""


def _knob(env: "os._Environ[str] | dict[str, str]", name: str) -> float:
    raw = env.get(name)
    if not raw:
        return 0.0
    value = float(raw)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {raw!r}")
    return value


def set_test_knobs(env: "os._Environ[str] | dict[str, str]") -> dict[str, float]:
    """Set the instrument's slowdowns in this worker's lamina; returns those set.

    - ``LAMINA_BENCH_SLOWDOWN_APPLY=S``: every tar apply takes S times longer
      (``drivers.tar.apply.TEST_SLOWDOWN``);
    - ``LAMINA_BENCH_SLOWDOWN_REGISTER=S``: every ``LayerStore.register`` (apply, DiffID, sync,
      the row: all of ``materialise``'s work per layer) sleeps S times its own duration, so the
      ``materialise`` cell is S slower and the cells that register layers among other work
      (pull, load, commit) less.

    A revision without the piece a knob needs is left alone; a bad value is an error, not a
    silent 0."""
    done: dict[str, float] = {}
    apply_s = _knob(env, "LAMINA_BENCH_SLOWDOWN_APPLY")
    if apply_s:
        try:
            from drivers.tar import apply
        except ImportError:
            pass
        else:
            apply.TEST_SLOWDOWN = apply_s
            done["apply"] = apply_s
    register_s = _knob(env, "LAMINA_BENCH_SLOWDOWN_REGISTER")
    if register_s:
        try:
            from graph import LayerStore
        except ImportError:
            pass
        else:
            LayerStore.register = _slowed(LayerStore.register, register_s)  # type: ignore[method-assign]
            done["register"] = register_s
    return done


def _slowed(fn: Any, factor: float) -> Any:
    import functools

    @functools.wraps(fn)
    def slow(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            time.sleep(factor * (time.perf_counter() - t0))

    return slow


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.worker TASK.json", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        task = json.load(f)
    from bench import interleave

    gate = interleave.gate()  # an A/B pair interleaved per phase (bench/interleave.py); else no-op
    try:
        gate.start()
        set_test_knobs(os.environ)
        t0 = time.perf_counter()
        result = run_task(task)
        result["worker_seconds"] = time.perf_counter() - t0
        result["pid"] = os.getpid()
        result["turns"] = gate.turns
        # whose code was measured: an A/B run checks each side ran its own revision's lamina
        result["code"] = {m: getattr(sys.modules[m], "__file__", None) for m in ("graph", "drivers", "bench")
                          if m in sys.modules}
        tmp = task["out"] + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f)
        os.replace(tmp, task["out"])
    finally:
        gate.end()
    return 0


if __name__ == "__main__":
    sys.exit(main())
