"""``docker exec``: another process in a running container, through the runtime's ``exec``
(run from the caller, not the monitor: it lives as long as the caller waits for it)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from drivers.errors import Conflict, InvalidInput, LaminaError, NotFound
from runtime import bundle, rootfs, users
from runtime.lifecycle import active
from runtime.oci import message_of

if TYPE_CHECKING:
    from graph import Store


def exec_(store: "Store", key: str, argv: Sequence[str], *, env: Sequence[str] = (), workdir: str = "",
          user: str | None = None, detach: bool = False, stdin: bool = False) -> int:
    """Run another process in a running container (``docker exec``), attached to this
    process's stdout and stderr (and stdin with ``stdin``); its exit code (0 with ``detach``).

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
    proc = bundle.process(cfg, argv=argv, user=who, hostname=hostname, cwd=workdir or None, extra_env=env)
    env_path = next((e[5:] for e in proc["env"] if e.startswith("PATH=")), bundle.DEFAULT_PATH)
    if rootfs.find_executable(st.Rootfs, argv[0], env_path, proc["cwd"]) is None:
        raise NotFound(f"container {c.name}: executable {argv[0]!r} not found"
                       + ("" if "/" in argv[0] else f" (PATH={env_path})"))
    pf = os.path.join(p.dir, f"exec-{os.getpid()}-{time.monotonic_ns()}.json")
    bundle.write(pf, proc)
    try:
        cmd = rt.exec_command(c.id, pf, detach=detach)
        proc = rt.popen(cmd, stdin=None if stdin else subprocess.DEVNULL,
                        stderr=subprocess.PIPE if detach else None)
        _out, said = proc.communicate()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pf)
    if detach and proc.returncode != 0:
        raise LaminaError(f"{rt.name} exec: {message_of(said or b'') or f'exit status {proc.returncode}'}")
    return 0 if detach else proc.returncode

