"""What a plan needs to know about the host: who the user is, where the
agent's home, caches and identity files live (created here when missing)."""

from __future__ import annotations

import os
import pwd
from typing import TYPE_CHECKING

from hutch.engines.base import host_name
from hutch.paths import home, read_text, replace_text, touch
from hutch.plan import HostFacts, Identity, passwd_entries, project_key, sandbox_user_name

if TYPE_CHECKING:
    from hutch.agents import AgentDef
    from hutch.workspace import Workspace


def host_identity() -> Identity:
    uid, gid = os.getuid(), os.getgid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = ""
    return Identity(uid, gid, sandbox_user_name(name, uid))


def _write_if_changed(path: str, content: str) -> None:
    try:
        if read_text(path) == content:
            return
    except (OSError, ValueError):
        pass
    replace_text(path, content)  # 0600: the sandbox reads it as the same user


def host_facts(ws: Workspace, agent: AgentDef, *, runtime_dir: str | None = None) -> HostFacts:
    from hutch import homes

    identity = host_identity()
    data = ws.dirs.data
    # With auth = "host" the host's own login files are mounted over the home's.
    prepared = homes.prepare(ws.dirs, ws.project, agent, share_login=ws.settings.auth != "host")
    for notice in prepared.notices:
        ws.warn(notice)
    agent_home = prepared.home
    ident_dir = os.path.join(data, "identity")
    passwd, group = passwd_entries(identity)
    key = f"{identity.uid}-{identity.gid}-{identity.name}"
    identity_files = (os.path.join(ident_dir, f"passwd-{key}"), os.path.join(ident_dir, f"group-{key}"))
    _write_if_changed(identity_files[0], passwd)
    _write_if_changed(identity_files[1], group)
    empty_file = os.path.join(data, "empty", "file")
    empty_dir = os.path.join(data, "empty", "dir")
    if not os.path.exists(empty_file):
        os.makedirs(empty_dir, exist_ok=True)
        touch(empty_file, mode=0o444)
    cache_root = os.path.join(data, "caches")
    if ws.settings.auth == "host":
        _prepare_host_auth(ws, agent)
    for kind in ws.settings.caches:
        os.makedirs(os.path.join(cache_root, project_key(ws.project), kind), exist_ok=True)
    return HostFacts(
        project=ws.project,
        cwd=os.path.realpath(ws.cwd),
        home=home(),
        identity=identity,
        environ=dict(os.environ),
        agent_home=agent_home,
        cache_root=cache_root,
        identity_files=identity_files,
        owner_pid=os.getpid(),
        hostname=host_name(),
        runtime_dir=runtime_dir,
        empty_file=empty_file,
        empty_dir=empty_dir,
    )


def _prepare_host_auth(ws: Workspace, agent: AgentDef) -> None:
    """auth = "host": the seed's behaviour. Create what is missing, never touch what exists."""
    for rel in agent.home_paths:
        path = os.path.join(home(), rel)
        if os.path.exists(path):
            continue
        if "." in os.path.basename(rel.rstrip("/")).lstrip("."):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write("{}\n" if rel.endswith(".json") else "")
        else:
            os.makedirs(path, exist_ok=True)
        ws.say(f"created {path} for auth = \"host\"")
