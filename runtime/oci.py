"""The OCI runtime driver: ``crun`` (default) or ``runc``, called as programs.

lamina uses the runtime's own state directory under its root (``<root>/runtime/<name>``, the
runtime's ``--root``), so ``crun list`` there shows lamina's containers and nothing else, and a
store's containers never meet another tool's. A container is run by its monitor
(``runtime.monitor``) with the runtime's foreground ``run``, which lives as long as the
container and deletes it at the end; everything else (``state``, ``kill``, ``pause``,
``resume``, ``delete``, ``exec``) is a short call from the CLI.

crun 1.8 refuses a *hybrid* cgroup host (v1 controllers plus a cgroup2 mount, as on these
machines): "cgroups in hybrid mode not supported". Each crun call here therefore runs in a
private mount namespace in which the cgroup2 mount is unmounted, which crun then sees as a plain
v1 host (one ``unshare`` and one ``umount2`` in the child before ``exec``; the host's mounts are
untouched). runc handles hybrid hosts itself and runs as it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from graph import Conflict, InvalidInput, LaminaError, NotFound, Unsupported
from runtime.records import Record

RUNTIMES = ("crun", "runc")
DEFAULT_RUNTIME = "crun"
CALL_TIMEOUT = 60.0

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        from drivers.sys.libc import libc

        _libc = libc
    return _libc


def _hide_cgroup2(mount_point: str) -> Callable[[], None]:
    """A pre-exec function: enter a private mount namespace and unmount ``mount_point`` there.
    Runs in the forked child (async-signal-safe enough: three syscalls through a loaded libc).
    The fallback of ``OCIRuntime.popen`` for a process with threads."""
    libc = _lib()
    target = mount_point.encode()

    def pre() -> None:
        _enter_private(libc, target)

    return pre


def _enter_private(libc: Any, target: bytes) -> None:
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
    if libc.umount2(target, MNT_DETACH) != 0:
        raise OSError(ctypes.get_errno(), f"umount {target.decode(errors='replace')}")


class _CannotReturn(Exception):
    """The way back could not be kept (no fd of the namespace, root or cwd): nothing changed."""


@contextlib.contextmanager
def _private_mount_namespace(mount_point: str) -> Iterator[None]:
    """Run the block in a private mount namespace without ``mount_point``, then return to the
    namespace we came from, with root and working directory as they were.

    Why not a pre-exec function: that forces ``subprocess`` to ``fork`` the whole (large)
    Python process instead of ``vfork``-ing, which costs about 5 ms per runtime call here, plus
    copy-on-write faults in both processes afterwards. Entered and left in the caller, the
    namespace is inherited by the children started in the block and dies with the last of
    them. Requires a single-threaded process (``setns`` of a mount namespace refuses otherwise).
    """
    libc = _lib()
    fds: list[int] = []
    try:
        for path, flags in (("/proc/self/ns/mnt", os.O_RDONLY), ("/", os.O_PATH | os.O_DIRECTORY),
                            (".", os.O_PATH | os.O_DIRECTORY)):
            fds.append(os.open(path, flags | os.O_CLOEXEC))
    except OSError:
        for fd in fds:
            os.close(fd)
        raise _CannotReturn from None  # e.g. the working directory was removed: use a pre-exec
    back, root, cwd = fds
    try:
        try:  # one try from the unshare on: an interrupt anywhere after it still returns us home
            if libc.unshare(CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
            if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
            if libc.umount2(mount_point.encode(), MNT_DETACH) != 0:
                raise OSError(ctypes.get_errno(), f"umount {mount_point}")
            yield
        finally:
            if libc.setns(back, CLONE_NEWNS) != 0:
                # staying here would hide every later mount of this process from the host
                err = ctypes.get_errno()
                os.write(2, f"lamina: cannot return to the host mount namespace: {os.strerror(err)}\n".encode())
                os._exit(70)
            os.fchdir(root)  # setns moved root and cwd to the namespace's root: restore them
            os.chroot(".")
            os.fchdir(cwd)
    finally:
        for fd in (back, root, cwd):
            os.close(fd)


def signal_number(sig: str | int) -> int:
    """``KILL``, ``SIGKILL``, ``9`` -> 9. Raises InvalidInput for an unknown signal."""
    if isinstance(sig, int):
        n = sig
    else:
        s = sig.strip().upper()
        if s.isdigit():
            n = int(s)
        else:
            name = s if s.startswith("SIG") else "SIG" + s
            try:
                n = int(signal.Signals[name])
            except KeyError:
                raise InvalidInput(f"invalid signal {sig!r}") from None
    if not 0 < n < signal.NSIG:
        raise InvalidInput(f"invalid signal {sig!r}")
    return n


class OCIRuntime(Record):
    """One runtime binary with lamina's state directory for it; ``hide_cgroup2``: the cgroup2
    mount to unmount in the child (crun on a hybrid host)."""

    __slots__ = ("name", "binary", "state_root", "hide_cgroup2")
    _defaults = {"hide_cgroup2": None}
    name: str
    binary: str
    state_root: str
    hide_cgroup2: str | None

    # -- argv --------------------------------------------------------------------------------------
    def command(self, *args: str, log: str | None = None) -> list[str]:
        argv = [self.binary, "--root", self.state_root]
        if log is not None:
            argv += ["--log", log, "--log-format", "json"]
        return argv + list(args)

    def preexec(self) -> Callable[[], None] | None:
        return _hide_cgroup2(self.hide_cgroup2) if self.hide_cgroup2 else None

    def popen(self, argv: Sequence[str], **kw: Any) -> "subprocess.Popen[bytes]":
        """Start a runtime command (crun on a hybrid host: in a private mount namespace with
        the cgroup2 mount hidden; see ``_private_mount_namespace``)."""
        if not self.hide_cgroup2:
            return subprocess.Popen(list(argv), **kw)
        import threading

        if threading.active_count() == 1:
            try:
                with _private_mount_namespace(self.hide_cgroup2):
                    return subprocess.Popen(list(argv), **kw)
            except _CannotReturn:
                pass
        return subprocess.Popen(list(argv), preexec_fn=self.preexec(), **kw)

    def run_command(self, container_id: str, bundle: str, pid_file: str, log: str) -> list[str]:
        """``run`` in the foreground: create, start, wait, delete, exit with the container's
        status (128+N for signal N). One runtime process per container life: ``run --detach``
        followed by ``delete`` costs twice as much here (each call pays a process, and crun
        a private mount namespace). The monitor learns the start from ``pid_file``."""
        return self.command("run", "--bundle", bundle, "--pid-file", pid_file, container_id, log=log)

    def exec_command(self, container_id: str, process_file: str, *, detach: bool = False,
                     pid_file: str | None = None) -> list[str]:
        args = ["exec", "--process", process_file]
        if detach:
            args.append("--detach")
        if pid_file:
            args += ["--pid-file", pid_file]
        return self.command(*args, container_id)

    # -- calls -------------------------------------------------------------------------------------
    def call(self, *args: str, what: str, ok_missing: bool = False) -> str:
        """Run a short runtime command; its stdout. Raises NotFound (the runtime does not know
        the container, unless ``ok_missing``), LaminaError with the runtime's message."""
        try:
            proc = self.popen(self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise Unsupported(f"OCI runtime {self.name} is gone from {self.binary}") from None
        try:
            stdout, stderr = proc.communicate(timeout=CALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise LaminaError(f"{self.name} {what}: no answer in {CALL_TIMEOUT:.0f} s") from None
        if proc.returncode != 0:
            msg = _message(stderr) or f"exit status {proc.returncode}"
            if _is_missing(msg):
                if ok_missing:
                    return ""
                raise NotFound(f"{self.name} {what}: {msg}")
            raise LaminaError(f"{self.name} {what}: {msg}")
        return stdout.decode("utf-8", errors="replace")

    def state(self, container_id: str) -> dict[str, Any] | None:
        """The runtime's state document (``status``: created, running, paused, stopped), or None
        if the runtime does not know the container."""
        if not os.path.isdir(os.path.join(self.state_root, container_id)):
            return None
        out = self.call("state", container_id, what=f"state {container_id}", ok_missing=True)
        if not out.strip():
            return None
        try:
            doc = json.loads(out)
        except ValueError:
            raise LaminaError(f"{self.name} state {container_id}: unreadable answer") from None
        return doc if isinstance(doc, dict) else None

    def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> None:
        args = ["kill"] + (["--all"] if all_processes else []) + [container_id, str(sig)]
        try:
            self.call(*args, what=f"kill {container_id}")
        except LaminaError as e:
            if "not running" in str(e) or "process already finished" in str(e) or "No such process" in str(e):
                raise Conflict(f"container {container_id[:12]} is not running") from None
            raise

    def pause(self, container_id: str) -> None:
        self.call("pause", container_id, what=f"pause {container_id}")

    def resume(self, container_id: str) -> None:
        self.call("resume", container_id, what=f"resume {container_id}")

    def delete(self, container_id: str, *, force: bool = False) -> None:
        """Forget a stopped container (``force``: kill it first); a no-op if unknown."""
        if not os.path.isdir(os.path.join(self.state_root, container_id)):
            return
        args = ["delete"] + (["--force"] if force else []) + [container_id]
        self.call(*args, what=f"delete {container_id}", ok_missing=True)

    def known(self) -> list[str]:
        """Container IDs this runtime holds state for under lamina's state directory."""
        try:
            return sorted(e.name for e in os.scandir(self.state_root) if e.is_dir() and not e.name.startswith("."))
        except FileNotFoundError:
            return []

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "binary": self.binary, "state_root": self.state_root,
                "hide_cgroup2": self.hide_cgroup2}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "OCIRuntime":
        return cls(str(d["name"]), str(d["binary"]), str(d["state_root"]), d.get("hide_cgroup2"))


def _message(stderr: bytes) -> str:
    """The runtime's error, one line (the last non-empty line; JSON log lines unwrapped)."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    return _unwrap(lines[-1])


def _unwrap(line: str) -> str:
    if line.startswith("{"):
        try:
            doc = json.loads(line)
            if isinstance(doc, dict) and "msg" in doc:
                return str(doc["msg"])
        except ValueError:
            pass
    for prefix in ("crun: ", "runc: ", "Error: "):
        line = line.removeprefix(prefix)
    return line


def _is_missing(msg: str) -> bool:
    m = msg.lower()
    return ("does not exist" in m or "not found" in m and "container" in m
            or "no such file or directory" in m and "status" in m)


def log_error(path: str) -> str:
    """The last error a runtime wrote to its ``--log`` file (JSON lines), or ''."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    errors = []
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("level") in ("error", "fatal", "panic"):
            errors.append(str(doc.get("msg", "")))
    return errors[-1] if errors else ""


def open_runtime(name: str, state_root: str, *, binary: str | None = None,
                 search_path: str | None = None) -> OCIRuntime:
    """The runtime ``name`` (crun or runc) found in PATH (or at ``binary``), with its state in
    ``state_root``.

    Raises: InvalidInput (not a runtime lamina knows), Unsupported (not installed).
    """
    if name not in RUNTIMES:
        raise InvalidInput(f"unknown OCI runtime {name!r}: lamina runs {' or '.join(RUNTIMES)}")
    path = binary or shutil.which(name, path=search_path)
    if path is None or not os.access(path, os.X_OK):
        raise Unsupported(f"OCI runtime {name} not found in PATH: install it (apt-get install {name}) "
                          f"or pick another with --runtime")
    hide = None
    if name == "crun":
        from runtime import cgroups

        m = cgroups.mounts()
        if m.layout == "hybrid" and m.v2:
            hide = m.v2
    os.makedirs(state_root, mode=0o700, exist_ok=True)
    return OCIRuntime(name, os.path.abspath(path), state_root, hide)


def kill_quietly(rt: OCIRuntime, container_id: str, sig: int) -> None:
    try:
        rt.kill(container_id, sig)
    except LaminaError:
        pass

