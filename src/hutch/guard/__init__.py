"""Before and after a session: what to mask, what to keep read-only, what changed.

Before: one walk of the project (kept per project, so later walks cost what
changed — hutch.guard.tree) decides the masks and the host-executed files to
bind read-only, and pins each bind source by device and inode for the start
gate to check (hutch.gate). After: the same walk against the state before the
session finds what the session changed that the host may run; the `.git`
layer hands back what git needs (hutch.gitlayer); new or changed host-executed
files are set aside until the user says yes (hutch.guard.quarantine).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from hutch import gitlayer
from hutch.gate import Pinned, open_beneath, pin
from hutch.guard import patterns, quarantine, report
from hutch.guard import tree as t
from hutch.guard.surface import SURFACE_ROOT
from hutch.paths import replace_text

GIT = ".git"
# Walks tried before hutch gives up on a project whose directories keep
# being swapped while it looks.
WALK_ATTEMPTS = 3
# Inside a nested repository's .git: bound read-only while they exist.
_NESTED_GIT = ("config", "config.worktree", "hooks", "commondir", "gitdir", "info")


class Bind(NamedTuple):
    rel: str  # relative to the project root
    pinned: Pinned


class GitLayer(NamedTuple):
    """The project's .git, seen through a copy-on-write layer."""

    start: gitlayer.RepoState
    # .git/HEAD: through the overlay a lower file keeps its inode, which the
    # gate checks; None when .git holds no HEAD (not a repository yet, but one
    # the sandbox could make: it is layered all the same).
    head: Pinned | None


class Prepared(NamedTuple):
    root: Pinned
    masked_files: tuple[str, ...]
    masked_dirs: tuple[str, ...]
    readonly: tuple[Bind, ...]
    git: GitLayer | None
    warnings: tuple[str, ...]
    hardlinks: tuple[str, ...]
    # The tree as the session starts; with a quick start it comes from
    # `pending` (the walk of what changed, done while the engine starts).
    baseline: t.Tree | None
    policy: str
    pending: Pending | None = None


class Outcome(NamedTuple):
    changes: list[report.Change]
    held: quarantine.Held
    git: list[gitlayer.Decision]
    # The project kept changing while hutch walked it (another session
    # renaming directories): what changed may be more than is listed.
    incomplete: bool = False
    # What hutch could not write in its state dir (full, read-only), said once.
    unsaved: str = ""


def project_dir(state: str, project: str) -> str:
    key = hashlib.sha256(project.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(state, "projects", key)


def hooks_dir(project: str) -> tuple[str, ...]:
    """The project repository's core.hooksPath, relative to the project, when
    it lies inside it: git on the host runs what is there."""
    from hutch.gitconfig import value

    configured = value(os.path.join(project, GIT, "config"), "core", "hookspath")
    if not configured:
        return ()
    if configured.startswith("~"):
        configured = os.path.expanduser(configured)
    # Relative hook paths are taken from where hooks run: the worktree root.
    rel = os.path.relpath(os.path.normpath(os.path.join(project, configured)), project)
    if rel in (".", "..") or rel.startswith("../") or os.path.isabs(rel):
        return ()
    return (rel,)


def policy_key(
    mask: tuple[str, ...], unmask: tuple[str, ...], no_mask: bool, extra: tuple[str, ...] = ()
) -> str:
    material = json.dumps(
        [
            t.VERSION,
            patterns.CONTENT_RULES,
            extra,
            mask,
            unmask,
            no_mask,
            patterns.DEFAULT_MASK_PATTERNS,
            patterns.DEFAULT_UNMASK_PATTERNS,
            sorted(patterns.PLAIN_JSON),
            patterns.SMALL_SUFFIXES,
            patterns.PEM_SUFFIXES,
            SURFACE_ROOT,
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _policy(mask: tuple[str, ...], unmask: tuple[str, ...], no_mask: bool) -> patterns.Policy:
    if no_mask:
        return patterns.Policy((), (), use_defaults=False)
    return patterns.Policy(mask, unmask)


def _tree_path(state: str, project: str) -> str:
    return os.path.join(project_dir(state, project), "tree.json")


def baseline_path(state: str, project: str, session: str) -> str:
    return os.path.join(project_dir(state, project), "baselines", f"{session}.json")


def blobs_dir(state: str, project: str) -> str:
    return os.path.join(project_dir(state, project), "blobs")


def _load(path: str, project: str, uid: int, policy: str) -> t.Tree | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return t.Tree.loads(handle.read(), project, uid, policy)
    except OSError:
        return None


def _save(path: str, tree: t.Tree) -> None:
    """The tree, and beside it the summary a quick start plans from."""
    _write(path, tree.dumps())
    _write(os.path.join(os.path.dirname(path), SUMMARY), json.dumps(Summary.of(tree)._asdict()))


def _write(path: str, text: str) -> None:
    replace_text(path, text, errors="surrogateescape")


SUMMARY = "launch.json"


class Summary(NamedTuple):
    """What the last walk decided, enough to plan a launch: small, so that a
    start reads it in a moment whatever the size of the project."""

    root: str
    uid: int
    policy: str
    full_at: float
    masked_files: list[str]
    masked_dirs: list[str]
    candidates: list[str]
    links: list[str]
    masked_links: list[str]
    unreadable: list[str]
    hardlinks: list[str]

    @classmethod
    def of(cls, tree: t.Tree) -> Summary:
        files, dirs = tree.masked()
        candidates, links = _candidates(tree)
        return cls(tree.root, tree.uid, tree.policy, tree.full_at, list(files), list(dirs), candidates,
                   links, list(tree.paths(t.MASKED_LINK)), list(tree.paths(t.UNREADABLE)),
                   list(tree.paths(t.HARDLINK)))  # fmt: skip

    @classmethod
    def load(cls, path: str) -> Summary | None:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                return cls(**json.load(handle))
        except (OSError, ValueError, TypeError):
            return None

    def plans_like(self, other: Summary) -> bool:
        """Whether a launch planned from one would mount what the other plans."""
        return (self.masked_files, self.masked_dirs, sorted(self.candidates)) == (
            other.masked_files, other.masked_dirs, sorted(other.candidates))  # fmt: skip


class Pending:
    """The walk of what changed since the last one, run in a thread while the
    engine starts the container (`start`, once the engine's client is
    spawned: the thread would otherwise slow down what comes before); the
    start gate waits for it."""

    def __init__(self, *, project: str, uid: int, key: str, policy: patterns.Policy, path: str, blobs: str,
                 baseline: str, summary: Summary, extra: tuple[str, ...]) -> None:  # fmt: skip
        self.tree: t.Tree | None = None
        self.stale = False  # the launch was planned from what no longer holds
        self.error: BaseException | None = None
        self._args = (project, uid, key, policy, path, blobs, baseline, summary, extra)
        self._thread = threading.Thread(target=self._run, name="hutch-walk", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread.ident is None:
                self._thread.start()

    def _run(self) -> None:
        project, uid, key, policy, path, blobs, baseline, summary, extra = self._args
        try:
            tree = _walk(project=project, uid=uid, key=key, policy=policy, path=path, blobs=blobs,
                         now=time.time(), old=_load(path, project, uid, key), extra=extra)  # fmt: skip
            _link_baseline(path, baseline, tree)  # a failure: only the cache is not kept
            self.stale = not Summary.of(tree).plans_like(summary)
            self.tree = tree
        except (OSError, t.Unstable) as err:
            self.error = err

    def wait(self) -> t.Tree | None:
        self.start()
        self._thread.join()
        return self.tree


def _open_root(project: str) -> int:
    return os.open(project, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def prepare(
    *,
    project: str,
    uid: int,
    mask: tuple[str, ...],
    unmask: tuple[str, ...],
    no_mask: bool,
    state: str,
    session: str,
    now: float | None = None,
    quick: bool = False,
) -> Prepared:
    """Plan the project's protection from a walk of it (or of what changed
    since the last one). Quick: from the last walk's summary, when there is a
    current one and every path it masks is still there; the walk then runs
    in a thread (Prepared.pending) while the engine starts the container, and
    the start gate holds the sandbox until it says the plan still holds.
    Raises OSError when the project cannot be read, Unstable when it keeps
    changing under the walk."""
    extra = hooks_dir(project)
    key = policy_key(mask, unmask, no_mask, extra)
    policy = _policy(mask, unmask, no_mask)
    path = _tree_path(state, project)
    blobs = blobs_dir(state, project)
    baseline = baseline_path(state, project, session)
    moment = time.time() if now is None else now
    unsaved: list[str] = []
    root_fd = _open_root(project)
    try:
        summary = Summary.load(os.path.join(os.path.dirname(path), SUMMARY)) if quick else None
        pending: Pending | None = None
        tree: t.Tree | None = None
        usable = summary is not None and _current(summary, project, uid, key, moment)
        if summary is not None and usable and _still_there(root_fd, summary):
            pending = Pending(project=project, uid=uid, key=key, policy=policy, path=path, blobs=blobs,
                              baseline=baseline, summary=summary, extra=extra)  # fmt: skip
        else:
            tree = _walk(project=project, uid=uid, key=key, policy=policy, path=path, blobs=blobs, now=moment,
                         old=_load(path, project, uid, key), root_fd=root_fd, extra=extra,
                         failures=unsaved)  # fmt: skip
            unsaved.append(_link_baseline(path, baseline, tree))
            summary = Summary.of(tree)
        root_st = os.fstat(root_fd)
        masked = (*summary.masked_files, *summary.masked_dirs)
        readonly, links = _readonly(root_fd, [*extra, *summary.candidates], summary.links, masked)
        git = _git_layer(root_fd, project)
    finally:
        os.close(root_fd)
    warnings: list[str] = []
    if summary.masked_links:
        warnings.append(
            "symlinks named like secrets are not masked (they point elsewhere): "
            f"{report.names(summary.masked_links)}"
        )
    if summary.unreadable:
        warnings.append(f"unreadable, so not checked for secrets: {report.names(summary.unreadable)}")
    if links:
        warnings.append(
            "host-executed paths that are symlinks stay writable (binding them would follow "
            f"the link): {report.names(links)}; hutch reports changes to them afterwards"
        )
    if summary.hardlinks:
        warnings.append(
            f"{len(summary.hardlinks)} file(s) are hard-linked from outside the project; the agent "
            f"can change the other copies too: {report.names(summary.hardlinks)}"
        )
    if any(unsaved):
        warnings.append(
            f"cannot keep hutch's record of this project in {next(u for u in unsaved if u)}: make room "
            "there; the next start looks at the whole project again, and a session whose hutch is killed "
            "gets no report"
        )
    if no_mask:
        warnings.append("--no-mask: secret files in the project are visible to the agent")
    return Prepared(
        root=Pinned(root_st.st_dev, root_st.st_ino),
        masked_files=tuple(summary.masked_files),
        masked_dirs=tuple(summary.masked_dirs),
        readonly=tuple(readonly),
        git=git,
        warnings=tuple(warnings),
        hardlinks=tuple(summary.hardlinks),
        baseline=tree,
        policy=key,
        pending=pending,
    )


def _current(summary: Summary, project: str, uid: int, key: str, moment: float) -> bool:
    return (
        summary.root == project
        and summary.uid == uid
        and summary.policy == key
        and moment - summary.full_at <= t.FULL_PASS_EVERY
    )


def _still_there(root_fd: int, summary: Summary) -> bool:
    """Every masked path is still what it was: a mount onto one that went
    away would make the engine create it, in the user's project."""
    for rel in summary.masked_files:
        if _kind(root_fd, rel) not in ("file",):
            return False
    return all(_kind(root_fd, rel) == "dir" for rel in summary.masked_dirs)


def _walk(*, project: str, uid: int, key: str, policy: patterns.Policy, path: str, blobs: str, now: float,
          old: t.Tree | None, root_fd: int | None = None, extra: tuple[str, ...] = (),
          failures: list[str] | None = None) -> t.Tree:  # fmt: skip
    """A full walk when there is no tree of this policy or the daily one is due,
    else a walk of what changed; saved when it changed anything."""
    own = root_fd is None
    fd = _open_root(project) if root_fd is None else root_fd
    try:
        walker = t.Walker(fd, uid, policy, blobs, extra)
        for attempt in range(WALK_ATTEMPTS):
            try:
                if old is None or now - old.full_at > t.FULL_PASS_EVERY:
                    tree = walker.full(project, key, old)
                    changed = True
                else:
                    tree, pairs = walker.refresh(old)
                    changed = bool(pairs) or tree.dirs.keys() != old.dirs.keys()
                break
            except t.Unstable:
                if attempt == WALK_ATTEMPTS - 1:
                    raise
        if changed:
            failed = _try_save(path, tree)
            if failed and failures is not None:
                failures.append(failed)
        return tree
    finally:
        if own:
            os.close(fd)


def _link_baseline(tree_path: str, baseline: str, tree: t.Tree) -> str:
    """The tree as the session starts, kept for a report after a `kill -9`:
    a hard link to the cache file (replaced, never rewritten, by later saves).
    What could not be written ("" when all was), for the caller to say."""
    try:
        os.makedirs(os.path.dirname(baseline), mode=0o700, exist_ok=True)
        try:
            os.link(tree_path, baseline)
        except FileExistsError:
            os.unlink(baseline)
            os.link(tree_path, baseline)
        return ""
    except OSError:
        return _try_save(baseline, tree)


def _try_save(path: str, tree: t.Tree) -> str:
    """_save, saying what failed instead of raising: the tree is a cache (a
    later walk starts afresh) and the baseline serves only after a `kill -9`."""
    try:
        _save(path, tree)
    except OSError as err:
        return f"{os.path.dirname(path)}: {err.strerror}"
    return ""


def _candidates(tree: t.Tree) -> tuple[list[str], list[str]]:
    """Host-executed paths below the root that the tree knows of, to bind
    read-only where they exist, and those that are links: (candidates, links).
    The fixed ones at the root (SURFACE_ROOT) are not included."""
    candidates: list[str] = []
    links: list[str] = []
    covered = tuple(p + "/" for p in SURFACE_ROOT)
    for rel, fact in tree.entries(t.SURFACE | t.REPO):
        if rel == GIT or rel in SURFACE_ROOT or rel.startswith(covered):
            continue
        if fact.flags & t.LINK:
            links.append(rel)
        elif fact.flags & t.REPO and not fact.ino:  # a nested .git directory
            candidates += [f"{rel}/{name}" for name in _NESTED_GIT]
        elif "/.git/" not in f"/{rel}":  # inside a nested .git: its candidates cover it
            candidates.append(rel)
    return candidates, links


def _readonly(
    root_fd: int, candidates: list[str], links: list[str], masked: tuple[str, ...]
) -> tuple[list[Bind], list[str]]:
    """Host-executed paths that exist: (binds, paths that are links). A masked
    path, or one below a masked directory, is left out: its mask is read-only
    already, and a second mount on the same target is refused by the engine."""
    hidden = frozenset(masked)
    below = tuple(p + "/" for p in masked)
    binds: list[Bind] = []
    found_links = list(links)
    wanted = [*SURFACE_ROOT, *candidates]
    if _kind(root_fd, GIT) == "file":
        wanted.append(GIT)
    for rel in dict.fromkeys(wanted):
        if rel in hidden or rel.startswith(below):
            continue
        kind = _kind(root_fd, rel)
        if kind == "link":
            found_links.append(rel)
        elif kind is not None:
            pinned = pin(root_fd, rel)
            if pinned is not None:
                binds.append(Bind(rel, pinned))
    return sorted(binds), sorted(set(found_links))


def _kind(root_fd: int, rel: str) -> str | None:
    """ "file", "dir", "link" (the path or a parent below the root is a link), or None."""
    fd = open_beneath(root_fd, rel)
    if fd is None:
        # A missing component, or a link on the way: find out which.
        parts = rel.split("/")
        for end in range(1, len(parts) + 1):
            sub = open_beneath(root_fd, "/".join(parts[:end]))
            if sub is None:
                return None
            try:
                if stat.S_ISLNK(os.fstat(sub).st_mode):
                    return "link"
            finally:
                os.close(sub)
        return None
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if stat.S_ISLNK(mode):
        return "link"
    return "dir" if stat.S_ISDIR(mode) else "file"


def _git_layer(root_fd: int, project: str) -> GitLayer | None:
    if _kind(root_fd, GIT) != "dir":
        return None
    head = pin(root_fd, f"{GIT}/HEAD")
    return GitLayer(gitlayer.capture(os.path.join(project, GIT)), head)


# --------------------------------------------------------------------------
# After the session


def finish(
    *,
    project: str,
    uid: int,
    prepared_baseline: t.Tree,
    policy: str,
    mask: tuple[str, ...],
    unmask: tuple[str, ...],
    no_mask: bool,
    state: str,
    session: str,
    git_start: gitlayer.RepoState | None,
    git_upper: str | None,
    surface: str,
    ask: Callable[[str, str], bool] | None,
) -> Outcome:
    """Carry the .git layer back, find what changed, strip setuid bits, set
    host-executed changes aside (surface = "ask") and save the tree."""
    held = quarantine.load(state, session) or quarantine.new_held(session, project)
    blobs = blobs_dir(state, project)
    unsaved = ""
    decisions: list[gitlayer.Decision] = []
    found: list[report.Change] = []
    gitdir = os.path.join(project, GIT)
    if git_start is not None and git_upper is not None and os.path.isdir(git_upper):
        decisions = gitlayer.carry(gitdir, git_upper, git_start, session)
        for decision in decisions:
            if decision.outcome == "kept":
                quarantine.hold_git(state, held, gitdir, git_upper, decision.rel, decision.change)
                found.append(
                    report.Change(
                        "git",
                        f"{GIT}/{decision.rel}",
                        f"{decision.change}, kept away: {decision.reason}",
                        decision.change,
                    )
                )
            elif decision.outcome == "conflict":
                found.append(report.Change("git", f"{GIT}/{decision.rel}", decision.reason, decision.change))
    root_fd = _open_root(project)
    tree: t.Tree | None = None
    pairs: list[t.Pair] = []
    try:
        walker = t.Walker(root_fd, uid, _policy(mask, unmask, no_mask), blobs, hooks_dir(project))
        for _ in range(WALK_ATTEMPTS):
            try:
                tree, pairs = walker.refresh(prepared_baseline)
                break
            except t.Unstable:
                continue
        found += report.changes(pairs)
        for change in found:
            if change.kind == "setuid":
                _strip_setid(walker, change.path)
    finally:
        os.close(root_fd)
    if tree is not None and (pairs or tree.dirs.keys() != prepared_baseline.dirs.keys() or any(
        tree.dirs[rel] is not prepared_baseline.dirs.get(rel) for rel in tree.dirs
    )):  # fmt: skip
        unsaved = _try_save(_tree_path(state, project), tree) or unsaved
    if surface == "ask":
        for change in found:
            if change.kind != "surface" or change.change == "deleted":
                continue
            old = prepared_baseline.dirs.get(os.path.dirname(change.path))
            before = old.facts.get(os.path.basename(change.path)) if old is not None else None
            original = before.extra if before is not None and not before.flags & t.LINK else ""
            quarantine.set_aside(state, held, project, change.path, change.change, original, blobs)
    try:
        quarantine.save(state, held)
    except OSError as err:
        unsaved = unsaved or f"{quarantine.root(state)}: {err.strerror}"
    if ask is not None and held.items:
        yes = [
            item.path for item in held.items if ask(item.path, quarantine.diff_text(state, held, item, blobs))
        ]
        if yes:
            quarantine.accept(state, held, yes)
    try:
        os.unlink(baseline_path(state, project, session))
    except OSError:
        pass
    return Outcome(sorted(found, key=report.order), held, decisions, incomplete=tree is None, unsaved=unsaved)


def _strip_setid(walker: t.Walker, rel: str) -> None:
    """Remove setuid and setgid bits, on the file found without following links."""
    parent, _, name = rel.rpartition("/")
    try:
        fd = walker.open_dir(parent)
    except t.Unstable:
        return  # swapped meanwhile: the next walk finds it again
    if fd is None:
        return
    try:
        target = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return
    finally:
        os.close(fd)
    try:
        st = os.fstat(target)
        if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(f"/proc/self/fd/{target}", stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
    except OSError:
        pass
    finally:
        os.close(target)


def terminal_ask(path: str, diff: str) -> bool:
    """Show a held change on the terminal and ask whether the project keeps it."""
    print(
        f"hutch: {report.display(path)} was changed by the session and is run by tools on the host:",
        file=sys.stderr,
    )
    print(diff, file=sys.stderr)
    try:
        answer = input("hutch: keep this change in the project? [y/N] ")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return False
    return answer.strip().lower() in ("y", "yes")


# --------------------------------------------------------------------------
# The record `hutch audit` reads


def audit_dir(state: str) -> str:
    return os.path.join(state, "audit")


def write_record(
    state: str, *, session: str, project: str, agent: str, prepared: Prepared, outcome: Outcome, status: int
) -> str:
    directory = audit_dir(state)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"{session}.json")
    record = {
        "session": session,
        "project": project,
        "agent": agent,
        "ended": time.time(),
        "status": status,
        "masked_files": list(prepared.masked_files),
        "masked_dirs": list(prepared.masked_dirs),
        "readonly": [b.rel for b in prepared.readonly],
        "hardlinks": list(prepared.hardlinks),
        "changes": [
            {"kind": c.kind, "path": c.path, "detail": c.detail, "change": c.change} for c in outcome.changes
        ],
        "held": [{"path": i.path, "change": i.change, "kind": i.kind} for i in outcome.held.items],
        "git": [
            {"path": d.rel, "outcome": d.outcome, "reason": d.reason}
            for d in outcome.git
            if d.outcome != "carried" or d.reason not in ("object", "pack")
        ],
    }
    replace_text(path, json.dumps(record) + "\n")
    return path
