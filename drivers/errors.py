"""lamina's error family.

It lives at the bottom of the import graph (``drivers``) because every layer above raises and
catches the same classes and arrows only point down: ``graph/errors.py`` re-exports it and adds
the store's own kinds. Each class carries the exit code the CLI uses, so a script can tell
"not found" from "corrupt" without parsing text. Messages name the object (a digest, a cache-id,
a path inside a layer) and fit on one line.
"""

from __future__ import annotations

import os


class LaminaError(Exception):
    """Base of every error lamina raises on purpose. Exit code 1."""

    exit_code = 1


class NotFound(LaminaError):
    """The named object does not exist."""

    exit_code = 2


class AlreadyExists(LaminaError):
    """The object exists already and the call does not allow that."""

    exit_code = 3


class Conflict(LaminaError):
    """A precondition does not hold (in use, mounted, busy, locked)."""

    exit_code = 4


class InvalidInput(LaminaError):
    """The input is malformed or unsafe: bad JSON, bad reference, hostile tar entry."""

    exit_code = 5


class Corrupt(LaminaError):
    """Stored or received data does not match what it claims to be."""

    exit_code = 6


class DigestMismatch(Corrupt):
    """Bytes hash to another digest, or have another size, than expected."""


class Unsupported(LaminaError):
    """This machine, kernel or driver cannot do what was asked (the message says why)."""

    exit_code = 7


class Bug(LaminaError):
    """An internal invariant failed: report it; the message says which."""

    exit_code = 70


class NoSpace(LaminaError):
    """The filesystem holding the store is full (or the user's quota is): an expected condition,
    not damage. Whichever write path met it (content ingest, layer apply, the metadata database)
    and on every driver it is this one error; the operation left nothing half-written."""

    exit_code = 8


_SQLITE_FULL = 13  # SQLite's result code for "database or disk is full"
_SQLITE_IOERR = 10  # "disk I/O error"; SQLITE_IOERR_SHMSIZE (4874) when the -shm file cannot grow
_FULL_BELOW = 1 << 20  # a filesystem with less free than this is full for SQLite's purposes


def _fs_full(where: str | os.PathLike[str]) -> bool:
    try:
        st = os.statvfs(where)
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use the reserved blocks
    return free * st.f_frsize < _FULL_BELOW


def no_space(e: BaseException, where: str | os.PathLike[str] | None = None) -> NoSpace | None:
    """``NoSpace`` for an error caused by a full disk, else None.

    Recognised: an ``OSError`` with ENOSPC or EDQUOT, and SQLite's SQLITE_FULL (sqlite3 raises it as
    ``OperationalError`` with ``sqlite_errorcode`` 13), also when it is the cause or context of
    another error (a driver that wrapped the OSError in its own message). A ``NoSpace`` is itself.
    ``where`` (the store's root) lets an SQLite I/O error count when that filesystem is full.
    The message names no file: which file met the full disk depends on the driver and the moment,
    and the user's line must be the same on every driver.
    """
    import errno  # local: only failures need it

    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, NoSpace):
            return cur
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return NoSpace("no space left on device")
        code = getattr(cur, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
            return NoSpace("no space left on device")
        if isinstance(code, int) and code & 0xFF == _SQLITE_IOERR and where is not None and _fs_full(where):
            # SQLite reports ENOSPC as SQLITE_FULL only for its main writes; growing the -shm
            # file (the first write of a process) says SQLITE_IOERR_SHMSIZE. A generic I/O
            # error on a filesystem with no room left is that room's fault.
            return NoSpace("no space left on device")
        cur = cur.__cause__ or cur.__context__
    return None
