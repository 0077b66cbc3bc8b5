"""The proxy's resolver: retries, one lookup per name at a time, a short cache.

The system resolver is the boundary: a fake stands in for it, and a fake clock
for time."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from hutch.egress.resolve import MAX_NAMES, RETRY_DELAYS, CachingResolver


class FakeDns:
    def __init__(self, failures: int = 0, errno: int = socket.EAI_AGAIN) -> None:
        self.calls: list[str] = []
        self.failures = failures
        self.errno = errno
        self.release: threading.Event | None = None

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if self.release is not None:
            self.release.wait(10)
        if self.failures:
            self.failures -= 1
            raise socket.gaierror(self.errno, "fake failure")
        return [f"203.0.113.{len(self.calls)}"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def resolver(dns: FakeDns, clock: Clock) -> CachingResolver:
    return CachingResolver(dns, ttl=30.0, clock=clock, sleep=clock.sleep)


def test_a_temporary_failure_is_retried_briefly() -> None:
    dns, clock = FakeDns(failures=2), Clock()
    assert resolver(dns, clock)("pypi.org", 443) == ["203.0.113.3"]
    assert len(dns.calls) == 3 and clock.slept == list(RETRY_DELAYS)
    assert sum(clock.slept) < 1.0


def test_a_failure_that_lasts_is_raised_after_the_retries() -> None:
    dns, clock = FakeDns(failures=10), Clock()
    with pytest.raises(socket.gaierror):
        resolver(dns, clock)("pypi.org", 443)
    assert len(dns.calls) == len(RETRY_DELAYS) + 1


def test_a_name_that_does_not_exist_is_not_retried() -> None:
    dns, clock = FakeDns(failures=1, errno=socket.EAI_NONAME), Clock()
    with pytest.raises(socket.gaierror):
        resolver(dns, clock)("nope.example", 443)
    assert len(dns.calls) == 1 and clock.slept == []


def test_answers_are_kept_for_the_cache_time_and_failures_not_at_all() -> None:
    dns, clock = FakeDns(failures=3), Clock()
    cached = resolver(dns, clock)
    with pytest.raises(socket.gaierror):
        cached("pypi.org", 443)
    first = cached("pypi.org", 443)  # the failure was not kept
    clock.now += 29.0
    assert cached("pypi.org", 80) == first
    assert len(dns.calls) == 4
    clock.now += 2.0  # past the cache time: asked again
    assert cached("pypi.org", 443) != first
    assert len(dns.calls) == 5


def test_parallel_callers_share_one_lookup() -> None:
    dns, clock = FakeDns(), Clock()
    dns.release = threading.Event()
    cached = resolver(dns, clock)
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(cached("pypi.org", 443))) for _ in range(50)]
    for thread in threads:
        thread.start()
    # Let them all reach the lookup while the first one is held in the resolver
    # (without sharing, each would call it).
    time.sleep(0.3)
    dns.release.set()
    for thread in threads:
        thread.join(10)
    assert len(results) == 50 and all(r == ["203.0.113.1"] for r in results)
    assert dns.calls == ["pypi.org"]


def test_the_cache_holds_a_bounded_number_of_names() -> None:
    dns, clock = FakeDns(), Clock()
    cached = resolver(dns, clock)
    for i in range(MAX_NAMES + 1):
        cached(f"h{i}.example", 443)
    cached(f"h{MAX_NAMES}.example", 443)  # the newest: still cached
    assert len(dns.calls) == MAX_NAMES + 1
    cached("h0.example", 443)  # the oldest made room
    assert len(dns.calls) == MAX_NAMES + 2
