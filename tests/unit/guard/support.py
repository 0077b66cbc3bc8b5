"""Helpers for the guard tests: files written into a project, one walk of it,
and a body run as an ordinary user (root reads every directory)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from hutch.guard import patterns
from hutch.guard import tree as t

KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
NOBODY = 65534


def write(path: Path, text: str = "x", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


class Scan(NamedTuple):
    """What one full walk decided, as sorted root-relative paths."""

    files: tuple[str, ...]  # masked files
    dirs: tuple[str, ...]  # masked directories
    links: tuple[str, ...]  # symlinks named like secrets (MASKED_LINK)
    hardlinks: tuple[str, ...]
    unreadable: tuple[str, ...]
    walked: frozenset[str]  # every directory the walk listed
    tree: t.Tree


def walk(
    root: Path, mask: Sequence[str] = (), unmask: Sequence[str] = (), use_defaults: bool = True
) -> t.Tree:
    policy = patterns.Policy(tuple(mask), tuple(unmask), use_defaults=use_defaults)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return t.Walker(fd, os.getuid(), policy, None).full(str(root), "p")
    finally:
        os.close(fd)


def scan(root: Path, mask: Sequence[str] = (), unmask: Sequence[str] = (), use_defaults: bool = True) -> Scan:
    tree = walk(root, mask, unmask, use_defaults)
    files, dirs = tree.masked()
    return Scan(
        files,
        dirs,
        tree.paths(t.MASKED_LINK),
        tree.paths(t.HARDLINK),
        tree.paths(t.UNREADABLE),
        frozenset(tree.dirs),
        tree,
    )


def as_nobody(body: Callable[[Path], object]) -> object:
    """body(project) run as an ordinary user, in a forked child when the tests
    run as root; returns what body returned (JSON-serialisable). The project
    is a fresh directory that user owns, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="hutch-guard-"))
    try:
        root.chmod(0o755)
        if os.geteuid() != 0:
            return body(root)
        os.chown(root, NOBODY, NOBODY)
        read, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            status = 1
            try:
                os.close(read)
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                answer = json.dumps({"ok": body(root)})
                status = 0
            except BaseException:  # noqa: BLE001 - carried to the parent, which fails the test
                answer = json.dumps({"error": traceback.format_exc()})
            finally:
                with os.fdopen(write_end, "w") as pipe:
                    pipe.write(answer)
                os._exit(status)
        os.close(write_end)
        with os.fdopen(read) as pipe:
            got = json.loads(pipe.read() or '{"error": "the child said nothing"}')
        _, status = os.waitpid(pid, 0)
        assert "error" not in got, got["error"]
        assert os.waitstatus_to_exitcode(status) == 0
        return got["ok"]
    finally:
        for path, subdirs, _ in os.walk(root):
            for name in subdirs:
                if not os.path.islink(os.path.join(path, name)):
                    os.chmod(os.path.join(path, name), 0o755)
        shutil.rmtree(root)
