"""Revisions to measure: a git revision built in its own worktree and venv, cached by commit.

An A/B run measures two revisions of lamina with ONE runner, the new side's (``bench/ab.py``).
Each side is a ``Side``: the Python interpreter that runs its workers and the import path that
decides whose code they measure. A worker is always ``python -m bench.worker`` from the new
side's ``bench`` package (the worker protocol is the new side's, so a base revision older than
the compare command works), while ``graph``, ``drivers``, ``runtime`` and ``lamina`` come from
the side's own checkout:

- the *worktree* side is this checkout with its own ``.venv`` (what ``make setup`` made);
- a *revision* side is ``git worktree add --detach`` of the commit under
  ``CACHE/rev-<sha>/src`` with a venv made by the same Python (``pip install -e 'src[bench]'``,
  pip's own wheel cache reused; no apt), its sources compiled to bytecode (this machine sets
  ``PYTHONDONTWRITEBYTECODE``). Its workers run with the cwd ``CACHE/rev-<sha>/overlay-<id>`` (one per runner's bench package), a
  directory holding only a ``bench`` symlink to the new side's package, first on ``sys.path``,
  and ``PYTHONPATH`` = the revision's worktree.

A build is done once per commit (``ready.json`` marks it complete; a half-made one is removed and
made again) under a lock, and the cache keeps the ``KEEP`` most recently used revisions.
``python -m bench clean --revs`` removes them all (worktrees deregistered with ``git worktree``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.worker import KNOBS

CACHE = Path(os.environ.get("LAMINA_BENCH_REVS", "/var/tmp/lamina-bench"))
KEEP = 4
PIP_TIMEOUT = 900.0


class BuildError(RuntimeError):
    """A revision that cannot be built or run by this bench (the message says why, one line)."""


@dataclass(frozen=True)
class Side:
    """How to run the workers of one side of an A/B run."""

    name: str  # "base" / "new" (or an instrument arm)
    label: str  # what a person reads: "3f2a1bc (HEAD^)", "worktree (HEAD 3f2a1bc + changes)"
    commit: str
    python: str
    cwd: str  # sys.path[0] of ``python -m bench.worker``: where ``bench`` is found
    pythonpath: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # extra environment (test-only knobs)

    def environ(self) -> dict[str, str]:
        e = dict(os.environ)
        e.pop("PYTHONPATH", None)
        for knob in KNOBS:
            e.pop(knob, None)  # a knob reaches only the side that asks for it
        if self.pythonpath:
            e["PYTHONPATH"] = os.pathsep.join(self.pythonpath)
        e.update(self.env)
        return e

    def with_env(self, name: str, **env: str) -> "Side":
        return Side(name, self.label, self.commit, self.python, self.cwd, self.pythonpath, {**self.env, **env})


def git(repo: Path, *args: str, check: bool = True, timeout: float = 120.0) -> str:
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise BuildError(f"git {' '.join(args)}: {(p.stderr or p.stdout).strip().splitlines()[-1:] or ['failed']}"[:300])
    return p.stdout.strip()


def resolve(repo: Path, rev: str) -> str:
    """The full commit id of ``rev`` in ``repo``; BuildError when it names no commit."""
    p = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0 or not p.stdout.strip():
        raise BuildError(f"{rev!r} is not a commit in {repo}")
    return p.stdout.strip()


def base_python() -> str:
    """The interpreter the venvs are made from: the one under this process's venv, if any."""
    return str(getattr(sys, "_base_executable", None) or sys.executable)


PACKAGES = ("graph", "drivers", "runtime", "lamina", "bench")


def compile_sources(python: str, root: Path) -> None:
    """Bytecode for every package under ``root``. Both sides must import alike: this machine
    sets PYTHONDONTWRITEBYTECODE, and a side compiling a lazily imported module from source
    inside a timed phase measured 1.4x slower than the same code with bytecode (A/A run)."""
    subprocess.run([python, "-m", "compileall", "-q", "-j", "0",
                    *[str(root / x) for x in PACKAGES if (root / x).is_dir()]], capture_output=True, timeout=600)


def worktree_side(repo: Path, name: str = "new") -> Side:
    """This checkout, run by the interpreter running the bench (its ``.venv``); its sources
    compiled to bytecode first."""
    compile_sources(sys.executable, repo)
    head = git(repo, "rev-parse", "HEAD", check=False)
    dirty = bool(git(repo, "status", "--porcelain", "--untracked-files=no", check=False))
    label = f"worktree (HEAD {head[:10]}{' + uncommitted changes' if dirty else ''})"
    return Side(name, label, head, sys.executable, str(repo), (str(repo),))


def _rev_dir(cache: Path, sha: str) -> Path:
    return cache / f"rev-{sha}"


def _ready(d: Path) -> dict[str, object] | None:
    try:
        info = json.loads((d / "ready.json").read_text())
    except (OSError, ValueError):
        return None
    py = d / "venv" / "bin" / "python"
    return info if py.exists() and (d / "src").is_dir() else None


def _remove(repo: Path, d: Path) -> None:
    src = d / "src"
    if src.exists():
        git(repo, "worktree", "remove", "--force", str(src), check=False)
    shutil.rmtree(d, ignore_errors=True)
    git(repo, "worktree", "prune", check=False)


def build(repo: Path, rev: str, *, cache: Path = CACHE, bench_pkg: Path | None = None,
          python: str | None = None, name: str = "base", label: str = "",
          log: Callable[[str], None] = lambda s: None,
          install: Callable[[Path, Path, Path], None] | None = None, venv_args: tuple[str, ...] = ()) -> Side:
    """The ``Side`` running revision ``rev`` of ``repo``: built now or taken from the cache.

    ``bench_pkg`` is the package the workers run (default: this bench); ``install(venv_python,
    src, logfile)`` installs the revision into its venv (default: ``pip install -e 'src[bench]'``;
    the tests give a lighter one, and ``venv_args=("--without-pip",)``). BuildError says in one line why a revision cannot be built."""
    sha = resolve(repo, rev)
    bench_pkg = (bench_pkg or Path(__file__).resolve().parent).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    d = _rev_dir(cache, sha)
    with open(cache / f"rev-{sha}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = _ready(d)
        if info is None:
            if d.exists():
                log(f"bench: removing an unfinished build of {sha[:10]}")
                _remove(repo, d)
            t0 = time.monotonic()
            log(f"bench: building {rev} ({sha[:10]}) in {d}")
            try:
                _build(repo, sha, d, python or base_python(), install or _pip_install, venv_args)
            except BaseException:
                _remove(repo, d)
                raise
            info = {"commit": sha, "python": python or base_python(), "seconds": round(time.monotonic() - t0, 1),
                    "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (d / "ready.json").write_text(json.dumps(info))
            log(f"bench: built {sha[:10]} in {info['seconds']} s")
        else:
            log(f"bench: {rev} ({sha[:10]}) from the cache {d}")
        # one overlay per runner's bench package: two runners (a gate and an instrument run from
        # another checkout) sharing a cached revision must not re-point each other's workers
        overlay = d / f"overlay-{hashlib.sha1(str(bench_pkg).encode()).hexdigest()[:12]}"
        overlay.mkdir(exist_ok=True)
        link = overlay / "bench"
        if not link.is_symlink() or Path(os.readlink(link)) != bench_pkg:
            tmp = overlay / f".bench.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(bench_pkg)
            os.replace(tmp, link)
        subprocess.run([str(d / "venv" / "bin" / "python"), "-m", "compileall", "-q", "-j", "0", str(bench_pkg)],
                       capture_output=True, timeout=600)  # the workers' bench, as the new side's
        os.utime(d)  # most recently used
    prune(repo, cache, keep=KEEP, protect={sha})
    return Side(name, label or f"{sha[:10]} ({rev})", sha, str(d / "venv" / "bin" / "python"),
                str(overlay), (str(d / "src"),))


def _build(repo: Path, sha: str, d: Path, python: str, install: Callable[[Path, Path, Path], None],
           venv_args: tuple[str, ...] = ()) -> None:
    d.mkdir(parents=True)
    src = d / "src"
    git(repo, "worktree", "add", "--detach", "--force", str(src), sha, timeout=300)
    if not (src / "pyproject.toml").exists() and not (src / "setup.py").exists():
        raise BuildError(f"{sha[:10]} has no pyproject.toml or setup.py: nothing to install")
    p = subprocess.run([python, "-m", "venv", *venv_args, str(d / "venv")], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise BuildError(f"python -m venv failed: {(p.stderr or p.stdout).strip()[-200:]}")
    logfile = d / "build.log"
    install(d / "venv" / "bin" / "python", src, logfile)
    compile_sources(str(d / "venv" / "bin" / "python"), src)


def _pip_install(venv_python: Path, src: Path, logfile: Path) -> None:
    with open(logfile, "a") as f:
        p = subprocess.run([str(venv_python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            "-e", f"{src}[bench]"], stdout=f, stderr=subprocess.STDOUT, timeout=PIP_TIMEOUT)
    if p.returncode != 0:
        tail = [x for x in logfile.read_text(errors="replace").splitlines() if x.strip()][-1:] or ["?"]
        raise BuildError(f"pip install of {src.parent.name} failed ({tail[0][:160]}; see {logfile})")


def cached(cache: Path = CACHE) -> list[Path]:
    """Built revisions in the cache, most recently used first."""
    if not cache.is_dir():
        return []
    dirs = [p for p in cache.iterdir() if p.is_dir() and p.name.startswith("rev-")]
    return sorted(dirs, key=lambda p: p.stat().st_mtime, reverse=True)


def prune(repo: Path, cache: Path = CACHE, *, keep: int = KEEP, protect: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Remove all but the ``keep`` most recently used revisions (never one in ``protect``)."""
    gone = []
    for d in cached(cache)[keep:]:
        sha = d.name.removeprefix("rev-")
        if sha in protect:
            continue
        with open(cache / f"rev-{sha}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # in use by another run
            _remove(repo, d)
        with contextlib.suppress(FileNotFoundError):
            (cache / f"rev-{sha}.lock").unlink()
        gone.append(sha)
    return gone
