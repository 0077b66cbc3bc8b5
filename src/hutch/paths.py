"""Where hutch keeps its files on the host, and how it finds the project root.

Paths are plain strings (os.path), as on the rest of the run path.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from hutch.errors import UsageError

CONFIG_NAME = "hutch.toml"


def home() -> str:
    return os.path.expanduser("~")


def _xdg(var: str, fallback: str) -> str:
    value = os.environ.get(var, "")
    # The XDG spec says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return value
    return os.path.join(home(), fallback)


class Dirs(NamedTuple):
    config: str
    data: str
    state: str

    @classmethod
    def from_env(cls) -> Dirs:
        return cls(
            config=os.path.join(_xdg("XDG_CONFIG_HOME", ".config"), "hutch"),
            data=os.path.join(_xdg("XDG_DATA_HOME", ".local/share"), "hutch"),
            state=os.path.join(_xdg("XDG_STATE_HOME", ".local/state"), "hutch"),
        )

    @property
    def user_config(self) -> str:
        return os.path.join(self.config, "config.toml")

    def agent_home(self, agent: str) -> str:
        return os.path.join(self.data, "homes", agent)

    def sessions(self) -> str:
        return os.path.join(self.state, "sessions")


def ancestors(path: str) -> list[str]:
    """path and each directory above it, up to /: Path(path) and its .parents."""
    found = [path]
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return found
        found.append(parent)
        path = parent


def find_project_root(cwd: str, explicit: str | None) -> str:
    """--project, else nearest ancestor with hutch.toml, else git top level, else cwd."""
    if explicit is not None:
        root = os.path.join(cwd, os.path.expanduser(explicit))
        if not os.path.isdir(root):
            raise UsageError(
                f"project directory {root} does not exist",
                "pass an existing directory to --project",
            )
        return os.path.realpath(root)
    here = os.path.realpath(cwd)
    for candidate in ancestors(here):
        if os.path.isfile(os.path.join(candidate, CONFIG_NAME)):
            return candidate
    for candidate in ancestors(here):
        # A .git file (worktree or submodule) marks a top level as well.
        if os.path.exists(os.path.join(candidate, ".git")):
            return candidate
    return here


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def replace_text(
    path: str, text: str, *, mode: int | None = None, dir_mode: int = 0o777, errors: str = "strict"
) -> None:
    """Write path whole, through a temporary file beside it: a reader (another
    hutch, another thread) sees the old content or the new, never a torn file.
    Missing directories above it are made with dir_mode; mode, when given, is
    the file's. The temporary file is removed when the write fails."""
    import threading

    os.makedirs(os.path.dirname(path), mode=dir_mode, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"  # unique per process and thread
    try:
        with open(tmp, "w", encoding="utf-8", errors=errors) as handle:
            handle.write(text)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def touch(path: str, mode: int = 0o666) -> None:
    """Set path's times to now, creating it (with mode) when missing, as Path.touch."""
    try:
        os.utime(path)
    except FileNotFoundError:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, mode))


def touch_in(path: str) -> None:
    """touch, creating the missing directories above path first."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    touch(path)
