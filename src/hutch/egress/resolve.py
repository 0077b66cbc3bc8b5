"""Name resolution for the proxy: brief retries, one lookup per name at a time, a short cache.

The system resolver (getaddrinfo) gives no TTL, so an answer is kept for a
fixed `CACHE_SECONDS`, shorter than the TTL of the hosts an agent talks to
(registries and APIs publish a minute or more). That is safe for the policy:
every decision still checks the addresses it gets, and each connection goes
only to the addresses its own decision checked, so a cached answer can never
let a rebinding through. What the cache saves is the resolver: a burst of
parallel downloads from one host is one lookup, not one per connection.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

Resolver = Callable[[str, int], list[str]]

CACHE_SECONDS = 30.0
MAX_NAMES = 1024
# Waits before the second and third attempt after a temporary failure (EAI_AGAIN).
RETRY_DELAYS = (0.1, 0.4)


class _Lookup:
    """One lookup in flight, which other callers for the same name wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: list[str] = []
        self.error: BaseException | None = None

    def result(self) -> list[str]:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return list(self.answer)


def transient(err: OSError) -> bool:
    """A failure worth another try: the resolver could not answer just now."""
    return isinstance(err, socket.gaierror) and err.errno == socket.EAI_AGAIN


class CachingResolver:
    """Wraps a resolver: retries temporary failures, shares one lookup among the callers
    asking for the same name at once, and keeps answers `ttl` seconds. Thread-safe."""

    def __init__(
        self,
        resolve: Resolver,
        *,
        ttl: float = CACHE_SECONDS,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._resolve = resolve
        self._ttl = ttl
        self._delays = retry_delays
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._answers: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()
        self._pending: dict[str, _Lookup] = {}

    def __call__(self, host: str, port: int) -> list[str]:
        # The port does not change an address lookup: the name is the key.
        with self._lock:
            cached = self._answers.get(host)
            if cached is not None and cached[0] > self._clock():
                return list(cached[1])
            pending = self._pending.get(host)
            if pending is None:
                mine = self._pending[host] = _Lookup()
        if pending is not None:
            return pending.result()
        try:
            answer = self._lookup(host, port)
        except BaseException as err:
            mine.error = err
            raise
        else:
            mine.answer = answer
            with self._lock:
                self._answers[host] = (self._clock() + self._ttl, answer)
                self._answers.move_to_end(host)
                while len(self._answers) > MAX_NAMES:
                    self._answers.popitem(last=False)
            return list(answer)
        finally:
            with self._lock:
                del self._pending[host]
            mine.done.set()

    def _lookup(self, host: str, port: int) -> list[str]:
        for delay in self._delays:
            try:
                return self._resolve(host, port)
            except OSError as err:
                if not transient(err):
                    raise
            self._sleep(delay)
        return self._resolve(host, port)
