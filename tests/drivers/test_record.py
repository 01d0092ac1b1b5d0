"""drivers.sys.record: the dataclass-free value classes keep what the code relied on from
dataclasses (construction, defaults, equality, hashing, ordering, repr, pickling)."""

from __future__ import annotations

import copy
import pickle

import pytest

from drivers.sys.record import Frozen, Record


class Point(Frozen):
    __slots__ = ("x", "y", "note")
    _defaults = {"y": 0, "note": dict}
    _uncompared = frozenset({"note"})
    _ordered = True


class Bag(Record):
    __slots__ = ("items", "count")
    _defaults = {"items": list, "count": 0}


class Checked(Frozen):
    __slots__ = ("n",)

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("negative")
        object.__setattr__(self, "n", int(self.n))


class Child(Point):
    __slots__ = ("z",)
    _defaults = {"y": 0, "note": dict, "z": 9}


def test_construction_positional_keyword_and_defaults() -> None:
    assert Point(1).y == 0 and Point(1, 2).y == 2 and Point(x=3, y=4).x == 3
    assert Point(1).note == {} and Point(1).note is not Point(1).note  # a fresh value per record
    b1, b2 = Bag(), Bag()
    b1.items.append(1)
    assert b2.items == [] and b1.count == 0
    with pytest.raises(TypeError, match="missing value for 'x'"):
        Point()
    with pytest.raises(TypeError, match="unknown fields"):
        Point(1, w=2)
    with pytest.raises(TypeError, match="at most 3"):
        Point(1, 2, {}, 4)


def test_equality_hash_and_uncompared_fields() -> None:
    assert Point(1, 2, {"a": 1}) == Point(1, 2, {"b": 2})  # note is not compared
    assert Point(1, 2) != Point(1, 3)
    assert hash(Point(1, 2, {"a": 1})) == hash(Point(1, 2))
    assert {Point(1, 2): "p"}[Point(1, 2)] == "p"
    assert Point(1, 2) != Child(1, 2)  # another class is never equal
    assert Point(1, 2).__eq__((1, 2)) is NotImplemented
    with pytest.raises(TypeError):
        hash(Bag())  # mutable: unhashable, as a dataclass with eq


def test_frozen_refuses_assignment_but_post_init_may_coerce() -> None:
    p = Point(1)
    with pytest.raises(AttributeError, match="frozen"):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError, match="frozen"):
        del p.x
    assert Checked(3.0).n == 3 and type(Checked(3.0).n) is int
    with pytest.raises(ValueError):
        Checked(-1)
    b = Bag()
    b.count = 2
    assert b.count == 2
    with pytest.raises(AttributeError):
        b.other = 1  # type: ignore[attr-defined]  # slots: no stray attributes


def test_order_repr_match_args_and_inheritance() -> None:
    assert sorted([Point(2, 1), Point(1, 5), Point(1, 2)]) == [Point(1, 2), Point(1, 5), Point(2, 1)]
    assert Point(1) < Point(2) <= Point(2) and Point(3) > Point(2) >= Point(2)
    with pytest.raises(TypeError):
        _ = Bag() < Bag()  # type: ignore[operator]  # not ordered unless asked
    assert repr(Point(1, 2)) == "Point(x=1, y=2, note={})"
    assert Point.__match_args__ == ("x", "y", "note")
    assert Child._fields == ("x", "y", "note", "z") and Child(1).z == 9
    match Point(5, 6):
        case Point(x, y):
            assert (x, y) == (5, 6)


def test_pickle_and_copy_round_trip() -> None:
    p = Point(1, 2, {"k": [1]})
    for q in (pickle.loads(pickle.dumps(p)), copy.copy(p), copy.deepcopy(p)):
        assert q == p and q.note == {"k": [1]}
    assert pickle.loads(pickle.dumps(Checked(4))) == Checked(4)
    b = Bag([1], 2)
    assert copy.deepcopy(b) == b and copy.deepcopy(b).items is not b.items


@pytest.mark.parametrize("hook", ["_post_init", "__post_init", "__postinit__", "post_init"])
def test_a_misspelt_post_init_hook_is_refused(hook: str) -> None:
    """A hook under another spelling would never run; the class is refused when it is defined."""
    with pytest.raises(TypeError, match="__post_init__"):
        type("Bad", (Record,), {"__slots__": ("x",), hook: lambda self: None})


def test_post_init_is_inherited() -> None:
    class Base(Record):
        __slots__ = ("x",)

        def __post_init__(self) -> None:
            self.x = self.x * 2

    class Child(Base):
        __slots__ = ("y",)
        _defaults = {"y": 0}

    assert Child(3).x == 6
