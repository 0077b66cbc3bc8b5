"""Read config files and flags, validate them, and merge them with origins."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from hutch.config.schema import AGENT_KEYS, SCHEMA, SECTIONS, ConfigValue
from hutch.errors import ConfigError
from hutch.paths import NotRegular, read_regular

if TYPE_CHECKING:
    from collections.abc import Mapping

SUPPORTED_VERSION = 1

# Keys whose flag values add to the configured list instead of replacing it.
ADDITIVE = frozenset({"network.allow", "sandbox.env", "sandbox.mounts"})
# Keys whose project values add to the user's instead of replacing them: a
# repository may mask more of its files, never fewer of the ones the user masks.
PROJECT_ADDS = frozenset({"secrets.mask"})


class Layer(NamedTuple):
    """One source of settings: flat keys to validated values."""

    origin: str
    values: Mapping[str, ConfigValue]
    agents: Mapping[str, Mapping[str, ConfigValue]] = {}
    # sha256 of the exact bytes parsed (files only): what `hutch config trust` records.
    digest: str = ""


class Merged(NamedTuple):
    values: Mapping[str, ConfigValue]
    origins: Mapping[str, str]
    agents: Mapping[str, Mapping[str, ConfigValue]]
    agent_origins: Mapping[str, str]
    layers: tuple[Layer, ...] = ()


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(key, known, n=1)
    hint = f'did you mean "{close[0]}"?' if close else f"known keys: {', '.join(sorted(known))}"
    return ConfigError(f"{where}: unknown key {key}", hint)


def _label(path: str) -> str:
    section, _, key = path.rpartition(".")
    return f"[{section}] {key}" if section else key


def parse_file(path: str, origin: str) -> Layer:
    try:
        raw = read_regular(path)
    except FileNotFoundError:
        return Layer(origin, {})
    except NotRegular as err:
        raise ConfigError(
            f"{path} is not a regular file", "replace it with a TOML file, or remove it"
        ) from err
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    import tomllib  # only when a config file exists

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            f"{path}: invalid TOML: {err}", "fix the syntax at the line and column named"
        ) from err
    import hashlib

    layer = parse_mapping(data, str(path), origin)
    return layer._replace(digest=hashlib.sha256(raw).hexdigest())


def parse_mapping(data: Mapping[str, object], where: str, origin: str) -> Layer:
    values: dict[str, ConfigValue] = {}
    agents: dict[str, Mapping[str, ConfigValue]] = {}
    top_keys = [k for k in SCHEMA if "." not in k] + list(SECTIONS) + ["agents"]
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            section_keys = [k.split(".", 1)[1] for k in SCHEMA if k.startswith(key + ".")]
            for sub, sub_value in value.items():
                path = f"{key}.{sub}"
                if path not in SCHEMA:
                    raise _unknown(f"[{key}] {sub}", [f"[{key}] {s}" for s in section_keys], where)
                values[path] = SCHEMA[path].validate(sub_value, f"{where}: {_label(path)}")
        elif key == "agents":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [agents] must hold tables such as [agents.myagent]")
            for name, table in value.items():
                agents[name] = _parse_agent(name, table, where)
        elif key in SCHEMA:
            values[key] = SCHEMA[key].validate(value, f"{where}: {key}")
        else:
            raise _unknown(key, top_keys, where)
    version = values.get("version")
    if version is not None and version != SUPPORTED_VERSION:
        raise ConfigError(
            f"{where}: version {version} is not supported (this hutch reads version 1)",
            "upgrade hutch, or write version = 1",
        )
    return Layer(origin, values, agents)


def _parse_agent(name: str, table: object, where: str) -> Mapping[str, ConfigValue]:
    label = f"[agents.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: {label} must be a table")
    if not name.replace("-", "").replace("_", "").isalnum() or not name.islower():
        raise ConfigError(f"{where}: {label}: agent names are lower-case letters, digits, - and _")
    parsed: dict[str, ConfigValue] = {}
    for key, value in table.items():
        if key not in AGENT_KEYS:
            raise _unknown(f"{label} {key}", [f"{label} {k}" for k in AGENT_KEYS], where)
        parsed[key] = AGENT_KEYS[key](value, f"{where}: {label} {key}")
    for required in ("package", "command"):
        if required not in parsed:
            raise ConfigError(f"{where}: {label} needs a {required} key")
    return parsed


def merge(layers: list[Layer]) -> Merged:
    """Later layers win; flag layers add to the list keys in ADDITIVE, the
    project layer to those in PROJECT_ADDS."""
    values: dict[str, ConfigValue] = {k: v.default for k, v in SCHEMA.items()}
    origins: dict[str, str] = dict.fromkeys(SCHEMA, "default")
    agents: dict[str, Mapping[str, ConfigValue]] = {}
    agent_origins: dict[str, str] = {}
    for layer in layers:
        for key, value in layer.values.items():
            current = values[key]
            adds = (layer.origin.startswith("flag") and key in ADDITIVE) or (
                layer.origin.startswith("project") and key in PROJECT_ADDS
            )
            if adds and isinstance(current, tuple):
                assert isinstance(value, tuple)
                values[key] = current + value
                origins[key] = f"{origins[key]} + {layer.origin}"
            else:
                values[key] = value
                origins[key] = layer.origin
        for name, table in layer.agents.items():
            agents[name] = table
            agent_origins[name] = layer.origin
    return Merged(values, origins, agents, agent_origins, tuple(layers))
