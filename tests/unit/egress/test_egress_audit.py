from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest

from hutch.egress.audit import AuditLog, AuditReadError, format_summary, read_events, summarise


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
    events = read_events(path)
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
    assert len(read_events(path)) == 1600


def test_torn_last_line_is_skipped_but_bad_middle_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, "s") as log:
        record(log, "a.example")
    good = path.read_text()
    path.write_text(good + '{"time": "2024')
    assert len(read_events(path)) == 1
    path.write_text(good + "not json\n" + good)
    with pytest.raises(AuditReadError, match=":2:"):
        read_events(path)


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
