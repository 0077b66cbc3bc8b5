from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch.egress.http import (
    MAX_HEAD,
    AbsoluteTarget,
    HttpParseError,
    origin_request,
    parse_absolute_target,
    parse_connect_target,
    parse_request_head,
    simple_response,
)


def test_parse_connect_head() -> None:
    head = parse_request_head(
        b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nUser-Agent: curl/8\r\n\r\n"
    )
    assert (head.method, head.target, head.version) == ("CONNECT", "api.example.com:443", "HTTP/1.1")
    assert head.header("host") == ["api.example.com:443"]
    assert parse_connect_target(head.target) == ("api.example.com", 443)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("a.example:443", ("a.example", 443)),
        ("[::1]:8080", ("::1", 8080)),
        ("127.0.0.1:22", ("127.0.0.1", 22)),
    ],
)
def test_connect_targets(target: str, expected: tuple[str, int]) -> None:
    assert parse_connect_target(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        "a.example",
        "a.example:",
        "a.example:0",
        "a.example:65536",
        ":443",
        "u@a.example:443",
        "[::1",
        "[::1]x:1",
        "a.example:4x3",
    ],
)
def test_bad_connect_targets(target: str) -> None:
    with pytest.raises(HttpParseError):
        parse_connect_target(target)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://a.example/x?y=1", AbsoluteTarget("a.example", 80, "/x?y=1")),
        ("http://a.example:8080", AbsoluteTarget("a.example", 8080, "/")),
        ("HTTP://a.example?q", AbsoluteTarget("a.example", 80, "/?q")),
        ("http://a.example/p#frag", AbsoluteTarget("a.example", 80, "/p")),
        ("http://[::1]:81/", AbsoluteTarget("::1", 81, "/")),
    ],
)
def test_absolute_targets(target: str, expected: AbsoluteTarget) -> None:
    assert parse_absolute_target(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        "/path",
        "*",
        "https://a.example/",
        "ftp://a.example/",
        "http:///x",
        "http://u:p@a.example/",
        "http://a.example:0/",
    ],
)
def test_bad_absolute_targets(target: str) -> None:
    with pytest.raises(HttpParseError):
        parse_absolute_target(target)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET http://a/ HTTP/1.1\nHost: a\n\n",
        b"GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET  http://a/ HTTP/1.1\r\n\r\n",
        b"GET http://a/ HTTP/2.0\r\n\r\n",
        b"G(T http://a/ HTTP/1.1\r\n\r\n",
        b"GET http://a/\x00 HTTP/1.1\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST http://a/ HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nNoColon\r\n\r\n",
        b"\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n",
    ],
)
def test_malformed_heads(raw: bytes) -> None:
    with pytest.raises(HttpParseError):
        parse_request_head(raw)


def test_origin_request_rewrites_and_strips() -> None:
    head = parse_request_head(
        b"POST http://a.example:8080/up?x=1 HTTP/1.1\r\n"
        b"Host: evil.example\r\n"
        b"Proxy-Authorization: Basic c2VjcmV0\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Connection: keep-alive, X-Drop, Content-Length\r\n"
        b"X-Drop: 1\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"Upgrade: websocket\r\n"
        b"Content-Length: 3\r\n"
        b"Accept: */*\r\n\r\n"
    )
    out = origin_request(head, parse_absolute_target(head.target)).decode()
    assert out == (
        "POST /up?x=1 HTTP/1.1\r\n"
        "Host: a.example:8080\r\n"
        "Content-Length: 3\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n\r\n"
    )


def test_simple_response() -> None:
    response = simple_response(403, "Forbidden", "nope\n")
    assert response == (
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 5\r\nConnection: close\r\n\r\nnope\n"
    )


@settings(deadline=None)  # timing on a shared, loaded machine is noise
@given(st.binary(max_size=400))
def test_arbitrary_heads_raise_only_parse_errors(data: bytes) -> None:
    try:
        head = parse_request_head(data)
    except HttpParseError:
        return
    for parse in (parse_connect_target, parse_absolute_target):
        try:
            parse(head.target)
        except HttpParseError:
            pass


token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1, max_size=12)
value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)


@settings(deadline=None)  # timing on a shared, loaded machine is noise
@given(
    method=token,
    path=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30),
    headers=st.lists(st.tuples(token, value), max_size=8),
    junk=st.binary(max_size=30),
)
def test_structured_heads(method: str, path: str, headers: list[tuple[str, str]], junk: bytes) -> None:
    raw = f"{method} http://a.example/{path} HTTP/1.1\r\n"
    raw += "".join(f"{name}: {val}\r\n" for name, val in headers) + "\r\n"
    for data in (raw.encode(), raw.encode()[: len(raw) // 2] + junk):
        try:
            head = parse_request_head(data)
        except HttpParseError:
            continue
        try:
            target = parse_absolute_target(head.target)
        except HttpParseError:
            continue
        rewritten = origin_request(head, target)
        assert rewritten.endswith(b"Connection: close\r\n\r\n")
        lines = rewritten.decode("latin-1").split("\r\n")[1:-2]
        names = [line.partition(":")[0].lower() for line in lines]
        assert not any(name.startswith("proxy-") for name in names)
        assert names.count("host") == 1
