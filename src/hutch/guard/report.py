"""What a session changed that the host could later run or trip over.

The findings are computed from two walks of the project (hutch.guard.tree)
and from the `.git` layer's decisions (hutch.gitlayer); this module turns
them into changes, most dangerous first, and into lines for a terminal.
File names come from the sandbox: every one is escaped before it is printed,
so that a name cannot move the cursor, set the title or write the clipboard.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple

from hutch.guard import tree as t
from hutch.guard.surface import VENDORED

ChangeKind = Literal[
    "surface",
    "git",
    "repo",
    "setuid",
    "build",
    "startup",
    "executable",
    "link-outside",
    "foreign-owner",
    "hardlink",
]

# Most dangerous first.
RANK: dict[str, int] = {
    "surface": 0,
    "git": 1,
    "repo": 2,
    "setuid": 3,
    "startup": 4,
    "build": 5,
    "link-outside": 6,
    "executable": 7,
    "foreign-owner": 8,
    "hardlink": 9,
}


class Change(NamedTuple):
    kind: ChangeKind
    path: str  # relative to the project root
    detail: str
    # "new", "modified" or "deleted"
    change: str = "modified"


def display(text: str) -> str:
    """text with every non-printable character escaped (control characters,
    escape sequences, bidirectional overrides, undecodable bytes)."""
    if text.isprintable():
        return text
    out: list[str] = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        else:
            code = ord(ch)
            if 0xDC80 <= code <= 0xDCFF:  # a byte the file system name could not decode
                out.append(f"\\x{code - 0xDC00:02x}")
            elif code <= 0xFF:
                out.append(f"\\x{code:02x}")
            else:
                out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return "".join(out)


def changes(pairs: Iterable[t.Pair]) -> list[Change]:
    """The findings among the entries two walks saw differently."""
    found: list[Change] = []
    for rel, old, new in pairs:
        if new is None:
            if old is not None and old.flags & t.SURFACE:
                found.append(Change("surface", rel, "deleted", "deleted"))
            continue
        flags = new.flags
        was = old.flags if old is not None else 0
        created = old is None
        change = "new" if created else "modified"
        serious = False
        if flags & t.SURFACE and (created or _content_changed(old, new)):
            found.append(Change("surface", rel, _describe(new, created), change))
            serious = True
        if flags & t.REPO and not was & t.REPO:
            found.append(
                Change(
                    "repo",
                    rel,
                    "a new git repository: git on the host reads its config and runs its hooks there",
                    change,
                )
            )
            serious = True
        if flags & t.SETID and (created or not was & t.SETID):
            found.append(Change("setuid", rel, f"setuid/setgid bit (mode {new.mode:04o})", change))
            serious = True
        if flags & t.STARTUP and (created or _content_changed(old, new)):
            found.append(Change("startup", rel, _describe(new, created), change))
            serious = True
        if flags & t.BUILD and (created or _content_changed(old, new)):
            found.append(Change("build", rel, _describe(new, created), change))
            serious = True
        if flags & t.OUTSIDE and (
            created or not was & t.OUTSIDE or (old is not None and old.extra != new.extra)
        ):
            found.append(Change("link-outside", rel, f"-> {new.extra}", change))
        if not serious and flags & t.EXEC and (created or not was & t.EXEC or _content_changed(old, new)):
            what = (
                "new executable"
                if created
                else ("exec bit added" if not was & t.EXEC else "executable changed")
            )
            found.append(Change("executable", rel, f"{what} (mode {new.mode:04o})", change))
        if flags & t.FOREIGN and (created or not was & t.FOREIGN):
            found.append(Change("foreign-owner", rel, f"owned by uid {new.uid}", change))
        if flags & t.HARDLINK and (created or not was & t.HARDLINK):
            found.append(Change("hardlink", rel, "hard-linked from outside the project", change))
    return sorted(found, key=order)


def _content_changed(old: t.Fact | None, new: t.Fact) -> bool:
    if old is None:
        return True
    if old.extra and new.extra:
        return old.extra != new.extra or old.mode != new.mode
    return (old.ino, old.size, old.ctime_ns, old.mode) != (new.ino, new.size, new.ctime_ns, new.mode)


def _describe(fact: t.Fact, created: bool) -> str:
    what = "new" if created else "modified"
    if fact.flags & t.LINK:
        return f"{what} symlink -> {fact.extra}"
    if fact.flags & t.SPECIAL:
        return f"{what} special file"
    return f"{what} file (mode {fact.mode:04o})"


def order(change: Change) -> tuple[int, bool, str]:
    vendored = not VENDORED.isdisjoint(change.path.split("/"))
    return (RANK[change.kind], vendored, change.path)


def format_changes(found: Iterable[Change], *, limit: int = 20) -> str:
    """One line per change, most dangerous first; at most ``limit`` lines per
    kind, then a count of the rest. Empty string when nothing changed."""
    lines: list[str] = []
    shown: dict[str, int] = {}
    hidden: dict[str, int] = {}
    for change in sorted(found, key=order):
        if shown.get(change.kind, 0) >= limit:
            hidden[change.kind] = hidden.get(change.kind, 0) + 1
            continue
        shown[change.kind] = shown.get(change.kind, 0) + 1
        lines.append(f"  {change.kind:<13} {display(change.path)}  {display(change.detail)}")
    for kind, count in sorted(hidden.items(), key=lambda kv: RANK[kv[0]]):
        lines.append(f"  {kind:<13} ... and {count} more")
    return "\n".join(lines)


def names(paths: Iterable[str], shown: int = 5) -> str:
    listed = list(paths)
    text = ", ".join(display(p) for p in listed[:shown])
    return text + (f" and {len(listed) - shown} more" if len(listed) > shown else "")
