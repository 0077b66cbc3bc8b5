"""`hutch build` when nothing changed, answered without loading the configuration.

A full `hutch build` on Docker leaves a stamp: each file whose state went into
its answer (the config files, the project-root search, the pins, the CA
certificates, the recipe code) with its device, inode, size, mtime and ctime,
and the answer itself. The next `hutch build` from the same directory, with
the same arguments and environment, restats those paths; when every one
matches and the Docker daemon confirms that the image exists, it repeats the
answer. Anything else (an edited or new file, another engine, a removed image)
takes the full path, which leaves a fresh stamp.

Why: Python's start-up plus loading the configuration costs several times a
`docker image inspect`; this module needs nothing beyond os.
"""

from __future__ import annotations

import os
from hashlib import sha256

from hutch import __version__

FORMAT = "hutch-stamp-1"
# What else decides the answer: where config and state live, which engine.
KEY_ENVIRONMENT = (
    "HOME", "PATH", "HUTCH_ENGINE", "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG",
    "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME",
)  # fmt: skip
ABSENT = "-"


def signature(path: str) -> str:
    """What changes whenever the file does (ctime cannot be set back), or ABSENT."""
    try:
        st = os.stat(path)
    except OSError:
        return ABSENT
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def exists(path: str) -> str:
    """For paths whose presence alone matters (a .git marks a project root).
    Followed as hutch.paths.find_project_root follows it: a dangling link is absent."""
    return "present" if os.path.exists(path) else ABSENT


def _state(kind: str, path: str) -> str:
    return signature(path) if kind == "file" else exists(path)


def stamps_dir() -> str:
    """Where stamps live: under hutch's state directory."""
    from hutch.paths import Dirs

    return os.path.join(Dirs.from_env().state, "stamps")


def stamp_path(args: list[str], cwd: str) -> str:
    """The stamp for this command line, run from cwd in this environment."""
    env = [f"{name}={os.environ.get(name, '')}" for name in KEY_ENVIRONMENT]
    key = "\0".join([FORMAT, __version__, cwd, *args, *env])
    digest = sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(stamps_dir(), digest)


def write(
    path: str, *, daemon: str, tag: str, message: str, watched: list[tuple[str, str]]
) -> None:
    """Record an answer and what it depended on: (path, "file" or "exists") pairs.

    Best effort: without a stamp the next build takes the full path.
    """
    fields = [FORMAT, daemon, tag, message]
    for watched_path, kind in watched:
        fields += [kind, watched_path, _state(kind, watched_path)]
    if any("\0" in field for field in fields):
        return
    from hutch.paths import replace_text  # not on the up-to-date path, which only reads

    try:
        replace_text(path, "\0".join(fields), errors="surrogateescape")
    except OSError:
        pass


def check(path: str) -> tuple[str, str] | None:
    """(message, tag) when the stamp still holds, else None."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            fields = handle.read().split("\0")
    except OSError:
        return None
    if len(fields) < 4 or fields[0] != FORMAT or (len(fields) - 4) % 3:
        return None
    daemon, tag, message = fields[1:4]
    for at in range(4, len(fields), 3):
        kind, watched_path, recorded = fields[at : at + 3]
        if _state(kind, watched_path) != recorded:
            return None
    if not image_exists(daemon, tag):
        return None
    return message, tag


def image_exists(daemon: str, tag: str) -> bool:
    """Ask the Docker daemon directly: what `docker image inspect TAG` would say."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(daemon)
        sock.sendall(f"GET /images/{tag}/json HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        head = sock.recv(16)
    except OSError:
        return False
    finally:
        sock.close()
    return head.startswith((b"HTTP/1.0 200 ", b"HTTP/1.1 200 "))
