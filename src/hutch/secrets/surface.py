"""The host-persistence surface: project paths that the host later executes.

Two halves. Before a session, :func:`protected_present` lists the paths the
planner binds read-only. Around a session, :func:`snapshot` and :func:`diff`
report what changed in that surface and in the rest of the project's
dangerous metadata (exec and setuid bits, links that leave the project,
files the sandbox should not have been able to own), so that a failed
protection is seen instead of trusted.
"""

from __future__ import annotations

import os
import stat
from hashlib import sha256
from typing import TYPE_CHECKING, NamedTuple

PROTECTED_PATHS: tuple[str, ...] = (
    # Git runs these on the host: hooks on commit/checkout/merge, and config
    # holds core.fsmonitor, core.pager, aliases, filter and diff drivers.
    # `.git/info/attributes` is not added: attributes only pick drivers by name,
    # the commands come from config, and the worktree `.gitattributes` (which
    # must stay writable) can pick them just the same.
    ".git/hooks",
    ".git/config",
    ".gitmodules",
    # Hook managers whose files a host `git commit` runs: husky's hooks (its
    # core.hooksPath is `.husky/_`, which calls `.husky/<hook>`) and
    # pre-commit's `repo: local` hooks, whose `entry` is any command.
    ".husky",
    ".pre-commit-config.yaml",
    # Run on `cd` (direnv) or when an editor opens the folder.
    ".envrc",
    ".vscode",
    ".idea",
    ".devcontainer",
    # Agent settings that start commands (hooks, MCP servers, lint/test
    # commands) when the user later runs that agent on the host.
    ".claude/settings.json",
    ".claude/settings.local.json",
    ".mcp.json",
    ".cursor/mcp.json",
    ".gemini/settings.json",
    "opencode.json",
    ".aider.conf.yml",
    # hutch's own config decides the next sandbox's mounts and network.
    "hutch.toml",
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Literal

    SurfaceKind = Literal["hook", "autorun"]
    ChangeKind = Literal["hook", "autorun", "setuid", "foreign-owner", "link-outside", "executable"]
    EntryType = Literal["file", "dir", "link", "other"]

# Most dangerous first; format_changes sorts by this.
_RANK: dict[str, int] = {
    "hook": 0,
    "autorun": 1,
    "setuid": 2,
    "foreign-owner": 3,
    "link-outside": 4,
    "executable": 5,
}
_HOOK_PATHS = frozenset({".git/hooks", ".husky"})
# Walked for metadata (a planted setuid file or outward link there counts
# too) but never searched for nested repositories, and listed last.
_VENDORED = frozenset({"node_modules", ".venv", "venv", "vendor", "site-packages", ".tox"})
_SETID = stat.S_ISUID | stat.S_ISGID
_EXEC = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH



# --------------------------------------------------------------------------
# What to bind read-only


class ProtectedSurface(NamedTuple):
    """Protected paths that exist in one project, relative to its root.

    ``paths`` can be bound read-only as they are. ``symlinks`` are the links
    met on the way to a protected path: the path itself (``.envrc`` as a link)
    or a parent (``.claude`` when ``.claude/settings.json`` is protected).
    Binding there would follow a link the project, or an earlier sandbox,
    controls, so the caller must refuse or handle them; whatever lies below
    such a link is not in ``paths``.
    """

    paths: tuple[str, ...]
    symlinks: tuple[str, ...]


def protected_present(root: str | os.PathLike[str]) -> ProtectedSurface:
    """Which protected paths exist under ``root`` (checked with lstat).

    Besides :data:`PROTECTED_PATHS` this finds ``.git`` when it is a file
    (a worktree's or submodule's ``gitdir:`` pointer, which redirects host git
    to any directory), the ``core.hooksPath`` directory when it lies inside the
    project, and each submodule's hooks, config and ``.git`` pointer.
    Nested repositories elsewhere are not searched for here; the snapshot
    diff reports changes to them.
    """
    top = os.fspath(root)
    candidates: list[str] = list(PROTECTED_PATHS)
    # gitdir pointers count only when they are files, not directories.
    pointers: list[str] = [".git"]
    hooks = _hooks_path(top)
    if hooks is not None:
        candidates.append(hooks)
    for gitdir in _module_gitdirs(top):
        candidates += [f"{gitdir}/hooks", f"{gitdir}/config"]
        worktree = _git_config(os.path.join(top, gitdir, "config"), "core", "worktree")
        if worktree is not None:
            inside = _inside(top, os.path.join(top, gitdir, worktree))
            if inside is not None and inside != ".":
                pointers.append(f"{inside}/.git")

    paths: set[str] = set()
    links: set[str] = set()
    for rel in candidates + pointers:
        found = _lstat_chain(top, rel)
        if found is None:
            continue
        state, where = found
        if state == "link":
            links.add(where)
        elif state == "file" or (state == "dir" and rel not in pointers):
            paths.add(rel)
    return ProtectedSurface(paths=tuple(sorted(paths)), symlinks=tuple(sorted(links)))


def _lstat_chain(top: str, rel: str) -> tuple[Literal["file", "dir", "link"], str] | None:
    """The type of ``rel`` and the path it was found at: ("link", the first
    symlink on the way) if ``rel`` or a parent below ``top`` is a symlink;
    None if it does not exist."""
    path = top
    found: list[str] = []
    st: os.stat_result | None = None
    for part in rel.split("/"):
        path = os.path.join(path, part)
        found.append(part)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            return "link", "/".join(found)
    if st is None:
        return None
    return ("dir" if stat.S_ISDIR(st.st_mode) else "file"), rel


def _module_gitdirs(top: str) -> list[str]:
    """Submodule git dirs under .git/modules (names may contain '/', and
    submodules nest)."""
    found: list[str] = []
    stack = [".git/modules"]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(top, rel)) as it:
                kinds = {e.name: e.is_dir(follow_symlinks=False) for e in it}
        except OSError:
            continue
        if kinds.get("HEAD") is False:
            found.append(rel)
            if kinds.get("modules"):
                stack.append(f"{rel}/modules")
        else:
            stack += [f"{rel}/{name}" for name, is_dir in kinds.items() if is_dir]
    return sorted(found)


def _hooks_path(top: str) -> str | None:
    """The project repository's core.hooksPath relative to ``top``, or None when
    it is unset or lies outside the project (then it is not ours to protect)."""
    value = _git_config(os.path.join(top, ".git", "config"), "core", "hookspath")
    if not value:
        return None
    if value.startswith("~"):
        value = os.path.expanduser(value)
    # Relative hook paths are taken from where hooks run: the worktree root.
    rel = _inside(top, os.path.join(top, value))
    return None if rel in (None, ".") else rel


def _inside(top: str, path: str) -> str | None:
    """``path`` relative to ``top`` in POSIX form, or None if it lies outside."""
    rel = os.path.relpath(os.path.normpath(path), os.path.normpath(top))
    if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
        return None
    return rel.replace(os.sep, "/")


def _git_config(path: str, section: str, key: str) -> str | None:
    """The last value of ``section.key`` in one git config file.

    A small reader, not git's: it ignores `include` and `includeIf`, and a
    value continued over several lines. Section and key match case-insensitively.
    """
    text = _read_regular(path, limit=1 << 20)
    if text is None:
        return None
    current: str | None = None
    value: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            header, _, rest = line[1:].partition("]")
            current = header.strip().lower()
            line = rest.strip()
            if not line:
                continue
        if not line or line[0] in "#;":
            continue
        name, eq, val = line.partition("=")
        if current == section and name.strip().lower() == key:
            value = _git_value(val) if eq else "true"
    return value


def _read_regular(path: str, limit: int) -> str | None:
    """Up to ``limit`` bytes of a regular file; None for anything else. A FIFO
    planted where a config belongs must not hang hutch."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(limit).decode("utf-8", errors="surrogateescape")


def _git_value(raw: str) -> str:
    out: list[str] = []
    quoted = False
    escapes = {"n": "\n", "t": "\t", "b": "\b", '"': '"', "\\": "\\"}
    chars = iter(raw.strip())
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append(escapes.get(nxt, nxt))
        elif ch == '"':
            quoted = not quoted
        elif ch in "#;" and not quoted:
            break
        else:
            out.append(ch)
    return "".join(out).strip()


# --------------------------------------------------------------------------
# Snapshots


class Entry(NamedTuple):
    """One path's dangerous metadata. ``sha256`` only for surface files,
    ``target`` only for links, ``surface`` says which surface the path is in.

    A NamedTuple rather than a dataclass: a project can hold a few hundred
    thousand paths, and a frozen dataclass costs five times as much to build.
    """

    type: EntryType
    mode: int
    uid: int
    size: int
    mtime_ns: int
    sha256: str | None = None
    target: str | None = None
    surface: SurfaceKind | None = None


_TYPE_OF: dict[int, EntryType] = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "link"}


class Snapshot(NamedTuple):
    """The project's metadata at one moment; ``entries`` keyed by POSIX path
    relative to ``root``. ``skipped`` lists directories that could not be read."""

    root: str
    uid: int
    entries: Mapping[str, Entry]
    skipped: tuple[str, ...] = ()


def snapshot(root: str | os.PathLike[str], uid: int) -> Snapshot:
    """Record type, mode, owner, size and mtime of every path under ``root``
    (``.git/objects`` excepted), link targets, and a SHA-256 of each file in
    the protected surface. ``uid`` is the user the sandbox runs as."""
    top = os.fspath(root)
    fixed: dict[str, SurfaceKind] = {p: ("hook" if p in _HOOK_PATHS else "autorun") for p in PROTECTED_PATHS}
    hooks = _hooks_path(top)
    if hooks is not None:
        fixed[hooks] = "hook"

    entries: dict[str, Entry] = {}
    skipped: list[str] = []
    # (relative prefix, absolute path, surface kind inherited from a protected
    #  dir, inside a vendored dir, named .git)
    stack: list[tuple[str, str, SurfaceKind | None, bool, bool]] = [("", top, None, False, False)]
    first = True
    while stack:
        prefix, path, inherited, vendored, dot_git = stack.pop()
        try:
            with os.scandir(path) as it:
                listing = list(it)
        except PermissionError:
            if first:
                raise
            skipped.append(prefix.removesuffix("/"))
            continue
        except (FileNotFoundError, NotADirectoryError):
            if first:
                raise
            continue
        first = False
        gitdir = not vendored and (dot_git or _bare_shaped(listing))
        for entry in listing:
            name = entry.name
            rel = prefix + name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            mode = st.st_mode
            typ = _TYPE_OF.get(stat.S_IFMT(mode), "other")
            kind = inherited or fixed.get(rel)
            if kind is None and not vendored:
                if gitdir and typ == "dir" and name == "hooks":
                    kind = "hook"
                elif gitdir and typ != "dir" and name in ("config", "config.worktree"):
                    kind = "autorun"
                elif name == ".git" and typ != "dir":
                    # A gitdir pointer: rewritten, it sends host git to a
                    # planted config.
                    kind = "autorun"
            # Positional: this runs once per path in the project.
            entries[rel] = Entry(
                typ,
                mode & 0o7777,
                st.st_uid,
                st.st_size,
                st.st_mtime_ns,
                _sha256(entry.path) if kind is not None and typ == "file" else None,
                _readlink(entry.path) if typ == "link" else None,
                kind,
            )
            if typ == "dir" and not (gitdir and name == "objects"):
                stack.append((rel + "/", entry.path, kind, vendored or name in _VENDORED, name == ".git"))
    return Snapshot(root=top, uid=uid, entries=entries, skipped=tuple(sorted(skipped)))


def _bare_shaped(listing: list[os.DirEntry[str]]) -> bool:
    """Git's own test for a repository directory: HEAD, objects/ and refs/.
    A planted one is run by any git-aware shell prompt that enters it."""
    kinds = {e.name: e.is_dir(follow_symlinks=False) for e in listing}
    return kinds.get("HEAD") is False and bool(kinds.get("objects")) and bool(kinds.get("refs"))


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        # Gone or no longer a link since the lstat.
        return None


def _sha256(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        # Unreadable or swapped for a link since the lstat: size and mtime
        # still stand in for the contents.
        return None
    with os.fdopen(fd, "rb") as f:
        h = sha256()
        while chunk := f.read(1 << 16):
            h.update(chunk)
        return h.hexdigest()


# --------------------------------------------------------------------------
# The report


class Change(NamedTuple):
    """One finding of :func:`diff`: what kind, where (relative to the root), and
    a short human detail."""

    kind: ChangeKind
    path: str
    detail: str


def diff(before: Snapshot, after: Snapshot, root: str | os.PathLike[str]) -> tuple[Change, ...]:
    """What a session changed that the host could later run or trip over.

    Deletions and ordinary edits are not reported. A path reported as
    hook, autorun or setuid is not reported again as executable.
    """
    top = os.fspath(root)
    real_top = os.path.realpath(top)
    changes: list[Change] = []
    for path, a in after.entries.items():
        b = before.entries.get(path)
        new = b is None or b.type != a.type
        serious = False
        if a.surface is not None and a.type != "dir" and (new or _modified(b, a)):
            changes.append(Change(a.surface, path, _surface_detail(a, new)))
            serious = True
        if a.type == "file":
            prev = 0 if new or b is None else b.mode
            if a.mode & _SETID & ~prev:
                bits = "setuid" if a.mode & stat.S_ISUID & ~prev else "setgid"
                changes.append(Change("setuid", path, f"{bits} bit set (mode {a.mode:04o})"))
                serious = True
            if not serious and a.mode & _EXEC and not prev & _EXEC:
                detail = (
                    f"new executable file (mode {a.mode:04o})"
                    if new
                    else f"exec bit added ({prev:04o} -> {a.mode:04o})"
                )
                changes.append(Change("executable", path, detail))
        if a.type == "link" and a.target is not None and (new or b is None or b.target != a.target):
            why = _escapes(top, real_top, path, a.target)
            if why is not None:
                changes.append(Change("link-outside", path, f"-> {a.target} ({why})"))
        if a.uid != after.uid and (new or b is None or b.uid != a.uid):
            changes.append(Change("foreign-owner", path, f"owned by uid {a.uid}, not {after.uid}"))
    return tuple(sorted(changes, key=_order))


def _modified(b: Entry | None, a: Entry) -> bool:
    if b is None:
        return True
    if (b.type, b.mode, b.target) != (a.type, a.mode, a.target):
        return True
    if b.sha256 is not None and a.sha256 is not None:
        return b.sha256 != a.sha256
    return (b.size, b.mtime_ns) != (a.size, a.mtime_ns)


def _surface_detail(a: Entry, new: bool) -> str:
    what = "new" if new else "modified"
    if a.type == "link":
        return f"{what} symlink -> {a.target}"
    return f"{what} {'file' if a.type == 'file' else 'special file'} (mode {a.mode:04o})"


def _escapes(top: str, real_top: str, rel: str, target: str) -> str | None:
    """Why the link at ``rel`` leaves the project, or None if it stays inside."""
    if os.path.isabs(target):
        return "absolute target"
    lexical = os.path.normpath(os.path.join(os.path.dirname(rel), target))
    if lexical == ".." or lexical.startswith("../"):
        return "points above the project root"
    # Chains of links can leave even when each hop looks local.
    real = os.path.realpath(os.path.join(top, rel))
    if _inside(real_top, real) is None:
        return f"resolves to {real}"
    return None


def _order(change: Change) -> tuple[int, bool, str]:
    vendored = not _VENDORED.isdisjoint(change.path.split("/"))
    return (_RANK[change.kind], vendored, change.path)


def format_changes(changes: Iterable[Change], *, limit: int = 20) -> str:
    """One line per change, most dangerous first; at most ``limit`` lines per
    kind, then a count of the rest. Empty string when nothing changed."""
    lines: list[str] = []
    shown: dict[str, int] = {}
    hidden: dict[str, int] = {}
    for change in sorted(changes, key=_order):
        if shown.get(change.kind, 0) >= limit:
            hidden[change.kind] = hidden.get(change.kind, 0) + 1
            continue
        shown[change.kind] = shown.get(change.kind, 0) + 1
        lines.append(f"{change.kind:<13} {_printable(change.path)}  {_printable(change.detail)}")
    for kind, count in sorted(hidden.items(), key=lambda kv: _RANK[kv[0]]):
        lines.append(f"{kind:<13} ... and {count} more")
    return "\n".join(lines)


def _printable(text: str) -> str:
    # A file name with a newline or escape sequence must not forge report lines.
    return text if text.isprintable() else repr(text)
