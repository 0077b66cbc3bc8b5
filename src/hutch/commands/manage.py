"""build, update, agents, doctor, ps, stop, gc, audit and config."""

from __future__ import annotations

import argparse
import grp
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hutch import session
from hutch.agents import AgentDef, all_agents
from hutch.errors import EXIT_ENGINE, ConfigError, HutchError, UsageError
from hutch.image.versions import LookupFailed, latest_version
from hutch.paths import CONFIG_NAME
from hutch.session import Workspace


def build(ws: Workspace, agent_name: str | None, no_cache: bool) -> int:
    agent = ws.agent(agent_name)
    recipe = session.recipe_for(ws, agent)
    built = session.ensure_image(ws, recipe, no_cache=no_cache)
    if not built:
        ws.say(f"{recipe.tag} is up to date ({agent.name} {recipe.agent_version})")
    print(recipe.tag)
    return 0


def update(ws: Workspace, agent_name: str | None, every: bool) -> int:
    if every and agent_name:
        raise UsageError("give an agent or --all, not both")
    agents = all_agents(ws.settings.custom_agents)
    if every:
        names = [name for name in agents if ws.pins.get(name) is not None]
        if not names:
            ws.say("no agent has been built yet; nothing to update")
            return 0
    else:
        names = [ws.agent(agent_name).name]
    for name in names:
        agent = agents[name]
        before = ws.pins.get(name)
        recipe = session.recipe_for(ws, agent, refresh=True)
        if before is not None and before.version == recipe.agent_version:
            ws.say(f"{name} {recipe.agent_version} is the newest release")
        elif before is not None:
            ws.say(f"{name}: {before.version} -> {recipe.agent_version}")
        session.ensure_image(ws, recipe)
        print(recipe.tag)
    return 0


def _newest(agent: AgentDef) -> str:
    try:
        return latest_version(agent, timeout=8)
    except LookupFailed:
        return "?"


def agents(ws: Workspace) -> int:
    known = all_agents(ws.settings.custom_agents)
    with ThreadPoolExecutor(max_workers=len(known)) as pool:
        newest = dict(zip(known, pool.map(_newest, known.values()), strict=True))
    rows: list[tuple[str, ...]] = [("AGENT", "PACKAGE", "PINNED", "NEWEST", "IMAGE")]
    for name, agent in known.items():
        pin = agent.pinned_version or (p.version if (p := ws.pins.get(name)) else None)
        image = "not built"
        if pin is not None:
            recipe = session.recipe_for(ws, agent)
            image = recipe.tag if ws.engine.image_id(recipe.tag) else "not built"
        marker = "" if agent.builtin else " (config)"
        rows.append((name + marker, f"{agent.install}:{agent.package}", pin or "-",
                     newest[name], image))  # fmt: skip
    _table(rows)
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def ps(ws: Workspace) -> int:
    rows: list[tuple[str, ...]] = [("SESSION", "AGENT", "STATE", "PROJECT", "CONTAINER")]
    for c in ws.engine.containers():
        rows.append((c.session, c.labels.get("io.hutch.agent", ""), c.state,
                     c.labels.get("io.hutch.project", ""), c.name))  # fmt: skip
    _table(rows)
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
    from hutch.engines.base import host_name, owner_pid_alive

    reaped = session.reap_stale(ws)
    hostname = host_name()
    leftovers = [
        c.name
        for c in ws.engine.containers()
        if c.name not in reaped and not owner_pid_alive(c.labels, hostname)
    ]
    ws.engine.remove(leftovers)
    removed = reaped + leftovers
    ws.say(f"removed {len(removed)} leftover sandbox{'es' if len(removed) != 1 else ''}"
           + (f": {', '.join(removed)}" if removed else ""))  # fmt: skip
    return 0


def audit(ws: Workspace, session_id: str | None, as_json: bool) -> int:
    import json

    from hutch.egress.audit import AuditReadError, format_summary, read_events, summarise
    from hutch.egress.session import audit_path
    from hutch.guard import audit_dir

    directory = audit_dir(ws.dirs.state)
    if session_id is None:
        # The newest session of this project.
        records = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in records:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if data.get("project") == str(ws.project):
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
        record = json.loads(record_path.read_text())
    try:
        events = read_events(egress_path) if egress_path.exists() else []
    except AuditReadError as err:
        raise HutchError(str(err), "the audit file is damaged; it is plain JSON lines") from err
    if as_json:
        record["connections"] = [e.__dict__ for e in events]
        print(json.dumps(record, indent=1))
        return 0
    summary = summarise(events)
    print(f"session {session_id}  project {record.get('project', '?')}  agent {record.get('agent', '?')}")
    changes = record.get("changes") or []
    assert isinstance(changes, list)
    if changes:
        print(f"\nChanged host-executed files ({len(changes)}):")
        for change in changes:
            print(f"  {change['kind']:<14} {change['path']}  {change['detail']}")
    print()
    print(format_summary(summary), end="")
    for key, title in (("masked_files", "Masked files"), ("masked_dirs", "Masked directories"),
                       ("readonly", "Read-only inside")):  # fmt: skip
        items = record.get(key) or []
        assert isinstance(items, list)
        if items:
            print(f"\n{title} ({len(items)}):")
            for item in items:
                print(f"  {item}")
    return 0


def config_show(ws: Workspace) -> int:
    merged = ws.settings.merged
    width = max(len(k) for k in merged.values)
    for key, value in merged.values.items():
        shown = list(value) if isinstance(value, tuple) else value
        print(f"{key.ljust(width)} = {_toml(shown)}  # {merged.origins[key]}")
    for name, origin in merged.agent_origins.items():
        print(f"agents.{name} # {origin}")
    return 0


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


TEMPLATE = """\
# hutch project config. Every key is optional; `hutch config show` prints the
# effective values and where each one comes from.
version = 1
agent = "claude"

[image]
# base = "debian:bookworm-slim"
# packages = ["ripgrep"]          # extra apt packages
# npm = []                        # extra global npm packages
# pip = []                        # extra pip packages
# ca_certificates = "host"        # "host" | "none" | ["certs/corp.crt"]

[sandbox]
# workdir = "host"                # or "/workspace"
# env = ["LANG"]                  # host variables let in, by name
# mounts = ["~/datasets:/data:ro"]
# memory = "8g"
# cpus = 2
# pids = 4096
# auth = "isolated"               # "host" shares ~/.claude with the sandbox (risky)
# caches = ["npm", "pip"]

[network]
# mode = "allowlist"              # "allowlist" | "open" | "none"
# allow = ["api.github.com"]

[secrets]
# mask = ["*.tfstate"]
# unmask = [".env.test"]
"""


def config_init(ns: argparse.Namespace, force: bool) -> int:
    from hutch.paths import find_project_root

    project = find_project_root(Path(os.getcwd()), getattr(ns, "project", None))
    path = project / CONFIG_NAME
    if path.exists() and not force:
        raise HutchError(f"{path} exists; leaving it as it is", "pass --force to replace it")
    path.write_text(TEMPLATE)
    if not getattr(ns, "quiet", False):
        print(f"hutch: wrote {path}", file=sys.stderr)
    return 0


# -- doctor -----------------------------------------------------------------------


def doctor(ns: argparse.Namespace) -> int:
    from hutch.cli import _workspace

    problems = 0

    def report(ok: bool, what: str, fix: str = "") -> None:
        nonlocal problems
        print(f"[{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            problems += 1
            print(f"       fix: {fix}")

    try:
        ws = _workspace(ns)
    except ConfigError as err:
        report(False, f"config: {err.message}", err.hint or "fix the config file")
        return err.exit_code
    except HutchError as err:
        report(False, err.message, err.hint or "")
        return err.exit_code
    engine = ws.engine
    report(True, f"engine: {engine.name} ({engine.binary})")
    try:
        version = engine.version()
    except HutchError as err:
        report(False, err.message, err.hint or "")
        _socket_check(report)
        return EXIT_ENGINE
    if not version.ok:
        report(False, f"{engine.name} daemon: {version.stderr.strip()}", "start the daemon")
        _socket_check(report)
        return EXIT_ENGINE
    report(True, f"{engine.name} daemon answers (server {version.stdout.strip()})")
    _socket_check(report)
    if engine.has_buildkit():
        report(True, "BuildKit (buildx) available")
    else:
        print("[ok] buildx not installed: hutch uses the classic builder")
    base = ws.settings.base
    report(
        engine.image_id(base) is not None,
        f"base image {base} present",
        f"{engine.binary} pull {base} (or load it offline: docker import)",
    )
    if ws.settings.ca_certificates == "host":
        try:
            certs = session.ca_files(ws)
        except ConfigError as err:
            report(False, err.message, err.hint or "")
        else:
            names = ", ".join(n for n, _ in certs) or "none"
            report(True, f"host CA certificates trusted in the image: {names}")
    for label, path in (("data", ws.dirs.data), ("state", ws.dirs.state)):
        try:
            path.mkdir(parents=True, exist_ok=True)
            writable = os.access(path, os.W_OK)
        except OSError:
            writable = False
        report(writable, f"{label} directory {path} writable", f"fix permissions on {path}")
    return 0 if problems == 0 else 1


def _socket_check(report) -> None:  # type: ignore[no-untyped-def]
    sock = "/var/run/docker.sock"
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return
    if host:
        sock = host[len("unix://"):]
    if not os.path.exists(sock):
        return
    ok = os.access(sock, os.R_OK | os.W_OK)
    try:
        group = grp.getgrgid(os.stat(sock).st_gid).gr_name
    except KeyError:
        group = str(os.stat(sock).st_gid)
    report(ok, f"socket {sock} accessible (group {group})",
           f"sudo usermod -aG {group} $USER, then log in again")  # fmt: skip


def _age(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))
