"""Find the secret files inside a project that the sandbox must not see.

The result only says what to mask; turning it into mounts (an empty read-only
file over each masked file, an empty read-only directory over each masked
directory) is the planner's job.

Pattern language (gitignore-like, but deliberately small):

- ``name`` (no ``/``) matches the basename at any depth, files and directories;
- ``name/`` matches directories only;
- ``a/b`` (a ``/`` that is not trailing) matches the path relative to the root;
- wildcards are :func:`fnmatch.fnmatchcase`: case-sensitive, ``*`` crosses ``/``.

The built-in file patterns match non-directories only, so that a virtualenv
called ``.env`` is not hidden whole; user patterns follow the rules above.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MASK_PATTERNS: tuple[str, ...] = (
    # dotenv files and their per-environment variants
    ".env",
    ".env.*",
    # private keys, certificates and key stores
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_ed25519*",
    "id_ecdsa*",
    "id_dsa*",
    "*.p12",
    "*.pfx",
    # Java/Android signing key stores: the same class of file as *.p12.
    "*.jks",
    "*.keystore",
    # credential files
    ".netrc",
    ".pgpass",
    ".pypirc",
    ".git-credentials",
    # A project-level .npmrc is where `npm login` and CI setups put
    # `//registry/:_authToken=`; losing its registry settings inside only
    # matters for private registries, which need that token anyway.
    ".npmrc",
    "credentials.json",
    "service-account*.json",
    "*.tfstate",
    "*.tfstate.backup",
    # Docker client config holds registry `auths`. Only the file, not `.docker/`:
    # many projects keep their Dockerfiles and compose files in a `.docker/` dir.
    ".docker/config.json",
    "*/.docker/config.json",
    # whole directories of keys and cloud credentials
    ".aws/",
    ".ssh/",
    ".gnupg/",
)

# Committed templates that hold placeholders, not values. These only lift the
# built-in masks: a user's own `mask` entry still wins over them.
DEFAULT_UNMASK_PATTERNS: tuple[str, ...] = (
    ".env.example",
    ".env.sample",
    ".env.template",
    ".env.dist",
    ".env.*.example",
    ".env.*.sample",
    ".env.*.template",
    # Public halves of the id_* key pairs.
    "*.pub",
)

_WILDCARDS = frozenset("*?[")


@dataclass(frozen=True)
class ScanResult:
    """What to mask in one project, as sorted POSIX paths relative to its root.

    ``files``: non-directories to cover with an empty read-only file.
    ``dirs``: directories to cover whole with an empty read-only directory; their
    contents were not walked.
    ``links``: symlinks whose name matches a mask; never followed, never masked.
    ``hardlinks``: unmasked regular files with more than one link: writing them
    inside the sandbox writes a file outside the project too.
    ``skipped``: directories that could not be read, so were not checked.
    """

    files: tuple[str, ...]
    dirs: tuple[str, ...]
    links: tuple[str, ...]
    hardlinks: tuple[str, ...]
    skipped: tuple[str, ...]


def check_patterns(patterns: Iterable[str]) -> None:
    """Raise ValueError naming the first pattern that cannot mean what it says."""
    for pattern in patterns:
        _check(pattern)


def _check(pattern: str) -> None:
    def bad(reason: str) -> ValueError:
        return ValueError(f"secret pattern {pattern!r}: {reason}")

    if not pattern or pattern == "/":
        raise bad("must not be empty")
    if pattern.startswith("/"):
        raise bad("must be relative to the project root (drop the leading '/')")
    if pattern.startswith("!"):
        raise bad("negation is not supported; list it under `unmask` instead")
    if "\0" in pattern:
        raise bad("must not contain a NUL character")
    # `**` would silently mean something else than in gitignore, so refuse it.
    if "**" in pattern:
        raise bad("'**' is not supported: a pattern without '/' matches at any depth")
    parts = pattern.removesuffix("/").split("/")
    if ".." in parts:
        raise bad("must not contain '..'")
    if "." in parts or "" in parts:
        # Paths are compared without `./` or `//`, so such a pattern never matches.
        raise bad("must not contain '.' or empty path components")


class _NameSet:
    """One set of fnmatch patterns, split so that the common shapes skip regex."""

    __slots__ = ("_exact", "_prefixes", "_regex", "_suffixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        suffixes: list[str] = []
        rest: list[str] = []
        for pattern in patterns:
            head, tail = pattern[:1], pattern[1:]
            body, last = pattern[:-1], pattern[-1:]
            if not _WILDCARDS.intersection(pattern):
                exact.add(pattern)
            elif head == "*" and not _WILDCARDS.intersection(tail):
                suffixes.append(tail)
            elif last == "*" and not _WILDCARDS.intersection(body):
                prefixes.append(body)
            else:
                rest.append(pattern)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)
        self._suffixes = tuple(suffixes)
        self._regex = re.compile("|".join(fnmatch.translate(p) for p in rest)) if rest else None

    def hit(self, text: str) -> bool:
        if text in self._exact:
            return True
        if self._suffixes and text.endswith(self._suffixes):
            return True
        if self._prefixes and text.startswith(self._prefixes):
            return True
        return self._regex is not None and self._regex.match(text) is not None


class _Paths:
    """Root-relative patterns. Most end in a literal name, which lets the basename
    rule the pattern out before the regex runs."""

    __slots__ = ("_gate", "_set")

    def __init__(self, patterns: Sequence[str]) -> None:
        self._set = _NameSet(patterns)
        lasts = [p.rsplit("/", 1)[1] for p in patterns]
        gated = all(not _WILDCARDS.intersection(last) for last in lasts)
        self._gate = frozenset(lasts) if gated else None

    def hit(self, name: str, rel: str) -> bool:
        if self._gate is not None and name not in self._gate:
            return False
        return self._set.hit(rel)


class _Matcher:
    __slots__ = ("_dir_names", "_dir_paths", "_file_names", "_file_paths")

    def __init__(self, patterns: Sequence[str], *, plain_matches_dirs: bool) -> None:
        file_names: list[str] = []
        file_paths: list[str] = []
        dir_names: list[str] = []
        dir_paths: list[str] = []
        for pattern in patterns:
            dir_only = pattern.endswith("/")
            stem = pattern.removesuffix("/")
            anchored = "/" in stem
            if not dir_only:
                (file_paths if anchored else file_names).append(stem)
            if dir_only or plain_matches_dirs:
                (dir_paths if anchored else dir_names).append(stem)
        self._file_names = _NameSet(file_names) if file_names else None
        self._file_paths = _Paths(file_paths) if file_paths else None
        self._dir_names = _NameSet(dir_names) if dir_names else None
        self._dir_paths = _Paths(dir_paths) if dir_paths else None

    def file(self, name: str, rel: str) -> bool:
        return (self._file_names is not None and self._file_names.hit(name)) or (
            self._file_paths is not None and self._file_paths.hit(name, rel)
        )

    def dir(self, name: str, rel: str) -> bool:
        return (self._dir_names is not None and self._dir_names.hit(name)) or (
            self._dir_paths is not None and self._dir_paths.hit(name, rel)
        )


class _Policy:
    """mask = (user mask | (default mask - default unmask)) - user unmask."""

    def __init__(self, mask: Sequence[str], unmask: Sequence[str], use_defaults: bool) -> None:
        self._user_mask = _Matcher(mask, plain_matches_dirs=True)
        self._user_unmask = _Matcher(unmask, plain_matches_dirs=True)
        default_mask = DEFAULT_MASK_PATTERNS if use_defaults else ()
        self._default_mask = _Matcher(default_mask, plain_matches_dirs=False)
        self._default_unmask = _Matcher(DEFAULT_UNMASK_PATTERNS, plain_matches_dirs=False)

    def file(self, name: str, rel: str) -> bool:
        if self._default_mask.file(name, rel):
            hit = self._user_mask.file(name, rel) or not self._default_unmask.file(name, rel)
        else:
            hit = self._user_mask.file(name, rel)
        return hit and not self._user_unmask.file(name, rel)

    def dir(self, name: str, rel: str) -> bool:
        if self._default_mask.dir(name, rel):
            hit = self._user_mask.dir(name, rel) or not self._default_unmask.dir(name, rel)
        else:
            hit = self._user_mask.dir(name, rel)
        return hit and not self._user_unmask.dir(name, rel)


def scan(
    root: Path,
    mask: Sequence[str] = (),
    unmask: Sequence[str] = (),
    *,
    use_defaults: bool = True,
) -> ScanResult:
    """Walk ``root`` without following symlinks and return what to mask.

    Git-ignored files are included on purpose: that is where secrets live.
    Raises ValueError for an invalid pattern, OSError if ``root`` cannot be read.
    """
    check_patterns(mask)
    check_patterns(unmask)
    policy = _Policy(mask, unmask, use_defaults)

    files: list[str] = []
    dirs: list[str] = []
    links: list[str] = []
    hardlinks: list[str] = []
    skipped: list[str] = []

    # (relative prefix ending in "/" or "", absolute path, inside a .git dir,
    #  only looking for hard links)
    stack: list[tuple[str, str, bool, bool]] = [("", os.fspath(root), False, False)]
    first = True
    while stack:
        prefix, path, in_git, links_only = stack.pop()
        try:
            entries = os.scandir(path)
        except PermissionError:
            if first:
                raise
            skipped.append(prefix.removesuffix("/"))
            continue
        except (FileNotFoundError, NotADirectoryError):
            if first:
                raise
            # Removed or replaced while we walked: nothing there to mask.
            continue
        first = False
        with entries:
            for entry in entries:
                name = entry.name
                rel = prefix + name
                if entry.is_dir(follow_symlinks=False):
                    if links_only:
                        stack.append((rel + "/", entry.path, True, True))
                    elif in_git and name == "objects":
                        # Object names are hashes, never secrets, and there can be
                        # very many; but `git clone --local` hard-links them, so
                        # they are still checked for links.
                        stack.append((rel + "/", entry.path, True, True))
                    elif policy.dir(name, rel):
                        dirs.append(rel)
                    else:
                        stack.append((rel + "/", entry.path, in_git or name == ".git", False))
                elif entry.is_symlink():
                    if not links_only and (policy.file(name, rel) or policy.dir(name, rel)):
                        links.append(rel)
                elif not links_only and policy.file(name, rel):
                    files.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    try:
                        nlink = entry.stat(follow_symlinks=False).st_nlink
                    except FileNotFoundError:
                        continue
                    if nlink > 1:
                        hardlinks.append(rel)

    return ScanResult(
        files=tuple(sorted(files)),
        dirs=tuple(sorted(dirs)),
        links=tuple(sorted(links)),
        hardlinks=tuple(sorted(hardlinks)),
        skipped=tuple(sorted(skipped)),
    )
