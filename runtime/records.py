"""``Record``: the base of runtime's small value classes (state, paths, stats, users).

It is ``drivers.sys.record.Record`` (plain classes with ``__slots__`` instead of ``dataclasses``,
which cost an import of ``inspect`` and half a millisecond per class at every ``lamina run``):
one implementation for the graph's records and the runtime's. Fields are the class's
``__slots__`` in order; ``_defaults`` gives defaults (a type such as ``dict`` is called to make a
fresh value); ``as_dict()`` gives the fields by name.
"""

from __future__ import annotations

from drivers.sys.record import Record

__all__ = ["Record"]
