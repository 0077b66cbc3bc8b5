"""Which files in a project are secrets the sandbox must not see.

Pattern language (gitignore-like, but deliberately small):

- ``name`` (no ``/``) matches the basename at any depth, files and directories;
- ``name/`` matches directories only;
- ``a/b`` (a ``/`` that is not trailing) matches the path relative to the root;
- wildcards are :func:`fnmatch.fnmatchcase`'s (``*`` crosses ``/``);
- matching ignores case: ``.ENV`` is a dotenv file too.

The built-in file patterns match non-directories only, so that a virtualenv
called ``.env`` is not hidden whole; user patterns follow the rules above.
Some names are decided by content instead (:func:`sniff`): a ``.pem`` file that
holds only certificates (a CA bundle such as certifi's) is not a secret, one
that holds a private key is; small files outside vendored trees are checked for
PEM private keys, JSON files for cloud key material.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence

DEFAULT_MASK_PATTERNS: tuple[str, ...] = (
    # dotenv files and their per-environment variants
    ".env",
    ".env.*",
    # private keys and key stores
    "*.key",
    "id_rsa*",
    "id_ed25519*",
    "id_ecdsa*",
    "id_dsa*",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    # credential files
    ".netrc",
    ".pgpass",
    ".pypirc",
    ".git-credentials",
    # A project-level .npmrc is where `npm login` and CI setups put
    # `//registry/:_authToken=`.
    ".npmrc",
    "credentials.json",
    "client_secret*.json",
    "service-account*.json",
    "*.tfstate",
    "*.tfstate.backup",
    "*.tfvars",
    "*.tfvars.json",
    "secrets.yaml",
    "secrets.yml",
    ".vault_pass",
    ".vault-pass",
    ".vault_password",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    "*/.cargo/credentials",
    "*/.cargo/credentials.toml",
    "*.ppk",
    # Docker client config holds registry `auths`; kubeconfig holds cluster
    # credentials. Only the files: those directories also hold ordinary files.
    ".docker/config.json",
    "*/.docker/config.json",
    ".kube/config",
    "*/.kube/config",
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

# Decided by content: masked when they hold a private key, and a .pem also
# when it cannot be told (no PEM block in it, or too large to read).
# .crt and .cer without a PEM block are DER certificates.
PEM_SUFFIXES = (".pem", ".crt", ".cer", ".cert")
# RSA, EC, OPENSSH, ENCRYPTED, PGP ... PRIVATE KEY (BLOCK)
_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY")
PEM_LIMIT = 4 << 20
# Outside vendored trees, small files with these shapes are read for key material.
SMALL_LIMIT = 16 << 10
JSON_LIMIT = 64 << 10
SMALL_SUFFIXES = (".txt", ".conf", ".cfg", ".ini")
# JSON files that never hold credentials and are very common.
PLAIN_JSON = frozenset(
    {
        "package.json",
        "package-lock.json",
        "tsconfig.json",
        "jsconfig.json",
        "composer.json",
        "composer.lock",
        "manifest.json",
        ".eslintrc.json",
        "renovate.json",
        "angular.json",
    }
)

# Changed with the content rules below (sniff_limit, sniff): a walk kept from
# older rules is not reused.
CONTENT_RULES = 2

_WILDCARDS = frozenset("*?[")


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


class Globs:
    """A set of fnmatch patterns, each matching a whole (lower-cased) string.

    The common shapes are string tests — exact names (a set), `lit*`, `*lit`,
    `lit*lit` — because the first test runs once for every entry of a project
    of several hundred thousand; the rest is one regular expression.
    """

    __slots__ = ("_exact", "_heads", "_infixes", "_prefixes", "_regex", "_suffixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        suffixes: list[str] = []
        infixes: list[tuple[str, str]] = []
        others: list[str] = []
        for raw in patterns:
            pattern = raw.lower()
            head, tail = pattern[:1], pattern[1:]
            body = pattern[:-1]
            if not _WILDCARDS.intersection(pattern):
                exact.add(pattern)
            elif head == "*" and not _WILDCARDS.intersection(tail):
                suffixes.append(tail)
            elif pattern.endswith("*") and not _WILDCARDS.intersection(body):
                prefixes.append(body)
            elif pattern.count("*") == 1 and not _WILDCARDS.intersection(pattern.replace("*", "")):
                before, _, after = pattern.partition("*")
                infixes.append((before, after))
            else:
                others.append(pattern)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)
        self._suffixes = tuple(suffixes)
        self._infixes = tuple(infixes)
        self._heads = tuple(before for before, _ in infixes)
        self._regex = re.compile("|".join(fnmatch.translate(p) for p in others)) if others else None

    def screen(self) -> tuple[frozenset[str], tuple[str, ...], tuple[str, ...]] | None:
        """(exact names, prefixes, suffixes) such that a string none of them
        fits cannot match (three string tests, for the walk's common case);
        None when a pattern of another shape makes that impossible."""
        if self._regex is not None:
            return None
        return self._exact, self._prefixes + self._heads, self._suffixes

    def match(self, text: str) -> bool:
        """``text`` must already be lower-cased."""
        if text in self._exact or text.startswith(self._prefixes) or text.endswith(self._suffixes):
            return True
        if self._heads and text.startswith(self._heads):
            for before, after in self._infixes:
                if len(text) >= len(before) + len(after) and text.startswith(before) and text.endswith(after):
                    return True
        return self._regex is not None and self._regex.match(text) is not None


class _Side:
    """Basename and root-relative patterns for one kind of entry (files or dirs)."""

    __slots__ = ("gate", "gate_all", "names", "paths")

    def __init__(self, names: Sequence[str], paths: Sequence[str]) -> None:
        self.names = Globs(names)
        self.paths = Globs(paths)
        # A root-relative pattern whose last component is a literal can only
        # match an entry of that name, so the basename rules most paths out.
        lasts = [p.rsplit("/", 1)[1].lower() for p in paths]
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


class Policy:
    """masked = (user mask | (default mask - default unmask)) - user unmask.

    Names and paths given to :meth:`file` and :meth:`dir` are lower-cased
    by the caller. ``files`` and ``dirs`` hold every mask pattern at once: a
    cheap first test that rules out almost every entry before the full rule.
    """

    def __init__(self, mask: Sequence[str], unmask: Sequence[str], use_defaults: bool = True) -> None:
        check_patterns(mask)
        check_patterns(unmask)
        defaults = DEFAULT_MASK_PATTERNS if use_defaults else ()
        self.active = use_defaults or bool(mask)
        self._user_mask = _Matcher(mask, plain_matches_dirs=True)
        self._user_unmask = _Matcher(unmask, plain_matches_dirs=True)
        self._default_mask = _Matcher(defaults, plain_matches_dirs=False)
        self._default_unmask = _Matcher(DEFAULT_UNMASK_PATTERNS, plain_matches_dirs=False)
        either = _Matcher([*defaults, *mask], plain_matches_dirs=True)
        self.files = either.files
        self.dirs = either.dirs
        self.sniffing = use_defaults

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

    def unmasked(self, name: str, rel: str) -> bool:
        """A user `unmask` entry lifts the content checks too."""
        return self._user_unmask.files.hit(name, rel)

    @staticmethod
    def _masked(dm: _Side, du: _Side, um: _Side, uu: _Side, name: str, rel: str) -> bool:
        hit = um.hit(name, rel) or (dm.hit(name, rel) and not du.hit(name, rel))
        return hit and not uu.hit(name, rel)


def sniff_limit(lower_name: str, vendored: bool) -> int:
    """How much of a file to read to decide whether it is a secret by its
    content; 0 when its name says it need not be read."""
    if lower_name.endswith(PEM_SUFFIXES):
        return PEM_LIMIT
    if vendored:
        return 0
    if lower_name.endswith(".json"):
        return 0 if lower_name in PLAIN_JSON else JSON_LIMIT
    if "." not in lower_name.lstrip(".") or lower_name.endswith(SMALL_SUFFIXES):
        return SMALL_LIMIT
    return 0


def sniff(lower_name: str, size: int, read: bytes | None) -> bool:
    """Whether a file whose name called for :func:`sniff_limit` is a secret.
    ``read`` is its first bytes (None: unreadable, so the sandbox, running as
    the same user, cannot read it either)."""
    if read is None:
        return False
    pem = lower_name.endswith(PEM_SUFFIXES)
    if pem and size > PEM_LIMIT:
        return lower_name.endswith(".pem")  # too big to tell: a .pem counts as a key
    if _PRIVATE_KEY.search(read):
        return True
    if lower_name.endswith(".pem"):
        return bool(read) and b"-----BEGIN " not in read  # no PEM block: it cannot be told
    if lower_name.endswith(".json"):
        return (b'"private_key"' in read and b"-----BEGIN" in read) or b'"client_secret"' in read
    return False


def read_head(dir_fd: int, name: str, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of a regular file, opened without following a link
    and without blocking on a FIFO."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)
