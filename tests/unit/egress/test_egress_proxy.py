"""The proxy end to end, on loopback only: stand-in servers on 127.0.0.1, the proxy on a
Unix socket in tmp_path. Names are resolved by an injected table, never by DNS."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import socket
import ssl
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from hutch.egress.audit import AuditEvent, AuditLog, AuditMode, read_events
from hutch.egress.listener import EgressProxy
from hutch.egress.policy import NetworkMode, Policy
from hutch.egress.relay import TLS_ACCESS_DENIED
from hutch.egress.resolve import CachingResolver
from hutch.egress.tls import MAX_RECORDS
from hutch.errors import SetupFailed

TIMEOUT = 10.0


# -- stand-in servers ------------------------------------------------------------


class EchoServer:
    """An asyncio echo server on 127.0.0.1 in its own thread; counts what it saw."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        started.wait(TIMEOUT)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._echo, "127.0.0.1", 0, backlog=4096))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._shutdown(server))
        self.loop.close()

    async def _shutdown(self, server: asyncio.Server) -> None:
        server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the aborted transports close their sockets

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            while data := await reader.read(1 << 18):
                self.received += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.writers.discard(writer)
            writer.transport.abort()

    def close(self) -> None:
        # Clients are gone by now; give their server-side handlers a moment to see EOF.
        wait_until(lambda: not self.writers, timeout=2.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)


class Origin(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        Origin.seen.append((self.requestline, {k.lower(): v for k, v in self.headers.items()}, body))
        payload = b"hello from origin, got %d bytes" % len(body)
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _reply
    do_POST = _reply

    def log_message(self, format: str, *args: object) -> None:  # the stdlib names it so
        pass


@pytest.fixture(autouse=True)
def no_handler_failures(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A connection handler that dies with an unexpected error is a bug, even if the test passed."""
    yield
    failures = [r for r in caplog.records if r.name == "hutch.egress" and r.levelname == "ERROR"]
    assert not failures, [r.getMessage() for r in failures]


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def origin() -> Iterator[int]:
    Origin.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def table_resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"test resolver: no such host {host}")
        return table[host]

    return resolve


class Harness:
    """Starts proxies in tmp_path and stops them all at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.proxies: list[EgressProxy] = []

    def start(
        self,
        allow: list[str],
        *,
        private: list[str] | None = None,
        table: dict[str, list[str]] | None = None,
        mode: NetworkMode = "allowlist",
        head_timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> EgressProxy:
        n = len(self.proxies)
        policy = Policy.from_config(mode, allow, private or [], resolver=table_resolver(table or {}))
        audit = AuditLog(self.tmp_path / f"audit{n}.jsonl", f"session{n}")
        proxy = EgressProxy(
            policy,
            self.tmp_path / f"p{n}.sock",
            audit,
            head_timeout=head_timeout,
            connect_timeout=connect_timeout,
        )
        proxy.start()
        self.proxies.append(proxy)
        return proxy

    def events(self, proxy: EgressProxy) -> list[AuditEvent]:
        proxy.stop()
        proxy.audit.close()
        return list(read_events(proxy.audit.path))

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.stop()
            proxy.audit.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


# -- client helpers ----------------------------------------------------------------


def dial(proxy: EgressProxy) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(str(proxy.socket_path))
    return sock


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def connect(proxy: EgressProxy, target: str) -> tuple[socket.socket, bytes]:
    sock = dial(proxy)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head, rest = read_head(sock)
    assert rest == b""
    return sock, head


def refused(proxy: EgressProxy, request: bytes) -> tuple[bytes, str]:
    sock = dial(proxy)
    sock.sendall(request)
    response = read_to_eof(sock)
    sock.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body.decode()


def echo_round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    return read_to_eof(sock)


def openssl_client_hello(server_name: str | None) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# -- CONNECT -----------------------------------------------------------------------


def test_connect_allowed_echoes_and_audits_byte_counts(harness: Harness, echo: EchoServer) -> None:
    proxy = harness.start([f"127.0.0.1:{echo.port}"])
    sock, head = connect(proxy, f"127.0.0.1:{echo.port}")
    assert head == b"HTTP/1.1 200 Connection established"
    payload = os.urandom(5000)
    assert echo_round_trip(sock, payload) == payload
    sock.close()
    assert wait_until(lambda: proxy.open_connections == 0)
    [event] = harness.events(proxy)
    assert (event.decision, event.method, event.host, event.port) == (
        "allow",
        "CONNECT",
        "127.0.0.1",
        echo.port,
    )
    assert event.rule == f"127.0.0.1:{echo.port}"
    assert (event.bytes_up, event.bytes_down) == (5000, 5000)
    assert event.session == "session0"


def test_connect_denied_ip_literal_with_positive_control(harness: Harness, echo: EchoServer) -> None:
    allowed = harness.start([f"127.0.0.1:{echo.port}"])
    sock, head = connect(allowed, f"127.0.0.1:{echo.port}")
    assert head.startswith(b"HTTP/1.1 200")
    assert echo_round_trip(sock, b"ping") == b"ping"
    sock.close()

    denied = harness.start([f"127.0.0.1:{echo.port + 1}", "api.example.com"])
    before = echo.connections
    head, body = refused(denied, f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 403 Forbidden")
    assert b"Connection: close" in head
    assert f"hutch denied CONNECT 127.0.0.1:{echo.port}:" in body
    assert "must be listed explicitly" in body
    assert f"--allow 127.0.0.1:{echo.port}" in body
    assert echo.connections == before
    [event] = harness.events(denied)
    assert event.decision == "deny" and event.bytes_up == 0 and event.bytes_down == 0


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f.0.0.1", "0177.0.0.1", "127.1"])
def test_connect_legacy_ip_spellings(harness: Harness, echo: EchoServer, spelling: str) -> None:
    denied = harness.start(["api.example.com"])
    head, body = refused(denied, f"CONNECT {spelling}:{echo.port} HTTP/1.1\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 403") and "loopback" in body
    allowed = harness.start([f"127.0.0.1:{echo.port}"])
    sock, head = connect(allowed, f"{spelling}:{echo.port}")
    assert head.startswith(b"HTTP/1.1 200")
    assert echo_round_trip(sock, b"x") == b"x"
    sock.close()


def test_connect_name_not_listed_and_listed(harness: Harness, echo: EchoServer) -> None:
    table = {"svc.test": ["127.0.0.1"], "evil.example": ["127.0.0.1"]}
    proxy = harness.start([], private=[f"svc.test:{echo.port}"], table=table)
    sock, head = connect(proxy, f"svc.test:{echo.port}")
    assert head.startswith(b"HTTP/1.1 200")
    assert echo_round_trip(sock, b"hello") == b"hello"
    sock.close()

    head, body = refused(proxy, b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403")
    assert body == (
        "hutch denied CONNECT evil.example:443: not on the allowlist.\n"
        'To allow it, add "evil.example" to [network] allow in hutch.toml, '
        "or run with --allow evil.example:443.\n"
    )


def test_connect_name_resolving_to_private_needs_allow_private(harness: Harness, echo: EchoServer) -> None:
    table = {"svc.test": ["127.0.0.1"]}
    plain = harness.start([f"svc.test:{echo.port}"], table=table)
    head, body = refused(plain, f"CONNECT svc.test:{echo.port} HTTP/1.1\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 403")
    assert "resolves to 127.0.0.1, a loopback address" in body
    assert f'"svc.test:{echo.port}" to [network] allow_private' in body

    private = harness.start([], private=[f"svc.test:{echo.port}"], table=table)
    sock, head = connect(private, f"svc.test:{echo.port}")
    assert head.startswith(b"HTTP/1.1 200")
    sock.close()


def test_mode_none_denies_what_allowlist_allows(harness: Harness, echo: EchoServer) -> None:
    entry = f"127.0.0.1:{echo.port}"
    none = harness.start([entry], mode="none")
    head, body = refused(none, f"CONNECT {entry} HTTP/1.1\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 403") and "--network allowlist" in body
    sock, head = connect(harness.start([entry]), entry)
    assert head.startswith(b"HTTP/1.1 200")
    sock.close()


# -- SNI ---------------------------------------------------------------------------


def test_sni_must_match_the_connect_host(harness: Harness, echo: EchoServer) -> None:
    table = {"svc.test": ["127.0.0.1"]}
    proxy = harness.start([f"127.0.0.1:{echo.port}"], private=[f"svc.test:{echo.port}"], table=table)

    # Positive controls: the matching name, and an IP literal without SNI.
    for target, name in ((f"svc.test:{echo.port}", "svc.test"), (f"127.0.0.1:{echo.port}", None)):
        hello = openssl_client_hello(name)
        sock, head = connect(proxy, target)
        assert head.startswith(b"HTTP/1.1 200")
        assert echo_round_trip(sock, hello) == hello
        sock.close()
    received = echo.received

    for target, name in (
        (f"svc.test:{echo.port}", "evil.example"),
        (f"svc.test:{echo.port}", None),
        (f"127.0.0.1:{echo.port}", "evil.example"),
    ):
        sock, head = connect(proxy, target)
        assert head.startswith(b"HTTP/1.1 200")
        assert echo_round_trip(sock, openssl_client_hello(name)) == TLS_ACCESS_DENIED
        sock.close()
    assert echo.received == received  # nothing of the denied hellos reached the server

    events = harness.events(proxy)
    assert [e.decision for e in events].count("allow") == 2
    reasons = sorted(e.reason for e in events if e.decision == "deny")
    assert len(reasons) == 3
    assert sum("SNI mismatch" in r for r in reasons) == 2
    assert sum("SNI missing" in r for r in reasons) == 1


def test_a_real_tls_client_sees_access_denied(harness: Harness, echo: EchoServer) -> None:
    proxy = harness.start([], private=[f"svc.test:{echo.port}"], table={"svc.test": ["127.0.0.1"]})
    sock, head = connect(proxy, f"svc.test:{echo.port}")
    assert head.startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context()
    with pytest.raises(ssl.SSLError, match="ACCESS_DENIED"):
        context.wrap_socket(sock, server_hostname="evil.example")
    sock.close()


def test_client_hello_split_across_writes_is_reassembled(harness: Harness, echo: EchoServer) -> None:
    proxy = harness.start([], private=[f"svc.test:{echo.port}"], table={"svc.test": ["127.0.0.1"]})
    hello = openssl_client_hello("svc.test")
    sock, _ = connect(proxy, f"svc.test:{echo.port}")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    for i in range(0, len(hello), 7):
        sock.sendall(hello[i : i + 7])
        time.sleep(0.001)
    assert echo_round_trip(sock, b"") == hello
    sock.close()


def test_a_hello_trickled_in_one_byte_records_is_denied_at_the_record_cap(
    harness: Harness, echo: EchoServer
) -> None:
    proxy = harness.start([f"127.0.0.1:{echo.port}"])
    sock, _ = connect(proxy, f"127.0.0.1:{echo.port}")
    message = b"\x01\x00\xff\xfb" + bytes(200)
    with contextlib.suppress(OSError):  # the proxy may close while we still write
        for i in range(0, len(message), 8):
            sock.sendall(b"".join(b"\x16\x03\x01\x00\x01" + message[j : j + 1] for j in range(i, i + 8)))
            time.sleep(0.002)
    assert read_to_eof(sock) == b""
    sock.close()
    [event] = harness.events(proxy)
    assert event.decision == "deny" and f"more than {MAX_RECORDS} records" in event.reason
    assert echo.received == 0  # nothing of it reached the server


def test_garbage_after_tls_record_byte_is_denied(harness: Harness, echo: EchoServer) -> None:
    proxy = harness.start([f"127.0.0.1:{echo.port}"])
    sock, _ = connect(proxy, f"127.0.0.1:{echo.port}")
    assert echo_round_trip(sock, b"\x16\x03\x01\x00\x05hello") == b""
    sock.close()
    [event] = harness.events(proxy)
    assert event.decision == "deny" and "not a valid TLS ClientHello" in event.reason


def _listen_on_443() -> socket.socket | None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", 443))
    except OSError:
        sock.close()
        return None
    sock.listen(8)
    return sock


def test_plaintext_on_443_is_denied(harness: Harness) -> None:
    listener = _listen_on_443()
    if listener is None:
        pytest.skip("cannot bind 127.0.0.1:443 here (needs privileges or the port is taken)")
    try:
        proxy = harness.start(["127.0.0.1:443"])
        # Positive control: a ClientHello (no SNI, IP literal) passes to the server.
        hello = openssl_client_hello(None)
        sock, head = connect(proxy, "127.0.0.1:443")
        assert head.startswith(b"HTTP/1.1 200")
        sock.sendall(hello)
        server_side, _ = listener.accept()
        server_side.settimeout(TIMEOUT)
        got = b""
        while len(got) < len(hello):
            got += server_side.recv(65536)
        assert got == hello
        server_side.close()
        sock.close()
        # Plaintext on the same port: closed, nothing forwarded.
        sock, head = connect(proxy, "127.0.0.1:443")
        assert head.startswith(b"HTTP/1.1 200")
        assert echo_round_trip(sock, b"GET / HTTP/1.1\r\n\r\n") == b""
        sock.close()
        server_side, _ = listener.accept()
        server_side.settimeout(TIMEOUT)
        assert read_to_eof(server_side) == b""
        server_side.close()
        events = harness.events(proxy)
        assert any("non-TLS traffic on port 443" in e.reason for e in events)
    finally:
        listener.close()


def test_server_speaks_first_protocols_work(harness: Harness) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    proxy = harness.start([f"127.0.0.1:{port}"])
    sock, head = connect(proxy, f"127.0.0.1:{port}")
    assert head.startswith(b"HTTP/1.1 200")
    server_side, _ = listener.accept()
    server_side.sendall(b"SSH-2.0-stand-in\r\n")
    assert sock.recv(100) == b"SSH-2.0-stand-in\r\n"
    sock.sendall(b"SSH-2.0-client\r\n")
    assert server_side.recv(100) == b"SSH-2.0-client\r\n"
    server_side.close()
    sock.close()
    listener.close()


# -- plain HTTP -----------------------------------------------------------------------


def test_plain_http_get_allowed_and_denied(harness: Harness, origin: int) -> None:
    request = (
        f"GET http://127.0.0.1:{origin}/path?q=1 HTTP/1.1\r\n"
        f"Host: somewhere.else\r\n"
        "Proxy-Authorization: Basic c2VjcmV0\r\n"
        "Proxy-Connection: keep-alive\r\n"
        "Accept: */*\r\n\r\n"
    ).encode()
    proxy = harness.start([f"127.0.0.1:{origin}"])
    sock = dial(proxy)
    sock.sendall(request)
    response = read_to_eof(sock)
    sock.close()
    assert response.startswith(b"HTTP/1.0 200") or response.startswith(b"HTTP/1.1 200")
    assert response.endswith(b"hello from origin, got 0 bytes")
    [(line, headers, _)] = Origin.seen
    assert line == "GET /path?q=1 HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{origin}"
    assert headers["connection"] == "close"
    assert not any(name.startswith("proxy-") for name in headers)
    [event] = harness.events(proxy)
    assert (event.decision, event.method, event.port) == ("allow", "GET", origin)
    assert event.bytes_up > 0 and event.bytes_down == len(response)

    denied = harness.start([f"127.0.0.1:{origin + 1}"])
    head, body = refused(denied, request)
    assert head.startswith(b"HTTP/1.1 403")
    assert f"hutch denied GET 127.0.0.1:{origin}:" in body
    assert len(Origin.seen) == 1
    [event] = harness.events(denied)
    assert (event.decision, event.method) == ("deny", "GET")
    assert "c2VjcmV0" not in (harness.tmp_path / "audit0.jsonl").read_text()


def test_plain_http_to_a_tls_port_is_denied(harness: Harness, origin: int) -> None:
    control = harness.start([f"127.0.0.1:{origin}"])
    sock = dial(control)
    sock.sendall(f"GET http://127.0.0.1:{origin}/ HTTP/1.1\r\n\r\n".encode())
    assert read_to_eof(sock).startswith(b"HTTP/1.0 200")
    sock.close()
    proxy = harness.start(["127.0.0.1:443"])
    head, body = refused(proxy, b"GET http://127.0.0.1:443/ HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403")
    assert "non-TLS traffic on port 443" in body


def test_plain_http_post_streams_the_body(harness: Harness, origin: int) -> None:
    body = os.urandom(1 << 20)
    proxy = harness.start([f"127.0.0.1:{origin}"])
    sock = dial(proxy)
    sock.sendall(
        f"POST http://127.0.0.1:{origin}/up HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    response = read_to_eof(sock)
    sock.close()
    assert response.endswith(b"got %d bytes" % len(body))
    assert Origin.seen[0][2] == body


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /path HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"400"),
        (b"GET https://127.0.0.1/ HTTP/1.1\r\n\r\n", b"400"),
        (b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", b"400"),
        (b"GET http://127.0.0.1/ HTTP/1.1\nHost: x\n\n", b"400"),
        (b"\x16\x03\x01\x02\x00" + b"\x00" * 100 + b"\r\n\r\n", b"400"),
        (b"GET http://127.0.0.1/ HTTP/1.1\r\nX: " + b"a" * 20000, b"431"),
    ],
)
def test_malformed_requests_get_4xx(harness: Harness, request_bytes: bytes, status: bytes) -> None:
    proxy = harness.start(["127.0.0.1:80"])
    head, _ = refused(proxy, request_bytes)
    assert head.startswith(b"HTTP/1.1 " + status)
    [event] = harness.events(proxy)
    assert event.decision == "deny"


def test_upstream_refusal_is_a_502(harness: Harness) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    proxy = harness.start([f"127.0.0.1:{port}"])
    head, body = refused(proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 502")
    assert "upstream failed: could not connect" in body
    [event] = harness.events(proxy)
    assert event.decision == "allow" and event.reason.startswith("upstream failed: could not connect")


class FlakyDns:
    """Answers each name only after `failures` temporary failures (EAI_AGAIN)."""

    def __init__(self, table: dict[str, list[str]], failures: int) -> None:
        self.table, self.failures = table, failures
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return self.table[host]


@pytest.mark.parametrize("caching", [True, False], ids=["retried", "control-not-retried"])
def test_a_temporary_dns_failure_is_retried_and_what_remains_is_a_502(
    tmp_path: Path, echo: EchoServer, caching: bool
) -> None:
    dns = FlakyDns({"svc.test": ["127.0.0.1"]}, failures=1)
    resolver = CachingResolver(dns) if caching else dns
    policy = Policy.from_config("allowlist", [], [f"svc.test:{echo.port}"], resolver=resolver)
    audit = AuditLog(tmp_path / "a.jsonl", "s")
    with audit, EgressProxy(policy, tmp_path / "p.sock", audit) as proxy:
        request = f"CONNECT svc.test:{echo.port} HTTP/1.1\r\n\r\n".encode()
        if caching:
            sock, head = connect(proxy, f"svc.test:{echo.port}")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert echo_round_trip(sock, b"after a retry") == b"after a retry"
            sock.close()
            for _ in range(5):  # cached: no more lookups
                sock, head = connect(proxy, f"svc.test:{echo.port}")
                assert head.startswith(b"HTTP/1.1 200")
                sock.close()
            assert dns.calls == 2
        else:
            # Without retries the one failure stands; it is the upstream's, not a denial.
            head, body = refused(proxy, request)
            assert head.startswith(b"HTTP/1.1 502"), head
            assert "upstream failed: could not resolve svc.test" in body
            assert "Temporary failure" in body
    events = list(read_events(tmp_path / "a.jsonl"))
    assert all(e.decision == "allow" for e in events)
    if not caching:
        assert events[0].reason.startswith("upstream failed: could not resolve")


def test_slow_head_times_out(harness: Harness, echo: EchoServer) -> None:
    proxy = harness.start([f"127.0.0.1:{echo.port}"], head_timeout=0.3)
    sock = dial(proxy)
    sock.sendall(b"CONNECT 127.0.0.1:")
    assert read_to_eof(sock) == b""
    sock.close()
    idle = dial(proxy)  # never sends anything: closed, and not worth an audit line
    assert read_to_eof(idle) == b""
    idle.close()
    [event] = harness.events(proxy)
    assert event.decision == "deny" and "timed out" in event.reason


# -- volume, floods, lifecycle -----------------------------------------------------------


def test_bulk_transfer_both_ways_is_exact(harness: Harness, echo: EchoServer) -> None:
    proxy = harness.start([f"127.0.0.1:{echo.port}"])
    sock, _ = connect(proxy, f"127.0.0.1:{echo.port}")
    payload = os.urandom(16 << 20)
    received = hashlib.sha256()
    count = 0

    def send() -> None:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    while chunk := sock.recv(1 << 18):
        received.update(chunk)
        count += len(chunk)
    sender.join()
    sock.close()
    assert count == len(payload)
    assert received.digest() == hashlib.sha256(payload).digest()
    [event] = harness.events(proxy)
    assert (event.bytes_up, event.bytes_down) == (len(payload), len(payload))


def _ensure_descriptors(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_a_flood_of_1000_concurrent_tunnels(harness: Harness, echo: EchoServer) -> None:
    count = 1000
    _ensure_descriptors(4 * count + 256)
    proxy = harness.start([f"127.0.0.1:{echo.port}"])

    async def flood() -> int:
        established = 0
        all_up = asyncio.Event()

        async def one(i: int) -> bool:
            nonlocal established
            reader, writer = await asyncio.open_unix_connection(str(proxy.socket_path))
            try:
                writer.write(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    return False
                established += 1
                if established == count:
                    all_up.set()
                await all_up.wait()  # every tunnel open at the same time
                payload = f"payload {i}".encode()
                writer.write(payload)
                return await reader.readexactly(len(payload)) == payload
            finally:
                writer.close()

        async with asyncio.timeout(60):
            results = await asyncio.gather(*(one(i) for i in range(count)))
        return sum(results)

    assert asyncio.run(flood()) == count
    assert wait_until(lambda: proxy.open_connections == 0)
    events = harness.events(proxy)
    assert len(events) == count
    assert all(e.decision == "allow" and e.bytes_up == e.bytes_down for e in events)


def test_garbage_flood_does_not_break_the_proxy(harness: Harness, echo: EchoServer) -> None:
    proxy = harness.start([f"127.0.0.1:{echo.port}"], head_timeout=1.0)

    async def garbage() -> None:
        async def one(i: int) -> None:
            reader, writer = await asyncio.open_unix_connection(str(proxy.socket_path))
            kinds = [
                os.urandom(300),
                b"CONNECT " + b"x" * 20000,
                b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n" % echo.port,  # never finishes
                b"GET http://[::1/ HTTP/1.1\r\n\r\n",
                b"\r\n\r\n",
                b"",
            ]
            writer.write(kinds[i % len(kinds)])
            with contextlib.suppress(ConnectionError):
                await writer.drain()
                if i % 2:
                    writer.close()  # hang up early
                    return
                await reader.read()
            writer.close()

        async with asyncio.timeout(30):
            await asyncio.gather(*(one(i) for i in range(600)))

    asyncio.run(garbage())
    sock, head = connect(proxy, f"127.0.0.1:{echo.port}")
    assert head.startswith(b"HTTP/1.1 200")
    assert echo_round_trip(sock, b"still alive") == b"still alive"
    sock.close()
    assert wait_until(lambda: proxy.open_connections == 0)


_STARVED_PROXY = """
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
from hutch.egress.audit import AuditLog
from hutch.egress.policy import Policy
from hutch.egress.listener import EgressProxy
policy = Policy.from_config("allowlist", [sys.argv[2]])
with AuditLog(Path(sys.argv[1] + ".jsonl"), "s") as audit:
    with EgressProxy(policy, Path(sys.argv[1]), audit, head_timeout=2.0):
        print("ready", flush=True)
        sys.stdin.read()
"""


def test_running_out_of_descriptors_is_survived(tmp_path: Path, echo: EchoServer) -> None:
    path = tmp_path / "p.sock"
    child = subprocess.Popen(
        [sys.executable, "-c", _STARVED_PROXY, str(path), f"127.0.0.1:{echo.port}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        flood: list[socket.socket] = []
        for _ in range(120):  # far more tunnels than 48 descriptors can carry
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(0.5)
            sock.connect(str(path))
            with contextlib.suppress(OSError):
                sock.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
            flood.append(sock)
        time.sleep(0.5)
        for sock in flood:
            sock.close()

        def serves() -> bool:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(2.0)
                with sock:
                    sock.connect(str(path))
                    sock.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
                    head, _ = read_head(sock)
                    return head.startswith(b"HTTP/1.1 200") and echo_round_trip(sock, b"ok") == b"ok"
            except OSError:
                return False

        assert wait_until(serves, timeout=20.0)
        assert child.poll() is None
    finally:
        try:
            _, err = child.communicate(timeout=TIMEOUT)  # closes stdin: the child stops
        except subprocess.TimeoutExpired:
            child.kill()
            raise
    assert child.returncode == 0, err
    assert "Traceback" not in err
    assert "cannot accept" in err  # the flood really did exhaust descriptors


def test_stop_closes_open_tunnels_and_removes_the_socket(harness: Harness, echo: EchoServer) -> None:
    proxy = harness.start([f"127.0.0.1:{echo.port}"])
    path = proxy.socket_path
    assert stat.S_ISSOCK(path.lstat().st_mode)
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    sock, _ = connect(proxy, f"127.0.0.1:{echo.port}")
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
    half = dial(proxy)
    half.sendall(b"CONNECT 127.0.0.1")
    proxy.stop()
    assert read_to_eof(sock) == b""
    assert read_to_eof(half) == b""
    assert proxy.open_connections == 0
    assert not path.exists()
    proxy.stop()  # idempotent
    sock.close()
    half.close()


def test_context_manager_and_restart_on_a_stale_socket(tmp_path: Path, echo: EchoServer) -> None:
    path = tmp_path / "egress.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays behind, nobody listening: as after a crash
    policy = Policy.from_config("allowlist", [f"127.0.0.1:{echo.port}"])
    with AuditLog(tmp_path / "a.jsonl", "s") as audit, EgressProxy(policy, path, audit) as proxy:
        sock, head = connect(proxy, f"127.0.0.1:{echo.port}")
        assert head.startswith(b"HTTP/1.1 200")
        sock.close()
        with pytest.raises(SetupFailed, match="already listening"):
            EgressProxy(policy, path, audit).start()
    assert not path.exists()


def test_refuses_to_replace_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "egress.sock"
    path.write_text("precious")
    audit = AuditLog(tmp_path / "a.jsonl", "s")
    with pytest.raises(SetupFailed, match="not a socket"):
        EgressProxy(Policy("none"), path, audit).start()
    assert path.read_text() == "precious"
    with pytest.raises(SetupFailed):
        EgressProxy(Policy("none"), tmp_path / "missing-dir" / "egress.sock", audit).start()



@pytest.mark.parametrize("mode", ["required", "best-effort"])
def test_a_full_disk_refuses_connections_only_when_the_audit_is_required(
    tmp_path: Path, echo: EchoServer, mode: AuditMode, caplog: pytest.LogCaptureFixture
) -> None:
    policy = Policy.from_config("allowlist", [f"127.0.0.1:{echo.port}"])
    audit = AuditLog(Path("/dev/full"), "s", mode=mode)  # every write: ENOSPC
    with EgressProxy(policy, tmp_path / "p.sock", audit) as proxy:
        # A full disk shows at the first write: a denied connection's record.
        head, _ = refused(proxy, b"CONNECT not-listed.example:443 HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403")
        assert wait_until(lambda: audit.unlogged == 1)
        for _ in range(20):
            if mode == "required":
                head, body = refused(proxy, f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
                assert head.startswith(b"HTTP/1.1 503"), head
                assert "audit log cannot be written (No space left on device)" in body
            else:
                sock, head = connect(proxy, f"127.0.0.1:{echo.port}")
                assert head.startswith(b"HTTP/1.1 200"), head
                assert echo_round_trip(sock, b"unlogged") == b"unlogged"
                sock.close()
        assert wait_until(lambda: audit.unlogged == 21)
    said = [r for r in caplog.records if r.name == "hutch.egress" and "audit log" in r.getMessage()]
    assert len(said) == 1


# -- sockets handed over by the sandbox's loopback relay ---------------------------------


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on loopback: (the tool's end, the relay's accepted end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        tool = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        accepted, _ = listener.accept()
    accepted.settimeout(TIMEOUT)
    return tool, accepted


def hand_over(proxy: EgressProxy, fds: list[int], data: bytes = b"\0") -> None:
    with socket.socket(socket.AF_UNIX) as unix:
        unix.connect(str(proxy.socket_path))
        socket.send_fds(unix, [data], fds)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_handed_over_tcp_connection_is_served_directly(harness: Harness, echo: EchoServer) -> None:
    proxy = harness.start([f"127.0.0.1:{echo.port}"])
    tool, accepted = tcp_pair()
    # A long linger would make the proxy's close block: it must switch it off.
    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 30))
    hand_over(proxy, [accepted.fileno()])
    tool.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
    head, rest = read_head(tool)
    assert head.startswith(b"HTTP/1.1 200") and rest == b""
    assert echo_round_trip(tool, b"straight through") == b"straight through"
    assert struct.unpack("ii", accepted.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))[0] == 0
    tool.close()
    accepted.close()
    [event] = harness.events(proxy)
    assert event.decision == "allow" and event.bytes_down == len(b"straight through")


@pytest.mark.parametrize("what", ["file", "udp", "listening", "unix", "two", "no-marker"])
def test_anything_else_handed_over_is_refused_and_closed(
    harness: Harness, echo: EchoServer, tmp_path: Path, what: str
) -> None:
    proxy = harness.start([f"127.0.0.1:{echo.port}"])
    proxy.audit.open()
    before = open_fds()
    keep: list[socket.socket] = []
    data = b"\0"
    if what == "file":
        fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        fds = [fd]
    elif what == "udp":
        keep.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        keep[0].connect(("127.0.0.1", echo.port))
        fds = [keep[0].fileno()]
    elif what == "listening":
        keep.append(socket.create_server(("127.0.0.1", 0)))
        fds = [keep[0].fileno()]
    elif what == "unix":
        keep += socket.socketpair()
        fds = [keep[0].fileno()]
    else:
        tool, accepted = tcp_pair()
        keep += [tool, accepted]
        fds = [accepted.fileno(), accepted.fileno()] if what == "two" else [accepted.fileno()]
        data = b"\0" if what == "two" else b"x"
    hand_over(proxy, fds, data)
    assert wait_until(lambda: bool(list(read_events(proxy.audit.path))))
    # Nothing handed over stays open in the proxy: only the test's own descriptors remain.
    assert wait_until(lambda: open_fds() == before + len(keep) + (what == "file"))
    for sock in keep:
        sock.close()
    if what == "file":
        os.close(fds[0])
    [event] = harness.events(proxy)
    assert event.decision == "deny" and "loopback relay handed over" in event.reason
