"""A project's hutch.toml may not widen the sandbox until its user says so.

A repository can ship a `hutch.toml`. The settings that let more of the host
in — variables by name, mounts from outside the project, the host's agent
login, the open network, private addresses, unmasked secrets — would then be
chosen by whoever wrote the repository. Those settings take effect only for a
file whose exact content the user has trusted (`hutch config trust`); any
change to the file asks again. The user's own config and flags need no trust.
"""

from __future__ import annotations

import os
from hashlib import sha256
from typing import TYPE_CHECKING

from hutch.config.load import parse_file
from hutch.config.schema import ConfigValue
from hutch.errors import ConfigError
from hutch.paths import CONFIG_NAME, Dirs, home, read_bytes, read_text, replace_text

if TYPE_CHECKING:
    from collections.abc import Mapping

WIDENING = (
    "sandbox.env",
    "sandbox.mounts",
    "sandbox.auth",
    "network.mode",
    "network.allow_private",
    "secrets.unmask",
)


def _outside(spec: str, project: str, home: str) -> bool:
    from hutch.plan import parse_mount

    source = parse_mount(spec, project, home).source
    return not (source == project or source.startswith(project.rstrip("/") + "/"))


def widening(values: Mapping[str, ConfigValue], project: str) -> list[str]:
    """What in one config layer lets more of the host into the sandbox."""
    found: list[str] = []
    home_dir = home()
    env = values.get("sandbox.env", ())
    if isinstance(env, tuple) and env:
        found.append(f"[sandbox] env {', '.join(e.split('=', 1)[0] for e in env)}")
    mounts = values.get("sandbox.mounts", ())
    if isinstance(mounts, tuple):
        outside = [m for m in mounts if _outside(m, project, home_dir)]
        if outside:
            found.append(f"[sandbox] mounts {', '.join(outside)}")
    if values.get("sandbox.auth") == "host":
        found.append('[sandbox] auth = "host"')
    if values.get("network.mode") == "open":
        found.append('[network] mode = "open"')
    private = values.get("network.allow_private", ())
    if isinstance(private, tuple) and private:
        found.append(f"[network] allow_private {', '.join(private)}")
    unmask = values.get("secrets.unmask", ())
    if isinstance(unmask, tuple) and unmask:
        found.append(f"[secrets] unmask {', '.join(unmask)}")
    return found


def _record(dirs: Dirs, project: str) -> str:
    key = sha256(project.encode()).hexdigest()[:32]
    return os.path.join(dirs.state, "trusted", key)


def _digest(path: str) -> str:
    return sha256(read_bytes(path)).hexdigest()


def check(dirs: Dirs, project: str, origins: Mapping[str, str]) -> None:
    """Raise ConfigError when the project file widens the sandbox untrusted."""
    if not any(origins.get(key, "").startswith("project config") for key in WIDENING):
        return
    path = os.path.join(project, CONFIG_NAME)
    asks = widening(parse_file(path, "project").values, project)
    if not asks:
        return
    try:
        trusted = read_text(_record(dirs, project)).strip() == _digest(path)
    except OSError:
        trusted = False
    if not trusted:
        listed = "; ".join(asks)
        raise ConfigError(
            f"{path} asks for more of this machine than the project: {listed}",
            "a repository's config can ask for this on its author's behalf: read the file, "
            "then run `hutch config trust` (needed again after every change to it)",
        )


def trust(dirs: Dirs, project: str) -> str:
    path = os.path.join(project, CONFIG_NAME)
    if not os.path.isfile(path):
        raise ConfigError(f"{path} does not exist: nothing to trust")
    parse_file(path, "project")  # a file that does not load is not trusted
    record = _record(dirs, project)
    replace_text(record, _digest(path) + "\n")
    return path
