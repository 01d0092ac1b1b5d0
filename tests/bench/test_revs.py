"""bench.revs: revisions built in their own worktree and venv, cached by commit, on a tiny git
repository made by the test (the install step is a light one: no pip, no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import revs

pytestmark = pytest.mark.skipif(subprocess.run(["git", "--version"], capture_output=True).returncode != 0,
                                reason="needs git")


def _git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Two commits of a tiny project whose ``graph`` package says which commit it is."""
    r = tmp_path / "repo"
    (r / "graph").mkdir(parents=True)
    _git(r.parent, "init", "-q", str(r))
    (r / "pyproject.toml").write_text("[project]\nname = 'tiny'\nversion = '0'\n")
    for n in ("one", "two"):
        (r / "graph" / "__init__.py").write_text(f"WHICH = {n!r}\n")
        _git(r, "add", "-A")
        _git(r, "commit", "-qm", n)
    return r


@pytest.fixture
def bench_pkg(tmp_path: Path) -> Path:
    """The runner's bench package (what the workers of every side import)."""
    b = tmp_path / "runner" / "bench"
    b.mkdir(parents=True)
    (b / "__init__.py").write_text("RUNNER = 'new'\n")
    return b


class Install:
    """Stands in for pip: records calls; optionally fails like a broken setup."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[Path] = []
        self.fail = fail

    def __call__(self, python: Path, src: Path, log: Path) -> None:
        self.calls.append(src)
        if self.fail:
            raise revs.BuildError("pip install failed (the base's setup differs)")
        assert python.exists() and (src / "graph").is_dir()


def _build(repo: Path, rev: str, cache: Path, bench_pkg: Path, install: Install) -> revs.Side:
    return revs.build(repo, rev, cache=cache, bench_pkg=bench_pkg, install=install, venv_args=("--without-pip",))


def _run(side: revs.Side, code: str) -> str:
    p = subprocess.run([side.python, "-c", code], cwd=side.cwd, env=side.environ(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_build_makes_a_worktree_and_venv_whose_workers_import_the_right_code(
        repo: Path, bench_pkg: Path, tmp_path: Path) -> None:
    cache, inst = tmp_path / "cache", Install()
    side = _build(repo, "HEAD^", cache, bench_pkg, inst)
    sha = _git(repo, "rev-parse", "HEAD^")
    assert side.commit == sha and Path(side.cwd).parent == cache / f"rev-{sha}"
    other = tmp_path / "other" / "bench"  # a second runner sharing the cached revision
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("RUNNER = 'other'\n")
    side2 = _build(repo, "HEAD^", cache, other, inst)
    assert side2.cwd != side.cwd and _run(side2, "import bench; print(bench.RUNNER)") == "other"
    assert inst.calls == [cache / f"rev-{sha}" / "src"]
    assert sha in _git(repo, "worktree", "list")
    # the measured package from the revision, the bench from the runner: the A/B split
    out = _run(side, "import sys, graph, bench; print(graph.WHICH, bench.RUNNER, sys.prefix)")
    which, runner, prefix = out.split()
    assert (which, runner) == ("one", "new")
    assert Path(prefix) == cache / f"rev-{sha}" / "venv"
    head = _build(repo, "HEAD", cache, bench_pkg, inst)
    assert _run(head, "import graph; print(graph.WHICH)") == "two"


def test_a_built_revision_is_reused(repo: Path, bench_pkg: Path, tmp_path: Path) -> None:
    cache, inst = tmp_path / "cache", Install()
    a = _build(repo, "HEAD", cache, bench_pkg, inst)
    b = _build(repo, _git(repo, "rev-parse", "HEAD"), cache, bench_pkg, inst)  # same commit, other name
    assert a.python == b.python and len(inst.calls) == 1


def test_a_half_made_build_is_made_again(repo: Path, bench_pkg: Path, tmp_path: Path) -> None:
    cache, inst = tmp_path / "cache", Install()
    side = _build(repo, "HEAD", cache, bench_pkg, inst)
    d = Path(side.cwd).parent
    (d / "ready.json").unlink()  # as if killed before the end
    (d / "src" / "stale").write_text("x")
    again = _build(repo, "HEAD", cache, bench_pkg, inst)
    assert len(inst.calls) == 2 and not (d / "src" / "stale").exists()
    assert _run(again, "import graph; print(graph.WHICH)") == "two"


def test_a_failed_build_leaves_nothing(repo: Path, bench_pkg: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(revs.BuildError, match="setup differs"):
        _build(repo, "HEAD", cache, bench_pkg, Install(fail=True))
    assert not list(cache.glob("rev-*/"))
    assert len(_git(repo, "worktree", "list").splitlines()) == 1  # deregistered


def test_bad_revision_and_no_setup(repo: Path, bench_pkg: Path, tmp_path: Path) -> None:
    with pytest.raises(revs.BuildError, match="not a commit"):
        revs.resolve(repo, "no-such-branch")
    with pytest.raises(revs.BuildError, match="not a commit"):
        revs.resolve(repo, "HEAD~5")  # HEAD has no such ancestor: the gate's "no parent" case
    (repo / "pyproject.toml").unlink()
    _git(repo, "commit", "-qam", "no setup")
    with pytest.raises(revs.BuildError, match="nothing to install"):
        _build(repo, "HEAD", tmp_path / "cache", bench_pkg, Install())


def test_prune_keeps_the_most_recent(repo: Path, bench_pkg: Path, tmp_path: Path) -> None:
    cache, inst = tmp_path / "cache", Install()
    old = _build(repo, "HEAD^", cache, bench_pkg, inst)
    os.utime(Path(old.cwd).parent, (1, 1))  # long unused
    new = _build(repo, "HEAD", cache, bench_pkg, inst)
    gone = revs.prune(repo, cache, keep=1)
    assert gone == [old.commit]
    assert [p.name for p in revs.cached(cache)] == [f"rev-{new.commit}"]
    assert old.commit not in _git(repo, "worktree", "list")


def test_the_slowdown_knob_reaches_only_the_side_that_asks(repo: Path, bench_pkg: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMINA_BENCH_SLOWDOWN_APPLY", "0.5")  # leaked into the runner's environment
    monkeypatch.setenv("LAMINA_BENCH_SLOWDOWN_REGISTER", "0.5")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    side = _build(repo, "HEAD", tmp_path / "cache", bench_pkg, Install())
    assert "LAMINA_BENCH_SLOWDOWN_APPLY" not in side.environ()
    assert "LAMINA_BENCH_SLOWDOWN_REGISTER" not in side.environ()
    assert side.environ()["PYTHONPATH"] == side.pythonpath[0]
    slow = side.with_env("slow", LAMINA_BENCH_SLOWDOWN_APPLY="0.25")
    assert slow.environ()["LAMINA_BENCH_SLOWDOWN_APPLY"] == "0.25" and slow.name == "slow"


def test_worktree_side_is_this_interpreter(repo: Path) -> None:
    side = revs.worktree_side(repo)
    assert side.python == sys.executable and side.cwd == str(repo)
    assert side.commit == _git(repo, "rev-parse", "HEAD")
    (repo / "graph" / "__init__.py").write_text("WHICH = 'dirty'\n")
    assert "uncommitted" in revs.worktree_side(repo).label
