"""One walk of the project, kept per project between sessions.

What hutch needs to know about a project — what to mask, which files the host
executes, which files are executables, setuid, links leaving the project,
owned by someone else, hard-linked from outside — is gathered in one walk and
kept under hutch's state dir. Later walks re-list only the directories whose
ctime moved (a new, removed or renamed entry changes its directory's ctime,
and ctime cannot be set back from user space), and re-stat the few files whose
content or mode matters. So the cost before and after a session grows with
the number of directories and with what changed, not with the number of files.

Changes that leave a directory's ctime alone — a file's content or mode
changed in place, or a hard link made from outside to an existing file — are
seen for the files hutch records (executables, host-executed files, content-
checked secrets) at every walk, and for all other files at the full walk
that hutch repeats once a day (:data:`FULL_PASS_EVERY`).

Facts are stored per directory and per entry, only for entries that have one:
an entry with no fact (a plain file of the user's) costs nothing to keep.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from typing import NamedTuple

from hutch.guard import patterns
from hutch.guard.surface import Context, SurfaceKind

FORMAT = "hutch-tree"
VERSION = 2  # 2: directories in columns
FULL_PASS_EVERY = 24 * 3600
BLOB_LIMIT = 1 << 20
# Timestamps come from a clock that ticks every few milliseconds: a change in
# the same tick as the walk that saw the old state would leave the time as
# it was. A directory or file changed this recently is recorded with time 0,
# so that the next walk looks at it again (git calls this "racy").
RACY_NS = 100_000_000

# Fact flags, one bit each.
MASKED = 1 << 0  # a secret file: an empty read-only file is mounted over it
MASKED_DIR = 1 << 1  # a secret directory: an empty directory over it, not walked
MASKED_LINK = 1 << 2  # a symlink named like a secret: never followed, never masked
SNIFFED = 1 << 3  # decided by content; MASKED says the verdict
EXEC = 1 << 4  # a regular file with an exec bit
SETID = 1 << 5  # setuid or setgid
FOREIGN = 1 << 6  # not owned by the sandbox's user
HARDLINK = 1 << 7  # more than one link to a regular file
OUTSIDE = 1 << 8  # a symlink that leaves the project
SURFACE = 1 << 9
BUILD = 1 << 10
STARTUP = 1 << 11
REPO = 1 << 12  # a `.git` entry: its directory is a (nested) repository
SPECIAL = 1 << 13  # a FIFO, socket or device
LINK = 1 << 14  # a symlink
UNREADABLE = 1 << 15  # a directory hutch could not list

WATCHED = SURFACE | BUILD | STARTUP
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_KIND_FLAG = {"surface": SURFACE, "build": BUILD, "startup": STARTUP}
# Entries whose files are re-stat'ed at every walk, changed directory or not.
RESTAT = EXEC | SETID | WATCHED | SNIFFED


class Unstable(Exception):
    """The project changed under the walk in a way that could hide a secret:
    a directory it listed was a link or another directory when it went in
    (another session renaming directories)."""


def _open_child(dir_fd: int, name: str, ino: int | None) -> int | None:
    """The subdirectory name of dir_fd, not followed if it is a link; None
    when it is gone. Raises Unstable when it is no longer a directory, or
    not the one the listing named (ino)."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise  # the caller records it as unreadable
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Unstable(name) from err
        return None
    if ino is not None and os.fstat(fd).st_ino != ino:
        os.close(fd)
        raise Unstable(name)
    return fd


class Fact(NamedTuple):
    flags: int
    ino: int
    size: int
    # The change time, not the modification time: the sandbox can set a
    # file's mtime back (touch -d), never its ctime.
    ctime_ns: int
    mode: int
    uid: int
    # sha256 of a watched file's content, a symlink's target
    extra: str = ""


class Dir(NamedTuple):
    ino: int
    ctime_ns: int
    facts: dict[str, Fact]


class Pair(NamedTuple):
    """One entry that changed between two walks (either side may be None)."""

    rel: str
    old: Fact | None
    new: Fact | None


class Tree:
    """The project's facts; ``dirs`` maps each walked directory (POSIX path
    relative to the root, "" for the root) to its identity and facts."""

    def __init__(
        self, root: str, uid: int, dirs: dict[str, Dir] | None = None, full_at: float = 0.0, policy: str = ""
    ) -> None:
        self.root = root
        self.uid = uid
        self.dirs: dict[str, Dir] = dirs if dirs is not None else {}
        self.full_at = full_at
        # What the masks were decided under: another policy means another walk.
        self.policy = policy

    # -- views ------------------------------------------------------------------

    def entries(self, mask: int) -> Iterator[tuple[str, Fact]]:
        for rel, record in self.dirs.items():
            prefix = rel + "/" if rel else ""
            for name, fact in record.facts.items():
                if fact.flags & mask:
                    yield prefix + name, fact

    def masked(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        files: list[str] = []
        dirs: list[str] = []
        for rel, fact in self.entries(MASKED | MASKED_DIR):
            (dirs if fact.flags & MASKED_DIR else files).append(rel)
        return tuple(sorted(files)), tuple(sorted(dirs))

    def paths(self, mask: int) -> tuple[str, ...]:
        return tuple(sorted(rel for rel, _ in self.entries(mask)))

    # -- persistence --------------------------------------------------------------

    def dumps(self) -> str:
        # In columns: most directories have no facts, and a project can have
        # tens of thousands of them; lists of numbers read and write quickly.
        records = self.dirs.values()
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "root": self.root,
            "uid": self.uid,
            "full_at": self.full_at,
            "policy": self.policy,
            "dirs": list(self.dirs),
            "inos": [d.ino for d in records],
            "ctimes": [d.ctime_ns for d in records],
            "facts": [
                [i, {n: list(f) for n, f in d.facts.items()}] for i, d in enumerate(records) if d.facts
            ],
        }
        # ensure_ascii: undecodable names (surrogate escapes) survive the round trip.
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str, root: str | None, uid: int, policy: str | None) -> Tree | None:
        """None when the text is not a tree of this root, user and secret
        policy (then the caller walks afresh)."""
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT or doc.get("version") != VERSION:
                return None
            if root is not None and doc.get("root") != root:
                return None
            if doc.get("uid") != uid or (policy is not None and doc.get("policy") != policy):
                return None
            rels, inos, ctimes = doc["dirs"], doc["inos"], doc["ctimes"]
            if not len(rels) == len(inos) == len(ctimes):
                return None
            none: dict[str, Fact] = {}  # shared: facts are never changed in place
            dirs = dict(zip(rels, map(Dir, inos, ctimes, itertools.repeat(none)), strict=True))
            for i, facts in doc["facts"]:
                dirs[rels[i]] = Dir(inos[i], ctimes[i], {n: Fact(*f) for n, f in facts.items()})
            return cls(str(doc["root"]), uid, dirs, float(doc["full_at"]), str(doc["policy"]))
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
            return None


class Walker:
    """Walks (a part of) a project under one secret policy, reusing what an
    earlier tree knew about unchanged files (content checks and hashes)."""

    def __init__(
        self, root_fd: int, uid: int, policy: patterns.Policy, blobs: str | None, extra: tuple[str, ...] = ()
    ) -> None:
        self.root_fd = root_fd
        self.extra = extra  # more surface directories (surface.Context)
        self.uid = uid
        self.policy = policy
        self.blobs = blobs
        self.started_ns = time.time_ns()
        f, d = policy.files, policy.dirs
        self._f_match, self._f_gate, self._f_all = f.names.match, f.gate, f.gate_all
        self._d_match, self._d_gate, self._d_all = d.names.match, d.gate, d.gate_all
        # For plain vendored directories (surface.Context.plain), where most of
        # a large project's files are: three string tests that tell a name
        # nothing can be decided by (not named like a secret, no surface kind,
        # no content check) from one that takes the full test.
        names = f.names.screen()
        self._screen: tuple[frozenset[str], tuple[str, ...], tuple[str, ...]] | None = None
        if names is not None and not f.gate_all:
            exact, prefixes, suffixes = names
            self._screen = (
                exact | f.gate | Context.PLAIN_NAMES,
                prefixes,
                suffixes + Context.PLAIN_SUFFIXES + patterns.PEM_SUFFIXES,
            )

    def open_dir(self, rel: str) -> int | None:
        """An fd of the directory rel, each component opened without following
        links; None when it is gone. Unstable when a component is no longer a
        directory (a link or a file took its place)."""
        fd = os.dup(self.root_fd)
        for part in rel.split("/") if rel else ():
            try:
                nxt = _open_child(fd, part, None)
            except PermissionError:
                nxt = None
            finally:
                os.close(fd)
            if nxt is None:
                return None
            fd = nxt
        return fd

    def walk(self, tree: Tree, rel: str, old: Tree | None) -> None:
        """Record rel (a directory) and everything below it into tree. Depth
        first, holding one descriptor per level, each directory opened from
        its parent's without following links."""
        fd = self.open_dir(rel)
        if fd is None:
            if self._denied(rel):
                self._unreadable(tree, rel)
            return
        frames: list[tuple[int, list[tuple[str, int]]]] = []
        try:
            frames.append((fd, self.scan(tree, rel, fd, old)))
            while frames:
                dir_fd, pending = frames[-1]
                if not pending:
                    os.close(dir_fd)
                    frames.pop()
                    continue
                child, ino = pending.pop()
                try:
                    child_fd = _open_child(dir_fd, child.rpartition("/")[2], ino)
                except PermissionError:
                    self._unreadable(tree, child)
                    continue
                if child_fd is None:
                    continue
                try:
                    grandchildren = self.scan(tree, child, child_fd, old)
                except BaseException:
                    os.close(child_fd)
                    raise
                frames.append((child_fd, grandchildren))
        finally:
            for dir_fd, _ in frames:
                os.close(dir_fd)

    def scan(self, tree: Tree, rel: str, dir_fd: int, old: Tree | None) -> list[tuple[str, int]]:
        """List one directory: its facts into tree; returns its subdirectories
        to walk (those not masked, not .git/objects, not the top-level .git),
        with the inode the listing gave each.
        This loop runs once per entry of the project: what can be decided per
        directory is (surface.Context), and a plain file costs one lstat and a
        few comparisons."""
        try:
            st = os.fstat(dir_fd)
            listing = list(os.scandir(dir_fd))
        except OSError:
            self._unreadable(tree, rel)
            return []
        facts: dict[str, Fact] = {}
        racy = st.st_ctime_ns >= self.started_ns - RACY_NS
        tree.dirs[rel] = Dir(st.st_ino, 0 if racy else st.st_ctime_ns, facts)
        prefix = rel + "/" if rel else ""
        context = Context(rel, self.extra)
        vendored = context.vendored
        in_git = context.git_dir or ".git" in rel.split("/")
        sniffing = self.policy.sniffing
        old_facts = old.dirs[rel].facts if old is not None and rel in old.dirs else {}
        policy = self.policy
        uid = self.uid
        f_match, f_gate, f_all = self._f_match, self._f_gate, self._f_all
        screen = self._screen if context.plain and vendored else None
        s_exact, s_prefixes, s_suffixes = screen if screen is not None else (frozenset(), (), ())
        subdirs: list[tuple[str, int]] = []
        for entry in listing:
            name = entry.name
            lname = name.lower()
            if (
                screen is not None
                and entry.is_file(follow_symlinks=False)
                and not (lname in s_exact or lname.startswith(s_prefixes) or lname.endswith(s_suffixes))
            ):
                # A regular file whose name decides nothing, in a plain vendored directory.
                try:
                    fst = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not fst.st_mode & 0o7111 and fst.st_uid == uid and fst.st_nlink == 1:
                    continue
                fact = self._file_fact(
                    dir_fd, name, prefix + name, lname, fst, True, None, False, 0, in_git, old_facts.get(name)
                )
                if fact is not None:
                    facts[name] = fact
                continue
            if entry.is_dir(follow_symlinks=False):
                path = prefix + name
                if not rel and name == ".git":
                    continue  # the project's own repository is a copy-on-write layer
                if in_git and name == "objects":
                    continue  # object names are hashes, never secrets; there can be very many
                if (self._d_all or lname in self._d_gate or self._d_match(lname)) and policy.dir(
                    lname, path.lower()
                ):
                    facts[name] = Fact(MASKED_DIR, 0, 0, 0, 0, 0)
                    continue
                if name == ".git":
                    facts[name] = Fact(REPO, 0, 0, 0, 0, 0)
                subdirs.append((path, entry.inode()))
                continue
            if entry.is_symlink():
                fact = self._link_fact(dir_fd, entry, prefix + name, lname, rel, context)
                if fact is not None:
                    facts[name] = fact
                continue
            regular = entry.is_file(follow_symlinks=False)
            masked = (
                regular
                and (f_all or lname in f_gate or f_match(lname))
                and policy.file(lname, (prefix + name).lower())
            )
            kind = context.kind(name, lname)
            if masked and kind is None:
                facts[name] = Fact(MASKED, 0, 0, 0, 0, 0)
                continue
            try:
                fst = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            limit = patterns.sniff_limit(lname, vendored) if sniffing and regular and not masked else 0
            if (
                kind is None
                and not limit
                and regular
                and not fst.st_mode & 0o7111
                and fst.st_uid == uid
                and fst.st_nlink == 1
            ):
                continue  # a plain file of the user's: nothing to record
            before = old_facts.get(name)
            fact = self._file_fact(
                dir_fd, name, prefix + name, lname, fst, regular, kind, masked, limit, in_git, before
            )
            if fact is not None:
                facts[name] = fact
        return subdirs

    def _denied(self, rel: str) -> bool:
        """Whether rel, which could not be opened, is a directory that exists."""
        try:
            st = os.stat(rel, dir_fd=self.root_fd, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode)

    @staticmethod
    def _unreadable(tree: Tree, rel: str) -> None:
        """Record in rel's parent that rel could not be listed. The parent's
        facts may be shared with the tree a refresh started from: replaced,
        never changed in place."""
        parent, _, name = rel.rpartition("/")
        record = tree.dirs.get(parent)
        if rel and record is not None:
            facts = {**record.facts, name: Fact(UNREADABLE, 0, 0, 0, 0, 0)}
            tree.dirs[parent] = Dir(record.ino, record.ctime_ns, facts)

    def _link_fact(
        self, dir_fd: int, entry: os.DirEntry[str], path: str, lname: str, rel: str, context: Context
    ) -> Fact | None:
        flags = LINK
        policy = self.policy
        if policy.active and (policy.file(lname, path.lower()) or policy.dir(lname, path.lower())):
            flags |= MASKED_LINK
        try:
            target = os.readlink(entry.name, dir_fd=dir_fd)
            lst = entry.stat(follow_symlinks=False)
        except OSError:
            return None
        if _escapes(rel, target):
            flags |= OUTSIDE
        kind = context.kind(entry.name, lname)
        if kind is not None:
            flags |= _KIND_FLAG[kind]
        if entry.name == ".git":
            flags |= REPO
        if lst.st_uid != self.uid:
            flags |= FOREIGN
        if flags == LINK:
            return None
        return Fact(flags, lst.st_ino, lst.st_size, lst.st_ctime_ns, 0, lst.st_uid, target)

    def _file_fact(
        self,
        dir_fd: int,
        name: str,
        path: str,
        lname: str,
        fst: os.stat_result,
        regular: bool,
        kind: SurfaceKind | None,
        masked: bool,
        limit: int,
        in_git: bool,
        before: Fact | None,
    ) -> Fact | None:
        """The facts of one non-directory. ``masked``: by its name; a file that
        is host-executed too keeps its class (and its digest, without a copy of
        the content), so that a session cannot pass a hook as a secret."""
        mode = fst.st_mode
        flags = 0
        if not regular:
            flags |= SPECIAL
        elif mode & 0o111:
            flags |= EXEC
        if mode & (stat.S_ISUID | stat.S_ISGID) and regular:
            flags |= SETID
        if fst.st_uid != self.uid:
            flags |= FOREIGN
        if regular and fst.st_nlink > 1 and not in_git:
            flags |= HARDLINK
        if name == ".git":
            flags |= REPO
        ctime = 0 if fst.st_ctime_ns >= self.started_ns - RACY_NS else fst.st_ctime_ns
        same = (
            before is not None
            and before.ctime_ns
            and (before.ino, before.size, before.ctime_ns) == (fst.st_ino, fst.st_size, fst.st_ctime_ns)
        )
        secret = masked
        if masked:
            flags |= MASKED
        elif limit and not self.policy.unmasked(lname, path.lower()):
            if same and before is not None and before.flags & SNIFFED:
                secret = bool(before.flags & MASKED)
            else:
                secret = patterns.sniff(lname, fst.st_size, patterns.read_head(dir_fd, name, limit))
            flags |= SNIFFED | (MASKED if secret else 0)
        if secret:
            flags &= ~HARDLINK  # the sandbox sees the mask, not the other copies
            if kind is None:
                return Fact(flags, fst.st_ino, fst.st_size, ctime, mode & 0o7777, fst.st_uid)
        extra = ""
        if kind is not None:
            flags |= _KIND_FLAG[kind]
            if regular:
                extra = (
                    before.extra
                    if same and before is not None and before.extra
                    else self._digest(dir_fd, name, fst.st_size, keep=not secret)
                )
        if not flags:
            return None
        return Fact(flags, fst.st_ino, fst.st_size, ctime, mode & 0o7777, fst.st_uid, extra)

    def _digest(self, dir_fd: int, name: str, size: int, keep: bool = True) -> str:
        """sha256 of a watched file; a copy under blobs (content-addressed) for
        files up to BLOB_LIMIT, so that a change can be shown or undone later
        (not for secrets: keep=False)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return ""
        digest = hashlib.sha256()
        kept: list[bytes] | None = [] if keep and size <= BLOB_LIMIT and self.blobs else None
        try:
            while chunk := os.read(fd, 1 << 16):
                digest.update(chunk)
                if kept is not None:
                    kept.append(chunk)
        except OSError:
            return ""
        finally:
            os.close(fd)
        sha = digest.hexdigest()
        if kept is not None and self.blobs is not None:
            store_blob(self.blobs, sha, b"".join(kept))
        return sha

    # -- whole-tree operations ------------------------------------------------------

    def full(self, root: str, policy: str, old: Tree | None = None) -> Tree:
        tree = Tree(root, self.uid, full_at=time.time(), policy=policy)
        self.walk(tree, "", old)
        return tree

    def refresh(self, old: Tree) -> tuple[Tree, list[Pair]]:
        """A new tree from an old one, re-listing only directories whose
        identity or ctime changed, and re-stat'ing recorded files in the
        others. Returns the new tree and every entry whose facts differ."""
        new = Tree(old.root, old.uid, {}, old.full_at, old.policy)
        changed: list[str] = []
        root_fd = self.root_fd
        for rel, record in old.dirs.items():
            try:
                st = os.stat(rel or ".", dir_fd=root_fd, follow_symlinks=False)
            except OSError:
                continue  # gone, with what was below it
            if not stat.S_ISDIR(st.st_mode) or st.st_ino != record.ino:
                continue  # replaced: its parent changed too and is re-listed
            if st.st_ctime_ns != record.ctime_ns:
                changed.append(rel)
            else:
                new.dirs[rel] = record  # shared until a re-stat below changes it
        # Re-list the changed directories. A subdirectory that was not known
        # under that name is walked whole; a known one keeps its own record.
        denied: list[str] = []
        for rel in changed:
            fd = self.open_dir(rel)
            if fd is None:
                if self._denied(rel):
                    denied.append(rel)
                continue
            try:
                subdirs = self.scan(new, rel, fd, old)
            finally:
                os.close(fd)
            for child, _ in subdirs:
                known = old.dirs.get(child)
                if known is None or (child not in new.dirs and child not in changed):
                    self.walk(new, child, None)
        # Recorded once every parent that remains is in the new tree.
        for rel in denied:
            self._unreadable(new, rel)
        # A directory that could not be listed may be readable now: its mode
        # changed its own ctime, not its parent's.
        for rel, _ in list(new.entries(UNREADABLE)):
            if rel in denied:
                continue
            fd = self.open_dir(rel)
            if fd is None:
                continue
            os.close(fd)
            parent, _, name = rel.rpartition("/")
            record = new.dirs[parent]
            facts = {n: f for n, f in record.facts.items() if n != name}
            new.dirs[parent] = Dir(record.ino, record.ctime_ns, facts)
            self.walk(new, rel, None)
        # Files hutch records may have changed in place (content, mode, links):
        # one stat by path each; only a directory with a change is entered the
        # safe way (its components opened without following links).
        relisted = set(changed)
        for rel in list(new.dirs):
            record = new.dirs[rel]
            if rel in relisted or not record.facts or not self._moved(rel, record.facts):
                continue
            fd = self.open_dir(rel)
            if fd is None:
                continue
            try:
                facts = self._restat(rel, fd, record.facts)
            finally:
                os.close(fd)
            if facts is not record.facts:
                new.dirs[rel] = Dir(record.ino, record.ctime_ns, facts)
        return new, diff(old, new)

    def _moved(self, rel: str, facts: dict[str, Fact]) -> bool:
        """Whether a recorded file in rel looks changed, by a stat of its path."""
        prefix = rel + "/" if rel else ""
        root_fd = self.root_fd
        for name, fact in facts.items():
            if not fact.flags & RESTAT or fact.flags & LINK:
                continue
            try:
                fst = os.stat(prefix + name, dir_fd=root_fd, follow_symlinks=False)
            except OSError:
                return True
            if (fst.st_ino, fst.st_size, fst.st_ctime_ns, fst.st_mode & 0o7777, fst.st_uid) != (
                fact.ino, fact.size, fact.ctime_ns, fact.mode, fact.uid
            ):  # fmt: skip
                return True
        return False

    def _restat(self, rel: str, fd: int, facts: dict[str, Fact]) -> dict[str, Fact]:
        """facts itself when nothing changed, else an updated copy."""
        result = facts
        for name, fact in facts.items():
            if not fact.flags & RESTAT or fact.flags & LINK:
                continue
            try:
                fst = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # gone: its directory's ctime changed and it was re-listed
            if (fst.st_ino, fst.st_size, fst.st_ctime_ns, fst.st_mode & 0o7777, fst.st_uid) == (
                fact.ino,
                fact.size,
                fact.ctime_ns,
                fact.mode,
                fact.uid,
            ):
                continue
            path = f"{rel}/{name}" if rel else name
            context = Context(rel, self.extra)
            lname = name.lower()
            regular = stat.S_ISREG(fst.st_mode)
            masked = regular and self.policy.file(lname, path.lower())
            limit = patterns.sniff_limit(lname, context.vendored) if self.policy.sniffing and regular else 0
            updated = self._file_fact(
                fd,
                name,
                path,
                lname,
                fst,
                regular,
                context.kind(name, lname),
                masked,
                limit,
                ".git" in rel.split("/"),
                fact,
            )
            if result is facts:
                result = dict(facts)
            if updated is None:
                del result[name]
            else:
                result[name] = updated
        return result


def diff(old: Tree, new: Tree) -> list[Pair]:
    """Entries whose facts differ between two trees (directories compared
    only through the facts recorded in them)."""
    pairs: list[Pair] = []
    for rel, record in new.dirs.items():
        before = old.dirs.get(rel)
        prefix = rel + "/" if rel else ""
        old_facts = before.facts if before is not None and before.ino == record.ino else {}
        if old_facts is record.facts:
            continue
        for name, fact in record.facts.items():
            was = old_facts.get(name)
            if was != fact:
                pairs.append(Pair(prefix + name, was, fact))
        for name, was in old_facts.items():
            if name not in record.facts:
                pairs.append(Pair(prefix + name, was, None))
    for rel, record in old.dirs.items():
        now = new.dirs.get(rel)
        if now is None or now.ino != record.ino:
            # Gone, or another directory under the same name: its entries went with it.
            prefix = rel + "/" if rel else ""
            left = now.facts if now is not None else {}
            pairs += [Pair(prefix + n, f, None) for n, f in record.facts.items() if n not in left]
    return pairs


def _escapes(rel_dir: str, target: str) -> bool:
    """Whether a link in rel_dir pointing at target leaves the project, by its
    text: absolute, or climbing above the root."""
    if target.startswith("/"):
        return True
    depth = len(rel_dir.split("/")) if rel_dir else 0
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def store_blob(directory: str, sha: str, data: bytes) -> None:
    """Keep a copy of a watched file's content, when there is room: without
    it a change is still found, only not shown as a diff or undone."""
    path = os.path.join(directory, sha)
    if os.path.exists(path):
        return
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def read_blob(directory: str, sha: str) -> bytes | None:
    try:
        with open(os.path.join(directory, sha), "rb") as handle:
            return handle.read()
    except OSError:
        return None
