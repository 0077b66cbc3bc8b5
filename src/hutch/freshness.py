"""The update notice: `hutch run` says when the agent's pinned release may be stale.

Rules, in order of importance:

- Never block and never fail the start: the notice comes from what the state
  directory already knows (the pin in versions.json), a file read.
- Never ask the registry on every start: only when the pin has not been
  confirmed for the configured number of days, and then at most once per that
  many days (the attempt is stamped before it starts, answered or not).
- That one lookup runs in a background thread while the session runs, and
  records what it saw; the next start says "X is available" instead of "last
  checked N days ago". If the registry still names the pinned release, the pin
  counts as confirmed again and the notice goes away for another period.

Age is measured from the pin's `checked` time, not the image's creation: an
image built weeks ago with what is still the newest release is not stale, and
reading the pin costs no engine call on the launch path.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from hutch.agents import AgentDef
from hutch.image.versions import Pin, Pins

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from hutch.workspace import Workspace

    Lookup = Callable[[AgentDef], str]

DAY = 86400.0
LOOKUP_TIMEOUT = 10.0
# How long a finished session waits for a lookup still in flight before hutch exits.
EXIT_WAIT = 3.0


def notice(agent: str, pin: Pin, now: float, days: int) -> str | None:
    """The one line to print, or None while the pin is fresh (or the notice is off)."""
    if days <= 0 or now - pin.checked < days * DAY:
        return None
    if pin.newest is not None:
        return (
            f"{agent} {pin.newest} is available (this image has {pin.version}); "
            f"`hutch update {agent}` rebuilds with it"
        )
    age = int((now - pin.checked) // DAY)
    return (
        f"{agent} {pin.version} was last checked against the registry {age} days ago; "
        f"`hutch update {agent}` looks for a newer release"
    )


def lookup_due(pin: Pin, now: float, days: int) -> bool:
    period = days * DAY
    return days > 0 and now - pin.checked >= period and now - pin.looked >= period


def _registry_lookup(agent: AgentDef) -> str:
    from hutch.image.versions import latest_version

    return latest_version(agent, timeout=LOOKUP_TIMEOUT)


def check(
    pins: Pins,
    agent: AgentDef,
    *,
    days: int,
    say: Callable[[str], None],
    now: float | None = None,
    lookup: Lookup = _registry_lookup,
    wait_at_exit: float = EXIT_WAIT,
) -> threading.Thread | None:
    """Print the notice if due; start the background lookup if due and return its thread."""
    if agent.pinned_version is not None:
        # Pinned by the user in [agents.NAME] version: theirs to move.
        return None
    pin = pins.get(agent.name)
    if pin is None:
        return None
    stamp = time.time() if now is None else now
    line = notice(agent.name, pin, stamp, days)
    if line is not None:
        say(line)
    if not lookup_due(pin, stamp, days):
        return None
    try:
        pins.looking(agent.name, stamp)
    except OSError:
        # Without the stamp every start would ask again: better not to ask at all.
        return None
    return _start(pins, agent, lookup=lookup, stamp=stamp, wait_at_exit=wait_at_exit)


def _start(
    pins: Pins, agent: AgentDef, *, lookup: Lookup, stamp: float, wait_at_exit: float
) -> threading.Thread:
    import atexit
    import threading

    from hutch.image.versions import LookupFailed

    def work() -> None:
        try:
            newest = lookup(agent)
        except LookupFailed:
            # Offline or the registry is down: the stamp already says "asked";
            # the next attempt comes a period later, and the notice stays vague.
            return
        try:
            pins.seen(agent.name, newest, stamp)
        except OSError:
            return  # the state directory went read-only: nothing to record the answer in

    # A daemon thread never holds hutch's exit for long: after the session, it
    # gets a few seconds to finish, then is dropped (and asked again a period later).
    thread = threading.Thread(target=work, name=f"hutch-update-check-{agent.name}", daemon=True)
    thread.start()
    if wait_at_exit > 0:
        atexit.register(thread.join, wait_at_exit)
    return thread


def on_run(ws: Workspace, agent: AgentDef) -> threading.Thread | None:
    """The run path's one call: maybe a notice line, maybe a background lookup."""
    # [image] update_check_days; 0 turns the notice and its lookups off.
    return check(ws.pins, agent, days=ws.settings.update_check_days, say=ws.say)
