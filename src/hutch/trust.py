"""A project's hutch.toml may only narrow the sandbox until its user trusts it.

A repository can ship a `hutch.toml`, written by whoever wrote the repository.
Such a file may narrow what the user's own config and the defaults give: the
keys in NARROWING, each with the rule that says what narrowing means for it
(less memory, a network mode closer to "none", a subset of the user's allow
list, ...). Anything else it sets — a value those rules do not accept, or a key
they do not list (image contents, custom agents, CA files, ...) — takes effect
only for a file whose exact bytes the user has trusted (`hutch config trust`);
any change to the file, the agent's included, asks again. The user's own config
and flags need no trust.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

from hutch.config.load import Layer, Merged, merge, parse_file
from hutch.config.schema import ConfigValue
from hutch.errors import ConfigError
from hutch.paths import CONFIG_NAME, Dirs, read_text, replace_text

if TYPE_CHECKING:
    from collections.abc import Callable

    # (project value, what the user's config and the defaults give) -> what in
    # the project value widens the sandbox, or None when it only narrows.
    Rule = Callable[[ConfigValue, ConfigValue], str | None]


def _listed(items: object) -> str:
    assert isinstance(items, tuple)
    return ", ".join(items) if items else "(none)"


def _subset(project: ConfigValue, base: ConfigValue) -> str | None:
    """A list that replaces the user's may keep some of its entries, add none."""
    assert isinstance(project, tuple) and isinstance(base, tuple)
    extra = tuple(item for item in project if item not in base)
    return _listed(extra) if extra else None


def _at_most(project: ConfigValue, base: ConfigValue) -> str | None:
    assert isinstance(project, int | float) and isinstance(base, int | float)
    return f"= {project:g} (more than {base:g})" if project > base else None


_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size_bytes(text: str) -> float:
    """A validated size ("512m", "4g", "1024") in bytes, as the engines read it."""
    unit = _UNITS.get(text[-1:].lower())
    return float(text[:-1]) * unit if unit is not None else float(text)


def _smaller_size(project: ConfigValue, base: ConfigValue) -> str | None:
    assert isinstance(project, str) and isinstance(base, str)
    return f'= "{project}" (more than "{base}")' if size_bytes(project) > size_bytes(base) else None


_NETWORK_RANK = {"none": 0, "allowlist": 1, "open": 2}


def _closer_to_none(project: ConfigValue, base: ConfigValue) -> str | None:
    assert isinstance(project, str) and isinstance(base, str)
    wider = _NETWORK_RANK[project] > _NETWORK_RANK[base]
    return f'= "{project}" (wider than "{base}")' if wider else None


def _any(project: ConfigValue, base: ConfigValue) -> str | None:
    return None


def _only(*allowed: str) -> Rule:
    def rule(project: ConfigValue, base: ConfigValue) -> str | None:
        return None if project in allowed else f"= {_value(project)}"

    return rule


# The allowlist: what a project file may set untrusted, and when. A key that is
# not here needs trust for any value other than the one already in effect.
NARROWING: dict[str, Rule] = {
    "version": _any,
    # hutch's own agents, or one the user defined; a project-defined agent's
    # table needs trust (its install runs at build time).
    "agent": _any,
    "image.packages": _subset,  # fewer extras: less code runs at build time
    "image.npm": _subset,
    "image.pip": _subset,
    "image.ca_certificates": _only("none"),  # Debian's CAs alone
    "image.update_check_days": _any,  # when `hutch run` mentions updates
    "sandbox.workdir": _any,  # where the project appears inside
    "sandbox.env": _subset,
    "sandbox.mounts": _subset,
    "sandbox.memory": _smaller_size,
    "sandbox.cpus": _at_most,
    "sandbox.pids": _at_most,
    "sandbox.auth": _only("isolated"),
    "sandbox.surface": _only("ask"),  # host-executed files held until the user says yes
    "sandbox.caches": _subset,
    "network.mode": _closer_to_none,
    "network.allow": _subset,  # an IP literal or any new host is wider
    "network.allow_private": _subset,
    # Unlogged connections when the disk is full (which the sandbox can bring
    # about through the project) need the user's word.
    "network.audit": _only("required"),
    "secrets.mask": _any,  # added to the user's patterns (config.load.PROJECT_ADDS)
    "secrets.unmask": _subset,
}


def _label(key: str) -> str:
    section, _, name = key.rpartition(".")
    return f"[{section}] {name}" if section else key


def _value(value: ConfigValue) -> str:
    if isinstance(value, tuple):
        return _listed(value)
    if isinstance(value, str):
        return f'"{value}"'
    return f"{value:g}" if isinstance(value, float) else str(value)


def project_layer(merged: Merged) -> tuple[Layer, Merged] | None:
    """The project file's layer and what the layers below it give (user config
    and defaults), or None without a project file."""
    for index, layer in enumerate(merged.layers):
        if layer.origin.startswith("project config"):
            return layer, merge(list(merged.layers[:index]))
    return None


def widening(merged: Merged) -> list[str]:
    """What the project file sets that does not only narrow the sandbox; values
    that flags replaced are left out, as they take no effect."""
    found = project_layer(merged)
    if found is None:
        return []
    layer, base = found
    asks: list[str] = []
    for key, value in layer.values.items():
        if layer.origin not in merged.origins[key]:
            continue  # a flag replaced it
        current = base.values[key]
        if value == current:
            continue
        rule = NARROWING.get(key)
        what = rule(value, current) if rule is not None else f"= {_value(value)}"
        if what is not None:
            asks.append(f"{_label(key)} {what}")
    for name, table in layer.agents.items():
        if base.agents.get(name) != table:
            asks.append(f"[agents.{name}] (installs and runs code)")
    return asks


def _record(dirs: Dirs, project: str) -> str:
    key = hashlib.sha256(os.fsencode(project)).hexdigest()[:32]
    return os.path.join(dirs.state, "trusted", key)


def check(dirs: Dirs, project: str, merged: Merged) -> None:
    """Raise ConfigError when the project file asks for more than it may untrusted.

    The digest compared is that of the bytes the settings were parsed from, so
    a file changed after loading (by a running session, say) is not trusted."""
    asks = widening(merged)
    if not asks:
        return
    found = project_layer(merged)
    assert found is not None
    try:
        trusted = read_text(_record(dirs, project)).strip() == found[0].digest
    except OSError:
        trusted = False
    if not trusted:
        path = os.path.join(project, CONFIG_NAME)
        raise ConfigError(
            f"{path} asks for more than your own config gives: {'; '.join(asks)}",
            "a repository's config can ask for this on its author's behalf: read the file, "
            "then run `hutch config trust` (needed again after every change to it)",
        )


def trust(dirs: Dirs, project: str) -> str:
    path = os.path.join(project, CONFIG_NAME)
    layer = parse_file(path, "project")  # a file that does not load is not trusted
    if not layer.digest:
        raise ConfigError(f"{path} does not exist: nothing to trust")
    replace_text(_record(dirs, project), layer.digest + "\n")
    return path
