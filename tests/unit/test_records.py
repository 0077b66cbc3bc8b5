"""hutch.records.NamedTuple must build what typing.NamedTuple builds."""

from __future__ import annotations

import pickle
import typing

import pytest

from hutch import records


def _define(base: type) -> type:
    class Point(base):  # the base is chosen at run time
        """A point."""

        x: int
        y: int = 0
        label: str = "p"

        @property
        def norm1(self) -> int:
            return abs(self.x) + abs(self.y)

        def moved(self, dx: int) -> Point:
            return self._replace(x=self.x + dx)

    return Point


OURS = _define(records.NamedTuple)
THEIRS = _define(typing.NamedTuple)  # the reference


def test_same_fields_defaults_and_behaviour() -> None:
    assert OURS._fields == THEIRS._fields == ("x", "y", "label")
    assert OURS._field_defaults == THEIRS._field_defaults
    ours, theirs = OURS(3, -4), THEIRS(3, -4)
    assert tuple(ours) == tuple(theirs) == (3, -4, "p")
    assert repr(ours) == repr(theirs)
    assert ours.norm1 == theirs.norm1 == 7
    assert tuple(ours.moved(1)) == (4, -4, "p")
    assert ours == (3, -4, "p") and hash(ours) == hash(theirs)
    assert OURS.__doc__ == "A point."
    assert OURS.__module__ == THEIRS.__module__ == __name__
    assert list(OURS.__annotations__) == list(THEIRS.__annotations__)
    assert isinstance(ours, tuple) and not isinstance(ours, records.NamedTuple)


def test_immutable_and_picklable() -> None:
    point = OURS(1, 2)
    with pytest.raises(AttributeError):
        point.x = 5
    # Pickling finds the class by module and qualified name, as for typing's.
    global _Pickled
    _Pickled = OURS
    _Pickled.__qualname__ = "_Pickled"
    assert pickle.loads(pickle.dumps(point)) == point


_Pickled: type = OURS


def test_field_without_default_after_one_with_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default"):

        class Bad(records.NamedTuple):
            a: int = 1
            b: int


def test_construction_and_helpers_as_typing() -> None:
    for cls in (OURS, THEIRS):
        assert tuple(cls(1, label="q")) == (1, 0, "q")
        assert tuple(cls(y=2, x=1)) == (1, 2, "p")
        assert tuple(cls._make([5, 6, "r"])) == (5, 6, "r")
        assert cls(1, 2)._asdict() == {"x": 1, "y": 2, "label": "p"}
        assert cls(1, 2)._replace(label="z") == (1, 2, "z")
        assert cls.__match_args__ == ("x", "y", "label")
        assert cls.x.__doc__ == "Alias for field number 0"
        assert not hasattr(cls(1), "__dict__")
        for bad in ((), (1, 2, 3, 4)):
            with pytest.raises(TypeError):
                cls(*bad)
        with pytest.raises(TypeError):
            cls(1, x=2)  # x twice
        with pytest.raises(TypeError):
            cls(1, z=2)
        with pytest.raises(TypeError):
            cls._make([1])
        with pytest.raises(ValueError, match="unexpected field names"):
            cls(1)._replace(z=3)
        match cls(7, 8):
            case cls(a, b):  # type: ignore[misc]  # the class is chosen at run time
                assert (a, b) == (7, 8)


def test_undocumented_record_gets_namedtuples_docstring() -> None:
    class Pair(records.NamedTuple):
        a: int
        b: int

    assert Pair.__doc__ == "Pair(a, b)"


def test_a_field_may_be_named_cls() -> None:
    class Bound(records.NamedTuple):
        cls: str
        self: int = 0

    assert tuple(Bound(cls="c", self=1)) == ("c", 1)
