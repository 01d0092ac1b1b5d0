"""``docker exec``: another process in a running container, through the runtime's ``exec``
(run from the caller, not the monitor: it lives as long as the caller waits for it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from graph import Conflict, InvalidInput, LaminaError, NotFound
from runtime import bundle, rootfs, security, users
from runtime.lifecycle import active
from runtime import tty as ttys
from runtime.oci import OCIRuntime, load_libc, message_of
from runtime.state import EXIT_UNKNOWN

PR_SET_CHILD_SUBREAPER = 36

if TYPE_CHECKING:
    from graph import Store


def exec_(store: "Store", key: str, argv: Sequence[str], *, env: Sequence[str] = (), workdir: str = "",
          user: str | None = None, detach: bool = False, stdin: bool = False, tty: bool = False,
          stdio: tuple[int | None, int | None, int | None] | None = None,
          started: Callable[[int], None] | None = None,
          terminal: Callable[[int], None] | None = None,
          console_size: tuple[int, int] | None = None) -> int:
    """Run another process in a running container (``docker exec``), attached to this
    process's stdout and stderr (and stdin with ``stdin``); its exit code (0 with ``detach``).
    ``stdio``: file descriptors for the process's stdin, stdout and stderr instead (None: as
    above), for a caller that relays them (the daemon); ``started`` is called with the pid of
    the runtime's exec process once it runs.
    ``tty``: in a new pty of the container, copied to this process's stdout (and from its
    stdin with ``stdin``; the caller puts its terminal in raw mode); with ``terminal``, that
    is called with the pty's master instead once the process runs, and relays it itself
    (the daemon, to its client), returning when the master ends (the fd stays ours). The
    pty's first size is ``console_size`` (rows, cols), else this process's terminal's.

    Raises: Conflict (not running, paused), NotFound (program), InvalidInput (user, workdir).
    """
    if not argv:
        raise InvalidInput("exec: no command given")
    if workdir and not workdir.startswith("/"):
        raise InvalidInput(f"exec: working directory {workdir!r} is not absolute")
    c, st, p = active(store, key)
    if st.Status == "paused":
        raise Conflict(f"container {c.name} is paused: unpause it first")
    if st.Status != "running":
        raise Conflict(f"container {c.name} is not running")
    rt = st.runtime()
    assert rt is not None
    cfg = c.config
    who = users.resolve_user(st.Rootfs, str(user if user is not None else (cfg.get("User") or "")))
    hostname = bundle.hostname_of(cfg, c.id)
    if tty and detach:
        raise InvalidInput("exec: -t with -d is not supported (nobody would read the terminal)")
    if tty and stdio is not None:
        raise InvalidInput("exec: -t with relayed stdio is not supported")
    proc = bundle.process(cfg, argv=argv, user=who, hostname=hostname, cwd=workdir or None, extra_env=env, tty=tty)
    caps = security.capabilities(cfg.get("HostConfig") or {}, bundle.DEFAULT_CAPABILITIES)
    proc["capabilities"] = {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)}
    proc["noNewPrivileges"] = security.security_opts(cfg.get("HostConfig") or {})[1]
    size = console_size or ttys.window_size(0) or ttys.window_size(1)
    if tty and size:
        proc["consoleSize"] = {"height": size[0], "width": size[1]}
    env_path = next((e[5:] for e in proc["env"] if e.startswith("PATH=")), bundle.DEFAULT_PATH)
    if rootfs.find_executable(st.Rootfs, argv[0], env_path, proc["cwd"]) is None:
        raise NotFound(f"container {c.name}: executable {argv[0]!r} not found"
                       + ("" if "/" in argv[0] else f" (PATH={env_path})"))
    pf = os.path.join(p.dir, f"exec-{os.getpid()}-{time.monotonic_ns()}.json")
    bundle.write(pf, proc)
    if tty:
        try:
            return _exec_tty(rt, c.id, pf, stdin, terminal, started)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pf)
    try:
        cmd = rt.exec_command(c.id, pf, detach=detach)
        if stdio is not None and not detach:
            proc = rt.popen(cmd, stdin=subprocess.DEVNULL if stdio[0] is None else stdio[0],
                            stdout=stdio[1], stderr=stdio[2])
        else:
            proc = rt.popen(cmd, stdin=None if stdin else subprocess.DEVNULL,
                            stderr=subprocess.PIPE if detach else None)
        if started is not None:
            started(proc.pid)
        _out, said = proc.communicate()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pf)
    if detach and proc.returncode != 0:
        raise LaminaError(f"{rt.name} exec: {message_of(said or b'') or f'exit status {proc.returncode}'}")
    return 0 if detach else proc.returncode



_subreaper_lock = threading.Lock()
_subreaper_users = 0  # threads of this process that need it (the daemon runs execs at once)


@contextlib.contextmanager
def _subreaper() -> Iterator[None]:
    """This process a child subreaper for the block (an orphaned process becomes our child, so
    its exit can be waited for), counted so concurrent blocks in threads do not undo it early."""
    global _subreaper_users
    with _subreaper_lock:
        if _subreaper_users == 0:
            load_libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        _subreaper_users += 1
    try:
        yield
    finally:
        with _subreaper_lock:
            _subreaper_users -= 1
            if _subreaper_users == 0:
                load_libc().prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _exec_tty(rt: OCIRuntime, cid: str, process_file: str, stdin: bool,
              terminal: Callable[[int], None] | None, started: Callable[[int], None] | None) -> int:
    """``exec -t``: the runtime sends the new pty's master to a console socket of ours; we copy
    it to stdout (and stdin to it) until it ends, or hand it to ``terminal``. runc refuses a
    console socket in the foreground, so it runs ``--detach`` and we, a child subreaper for the
    while, wait for the process it leaves behind."""
    detached = rt.detaches_for_console()
    with _subreaper() if detached else contextlib.nullcontext():
        return _exec_tty_in(rt, cid, process_file, stdin, terminal, started, detached)


def _exec_tty_in(rt: OCIRuntime, cid: str, process_file: str, stdin: bool,
                 terminal: Callable[[int], None] | None, started: Callable[[int], None] | None,
                 detached: bool) -> int:
    import tempfile

    sockdir = tempfile.mkdtemp(prefix="lamina-exec-")
    pid_file = os.path.join(sockdir, "pid")
    listener = ttys.listen_console(sockdir, relative=False)
    try:
        cmd = rt.exec_command(cid, process_file, detach=detached, pid_file=pid_file,
                              console_socket=os.path.join(sockdir, ttys.CONSOLE_SOCKET))
        proc = rt.popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if started is not None:
            started(proc.pid)
        listener.settimeout(60)
        try:
            master = ttys.receive_master(listener)
        except OSError:
            _o, said = proc.communicate()
            raise LaminaError(f"{rt.name} exec: {message_of(said or b'') or f'exit status {proc.returncode}'}") from None
        try:
            if terminal is not None:
                terminal(master)
            else:
                ttys.proxy(master, 0 if stdin else None, 1, 0 if os.isatty(0) else 1)
        finally:
            os.close(master)
        _o, said = proc.communicate()
        if not detached:
            return proc.returncode
        if proc.returncode != 0:
            raise LaminaError(f"{rt.name} exec: {message_of(said or b'') or f'exit status {proc.returncode}'}")
        with open(pid_file, encoding="ascii") as f:
            pid = int(f.read().strip())
        try:
            _pid, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return EXIT_UNKNOWN
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code
    finally:
        listener.close()
        shutil.rmtree(sockdir, ignore_errors=True)
