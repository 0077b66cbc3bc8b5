"""hutch's own files on the host are the user's alone.

The state and data directories are 0700 and what hutch writes in them 0600
(records, trust, pins, stamps, identity files); an install from before this
rule gets its modes fixed once, on its next run. A session's runtime directory
(the host side of /run/hutch: the proxy socket and the env file) lives where
only the user can create names: `$XDG_RUNTIME_DIR` when it is the user's own
and private, else a 0700 directory under the state directory. Never a
guessable name in a directory others can write, such as /tmp: another local
user could create it first, or plant one for `hutch gc` to remove.
"""

from __future__ import annotations

import os
import socket
import stat
from typing import TYPE_CHECKING

from hutch.errors import SetupFailed

if TYPE_CHECKING:
    from hutch.paths import Dirs

DIR_MODE = 0o700
FILE_MODE = 0o600
# Written once the modes of an existing install have been fixed.
FIXED = "modes-fixed-1"
RUNTIME_SUBDIR = "run"


def _runtime_prefix() -> str:
    return f"hutch-{os.getuid()}-"


def is_private_dir(path: str) -> bool:
    """A directory of the user's own that nobody else can enter or write."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _tighten(path: str, st: os.stat_result) -> None:
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)


def secure_dirs(dirs: Dirs) -> None:
    """Make the state and data directories 0700 (creating them); the first
    time, also take group and other bits off what an older hutch left in them.
    Best effort: where it cannot (a read-only or foreign directory), the write
    that needs the directory fails with its own message, and `hutch doctor`
    names a directory that is not private."""
    try:
        _secure(dirs)
    except OSError:
        pass


def _secure(dirs: Dirs) -> None:
    for top in (dirs.state, dirs.data):
        os.makedirs(top, mode=DIR_MODE, exist_ok=True)
        _tighten(top, os.stat(top))
    marker = os.path.join(dirs.state, FIXED)
    if os.path.exists(marker):
        return
    _fix_tree(dirs.state)
    _fix_tree(os.path.join(dirs.data, "identity"))
    # Agent homes and caches: the directories; what is in them is the agent's.
    for area in ("homes", "caches"):
        root = os.path.join(dirs.data, area)
        for entry in _entries(root):
            if entry.is_dir(follow_symlinks=False):
                _tighten(entry.path, entry.stat(follow_symlinks=False))
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, FILE_MODE))


def _entries(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as found:
            return list(found)
    except OSError:
        return []


def _fix_tree(root: str) -> None:
    """Group and other bits off every directory and file below root; links are
    neither followed nor changed."""
    for directory, subdirs, files in os.walk(root):
        _tighten(directory, os.lstat(directory))
        for name in files + subdirs:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                _tighten(path, st)


# -- runtime directories ---------------------------------------------------------


def runtime_bases(dirs: Dirs) -> list[str]:
    """Where runtime directories may live, the preferred one first; both are
    swept by `hutch gc`, as XDG_RUNTIME_DIR can differ between logins."""
    found = []
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg) and is_private_dir(xdg):
        found.append(xdg)
    found.append(os.path.join(dirs.state, RUNTIME_SUBDIR))
    return found


def make_runtime_dir(dirs: Dirs, session: str) -> str:
    """The host side of /run/hutch for one session: a new 0700 directory in a
    directory only the user can write. Its socket path may pass the ~107 bytes
    a Unix socket address holds: the proxy binds it through a short alias
    (hutch.egress.listener)."""
    base = runtime_bases(dirs)[0]
    if base == os.path.join(dirs.state, RUNTIME_SUBDIR):
        os.makedirs(base, mode=DIR_MODE, exist_ok=True)
        if not is_private_dir(base):
            raise SetupFailed(
                f"{base} is not a directory of your own that only you can enter",
                f"remove it, or make it yours with mode 0700 (chmod 700 {base})",
            )
    path = os.path.join(base, _runtime_prefix() + session)
    os.mkdir(path, mode=DIR_MODE)
    return path


def is_runtime_dir(dirs: Dirs, path: str) -> bool:
    """Whether path names a runtime directory of this user's, where hutch puts
    them (so that a record pointing elsewhere removes nothing)."""
    parent, name = os.path.split(path)
    return name.startswith(_runtime_prefix()) and parent in runtime_bases(dirs)


def stale_runtime_dirs(dirs: Dirs, live: set[str]) -> list[str]:
    """Runtime directories whose session is not among live."""
    prefix = _runtime_prefix()
    return [
        entry.path
        for base in runtime_bases(dirs)
        for entry in _entries(base)
        if entry.name.startswith(prefix)
        and entry.is_dir(follow_symlinks=False)
        and entry.name[len(prefix) :] not in live
    ]


# A Unix socket's path must fit in sun_path (108 bytes with its final NUL).
SUN_PATH_MAX = 107


def bind_unix(sock: socket.socket, path: str) -> None:
    """Bind sock to path, even a path longer than an address holds: then
    through the directory's descriptor (/proc/self/fd/N/NAME), whose name is
    short wherever the directory is."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        sock.bind(path)
        return
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.bind(f"/proc/self/fd/{fd}/{os.path.basename(path)}")
    finally:
        os.close(fd)
