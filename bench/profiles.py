"""Profiles: named sets of knobs. Every knob can be overridden on the command line.

``default`` (``make bench``, a few tens of minutes on 2 cores): every driver this machine runs,
5 repetitions, the realistic image, the three series (layer depth, image size, file count), the
concurrent-containers series on the realistic image, every peer on the main workloads.

``quick`` (``make bench-quick``, about a minute and a half): vfs and overlay, tiny workloads,
no peers; reported against ``results/baseline-quick.json`` as history, never failing on it: a
baseline from another day and load cannot tell a regression from a busy neighbour (issue 12).
CI's gate (``make bench-gate``, ``bench/gate.py``) runs these workloads as an A/B of the
commit against its parent instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bench.peers import PEERS
from bench.phases import PHASE_NAMES


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    reps: int
    drivers: tuple[str, ...] | None  # None: every registered driver this machine supports
    workloads: tuple[str, ...]
    phases: tuple[str, ...] = PHASE_NAMES
    concurrency: tuple[int, ...] = ()
    concurrency_workload: str = ""
    peers: tuple[str, ...] = ()
    peer_workloads: tuple[str, ...] = ()
    # deepest image each driver gets from the profile (an explicit --workloads is not limited)
    max_depth: dict[str, int] = field(default_factory=dict)
    # phases left out on series-only workloads (every workload not in full_workloads), to keep
    # the profile's time budget; empty full_workloads: every workload gets every phase
    full_workloads: tuple[str, ...] = ()
    series_skip_phases: tuple[str, ...] = ()
    baseline: str = ""  # file name in the results dir
    fail_on_regression: bool = False
    alpha: float = 0.05  # significance level of the regression test
    task_timeout: float = 1800.0
    # phase -> K: the phase runs K times per repetition, its sample the median (bench/phases.py);
    # for the cheap phases of an A/B gate, where one timing is too noisy to pair on its own
    repeats: dict[str, int] = field(default_factory=dict)
    fs_size: dict[str, int] = field(default_factory=lambda: {"ext4": 24 << 30, "btrfs": 24 << 30})

    def with_(self, **kw: Any) -> "Profile":
        return replace(self, **kw)


# The phase timed K times per pair, in turns (bench/phases.py), each pair judged on the median of
# its K per-turn ratios (paired.pair_log_ratio): one timing of the ~130 ms materialise spreads
# 15-30% on this VM (even on tmpfs, even in one process), more than the regressions to catch; the
# median of 9 per-turn ratios spread 0.07-0.12 (log) under a CPU hog. pull and load gained
# little from repeats (0.19 -> 0.16, 0.09 -> 0.12) at 4 extra timings each, so they run once.
# remove (deletions and a syncfs of the whole loop filesystem) spread ~0.3 timed once, and was
# the cell of both same-commit false alarms of the instrument at K=1.
GATE_REPEATS: dict[str, int] = {"materialise": 7, "remove": 7}


DEPTHS = (1, 8, 32, 64, 128, 500)  # 64 and 500: issue 15's tiny-layer aims (report.py AIMS)

PROFILES: dict[str, Profile] = {
    "default": Profile(
        name="default",
        description="every driver, 5 repetitions, realistic image + depth, size and file-count series, peers",
        reps=5,
        drivers=None,
        workloads=("realistic", "realistic-zstd", "small-files", "large-files",
                   *(f"deep-{d}" for d in DEPTHS),
                   "small-files-1k", "small-files-5k",
                   "large-files-32m", "large-files-128m"),
        concurrency=(1, 2, 4, 8, 16),
        concurrency_workload="realistic",
        peers=tuple(p.name for p in PEERS),
        peer_workloads=("realistic", "realistic-zstd", "small-files", "large-files", "deep-64", "deep-128",
                        "deep-500"),
        max_depth={"vfs": 128},
        full_workloads=("realistic", "small-files", "large-files", "deep-128"),
        series_skip_phases=("load",),
        baseline="baseline.json",
    ),
    "quick": Profile(
        name="quick",
        description="vfs + overlay, 5 repetitions, tiny workloads, no peers (CI)",
        reps=5,
        drivers=("vfs", "overlay"),
        workloads=("small-files-500", "large-files-8m", "deep-8"),
        concurrency=(1, 4),
        concurrency_workload="small-files-500",
        baseline="baseline-quick.json",
        fail_on_regression=False,  # the baseline is history; CI's gate is the A/B (bench/gate.py)
        alpha=0.01,
        task_timeout=300.0,
        fs_size={"ext4": 4 << 30, "btrfs": 4 << 30},
    ),
}
