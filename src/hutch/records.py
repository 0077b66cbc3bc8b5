"""typing.NamedTuple's class syntax without importing typing.

Importing typing costs ~6 ms per start here, and `hutch run` sits in front of
every agent launch. Type checkers see typing.NamedTuple itself; at run time the
same class body becomes the collections.namedtuple that typing would make:
annotated names are the fields (in order, with their defaults), and everything
else in the body (methods, properties, docstring) is set on the new class.
"""

from __future__ import annotations

import collections

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy knows the name
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    _NOT_COPIED = frozenset({"__module__", "__qualname__", "__annotations__", "__dict__",
                             "__weakref__"})  # fmt: skip

    class _RecordMeta(type):
        def __new__(mcs, name, bases, namespace):
            if not bases:  # NamedTuple itself
                return super().__new__(mcs, name, bases, namespace)
            fields = tuple(namespace.get("__annotations__", {}))
            defaults = [namespace[field] for field in fields if field in namespace]
            if any(field not in namespace for field in fields[len(fields) - len(defaults) :]):
                raise TypeError(f"{name}: a field without a default follows one with a default")
            record = collections.namedtuple(name, fields, defaults=defaults,
                                            module=namespace["__module__"])  # fmt: skip
            record.__qualname__ = namespace.get("__qualname__", name)
            record.__annotations__ = dict(namespace.get("__annotations__", {}))
            for key, value in namespace.items():
                if key not in _NOT_COPIED and key not in fields:
                    setattr(record, key, value)
            return record

    class NamedTuple(metaclass=_RecordMeta):
        """Subclass with annotated fields, as with typing.NamedTuple."""

__all__ = ["TYPE_CHECKING", "NamedTuple"]
