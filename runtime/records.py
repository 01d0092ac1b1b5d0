"""``Record``: the base of runtime's small value classes (state, paths, stats, users).

Plain classes with ``__slots__`` instead of ``dataclasses``: a dataclass costs about half a
millisecond to build at import on these machines, and every ``lamina run`` pays for each one
(lamina's start-up budget is a few tens of milliseconds; ``lamina/config.py`` makes the same
choice). Fields are the class's ``__slots__`` in order; ``_defaults`` gives defaults (a type
such as ``dict`` is called to make a fresh value).
"""

from __future__ import annotations

from typing import Any


class Record:
    __slots__: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}

    def __init__(self, *args: Any, **kw: Any) -> None:
        names = self.__slots__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} values")
        for name, value in zip(names, args):
            object.__setattr__(self, name, value)
        for name in names[len(args):]:
            if name in kw:
                value = kw.pop(name)
            elif name in self._defaults:
                value = self._defaults[name]
                if isinstance(value, type):
                    value = value()
            else:
                raise TypeError(f"{type(self).__name__}: missing {name}")
            object.__setattr__(self, name, value)
        if kw:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(kw)}")

    def as_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.as_dict() == other.as_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"
