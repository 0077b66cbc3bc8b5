"""Where hutch keeps its files on the host, and how it finds the project root.

Paths are plain strings (os.path), as on the rest of the run path.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, NamedTuple

from hutch.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

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


def others_can_write(st: os.stat_result) -> bool:
    """Whether someone besides the file's owner (and root) may change it.

    Group write counts unless the group is the user's own private group
    (Debian's default: a group of the user's name with no other members)."""
    if st.st_mode & 0o002:
        return True
    if not st.st_mode & 0o020:
        return False
    import grp
    import pwd

    try:
        group = grp.getgrgid(st.st_gid)
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        return True
    return st.st_gid != os.getegid() or any(member != user for member in group.gr_mem)


def unsafe_reason(path: str, uid: int) -> str | None:
    """Why path may not decide anything for this user, or None when it may:
    it must be the user's own and writable by no one else (git's safe.directory
    rule, with writable-by-others added: a sticky /tmp lets anyone create names)."""
    try:
        st = os.stat(path)
    except OSError as err:
        return f"cannot check it ({err.strerror})"
    if st.st_uid != uid:
        return f"it belongs to uid {st.st_uid}, not to you (uid {uid})"
    if others_can_write(st):
        return "others can write it"
    return None


def _safe_marker(directory: str, name: str, uid: int, ignored: Callable[[str], None]) -> bool:
    """Whether directory/name exists and may mark the project root."""
    marker = os.path.join(directory, name)
    if not os.path.exists(marker):  # a dangling link is absent, as it always was
        return False
    for path in (directory, marker):
        reason = unsafe_reason(path, uid)
        if reason is not None:
            ignored(f"ignoring {marker}: {path} is not safe ({reason}); "
                    "only markers that you alone control choose the project")  # fmt: skip
            return False
    return True


def _warn(message: str) -> None:
    # Security-relevant: said even with -q, as the session's other warnings are.
    import sys

    print(f"hutch: warning: {message}", file=sys.stderr, flush=True)


def find_project_root(
    cwd: str, explicit: str | None, ignored: Callable[[str], None] = _warn, uid: int | None = None
) -> str:
    """--project, else nearest ancestor with hutch.toml, else git top level, else cwd.

    A hutch.toml or .git that another user could have put there (their own, or
    in a directory others can write, such as /tmp) is passed over: one line
    through `ignored` says so for each."""
    if explicit is not None:
        root = os.path.join(cwd, os.path.expanduser(explicit))
        if not os.path.isdir(root):
            raise UsageError(
                f"project directory {root} does not exist",
                "pass an existing directory to --project",
            )
        return os.path.realpath(root)
    user = os.geteuid() if uid is None else uid
    here = os.path.realpath(cwd)
    for candidate in ancestors(here):
        if _safe_marker(candidate, CONFIG_NAME, user, ignored):
            return candidate
    for candidate in ancestors(here):
        # A .git file (worktree or submodule) marks a top level as well.
        if _safe_marker(candidate, ".git", user, ignored):
            return candidate
    return here


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


class NotRegular(OSError):
    """A path that should hold a file holds something else (a FIFO, a device, a directory)."""


def read_regular(path: str, limit: int = -1, *, follow: bool = True) -> bytes:
    """A regular file's bytes (up to limit). Anything else raises NotRegular
    instead of being read: opening a FIFO for reading would wait for a writer
    forever, and the open does not block here (O_NONBLOCK) whatever the path
    turns out to be. Not following a link (follow=False) raises OSError too."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit)
    finally:
        os.close(fd)


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def replace_text(
    path: str, text: str, *, mode: int = 0o600, dir_mode: int = 0o700, errors: str = "strict"
) -> None:
    """Write path whole, through a temporary file beside it: a reader (another
    hutch, another thread) sees the old content or the new, never a torn file.
    Missing directories above it are made with dir_mode; the file gets mode
    (hutch's own files are the user's alone). The temporary file is removed
    when the write fails."""
    import threading

    os.makedirs(os.path.dirname(path), mode=dir_mode, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"  # unique per process and thread
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8", errors=errors) as handle:
            handle.write(text)
        os.chmod(tmp, mode)  # whatever the umask took off
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_private(path: str, text: str) -> None:
    """Create or overwrite one of hutch's own files: 0600, in 0700 directories,
    whole or not at all (a full disk leaves the old file or none, never a torn one)."""
    replace_text(path, text)


def touch(path: str, mode: int = 0o666) -> None:
    """Set path's times to now, creating it (with mode) when missing, as Path.touch."""
    try:
        os.utime(path)
    except FileNotFoundError:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, mode))


def touch_in(path: str) -> None:
    """touch for hutch's own markers: 0600, the missing directories above it 0700."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    touch(path, mode=0o600)
