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


def _sha_of(path: str) -> str:
    try:
        st = os.lstat(path)
    except OSError:
        return ""
    if stat.S_ISLNK(st.st_mode):
        return "link:" + os.readlink(path)
    if not stat.S_ISREG(st.st_mode):
        return "special"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_in(src: str, dest: str) -> tuple[int, str]:
    """Copy a file or symlink (never followed) to dest; (mode, link target)."""
    st = os.lstat(src)
    os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(src)
        return 0, target
    if not stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode), ""
    shutil.copyfile(src, dest, follow_symlinks=False)
    os.chmod(dest, 0o600)
    return stat.S_IMODE(st.st_mode), ""


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _write(path: str, data: bytes, mode: int) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.hutch-{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode & 0o777)  # never a setuid bit
    os.replace(tmp, path)


def set_aside(state: str, held: Held, project: str, rel: str, change: str, original: str, blobs: str) -> Item:
    """Move the session's version of project/rel into the quarantine and put
    back the version the host had (``original``: its sha256, "" when it had none).
    """
    src = os.path.join(project, rel)
    dest = os.path.join(held.files_dir(root(state)), rel)
    mode, link = (0, "")
    if change != "deleted" and os.path.lexists(src):
        mode, link = _copy_in(src, dest)
        _remove(src)
    left = ""
    if original:
        data = t.read_blob(blobs, original)
        if data is not None:
            _write(src, data, 0o644)
            left = original
    item = Item(rel, change, "surface", left, mode, link)
    held.items.append(item)
    return item


def hold_git(state: str, held: Held, gitdir: str, upper: str, rel: str, change: str) -> Item:
    """Keep a file the session wrote under .git (from the layer's upper)."""
    dest = os.path.join(held.files_dir(root(state)), ".git", rel)
    mode, link = (0, "")
    if change != "deleted":
        mode, link = _copy_in(os.path.join(upper, rel), dest)
    item = Item(f".git/{rel}", change, "git", _sha_of(os.path.join(gitdir, rel)), mode, link)
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
        dest = os.path.join(held.project, item.path)
        if _sha_of(dest) != item.left:
            refused.append(Refused(item.path, "the project's file changed since the session ended"))
            continue
        if item.change == "deleted":
            _remove(dest)
        elif item.link:
            _remove(dest)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.symlink(item.link, dest)
        else:
            with open(os.path.join(files, item.path), "rb") as handle:
                _write(dest, handle.read(), item.mode)
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
