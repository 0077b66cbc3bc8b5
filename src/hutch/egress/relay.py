"""One client connection through the egress proxy: request head, decision, tunnel.

Sockets are driven directly (`sock_recv` / `sock_sendall`) rather than through
streams, one large read and one write per chunk; a flow that turns out to be
bulk moves to splice(2) through a pipe, so its bytes never enter Python at all.

Inside the sandbox, tools reach the proxy at a loopback TCP address. The relay
there does not copy bytes: it hands each accepted TCP socket over the Unix
socket (SCM_RIGHTS, after one NUL byte), and the proxy serves that socket
directly. What is handed over comes from the sandbox, so it is checked: one
descriptor, a connected TCP socket, lingering switched off (a long linger
would make closing it block the proxy). A client may also speak HTTP on the
Unix socket itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
from concurrent.futures import Executor
from dataclasses import dataclass

from hutch.egress.audit import AuditLog, Verdict
from hutch.egress.http import (
    HEAD_END,
    MAX_HEAD,
    AbsoluteTarget,
    HttpParseError,
    find_head_end,
    origin_request,
    parse_absolute_target,
    parse_connect_target,
    parse_request_head,
    simple_response,
)
from hutch.egress.policy import (
    Decision,
    HostError,
    Policy,
    denial_message,
    normalise_host,
    plaintext_denial,
    sni_denial,
)
from hutch.egress.tls import ClientHello, ClientHelloError, ClientHelloReader, looks_like_tls

BUFFER = 256 * 1024
# A read this large means a bulk transfer (small reads are interactive traffic).
BULK_CHUNK = 64 * 1024
MAX_BULK_FLOWS = 64
BULK_SNDBUF = 4 * 1024 * 1024
PIPE_SIZE = 1024 * 1024
_HAVE_SPLICE = hasattr(os, "splice")
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
# A fatal TLS alert record: level 2 (fatal), description 49 (access_denied).
TLS_ACCESS_DENIED = b"\x15\x03\x03\x00\x02\x02\x31"
# What the sandbox's loopback relay sends along with the socket it hands over.
HANDOFF = b"\0"


class _Denied(Exception):
    """Raised inside a tunnel when what the client sent breaks the policy."""


@dataclass
class _Conn:
    """What the audit line for one client connection will say."""

    method: str = ""
    host: str = ""
    port: int = 0
    verdict: Verdict | None = None
    reason: str = ""
    rule: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0

    def apply(self, decision: Decision) -> None:
        self.host, self.port = decision.host, decision.port
        self.verdict = "allow" if decision.allowed else "deny"
        self.reason, self.rule = decision.reason, decision.rule


class Relay:
    """Serves client connections for one session: `await relay.serve(client)` per connection.

    Runs on the listener's event loop; `executor` runs the blocking resolver.
    """

    def __init__(
        self,
        policy: Policy,
        audit: AuditLog,
        executor: Executor,
        *,
        connect_timeout: float,
        head_timeout: float,
    ) -> None:
        self.policy = policy
        self.audit = audit
        self.connect_timeout = connect_timeout
        self.head_timeout = head_timeout
        self._executor = executor
        self._bulk_flows = 0

    async def serve(self, client: socket.socket) -> None:
        """Handle one accepted client to the end and write its audit line; never raises OSError."""
        conn = _Conn()
        held: list[socket.socket] = []  # a handed-over client, the upstream
        try:
            await self._handle(client, conn, held)
        except (OSError, TimeoutError):
            pass  # a reset or a stalled peer ends the connection; the audit line says the rest
        finally:
            client.close()
            for sock in held:
                sock.close()
            if conn.verdict is not None:
                self.audit.record(
                    host=conn.host,
                    port=conn.port,
                    decision=conn.verdict,
                    reason=conn.reason,
                    rule=conn.rule,
                    bytes_up=conn.bytes_up,
                    bytes_down=conn.bytes_down,
                    method=conn.method,
                )

    async def _handle(self, client: socket.socket, conn: _Conn, held: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        raw = await self._read_head(client, conn, held)
        if raw is None:
            return
        client, head_bytes, extra = raw
        try:
            head = parse_request_head(head_bytes)
        except HttpParseError as err:
            await self._refuse(client, conn, 400, "Bad Request", f"malformed request: {err}")
            return
        conn.method = head.method
        target: AbsoluteTarget | None = None
        try:
            if head.method == "CONNECT":
                host, port = parse_connect_target(head.target)
            else:
                target = parse_absolute_target(head.target)
                host, port = target.host, target.port
        except HttpParseError as err:
            await self._refuse(client, conn, 400, "Bad Request", f"malformed request: {err}")
            return
        conn.host, conn.port = host[:255], port
        decision = await self._decide(host, port)
        conn.apply(decision)
        if decision.allowed and target is not None and (why := plaintext_denial(decision)):
            # The same rule as for tunnels: a TLS port carries TLS, not our plain HTTP.
            decision = decision._replace(allowed=False, reason=why, kind="traffic")
            conn.apply(decision)
        if decision.kind == "unresolved":
            # Not the policy's doing: the name is allowed, the lookup failed.
            await self._upstream_failed(client, conn, decision.reason)
            return
        if not decision.allowed:
            body = denial_message(head.method, decision)
            await self._respond(client, simple_response(403, "Forbidden", body))
            return
        if (why := self.audit.refusal()) is not None:
            # Only what would pass is refused: a denial lets nothing out, logged or not.
            await self._refuse(client, conn, 503, "Service Unavailable", why)
            return
        sock = await self._connect(decision)
        if isinstance(sock, str):
            await self._upstream_failed(client, conn, f"could not connect to {decision.target}: {sock}")
            return
        held.append(sock)
        if target is None:
            await loop.sock_sendall(client, ESTABLISHED)
            await self._tunnel(client, sock, conn, decision, extra)
        else:
            request = origin_request(head, target) + extra
            await loop.sock_sendall(sock, request)
            conn.bytes_up += len(request)
            up = loop.create_task(self._pump(client, sock, conn, up=True))
            down = loop.create_task(self._pump(sock, client, conn, up=False))
            # The origin closes after one response (we sent Connection: close).
            await self._join(up, down, grace=0.0)

    async def _read_head(
        self, client: socket.socket, conn: _Conn, held: list[socket.socket]
    ) -> tuple[socket.socket, bytes, bytes] | None:
        """Read a request head from the client, or from the socket it hands over first.

        Returns the socket to answer, the head, and the bytes that followed it.
        """
        loop = asyncio.get_running_loop()
        buf = bytearray()
        try:
            async with asyncio.timeout(self.head_timeout):
                chunk, fds, flags = await _recv_fds(loop, client, MAX_HEAD + len(HEAD_END))
                if fds:
                    handed = _handed_socket(chunk, fds, flags)
                    if handed is None:
                        _deny(conn, "the loopback relay handed over something other than a TCP connection")
                        return None
                    held.append(handed)
                    client = handed
                    chunk = await loop.sock_recv(client, MAX_HEAD + len(HEAD_END))
                while True:
                    if not chunk:
                        if buf:
                            _deny(conn, "connection closed before the request head ended")
                        return None
                    start = max(0, len(buf) - len(HEAD_END) + 1)
                    buf += chunk
                    split = find_head_end(buf, start)
                    if 0 <= split <= MAX_HEAD:
                        return client, bytes(buf[:split]), bytes(buf[split:])
                    if len(buf) >= MAX_HEAD:
                        await self._refuse(
                            client,
                            conn,
                            431,
                            "Request Header Fields Too Large",
                            f"request head larger than {MAX_HEAD} bytes",
                        )
                        return None
                    chunk = await loop.sock_recv(client, MAX_HEAD + len(HEAD_END))
        except TimeoutError:
            if buf:
                _deny(conn, "timed out waiting for the request head")
            return None

    async def _decide(self, host: str, port: int) -> Decision:
        try:
            literal = normalise_host(host).ip is not None
        except HostError:
            literal = True  # decide() denies it without resolving
        if literal or self.policy.mode == "none":
            return self.policy.decide(host, port)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout + 20.0):
                return await loop.run_in_executor(self._executor, self.policy.decide, host, port)
        except TimeoutError:
            return Decision(False, f"timed out resolving {host}", None, host, port, (), "unresolved")

    async def _upstream_failed(self, client: socket.socket, conn: _Conn, why: str) -> None:
        conn.verdict, conn.reason = "allow", f"upstream failed: {why}"
        body = f"hutch: upstream failed: {why}.\n"
        await self._respond(client, simple_response(502, "Bad Gateway", body))

    async def _connect(self, decision: Decision) -> socket.socket | str:
        """A socket connected to one of the decision's addresses, or why there is none."""
        loop = asyncio.get_running_loop()
        failures: list[str] = []
        for address in decision.addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as err:  # out of descriptors under a flood
                failures.append(f"{address}: {err.strerror or err}")
                continue
            connected = False
            try:
                sock.setblocking(False)
                async with asyncio.timeout(self.connect_timeout):
                    await loop.sock_connect(sock, (address, decision.port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                connected = True
                return sock
            except TimeoutError:
                failures.append(f"{address}: timed out")
            except OSError as err:
                failures.append(f"{address}: {err.strerror or err}")
            finally:
                if not connected:
                    sock.close()
        return "; ".join(failures)

    async def _tunnel(
        self,
        client: socket.socket,
        upstream: socket.socket,
        conn: _Conn,
        decision: Decision,
        extra: bytes,
    ) -> None:
        loop = asyncio.get_running_loop()
        # Server-to-client flows at once: some protocols (SSH, SMTP, MySQL) speak
        # first. Client bytes wait until the first flight has been checked.
        down = loop.create_task(self._pump(upstream, client, conn, up=False))
        up = loop.create_task(self._client_side(client, upstream, conn, decision, extra))
        try:
            await self._join(up, down, grace=30.0)
        except _Denied:
            pass

    async def _client_side(
        self,
        client: socket.socket,
        upstream: socket.socket,
        conn: _Conn,
        decision: Decision,
        first: bytes,
    ) -> None:
        loop = asyncio.get_running_loop()
        if not first:
            first = await loop.sock_recv(client, BUFFER)
            if not first:
                upstream.shutdown(socket.SHUT_WR)
                return
        if looks_like_tls(first):
            first, hello = await self._read_client_hello(client, conn, first)
            reason = sni_denial(decision, hello.server_name)
            if reason is not None:
                _deny(conn, reason)
                # An alert makes the client report "access denied" rather than
                # a bare connection reset.
                with contextlib.suppress(OSError):
                    await loop.sock_sendall(client, TLS_ACCESS_DENIED)
                raise _Denied
        elif (reason := plaintext_denial(decision)) is not None:
            _deny(conn, reason)
            raise _Denied
        await loop.sock_sendall(upstream, first)
        conn.bytes_up += len(first)
        await self._pump(client, upstream, conn, up=True)

    async def _read_client_hello(
        self, client: socket.socket, conn: _Conn, data: bytes
    ) -> tuple[bytes, ClientHello]:
        """Read until a whole ClientHello has arrived; deny the tunnel if it is not one."""
        loop = asyncio.get_running_loop()
        reader = ClientHelloReader()
        try:
            async with asyncio.timeout(self.head_timeout):
                while (hello := reader.feed(data)) is None:
                    data = await loop.sock_recv(client, BUFFER)
                    if not data:
                        raise ClientHelloError("the client stopped mid-ClientHello")
        except ClientHelloError as err:
            _deny(conn, f"not a valid TLS ClientHello ({err})")
            raise _Denied from err
        except TimeoutError as err:
            _deny(conn, "timed out waiting for the TLS ClientHello")
            raise _Denied from err
        return bytes(reader.data), hello

    async def _pump(self, src: socket.socket, dst: socket.socket, conn: _Conn, *, up: bool) -> None:
        """Copy `src` to `dst` until EOF, then half-close `dst`."""
        if not await self._copy(src, dst, conn, up=up, until_bulk=True):
            # A bulk flow: worth a pipe for splice(2) and a deep socket buffer.
            # Capped, because a stalled bulk flow pins kernel memory that
            # the sandbox's memory limit does not cover.
            self._bulk_flows += 1
            pipe = _open_pipe() if _HAVE_SPLICE else None
            try:
                if dst.family == socket.AF_UNIX:
                    # The default (~200 KiB) makes the hop to the relay the bottleneck.
                    with contextlib.suppress(OSError):
                        dst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BULK_SNDBUF)
                if pipe is None:
                    await self._copy(src, dst, conn, up=up, until_bulk=False)
                else:
                    await self._splice(src, dst, conn, pipe, up=up)
            finally:
                self._bulk_flows -= 1
                if pipe is not None:
                    os.close(pipe[0])
                    os.close(pipe[1])
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    async def _copy(
        self, src: socket.socket, dst: socket.socket, conn: _Conn, *, up: bool, until_bulk: bool
    ) -> bool:
        """Copy through user space; True at EOF, False when the flow turned out to be bulk."""
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(src, BUFFER)
            if not data:
                return True
            await loop.sock_sendall(dst, data)
            if up:
                conn.bytes_up += len(data)
            else:
                conn.bytes_down += len(data)
            if until_bulk and len(data) >= BULK_CHUNK and self._bulk_flows < MAX_BULK_FLOWS:
                return False

    async def _splice(
        self,
        src: socket.socket,
        dst: socket.socket,
        conn: _Conn,
        pipe: tuple[int, int],
        *,
        up: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        rfd, wfd = pipe
        sfd, dfd = src.fileno(), dst.fileno()
        while True:
            try:
                n = os.splice(sfd, wfd, PIPE_SIZE, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                await _wait(loop, sfd, write=False)
                continue
            if n == 0:
                return
            while n > 0:
                try:
                    m = os.splice(rfd, dfd, n, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await _wait(loop, dfd, write=True)
                    continue
                n -= m
                if up:
                    conn.bytes_up += m
                else:
                    conn.bytes_down += m

    async def _join(self, up: asyncio.Task[None], down: asyncio.Task[None], *, grace: float) -> None:
        """Wait for both directions; after the server's side ends, give the client `grace`."""
        tasks = (up, down)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if not any(_failed(task) for task in done):
                if down in done:
                    if not up.done():
                        await asyncio.wait((up,), timeout=grace)
                else:
                    await asyncio.wait((down,))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            err = None if task.cancelled() else task.exception()
            if err is not None and not isinstance(err, OSError | TimeoutError):
                raise err

    async def _refuse(
        self, client: socket.socket, conn: _Conn, status: int, phrase: str, reason: str
    ) -> None:
        _deny(conn, reason)
        await self._respond(client, simple_response(status, phrase, f"hutch: {reason}.\n"))

    async def _respond(self, client: socket.socket, response: bytes) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.head_timeout):
            await loop.sock_sendall(client, response)
        # Closing with unread input would send a reset that can destroy the
        # response before the client reads it; drain a little first.
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                drained = 0
                while drained < 1 << 20:
                    chunk = await loop.sock_recv(client, 65536)
                    if not chunk:
                        break
                    drained += len(chunk)


async def _wait(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    future: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await future
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def _recv_fds(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int
) -> tuple[bytes, list[int], int]:
    """One read that also takes at most one descriptor passed along (the kernel closes
    any beyond it); returns the bytes, the descriptors and the message flags."""
    while True:
        try:
            data, fds, flags, _ = socket.recv_fds(sock, size, 1)
        except BlockingIOError:
            await _wait(loop, sock.fileno(), write=False)
            continue
        return data, fds, flags


def _handed_socket(data: bytes, fds: list[int], flags: int) -> socket.socket | None:
    """The TCP connection the sandbox's relay handed over, checked; None (and every
    descriptor closed) for anything else."""
    if data != HANDOFF or len(fds) != 1 or flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        return None
    try:
        sock = socket.socket(fileno=fds[0])
    except OSError:  # not a socket
        os.close(fds[0])
        return None
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            raise OSError("not a TCP socket")
        sock.getpeername()  # connected, not listening
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 0, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        return None
    return sock


def _open_pipe() -> tuple[int, int] | None:
    try:
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # out of descriptors: keep copying through user space
    with contextlib.suppress(OSError):
        fcntl.fcntl(wfd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return rfd, wfd


def _deny(conn: _Conn, reason: str) -> None:
    conn.verdict, conn.reason = "deny", reason


def _failed(task: asyncio.Task[None]) -> bool:
    return not task.cancelled() and task.exception() is not None
