"""Which masked files git tracks: their committed content stays readable
inside through .git (`git show HEAD:.env`), which the launch line says."""

from __future__ import annotations

import os


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
