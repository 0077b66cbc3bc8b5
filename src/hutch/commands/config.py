"""config show, init and trust."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hutch.errors import ConfigError, HutchError
from hutch.paths import CONFIG_NAME, find_project_root, replace_text
from hutch.workspace import Workspace


def config_trust(ws: Workspace) -> int:
    from hutch import trust

    path = trust.trust(ws.dirs, ws.project)
    asks = trust.widening(ws.settings.merged)
    ws.say(f"trusted {path} as it is now" + (f" ({'; '.join(asks)})" if asks else ""))
    return 0


def config_show(ws: Workspace) -> int:
    merged = ws.settings.merged
    width = max(len(k) for k in merged.values)
    for key, value in merged.values.items():
        shown = list(value) if isinstance(value, tuple) else value
        print(f"{key.ljust(width)} = {_toml(shown)}  # {merged.origins[key]}")
    for name, origin in merged.agent_origins.items():
        print(f"agents.{name} # {origin}")
    return 0


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


TEMPLATE = """\
# hutch project config. Every key is optional; `hutch config show` prints the
# effective values and where each one comes from.
version = 1
agent = "claude"

[image]
# base = "debian:bookworm-slim"
# packages = ["ripgrep"]          # extra apt packages
# npm = []                        # extra global npm packages
# pip = []                        # extra pip packages
# ca_certificates = "host"        # "host" | "none" | ["certs/corp.crt"]

[sandbox]
# workdir = "host"                # or "/workspace"
# env = ["LANG"]                  # host variables let in, by name
# mounts = ["~/datasets:/data:ro"]
# memory = "8g"
# cpus = 2
# pids = 4096
# auth = "isolated"               # "host" shares ~/.claude with the sandbox (risky)
# caches = ["npm", "pip"]

[network]
# mode = "allowlist"              # "allowlist" | "open" | "none"
# allow = ["api.github.com"]

[secrets]
# mask = ["*.tfstate"]
# unmask = [".env.test"]
"""


def config_init(project_flag: str | None, *, quiet: bool, force: bool) -> int:
    project = find_project_root(os.getcwd(), project_flag)
    path = Path(project) / CONFIG_NAME
    if path.exists() and not force:
        raise HutchError(f"{path} exists; leaving it as it is", "pass --force to replace it")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} is not a regular file", "remove it, then run `hutch config init`")
    # Replaced whole: a link there is replaced, not written through; a write
    # that fails (a full disk) leaves no file behind.
    try:
        replace_text(str(path), TEMPLATE, mode=0o644)
    except OSError as err:
        raise HutchError(
            f"cannot write {path}: {err.strerror or err}",
            f"make room in {path.parent} or make it writable, then run `hutch config init` again",
        ) from err
    if not quiet:
        print(f"hutch: wrote {path}", file=sys.stderr)
    return 0
