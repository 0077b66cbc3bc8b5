"""Sessions on the host: their ids, runtime directories and records, and
reaping what a killed hutch left behind.

A running session has a record (`$XDG_STATE_HOME/hutch/sessions/ID.json`,
naming its container, its hutch process and its runtime directory) and a
private runtime directory (the host side of /run/hutch, see hutch.private). When the hutch that
owns them is gone, the next start or `hutch gc` removes both, and the sandbox.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from typing import TYPE_CHECKING

from hutch import process
from hutch.engines.base import host_name
from hutch.paths import read_text, write_private
from hutch.private import is_runtime_dir, stale_runtime_dirs

if TYPE_CHECKING:
    from hutch.engines.base import Engine
    from hutch.paths import Dirs
    from hutch.plan import RunPlan


def new_session_id() -> str:
    return os.urandom(4).hex()


# -- runtime directories -------------------------------------------------------------


def write_env_file(runtime_dir: str, plan: RunPlan) -> None:
    """Named values, shell-quoted, for the entrypoint to read (not argv, not metadata)."""
    lines = [f"{v.name}={shlex.quote(v.value)}" for v in plan.env if v.secret]
    if not lines:
        return
    path = os.path.join(runtime_dir, "env")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def sweep_runtime_dirs(dirs: Dirs) -> list[str]:
    """Runtime dirs of this user's sessions that no live hutch owns any more.
    Only where hutch makes them, which no one else can write; removal follows
    no link (shutil.rmtree), as the sandbox could have planted some inside."""
    live = {name[: -len(".json")] for name in _session_files(dirs)}
    removed = stale_runtime_dirs(dirs, live)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


# -- session records -----------------------------------------------------------------


def _session_files(dirs: Dirs) -> list[str]:
    """The names of the session records (SESSION.json) in the sessions directory."""
    try:
        names = os.listdir(dirs.sessions())
    except OSError:
        return []
    return [name for name in names if name.endswith(".json")]


def record_session(
    dirs: Dirs, plan: RunPlan, *, project: str, engine: str, runtime_dir: str | None
) -> str:
    """Write the running session's record; returns its path, for removal at the end."""
    path = os.path.join(dirs.sessions(), f"{plan.session}.json")
    record = {
        "session": plan.session,
        "container": plan.name,
        "project": project,
        "agent": dict(plan.labels).get("io.hutch.agent", ""),
        "pid": os.getpid(),
        "host": host_name(),
        "started": time.time(),
        "engine": engine,
        "runtime_dir": runtime_dir,
    }
    write_private(path, json.dumps(record))
    return path


def stale_records(dirs: Dirs) -> list[tuple[str, dict[str, object]]]:
    """Session records whose hutch process is gone: their sandboxes may be left behind."""
    found: list[tuple[str, dict[str, object]]] = []
    for name in _session_files(dirs):
        path = os.path.join(dirs.sessions(), name)
        try:
            data = json.loads(read_text(path))
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict):  # unreadable or not a record: nothing to reap
            remove_record(path)
            continue
        pid = data.get("pid")
        if data.get("host") == host_name() and isinstance(pid, int) and not process.is_alive(pid):
            found.append((path, data))
    return found


def remove_record(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def reap_stale(dirs: Dirs, engine: Engine) -> list[str]:
    """Remove sandboxes whose hutch died (killed, crashed); cheap when there are none."""
    stale = stale_records(dirs)
    names = [str(d.get("container")) for _, d in stale if d.get("engine") == engine.name]
    if names:
        engine.remove(names)
    for path, data in stale:
        runtime = data.get("runtime_dir")
        if isinstance(runtime, str) and is_runtime_dir(dirs, runtime):
            shutil.rmtree(runtime, ignore_errors=True)
        remove_record(path)
    return names
