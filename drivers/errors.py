"""lamina's error family.

It lives at the bottom of the import graph (``drivers``) because every layer above raises and
catches the same classes and arrows only point down: ``graph/errors.py`` re-exports it and adds
the store's own kinds. Each class carries the exit code the CLI uses, so a script can tell
"not found" from "corrupt" without parsing text. Messages name the object (a digest, a cache-id,
a path inside a layer) and fit on one line.
"""

from __future__ import annotations


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
