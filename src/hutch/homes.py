"""Agent homes: one per project and agent, so that nothing one project's
session writes there (transcripts, settings with hooks, a planted ~/.bashrc)
is read by another project's. Only the login state is shared (hutch.logins).

Under `$XDG_DATA_HOME/hutch`:

    projects/KEY/project           the project's path: which project this is (gc, doctor)
    projects/KEY/homes/AGENT/      the agent's home for that project, /home/hutch inside
    projects/KEY/login-AGENT.json  what the home's login state was when last in step
                                   with the store
    logins/AGENT/                  the shared login state (hutch.logins)
    homes/AGENT/                   the one home every project shared before: its login
                                   is taken into the store once, the rest left in place

KEY is a hash of the project's path: any path gives a safe name.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, NamedTuple

from hutch import logins
from hutch.paths import read_regular

if TYPE_CHECKING:
    from hutch.agents import AgentDef
    from hutch.paths import Dirs

PROJECTS = "projects"
INDEX = "project"
LEGACY = "homes"  # the shared homes of older versions, beside projects/


def project_dir(dirs: Dirs, project: str) -> str:
    key = hashlib.sha256(os.fsencode(project)).hexdigest()[:16]
    return os.path.join(dirs.data, PROJECTS, key)


def agent_home(dirs: Dirs, project: str, agent: str) -> str:
    return os.path.join(project_dir(dirs, project), "homes", agent)


class Prepared(NamedTuple):
    home: str
    notices: tuple[str, ...]  # one line each, for the user


def prepare(dirs: Dirs, project: str, agent: AgentDef, *, share_login: bool = True) -> Prepared:
    """The project's home for agent, created when missing, with the shared login
    state copied in (share_login: not when the host's own files are mounted)."""
    directory = project_dir(dirs, project)
    home = agent_home(dirs, project, agent.name)
    os.makedirs(home, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    index = os.path.join(directory, INDEX)
    if _read_index(index) != project:
        _write_index(index, project)
    notices: list[str] = []
    if agent.login and share_login:
        store = logins.store_dir(dirs.data, agent.name)
        if not os.path.isdir(store):
            notices += _migrate(dirs, agent, store)
        record = os.path.join(directory, f"login-{agent.name}.json")
        problems = logins.pull(store, home, agent.login, record)
        notices += [f"login state not shared, {p}" for p in problems]
    return Prepared(home, tuple(notices))


def finish(dirs: Dirs, project: str, agent: AgentDef) -> tuple[str, ...]:
    """After a session: the login state it changed goes to the shared store."""
    if not agent.login:
        return ()
    directory = project_dir(dirs, project)
    record = os.path.join(directory, f"login-{agent.name}.json")
    store = logins.store_dir(dirs.data, agent.name)
    problems = logins.push(store, agent_home(dirs, project, agent.name), agent.login, record)
    return tuple(f"login state not saved, {p}" for p in problems)


def logged_in(dirs: Dirs, agent: AgentDef, home: str) -> bool:
    """Whether the agent will find a login: in the store, or (an agent without
    a declared login) anything at all in its home."""
    if agent.login:
        return logins.logged_in(logins.store_dir(dirs.data, agent.name), agent.login)
    return bool(os.listdir(home))


def _migrate(dirs: Dirs, agent: AgentDef, store: str) -> list[str]:
    """Once per agent: the login of the home all projects shared goes to the store."""
    old = os.path.join(dirs.data, LEGACY, agent.name)
    os.makedirs(store, mode=0o700, exist_ok=True)
    if not os.path.isdir(old):
        return []
    kept = logins.take_from(old, store, agent.login)
    return [
        f"{agent.title}'s home is now one per project{'; your login was kept' if kept else ''}. "
        f"The home all projects shared until now stays in {old}, with every project's history: "
        "remove it when you no longer need it"
    ]


def _read_index(path: str) -> str | None:
    try:
        return os.fsdecode(read_regular(path).rstrip(b"\n"))
    except OSError:
        return None


def _write_index(path: str, project: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(os.fsencode(project) + b"\n")


class ProjectHomes(NamedTuple):
    directory: str
    project: str


def vanished(dirs: Dirs) -> list[ProjectHomes]:
    """The homes of projects whose directory is gone (deleted, or moved)."""
    root = os.path.join(dirs.data, PROJECTS)
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return []
    found = []
    for name in entries:
        directory = os.path.join(root, name)
        project = _read_index(os.path.join(directory, INDEX))
        if project is not None and not os.path.lexists(project):
            found.append(ProjectHomes(directory, project))
    return found
