"""run, exec and shell: one sandbox, three ways in."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from hutch import session
from hutch.plan import Masking, build_run_plan
from hutch.session import Workspace


@dataclass(frozen=True)
class RunRequest:
    agent: str | None
    command: tuple[str, ...]  # empty: the agent itself
    user_args: tuple[str, ...]
    interactive: bool | None  # None: decide from the terminal
    tty: bool | None
    dry_run: bool
    force: bool
    no_mask: bool


def execute(ws: Workspace, request: RunRequest) -> int:
    agent = ws.agent(request.agent)
    session.check_project(ws, request.force)
    recipe = session.recipe_for(ws, agent)
    attached = sys.stdin.isatty() and sys.stdout.isatty()
    tty = attached if request.tty is None else request.tty
    interactive = True if request.interactive is None else request.interactive
    if request.command:
        command = request.command + request.user_args
    else:
        command = (agent.command, *agent.run_args, *request.user_args)
    session_id = session.new_session_id()
    masking = Masking()
    if request.dry_run:
        facts = session.host_facts(ws, agent)
        plan = build_run_plan(
            ws.settings, agent, facts, recipe.tag, session_id, command, interactive, tty, masking
        )
        print(session.format_argv(ws.engine.run_argv(plan)))
        return 0
    session.ensure_image(ws, recipe)
    facts = session.host_facts(ws, agent)
    plan = build_run_plan(
        ws.settings, agent, facts, recipe.tag, session_id, command, interactive, tty, masking
    )
    for note in plan.notes:
        ws.say(note)
    ws.say(session.describe(plan, masking, len(ws.settings.allow) + len(agent.allow)))
    return session.launch(ws, plan, recipe)
