"""``Record`` and ``Frozen``: the small value classes on the CLI's start-up path (layers, images,
references, containers, mounts), without ``dataclasses``.

Why not dataclasses: importing them loads ``inspect`` (with ``ast``, ``dis``, ``tokenize``), about
10 ms here, and each class costs about half a millisecond more to build (``exec`` of generated
methods); ``lamina images`` and ``lamina run`` load some twenty such classes on every start, against
a budget of tens of milliseconds. These classes keep what the code relies on: positional and keyword
construction in field order, defaults, ``__post_init__``, equality and (for ``Frozen``) hashing over
the compared fields, ordering on request, a dataclass-like ``repr``, ``__match_args__``, and pickling
and copying.

A subclass lists its fields in ``__slots__`` (in order; a subclass's come after its bases');
``_defaults`` maps a field to its default (a type, such as ``list``, is called for a fresh value,
as ``field(default_factory=list)``); ``_uncompared`` names fields left out of ``==`` and ``hash``
(``field(compare=False)``); ``_ordered = True`` adds ``<``, ``<=``, ``>``, ``>=`` over the compared
fields (``order=True``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any


class Record:
    __slots__: tuple[str, ...] = ()
    _fields: tuple[str, ...] = ()
    _compared: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}
    _uncompared: frozenset[str] = frozenset()
    _ordered = False
    _post: Any = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        fields: list[str] = []
        for klass in reversed(cls.__mro__):
            for name in klass.__dict__.get("__slots__", ()):
                if name not in fields and not name.startswith("__"):
                    fields.append(name)
        cls._fields = tuple(fields)
        cls._compared = tuple(f for f in fields if f not in cls._uncompared)
        cls.__match_args__ = cls._fields
        for name in cls.__dict__:  # a misspelt hook would be skipped in silence: refuse it
            if name != "__post_init__" and name.replace("_", "").lower() == "postinit":
                raise TypeError(f"{cls.__qualname__}.{name}: the hook run after construction is __post_init__")
        cls._post = next((k.__dict__["__post_init__"] for k in cls.__mro__ if "__post_init__" in k.__dict__), None)
        if cls._ordered:
            cls.__lt__ = _order(tuple.__lt__)  # type: ignore[method-assign]
            cls.__le__ = _order(tuple.__le__)  # type: ignore[method-assign]
            cls.__gt__ = _order(tuple.__gt__)  # type: ignore[method-assign]
            cls.__ge__ = _order(tuple.__ge__)  # type: ignore[method-assign]

    def __init__(self, *args: Any, **kw: Any) -> None:
        names = self._fields
        set_ = object.__setattr__
        if len(args) == len(names) and not kw:  # every field given in order: the common case
            for name, value in zip(names, args):
                set_(self, name, value)
        else:
            if len(args) > len(names):
                raise TypeError(f"{type(self).__name__}() takes at most {len(names)} values, got {len(args)}")
            for name, value in zip(names, args):
                set_(self, name, value)
            for name in names[len(args):]:
                if name in kw:
                    value = kw.pop(name)
                elif name in self._defaults:
                    value = self._defaults[name]
                    if isinstance(value, type):
                        value = value()
                else:
                    raise TypeError(f"{type(self).__name__}() missing value for {name!r}")
                set_(self, name, value)
            if kw:
                raise TypeError(f"{type(self).__name__}() got unknown fields {sorted(kw)}")
        if self._post is not None:
            self._post()

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self._compared)

    def as_dict(self) -> dict[str, Any]:
        """The fields by name, in order (shallow: values are not copied)."""
        return {n: getattr(self, n) for n in self._fields}

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable: unhashable, as a dataclass with eq

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__qualname__}({inner})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, tuple(getattr(self, n) for n in self._fields))


class Frozen(Record):
    """A ``Record`` whose fields cannot be assigned after construction (``frozen=True``);
    hashable over its compared fields. ``__post_init__`` may still set fields with
    ``object.__setattr__``, as with a frozen dataclass."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of frozen {type(self).__name__}")

    def __hash__(self) -> int:
        return hash(self._key())


def _order(op: Any) -> Any:
    def compare(self: Record, other: object) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return op(self._key(), other._key())  # type: ignore[attr-defined]

    return compare
