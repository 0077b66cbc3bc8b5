"""accept: let host-executed files a session wrote through to the project.

(Review mode's diff, apply and discard will live here too.)
"""

from __future__ import annotations

from hutch.errors import HutchError, UsageError
from hutch.guard import quarantine
from hutch.guard.report import display
from hutch.workspace import Workspace


def accept(ws: Workspace, session: str, paths: list[str]) -> int:
    """Put the held files of a session (all, or the named ones) into its project."""
    state = ws.dirs.state
    held = quarantine.load(state, session)
    if held is None:
        waiting = quarantine.sessions(state)
        raise UsageError(
            f"session {session!r} holds no files",
            f"sessions holding files: {', '.join(waiting)}" if waiting else "no session holds files now",
        )
    done, refused = quarantine.accept(state, held, paths or None)
    for item in done:
        what = {"new": "added", "modified": "replaced", "deleted": "deleted"}[item.change]
        ws.say(f"{what} {display(item.path)}")
    for refusal in refused:
        ws.warn(f"not accepted: {display(refusal.path)}: {refusal.why}")
    if refused:
        raise HutchError(
            f"{len(refused)} file(s) were not accepted",
            f"the session's versions stay in {quarantine.root(state)}/{session}; compare and copy by hand",
        )
    if not held.items:
        ws.say(f"session {session}: nothing more is held")
    return 0
