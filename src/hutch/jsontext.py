"""json.loads and json.dumps for the launch path, without importing json.

The json package imports re (with enum, ~6 ms per start here) for the
whitespace it skips between values and the escapes it writes. Its parser and
its writer are the C scanner and encoder in _json, which need no re: this
module drives those same two, so the results are json's own. Errors are
ValueError (json.JSONDecodeError is one) and TypeError, as with json. Where
_json is missing (another interpreter), json itself is used.
"""

from __future__ import annotations

from hutch.records import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_WHITESPACE = " \t\n\r"  # what JSON allows around values (json.decoder.WHITESPACE)


def _constant(name: str) -> float:
    return float(name)  # NaN, Infinity, -Infinity, as json.loads reads them


class _Context:
    """The attributes json.decoder.JSONDecoder hands the C scanner, at their defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)


def _scanner() -> Callable[[str, int], tuple[Any, int]] | None:
    try:
        import _json

        return _json.make_scanner(_Context)  # type: ignore[arg-type]  # a duck-typed context
    except (ImportError, AttributeError, TypeError):  # no _json, or a scanner wanting more
        return None


_scan = _scanner()


def _unserializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: object) -> str:
    """json.dumps(value) with its defaults: ASCII, ", " and ": ", NaN allowed."""
    try:
        from _json import encode_basestring_ascii, make_encoder
    except ImportError:
        import json

        return json.dumps(value)
    # The arguments json.JSONEncoder passes: markers (circular check), default,
    # string encoder, indent, key and item separators, sort_keys, skipkeys, allow_nan.
    encode = make_encoder({}, _unserializable, encode_basestring_ascii, None, ": ", ", ",
                          False, False, True)  # fmt: skip
    return "".join(encode(value, 0))


def loads(text: str) -> Any:  # as json.loads
    scan = _scan
    if scan is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = scan(text, start)
    except StopIteration as stop:
        raise ValueError(f"Expecting value: char {stop.value}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data: char {end}")
    return value
