"""The agent images: what a recipe is made of, and making sure its image exists.

Rendering the recipe is pure (hutch.image.recipe); this module gathers its
inputs from the host (the agent's pinned version, CA certificates), asks the
engine whether the image exists, and builds it with visible progress and a
useful failure.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING

from hutch import process
from hutch.errors import BuildFailed, ConfigError, EngineUnavailable
from hutch.image.recipe import Recipe, render
from hutch.paths import CONFIG_NAME, ancestors, read_regular, touch_in

if TYPE_CHECKING:
    from collections.abc import Callable

    from hutch.agents import AgentDef
    from hutch.engines.base import Engine
    from hutch.workspace import Workspace

HOST_CA_DIR = "/usr/local/share/ca-certificates"
# A build step's first line, in the classic builder's, BuildKit's and Podman's words.
STEP = r"^(Step \d+/\d+ : .*|#\d+ \[[^\]]+\] .*|STEP \d+/\d+: .*)$"
TAIL_LINES = 30


# -- the recipe's inputs -----------------------------------------------------------


def _ca_paths(ws: Workspace) -> list[str]:
    setting = ws.settings.ca_certificates
    if setting == "none":
        return []
    if setting == "host":
        # Every *.crt below it, in path order; links to directories are not followed.
        found = [
            os.path.join(root, name)
            for root, _, names in os.walk(HOST_CA_DIR)
            for name in names
            if name.endswith(".crt") and os.path.isfile(os.path.join(root, name))
        ]
        return sorted(found, key=lambda path: path.split("/"))
    assert isinstance(setting, tuple)
    return [os.path.expanduser(p) if p.startswith("~") else os.path.join(ws.project, p) for p in setting]


def ca_files(ws: Workspace) -> tuple[tuple[str, bytes], ...]:
    found: list[tuple[str, bytes]] = []
    for path in _ca_paths(ws):
        try:
            content = read_regular(path)
        except OSError as err:
            raise ConfigError(
                f"[image] ca_certificates: cannot read {path}: {err.strerror}",
                "name PEM files that exist, relative to the project root",
            ) from err
        if b"-----BEGIN CERTIFICATE-----" not in content:
            raise ConfigError(f"[image] ca_certificates: {path} holds no PEM certificate")
        found.append((os.path.basename(path), content))
    return tuple(found)


def agent_version(ws: Workspace, agent: AgentDef, *, refresh: bool = False) -> str:
    if agent.pinned_version:
        return agent.pinned_version
    pin = ws.pins.get(agent.name)
    if pin is not None and not refresh:
        return pin.version
    from hutch.image.versions import LookupFailed, latest_version

    try:
        version = latest_version(agent)
    except LookupFailed as err:
        if pin is not None:
            ws.say(f"could not ask the registry for {agent.package} ({err}); keeping {pin.version}")
            return pin.version
        ws.say(f"could not ask the registry for {agent.package} ({err}); installing its latest")
        return "latest"
    try:
        ws.pins.set(agent.name, version)
    except OSError as err:
        ws.warn(f"cannot pin {agent.package} {version} in {ws.pins.path} ({err.strerror}): make room there; "
                "the registry is asked again next time")  # fmt: skip
    return version


def recipe_inputs(ws: Workspace, *, project_from_flag: bool) -> list[tuple[str, str]]:
    """Every path whose state decides this workspace's recipe tag, for hutch.stamp:
    (path, "file") when its content counts, (path, "exists") when its presence does."""
    from hutch.engines.docker import docker_config_file

    watched = [(ws.dirs.user_config, "file"), (os.path.join(ws.dirs.state, "versions.json"), "file"),
               (docker_config_file(), "file")]  # fmt: skip
    if project_from_flag:
        watched.append((os.path.join(ws.project, CONFIG_NAME), "file"))
    else:  # the project-root search (hutch.paths.find_project_root), the project's file among them
        for directory in ancestors(os.path.realpath(ws.cwd)):
            watched += [(os.path.join(directory, CONFIG_NAME), "file"),
                        (os.path.join(directory, ".git"), "exists")]  # fmt: skip
    if ws.settings.ca_certificates == "host":  # a certificate added or removed changes a directory
        watched += [(root, "file") for root, _, _ in os.walk(HOST_CA_DIR)]
    watched += [(path, "file") for path in _ca_paths(ws)]
    code = os.path.dirname(__file__)
    for name in ("image/recipe.py", "image/entrypoint.sh", "agents/__init__.py", "config/schema.py"):
        watched.append((os.path.join(code, name), "file"))
    return watched


def recipe_for(ws: Workspace, agent: AgentDef, *, refresh: bool = False) -> Recipe:
    s = ws.settings
    return render(
        agent,
        agent_version(ws, agent, refresh=refresh),
        s.base,
        packages=s.packages,
        npm=s.npm,
        pip=s.pip,
        ca_files=ca_files(ws),
    )


# -- the image ---------------------------------------------------------------------


def _marker(ws: Workspace, recipe: Recipe) -> str:
    # Per engine: an image built by Docker is not in Podman's storage.
    return os.path.join(ws.dirs.state, "images", ws.engine.name, recipe.digest)


def ensure_image(
    ws: Workspace, recipe: Recipe, *, force: bool = False, no_cache: bool = False, ask: bool = False
) -> bool:
    """Make sure recipe.tag exists; returns True when a build ran.

    A launch trusts the marker of an earlier build (a launch that finds the
    image gone rebuilds, see hutch.commands.run.launch); with ask, the engine
    is asked every time.
    """
    from hutch import trust

    # Whatever builds an image honours the project file's trust: [image] and
    # [agents.*] run code at build time.
    trust.check(ws.dirs, ws.project, ws.settings.merged)
    marker = _marker(ws, recipe)
    if not force and not no_cache:
        if os.path.exists(marker) and not ask:
            return False
        if ws.engine.image_id(recipe.tag):
            _mark(marker)
            return False
    build(ws.engine, recipe, log_dir=os.path.join(ws.dirs.state, "builds"), no_cache=no_cache,
          quiet=ws.quiet, proxy=ws.settings.build_proxy)  # fmt: skip
    _mark(marker)
    return True


def _mark(marker: str) -> None:
    # A cache of "this image was seen": where it cannot be written (a full or
    # read-only state dir), the engine is asked again next time.
    with contextlib.suppress(OSError):
        touch_in(marker)


def forget_image(ws: Workspace, recipe: Recipe) -> None:
    try:
        os.unlink(_marker(ws, recipe))
    except FileNotFoundError:
        pass


def write_context(recipe: Recipe, directory: str) -> None:
    """The build context: the Dockerfile and the files it copies in."""
    with open(os.path.join(directory, "Dockerfile"), "w", encoding="utf-8") as handle:
        handle.write(recipe.dockerfile)
    for item in recipe.files:
        path = os.path.join(directory, item.path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(item.content)
        os.chmod(path, item.mode)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def build(
    engine: Engine,
    recipe: Recipe,
    *,
    log_dir: str,
    no_cache: bool = False,
    quiet: bool = False,
    out: Callable[[str], None] | None = None,
    proxy: bool = False,
) -> None:
    """Build recipe.tag; raise BuildFailed naming the failed step, with the log tail.
    The host's proxy variables reach the build only with proxy."""
    import re
    import tempfile
    from collections import deque

    step_line = re.compile(STEP)
    emit = out or (lambda line: print(line, file=sys.stderr, flush=True))
    buildkit = engine.has_buildkit()
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    log_path = os.path.join(log_dir, f"{recipe.tag.replace(':', '-').replace('/', '-')}.log")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    step = ""
    started = time.monotonic()
    if not quiet:
        builder = "BuildKit" if buildkit else "classic builder"
        emit(f"hutch: building {recipe.tag} ({recipe.agent} {recipe.agent_version}, {builder})")
    with tempfile.TemporaryDirectory(prefix="hutch-build-") as context, \
            open(log_path, "w", encoding="utf-8", opener=_private) as log:  # fmt: skip
        write_context(recipe, context)
        command = engine.build_command(
            recipe.tag,
            context,
            labels={"io.hutch.recipe": recipe.digest},
            no_cache=no_cache,
            buildkit=buildkit,
            proxy=proxy,
        )

        def on_line(line: str) -> None:
            nonlocal step
            log.write(line + "\n")
            tail.append(line)
            is_step = step_line.match(line) is not None
            if is_step:
                step = line
            if not quiet:
                emit(f"hutch: {line}" if is_step else f"  {line}")

        env = {k: v for k, v in os.environ.items() if k not in command.unset}
        env.update(command.env)
        try:
            status = process.stream(command.argv, on_line, env=env)
        except FileNotFoundError as err:
            raise EngineUnavailable(
                f"{engine.binary} is not installed (not found on PATH)", engine.install_hint
            ) from err
    if status != 0:
        text = "\n".join(tail)
        engine.raise_if_unavailable(text)
        if quiet:
            for line in tail:
                emit(f"  {line}")
        else:
            emit("hutch: last lines of the build log:")
            for line in list(tail)[-12:]:
                emit(f"  {line}")
        raise BuildFailed(
            f"image build failed at {step or 'the first step'} (exit {status})",
            f"full log: {log_path}; fix the cause (a package name in [image], the network, "
            "the base image) and run `hutch build` again",
        )
    if not quiet:
        emit(f"hutch: built {recipe.tag} in {time.monotonic() - started:.0f}s")
