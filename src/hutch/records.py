"""typing.NamedTuple's class syntax without importing typing or collections.

`hutch run` sits in front of every agent launch, and importing typing costs
~6 ms per start here; collections.namedtuple then costs ~0.1 ms per class
(it compiles a constructor with eval) on top of ~2 ms to import collections.
Type checkers see typing.NamedTuple itself. At run time the class body becomes
a tuple subclass with what namedtuple gives one: annotated names are the
fields (in order, with their defaults), read through the same C accessor;
_make, _replace, _asdict, _fields, _field_defaults, __match_args__, a
namedtuple's repr, no instance __dict__, and pickling by module and name.
Everything else in the body (methods, properties, docstring) is kept.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy knows the name
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    try:
        from _collections import _tuplegetter
    except ImportError:  # an interpreter without it: the same, in Python

        def _tuplegetter(index, doc):
            from operator import itemgetter

            return property(itemgetter(index), doc=doc)

    _NOT_COPIED = frozenset({"__module__", "__qualname__", "__annotations__", "__dict__",
                             "__weakref__"})  # fmt: skip

    def _new(cls, /, *args, **kwargs):
        fields = cls._fields
        if not kwargs and len(args) == len(fields):
            return tuple.__new__(cls, args)
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments but {len(args)} were given")
        values = list(args)
        for field in fields[len(args) :]:
            if field in kwargs:
                values.append(kwargs.pop(field))
            elif field in cls._field_defaults:
                values.append(cls._field_defaults[field])
            else:
                raise TypeError(f"{cls.__name__}() missing required argument: {field!r}")
        if kwargs:
            raise TypeError(f"{cls.__name__}() got unexpected or repeated arguments: {sorted(kwargs)}")
        return tuple.__new__(cls, values)

    def _make(cls, iterable):
        result = tuple.__new__(cls, iterable)
        if len(result) != len(cls._fields):
            raise TypeError(f"Expected {len(cls._fields)} arguments, got {len(result)}")
        return result

    def _replace(self, /, **changes):
        result = self._make([changes.pop(f, value) for f, value in zip(self._fields, self, strict=True)])
        if changes:
            raise ValueError(f"Got unexpected field names: {list(changes)!r}")
        return result

    def _repr(self):
        shown = ", ".join(f"{field}={value!r}" for field, value in zip(self._fields, self, strict=True))
        return f"{self.__class__.__name__}({shown})"

    def _asdict(self):
        return dict(zip(self._fields, self, strict=True))

    def _getnewargs(self):
        return tuple(self)

    class _RecordMeta(type):
        def __new__(mcs, name, bases, namespace):
            if not bases:  # NamedTuple itself
                return super().__new__(mcs, name, bases, namespace)
            annotations = dict(namespace.get("__annotations__", {}))
            fields = tuple(annotations)
            defaults = {field: namespace[field] for field in fields if field in namespace}
            if any(field not in defaults for field in fields[len(fields) - len(defaults) :]):
                raise TypeError(f"{name}: a field without a default follows one with a default")
            body = {
                "__doc__": f"{name}({', '.join(fields)})",
                "__slots__": (),
                "_fields": fields,
                "_field_defaults": defaults,
                "__match_args__": fields,
                "__new__": _new,
                "_make": classmethod(_make),
                "_replace": _replace,
                "__repr__": _repr,
                "_asdict": _asdict,
                "__getnewargs__": _getnewargs,
            }
            body.update((key, value) for key, value in namespace.items()
                        if key not in _NOT_COPIED and key not in fields)  # fmt: skip
            for index, field in enumerate(fields):
                body[field] = _tuplegetter(index, f"Alias for field number {index}")
            body["__module__"] = namespace["__module__"]
            body["__qualname__"] = namespace.get("__qualname__", name)
            body["__annotations__"] = annotations
            return type(name, (tuple,), body)

    class NamedTuple(metaclass=_RecordMeta):
        """Subclass with annotated fields, as with typing.NamedTuple."""

__all__ = ["TYPE_CHECKING", "NamedTuple"]
