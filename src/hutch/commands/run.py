"""run, exec and shell: one sandbox, three ways in."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from typing import TYPE_CHECKING, NamedTuple

from hutch import session
from hutch.paths import touch_in
from hutch.plan import build_run_plan
from hutch.session import Workspace

if TYPE_CHECKING:
    from hutch.guard import Guard


class RunRequest(NamedTuple):
    agent: str | None
    command: tuple[str, ...]  # empty: the agent itself
    user_args: tuple[str, ...]
    interactive: bool | None  # None: attach stdin
    tty: bool | None  # None: when attached to a terminal
    dry_run: bool
    force: bool
    no_mask: bool


def _warn_once(ws: Workspace, key: str, message: str) -> None:
    """A warning about how this machine is set up: said once per user, even with -q;
    the launch summary repeats the gist every time."""
    marker = os.path.join(ws.dirs.state, "warned", key)
    if os.path.exists(marker):
        return
    ws.warn(message)
    touch_in(marker)


def execute(ws: Workspace, request: RunRequest) -> int:
    from hutch import freshness, guard, trust

    agent = ws.agent(request.agent)
    session.check_project(ws, request.force)
    trust.check(ws.dirs, ws.project, ws.settings.merged.origins)
    session.check_mount_sources(ws)
    recipe = session.recipe_for(ws, agent)
    attached = sys.stdin.isatty() and sys.stdout.isatty()
    tty = attached if request.tty is None else request.tty
    interactive = True if request.interactive is None else request.interactive
    if request.command:
        command = request.command + request.user_args
    else:
        command = (agent.command, *agent.run_args, *request.user_args)
    if not request.dry_run:
        session.ensure_image(ws, recipe)
        freshness.on_run(ws, agent)
    session_id = session.new_session_id()
    uid = os.getuid()
    checks = guard.prepare(ws.project, uid, ws.settings.mask, ws.settings.unmask, request.no_mask)
    for warning in checks.warnings:
        ws.warn(warning)
    runtime = session.make_runtime_dir(session_id)
    egress = None
    launched = False
    status = 1
    try:
        if ws.settings.network_mode == "allowlist":
            from hutch.egress.session import SessionEgress, audit_path

            egress = SessionEgress.prepare(
                mode=ws.settings.network_mode,
                allow=agent.allow + ws.settings.allow,
                allow_private=ws.settings.allow_private,
                runtime_dir=runtime,
                audit=audit_path(ws.dirs.state, session_id),
                session=session_id,
            )
        facts = session.host_facts(ws, agent, str(runtime))
        plan = build_run_plan(
            ws.settings, agent, facts, recipe.tag, session_id, command, interactive, tty,
            checks.masking,
        )  # fmt: skip
        if request.dry_run:
            print(shlex.join(ws.engine.run_argv(plan)))
            named = [f"{v.name}=<redacted>" for v in plan.env if v.secret]
            if named:
                print(f"# env file /run/hutch/env: {' '.join(named)}")
            return 0
        session.write_env_file(runtime, plan)
        for note in plan.notes:
            ws.say(note)
        home = ws.dirs.agent_home(agent.name)
        if not request.command and agent.login_hint and not os.listdir(home):
            # A fresh agent home: the agent will ask to log in.
            ws.say(f"first run of {agent.title} in hutch: {agent.login_hint}")
        allow_count = egress.allow_count if egress is not None else 0
        summary = session.describe(plan, checks.masking, allow_count)
        gap = ws.engine.limits_gap(plan)
        if gap is not None:
            summary += f" | {gap.summary}"
            _warn_once(ws, "limits-gap", gap.warning)
        ws.say(summary)
        launched = True
        status = session.launch(ws, plan, recipe, runtime, egress)
    finally:
        denied = egress.finish() if egress is not None else 0
        # Best effort: what cannot be removed is left for `hutch gc`.
        shutil.rmtree(runtime, ignore_errors=True)
        if launched:
            _report(ws, agent.name, session_id, uid, checks, status, denied)
    return status


def _report(
    ws: Workspace, agent: str, session_id: str, uid: int, checks: Guard, status: int, denied: int
) -> None:
    from hutch import guard
    from hutch.secrets.surface import format_changes

    changes = guard.after(ws.project, uid, checks)
    guard.write_record(ws.dirs.state, session_id, ws.project, agent, checks, changes, status)
    if changes:
        ws.warn(
            "the session changed files that the host may run later:\n"
            + format_changes(changes)
            + f"\n  review them; `hutch audit {session_id}` keeps the list"
        )
    if denied:
        ws.warn(
            f"{denied} connection(s) were denied; `hutch audit {session_id}` "
            "lists them and what would allow them"
        )
