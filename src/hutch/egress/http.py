"""Request heads as an HTTP proxy sees them: CONNECT and absolute-form requests.

Pure and strict: anything ambiguous (bare LF, folded headers, two lengths, a
target with spaces) raises `HttpParseError`, and the proxy answers 400. Being
strict here is what keeps a request from meaning one thing to the proxy and
another to the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEAD = 16 * 1024
HEAD_END = b"\r\n\r\n"

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION_RE = re.compile(r"HTTP/1\.[01]")
_TARGET_RE = re.compile(r"[\x21-\x7e]+")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_FIELD_VALUE_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")

# Headers that describe this hop, not the request; never forwarded. Content
# framing (Content-Length, Transfer-Encoding) is kept because the body is
# passed through unchanged.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "host"})


class HttpParseError(ValueError):
    """The request head is malformed or not something the proxy serves."""


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> list[str]:
        """All values of header `name` (case-insensitive), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@dataclass(frozen=True)
class AbsoluteTarget:
    host: str
    port: int
    path: str

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"


def find_head_end(buf: bytes | bytearray, start: int = 0) -> int:
    """The offset just past the blank line that ends a head, or -1 if there is none yet.

    A bare `\n\n` also ends it, so that a client using bare LF gets its 400 at
    once instead of waiting for a terminator that never comes.
    """
    ends = [
        index + len(mark) for mark in (HEAD_END, b"\n\n") if (index := buf.find(mark, max(0, start))) >= 0
    ]
    return min(ends, default=-1)


def parse_request_head(data: bytes) -> RequestHead:
    """Parse a request line and headers; `data` may include the blank line that ends them."""
    if len(data) > MAX_HEAD:
        raise HttpParseError(f"request head larger than {MAX_HEAD} bytes")
    if data.endswith(HEAD_END):
        data = data[: -len(HEAD_END)]
    text = data.decode("latin-1")
    lines = text.split("\r\n")
    if any("\r" in line or "\n" in line or "\x00" in line for line in lines):
        raise HttpParseError("stray CR, LF or NUL in the request head")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpParseError("request line is not 'METHOD TARGET HTTP/1.x'")
    method, target, version = parts
    if not _TOKEN_RE.fullmatch(method):
        raise HttpParseError("bad method")
    if not _TARGET_RE.fullmatch(target):
        raise HttpParseError("bad request target")
    if not _VERSION_RE.fullmatch(version):
        raise HttpParseError("unsupported HTTP version")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN_RE.fullmatch(name):
            raise HttpParseError("bad header line")
        value = value.strip(" \t")
        if not _FIELD_VALUE_RE.fullmatch(value):
            raise HttpParseError("bad header value")
        headers.append((name, value))
    head = RequestHead(method, target, version, tuple(headers))
    lengths = head.header("content-length")
    if head.header("transfer-encoding") and lengths:
        raise HttpParseError("both Transfer-Encoding and Content-Length")
    if len(set(lengths)) > 1 or any(not value.isdigit() or not value.isascii() for value in lengths):
        raise HttpParseError("bad Content-Length")
    return head


def parse_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """Split `host:port` (`[v6]:port`); the port may be omitted only when a default is given."""
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise HttpParseError("missing ']' in the authority")
        host, rest = authority[1:close], authority[close + 1 :]
        if rest and not rest.startswith(":"):
            raise HttpParseError("unexpected text after ']'")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_raw = authority.rpartition(":")
        if not sep:
            host, port_text = authority, None
        else:
            port_text = port_text_raw
    if not host:
        raise HttpParseError("empty host")
    if "@" in host:
        raise HttpParseError("user info is not allowed in a proxy request")
    if port_text is None:
        if default_port is None:
            raise HttpParseError("the port is required")
        return host, default_port
    if not _PORT_RE.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise HttpParseError("bad port")
    return host, int(port_text)


def parse_connect_target(target: str) -> tuple[str, int]:
    """The `host:port` of a CONNECT request (authority-form; the port is required)."""
    return parse_authority(target, None)


def parse_absolute_target(target: str) -> AbsoluteTarget:
    """Split an absolute-form `http://host[:port]/path?query` target."""
    scheme, sep, rest = target.partition("://")
    if not sep:
        raise HttpParseError("not an absolute-form target; this is a proxy, send http://host/path")
    if scheme.lower() != "http":
        raise HttpParseError("only http:// targets are served; use CONNECT for https")
    end = len(rest)
    for mark in "/?#":
        index = rest.find(mark)
        if index >= 0:
            end = min(end, index)
    authority, path = rest[:end], rest[end:]
    host, port = parse_authority(authority, 80)
    path = path.partition("#")[0]
    if not path.startswith("/"):
        path = "/" + path
    return AbsoluteTarget(host, port, path)


def origin_request(head: RequestHead, target: AbsoluteTarget) -> bytes:
    """The head to send to the origin: origin-form target, our Host, no proxy or hop headers."""
    dropped = set(_HOP_BY_HOP)
    for value in head.header("connection"):
        dropped.update(token.strip().lower() for token in value.split(","))
    # Framing stays whatever `Connection` names: the body is forwarded as sent.
    dropped -= {"content-length", "transfer-encoding"}
    lines = [f"{head.method} {target.path} HTTP/1.1", f"Host: {target.authority}"]
    for name, value in head.headers:
        lowered = name.lower()
        if lowered in dropped or lowered.startswith("proxy-"):
            continue
        lines.append(f"{name}: {value}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def simple_response(status: int, reason: str, body: str) -> bytes:
    """A complete `Connection: close` response with a plain-text body."""
    payload = body.encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + payload
