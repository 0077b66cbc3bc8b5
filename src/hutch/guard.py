"""Before and after a session: what to mask, what to keep read-only, what changed.

Wraps the secret scan and the host-persistence surface for the run path, and
keeps the per-session audit record that `hutch audit` reads.
"""

from __future__ import annotations

import json
import os
import time
from typing import NamedTuple

from hutch.paths import write_private
from hutch.plan import Masking
from hutch.secrets.scan import scan
from hutch.secrets.surface import Change, Snapshot, diff, protected_present, snapshot

SHOWN = 5


class Guard(NamedTuple):
    masking: Masking
    before: Snapshot
    warnings: tuple[str, ...]
    unprotected_links: tuple[str, ...]
    hardlinks: tuple[str, ...]
    # Masked paths that git tracks: their committed content is in .git, which
    # the sandbox reads (`git show HEAD:.env`).
    tracked: TrackedQuery | None = None


def _names(paths: tuple[str, ...]) -> str:
    shown = ", ".join(paths[:SHOWN])
    return shown + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def prepare(
    project: str, uid: int, mask: tuple[str, ...], unmask: tuple[str, ...], no_mask: bool
) -> Guard:
    warnings: list[str] = []
    if no_mask:
        files: tuple[str, ...] = ()
        dirs: tuple[str, ...] = ()
        hardlinks = scan(project, use_defaults=False).hardlinks
        warnings.append("--no-mask: secret files in the project are visible to the agent")
    else:
        result = scan(project, mask, unmask)
        files, dirs, hardlinks = result.files, result.dirs, result.hardlinks
        if result.links:
            warnings.append(
                f"symlinks named like secrets are not masked (they point elsewhere): "
                f"{_names(result.links)}"
            )
        if result.skipped:
            warnings.append(f"unreadable, so not checked for secrets: {_names(result.skipped)}")
    # Started now: git answers while the surface is walked.
    tracked = TrackedQuery(project, files + dirs)
    surface = protected_present(project)
    if surface.symlinks:
        warnings.append(
            "host-executed paths that are symlinks stay writable (binding them would follow "
            f"the link): {_names(surface.symlinks)}; hutch reports changes to them afterwards"
        )
    if hardlinks:
        warnings.append(
            f"{len(hardlinks)} file(s) are hard-linked from outside the project; the agent "
            f"can change the other copies too: {_names(hardlinks)}"
        )
    before = snapshot(project, uid)
    return Guard(
        Masking(files=files, dirs=dirs, readonly=surface.paths),
        before,
        tuple(warnings),
        surface.symlinks,
        hardlinks,
        tracked,
    )


class TrackedQuery:
    """Which masked paths git tracks, asked in the background: one `git ls-files`
    limited to those paths, started only when something is masked and there is
    a .git, and waited for when the launch line needs the answer. Without git,
    or when git cannot say (no repository, another user's), nothing is named."""

    def __init__(self, project: str, paths: tuple[str, ...]) -> None:
        from hutch import process

        self.paths = paths
        self._pending: process.Pending | None = None
        if not paths or not os.path.lexists(os.path.join(project, ".git")):
            return
        # Literal pathspecs: a masked name may start with ':' or hold '*'. No
        # fsmonitor: a repository's config must not run a command on the host.
        argv = ["git", "-C", project, "--no-pager", "--literal-pathspecs", "-c",
                "core.fsmonitor=false", "ls-files", "-z", "--cached", "--", *paths]  # fmt: skip
        try:
            self._pending = process.start_capture(argv)
        except OSError:
            pass

    def result(self) -> tuple[str, ...]:
        from hutch import process

        if self._pending is None:
            return ()
        try:
            answer = self._pending.result(timeout=20)
        except process.Timeout:
            return ()
        finally:
            self._pending = None
        if not answer.ok:
            return ()
        listed = [name for name in answer.stdout.split("\0") if name]
        return tuple(p for p in self.paths if any(n == p or n.startswith(p + "/") for n in listed))


def tracked_by_git(project: str, paths: tuple[str, ...]) -> tuple[str, ...]:
    """Which of paths (relative to project) git tracks, files below a directory included."""
    return TrackedQuery(project, paths).result()


def after(project: str, uid: int, guard: Guard) -> tuple[Change, ...]:
    return diff(guard.before, snapshot(project, uid), project)


def audit_dir(state: str) -> str:
    return os.path.join(state, "audit")


def write_record(
    state: str,
    session: str,
    project: str,
    agent: str,
    guard: Guard,
    changes: tuple[Change, ...],
    status: int,
) -> str:
    path = os.path.join(audit_dir(state), f"{session}.json")
    record = {
        "session": session,
        "project": project,
        "agent": agent,
        "ended": time.time(),
        "status": status,
        "masked_files": list(guard.masking.files),
        "masked_dirs": list(guard.masking.dirs),
        "readonly": list(guard.masking.readonly),
        "hardlinks": list(guard.hardlinks),
        "changes": [{"kind": c.kind, "path": c.path, "detail": c.detail} for c in changes],
    }
    write_private(path, json.dumps(record) + "\n")
    return path
