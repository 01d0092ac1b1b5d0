"""The one ctypes handle on the C library, and the few calls Python's ``os`` lacks.

``CDLL(None)`` is the process's own symbol table, which already holds libc: no
``ctypes.util.find_library`` (it runs ``ldconfig -p`` in a subprocess, milliseconds on every start).
``use_errno`` so a failing call's errno reaches ``check``. Modules set ``argtypes`` on the functions
they call; each function is called from one module only, so the settings never disagree.
"""

from __future__ import annotations

import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4

libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
libc.renameat2.restype = ctypes.c_int


def check(ret: int, what: str, path: str | bytes | os.PathLike[str] | None = None) -> int:
    """Raise the ``OSError`` for errno when a libc call returned -1 (or any negative); else
    return ``ret``. ``what`` names the call in the message when no path is given."""
    if ret < 0:
        err = ctypes.get_errno()
        name = os.fsdecode(path) if path is not None else what
        raise OSError(err, os.strerror(err), name)
    return ret


def renameat2(old: str | bytes | os.PathLike[str], new: str | bytes | os.PathLike[str], flags: int,
              *, dir_fd: int = AT_FDCWD) -> None:
    """renameat2(2) with both names relative to ``dir_fd`` (or the cwd): ``RENAME_NOREPLACE``
    fails with EEXIST instead of replacing, ``RENAME_EXCHANGE`` swaps, ``RENAME_WHITEOUT`` leaves
    an overlay whiteout behind. Raises OSError naming ``new``."""
    check(libc.renameat2(dir_fd, os.fsencode(old), dir_fd, os.fsencode(new), flags), "renameat2", new)
