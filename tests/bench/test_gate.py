"""bench.gate: when the A/B gate cannot run, it says so in one line and runs its defined
fallback (the quick profile, ungated), never a silent pass. The fallback itself (a whole quick
run) is replaced here by a recorder; the A/B path is tested end to end in test_end_to_end."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import gate


def _git(repo: Path, *args: str) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


@pytest.fixture
def fallback(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def record(**kw: Any) -> int:
        calls.append(kw)
        return 0

    monkeypatch.setattr(gate, "fallback", record)
    return calls


def test_no_parent_is_not_gated(tmp_path: Path, fallback: list[dict[str, Any]],
                                capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "pyproject.toml").write_text("[project]\nname='x'\nversion='0'\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "root")
    rc = gate.gate(work_dir=tmp_path / "w", results_dir=tmp_path / "res", repo=repo, cache=tmp_path / "cache")
    err = capsys.readouterr().err
    assert rc == 0 and len(fallback) == 1
    lines = [x for x in err.splitlines() if "NOT GATED" in x]
    assert len(lines) == 1 and "HEAD^" in lines[0] and "quick profile without a gate" in lines[0]


def test_unbuildable_base_is_not_gated(tmp_path: Path, fallback: list[dict[str, Any]],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "README").write_text("no setup here\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "old")
    (repo / "pyproject.toml").write_text("[project]\nname='x'\nversion='0'\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "new")
    rc = gate.gate(work_dir=tmp_path / "w", results_dir=tmp_path / "res", repo=repo, cache=tmp_path / "cache")
    err = capsys.readouterr().err
    assert rc == 0 and len(fallback) == 1
    assert "NOT GATED" in err and "nothing to install" in err
    assert not list((tmp_path / "cache").glob("rev-*/"))


@pytest.mark.skipif(os.geteuid() != 0, reason="the gate command needs root")
def test_make_bench_gate_runs_the_pairs_the_instrument_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m bench gate` without --pairs (what `make bench-gate` and CI run) uses
    GATE_PAIRS: a default of its own once ran 8 pairs where the rule was measured with 12."""
    from bench import cli

    seen: list[int] = []

    def record(**kw: Any) -> int:
        seen.append(kw["pairs"])
        return 0

    monkeypatch.setattr(gate, "gate", record)
    assert cli.main(["gate"]) == 0
    assert cli.main(["gate", "--pairs", "5"]) == 0
    assert seen == [gate.GATE_PAIRS, 5]
