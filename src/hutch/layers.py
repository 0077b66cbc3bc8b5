"""Copy-on-write layers: a host directory seen through an engine-mounted overlay.

The sandbox sees the host directory (the lower layer, never written) merged
with an upper directory that hutch keeps under its state dir: every write the
sandbox makes lands in the upper. After the session hutch reads the upper —
work that grows with the change, not with the tree — and decides what reaches
the host. The `.git` allowlist uses one; review mode will use another.

Both engines mount the overlay themselves, with user xattrs (`userxattr`), so
that hutch can read the upper without privileges: a deletion is a whiteout (a
0/0 character device; `.wh.NAME` files from fuse-overlayfs are understood
too), a directory deleted and made again is marked opaque
(`user.overlay.opaque`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from typing import Literal, NamedTuple

EntryKind = Literal["file", "dir", "link", "whiteout", "other"]

MARK_XATTR = "user.hutch.layer"

# How many sessions may hold a layer's work directory at once, per user.
WORK_SLOTS = 256
_WH_PREFIX = ".wh."
_WH_OPAQUE = ".wh..wh..opq"
_OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque")


class Layer(NamedTuple):
    """One overlay: ``lower`` is how the engine reaches the host directory
    (a path, or /proc/PID/fd/N for an opened one), ``upper`` and ``work`` are
    hutch's, ``target`` is where the sandbox sees the merged tree."""

    lower: str
    upper: str
    work: str
    target: str


class Entry(NamedTuple):
    """One path in a layer's upper directory, relative to it (POSIX form)."""

    rel: str
    kind: EntryKind
    mode: int = 0
    size: int = 0
    # A directory that hides what the lower layer had under it.
    opaque: bool = False


class WorkSlot:
    """A work directory for one mounted overlay, held (flock) for a session.

    The kernel leaves a root-owned `work/` inside it when Docker (as root)
    mounted the overlay, which an ordinary user cannot delete; a slot is
    therefore reused by later sessions (the kernel empties it at each mount)
    rather than made anew each time.
    """

    def __init__(self, path: str, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    @classmethod
    def acquire(cls, base: str) -> WorkSlot:
        os.makedirs(base, mode=0o700, exist_ok=True)
        for slot in range(WORK_SLOTS):
            lock = os.path.join(base, f"{slot}.lock")
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            path = os.path.join(base, str(slot))
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            return cls(path, fd)
        raise OSError(errno.EBUSY, f"all {WORK_SLOTS} layer work directories are in use", base)

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def check_option_path(path: str) -> None:
    """Overlay options are a comma-separated list, and Podman's -v splits on ':':
    such characters in hutch's own state path would change the mount."""
    if any(c in path for c in ",:\\\n"):
        raise ValueError(f"{path!r} holds ',', ':' or '\\', which overlay mount options cannot carry")


def make_upper(base: str) -> str:
    """A fresh, empty upper directory at base/upper (base is per session)."""
    os.makedirs(base, mode=0o700, exist_ok=True)
    upper = os.path.join(base, "upper")
    os.mkdir(upper, 0o700)
    return upper


def mark(upper: str) -> bytes | None:
    """Give the upper directory a random mark, which the merged directory
    shows (an overlay passes the upper's own xattrs through), so that the
    mounted layer can be recognised whatever inode number the overlay gives
    its root (its own, when the layers are on different file systems).
    None when the upper's file system keeps no user xattrs."""
    token = secrets.token_hex(16).encode()
    try:
        os.setxattr(upper, MARK_XATTR, token, follow_symlinks=False)
    except OSError:
        return None
    return token


def marked(fd: int) -> bytes | None:
    """The mark of the directory open as fd (O_PATH will do), or None."""
    try:
        return os.getxattr(f"/proc/self/fd/{fd}", MARK_XATTR)
    except OSError:
        return None


def read(upper: str) -> Iterator[Entry]:
    """Every path in an upper directory, parents before children, without
    following links. Whiteouts come out as kind "whiteout" under the name
    they delete, whichever way the overlay wrote them."""
    top = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield from _read_dir(top, "")
    finally:
        os.close(top)


def _read_dir(fd: int, prefix: str) -> Iterator[Entry]:
    with os.scandir(fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name = entry.name
        if name == _WH_OPAQUE:
            continue
        if name.startswith(_WH_PREFIX):
            yield Entry(prefix + name[len(_WH_PREFIX) :], "whiteout")
            continue
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        rel = prefix + name
        if stat.S_ISCHR(mode) and st.st_rdev == 0:
            yield Entry(rel, "whiteout")
        elif stat.S_ISDIR(mode):
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                yield Entry(rel, "dir", stat.S_IMODE(mode), 0, False)
                continue
            try:
                opaque = _opaque(child)
                if not opaque:
                    with os.scandir(child) as inner:
                        opaque = any(e.name == _WH_OPAQUE for e in inner)
                yield Entry(rel, "dir", stat.S_IMODE(mode), 0, opaque)
                yield from _read_dir(child, rel + "/")
            finally:
                os.close(child)
        elif stat.S_ISREG(mode):
            yield Entry(rel, "file", stat.S_IMODE(mode), st.st_size)
        elif stat.S_ISLNK(mode):
            yield Entry(rel, "link", 0, st.st_size)
        else:
            yield Entry(rel, "other", stat.S_IMODE(mode))


def _opaque(fd: int) -> bool:
    for name in _OPAQUE_XATTRS:
        try:
            value = os.getxattr(fd, name)
        except OSError:
            continue
        if value in (b"y", b"x"):
            return True
    return False


def discard(base: str) -> None:
    """Remove a session's layer directory (its upper), never following links.
    Whiteouts are root's on Docker but sit in the user's directories, so the
    user may remove them."""
    shutil.rmtree(base, ignore_errors=True)


def doctor_check() -> tuple[str, str, str]:
    """(state, what, fix) for `hutch doctor`: the kernel's overlay must take
    user xattrs (Linux 5.11) for the .git layer."""
    release = os.uname().release
    try:
        major, minor = (int(part) for part in release.split(".")[:2])
    except ValueError:
        return ("warn", f"kernel {release}: cannot tell whether overlay takes user xattrs (.git layer)", "")
    if (major, minor) >= (5, 11):
        return ("ok", f"kernel {release}: copy-on-write layers (.git) can be mounted", "")
    return (
        "fail",
        f"kernel {release}: overlay without user xattrs; the .git layer needs Linux 5.11 or newer",
        "upgrade the kernel",
    )
