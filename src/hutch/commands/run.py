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
from hutch.plan import build_run_plan, parse_mount
from hutch.private import make_runtime_dir
from hutch.workspace import Workspace, check_mount_sources, check_project

if TYPE_CHECKING:
    from collections.abc import Callable

    from hutch.agents import AgentDef
    from hutch.egress.session import SessionEgress
    from hutch.guard import Outcome
    from hutch.guard.session import Protection
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
    from hutch import freshness, trust

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
        recover_killed(ws)
    session_id = sessions.new_session_id()
    s = ws.settings
    protection = _protect(ws, session_id, no_mask=request.no_mask, quick=not request.dry_run)
    for warning in protection.prepared.warnings:
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
        if s.network_mode == "allowlist":
            from hutch.egress.session import SessionEgress, audit_path

            egress = SessionEgress.prepare(
                mode=s.network_mode,
                allow=agent.allow + s.allow,
                allow_private=s.allow_private,
                runtime_dir=runtime,
                audit=audit_path(ws.dirs.state, session_id),
                audit_mode=ws.settings.network_audit,
                session=session_id,
            )
        for attempt in range(2):
            protection.make_git_layer(engine=ws.engine.name)
            facts = host_facts(ws, agent, runtime_dir=runtime)
            masking = protection.masking()
            plan = build_run_plan(
                s, agent, facts, image=recipe.tag, session=session_id, command=command,
                interactive=interactive, tty=tty, masking=masking,
            )._replace(seccomp=_seccomp(ws))  # fmt: skip
            if request.dry_run:
                print(shlex.join(ws.engine.run_argv(plan)))
                named = [f"{v.name}=<redacted>" for v in plan.env if v.secret]
                if named:
                    print(f"# env file /run/hutch/env: {' '.join(named)}")
                return 0
            if attempt == 0:
                own = bool(request.command)
                _announce(ws, plan, masking, egress, agent, runtime=runtime, own_command=own,
                          agent_home=facts.agent_home, tracked=protection.tracked())  # fmt: skip
            asked = tuple(parse_mount(m, ws.project, facts.home) for m in s.mounts)
            protection.open_gate(runtime, protection.expectations(
                target=plan.mounts[0].target, empty_file=facts.empty_file, empty_dir=facts.empty_dir,
                user_mounts=asked))  # fmt: skip
            launched = True
            ready = protection.gate_ready
            try:
                status = launch(ws, plan, recipe, runtime_dir=runtime, egress=egress, on_ready=ready,
                                on_spawned=protection.start_walk)  # fmt: skip
            except HutchError as err:
                status = err.exit_code  # the record says what hutch returns
                raise
            except KeyboardInterrupt:
                status = EXIT_INTERRUPTED
                raise
            if attempt == 0 and protection.stale():
                # Held at the gate, nothing ran: the project changed since the
                # last walk in a way that changes the plan. Walk it, start again.
                launched = False
                if egress is not None:
                    egress.finish()
                protection.close()
                protection = _protect(ws, session_id, no_mask=request.no_mask, quick=False)
                continue
            break
        failure = protection.gate_failure()
        if failure is not None:
            launched = protection.gate_opened()
            raise SetupFailed(
                f"the sandbox did not start: {failure}; nothing ran in it",
                "another session of this project may be renaming files while this one starts: try again",
            )
    finally:
        denied = egress.finish() if egress is not None else 0
        protection.close_gate()
        if launched:
            if s.auth != "host":
                for notice in homes.finish(ws.dirs, ws.project, agent):
                    ws.warn(notice)
            _report(ws, protection, agent=agent.name, session=session_id, status=status, denied=denied,
                    interactive=tty)  # fmt: skip
        protection.close()
        # Best effort: what cannot be removed is left for `hutch gc`.
        shutil.rmtree(runtime, ignore_errors=True)
    return status


def _protect(ws: Workspace, session: str, *, no_mask: bool, quick: bool) -> Protection:
    """The project walked (or its last walk's summary read, quick) and its
    protection planned."""
    from hutch.guard.session import Protection
    from hutch.guard.tree import Unstable

    s = ws.settings
    try:
        return Protection.open(
            project=ws.project, uid=os.getuid(), mask=s.mask, unmask=s.unmask, no_mask=no_mask,
            state=ws.dirs.state, session=session, quick=quick,
        )  # fmt: skip
    except Unstable as err:
        raise SetupFailed(
            f"the project kept changing while hutch looked for secrets in it ({err} was swapped); "
            "nothing ran",
            "another session of this project may be renaming directories: stop it (`hutch ps`), "
            "then try again",
        ) from err
    except OSError as err:
        raise SetupFailed(f"cannot read the project {ws.project}: {err.strerror}",
                          "check that the directory exists and is yours") from err  # fmt: skip


def _announce(
    ws: Workspace, plan: RunPlan, masking: Masking, egress: SessionEgress | None, agent: AgentDef, *,
    runtime: str, own_command: bool, agent_home: str, tracked: tuple[str, ...],
) -> None:  # fmt: skip
    """The env file, notes, and the one line that says what the sandbox holds."""
    sessions.write_env_file(runtime, plan)
    for note in plan.notes:
        ws.say(note)
    if not own_command and agent.login_hint and not homes.logged_in(ws.dirs, agent, agent_home):
        # No login yet: the agent will ask for one.
        ws.say(f"first run of {agent.title} in hutch: {agent.login_hint}")
    allow_count = egress.allow_count if egress is not None else 0
    summary = describe(plan, masking, allow_count, tracked)
    gap = ws.engine.limits_gap(plan)
    if gap is not None:
        summary += f" | {gap.summary}"
        _warn_once(ws, "limits-gap", gap.warning)
    ws.say(summary)


def _seccomp(ws: Workspace) -> str | None:
    from hutch.engines import seccomp

    try:
        return seccomp.profile_file(ws.dirs.state)
    except (OSError, ValueError) as err:
        raise SetupFailed(
            f"hutch's seccomp profile could not be made: {err}",
            "check the containers-common profile (/usr/share/containers/seccomp.json)",
        ) from err


def recover_killed(ws: Workspace, project: str | None = None) -> None:
    """Sessions of a project (this one by default; all with project "*")
    whose hutch was killed: reap their sandboxes, carry their .git layers back
    and report what they changed."""
    from hutch.guard.session import orphans, recover

    found = orphans(ws.dirs.state, None if project == "*" else (project or ws.project))
    if not found:
        return
    # Their sandboxes first: nothing may write into a layer hutch is reading.
    sessions.reap_stale(ws.dirs, ws.engine)
    for session, _ in found:
        ws.engine.remove([c.name for c in ws.engine.containers(label=f"io.hutch.session={session}")])
    s = ws.settings
    for session, owned in found:
        if not os.path.isdir(owned):
            continue
        outcome = recover(
            state=ws.dirs.state, session=session, uid=os.getuid(), mask=s.mask, unmask=s.unmask,
            no_mask=False, surface=s.surface, project=owned,
        )  # fmt: skip
        if outcome is not None:
            prefix = f"session {session} in {owned} ended without hutch (killed?); "
            _tell(ws, outcome, session, prefix=prefix)


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
        from hutch.guard.report import names

        shown = names(tracked, shown=3)
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
    on_ready: Callable[[], None] | None = None,
    on_spawned: Callable[[], None] | None = None,
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
        # critical path: the quick start's walk (a thread), then the proxy,
        # whose socket the entrypoint waits for, then the start gate.
        if on_spawned is not None:
            on_spawned()
        if egress is not None:
            egress.start()
        if on_ready is not None:
            on_ready()  # the start gate may now answer: the proxy listens
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


def _report(ws: Workspace, protection: Protection, *, agent: str, session: str, status: int, denied: int,
            interactive: bool) -> None:  # fmt: skip
    """After the session: the .git layer carried back, what changed in the
    host-executed surface (held or reported), what was denied."""
    from hutch.guard import audit_dir, terminal_ask, write_record

    ask = terminal_ask if interactive and sys.stdin.isatty() and sys.stderr.isatty() else None
    outcome = protection.finish(surface=ws.settings.surface, ask=ask)
    try:
        write_record(
            ws.dirs.state, session=session, project=ws.project, agent=agent,
            prepared=protection.prepared, outcome=outcome, status=status,
        )
    except OSError as err:
        # The session's own status stands; only `hutch audit` will not know it.
        ws.warn(
            f"cannot write the session's audit record in {audit_dir(ws.dirs.state)} "
            f"({err.strerror}), so `hutch audit` will not know this session: make room there, "
            "or make it writable"
        )
    _tell(ws, outcome, session)
    if denied:
        ws.warn(
            f"{denied} connection(s) were denied; `hutch audit {session}` "
            "lists them and what would allow them"
        )


def _tell(ws: Workspace, outcome: Outcome, session: str, prefix: str = "") -> None:
    from hutch.guard.report import format_changes, names

    if outcome.unsaved:
        ws.warn(
            prefix + f"cannot write in {outcome.unsaved}: make room there. What the session changed "
            "is still checked; what could not be kept is gone from the project rather than left for the host",
        )
    if outcome.incomplete:
        ws.warn(
            prefix + "the project kept changing while hutch looked at what the session changed "
            "(another session renaming directories?): the list below may be incomplete",
        )
    if outcome.changes:
        ws.warn(
            prefix
            + "the session changed files that the host may run later:\n"
            + format_changes(outcome.changes)
            + f"\n  `hutch audit {session}` keeps the list"
        )
    lost = [item.path for item in outcome.held.items if not item.kept]
    if lost:
        ws.warn(
            f"{len(lost)} of them could not be kept (no room in hutch's state dir) and are gone from the "
            f"project, so the host never sees them: {names(lost)}"
        )
    count = len(outcome.held.items) - len(lost)
    if count:
        ws.warn(
            f"{count} of them {'is' if count == 1 else 'are'} set aside until you accept "
            f"{'it' if count == 1 else 'them'}: review, then `hutch accept {session} [PATH...]` "
            f"(they wait in {ws.dirs.state}/quarantine/{session})"
        )
