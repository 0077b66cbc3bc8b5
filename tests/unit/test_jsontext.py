"""hutch.jsontext reads what json.loads reads, and refuses what it refuses."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hutch import jsontext

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
)
SPACE = st.text(alphabet=" \t\n\r", max_size=3)


def _outcome(read, text: str) -> tuple[str, object]:
    try:
        return "value", read(text)
    except ValueError:
        return "error", None


@given(VALUES, st.sampled_from([None, 0, 2]), st.booleans(), SPACE, SPACE)
def test_reads_what_json_writes(
    value: object, indent: int | None, ascii_only: bool, lead: str, trail: str
) -> None:
    text = lead + json.dumps(value, indent=indent, ensure_ascii=ascii_only) + trail
    assert jsontext.loads(text) == json.loads(text) == value


@given(st.text(alphabet='{}[]",: \t\n0123456789.eE+-truefalsnNIfiy\\u', max_size=24))
def test_same_verdict_as_json_on_any_text(text: str) -> None:
    ours, theirs = _outcome(jsontext.loads, text), _outcome(json.loads, text)
    assert ours[0] == theirs[0], text
    if ours[0] == "value":
        assert repr(ours[1]) == repr(theirs[1])


@given(VALUES | st.floats() | st.dictionaries(st.integers() | st.booleans() | st.none(), SCALARS))
def test_writes_what_json_writes(value: object) -> None:
    assert jsontext.dumps(value) == json.dumps(value)


def test_write_errors_as_json() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsontext.dumps({"a": object()})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        jsontext.dumps(loop)


def test_constants_and_errors() -> None:
    assert math.isnan(jsontext.loads("NaN"))
    assert jsontext.loads("[-Infinity]") == [float("-inf")]
    for bad in ("", "  ", "[1] 2", "{'a': 1}", "[1,]", '"open', "\ufeff{}"):
        assert _outcome(jsontext.loads, bad)[0] == "error", bad


def test_imports_neither_json_nor_re() -> None:
    code = (
        "import sys, hutch.jsontext as j; j.loads(j.dumps({'a': [1, 'b']})); "
        "print(sorted({'json', 're'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
