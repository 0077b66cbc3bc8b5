"""The Workspace: one project, its settings and its engine, for one command."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NamedTuple

from hutch.errors import SetupFailed, UsageError
from hutch.paths import Dirs, find_project_root, home

if TYPE_CHECKING:
    from hutch.agents import AgentDef
    from hutch.config import Settings
    from hutch.config.load import Layer
    from hutch.engines.base import Engine
    from hutch.image.versions import Pins


class Workspace(NamedTuple):
    dirs: Dirs
    project: str
    cwd: str
    settings: Settings
    engine: Engine
    quiet: bool = False

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"hutch: {message}", file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        # Security-relevant news is printed even with -q.
        print(f"hutch: warning: {message}", file=sys.stderr, flush=True)

    def agent(self, name: str | None) -> AgentDef:
        from hutch.agents import resolve

        return resolve(name or self.settings.agent, self.settings.custom_agents)

    @property
    def pins(self) -> Pins:
        from hutch.image.versions import Pins

        return Pins(os.path.join(self.dirs.state, "versions.json"))


def open_workspace(*, project: str | None, flags: Layer, quiet: bool) -> Workspace:
    """The project (--project, else found from the current directory), its
    settings (user and project config, then the flags) and the engine they name."""
    from hutch.config import load_settings
    from hutch.engines import choose
    from hutch.private import secure_dirs

    cwd = os.getcwd()
    root = find_project_root(cwd, project)
    dirs = Dirs.from_env()
    secure_dirs(dirs)
    settings = load_settings(dirs, root, flags)
    return Workspace(dirs, root, cwd, settings, choose(settings.engine), quiet=quiet)


def check_project(ws: Workspace, *, force: bool) -> None:
    """Refuse / and the home directory as the project, unless forced."""
    if force:
        return
    home_dir = os.path.realpath(home())
    if ws.project == "/":
        raise UsageError(
            "refusing to use / as the project: the sandbox would see the whole machine",
            "run hutch inside a project directory, or pass --force if you really mean it",
        )
    if ws.project == home_dir:
        raise UsageError(
            f"refusing to use your home directory {home_dir} as the project: it holds your keys",
            "run hutch inside a project directory, or pass --force if you really mean it",
        )


def check_mount_sources(ws: Workspace) -> None:
    """Refuse user mounts whose source inside the project passes through a symlink.

    The sandbox writes the project, so a link there may have been planted by an
    earlier session (`data -> ~/.ssh`): following it would widen the mount.
    """
    from hutch.plan import parse_mount

    project = ws.project
    for spec in ws.settings.mounts:
        source = parse_mount(spec, project, home()).source
        if not (source == project or source.startswith(project.rstrip("/") + "/")):
            continue
        current = project
        for part in [p for p in os.path.relpath(source, project).split("/") if p not in ("", ".")]:
            current = os.path.join(current, part)
            if os.path.islink(current):
                raise SetupFailed(
                    f"mount {spec!r}: {current} is a symlink inside the project; refused, "
                    "as a sandbox could have planted it",
                    "mount the real directory by its own path, outside the project",
                )
