"""Drive the power-cut simulator from a test: one tmpfs (made and unmounted here) holds the
backing trees and shadow copies; ``Machine`` mounts the simulator on a backing tree, runs lamina
on it, cuts the power, and boots again on what was durable."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cli.conftest import Result, clean_env

REPO = Path(__file__).resolve().parents[2]


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


@contextlib.contextmanager
def scratch_tmpfs(path: Path, size: str = "2g") -> Iterator[Path]:
    """A tmpfs of our own (its inode numbers are never reused, which the simulator relies on)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        _umount(path)


@dataclass
class Machine:
    """A store on the simulator. ``boot`` mounts it; ``cut`` ends a run at a power cut;
    ``reboot`` mounts what was durable."""

    tmpfs: Path
    mountpoint: Path
    driver: str = "vfs"
    generation: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def backing(self) -> Path:
        return self.tmpfs / f"gen-{self.generation}"

    @property
    def root(self) -> Path:
        return self.mountpoint / "root"

    def boot(self) -> None:
        self.backing.mkdir(exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        shadow = self.tmpfs / f"shadow-{self.generation}"
        r, w = os.pipe()
        errlog = open(self.tmpfs / f"simfs-{self.generation}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.powercut.simfs", str(self.backing), str(self.mountpoint), str(shadow), str(w)],
            cwd=REPO, pass_fds=(w,), stdout=errlog, stderr=errlog, env=clean_env(),
        )
        os.close(w)
        errlog.close()
        with os.fdopen(r, "rb") as f:
            line = f.readline()
        if line != b"ready\n":
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"simfs did not start: {(self.tmpfs / f'simfs-{self.generation}.log').read_text()}")
        for _ in range(200):  # the mount exists once the kernel's INIT was answered
            if _mounted(self.mountpoint):
                break
            time.sleep(0.01)
        self.dev = os.stat(self.mountpoint).st_dev

    def control(self, name: str, value: str | int) -> None:
        os.setxattr(self.mountpoint, f"user.powercut.{name}", str(value).encode())

    def status(self) -> dict[str, Any]:
        return json.loads(os.getxattr(self.mountpoint, "user.powercut.status"))

    def sync(self) -> None:
        self.control("syncfs", 1)

    def lamina(self, *args: str, timeout: float = 300, cut_at: int = 0) -> Result:
        """Run lamina on the store; with ``cut_at``, the power goes off before the ``cut_at``-th
        mutating request from now (lamina's process group is SIGKILLed at that moment)."""
        cmd = [sys.executable, "-m", "tests.powercut.lamina_main", "--root", str(self.root), "--driver", self.driver,
               *args]
        p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                             env=clean_env(POWERCUT_DEV=str(self.dev)))
        self.control("kill_pgid", p.pid)
        self.control("cut_at", cut_at)
        out, err = p.communicate(timeout=timeout)
        return Result(cmd, p.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def shutdown(self) -> None:
        """Unmount and stop the simulator (what is live stays in the backing tree)."""
        if self.proc is None:
            return
        self._release_driver_mounts()
        _umount(self.mountpoint)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def _release_driver_mounts(self) -> None:
        """Mounts lamina left under the store (overlay container mounts) go with the power."""
        target = os.path.realpath(self.mountpoint) + "/"
        with open("/proc/self/mounts") as f:
            inner = [line.split()[1] for line in f if line.split()[1].startswith(target)]
        for m in reversed(inner):
            _umount(Path(m))

    def power_cut_and_reboot(self) -> dict[str, int]:
        """After a cut: keep only what was durable, and boot on it."""
        dest = self.tmpfs / f"gen-{self.generation + 1}"
        self.control("materialize", str(dest))
        counts = self.status()["materialized"]
        self.shutdown()
        subprocess.run(["rm", "-rf", str(self.backing), str(self.tmpfs / f"shadow-{self.generation}")], check=True)
        self.generation += 1
        self.boot()
        return counts

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.shutdown()
        if _mounted(self.mountpoint):
            _umount(self.mountpoint)
