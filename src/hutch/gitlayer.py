"""What a session's `.git` layer may hand back to the host's repository.

Inside the sandbox the project's `.git` is a copy-on-write layer (hutch.layers):
git works as usual, and nothing the session writes there reaches the host
during the session. Afterwards hutch carries across only what git needs for
the agent's work to be there — new objects (checked against their names),
moved refs (valid names, object ids as content, and only where the host's ref
did not move meanwhile), HEAD, the index, reflogs and the small state files of
a commit or merge. Everything else the session wrote under `.git` — config,
hooks, and every file through which git finds another config, hooks or object
store (commondir, gitdir, worktrees/, modules/, objects/info/alternates), rebase
and sequencer todo lists (their `exec` lines run on `git rebase --continue`) —
stays away from the host: the caller sets it aside and reports it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zlib
from collections.abc import Iterable
from typing import Literal, NamedTuple

from hutch import layers
from hutch.paths import read_regular

# Small state files git writes during commits, merges and fetches: object ids
# and messages, nothing git executes.
STATE_FILES = frozenset(
    {
        "ORIG_HEAD",
        "FETCH_HEAD",
        "COMMIT_EDITMSG",
        "MERGE_HEAD",
        "MERGE_MSG",
        "MERGE_MODE",
        "CHERRY_PICK_HEAD",
        "REVERT_HEAD",
        "AUTO_MERGE",
        "SQUASH_MSG",
    }
)
_PACK_SUFFIXES = (".pack", ".idx", ".rev", ".mtimes")
_HEX = frozenset("0123456789abcdef")
_BAD_REF_CHARS = frozenset(" ~^:?*[\\\x7f")
_OBJECT_TYPES = (b"blob", b"tree", b"commit", b"tag")
_MAX_TEXT = 1 << 20

Outcome = Literal["carried", "kept", "conflict", "skipped"]


class Decision(NamedTuple):
    """What happened to one path the session wrote under `.git`."""

    rel: str  # relative to .git, POSIX form
    outcome: Outcome
    reason: str
    # "new", "modified" or "deleted", as the session left it
    change: str = "modified"


class RepoState(NamedTuple):
    """The host repository's refs when the session started: hutch moves a ref
    only if the host left it where it was."""

    head: str | None  # HEAD's content
    refs: dict[str, str]
    index_id: tuple[int, int, int] | None  # (inode, size, mtime_ns) of .git/index


def is_repository(gitdir: str) -> bool:
    try:
        st = os.lstat(os.path.join(gitdir, "HEAD"))
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode)


def object_hex_length(gitdir: str) -> int:
    """40 for SHA-1 repositories, 64 for SHA-256 (`extensions.objectFormat`)."""
    from hutch.gitconfig import value

    fmt = value(os.path.join(gitdir, "config"), "extensions", "objectformat")
    return 64 if (fmt or "").lower() == "sha256" else 40


def capture(gitdir: str) -> RepoState:
    """The host's HEAD, refs and index identity, before the session starts."""
    head = _read_text(os.path.join(gitdir, "HEAD"))
    try:
        st = os.lstat(os.path.join(gitdir, "index"))
        index: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        index = None
    return RepoState(head, host_refs(gitdir), index)


def host_refs(gitdir: str) -> dict[str, str]:
    refs = _packed(_read_small(os.path.join(gitdir, "packed-refs")))
    refs.update(_loose_refs(gitdir, "refs"))
    return refs


def _read_small(path: str, limit: int = 64 << 20) -> bytes | None:
    try:
        return read_regular(path, limit, follow=False)
    except OSError:
        return None


def _read_text(path: str) -> str | None:
    data = _read_small(path, 4096)
    return None if data is None else data.decode("utf-8", "surrogateescape")


def _packed(data: bytes | None) -> dict[str, str]:
    refs: dict[str, str] = {}
    if not data:
        return refs
    for line in data.decode("utf-8", "replace").splitlines():
        if not line or line[0] in "#^":
            continue
        oid, _, name = line.partition(" ")
        refs[name] = oid
    return refs


def _loose_refs(gitdir: str, rel: str) -> dict[str, str]:
    refs: dict[str, str] = {}
    stack = [rel]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(os.path.join(gitdir, current)) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            name = f"{current}/{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                stack.append(name)
            elif entry.is_file(follow_symlinks=False) and not entry.name.endswith(".lock"):
                content = _read_small(entry.path, 4096)
                if content is not None:
                    refs[name] = content.decode("utf-8", "replace").strip()
    return refs


# --------------------------------------------------------------------------
# Checks


def valid_ref_name(name: str) -> bool:
    """git check-ref-format's rules, for names under refs/."""
    if not name.startswith("refs/") or name.endswith(("/", ".")) or "//" in name:
        return False
    if ".." in name or "@{" in name or any(c in _BAD_REF_CHARS or ord(c) < 32 for c in name):
        return False
    return all(part and not part.startswith(".") and not part.endswith(".lock") for part in name.split("/"))


def _is_oid(text: str, length: int) -> bool:
    return len(text) == length and _HEX.issuperset(text)


def ref_value(content: bytes, length: int) -> str | None:
    """The value of a loose ref file: an object id, or `ref: refs/...`."""
    text = content.decode("ascii", "replace").strip()
    if _is_oid(text, length):
        return text
    if text.startswith("ref: ") and valid_ref_name(text[5:].strip()):
        return "ref: " + text[5:].strip()
    return None


def packed_refs_valid(content: bytes, length: int) -> bool:
    for line in content.decode("ascii", "replace").splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("^"):
            if not _is_oid(line[1:], length):
                return False
            continue
        oid, _, name = line.partition(" ")
        if not _is_oid(oid, length) or not valid_ref_name(name):
            return False
    return True


def loose_object_valid(path: str, name: str, length: int) -> bool:
    """A zlib stream of `TYPE SIZE\\0CONTENT` whose hash is its name."""
    digest = hashlib.sha256() if length == 64 else hashlib.sha1()
    inflater = zlib.decompressobj()
    header: bytes | None = None
    pending = b""
    body = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 16):
                data = inflater.decompress(chunk)
                if header is None:
                    pending += data
                    if b"\0" not in pending:
                        if len(pending) > 64:
                            return False
                        continue
                    header, _, data = pending.partition(b"\0")
                    digest.update(header + b"\0")
                digest.update(data)
                body += len(data)
            tail = inflater.flush()
    except (OSError, zlib.error):
        return False
    if header is None or not inflater.eof:
        return False
    digest.update(tail)
    body += len(tail)
    kind, _, size = header.partition(b" ")
    if kind not in _OBJECT_TYPES or not size.isdigit() or int(size) != body:
        return False
    return digest.hexdigest() == name


def _file_digest(path: str, length: int, upto: int) -> bytes:
    digest = hashlib.sha256() if length == 64 else hashlib.sha1()
    with open(path, "rb") as handle:
        left = upto
        while left > 0:
            chunk = handle.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.digest()


def pack_valid(pack: str, idx: str, length: int) -> bool:
    """The pack's header and trailing checksum, and an index (v2) that names
    this pack's checksum and checks out itself."""
    raw = length // 2
    try:
        pack_size = os.path.getsize(pack)
        idx_size = os.path.getsize(idx)
        with open(pack, "rb") as handle:
            head = handle.read(8)
            handle.seek(pack_size - raw)
            pack_sum = handle.read(raw)
        with open(idx, "rb") as handle:
            magic = handle.read(8)
            handle.seek(idx_size - 2 * raw)
            idx_pack_sum = handle.read(raw)
            idx_sum = handle.read(raw)
    except OSError:
        return False
    if head[:4] != b"PACK" or int.from_bytes(head[4:8], "big") not in (2, 3):
        return False
    if magic != b"\377tOc\0\0\0\2" or idx_pack_sum != pack_sum:
        return False
    try:
        return (
            _file_digest(pack, length, pack_size - raw) == pack_sum
            and _file_digest(idx, length, idx_size - raw) == idx_sum
        )
    except OSError:
        return False


def index_valid(content: bytes, length: int) -> bool:
    """A git index (versions 2 to 4) whose checksum holds and that is not a
    split index (which points at a shared index file elsewhere in .git)."""
    raw = length // 2
    if len(content) < 12 + raw or content[:4] != b"DIRC":
        return False
    version = int.from_bytes(content[4:8], "big")
    if version not in (2, 3, 4):
        return False
    digest = hashlib.sha256() if length == 64 else hashlib.sha1()
    digest.update(content[:-raw])
    if digest.digest() != content[-raw:]:
        return False
    names = _extension_names(content, version, raw)
    return names is not None and b"link" not in names


def _extension_names(content: bytes, version: int, raw: int) -> list[bytes] | None:
    """The signatures of an index's extensions, found by walking its entries;
    None when the entries do not parse."""
    count = int.from_bytes(content[8:12], "big")
    end = len(content) - raw
    at = 12
    fixed = 40 + raw + 2
    for _ in range(count):
        if at + fixed > end:
            return None
        flags = int.from_bytes(content[at + fixed - 2 : at + fixed], "big")
        header = fixed + (2 if version >= 3 and flags & 0x4000 else 0)
        if version == 4:
            at += header
            while at < end and content[at] & 0x80:  # the prefix length, a varint
                at += 1
            at += 1
            nul = content.find(b"\0", at, end)
            if nul == -1:
                return None
            at = nul + 1
        else:
            nul = content.find(b"\0", at + header, end)
            if nul == -1:
                return None
            at += (header + (nul - at - header) + 8) // 8 * 8
    names: list[bytes] = []
    while at + 8 <= end:
        size = int.from_bytes(content[at + 4 : at + 8], "big")
        names.append(content[at : at + 4])
        at += 8 + size
    return names if at == end else None


def _text_ok(content: bytes) -> bool:
    return len(content) <= _MAX_TEXT and b"\0" not in content


# --------------------------------------------------------------------------
# Carrying


def carry(gitdir: str, upper: str, start: RepoState, session: str) -> list[Decision]:
    """Bring the allowed part of a session's `.git` upper layer into gitdir.

    Returns a decision for every file the session wrote, created or deleted
    under `.git` (directories are not listed). "kept" ones are for the caller
    to set aside; "conflict" ones were left as the host has them.
    """
    length = object_hex_length(gitdir)
    entries = list(layers.read(upper))
    decisions: list[Decision] = []
    objects: list[layers.Entry] = []
    packs: dict[str, set[str]] = {}
    refs_touched = False
    others: list[layers.Entry] = []
    for entry in entries:
        if entry.kind == "dir":
            continue
        rel = entry.rel
        if rel.endswith(".lock"):
            decisions.append(
                Decision(rel, "skipped", "a lock file left by an interrupted git command", "new")
            )
        elif rel.startswith("objects/"):
            if entry.kind == "whiteout":
                decisions.append(Decision(rel, "skipped", "hutch never deletes objects", "deleted"))
            elif _is_loose_object(rel, length):
                objects.append(entry)
            elif _pack_stem(rel, length) is not None and entry.kind == "file":
                stem, suffix = _pack_stem(rel, length) or ("", "")
                packs.setdefault(stem, set()).add(suffix)
            else:
                decisions.append(
                    _kept(
                        entry,
                        "not an object or pack file (alternates, graphs and "
                        "other object-store files stay away)",
                    )
                )
        elif rel.startswith("refs/") or rel == "packed-refs":
            refs_touched = True
        else:
            others.append(entry)

    decisions += _carry_objects(gitdir, upper, objects, length)
    decisions += _carry_packs(gitdir, upper, packs, length)
    if refs_touched:
        decisions += _carry_refs(gitdir, upper, entries, start, session, length)
    for entry in others:
        decisions.append(_carry_other(gitdir, upper, entry, start, length))
    return decisions


def _kept(entry: layers.Entry, reason: str) -> Decision:
    change = "deleted" if entry.kind == "whiteout" else "modified"
    return Decision(entry.rel, "kept", reason, change)


def _is_loose_object(rel: str, length: int) -> bool:
    parts = rel.split("/")
    return (
        len(parts) == 3
        and len(parts[1]) == 2
        and _HEX.issuperset(parts[1])
        and _is_oid(parts[1] + parts[2], length)
    )


def _pack_stem(rel: str, length: int) -> tuple[str, str] | None:
    if not rel.startswith("objects/pack/pack-") or rel.count("/") != 2:
        return None
    name = rel[len("objects/pack/") :]
    for suffix in _PACK_SUFFIXES:
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            if _is_oid(stem[len("pack-") :], length):
                return stem, suffix
    return None


def _install(src: str, dest: str, mode: int) -> bool:
    """Copy src to dest through a temporary name and link(): an existing dest
    (the same object, by name) is left alone. Returns whether dest is new."""
    directory = os.path.dirname(dest)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = os.path.join(directory, f".hutch-{os.getpid()}-{os.path.basename(dest)}.tmp")
    with open(src, "rb") as source, open(tmp, "xb") as target:
        while chunk := source.read(1 << 20):
            target.write(chunk)
    try:
        os.chmod(tmp, mode)
        os.link(tmp, dest)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def _carry_objects(gitdir: str, upper: str, objects: Iterable[layers.Entry], length: int) -> list[Decision]:
    decisions: list[Decision] = []
    for entry in objects:
        src = os.path.join(upper, entry.rel)
        name = entry.rel[len("objects/") :].replace("/", "")
        if entry.kind != "file" or not loose_object_valid(src, name, length):
            decisions.append(_kept(entry, "not a valid object: its content does not hash to its name"))
            continue
        _install(src, os.path.join(gitdir, entry.rel), 0o444)
        decisions.append(Decision(entry.rel, "carried", "object", "new"))
    return decisions


def _carry_packs(gitdir: str, upper: str, packs: dict[str, set[str]], length: int) -> list[Decision]:
    decisions: list[Decision] = []
    for stem, suffixes in sorted(packs.items()):
        rels = [f"objects/pack/{stem}{s}" for s in _PACK_SUFFIXES if s in suffixes]
        pack = os.path.join(upper, f"objects/pack/{stem}.pack")
        idx = os.path.join(upper, f"objects/pack/{stem}.idx")
        if not {".pack", ".idx"} <= suffixes or not pack_valid(pack, idx, length):
            decisions += [Decision(r, "kept", "an incomplete or damaged pack", "new") for r in rels]
            continue
        # The index last: git looks for packs through their .idx files.
        for suffix in (".pack", ".rev", ".mtimes", ".idx"):
            if suffix in suffixes:
                rel = f"objects/pack/{stem}{suffix}"
                _install(os.path.join(upper, rel), os.path.join(gitdir, rel), 0o444)
                decisions.append(Decision(rel, "carried", "pack", "new"))
    return decisions


def session_refs(
    gitdir: str, upper: str, entries: Iterable[layers.Entry], length: int
) -> dict[str, str] | None:
    """The refs as the sandbox saw them at the end: the host's loose refs with
    the upper's over them, and the upper's packed-refs if it wrote one. None
    when the upper holds a ref file that is not valid."""
    whiteouts: set[str] = set()
    opaque: list[str] = []
    loose: dict[str, str] = {}
    packed_entry: layers.Entry | None = None
    for entry in entries:
        if entry.rel == "packed-refs":
            packed_entry = entry
        elif not entry.rel.startswith("refs/"):
            continue
        elif entry.kind == "whiteout":
            whiteouts.add(entry.rel)
        elif entry.kind == "dir" and entry.opaque:
            opaque.append(entry.rel + "/")
        elif entry.kind == "file":
            content = _read_small(os.path.join(upper, entry.rel), 4096)
            value = ref_value(content or b"", length)
            if value is None or not valid_ref_name(entry.rel):
                return None
            loose[entry.rel] = value
        elif entry.kind != "dir":
            return None
    if packed_entry is None:
        packed = _packed(_read_small(os.path.join(gitdir, "packed-refs")))
    elif packed_entry.kind == "whiteout":
        packed = {}
    else:
        content = _read_small(os.path.join(upper, "packed-refs"))
        if content is None or not packed_refs_valid(content, length):
            return None
        packed = _packed(content)
    view = dict(packed)
    for name, value in _loose_refs(gitdir, "refs").items():
        hidden = name in whiteouts or any(name.startswith(o) for o in opaque)
        hidden = hidden or any(name.startswith(w + "/") for w in whiteouts)
        if not hidden:
            view[name] = value
    view.update(loose)
    for name in whiteouts:
        if name not in loose and packed_entry is None:
            # A deleted loose ref that was also packed: git rewrote packed-refs,
            # which would be in the upper; a whiteout alone means it was loose only.
            view.pop(name, None)
    return view


def _carry_refs(
    gitdir: str, upper: str, entries: list[layers.Entry], start: RepoState, session: str, length: int
) -> list[Decision]:
    view = session_refs(gitdir, upper, entries, length)
    if view is None:
        return [
            _kept(e, "refs the session wrote are not valid ref files")
            for e in entries
            if e.kind != "dir" and (e.rel.startswith("refs/") or e.rel == "packed-refs")
        ]
    now = host_refs(gitdir)
    decisions: list[Decision] = []
    deleted: list[str] = []
    for name in sorted(set(view) | set(start.refs)):
        want = view.get(name)
        have = now.get(name)
        if want == have:
            continue
        was = start.refs.get(name)
        if want is not None and want == was:
            continue  # the host moved it during the session; the session did not
        change = "deleted" if want is None else ("new" if was is None else "modified")
        if have != was:
            decisions.append(_conflict(gitdir, name, want, session, change))
            continue
        if want is None:
            deleted.append(name)
        else:
            _write_ref(gitdir, name, want)
        decisions.append(Decision(name, "carried", "ref", change))
    if deleted:
        _delete_refs(gitdir, deleted)
    return decisions


def _conflict(gitdir: str, name: str, want: str | None, session: str, change: str) -> Decision:
    if want is None or want.startswith("ref: "):
        return Decision(
            name, "conflict", "the host moved this ref during the session; left as the host has it", change
        )
    parked = f"refs/heads/hutch/{session}/{name.removeprefix('refs/').removeprefix('heads/')}"
    _write_ref(gitdir, parked, want)
    return Decision(
        name,
        "conflict",
        f"the host moved this ref during the session; the session's commit is on {parked}",
        change,
    )


def _locked_write(path: str, content: bytes) -> None:
    """Write a file the way git does: through PATH.lock, created exclusively,
    renamed into place; a git running on the host at the same time fails
    instead of losing an update."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    lock = path + ".lock"
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, content)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(lock)
        raise
    os.close(fd)
    os.rename(lock, path)


def _write_ref(gitdir: str, name: str, value: str) -> None:
    _locked_write(os.path.join(gitdir, name), value.encode() + b"\n")


def _delete_refs(gitdir: str, names: list[str]) -> None:
    for name in names:
        try:
            os.unlink(os.path.join(gitdir, name))
        except FileNotFoundError:
            pass
    packed_path = os.path.join(gitdir, "packed-refs")
    content = _read_small(packed_path)
    if content is None:
        return
    gone = set(names)
    kept: list[str] = []
    skip_peeled = False
    for line in content.decode("utf-8", "replace").splitlines():
        if line.startswith("^"):
            if not skip_peeled:
                kept.append(line)
            continue
        name = line.partition(" ")[2] if not line.startswith("#") else ""
        skip_peeled = name in gone
        if not skip_peeled:
            kept.append(line)
    if len(kept) != len(content.decode("utf-8", "replace").splitlines()):
        _locked_write(packed_path, ("\n".join(kept) + "\n").encode())


def _carry_other(gitdir: str, upper: str, entry: layers.Entry, start: RepoState, length: int) -> Decision:
    rel = entry.rel
    src = os.path.join(upper, rel)
    dest = os.path.join(gitdir, rel)
    exists = os.path.lexists(dest)
    change = "deleted" if entry.kind == "whiteout" else ("modified" if exists else "new")
    if entry.kind == "whiteout":
        if rel in STATE_FILES and exists:
            os.unlink(dest)
            return Decision(rel, "carried", "git state file", change)
        return _kept(entry, "the session deleted it; hutch deletes nothing under .git but refs")
    if entry.kind != "file":
        return Decision(rel, "kept", "not a regular file", change)
    content = _read_small(src)
    if content is None:
        return Decision(rel, "kept", "unreadable", change)
    if rel == "HEAD":
        value = ref_value(content, length)
        if value is None:
            return Decision(rel, "kept", "not a valid HEAD", change)
        if _read_text(dest) != start.head:
            return Decision(rel, "conflict", "the host changed HEAD during the session", change)
        _locked_write(dest, value.encode() + b"\n")
        return Decision(rel, "carried", "HEAD", change)
    if rel == "index":
        if not index_valid(content, length):
            return Decision(rel, "kept", "not a valid git index (or a split index)", change)
        try:
            st = os.lstat(dest)
            now: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            now = None
        if now != start.index_id:
            return Decision(
                rel,
                "conflict",
                "the host changed its index during the session; git rebuilds what it needs",
                change,
            )
        _locked_write(dest, content)
        return Decision(rel, "carried", "index", change)
    if rel.startswith("logs/"):
        ref = rel[len("logs/") :]
        if not (ref == "HEAD" or valid_ref_name(ref)) or not _text_ok(content):
            return Decision(rel, "kept", "not a reflog", change)
        current = _read_small(dest) or b""
        if not content.startswith(current):
            return Decision(rel, "skipped", "the host's reflog changed during the session", change)
        _locked_write(dest, content)
        return Decision(rel, "carried", "reflog", change)
    if rel in STATE_FILES or rel == "shallow":
        if not _text_ok(content) or (
            rel == "shallow"
            and not all(_is_oid(line, length) for line in content.decode("ascii", "replace").split())
        ):
            return Decision(rel, "kept", "not what git writes there", change)
        _locked_write(dest, content)
        return Decision(rel, "carried", "git state file", change)
    return Decision(rel, "kept", _why_kept(rel), change)


def _why_kept(rel: str) -> str:
    top = rel.split("/", 1)[0]
    reasons = {
        "config": "git config can run commands on the host (fsmonitor, pager, aliases, filters)",
        "config.worktree": "git config can run commands on the host",
        "hooks": "hooks run on the host",
        "commondir": "redirects git to another config, hooks and object store",
        "gitdir": "redirects git to another repository",
        "worktrees": "worktree metadata can redirect git elsewhere",
        "modules": "submodule repositories carry their own config and hooks",
        "info": "attributes and excludes pick drivers and files",
        "rebase-merge": "a rebase todo list runs its exec lines on the host",
        "rebase-apply": "rebase state runs on the host at --continue",
        "sequencer": "a cherry-pick/revert todo list can run commands",
    }
    return reasons.get(top, "not on the list of what hutch carries back (objects, refs, HEAD, index, logs)")
