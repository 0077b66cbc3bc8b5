"""The start gate: nothing runs in the sandbox until hutch has checked its mounts.

An engine mounts a bind source by its name, after hutch planned it. Another
session of the same project can rename and swap paths in that moment (an
atomic rename exchange puts a symlink to `~/.ssh` where `.vscode` was), and
the engine then mounts what the name points at by then — or puts a mask in the
wrong place. Checking a name beforehand cannot close that; checking the result
can. The sandbox's entrypoint waits at a Unix socket in its runtime dir before
it runs anything. hutch learns the waiting process from the socket's peer
credentials, looks at the sandbox's mount namespace through
`/proc/PID/root` — every planned target reached without following a link, its
device and inode those of the source hutch opened, read-only where planned —
and only then answers "go". Anything else and the entrypoint exits 125.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading
from collections.abc import Callable
from typing import NamedTuple

from hutch import layers
from hutch.private import bind_unix

SOCKET_NAME = "gate.sock"
GO = b"go\n"
STOP = b"stop\n"


class Expect(NamedTuple):
    """One mount as hutch planned it: what ``target`` (inside the sandbox)
    must be. ``dev`` is None where the engine's own file system shows through
    (an overlay), so that only the inode is compared."""

    target: str
    ino: int
    dev: int | None
    readonly: bool
    what: str
    # A copy-on-write layer's mark (hutch.layers.mark): compared instead of
    # the inode, which an overlay over two file systems makes up.
    mark: bytes | None = None


class Pinned(NamedTuple):
    dev: int
    ino: int


def pin(root_fd: int, rel: str) -> Pinned | None:
    """The device and inode of root/rel, reached without following any link;
    None when a component is missing or is a link."""
    fd = open_beneath(root_fd, rel)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if stat.S_ISLNK(st.st_mode):
        return None
    return Pinned(st.st_dev, st.st_ino)


def open_beneath(root_fd: int, rel: str) -> int | None:
    """An O_PATH descriptor of root/rel, each component opened without
    following links (a link as the last component is opened as the link)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    current = os.dup(root_fd)
    try:
        for index, part in enumerate(parts):
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
            if index < len(parts) - 1:
                flags |= os.O_DIRECTORY
            try:
                nxt = os.open(part, flags, dir_fd=current)
            except OSError:
                return None
            os.close(current)
            current = nxt
        result, current = current, -1
        return result
    finally:
        if current != -1:
            os.close(current)


def verify(pid: int, expects: list[Expect]) -> str | None:
    """None when every expectation holds in the mount namespace of pid;
    otherwise what did not."""
    try:
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        return f"cannot look into the sandbox (pid {pid}): {err.strerror}"
    try:
        for expect in expects:
            fd = open_beneath(root, expect.target)
            if fd is None:
                return f"{expect.what}: {expect.target} is missing or reached through a link"
            try:
                st = os.fstat(fd)
                readonly = bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)
                mark = layers.marked(fd) if expect.mark is not None else None
            finally:
                os.close(fd)
            if expect.mark is not None:
                same = stat.S_ISDIR(st.st_mode) and mark == expect.mark
            else:
                same = st.st_ino == expect.ino and (expect.dev is None or st.st_dev == expect.dev)
            if not same:
                return f"{expect.what}: {expect.target} is not what hutch planned to mount there"
            if expect.readonly and not readonly:
                return f"{expect.what}: {expect.target} is not read-only"
    finally:
        os.close(root)
    return None


class Gate:
    """The listening socket in a session's runtime dir and the thread that
    answers the sandbox's one connection."""

    def __init__(self, runtime_dir: str) -> None:
        self.path = os.path.join(runtime_dir, SOCKET_NAME)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            bind_unix(self._sock, self.path)
        finally:
            os.umask(old)
        self._sock.listen(1)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.failure: str | None = None
        self.opened = threading.Event()

    def serve(self, check: Callable[[int], str | None]) -> None:
        """Answer the sandbox in a thread: ``check(pid)`` decides (None: go).
        The answer waits for :meth:`ready`."""
        self._thread = threading.Thread(target=self._answer, args=(check,), name="hutch-gate", daemon=True)
        self._thread.start()

    def ready(self) -> None:
        """Everything the sandbox needs outside it is up (the egress proxy)."""
        self._ready.set()

    def _answer(self, check: Callable[[int], str | None]) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return  # closed: the session ended before the sandbox asked
        with conn:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid = struct.unpack("3i", creds)[0]
            if pid <= 0:
                self.failure = "the sandbox runs in a PID namespace hutch cannot see into"
            else:
                self.failure = check(pid)
            self._ready.wait()
            try:
                conn.sendall(STOP if self.failure else GO)
            except OSError:
                return
            if not self.failure:
                self.opened.set()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def close(self) -> None:
        self._ready.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            os.unlink(self.path)
        except OSError:
            pass
