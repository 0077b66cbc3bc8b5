"""Host-executed files a session created or changed wait for the user's yes.

Set aside, a file leaves the project for hutch's state dir (and the version
the project had before the session, when there was one, is put back); it
returns only through `hutch accept SESSION [PATH...]`, or a yes at the prompt
at the end of an interactive session. Files the session wrote under `.git`
that hutch does not carry back (config, hooks, ...) wait here the same way.

Nothing is lost: every set-aside file stays under
`$XDG_STATE_HOME/hutch/quarantine/SESSION/` until accepted or until `hutch gc`
is told to drop it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from typing import NamedTuple

from hutch.guard import tree as t
from hutch.guard.report import display

MANIFEST = "manifest.json"


class Item(NamedTuple):
    path: str  # relative to the project root
    change: str  # "new" | "modified" | "deleted"
    kind: str  # "surface" | "git"
    # sha256 of the project's file as hutch left it (the original put back),
    # "" when hutch left no file there; accept refuses if it changed since.
    left: str
    # mode of the set-aside file ("" content when the change is a deletion)
    mode: int
    link: str = ""  # the target, when the set-aside entry is a symlink
    # False when hutch could not keep a copy (its state dir full or read-only):
    # the session's version is gone, and nothing can be accepted.
    kept: bool = True


class Held(NamedTuple):
    session: str
    project: str
    created: float
    items: list[Item]

    def files_dir(self, base: str) -> str:
        return os.path.join(base, self.session, "files")


def root(state: str) -> str:
    return os.path.join(state, "quarantine")


def load(state: str, session: str) -> Held | None:
    try:
        with open(os.path.join(root(state), session, MANIFEST), encoding="utf-8") as handle:
            doc = json.load(handle)
        items = [Item(**item) for item in doc["items"]]
        return Held(doc["session"], doc["project"], float(doc["created"]), items)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def sessions(state: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root(state)) if load(state, n) is not None)
    except OSError:
        return []


def save(state: str, held: Held) -> None:
    directory = os.path.join(root(state), held.session)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if not held.items:
        shutil.rmtree(directory, ignore_errors=True)
        return
    doc = {
        "session": held.session,
        "project": held.project,
        "created": held.created,
        "items": [item._asdict() for item in held.items],
    }
    path = os.path.join(directory, MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(doc, handle)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def new_held(session: str, project: str) -> Held:
    return Held(session, project, time.time(), [])


class Place(NamedTuple):
    """A path in the project, reached the safe way: its directory opened
    component by component without following links (another session may be
    renaming directories as hutch works), and the name in it."""

    dir_fd: int
    name: str


def _place(project: str, rel: str, *, create: bool) -> Place | None:
    """The directory of project/rel, made when missing if create; None when
    it is missing, or a link or a file stands on the way."""
    parent, _, name = rel.rpartition("/")
    fd = os.open(project, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for part in parent.split("/") if parent else ():
        try:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                os.close(fd)
                return None
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                os.close(fd)
                return None
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nxt
    return Place(fd, name)


def _sha_at(place: Place | None) -> str:
    """What a file is, as accept compares it: sha256 of its content,
    "link:TARGET", "special", or "" when there is none."""
    if place is None:
        return ""
    try:
        st = os.stat(place.name, dir_fd=place.dir_fd, follow_symlinks=False)
    except OSError:
        return ""
    if stat.S_ISLNK(st.st_mode):
        return "link:" + os.readlink(place.name, dir_fd=place.dir_fd)
    if not stat.S_ISREG(st.st_mode):
        return "special"
    digest = hashlib.sha256()
    fd = os.open(place.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=place.dir_fd)
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()


def _sha_of(path: str) -> str:
    parent, name = os.path.split(path)
    place = _place(parent or "/", name, create=False) if os.path.isabs(path) else None
    try:
        return _sha_at(place)
    finally:
        if place is not None:
            os.close(place.dir_fd)


def _take(place: Place, dest: str) -> tuple[int, str]:
    """Copy the file or link (never followed) at place to dest; (mode, link target)."""
    st = os.stat(place.name, dir_fd=place.dir_fd, follow_symlinks=False)
    os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
    if stat.S_ISLNK(st.st_mode):
        return 0, os.readlink(place.name, dir_fd=place.dir_fd)
    if not stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode), ""
    fd = os.open(place.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=place.dir_fd)
    with os.fdopen(fd, "rb") as source, open(dest, "wb") as target:
        shutil.copyfileobj(source, target)
    os.chmod(dest, 0o600)
    return stat.S_IMODE(st.st_mode), ""


def _copy_in(src: str, dest: str) -> tuple[int, str]:
    """Copy a file or symlink of hutch's own (a layer's upper) to dest."""
    st = os.lstat(src)
    os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
    if stat.S_ISLNK(st.st_mode):
        return 0, os.readlink(src)
    if not stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode), ""
    shutil.copyfile(src, dest, follow_symlinks=False)
    os.chmod(dest, 0o600)
    return stat.S_IMODE(st.st_mode), ""


def _unlink(place: Place) -> None:
    try:
        os.unlink(place.name, dir_fd=place.dir_fd)
    except FileNotFoundError:
        pass


def _put(place: Place, data: bytes, mode: int) -> None:
    """Write a file at place through a temporary name beside it."""
    tmp = f".{place.name}.hutch-{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600, dir_fd=place.dir_fd)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        os.fchmod(handle.fileno(), mode & 0o777)  # never a setuid bit
    os.replace(tmp, place.name, src_dir_fd=place.dir_fd, dst_dir_fd=place.dir_fd)


def set_aside(
    state: str, held: Held, project: str, rel: str, change: str, original: str, blobs: str
) -> Item | None:
    """Move the session's version of project/rel into the quarantine and put
    back the version the host had (``original``: its sha256, "" when it had none).
    None when its directory cannot be reached without following a link (it
    stays, and is reported)."""
    dest = os.path.join(held.files_dir(root(state)), rel)
    mode, link = (0, "")
    left = ""
    place = _place(project, rel, create=False)
    if place is None:
        return None
    kept = True
    try:
        if change != "deleted" and _sha_at(place):
            try:
                mode, link = _take(place, dest)
            except OSError:
                kept = False  # no room to keep it: the host must not get it all the same
            _unlink(place)
        data = t.read_blob(blobs, original) if original else None
        if data is not None:
            _put(place, data, 0o644)
            left = original
    finally:
        os.close(place.dir_fd)
    item = Item(rel, change, "surface", left, mode, link, kept)
    held.items.append(item)
    return item


def hold_git(state: str, held: Held, gitdir: str, upper: str, rel: str, change: str) -> Item:
    """Keep a file the session wrote under .git (from the layer's upper)."""
    dest = os.path.join(held.files_dir(root(state)), ".git", rel)
    mode, link = (0, "")
    kept = True
    if change != "deleted":
        try:
            mode, link = _copy_in(os.path.join(upper, rel), dest)
        except OSError:
            kept = False  # it goes with the layer
    item = Item(f".git/{rel}", change, "git", _sha_of(os.path.join(gitdir, rel)), mode, link, kept)
    held.items.append(item)
    return item


class Refused(NamedTuple):
    path: str
    why: str


def accept(state: str, held: Held, paths: list[str] | None) -> tuple[list[Item], list[Refused]]:
    """Put set-aside files back into the project. Per file, it refuses where
    the project's file changed since hutch set the session's version aside."""
    done: list[Item] = []
    refused: list[Refused] = []
    wanted = None if not paths else {p.strip("/") for p in paths}
    files = held.files_dir(root(state))
    for item in list(held.items):
        if (
            wanted is not None
            and item.path not in wanted
            and not any(item.path.startswith(w + "/") for w in wanted)
        ):
            continue
        if not item.kept:
            refused.append(Refused(item.path, "hutch had no room to keep it when the session ended"))
            continue
        place = _place(held.project, item.path, create=item.change != "deleted")
        if place is None and item.change != "deleted":
            refused.append(Refused(item.path, "a link or a file stands where its directory was"))
            continue
        try:
            if _sha_at(place) != item.left:
                refused.append(Refused(item.path, "the project's file changed since the session ended"))
                continue
            if place is None:
                pass  # deleted, and already gone
            elif item.change == "deleted":
                _unlink(place)
            elif item.link:
                _unlink(place)
                os.symlink(item.link, place.name, dir_fd=place.dir_fd)
            else:
                with open(os.path.join(files, item.path), "rb") as handle:
                    _put(place, handle.read(), item.mode)
        finally:
            if place is not None:
                os.close(place.dir_fd)
        held.items.remove(item)
        done.append(item)
    if wanted is not None:
        known = {i.path for i in done} | {r.path for r in refused}
        for path in sorted(wanted):
            if not any(k == path or k.startswith(path + "/") for k in known):
                refused.append(Refused(path, "not held for this session"))
    save(state, held)
    return done, refused


def diff_text(state: str, held: Held, item: Item, blobs: str, limit: int = 60) -> str:
    """A unified diff of what accepting the item would change, for a terminal."""
    import difflib

    if item.change == "deleted":
        return f"  (the session deleted {display(item.path)})"
    if item.link:
        return f"  symlink -> {display(item.link)}"
    try:
        with open(os.path.join(held.files_dir(root(state)), item.path), "rb") as handle:
            new = handle.read()
    except OSError:
        return "  (no content kept)"
    old = t.read_blob(blobs, item.left) if item.left and item.kind == "surface" else None
    if old is None and item.kind == "git":
        try:
            with open(os.path.join(held.project, item.path), "rb") as handle:
                old = handle.read()
        except OSError:
            old = None
    if b"\0" in new or (old is not None and b"\0" in old):
        return f"  binary file, {len(new)} bytes"
    lines = list(
        difflib.unified_diff(
            (old or b"").decode("utf-8", "replace").splitlines(),
            new.decode("utf-8", "replace").splitlines(),
            fromfile=f"a/{item.path}" if old is not None else "/dev/null",
            tofile=f"b/{item.path}",
            lineterm="",
        )
    )
    shown = [display(line) for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"... {len(lines) - limit} more lines")
    return "\n".join("  " + line for line in shown)
