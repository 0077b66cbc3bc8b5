"""The egress audit log: one JSON object per connection, written when it ends.

Events carry host, port, verdict and byte counts only. Request lines, headers
and bodies are never recorded: they can hold tokens, and the log outlives the
session.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, TextIO

Verdict = Literal["allow", "deny"]


@dataclass(frozen=True)
class AuditEvent:
    time: str
    session: str
    host: str
    port: int
    decision: Verdict
    reason: str
    rule: str | None
    bytes_up: int
    bytes_down: int
    method: str


class AuditLog:
    """Thread-safe appender of `AuditEvent`s to a JSON-lines file (created 0600)."""

    def __init__(self, path: Path, session: str) -> None:
        self.path = path
        self.session = session
        self._lock = threading.Lock()
        self._file: TextIO | None = None

    @classmethod
    def from_fd(cls, path: Path, fd: int, session: str) -> AuditLog:
        """Append to an already open descriptor of `path` (a proxy that dropped its
        privileges keeps writing the file its parent opened)."""
        log = cls(path, session)
        log._file = os.fdopen(fd, "a", encoding="utf-8")
        return log

    def record(
        self,
        *,
        host: str,
        port: int,
        decision: Verdict,
        reason: str,
        rule: str | None,
        bytes_up: int,
        bytes_down: int,
        method: str,
    ) -> AuditEvent:
        """Append one event, stamped now (UTC), and return it."""
        event = AuditEvent(
            time=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            session=self.session,
            host=host,
            port=port,
            decision=decision,
            reason=reason,
            rule=rule,
            bytes_up=bytes_up,
            bytes_down=bytes_down,
            method=method,
        )
        line = json.dumps(asdict(event), ensure_ascii=True, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._file = os.fdopen(fd, "a", encoding="utf-8")
            # One write per line and a flush, so a reader (or a crash) sees whole lines.
            self._file.write(line)
            self._file.flush()
        return event

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AuditReadError(ValueError):
    """An audit file line that is not an event; names the file and line."""


def read_events(path: Path) -> list[AuditEvent]:
    """All events in `path`, in order. A torn last line (a crash mid-write) is skipped."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    events: list[AuditEvent] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(_event_from_json(json.loads(line)))
        except (ValueError, TypeError, KeyError) as err:
            if number == len(lines):
                break
            raise AuditReadError(f"{path}:{number}: not an audit event ({err})") from err
    return events


def _event_from_json(raw: object) -> AuditEvent:
    if not isinstance(raw, dict):
        raise TypeError("expected a JSON object")
    decision = raw["decision"]
    if decision not in ("allow", "deny"):
        raise ValueError(f"bad decision {decision!r}")
    rule = raw["rule"]
    return AuditEvent(
        time=_str(raw["time"]),
        session=_str(raw["session"]),
        host=_str(raw["host"]),
        port=_int(raw["port"]),
        decision="allow" if decision == "allow" else "deny",
        reason=_str(raw["reason"]),
        rule=None if rule is None else _str(rule),
        bytes_up=_int(raw["bytes_up"]),
        bytes_down=_int(raw["bytes_down"]),
        method=_str(raw["method"]),
    )


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


@dataclass(frozen=True)
class HostSummary:
    host: str
    port: int
    allowed: int
    denied: int
    bytes_up: int
    bytes_down: int
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Summary:
    """Per-destination counts, destinations with denials first."""

    hosts: tuple[HostSummary, ...]
    sessions: tuple[str, ...]
    allowed: int
    denied: int


@dataclass
class _Tally:
    allowed: int = 0
    denied: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    reasons: dict[str, None] = field(default_factory=dict)


def summarise(events: Iterable[AuditEvent]) -> Summary:
    tallies: dict[tuple[str, int], _Tally] = {}
    sessions: dict[str, None] = {}
    for event in events:
        sessions[event.session] = None
        tally = tallies.setdefault((event.host, event.port), _Tally())
        tally.bytes_up += event.bytes_up
        tally.bytes_down += event.bytes_down
        if event.decision == "allow":
            tally.allowed += 1
        else:
            tally.denied += 1
            tally.reasons[event.reason] = None
    hosts = [
        HostSummary(host, port, t.allowed, t.denied, t.bytes_up, t.bytes_down, tuple(t.reasons))
        for (host, port), t in tallies.items()
    ]
    hosts.sort(key=lambda h: (h.denied == 0, -h.denied, -h.allowed, h.host, h.port))
    return Summary(
        hosts=tuple(hosts),
        sessions=tuple(sessions),
        allowed=sum(h.allowed for h in hosts),
        denied=sum(h.denied for h in hosts),
    )


def format_summary(summary: Summary) -> str:
    """A table for humans: denied destinations (with why) first, then allowed ones."""
    if not summary.hosts:
        return "No network connections recorded.\n"
    lines = [
        f"{summary.allowed + summary.denied} connections: {summary.allowed} allowed, {summary.denied} denied."
    ]
    denied = [h for h in summary.hosts if h.denied]
    allowed = [h for h in summary.hosts if not h.denied]
    if denied:
        lines += ["", "Denied:"]
        for h in denied:
            also = f", {h.allowed} allowed" if h.allowed else ""
            lines.append(f"  {_target(h)}  {h.denied} denied{also}")
            lines += [f"      {reason}" for reason in h.reasons]
    if allowed:
        lines += ["", "Allowed:"]
        for h in allowed:
            lines.append(
                f"  {_target(h)}  {h.allowed} connections, {_size(h.bytes_up)} up, {_size(h.bytes_down)} down"
            )
    return "\n".join(lines) + "\n"


def _target(h: HostSummary) -> str:
    host = f"[{h.host}]" if ":" in h.host else h.host or "(malformed request)"
    return f"{host}:{h.port}" if h.port else host


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
