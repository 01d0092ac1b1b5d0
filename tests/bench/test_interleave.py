"""Per-phase interleaving (bench/interleave.py) with real worker processes: while one worker holds
the token, the other does nothing; the order of each turn is random; a worker that dies or hangs
cannot wedge the runner."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bench import interleave

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import sys, time
    from bench import interleave
    g = interleave.gate()
    name, log, phases, die_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    g.start()
    with open(log, "a") as f:
        for i in range(phases):
            t0 = time.monotonic()
            time.sleep(0.02)  # "setup and a timed phase"
            f.write(f"{name} {i} {t0} {time.monotonic()}\\n")
            f.flush()
            if i == die_at:
                raise SystemExit(3)
            g.turn(f"p{i}")
    g.end()
""")


def _seat(name: str, log: Path, phases: int, die_at: int = -1, script: str = WORKER) -> interleave.Seat:
    (wr, rw), (rr, ww) = interleave.pipes()
    env = dict(os.environ, PYTHONPATH=str(REPO), **{interleave.ENV: f"{wr},{ww}"})
    proc = subprocess.Popen([sys.executable, "-c", script, name, str(log), str(phases), str(die_at)],
                            env=env, pass_fds=(wr, ww))
    os.close(wr)
    os.close(ww)
    return interleave.Seat(name, proc, rw, rr)


def _intervals(log: Path) -> list[tuple[str, int, float, float]]:
    rows = [line.split() for line in log.read_text().splitlines()]
    return sorted(((n, int(i), float(a), float(b)) for n, i, a, b in rows), key=lambda r: r[2])


def test_turns_never_overlap_and_alternate(tmp_path: Path) -> None:
    log = tmp_path / "log"
    seats = [_seat("A", log, 6), _seat("B", log, 6)]
    try:
        assert interleave.take_turns(seats, random.Random(1), timeout=60) is None
    finally:
        for s in seats:
            s.close()
            s.proc.wait(10)
    rows = _intervals(log)
    assert len(rows) == 12
    for prev, nxt in zip(rows, rows[1:]):
        assert prev[3] <= nxt[2], (prev, nxt)  # one holds the token at a time
    # turn k of both workers comes before turn k+1 of either: the halves of a pair are adjacent
    assert [r[1] for r in rows] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    firsts = [rows[2 * k][0] for k in range(6)]
    assert set(firsts) == {"A", "B"}, firsts  # the order is drawn per turn (seed 1: both happen)
    assert [s.turns for s in seats] == [[f"p{i}" for i in range(6)]] * 2
    assert all(s.proc.returncode == 0 for s in seats)


def test_a_dying_worker_leaves_the_other_to_finish(tmp_path: Path) -> None:
    log = tmp_path / "log"
    seats = [_seat("A", log, 5, die_at=1), _seat("B", log, 5)]
    try:
        assert interleave.take_turns(seats, random.Random(2), timeout=60) is None
    finally:
        for s in seats:
            s.close()
            s.proc.wait(10)
    rows = _intervals(log)
    assert [r[1] for r in rows if r[0] == "B"] == [0, 1, 2, 3, 4]
    assert [r[1] for r in rows if r[0] == "A"] == [0, 1]
    assert seats[0].proc.returncode == 3 and seats[1].proc.returncode == 0


def test_a_hung_worker_times_out(tmp_path: Path) -> None:
    hang = "import time\nfrom bench import interleave\ninterleave.gate().start()\ntime.sleep(60)\n"
    seats = [_seat("A", tmp_path / "log", 1, script=hang)]
    t0 = time.monotonic()
    try:
        assert interleave.take_turns(seats, random.Random(0), timeout=2) == "timeout"
        assert time.monotonic() - t0 < 10
    finally:
        for s in seats:
            s.close()
            s.proc.kill()
            s.proc.wait(10)


def test_without_the_variable_the_gate_is_a_no_op() -> None:
    g = interleave.Gate(None)
    g.start()
    g.turn("x")
    g.end()
    assert not g.active and g.turns == 0
