from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

from hutch.egress.audit import (
    MAX_METHOD,
    MAX_TALLIES,
    OTHER_DESTINATIONS,
    AuditLog,
    EventReader,
    HostSummary,
    format_summary,
    read_events,
    summarise,
)
from hutch.egress.session import denied_count


def record(log: AuditLog, host: str, decision: str = "allow", *, up: int = 0, down: int = 0) -> None:
    log.record(
        host=host,
        port=443,
        decision="allow" if decision == "allow" else "deny",
        reason="allowed by rule" if decision == "allow" else "not on the allowlist",
        rule=host if decision == "allow" else None,
        bytes_up=up,
        bytes_down=down,
        method="CONNECT",
    )


def test_record_writes_one_json_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit.jsonl"
    with AuditLog(path, "s1") as log:
        record(log, "a.example", up=10, down=20)
        record(log, "evil.example", "deny")
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert set(first) == {
        "time",
        "session",
        "host",
        "port",
        "decision",
        "reason",
        "rule",
        "bytes_up",
        "bytes_down",
        "method",
    }
    assert first["session"] == "s1" and first["bytes_up"] == 10 and first["bytes_down"] == 20
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    events = list(read_events(path))
    assert [e.host for e in events] == ["a.example", "evil.example"]
    assert events[1].decision == "deny" and events[1].rule is None


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "s")

    def write(n: int) -> None:
        for i in range(200):
            record(log, f"h{n}-{i}.example", up=i)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert len(list(read_events(path))) == 1600


def test_torn_and_damaged_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "s") as log:
        record(log, "a.example")
    good = path.read_text()
    path.write_text(good + '{"time": "2024')
    reader = EventReader(path)
    assert [e.host for e in reader] == ["a.example"] and reader.damaged == 1
    path.write_text(good + "not json\n" + '{"time": 1}\n' + good)
    reader = EventReader(path)
    assert len(list(reader)) == 2 and reader.damaged == 2
    summary = summarise(EventReader(path))
    assert summary.damaged == 2 and summary.allowed == 2
    assert "2 line(s) of the log could not be read" in format_summary(summary)


def test_an_overlong_line_is_skipped_without_being_held(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "s") as log:
        record(log, "a.example")
    good = path.read_bytes()
    path.write_bytes(good + b"x" * (5 << 20) + b"\n" + good)
    reader = EventReader(path)
    tracemalloc.start()
    try:
        hosts = [e.host for e in reader]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert hosts == ["a.example", "a.example"] and reader.damaged == 1
    assert peak < 1 << 20  # the 5 MiB line never sat in memory


def test_summary_and_denied_count_stream_a_large_log_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "s") as log:
        record(log, "a.example", "deny")
        for i in range(3):
            record(log, f"h{i}.example", up=1)
    lines = path.read_bytes()
    path.write_bytes(lines * 2_500)  # 10,000 events
    size = path.stat().st_size
    assert size > 1 << 20
    tracemalloc.start()
    try:
        summary = summarise(read_events(path))
        denied = denied_count(path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        # Control: the old way, the whole file at once, holds more than the file.
        whole = path.read_text().splitlines()
        _, peak_whole = tracemalloc.get_traced_memory()
        del whole
    finally:
        tracemalloc.stop()
    assert (summary.allowed, summary.denied, denied) == (7_500, 2_500, 2_500)
    assert peak < size // 8 < peak_whole


def test_every_field_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "s") as log:
        log.record(host="h" * 1000, port=443, decision="deny", reason="r" * 10_000, rule="u" * 1000,
                   bytes_up=0, bytes_down=0, method="M" * 16_384)  # fmt: skip
        record(log, "a.example")
    big, normal = list(read_events(path))
    assert len(big.method) == MAX_METHOD and big.method.endswith("...")
    assert len(big.host) <= 255 and len(big.reason) <= 300 and big.rule is not None and len(big.rule) <= 260
    assert len(path.read_text().splitlines()[0]) < 1200
    # Control: ordinary values are kept as they are.
    assert normal.method == "CONNECT" and normal.host == "a.example"


def test_past_the_size_cap_connections_are_counted_per_host_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "s", max_bytes=2_000) as log:
        for i in range(300):
            record(log, "busy.example", up=10, down=100)
            if i % 3 == 0:
                record(log, "evil.example", "deny")
        capped = path.stat().st_size
    assert capped <= 2_000
    events = list(read_events(path))
    singles = [e for e in events if not e.aggregated]
    tallies = {(e.host, e.decision): e for e in events if e.aggregated}
    assert len(singles) < 20 and set(tallies) == {("busy.example", "allow"), ("evil.example", "deny")}
    summary = summarise(events)
    assert (summary.allowed, summary.denied) == (300, 100)
    assert summary.aggregated == 400 - len(singles)
    busy = next(h for h in summary.hosts if h.host == "busy.example")
    assert (busy.bytes_up, busy.bytes_down) == (3000, 30_000)
    assert "reached its size cap" in format_summary(summary)
    assert denied_count(path) == 100
    # Control: under the cap every connection has its own line and nothing is aggregated.
    full = tmp_path / "full.jsonl"
    with AuditLog(full, "s") as log:
        for _ in range(300):
            record(log, "busy.example")
    assert len(full.read_text().splitlines()) == 300
    assert summarise(read_events(full)).aggregated == 0


def test_distinct_destinations_past_the_cap_are_bounded_too(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "s", max_bytes=0) as log:
        for i in range(MAX_TALLIES + 50):
            record(log, f"h{i}.example", "deny")
    events = list(read_events(path))
    assert len(events) == MAX_TALLIES + 1
    assert sum(e.count for e in events) == MAX_TALLIES + 50
    assert events[-1].host == OTHER_DESTINATIONS and events[-1].count == 50


def test_a_full_disk_is_said_once_and_refuses_connections_when_required(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # /dev/full: every write fails with ENOSPC, as on a full disk.
    log = AuditLog(Path("/dev/full"), "s")
    assert log.refusal() is None
    for _ in range(50):
        record(log, "a.example")
    log.close()
    assert log.unlogged == 50
    warnings = [r.getMessage() for r in caplog.records if r.name == "hutch.egress"]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    assert 'audit = "best-effort"' in warnings[0]
    refusal = log.refusal()
    assert refusal is not None and "No space left on device" in refusal
    # Control: best-effort says so too, but lets connections through.
    relaxed = AuditLog(Path("/dev/full"), "s", mode="best-effort")
    record(relaxed, "a.example")
    assert relaxed.unlogged == 1 and relaxed.refusal() is None


def test_the_log_recovers_when_it_can_be_written_again(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    path = blocker / "audit.jsonl"
    log = AuditLog(path, "s")
    log.open()
    assert log.refusal() is not None  # known before the first connection
    record(log, "lost.example")
    blocker.unlink()
    blocker.mkdir()
    record(log, "kept.example")
    assert log.refusal() is None
    log.close()
    assert [e.host for e in read_events(path)] == ["kept.example"]


PARTIAL_WRITE = """
import resource, signal, sys
from pathlib import Path
from hutch.egress.audit import AuditLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path = Path(sys.argv[1])
log = AuditLog(path, "s")
def rec(host):
    log.record(host=host, port=443, decision="allow", reason="r", rule=None,
               bytes_up=0, bytes_down=0, method="CONNECT")
rec("one.example")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 40, hard))
rec("torn.example")   # 40 bytes get written, then EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
rec("three.example")
log.close()
print(log.unlogged)
"""


def test_a_line_torn_by_a_failed_write_does_not_swallow_the_next(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    done = subprocess.run([sys.executable, "-c", PARTIAL_WRITE, str(path)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.strip() == "1"
    reader = EventReader(path)
    assert [e.host for e in reader] == ["one.example", "three.example"]
    assert reader.damaged == 1


@pytest.mark.parametrize(
    ("host", "shown"),
    [("2001:db8::1", "[2001:db8::1]:443"), ("http://x.example", "http://x.example:443"),
     ("a.example", "a.example:443"), ("", "(malformed request)")],
)  # fmt: skip
def test_targets_are_bracketed_only_when_they_are_ipv6_addresses(host: str, shown: str) -> None:
    from hutch.egress.audit import _target

    port = 0 if not host else 443
    assert _target(HostSummary(host, port, 1, 0, 0, 0, ())) == shown


def test_summary_puts_denials_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "s") as log:
        for _ in range(5):
            record(log, "busy.example", up=100, down=1000)
        record(log, "evil.example", "deny")
        record(log, "evil.example", "deny")
        record(log, "mixed.example", "deny")
        record(log, "mixed.example")
    summary = summarise(read_events(path))
    assert [h.host for h in summary.hosts] == ["evil.example", "mixed.example", "busy.example"]
    assert (summary.allowed, summary.denied, summary.sessions) == (6, 3, ("s",))
    busy = summary.hosts[2]
    assert (busy.allowed, busy.bytes_up, busy.bytes_down) == (5, 500, 5000)
    assert summary.hosts[0].reasons == ("not on the allowlist",)
    text = format_summary(summary)
    assert text.index("Denied:") < text.index("Allowed:")
    assert "evil.example:443  2 denied" in text
    assert "not on the allowlist" in text
    assert "busy.example:443  5 connections" in text


def test_empty_summary() -> None:
    assert "No network connections" in format_summary(summarise([]))
