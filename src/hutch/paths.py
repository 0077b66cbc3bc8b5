"""Where hutch keeps its files on the host, and how it finds the project root."""

from __future__ import annotations

import os
from pathlib import Path

from hutch.errors import UsageError
from hutch.records import NamedTuple

CONFIG_NAME = "hutch.toml"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    # The XDG spec says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


class Dirs(NamedTuple):
    config: Path
    data: Path
    state: Path
    cache: Path

    @classmethod
    def from_env(cls) -> Dirs:
        return cls(
            config=_xdg("XDG_CONFIG_HOME", ".config") / "hutch",
            data=_xdg("XDG_DATA_HOME", ".local/share") / "hutch",
            state=_xdg("XDG_STATE_HOME", ".local/state") / "hutch",
            cache=_xdg("XDG_CACHE_HOME", ".cache") / "hutch",
        )

    @property
    def user_config(self) -> Path:
        return self.config / "config.toml"

    def agent_home(self, agent: str) -> Path:
        return self.data / "homes" / agent

    def sessions(self) -> Path:
        return self.state / "sessions"


def find_project_root(cwd: Path, explicit: Path | None) -> Path:
    """--project, else nearest ancestor with hutch.toml, else git top level, else cwd."""
    if explicit is not None:
        root = explicit.expanduser()
        if not root.is_absolute():
            root = cwd / root
        if not root.is_dir():
            raise UsageError(
                f"project directory {root} does not exist",
                "pass an existing directory to --project",
            )
        return Path(os.path.realpath(root))
    here = Path(os.path.realpath(cwd))
    for candidate in (here, *here.parents):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    for candidate in (here, *here.parents):
        # A .git file (worktree or submodule) marks a top level as well.
        if (candidate / ".git").exists():
            return candidate
    return here
