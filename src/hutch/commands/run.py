"""run, exec and shell: one sandbox, three ways in.

The order of a session: check the project and its config, make sure the image
exists, scan the project (what to mask, what to keep read-only), prepare the
runtime directory and the egress proxy, plan the sandbox, launch it in the
foreground, then stop the proxy, clean up and report what changed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import sys
from typing import TYPE_CHECKING, NamedTuple

from hutch import homes, images, process, sessions
from hutch.errors import EXIT_INTERRUPTED, HutchError, SetupFailed
from hutch.hostfacts import host_facts
from hutch.paths import touch_in
from hutch.plan import build_run_plan
from hutch.private import make_runtime_dir
from hutch.workspace import Workspace, check_mount_sources, check_project

if TYPE_CHECKING:
    from hutch.egress.session import SessionEgress
    from hutch.guard import Guard
    from hutch.image.recipe import Recipe
    from hutch.plan import Masking, RunPlan


class RunRequest(NamedTuple):
    agent: str | None
    command: tuple[str, ...]  # empty: the agent itself
    user_args: tuple[str, ...]
    interactive: bool | None  # None: attach stdin
    tty: bool | None  # None: when attached to a terminal
    dry_run: bool
    force: bool
    no_mask: bool


def execute(ws: Workspace, request: RunRequest) -> int:
    from hutch import freshness, guard, trust

    agent = ws.agent(request.agent)
    check_project(ws, force=request.force)
    trust.check(ws.dirs, ws.project, ws.settings.merged)
    check_mount_sources(ws)
    recipe = images.recipe_for(ws, agent)
    attached = sys.stdin.isatty() and sys.stdout.isatty()
    tty = attached if request.tty is None else request.tty
    interactive = True if request.interactive is None else request.interactive
    if request.command:
        command = request.command + request.user_args
    else:
        command = (agent.command, *agent.run_args, *request.user_args)
    if not request.dry_run:
        ws.engine.check_ready()
        images.ensure_image(ws, recipe)
        freshness.on_run(ws, agent)
    session_id = sessions.new_session_id()
    uid = os.getuid()
    checks = guard.prepare(ws.project, uid, ws.settings.mask, ws.settings.unmask, request.no_mask)
    for warning in checks.warnings:
        ws.warn(warning)
    try:
        runtime = make_runtime_dir(ws.dirs, session_id)
    except OSError as err:
        raise SetupFailed(
            f"cannot create the session's runtime directory: {err}",
            "it lives in $XDG_RUNTIME_DIR, else in hutch's state directory: make room there, "
            "or make it writable",
        ) from err
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
                audit_mode=ws.settings.network_audit,
                session=session_id,
            )
        facts = host_facts(ws, agent, runtime_dir=runtime)
        plan = build_run_plan(
            ws.settings, agent, facts, image=recipe.tag, session=session_id, command=command,
            interactive=interactive, tty=tty, masking=checks.masking,
        )  # fmt: skip
        if request.dry_run:
            print(shlex.join(ws.engine.run_argv(plan)))
            named = [f"{v.name}=<redacted>" for v in plan.env if v.secret]
            if named:
                print(f"# env file /run/hutch/env: {' '.join(named)}")
            return 0
        sessions.write_env_file(runtime, plan)
        for note in plan.notes:
            ws.say(note)
        if not request.command and agent.login_hint and not homes.logged_in(ws.dirs, agent, facts.agent_home):
            # No login yet: the agent will ask for one.
            ws.say(f"first run of {agent.title} in hutch: {agent.login_hint}")
        allow_count = egress.allow_count if egress is not None else 0
        tracked = checks.tracked.result() if checks.tracked is not None else ()
        summary = describe(plan, checks.masking, allow_count, tracked)
        gap = ws.engine.limits_gap(plan)
        if gap is not None:
            summary += f" | {gap.summary}"
            _warn_once(ws, "limits-gap", gap.warning)
        ws.say(summary)
        launched = True
        try:
            status = launch(ws, plan, recipe, runtime_dir=runtime, egress=egress)
        except HutchError as err:
            status = err.exit_code  # the record says what hutch returns
            raise
        except KeyboardInterrupt:
            status = EXIT_INTERRUPTED
            raise
    finally:
        denied = egress.finish() if egress is not None else 0
        # Best effort: what cannot be removed is left for `hutch gc`.
        shutil.rmtree(runtime, ignore_errors=True)
        if launched:
            if ws.settings.auth != "host":
                for notice in homes.finish(ws.dirs, ws.project, agent):
                    ws.warn(notice)
            _report(ws, checks, agent=agent.name, session=session_id, uid=uid, status=status,
                    denied=denied)  # fmt: skip
    return status


def describe(
    plan: RunPlan, masking: Masking, allow_count: int, tracked: tuple[str, ...] = ()
) -> str:
    """The one line that says what the sandbox holds, before it starts."""
    project = plan.mounts[0]
    network = {
        "allowlist": f"allowlist ({allow_count} hosts)",
        "open": "open",
        "none": "none",
    }[plan.egress]
    parts = [f"session {plan.session}", f"project {project.source} -> {project.target}"]
    parts.append(f"network {network}")
    masked = len(masking.files) + len(masking.dirs)
    parts.append(f"{masked} secret file{'s' if masked != 1 else ''} masked")
    if tracked:
        shown = ", ".join(tracked[:3]) + (f" and {len(tracked) - 3} more" if len(tracked) > 3 else "")
        parts[-1] += f" (tracked by git, so readable in its history: {shown})"
    return " | ".join(parts)


def _warn_once(ws: Workspace, key: str, message: str) -> None:
    """A warning about how this machine is set up: said once per user, even with -q;
    the launch summary repeats the gist every time."""
    marker = os.path.join(ws.dirs.state, "warned", key)
    if os.path.exists(marker):
        return
    ws.warn(message)
    with contextlib.suppress(OSError):  # said again next time
        touch_in(marker)


def launch(
    ws: Workspace,
    plan: RunPlan,
    recipe: Recipe,
    *,
    runtime_dir: str | None = None,
    egress: SessionEgress | None = None,
) -> int:
    """Start the sandbox in the foreground and pass its exit status through."""
    engine = ws.engine
    own_group = not plan.tty
    env = engine.client_env(plan, os.environ)
    cleaned: list[bool] = []
    records: list[str] = []

    def cleanup(_signum: int) -> None:
        if not cleaned:
            cleaned.append(True)
            engine.remove([plan.name])

    def started() -> None:
        # This runs while the engine creates the container, off the launch's
        # critical path. The proxy first: the entrypoint waits for its socket.
        if egress is not None:
            egress.start()
        if not records:
            sessions.reap_stale(ws.dirs, engine)
            try:
                records.append(sessions.record_session(
                    ws.dirs, plan, project=ws.project, engine=engine.name, runtime_dir=runtime_dir
                ))  # fmt: skip
            except OSError as err:
                # Only for cleaning up after a killed hutch: the session runs without it.
                records.append("")
                ws.warn(
                    f"cannot record the running session in {ws.dirs.sessions()} ({err.strerror}); "
                    "it runs anyway (if hutch is killed, `hutch gc` removes what it leaves behind)"
                )

    def run() -> process.Outcome:
        return process.foreground(engine.run_argv(plan), env, own_group=own_group, on_signal=cleanup,
                                  on_started=started)  # fmt: skip

    try:
        outcome = run()
        if outcome.status == 125 and outcome.signum is None and not engine.image_id(plan.image):
            # The image went away behind hutch's back (pruned): build it and retry once.
            images.forget_image(ws, recipe)
            images.ensure_image(ws, recipe)
            if egress is not None:
                egress.finish()
            outcome = run()
        if outcome.killed and outcome.signum is not None:
            name = signal.Signals(outcome.signum).name
            ws.warn(
                f"the sandbox did not stop within {process.GRACE:.0f} s of {name}, "
                f"so hutch killed it (exit status {outcome.status})"
            )
    except FileNotFoundError as err:
        raise SetupFailed(
            f"{engine.binary} is not installed (not found on PATH)", engine.install_hint
        ) from err
    finally:
        for record in filter(None, records):
            sessions.remove_record(record)
    return outcome.status


def _report(
    ws: Workspace, checks: Guard, *, agent: str, session: str, uid: int, status: int, denied: int
) -> None:
    """After the session: what changed in the host-executed surface, what was denied."""
    from hutch import guard
    from hutch.secrets.surface import format_changes

    changes = guard.after(ws.project, uid, checks)
    try:
        guard.write_record(ws.dirs.state, session, ws.project, agent, checks, changes, status)
    except OSError as err:
        # The session's own status stands; only `hutch audit` will not know it.
        ws.warn(
            f"cannot write the session's audit record in {guard.audit_dir(ws.dirs.state)} "
            f"({err.strerror}), so `hutch audit` will not know this session: make room there, "
            "or make it writable"
        )
    if changes:
        ws.warn(
            "the session changed files that the host may run later:\n"
            + format_changes(changes)
            + f"\n  review them; `hutch audit {session}` keeps the list"
        )
    if denied:
        ws.warn(
            f"{denied} connection(s) were denied; `hutch audit {session}` "
            "lists them and what would allow them"
        )
