"""The project's protection for one session, from the walk to the report.

Ties together what hutch.guard decides (masks, read-only paths, the `.git`
layer), the mounts that carry it out, the start gate's expectations, and the
work after the session. Takes plain values; the run command owns the order.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import stat
from collections.abc import Callable

from hutch import gitlayer, layers, process
from hutch.engines.base import host_name
from hutch.errors import SetupFailed
from hutch.gate import Expect, Gate, Pinned, pin, verify
from hutch.guard import GIT, Outcome, Prepared, finish, prepare
from hutch.guard.tracked import TrackedQuery
from hutch.guard.tree import Tree
from hutch.plan import Layer, Masking, Mount


def layer_dir(state: str, session: str) -> str:
    return os.path.join(state, "layers", session)


class Protection:
    """Owns one session's walk results, its `.git` layer and its start gate."""

    def __init__(
        self,
        *,
        project: str,
        uid: int,
        state: str,
        session: str,
        prepared: Prepared,
        mask: tuple[str, ...],
        unmask: tuple[str, ...],
        no_mask: bool,
    ) -> None:
        self.project = project
        self.uid = uid
        self.state = state
        self.session = session
        self.prepared = prepared
        self.mask = mask
        self.unmask = unmask
        self.no_mask = no_mask
        self.git_upper: str | None = None
        self.git_lower: str | None = None
        self._git_fd: int | None = None
        self._slot: layers.WorkSlot | None = None
        self._git_mark: bytes | None = None
        self.gate: Gate | None = None
        # Started now: git answers while the rest of the launch is planned.
        self._tracked = TrackedQuery(project, prepared.masked_files + prepared.masked_dirs)

    @classmethod
    def open(
        cls,
        *,
        project: str,
        uid: int,
        mask: tuple[str, ...],
        unmask: tuple[str, ...],
        no_mask: bool,
        state: str,
        session: str,
        quick: bool = False,
    ) -> Protection:
        try:
            _claim(state, session, project)
        except OSError as err:
            shutil.rmtree(layer_dir(state, session), ignore_errors=True)
            if os.path.lexists(os.path.join(project, GIT)):
                raise _no_layer(state, err) from err
            # No .git layer to keep there: the session runs; the walk says what it could not keep.
        try:
            prepared = prepare(
                project=project,
                uid=uid,
                mask=mask,
                unmask=unmask,
                no_mask=no_mask,
                state=state,
                session=session,
                quick=quick,
            )
        except BaseException:
            shutil.rmtree(layer_dir(state, session), ignore_errors=True)
            raise
        return cls(
            project=project,
            uid=uid,
            state=state,
            session=session,
            prepared=prepared,
            mask=mask,
            unmask=unmask,
            no_mask=no_mask,
        )

    def tracked(self) -> tuple[str, ...]:
        """Masked paths that git tracks (readable inside through git's history)."""
        return self._tracked.result()

    # -- the .git layer -------------------------------------------------------------

    def make_git_layer(self, *, engine: str) -> None:
        """Create the upper and work directories for the .git layer, and the
        path through which the engine reaches the lower one: Docker's daemon
        (root, in hutch's mount namespace) opens /proc/PID/fd/N, the directory
        hutch opened, so no rename can swap it; rootless Podman may not look
        into hutch's descriptors, so it gets a link, and the start gate checks
        what it mounted."""
        if self.prepared.git is None:
            return
        try:
            self._make_git_layer(engine)
        except (OSError, ValueError) as err:
            raise _no_layer(self.state, err) from err

    def _make_git_layer(self, engine: str) -> None:
        base = layer_dir(self.state, self.session)
        layers.check_option_path(base)
        self.git_upper = layers.make_upper(os.path.join(base, "git"))
        self._git_mark = layers.mark(self.git_upper)
        self._slot = layers.WorkSlot.acquire(os.path.join(self.state, "layers", "work"))
        gitdir = os.path.join(self.project, GIT)
        # The merged directory takes the upper's mode: show .git as the host has it.
        os.chmod(self.git_upper, stat.S_IMODE(os.stat(gitdir).st_mode))
        assert self.prepared.git is not None
        with open(os.path.join(base, "git.json"), "w", encoding="utf-8") as handle:
            json.dump({"project": self.project, "start": self.prepared.git.start._asdict()}, handle)
        if engine == "docker":
            self._git_fd = os.open(gitdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            self.git_lower = f"/proc/{os.getpid()}/fd/{self._git_fd}"
        else:
            link = os.path.join(base, "git-lower")
            os.symlink(gitdir, link)
            self.git_lower = link

    # -- mounts and the gate ------------------------------------------------------------

    def masking(self) -> Masking:
        p = self.prepared
        layers: tuple[Layer, ...] = ()
        if self.git_lower is not None and self.git_upper is not None and self._slot is not None:
            layers = (Layer(GIT, self.git_lower, self.git_upper, self._slot.path),)
        return Masking(
            files=p.masked_files, dirs=p.masked_dirs, readonly=tuple(b.rel for b in p.readonly), layers=layers
        )

    def expectations(
        self, *, target: str, empty_file: str, empty_dir: str, user_mounts: tuple[Mount, ...] = ()
    ) -> list[Expect]:
        """What the gate checks: the project, the .git layer, every read-only
        path and mask, and the mounts the user asked for from inside the
        project (a link planted there would widen them)."""
        p = self.prepared
        file_st, dir_st = os.stat(empty_file), os.stat(empty_dir)
        expects = [Expect(target, p.root.ino, p.root.dev, False, "the project")]
        if p.git is not None and self.git_upper is not None:
            # The overlay's root shows the upper's mark (and, over one file
            # system, the upper's inode); a lower file keeps its own inode.
            upper = os.stat(self.git_upper)
            expects.append(Expect(posixpath.join(target, GIT), upper.st_ino, None, False, "the .git layer",
                                  mark=self._git_mark))  # fmt: skip
            if p.git.head is not None:
                head = posixpath.join(target, GIT, "HEAD")
                expects.append(Expect(head, p.git.head.ino, None, False, "the .git layer's lower directory"))
        expects += [
            Expect(posixpath.join(target, b.rel), b.pinned.ino, b.pinned.dev, True, "a host-executed path")
            for b in p.readonly
        ]
        expects += [
            Expect(posixpath.join(target, rel), file_st.st_ino, file_st.st_dev, True, "a masked file")
            for rel in p.masked_files
        ]
        expects += [
            Expect(posixpath.join(target, rel), dir_st.st_ino, dir_st.st_dev, True, "a masked directory")
            for rel in p.masked_dirs
        ]
        inside = self.project.rstrip("/") + "/"
        root = os.open(self.project, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for mount in user_mounts:
                if not mount.source.startswith(inside):
                    continue
                pinned = pin(root, mount.source[len(inside) :])
                if pinned is None:
                    raise SetupFailed(
                        f"mount {mount.source}: missing, or reached through a symlink inside the project",
                        "mount the real directory by its own path",
                    )
                expects.append(
                    Expect(mount.target, pinned.ino, pinned.dev, mount.readonly, "a mount you asked for")
                )
        finally:
            os.close(root)
        return expects

    def open_gate(self, runtime_dir: str, expects: list[Expect]) -> str:
        """Listen for the sandbox; returns the gate's path inside the runtime dir."""
        self.gate = Gate(runtime_dir)
        self.gate.serve(lambda pid: self._check(pid, expects))
        return self.gate.path

    def _check(self, pid: int, expects: list[Expect]) -> str | None:
        pending = self.prepared.pending
        if pending is not None:
            pending.wait()
            if pending.error is not None or pending.stale:
                return STALE
        return verify(pid, expects)

    def stale(self) -> bool:
        """The sandbox was held at the gate because the quick plan no longer
        held: nothing ran, and the caller starts again from a full plan."""
        return self.gate_failure() == STALE

    def close_gate(self) -> None:
        if self.gate is not None:
            self.gate.close()

    def start_walk(self) -> None:
        """Start the walk of what changed, on a quick start (the gate waits for it)."""
        if self.prepared.pending is not None:
            self.prepared.pending.start()

    def gate_ready(self) -> None:
        if self.gate is not None:
            self.gate.ready()

    def gate_failure(self) -> str | None:
        return self.gate.failure if self.gate is not None else None

    def gate_opened(self) -> bool:
        return self.gate is not None and self.gate.opened.is_set()

    # -- after the session --------------------------------------------------------------

    def finish(self, *, surface: str, ask: Callable[[str, str], bool] | None) -> Outcome:
        p = self.prepared
        baseline = p.baseline if p.pending is None else p.pending.wait()
        return finish(
            project=self.project,
            uid=self.uid,
            prepared_baseline=baseline or Tree(self.project, self.uid),
            policy=p.policy,
            mask=self.mask,
            unmask=self.unmask,
            no_mask=self.no_mask,
            state=self.state,
            session=self.session,
            git_start=p.git.start if p.git is not None else None,
            git_upper=self.git_upper,
            surface=surface,
            ask=ask,
        )

    def close(self) -> None:
        """Release the gate, the lower's descriptor and the work slot; drop the layer."""
        self.close_gate()
        self.gate = None
        if self._git_fd is not None:
            os.close(self._git_fd)
            self._git_fd = None
        if self._slot is not None:
            self._slot.release()
            self._slot = None
        shutil.rmtree(layer_dir(self.state, self.session), ignore_errors=True)


OWNER = "owner.json"
STALE = "the project changed since hutch planned this start"


def _no_layer(state: str, err: OSError | ValueError) -> SetupFailed:
    why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return SetupFailed(
        f"the copy-on-write layer for .git could not be made in {os.path.join(state, 'layers')}: {why}; "
        "nothing ran",
        "the agent's git writes land there during a session: make room there or make it writable "
        "(or point XDG_STATE_HOME elsewhere); its path must have no ',' or ':'",
    )


def _claim(state: str, session: str, project: str) -> None:
    """Mark the session's layer directory as this hutch's, before anything of
    the session exists: what a killed hutch leaves is found by this file."""
    base = layer_dir(state, session)
    os.makedirs(base, mode=0o700)
    with open(os.path.join(base, OWNER), "w", encoding="utf-8") as handle:
        json.dump({"pid": os.getpid(), "host": host_name(), "project": project}, handle)


def orphans(state: str, project: str | None = None) -> list[tuple[str, str]]:
    """(session, project) of sessions whose hutch is gone, on this host; of
    one project, or of all."""
    found: list[tuple[str, str]] = []
    try:
        names = os.listdir(os.path.join(state, "layers"))
    except OSError:
        return found
    for name in sorted(names):
        try:
            with open(os.path.join(state, "layers", name, OWNER), encoding="utf-8") as handle:
                owner = json.load(handle)
            pid, where, owned = int(owner["pid"]), str(owner["host"]), str(owner["project"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if where != host_name() or process.is_alive(pid) or (project is not None and owned != project):
            continue
        found.append((name, owned))
    return found


def pinned(path: str) -> Pinned:
    st = os.stat(path)
    return Pinned(st.st_dev, st.st_ino)


def load_git_start(state: str, session: str) -> tuple[str, gitlayer.RepoState] | None:
    """The project and the host repository's state at the start of a session
    whose hutch was killed, for the report at the next start."""
    try:
        with open(os.path.join(layer_dir(state, session), "git.json"), encoding="utf-8") as handle:
            doc = json.load(handle)
        start = doc["start"]
        index = tuple(start["index_id"]) if start["index_id"] is not None else None
        head = start["head"] if isinstance(start["head"], str) else None
        return str(doc["project"]), gitlayer.RepoState(head, dict(start["refs"]), index)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recover(
    *,
    state: str,
    session: str,
    uid: int,
    mask: tuple[str, ...],
    unmask: tuple[str, ...],
    no_mask: bool,
    surface: str,
    project: str,
) -> Outcome | None:
    """The end of a session whose hutch was killed: its .git layer carried
    back, its changes found against the baseline it left, host-executed
    changes set aside. None when it left nothing to look at."""
    from hutch.guard import baseline_path
    from hutch.guard import tree as t

    path = baseline_path(state, project, session)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            baseline = t.Tree.loads(handle.read(), project, uid, None)
    except OSError:
        baseline = None
    git = load_git_start(state, session)
    upper = os.path.join(layer_dir(state, session), "git", "upper")
    if baseline is None and git is None:
        shutil.rmtree(layer_dir(state, session), ignore_errors=True)
        return None
    if baseline is None:
        baseline = t.Tree(project, uid)
    try:
        return finish(
            project=project,
            uid=uid,
            prepared_baseline=baseline,
            policy=baseline.policy,
            mask=mask,
            unmask=unmask,
            no_mask=no_mask,
            state=state,
            session=session,
            git_start=git[1] if git is not None else None,
            git_upper=upper if git is not None else None,
            surface=surface,
            ask=None,
        )
    finally:
        shutil.rmtree(layer_dir(state, session), ignore_errors=True)
