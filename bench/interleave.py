"""Per-phase interleaving of an A/B pair: both sides' workers alive, one token passed between them.

Why: with one worker per side run one after the other, the two halves of a pair were a whole
lifecycle (about 3 s) apart, and on a shared machine the load changes within 3 s: the halves
correlated only about 0.4 and 8 pairs could not see a 50% slowdown (bench/README.md). Here the
workers of a pair (one per side, the same task) start together and take turns: a worker runs only
while it holds the token, and hands it back at every phase boundary. A turn is "everything from
the end of my last timed phase up to and including my next one" (setup, cache drops, the timed
step), so nothing of one side ever runs while the other side times a phase, and the two samples
of a phase are one phase apart, tens of milliseconds to a second.

The protocol is two pipes per worker, named in the environment (``LAMINA_BENCH_GATE=R,W``):
the runner writes one byte to give the token; the worker writes a line (``turn PHASE`` or
``end``) to hand it back. A worker without the variable (a plain run, a peer task) has a no-op
gate. The runner side (``take_turns``) gives the token to the live workers of a pair in an order
drawn at random per turn, so neither side is always first.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import subprocess
import time
from dataclasses import dataclass, field
from typing import Sequence

ENV = "LAMINA_BENCH_GATE"


_GATE: "Gate | None" = None


def gate() -> "Gate":
    """This process's gate (one per worker process, made from the environment on first use)."""
    global _GATE
    if _GATE is None:
        _GATE = Gate.from_env()
    return _GATE


class Gate:
    """The worker's end: ``start()`` before doing anything, ``turn(phase)`` at a phase boundary
    (hand the token back, wait for it again), ``end()`` when done. Without ``ENV``, no-ops."""

    def __init__(self, spec: str | None) -> None:
        self.r = self.w = -1
        if spec:
            r, w = spec.split(",")
            self.r, self.w = int(r), int(w)
        self.turns = 0

    @classmethod
    def from_env(cls) -> "Gate":
        return cls(os.environ.get(ENV))

    @property
    def active(self) -> bool:
        return self.r >= 0

    def start(self) -> None:
        """Say the worker is up (its interpreter started, bench imported) and wait for the
        first token: the runner gives none until every worker of the pair is ready, so no
        worker's start-up overlaps another's timed phase."""
        if not self.active:
            return
        os.write(self.w, b"ready\n")
        self.wait()

    def wait(self) -> None:
        if not self.active:
            return
        if os.read(self.r, 1) != b"g":
            raise RuntimeError("bench gate: the runner closed the token pipe")

    def turn(self, phase: str) -> None:
        if not self.active:
            return
        self.turns += 1
        os.write(self.w, f"turn {phase}\n".encode())
        self.wait()

    def end(self) -> None:
        if not self.active:
            return
        with contextlib.suppress(OSError):
            os.write(self.w, b"end\n")
            os.close(self.w)
        self.r = self.w = -1


@dataclass
class Seat:
    """The runner's end of one worker's pipes."""

    name: str
    proc: subprocess.Popen[bytes]
    go: int  # runner writes the token here
    back: int  # and reads the worker's hand-back here
    buf: bytes = b""
    turns: list[str] = field(default_factory=list)
    done: bool = False

    def close(self) -> None:
        for fd in (self.go, self.back):
            with contextlib.suppress(OSError):
                os.close(fd)


def pipes() -> tuple[tuple[int, int], tuple[int, int]]:
    """(worker's read, runner's write) for the token and (runner's read, worker's write) for
    the hand-back; the worker's ends are inheritable, the runner's are not."""
    tr, tw = os.pipe()
    br, bw = os.pipe()
    os.set_inheritable(tr, True)
    os.set_inheritable(bw, True)
    return (tr, tw), (br, bw)


def _await(seat: Seat, deadline: float) -> str:
    """The worker's next hand-back line ('turn X', 'end'), or 'exit' when it died or closed
    its end, or 'timeout'."""
    while b"\n" not in seat.buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        ready, _, _ = select.select([seat.back], [], [], min(left, 1.0))
        if not ready:
            if seat.proc.poll() is not None:
                return "exit"
            continue
        chunk = os.read(seat.back, 4096)
        if not chunk:
            return "exit"
        seat.buf += chunk
    line, _, seat.buf = seat.buf.partition(b"\n")
    return line.decode(errors="replace")


def take_turns(seats: Sequence[Seat], rng: random.Random, timeout: float) -> str | None:
    """Pass the token round the seats until every worker has ended; the order of each turn is
    random. Returns None, or why it stopped early ('timeout'): the caller kills the workers."""
    deadline = time.monotonic() + timeout
    for seat in seats:
        msg = _await(seat, deadline)
        if msg == "timeout":
            return "timeout"
        if msg != "ready":  # died on start: nothing to interleave for it
            seat.done = True
    live = [s for s in seats if not s.done]
    while live:
        for seat in rng.sample(live, len(live)):
            try:
                os.write(seat.go, b"g")
            except OSError:  # the worker is gone: its result (or its absence) says why
                seat.done = True
                continue
            msg = _await(seat, deadline)
            if msg == "timeout":
                return "timeout"
            if msg.startswith("turn "):
                seat.turns.append(msg[5:])
            else:
                seat.done = True
        live = [s for s in live if not s.done]
    return None
