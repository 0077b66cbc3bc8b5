"""build, update and agents: the agent images."""

from __future__ import annotations

import sys
import time

from hutch import images
from hutch.agents import AgentDef, all_agents
from hutch.commands import print_table
from hutch.errors import BuildFailed, EngineUnavailable, HutchError, UsageError
from hutch.image.versions import LookupFailed, latest_version
from hutch.workspace import Workspace


def build(
    ws: Workspace, agent_name: str | None, *, no_cache: bool, stamp_file: str, project_from_flag: bool
) -> int:
    """Build the image if its recipe changed; print its tag. On Docker, leave
    the stamp that answers the next unchanged `hutch build` (see hutch.stamp)."""
    agent = ws.agent(agent_name)
    recipe = images.recipe_for(ws, agent)
    built = images.ensure_image(ws, recipe, no_cache=no_cache, ask=True)
    up_to_date = f"{recipe.tag} is up to date ({agent.name} {recipe.agent_version})"
    if not built:
        ws.say(up_to_date)
    print(recipe.tag)
    if ws.engine.name == "docker":
        from hutch import stamp
        from hutch.engines.docker import docker_socket

        daemon = docker_socket()
        if daemon is not None:
            message = "" if ws.quiet else up_to_date
            inputs = images.recipe_inputs(ws, project_from_flag=project_from_flag)
            stamp.write(stamp_file, daemon=daemon, tag=recipe.tag, message=message, watched=inputs)
    return 0


def update(ws: Workspace, agent_name: str | None, *, every: bool) -> int:
    if every and agent_name:
        raise UsageError("give an agent or --all, not both", "`hutch update claude` or `hutch update --all`")
    known = all_agents(ws.settings.custom_agents)
    if every:
        names = [name for name in known if ws.pins.get(name) is not None]
        if not names:
            ws.say("no agent has been built yet; nothing to update (`hutch build AGENT` builds one)")
            return 0
    else:
        names = [ws.agent(agent_name).name]
    unanswered: list[str] = []
    failed: list[BuildFailed] = []
    for name in names:
        agent = known[name]
        if agent.pinned_version is not None:
            ws.say(f"{name} is pinned to {agent.pinned_version} by [agents.{name}] version; "
                   "change it there to move it")  # fmt: skip
            continue
        before = ws.pins.get(name)
        try:
            newest = latest_version(agent)
        except LookupFailed as err:
            kept = f"; keeping {before.version}" if before is not None else ""
            ws.warn(f"could not ask the registry for {agent.package} ({err}){kept}")
            unanswered.append(name)
            continue
        # Build first, pin after: a failed build leaves the working image in use.
        recipe = images.recipe_for(ws, agent._replace(pinned_version=newest))
        if before is None:
            ws.say(f"{name}: newest release {newest}")
        elif before.version == newest:
            ws.say(f"{name} {newest} is the newest release")
        else:
            ws.say(f"{name}: {before.version} -> {newest}")
        try:
            built = images.ensure_image(ws, recipe)
        except BuildFailed as err:
            if len(names) == 1:
                raise
            print(f"hutch: {err}", file=sys.stderr)
            failed.append(err)
            continue
        ws.pins.set(name, newest)
        if not built:
            ws.say(f"{recipe.tag} is up to date")
        print(recipe.tag)
    if failed:
        raise BuildFailed(
            f"{len(failed)} of {len(names)} image builds failed (see above)",
            "fix the cause and run `hutch update --all` again; the failed agents keep their images",
        )
    if unanswered:
        raise HutchError(
            f"could not look up the newest release of {', '.join(unanswered)}",
            "check the network or npm_config_registry, then run `hutch update` again",
        )
    return 0


def _newest(agent: AgentDef) -> str | None:
    try:
        return latest_version(agent, timeout=8)
    except LookupFailed:
        return None


def agents(ws: Workspace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    known = all_agents(ws.settings.custom_agents)
    # All registries at once: one slow answer bounds the wait, not the sum.
    with ThreadPoolExecutor(max_workers=len(known)) as pool:
        newest = dict(zip(known, pool.map(_newest, known.values()), strict=True))
    now = time.time()
    engine_error: EngineUnavailable | None = None
    behind: list[str] = []
    rows: list[tuple[str, ...]] = [("AGENT", "PACKAGE", "PINNED", "NEWEST", "IMAGE")]
    for name, agent in known.items():
        pin = ws.pins.get(name)
        latest = newest[name]
        if pin is not None and latest is not None and agent.pinned_version is None:
            # What `hutch run` says about updates comes from here too.
            try:
                ws.pins.seen(name, latest, now)
            except OSError:
                pass  # a read-only state directory only costs the run notice its news
            if latest != pin.version:
                behind.append(name)
        version = agent.pinned_version or (pin.version if pin is not None else None)
        image = "not built"
        if version is not None:
            if engine_error is None:
                recipe = images.recipe_for(ws, agent)  # the pin's version: no lookup
                try:
                    image = recipe.tag if ws.engine.image_id(recipe.tag) else "not built"
                except EngineUnavailable as err:
                    engine_error = err
            if engine_error is not None:
                image = "?"
        marker = "" if agent.builtin else " (config)"
        rows.append((name + marker, f"{agent.install}:{agent.package}", version or "-",
                     latest or "?", image))  # fmt: skip
    print_table(rows)
    sys.stdout.flush()  # the table before the notes below, also when piped
    if any(latest is None for latest in newest.values()):
        ws.say("NEWEST ? : the registry did not answer; check the network or npm_config_registry")
    if engine_error is not None:
        ws.warn(f"image state unknown: {engine_error}")
    if behind:
        which = behind[0] if len(behind) == 1 else "--all"
        ws.say(f"newer releases for {', '.join(behind)}: `hutch update {which}` rebuilds")
    return 0
