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

import os
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import re
    from collections.abc import Iterable, Sequence

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


class ScanResult(NamedTuple):
    """What to mask in one project, as sorted POSIX paths relative to its root.

    ``files``: non-directories to cover with an empty read-only file.
    ``dirs``: directories to cover whole with an empty read-only directory; their
    contents were not walked.
    ``links``: symlinks whose name matches a mask; never followed, never masked.
    ``hardlinks``: unmasked regular files with more than one link: writing them
    inside the sandbox writes a file outside the project too.
    ``skipped``: directories that could not be read, so were not checked.

    Names the file system could not decode carry surrogate escapes, as
    os.scandir gives them; ``os.fsencode`` turns them back into the bytes.
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


class _Globs:
    """A set of fnmatch patterns, each matching a whole string.

    The common shapes are string tests, no regex: exact names (a set), `lit*`
    (str.startswith), `*lit` (str.endswith) and `lit*lit` (both, on a string
    long enough for the two), which match as fnmatch would (its `*` spans `/`
    too). Only the rest becomes one regex, compiled on first use: importing re
    and compiling would cost a launch ~8 ms.
    """

    __slots__ = ("_exact", "_infixes", "_others", "_prefixes", "_regex", "_suffixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        suffixes: list[str] = []
        infixes: list[tuple[str, str]] = []
        self._others: list[str] = []
        for pattern in patterns:
            head, tail = pattern[:1], pattern[1:]
            body, last = pattern[:-1], pattern[-1:]
            if not _WILDCARDS.intersection(pattern):
                exact.add(pattern)
            elif head == "*" and not _WILDCARDS.intersection(tail):
                suffixes.append(tail)
            elif last == "*" and not _WILDCARDS.intersection(body):
                prefixes.append(body)
            elif pattern.count("*") == 1 and not _WILDCARDS.intersection(pattern.replace("*", "")):
                before, _, after = pattern.partition("*")
                infixes.append((before, after))
            else:
                self._others.append(pattern)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)
        self._suffixes = tuple(suffixes)
        self._infixes = tuple(infixes)
        self._regex: re.Pattern[str] | None = None

    def match(self, text: str) -> bool:
        if text in self._exact or text.startswith(self._prefixes) or text.endswith(self._suffixes):
            return True
        for before, after in self._infixes:
            if len(text) >= len(before) + len(after) and text.startswith(before) and text.endswith(after):
                return True
        if not self._others:
            return False
        if self._regex is None:
            import fnmatch
            import re

            self._regex = re.compile("|".join(fnmatch.translate(p) for p in self._others))
        return self._regex.match(text) is not None


class _Side:
    """Basename and root-relative patterns for one kind of entry (files or dirs)."""

    __slots__ = ("gate", "gate_all", "names", "paths")

    def __init__(self, names: Sequence[str], paths: Sequence[str]) -> None:
        self.names = _Globs(names)
        self.paths = _Globs(paths)
        # A root-relative pattern whose last component is a literal can only
        # match an entry of that name, so the basename rules most paths out.
        lasts = [p.rsplit("/", 1)[1] for p in paths]
        self.gate = frozenset(lasts)
        self.gate_all = any(_WILDCARDS.intersection(last) for last in lasts)

    def hit(self, name: str, rel: str) -> bool:
        if self.names.match(name):
            return True
        return (self.gate_all or name in self.gate) and self.paths.match(rel)


class _Matcher:
    __slots__ = ("dirs", "files")

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
        self.files = _Side(file_names, file_paths)
        self.dirs = _Side(dir_names, dir_paths)


class _Policy:
    """masked = (user mask | (default mask - default unmask)) - user unmask.

    ``files`` and ``dirs`` hold every mask pattern at once: a cheap first test
    that rules out almost every entry before the full rule runs.
    """

    def __init__(self, mask: Sequence[str], unmask: Sequence[str], use_defaults: bool) -> None:
        defaults = DEFAULT_MASK_PATTERNS if use_defaults else ()
        self._user_mask = _Matcher(mask, plain_matches_dirs=True)
        self._user_unmask = _Matcher(unmask, plain_matches_dirs=True)
        self._default_mask = _Matcher(defaults, plain_matches_dirs=False)
        self._default_unmask = _Matcher(DEFAULT_UNMASK_PATTERNS, plain_matches_dirs=False)
        either = _Matcher([*defaults, *mask], plain_matches_dirs=True)
        self.files = either.files
        self.dirs = either.dirs

    def file(self, name: str, rel: str) -> bool:
        return self._masked(
            self._default_mask.files,
            self._default_unmask.files,
            self._user_mask.files,
            self._user_unmask.files,
            name,
            rel,
        )

    def dir(self, name: str, rel: str) -> bool:
        return self._masked(
            self._default_mask.dirs,
            self._default_unmask.dirs,
            self._user_mask.dirs,
            self._user_unmask.dirs,
            name,
            rel,
        )

    @staticmethod
    def _masked(dm: _Side, du: _Side, um: _Side, uu: _Side, name: str, rel: str) -> bool:
        hit = um.hit(name, rel) or (dm.hit(name, rel) and not du.hit(name, rel))
        return hit and not uu.hit(name, rel)


def scan(
    root: str | os.PathLike[str],
    mask: Sequence[str] = (),
    unmask: Sequence[str] = (),
    *,
    use_defaults: bool = True,
) -> ScanResult:
    """Walk ``root`` without following symlinks and return what to mask.

    Git-ignored files are included on purpose: that is where secrets live.
    ``.git`` is walked too, except any ``objects`` dir inside it, whose hashed
    names are never secret: that one is only checked for hard links (a
    ``git clone --local`` shares its objects with the source repository).
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

    # The first, cheap test (could any mask match this name?) runs once per
    # entry of the project, so it goes through local names.
    f_match, f_gate, f_all = policy.files.names.match, policy.files.gate, policy.files.gate_all
    d_match, d_gate, d_all = policy.dirs.names.match, policy.dirs.gate, policy.dirs.gate_all

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
                if entry.is_dir(follow_symlinks=False):
                    rel = prefix + name
                    if links_only or (in_git and name == "objects"):
                        # Object names are hashes, never secrets, and there can
                        # be very many; but `git clone --local` hard-links them,
                        # so they are still checked for links.
                        stack.append((rel + "/", entry.path, True, True))
                    elif (d_all or name in d_gate or d_match(name)) and policy.dir(name, rel):
                        dirs.append(rel)
                    else:
                        stack.append((rel + "/", entry.path, in_git or name == ".git", False))
                elif links_only:
                    if entry.is_file(follow_symlinks=False) and _linked(entry):
                        hardlinks.append(prefix + name)
                elif entry.is_symlink():
                    rel = prefix + name
                    if policy.file(name, rel) or policy.dir(name, rel):
                        links.append(rel)
                elif (f_all or name in f_gate or f_match(name)) and policy.file(name, prefix + name):
                    files.append(prefix + name)
                elif entry.is_file(follow_symlinks=False) and _linked(entry):
                    hardlinks.append(prefix + name)

    return ScanResult(
        files=tuple(sorted(files)),
        dirs=tuple(sorted(dirs)),
        links=tuple(sorted(links)),
        hardlinks=tuple(sorted(hardlinks)),
        skipped=tuple(sorted(skipped)),
    )


def _linked(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.stat(follow_symlinks=False).st_nlink > 1
    except FileNotFoundError:
        return False
