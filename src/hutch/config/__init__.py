"""Configuration: typed settings built from defaults, user and project files, and flags."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from hutch.config.load import Layer, Merged, merge, parse_file
from hutch.config.schema import SCHEMA, USER_ONLY, ConfigValue
from hutch.errors import ConfigError
from hutch.paths import CONFIG_NAME, Dirs

if TYPE_CHECKING:
    from collections.abc import Mapping


class Settings(NamedTuple):
    """The effective settings: one attribute per key of the schema (see
    Key.field), each validated by it, and where each value came from."""

    version: int
    agent: str
    engine: str
    base: str
    packages: tuple[str, ...]
    npm: tuple[str, ...]
    pip: tuple[str, ...]
    ca_certificates: str | tuple[str, ...]
    build_proxy: bool
    update_check_days: int
    workdir: str
    env: tuple[str, ...]
    mounts: tuple[str, ...]
    memory: str
    cpus: float
    pids: int
    auth: str
    caches: tuple[str, ...]
    surface: str
    network_mode: str
    allow: tuple[str, ...]
    allow_private: tuple[str, ...]
    network_audit: str
    mask: tuple[str, ...]
    unmask: tuple[str, ...]
    custom_agents: Mapping[str, Mapping[str, ConfigValue]]
    merged: Merged


def settings_from(merged: Merged) -> Settings:
    values = {SCHEMA[key].field(key): value for key, value in merged.values.items()}
    # Each value has passed its key's validator, which returns the field's type.
    return Settings(custom_agents=merged.agents, merged=merged, **values)  # type: ignore[arg-type]


def config_layers(dirs: Dirs, project: str) -> list[Layer]:
    project_file = os.path.join(project, CONFIG_NAME)
    project_layer = parse_file(project_file, f"project config {project_file}")
    for key in sorted(USER_ONLY & set(project_layer.values)):
        section, _, name = key.partition(".")
        raise ConfigError(
            f"{project_file}: [{section}] {name} is read from your own config only",
            f"move it to {dirs.user_config} if you want it; a repository cannot set it",
        )
    return [parse_file(dirs.user_config, f"user config {dirs.user_config}"), project_layer]


def load_settings(dirs: Dirs, project: str, flags: Layer | None = None) -> Settings:
    layers = config_layers(dirs, project)
    if flags is not None:
        layers.append(flags)
    return settings_from(merge(layers))
