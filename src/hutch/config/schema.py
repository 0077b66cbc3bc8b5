"""The config schema: every key, its validator and its built-in default.

Values are kept flat ("section.key") while layers merge, so that every value
can carry its origin for `hutch config show`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from hutch.errors import ConfigError

ConfigValue = str | int | float | bool | tuple[str, ...]

if TYPE_CHECKING:
    from collections.abc import Callable

    Validator = Callable[[object, str], ConfigValue]

# Patterns stay strings, compiled (and cached by re) on first use: most runs
# validate none of these, and compiling them all costs each start ~1 ms.
_SIZE = r"(?i)^[1-9][0-9]*(\.[0-9]+)?[bkmg]?$"
_DEB_PACKAGE = r"^[a-z0-9][a-z0-9+.\-]*(=[A-Za-z0-9.+~:\-]+)?$"
# npm names (optionally scoped) with an optional @version; pip requirement names
# with an optional simple version specifier. Kept strict: they end up in a RUN line.
_NPM_PACKAGE = r"^(@[a-z0-9][a-z0-9._\-]*/)?[a-z0-9][a-z0-9._\-]*(@[A-Za-z0-9.^~<>=*\-]+)?$"
_PIP_PACKAGE = r"^[A-Za-z0-9][A-Za-z0-9._\-]*(\[[A-Za-z0-9,._\-]+\])?([<>=!~]=?[A-Za-z0-9.*+\-]+)?$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_IMAGE_REF = r"^[a-z0-9][a-z0-9._/:@\-]*$"


def matches(pattern: str, text: str) -> bool:
    """re.match, with re imported only when a value is checked: a launch with
    no config file to check then does without it (~6 ms to import, with enum)."""
    import re

    return re.match(pattern, text) is not None


NETWORK_MODES = ("allowlist", "open", "none")
CACHE_KINDS = ("npm", "pip")


def _type_name(value: object) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _want(value: object, where: str, expected: str) -> ConfigError:
    return ConfigError(
        f"{where} must be {expected}, got {_type_name(value)} ({value!r})",
        "fix the value in the file named above",
    )


def string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _want(value, where, "a string")
    return value


def choice(*options: str) -> Validator:
    def check(value: object, where: str) -> str:
        text = string(value, where)
        if text not in options:
            listed = ", ".join(f'"{o}"' for o in options)
            raise ConfigError(f"{where} must be one of {listed}, got {text!r}")
        return text

    return check


def string_list(pattern: str | None = None, what: str = "entry") -> Validator:
    def check(value: object, where: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise _want(value, where, "an array of strings")
        items: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise _want(item, f"{where}[{index}]", "a string")
            if pattern is not None and not matches(pattern, item):
                raise ConfigError(f"{where}[{index}]: {item!r} is not a valid {what}")
            items.append(item)
        return tuple(items)

    return check


def boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise _want(value, where, "true or false")
    return value


def positive_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _want(value, where, "a positive integer")
    return value


def non_negative_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _want(value, where, "a whole number of days (0 or more)")
    return value


def cpus(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _want(value, where, "a positive number of CPUs")
    return float(value)


def size(value: object, where: str) -> str:
    text = string(value, where)
    if not matches(_SIZE, text):
        raise ConfigError(f'{where} must be a size like "512m" or "4g", got {text!r}')
    return text.lower()


def image_ref(value: object, where: str) -> str:
    text = string(value, where)
    if not matches(_IMAGE_REF, text):
        raise ConfigError(f"{where}: {text!r} is not an image reference")
    return text


def ca_certificates(value: object, where: str) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if value not in ("host", "none"):
            raise ConfigError(f'{where} must be "host", "none" or an array of .crt paths')
        return value
    paths = string_list()(value, where)
    assert isinstance(paths, tuple)
    for path in paths:
        if not path.endswith((".crt", ".pem")):
            raise ConfigError(f"{where}: {path!r} must be a PEM file ending in .crt or .pem")
    return paths


def env_entries(value: object, where: str) -> tuple[str, ...]:
    entries = string_list()(value, where)
    assert isinstance(entries, tuple)
    for entry in entries:
        name = entry.split("=", 1)[0]
        if not matches(_ENV_NAME, name):
            raise ConfigError(f"{where}: {entry.split('=', 1)[0]!r} is not a variable name")
    return entries


def caches(value: object, where: str) -> tuple[str, ...]:
    entries = string_list()(value, where)
    assert isinstance(entries, tuple)
    for entry in entries:
        if entry not in CACHE_KINDS:
            raise ConfigError(f"{where}: unknown cache {entry!r} (known: {', '.join(CACHE_KINDS)})")
    return entries


def workdir(value: object, where: str) -> str:
    text = string(value, where)
    if text != "host" and not (text.startswith("/") and text != "/" and "\n" not in text):
        raise ConfigError(f'{where} must be "host" or an absolute path such as "/workspace"')
    return text


def engine(value: object, where: str) -> str:
    from hutch.engines import choices

    text = string(value, where)
    choice(*choices())(text, where)
    return text


def allow_entries(value: object, where: str) -> tuple[str, ...]:
    from hutch.egress.policy import parse_allow_entry

    entries = string_list()(value, where)
    assert isinstance(entries, tuple)
    for index, entry in enumerate(entries):
        try:
            parse_allow_entry(entry)
        except ValueError as err:
            raise ConfigError(
                f"{where}[{index}]: {err}",
                'write HOST[:PORT] or *.DOMAIN[:PORT], e.g. "api.github.com" or "*.example.org:8443"',
            ) from err
    return entries


def mask_patterns(value: object, where: str) -> tuple[str, ...]:
    from hutch.guard.patterns import check_patterns

    entries = string_list()(value, where)
    assert isinstance(entries, tuple)
    try:
        check_patterns(entries)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from err
    return entries


class Key(NamedTuple):
    validate: Validator
    default: ConfigValue
    doc: str
    # Its hutch.config.Settings attribute, when not the key's last part.
    attribute: str = ""

    def field(self, key: str) -> str:
        return self.attribute or key.rpartition(".")[2]


def _default_cpus() -> float:
    return float(os.cpu_count() or 1)


SCHEMA: dict[str, Key] = {
    "version": Key(positive_int, 1, "config format version"),
    "agent": Key(string, "claude", "agent started by `hutch run`"),
    "engine": Key(engine, "auto", "container engine"),
    "image.base": Key(image_ref, "debian:bookworm-slim", "base image (Debian family)"),
    "image.packages": Key(string_list(_DEB_PACKAGE, "Debian package name"), (), "extra apt packages"),
    "image.npm": Key(string_list(_NPM_PACKAGE, "npm package"), (), "extra global npm packages"),
    "image.pip": Key(string_list(_PIP_PACKAGE, "pip requirement"), (), "extra pip packages"),
    "image.ca_certificates": Key(ca_certificates, "host", "CAs trusted in the image"),
    "image.build_proxy": Key(
        boolean, False, "pass the host's proxy variables to image builds (user config only)"
    ),
    "image.update_check_days": Key(
        non_negative_int, 7, "days before `hutch run` mentions newer agent releases (0: never)"
    ),
    "sandbox.workdir": Key(workdir, "host", "where the project appears inside"),
    "sandbox.env": Key(env_entries, (), "host variables let in"),
    "sandbox.mounts": Key(string_list(), (), "extra mounts SRC:DST[:ro|rw]"),
    "sandbox.memory": Key(size, "8g", "memory limit"),
    "sandbox.cpus": Key(cpus, _default_cpus(), "CPU limit"),
    "sandbox.pids": Key(positive_int, 4096, "process limit"),
    "sandbox.auth": Key(choice("isolated", "host"), "isolated", "agent login state"),
    "sandbox.caches": Key(caches, (), "package caches kept per project"),
    "sandbox.surface": Key(choice("ask", "report"), "ask",
                           "host-executed files the agent wrote: held until you say yes, or only reported"),
    "network.mode": Key(choice(*NETWORK_MODES), "allowlist", "egress policy", "network_mode"),
    "network.allow": Key(allow_entries, (), "hosts reachable through the proxy"),
    "network.allow_private": Key(
        allow_entries, (), "names allowed although they resolve to private addresses"
    ),
    "network.audit": Key(
        choice("required", "best-effort"),
        "required",
        "when the audit log cannot be written: refuse new connections, or let them through unlogged",
        "network_audit",
    ),
    "secrets.mask": Key(mask_patterns, (), "extra secret-file patterns"),
    "secrets.unmask": Key(mask_patterns, (), "patterns exempted from masking"),
}

SECTIONS = ("image", "sandbox", "network", "secrets")

# Keys only the user's own config may set: a project file naming one is an error.
USER_ONLY = frozenset({"image.build_proxy"})

# Custom agents: [agents.NAME] tables, validated key by key.
AGENT_KEYS: dict[str, Validator] = {
    "install": choice("npm", "pip"),
    "node": string,
    "package": string,
    "command": string,
    "version": string,
    "args": string_list(),
    "allow": string_list(),
    "env": env_entries,
    "home": string_list(),
}
