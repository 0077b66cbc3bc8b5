"""The filtering proxy the sandbox reaches through a bind-mounted Unix socket.

One asyncio loop in a daemon thread serves every connection; there is no thread
per connection, so a flood from the sandbox costs sockets, not threads. Sockets
are driven directly (`sock_recv` / `sock_sendall`) rather than through streams,
one large read and one write per chunk; a flow that turns out to be bulk moves
to splice(2) through a pipe, so its bytes never enter Python at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import logging
import os
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

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
from hutch.egress.tls import (
    MAX_CLIENT_HELLO,
    ClientHello,
    ClientHelloError,
    looks_like_tls,
    parse_client_hello,
)
from hutch.errors import SetupFailed

log = logging.getLogger("hutch.egress")

BUFFER = 256 * 1024
# A read this large means a bulk transfer (small reads are interactive traffic).
BULK_CHUNK = 64 * 1024
MAX_BULK_FLOWS = 64
BULK_SNDBUF = 4 * 1024 * 1024
PIPE_SIZE = 1024 * 1024
_HAVE_SPLICE = hasattr(os, "splice")
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
BACKLOG = 4096
STOP_TIMEOUT = 10.0
ACCEPT_BURST = 256
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
# A fatal TLS alert record: level 2 (fatal), description 49 (access_denied).
TLS_ACCESS_DENIED = b"\x15\x03\x03\x00\x02\x02\x31"
# Accept errors that mean "out of resources for now": back off instead of spinning.
_ACCEPT_BACKOFF = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


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


class EgressProxy:
    """The egress proxy for one session: `start()`, then `stop()` (or use `with`)."""

    def __init__(
        self,
        policy: Policy,
        socket_path: Path,
        audit: AuditLog,
        *,
        connect_timeout: float = 10.0,
        head_timeout: float = 30.0,
        listen_tcp: tuple[str, int] | None = None,
        socket_mode: int = 0o600,
        max_connections: int = 4096,
    ) -> None:
        self.policy = policy
        self.socket_path = socket_path
        self.audit = audit
        self.connect_timeout = connect_timeout
        self.head_timeout = head_timeout
        self._listen_tcp = listen_tcp
        self._socket_mode = socket_mode
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._socket_ino: int | None = None
        self._tcp_address: tuple[str, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: list[socket.socket] = []
        self._accepting = False
        self._starved = False  # out of descriptors; warned once per episode
        self._bulk_flows = 0

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        """The bound TCP address when `listen_tcp` was given (port 0 picks a free one)."""
        return self._tcp_address

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        """Bind and listen, then serve from a daemon thread; returns once listening.

        Raises `SetupFailed` when the socket cannot be created.
        """
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the egress proxy is already running")
            _raise_open_file_limit(2 * self._max_connections + 4 * MAX_BULK_FLOWS + 64)
            listeners = [self._bind_unix()]
            if self._listen_tcp is not None:
                try:
                    listeners.append(self._bind_tcp(self._listen_tcp))
                except SetupFailed:
                    listeners[0].close()
                    self._remove_socket_file()
                    raise
            self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hutch-egress-dns")
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(loop, listeners, ready), name="hutch-egress", daemon=True
            )
            self._loop, self._thread = loop, thread
            thread.start()
            ready.wait()

    def stop(self) -> None:
        """Close the listener and every open connection, remove the socket file. Idempotent."""
        with self._lock:
            thread, loop, stopping = self._thread, self._loop, self._stopping
            self._thread = self._loop = self._stopping = None
            if thread is not None and loop is not None and stopping is not None:
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(stopping.set)
                thread.join(STOP_TIMEOUT)
                if thread.is_alive():
                    log.warning("egress proxy: still closing connections after %ss", STOP_TIMEOUT)
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
            self._remove_socket_file()

    def __enter__(self) -> EgressProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- listening ---------------------------------------------------------

    def _bind_unix(self) -> socket.socket:
        path = self.socket_path
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise SetupFailed(
                    f"cannot create the egress proxy socket: {path} exists and is not a socket",
                    hint="remove that file, or point hutch's state directory elsewhere",
                )
            if _socket_alive(path):
                raise SetupFailed(
                    f"another egress proxy is already listening on {path}",
                    hint="stop the other hutch session (hutch ps / hutch stop)",
                )
            path.unlink()  # stale, left by a hutch that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(path))
            # Restrict before listen(): until then every connect() is refused,
            # so nobody slips in between bind and chmod.
            os.chmod(path, self._socket_mode)
            sock.listen(BACKLOG)
            sock.setblocking(False)
            self._socket_ino = os.stat(path).st_ino
        except OSError as err:
            sock.close()
            raise SetupFailed(
                f"cannot listen on the egress proxy socket {path}: {err}",
                hint="check that its directory exists and is writable; "
                "Unix socket paths must be shorter than about 100 bytes",
            ) from err
        return sock

    def _bind_tcp(self, address: tuple[str, int]) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            raise SetupFailed(f"cannot listen on {address[0]}:{address[1]}: {err}") from err
        host, port = sock.getsockname()[:2]
        self._tcp_address = (str(host), int(port))
        return sock

    def _remove_socket_file(self) -> None:
        # Only our own socket: a later session may already have bound the path.
        with contextlib.suppress(FileNotFoundError):
            if self._socket_ino is not None and os.lstat(self.socket_path).st_ino == self._socket_ino:
                self.socket_path.unlink()
        self._socket_ino = None

    def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        listeners: list[socket.socket],
        ready: threading.Event,
    ) -> None:
        try:
            loop.run_until_complete(self._main(listeners, ready))
        finally:
            ready.set()
            for sock in listeners:
                sock.close()
            loop.close()

    async def _main(self, listeners: list[socket.socket], ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        self._listeners = listeners
        self._resume_accepting()
        ready.set()
        await self._stopping.wait()
        self._pause_accepting()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _resume_accepting(self) -> None:
        if self._accepting or self._stopping is None or self._stopping.is_set():
            return
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.add_reader(listener.fileno(), self._accept, listener)
        self._accepting = True

    def _pause_accepting(self) -> None:
        if not self._accepting:
            return
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.remove_reader(listener.fileno())
        self._accepting = False

    def _accept(self, listener: socket.socket) -> None:
        # A plain callback that accepts a burst, not `await sock_accept()`: a
        # socket accepted into a future that is then cancelled would leak.
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BURST):
            if len(self._tasks) >= self._max_connections:
                # Leave further clients in the kernel backlog until a slot frees.
                self._pause_accepting()
                return
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in _ACCEPT_BACKOFF:
                    if not self._starved:
                        log.warning("egress proxy: cannot accept (%s); backing off", err)
                        self._starved = True
                    self._pause_accepting()
                    loop.call_later(0.05, self._resume_accepting)
                return
            self._starved = False
            client.setblocking(False)
            if client.family != socket.AF_UNIX:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._serve(client))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._task_done, client))

    def _task_done(self, client: socket.socket, task: asyncio.Task[None]) -> None:
        # Closed here too: a task cancelled before its first step never ran
        # `_serve`'s cleanup.
        client.close()
        self._tasks.discard(task)
        if not self._accepting and len(self._tasks) < self._max_connections:
            self._resume_accepting()
        if not task.cancelled() and (err := task.exception()) is not None:
            log.error("egress proxy: connection handler failed", exc_info=err)

    # -- one connection ----------------------------------------------------

    async def _serve(self, client: socket.socket) -> None:
        conn = _Conn()
        upstream: list[socket.socket] = []
        try:
            await self._handle(client, conn, upstream)
        except (OSError, TimeoutError):
            pass  # a reset or a stalled peer ends the connection; the audit line says the rest
        finally:
            client.close()
            for sock in upstream:
                sock.close()
            if conn.verdict is not None:
                try:
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
                except OSError as err:
                    log.error("egress proxy: cannot write the audit log: %s", err)

    async def _handle(self, client: socket.socket, conn: _Conn, upstream: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        raw = await self._read_head(client, conn)
        if raw is None:
            return
        head_bytes, extra = raw
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
        if not decision.allowed:
            body = denial_message(head.method, decision)
            await self._respond(client, simple_response(403, "Forbidden", body))
            return
        sock = await self._connect(decision, conn)
        if sock is None:
            body = f"hutch could not connect to {decision.target}: {conn.reason}.\n"
            await self._respond(client, simple_response(502, "Bad Gateway", body))
            return
        upstream.append(sock)
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

    async def _read_head(self, client: socket.socket, conn: _Conn) -> tuple[bytes, bytes] | None:
        loop = asyncio.get_running_loop()
        buf = bytearray()
        try:
            async with asyncio.timeout(self.head_timeout):
                while True:
                    chunk = await loop.sock_recv(client, MAX_HEAD + len(HEAD_END))
                    if not chunk:
                        if buf:
                            _deny(conn, "connection closed before the request head ended")
                        return None
                    start = max(0, len(buf) - len(HEAD_END) + 1)
                    buf += chunk
                    split = find_head_end(buf, start)
                    if 0 <= split <= MAX_HEAD:
                        return bytes(buf[:split]), bytes(buf[split:])
                    if len(buf) >= MAX_HEAD:
                        await self._refuse(
                            client,
                            conn,
                            431,
                            "Request Header Fields Too Large",
                            f"request head larger than {MAX_HEAD} bytes",
                        )
                        return None
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

    async def _connect(self, decision: Decision, conn: _Conn) -> socket.socket | None:
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
        conn.reason = "connect failed (" + "; ".join(failures) + ")"
        return None

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
        """Read until `data` holds a whole ClientHello; deny the tunnel if it is not one."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.head_timeout):
                while (hello := parse_client_hello(data)) is None:
                    chunk = await loop.sock_recv(client, BUFFER)
                    if not chunk or len(data) > 2 * MAX_CLIENT_HELLO:
                        raise ClientHelloError("the client stopped mid-ClientHello")
                    data += chunk
        except ClientHelloError as err:
            _deny(conn, f"not a valid TLS ClientHello ({err})")
            raise _Denied from err
        except TimeoutError as err:
            _deny(conn, "timed out waiting for the TLS ClientHello")
            raise _Denied from err
        return data, hello

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


def _socket_alive(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.fspath(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _raise_open_file_limit(wanted: int) -> None:
    """Each tunnel holds two descriptors; lift the soft limit toward the hard one."""
    try:
        import resource
    except ImportError:  # not on this platform; the accept loop backs off instead
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
