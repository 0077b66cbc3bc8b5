"""ps, stop, gc and audit: the sessions, running and finished."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from hutch import homes, sessions
from hutch.commands import print_table
from hutch.engines.base import host_name, owner_pid_alive
from hutch.errors import HutchError
from hutch.guard.report import display
from hutch.workspace import Workspace


def ps(ws: Workspace) -> int:
    rows: list[tuple[str, ...]] = [("SESSION", "AGENT", "STATE", "PROJECT", "CONTAINER")]
    for c in ws.engine.containers():
        rows.append((c.session, c.labels.get("io.hutch.agent", ""), c.state,
                     c.labels.get("io.hutch.project", ""), c.name))  # fmt: skip
    print_table(rows)
    return 0


def stop(ws: Workspace, session_id: str) -> int:
    matches = [
        c for c in ws.engine.containers() if session_id in (c.session, c.name, c.id)
    ]
    if not matches:
        raise HutchError(f"no session {session_id!r}", "`hutch ps` lists the running sessions")
    ws.engine.remove([c.name for c in matches])
    ws.say(f"stopped session {session_id}")
    return 0


def gc(ws: Workspace) -> int:
    from hutch import stamp

    reaped = sessions.reap_stale(ws.dirs, ws.engine)
    _recover(ws)
    hostname = host_name()
    leftovers = [
        c.name
        for c in ws.engine.containers()
        if c.name not in reaped and not owner_pid_alive(c.labels, hostname)
    ]
    ws.engine.remove(leftovers)
    swept = sessions.sweep_runtime_dirs(ws.dirs)
    removed = reaped + leftovers + swept
    ws.say(f"removed {len(removed)} leftover sandbox{'es' if len(removed) != 1 else ''}"
           + (f": {', '.join(removed)}" if removed else ""))  # fmt: skip
    # The agent homes of projects that are gone; those of projects that exist stay.
    for gone in homes.vanished(ws.dirs):
        shutil.rmtree(gone.directory, ignore_errors=True)
        ws.say(f"removed the agent homes of {gone.project} (no longer there): {gone.directory}")
    # A cache: the next `hutch build` in each place writes its stamp again.
    shutil.rmtree(stamp.stamps_dir(), ignore_errors=True)
    return 0


def _recover(ws: Workspace) -> None:
    """Sessions whose hutch was killed, in any project: their sandboxes go,
    their .git layers are carried back and their changes reported."""
    from hutch.commands.run import recover_killed

    recover_killed(ws, "*")


def audit(ws: Workspace, session_id: str | None, *, as_json: bool) -> int:
    from hutch.egress.audit import EventReader, format_summary, summarise, write_json
    from hutch.egress.session import audit_path
    from hutch.guard import audit_dir

    directory = Path(audit_dir(ws.dirs.state))
    if session_id is None:
        # The newest session of this project.
        records = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in records:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("project") == str(ws.project):
                session_id = str(data.get("session"))
                break
        else:
            raise HutchError(
                f"no finished session recorded for {ws.project}",
                "run `hutch` (or `hutch exec`) first; name a session with `hutch audit SESSION`",
            )
    record_path = directory / f"{session_id}.json"
    egress_path = audit_path(ws.dirs.state, session_id)
    if not record_path.exists() and not egress_path.exists():
        raise HutchError(f"no audit record for session {session_id!r}", "`hutch ps` lists sessions")
    record: dict[str, object] = {}
    if record_path.exists():
        try:
            loaded = json.loads(record_path.read_text())
        except (OSError, ValueError) as err:
            # Torn or emptied (a full disk, an older hutch): the connections still tell.
            ws.warn(f"the session's record {record_path} cannot be read ({err}); showing what remains")
        else:
            if isinstance(loaded, dict):
                record = loaded
    # Streamed, a line at a time: a session's log may be megabytes.
    events = EventReader(egress_path)
    if as_json:
        write_json(record, events, sys.stdout)
        return 0
    summary = summarise(events)
    print(f"session {session_id}  project {record.get('project', '?')}  agent {record.get('agent', '?')}")
    changes = record.get("changes") or []
    assert isinstance(changes, list)
    if changes:
        print(f"\nChanged host-executed files ({len(changes)}):")
        for change in changes:
            print(f"  {change['kind']:<14} {display(change['path'])}  {display(change['detail'])}")
    held = record.get("held") or []
    assert isinstance(held, list)
    if held:
        print(f"\nHeld until you accept them (`hutch accept {session_id} [PATH...]`):")
        for item in held:
            print(f"  {item['change']:<9} {display(item['path'])}")
    print()
    print(format_summary(summary), end="")
    for key, title in (("masked_files", "Masked files"), ("masked_dirs", "Masked directories"),
                       ("readonly", "Read-only inside")):  # fmt: skip
        items = record.get(key) or []
        assert isinstance(items, list)
        if items:
            print(f"\n{title} ({len(items)}):")
            for item in items:
                print(f"  {display(str(item))}")
    return 0
