"""The egress audit log: one JSON object per connection, written when it ends.

Events carry host, port, verdict and byte counts only. Request lines, headers
and bodies are never recorded: they can hold tokens, and the log outlives the
session.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, TextIO

Verdict = Literal["allow", "deny"]
AuditMode = Literal["required", "best-effort"]
AUDIT_MODES: tuple[AuditMode, ...] = ("required", "best-effort")

log = logging.getLogger("hutch.egress")

# Every field is bounded, so a line is too (a few hundred bytes): the sandbox
# chooses the host, the method and, through them, parts of the reason.
MAX_HOST = 255
MAX_METHOD = 32
MAX_REASON = 300
MAX_RULE = 260
# Past this size a session's log keeps counts per destination and reason
# instead of lines, written when the log closes.
MAX_LOG_BYTES = 8 << 20
MAX_TALLIES = 1000
OTHER_DESTINATIONS = "(other destinations)"
# A reader skips a line longer than this without holding it.
MAX_LINE = 64 << 10


@dataclass(frozen=True)
class AuditEvent:
    """One connection, or (`aggregated`) `count` connections past the log's size cap,
    stamped with the last one's time."""

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
    count: int = 1
    aggregated: bool = False


@dataclass
class _Tally:
    time: str
    rule: str | None
    method: str
    count: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class AuditLog:
    """Thread-safe appender of `AuditEvent`s to a JSON-lines file (created 0600).

    Writing never raises: when the file cannot be written (disk full, gone
    read-only) the log says so once, counts what it could not write, and tries
    again with the next event. In "required" mode `refusal()` then tells the
    proxy to refuse new connections until a write succeeds again.
    """

    def __init__(
        self,
        path: Path,
        session: str,
        *,
        mode: AuditMode = "required",
        max_bytes: int = MAX_LOG_BYTES,
    ) -> None:
        self.path = path
        self.session = session
        self.mode: AuditMode = mode
        self.max_bytes = max_bytes
        self.unlogged = 0  # events that could not be written
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._torn = False  # a write stopped mid-line; the next starts a new one
        self._failure: str | None = None
        self._warned = False
        self._reopen = True  # False: the parent could not open the file for us
        self._tallies: dict[tuple[str, int, Verdict, str], _Tally] = {}

    @classmethod
    def from_fd(
        cls,
        path: Path,
        fd: int | OSError,
        session: str,
        *,
        mode: AuditMode = "required",
        max_bytes: int = MAX_LOG_BYTES,
    ) -> AuditLog:
        """Append to a descriptor of `path` opened by the parent (a proxy that dropped its
        privileges keeps writing the file its parent opened); takes `fd` over. Given the
        error instead, the parent could not open it: the log stays unwritable."""
        audit = cls(path, session, mode=mode, max_bytes=max_bytes)
        if isinstance(fd, OSError):
            audit._reopen = False
            audit._failed(fd)
        else:
            audit._adopt(fd)
        return audit

    def _adopt(self, fd: int) -> None:
        self._fd = fd
        self._size = os.fstat(fd).st_size

    def open(self) -> None:
        """Open (create) the file now rather than at the first event, so that a log that
        cannot be written is known, and said, before the first connection."""
        with self._lock, contextlib.suppress(OSError):  # recorded, and said, by _open
            self._open()

    def _open(self) -> None:
        if self._fd is not None:
            return
        if not self._reopen:
            raise OSError(self._failure or "unwritable")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._adopt(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as err:
            self._failed(err)
            raise

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
        """Append one event, stamped now (UTC), and return it (as bounded)."""
        event = AuditEvent(
            time=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            session=self.session,
            host=_cut(host, MAX_HOST),
            port=port,
            decision=decision,
            reason=_cut(reason, MAX_REASON),
            rule=None if rule is None else _cut(rule, MAX_RULE),
            bytes_up=bytes_up,
            bytes_down=bytes_down,
            method=_cut(method, MAX_METHOD),
        )
        line = _line(event)
        with self._lock:
            if self._size + len(line) > self.max_bytes:
                self._tally(event)
            else:
                self._write(line)
        return event

    def refusal(self) -> str | None:
        """Why a new connection may not start now, or None: only in "required" mode,
        while the log cannot be written."""
        failure = self._failure
        if failure is None or self.mode != "required":
            return None
        return f'the session\'s audit log cannot be written ({failure}), and [network] audit is "required"'

    def _write(self, line: bytes) -> None:
        if self._torn:
            line = b"\n" + line
        try:
            self._open()
            assert self._fd is not None
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)
                self._size += written
                self._torn = True
                view = view[written:]
        except OSError as err:
            self.unlogged += 1
            self._failed(err)
        else:
            self._torn = False
            self._failure = None

    def _failed(self, err: OSError) -> None:
        self._failure = err.strerror or str(err)
        if self._warned:
            return
        self._warned = True
        then = (
            "new connections are refused until it can; make room there or make it writable, "
            'or set [network] audit = "best-effort" to let them through unlogged'
            if self.mode == "required"
            else "connections go on unlogged until it can"
        )
        log.warning("hutch: warning: cannot write the audit log %s (%s): %s", self.path, self._failure, then)

    def _tally(self, event: AuditEvent) -> None:
        key = (event.host, event.port, event.decision, event.reason)
        if key not in self._tallies and len(self._tallies) >= MAX_TALLIES:
            key = (OTHER_DESTINATIONS, 0, event.decision, "destinations past the log's size cap")
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally(event.time, event.rule, event.method)
        tally.time = event.time
        tally.count += 1
        tally.bytes_up += event.bytes_up
        tally.bytes_down += event.bytes_down

    def close(self) -> None:
        """Write the counts kept past the size cap, then close the file."""
        with self._lock:
            tallies, self._tallies = self._tallies, {}
            for (host, port, decision, reason), t in tallies.items():
                event = AuditEvent(
                    t.time, self.session, host, port, decision, reason, t.rule,
                    t.bytes_up, t.bytes_down, t.method, t.count, aggregated=True,
                )  # fmt: skip
                self._write(_line(event))
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _line(event: AuditEvent) -> bytes:
    fields = asdict(event)
    if not event.aggregated:
        # Lines of single connections keep the original shape.
        del fields["count"], fields["aggregated"]
    return (json.dumps(fields, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


class EventReader:
    """The events of an audit file, read a line at a time (constant memory).

    Lines that are not events (torn by a crash or a full disk, or damaged) are
    skipped and counted in `damaged`. A missing file has no events.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.damaged = 0

    def __iter__(self) -> Iterator[AuditEvent]:
        self.damaged = 0
        try:
            file = open(self.path, "rb")
        except FileNotFoundError:
            return  # a session that made no connection has no log
        with file:
            while line := file.readline(MAX_LINE):
                if not line.endswith(b"\n") and len(line) == MAX_LINE:
                    while line and not line.endswith(b"\n"):  # the rest of an overlong line
                        line = file.readline(MAX_LINE)
                    self.damaged += 1
                    continue
                if not line.strip():
                    continue
                try:
                    yield _event_from_json(json.loads(line))
                except (ValueError, TypeError, KeyError):
                    self.damaged += 1


def read_events(path: Path) -> Iterable[AuditEvent]:
    """The events in `path`, in order, streamed; see `EventReader`."""
    return EventReader(path)


def write_json(record: dict[str, object], events: Iterable[AuditEvent], out: TextIO) -> None:
    """`record` as a JSON object with the events added as its "connections" list,
    written as the events stream by (never all in memory)."""
    text = json.dumps({**record, "connections": []}, indent=1)
    # "connections" is the last key: open its list where the empty one stands.
    out.write(text[: text.rindex("[]")] + "[")
    for index, event in enumerate(events):
        out.write(("," if index else "") + "\n  " + json.dumps(asdict(event)))
    out.write("\n ]\n}\n")


def _event_from_json(raw: object) -> AuditEvent:
    if not isinstance(raw, dict):
        raise TypeError("expected a JSON object")
    decision = raw["decision"]
    if decision not in ("allow", "deny"):
        raise ValueError(f"bad decision {decision!r}")
    rule = raw["rule"]
    count = _int(raw.get("count", 1))
    if count < 1:
        raise ValueError(f"bad count {count}")
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
        count=count,
        aggregated=raw.get("aggregated") is True,
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
    aggregated: int = 0  # connections past the log's size cap, counted but not listed
    damaged: int = 0  # lines that were not events


@dataclass
class _HostTally:
    allowed: int = 0
    denied: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    reasons: dict[str, None] = field(default_factory=dict)


# A summary holds at most this many destinations (and reasons for each), so
# that even a damaged or hostile file is summarised in bounded memory.
MAX_SUMMARY_HOSTS = 10_000
MAX_REASONS = 20


def summarise(events: Iterable[AuditEvent]) -> Summary:
    """Counts per destination; consumes `events` once (an `EventReader` streams the file)."""
    tallies: dict[tuple[str, int], _HostTally] = {}
    sessions: dict[str, None] = {}
    aggregated = 0
    for event in events:
        if len(sessions) < MAX_SUMMARY_HOSTS:
            sessions[event.session] = None
        key = (event.host, event.port)
        if key not in tallies and len(tallies) >= MAX_SUMMARY_HOSTS:
            key = (OTHER_DESTINATIONS, 0)
        tally = tallies.setdefault(key, _HostTally())
        tally.bytes_up += event.bytes_up
        tally.bytes_down += event.bytes_down
        if event.aggregated:
            aggregated += event.count
        if event.decision == "allow":
            tally.allowed += event.count
        else:
            tally.denied += event.count
            if len(tally.reasons) < MAX_REASONS:
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
        aggregated=aggregated,
        damaged=events.damaged if isinstance(events, EventReader) else 0,
    )


def format_summary(summary: Summary) -> str:
    """A table for humans: denied destinations (with why) first, then allowed ones."""
    notes = []
    if summary.aggregated:
        notes.append(
            f"The log reached its size cap ({MAX_LOG_BYTES >> 20} MiB); {summary.aggregated} later "
            "connections are counted per destination and reason, without their times."
        )
    if summary.damaged:
        notes.append(
            f"{summary.damaged} line(s) of the log could not be read (torn or damaged) and are left out."
        )
    if not summary.hosts:
        return "\n".join(["No network connections recorded.", *notes]) + "\n"
    lines = [
        f"{summary.allowed + summary.denied} connections: {summary.allowed} allowed, {summary.denied} denied."
    ]
    lines += notes
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
    host = h.host or "(malformed request)"
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            host = f"[{host}]"
    except ValueError:
        pass  # a name, or whatever a malformed request named: shown as it is
    return f"{host}:{h.port}" if h.port else host


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
