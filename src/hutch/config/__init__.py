"""Configuration: typed settings built from defaults, user and project files, and flags."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from hutch.config.load import Layer, Merged, merge, parse_file
from hutch.config.schema import ConfigValue
from hutch.paths import CONFIG_NAME, Dirs

if TYPE_CHECKING:
    from collections.abc import Mapping


class Settings(NamedTuple):
    agent: str
    engine: str
    base: str
    packages: tuple[str, ...]
    npm: tuple[str, ...]
    pip: tuple[str, ...]
    ca_certificates: str | tuple[str, ...]
    workdir: str
    env: tuple[str, ...]
    mounts: tuple[str, ...]
    memory: str
    cpus: float
    pids: int
    auth: str
    caches: tuple[str, ...]
    network_mode: str
    allow: tuple[str, ...]
    allow_private: tuple[str, ...]
    mask: tuple[str, ...]
    unmask: tuple[str, ...]
    custom_agents: Mapping[str, Mapping[str, ConfigValue]]
    merged: Merged


def _s(values: Mapping[str, ConfigValue], key: str) -> str:
    value = values[key]
    assert isinstance(value, str)
    return value


def _t(values: Mapping[str, ConfigValue], key: str) -> tuple[str, ...]:
    value = values[key]
    assert isinstance(value, tuple)
    return value


def settings_from(merged: Merged) -> Settings:
    v = merged.values
    ca = v["image.ca_certificates"]
    assert isinstance(ca, str | tuple)
    cpus = v["sandbox.cpus"]
    pids = v["sandbox.pids"]
    assert isinstance(cpus, float) and isinstance(pids, int)
    return Settings(
        agent=_s(v, "agent"),
        engine=_s(v, "engine"),
        base=_s(v, "image.base"),
        packages=_t(v, "image.packages"),
        npm=_t(v, "image.npm"),
        pip=_t(v, "image.pip"),
        ca_certificates=ca,
        workdir=_s(v, "sandbox.workdir"),
        env=_t(v, "sandbox.env"),
        mounts=_t(v, "sandbox.mounts"),
        memory=_s(v, "sandbox.memory"),
        cpus=cpus,
        pids=pids,
        auth=_s(v, "sandbox.auth"),
        caches=_t(v, "sandbox.caches"),
        network_mode=_s(v, "network.mode"),
        allow=_t(v, "network.allow"),
        allow_private=_t(v, "network.allow_private"),
        mask=_t(v, "secrets.mask"),
        unmask=_t(v, "secrets.unmask"),
        custom_agents=merged.agents,
        merged=merged,
    )


def config_layers(dirs: Dirs, project: str) -> list[Layer]:
    project_file = os.path.join(project, CONFIG_NAME)
    return [
        parse_file(dirs.user_config, f"user config {dirs.user_config}"),
        parse_file(project_file, f"project config {project_file}"),
    ]


def load_settings(dirs: Dirs, project: str, flags: Layer | None = None) -> Settings:
    layers = config_layers(dirs, project)
    if flags is not None:
        layers.append(flags)
    return settings_from(merge(layers))
