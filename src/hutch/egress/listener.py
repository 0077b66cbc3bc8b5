"""The egress proxy's listener: the Unix socket the sandbox reaches, and the loop behind it.

One asyncio loop in a daemon thread serves every connection; there is no thread
per connection, so a flood from the sandbox costs sockets, not threads. Each
accepted client goes to the session's `Relay` (relay.py), which decides and
carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from hutch.egress.audit import AuditLog
from hutch.egress.policy import Policy
from hutch.egress.relay import MAX_BULK_FLOWS, Relay
from hutch.errors import SetupFailed
from hutch.private import bind_unix

log = logging.getLogger("hutch.egress")

BACKLOG = 4096
STOP_TIMEOUT = 10.0
ACCEPT_BURST = 256
# Accept errors that mean "out of resources for now": back off instead of spinning.
_ACCEPT_BACKOFF = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# The proxy runs on the host, outside the sandbox's CPU limit: what the sandbox
# makes it do is capped at this share of one core on average, after a burst of
# CPU_BURST seconds (a cold `npm install` stays inside the burst).
CPU_SHARE = 0.5
CPU_BURST = 10.0
BUDGET_TICK = 0.02
MAX_PAUSE = 0.25


class CpuBudget:
    """A token bucket of CPU seconds, refilled at `share` of a core and holding at most `burst`.

    `cpu` is the clock of the thread being limited, `wall` a monotonic clock.
    """

    def __init__(
        self,
        share: float,
        burst: float,
        *,
        cpu: Callable[[], float] = time.thread_time,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self.share, self.burst = share, burst
        self._cpu, self._wall = cpu, wall
        self._tokens = burst
        self._last_cpu, self._last_wall = cpu(), wall()

    def overdraft(self) -> float:
        """How long to pause (CPU unused) to get back within the budget; 0 when within it."""
        cpu, wall = self._cpu(), self._wall()
        earned = self.share * (wall - self._last_wall)
        self._tokens = min(self.burst, self._tokens + earned - (cpu - self._last_cpu))
        self._last_cpu, self._last_wall = cpu, wall
        return 0.0 if self._tokens >= 0 else -self._tokens / self.share


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
        socket_mode: int = 0o600,
        max_connections: int = 4096,
        cpu_share: float | None = CPU_SHARE,
        cpu_burst: float = CPU_BURST,
    ) -> None:
        self.policy = policy
        self.socket_path = socket_path
        self.audit = audit
        self.connect_timeout = connect_timeout
        self.head_timeout = head_timeout
        self._socket_mode = socket_mode
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._relay: Relay | None = None
        self._socket_ino: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: socket.socket | None = None
        self._accepting = False
        self._starved = False  # out of descriptors; warned once per episode
        self._cpu_share = cpu_share
        self._cpu_burst = cpu_burst
        self._throttled = False  # warned once per session

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
            listener = self._bind()
            self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hutch-egress-dns")
            self._relay = Relay(
                self.policy,
                self.audit,
                self._executor,
                connect_timeout=self.connect_timeout,
                head_timeout=self.head_timeout,
            )
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(loop, listener, ready), name="hutch-egress", daemon=True
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

    def _bind(self) -> socket.socket:
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
            bind_unix(sock, os.fspath(path))
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

    def _remove_socket_file(self) -> None:
        # Only our own socket: a later session may already have bound the path.
        with contextlib.suppress(FileNotFoundError):
            if self._socket_ino is not None and os.lstat(self.socket_path).st_ino == self._socket_ino:
                self.socket_path.unlink()
        self._socket_ino = None

    def _run(self, loop: asyncio.AbstractEventLoop, listener: socket.socket, ready: threading.Event) -> None:
        try:
            loop.run_until_complete(self._main(listener, ready))
        finally:
            ready.set()
            listener.close()
            loop.close()

    async def _main(self, listener: socket.socket, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        self._listener = listener
        self._resume_accepting()
        if self._cpu_share is not None:
            budget = CpuBudget(self._cpu_share, self._cpu_burst)
            asyncio.get_running_loop().call_later(BUDGET_TICK, self._keep_budget, budget)
        ready.set()
        await self._stopping.wait()
        self._pause_accepting()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _keep_budget(self, budget: CpuBudget) -> None:
        pause = budget.overdraft()
        if pause > 0:
            if not self._throttled:
                self._throttled = True
                log.warning(
                    "hutch: warning: the sandbox's connections keep the egress proxy busy beyond "
                    "%d%% of a core; slowing them down",
                    round(100 * budget.share),
                )
            # Blocking on purpose: every connection waits, which is the throttle.
            time.sleep(min(pause, MAX_PAUSE))
        asyncio.get_running_loop().call_later(BUDGET_TICK, self._keep_budget, budget)

    def _resume_accepting(self) -> None:
        if self._accepting or self._stopping is None or self._stopping.is_set():
            return
        if self._listener is not None:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)
            self._accepting = True

    def _pause_accepting(self) -> None:
        if self._accepting and self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
        self._accepting = False

    def _accept(self) -> None:
        # A plain callback that accepts a burst, not `await sock_accept()`: a
        # socket accepted into a future that is then cancelled would leak.
        loop = asyncio.get_running_loop()
        assert self._listener is not None and self._relay is not None
        for _ in range(ACCEPT_BURST):
            if len(self._tasks) >= self._max_connections:
                # Leave further clients in the kernel backlog until a slot frees.
                self._pause_accepting()
                return
            try:
                client, _ = self._listener.accept()
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
            task = loop.create_task(self._relay.serve(client))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._task_done, client))

    def _task_done(self, client: socket.socket, task: asyncio.Task[None]) -> None:
        # Closed here too: a task cancelled before its first step never ran
        # the relay's cleanup.
        client.close()
        self._tasks.discard(task)
        if not self._accepting and len(self._tasks) < self._max_connections:
            self._resume_accepting()
        if not task.cancelled() and (err := task.exception()) is not None:
            log.error("egress proxy: connection handler failed", exc_info=err)


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
