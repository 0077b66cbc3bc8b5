from __future__ import annotations

import os
from pathlib import Path

import pytest

from hutch.config import load_settings
from hutch.config.load import Layer, merge, parse_file, parse_mapping
from hutch.errors import EXIT_CONFIG, ConfigError
from hutch.paths import Dirs


def dirs(tmp_path: Path) -> Dirs:
    return Dirs(*(str(tmp_path / sub) for sub in ("c", "d", "s")))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_files(tmp_path: Path) -> None:
    s = load_settings(dirs(tmp_path), tmp_path)
    assert s.agent == "claude"
    assert s.network_mode == "allowlist"
    assert s.network_audit == "required"
    assert s.base == "debian:bookworm-slim"
    assert s.ca_certificates == "host"
    assert s.merged.origins["network.mode"] == "default"


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "hutch.toml", 'version = 1\n[image\nbase = "x"\n')
    with pytest.raises(ConfigError) as info:
        parse_file(path, "project")
    assert info.value.exit_code == EXIT_CONFIG
    assert str(path) in info.value.message
    assert "line 2" in info.value.message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[network]\nalow = ["x"]\n', "[network] alow"),
        ("colour = 1\n", "colour"),
        ('[imgae]\nbase = "x"\n', "imgae"),
        ('[agents.x]\npackage = "p"\ncommand = "c"\ninstal = "npm"\n', "instal"),
    ],
)
def test_unknown_keys_are_named(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path / "hutch.toml", text)
    with pytest.raises(ConfigError) as info:
        parse_file(path, "project")
    assert fragment in info.value.message


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    path = write(tmp_path / "hutch.toml", '[network]\nalow = ["x"]\n')
    with pytest.raises(ConfigError) as info:
        parse_file(path, "project")
    assert info.value.hint is not None and "allow" in info.value.hint


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[sandbox]\nmemory = 5\n", "memory"),
        ('[sandbox]\nmemory = "lots"\n', "memory"),
        ('[sandbox]\ncpus = "two"\n', "cpus"),
        ("[sandbox]\npids = -1\n", "pids"),
        ("[sandbox]\npids = true\n", "pids"),
        ('[network]\nmode = "closed"\n', "mode"),
        ('[network]\naudit = "sometimes"\n', "[network] audit"),
        ('[network]\nallow = "api.github.com"\n', "allow"),
        ("[image]\npackages = [1]\n", "packages[0]"),
        ('[image]\npackages = ["rm -rf /"]\n', "packages[0]"),
        ('[image]\nnpm = ["x; curl evil"]\n', "npm[0]"),
        ('[image]\nca_certificates = "maybe"\n', "ca_certificates"),
        ('[sandbox]\nenv = ["1BAD"]\n', "env"),
        ('[sandbox]\nworkdir = "relative"\n', "workdir"),
        ('[sandbox]\ncaches = ["cargo"]\n', "caches"),
        ("version = 2\n", "version 2"),
        ('image = "x"\n', "[image] must be a table"),
    ],
)
def test_wrong_types_and_values(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path / "hutch.toml", text)
    with pytest.raises(ConfigError) as info:
        parse_file(path, "project")
    assert fragment in info.value.message


def test_precedence_flag_beats_project_beats_user(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    write(Path(d.user_config), '[sandbox]\nmemory = "2g"\ncpus = 1\n[network]\nallow = ["a.example"]\n')
    project = tmp_path / "p"
    write(project / "hutch.toml", '[sandbox]\nmemory = "3g"\n[network]\nallow = ["b.example"]\n')
    flags = Layer("flag", {"sandbox.memory": "5g", "network.allow": ("c.example",)})
    s = load_settings(d, project, flags)
    assert s.memory == "5g"
    assert s.cpus == 1.0
    # Project lists replace the user's; flags add to them.
    assert s.allow == ("b.example", "c.example")
    origins = s.merged.origins
    assert origins["sandbox.memory"] == "flag"
    assert origins["sandbox.cpus"].startswith("user config")
    assert origins["network.allow"].startswith("project config") and origins["network.allow"].endswith(
        "+ flag"
    )


def test_custom_agent_requires_package_and_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a command"):
        parse_mapping({"agents": {"mine": {"package": "x"}}}, "hutch.toml", "project")
    layer = parse_mapping(
        {"agents": {"mine": {"package": "x", "command": "x", "install": "pip"}}}, "f", "project"
    )
    merged = merge([layer])
    assert merged.agents["mine"]["install"] == "pip"


def test_full_design_example_parses(tmp_path: Path) -> None:
    text = """
version = 1
agent = "claude"

[image]
base = "debian:bookworm-slim"
packages = ["ripgrep"]
npm = []
pip = []
ca_certificates = "host"

[sandbox]
workdir = "host"
env = ["LANG", "MY_TOKEN"]
mounts = ["~/datasets:/data:ro"]
memory = "4g"
cpus = 2
pids = 1024
auth = "isolated"
caches = ["npm", "pip"]

[network]
mode = "allowlist"
allow = ["api.github.com", "*.githubusercontent.com", "example.org:8443"]

[secrets]
mask = ["*.tfstate"]
unmask = [".env.example"]
"""
    project = tmp_path / "p"
    write(project / "hutch.toml", text)
    s = load_settings(dirs(tmp_path), project)
    assert s.pids == 1024 and s.memory == "4g" and s.caches == ("npm", "pip")
    assert s.mounts == ("~/datasets:/data:ro",)


def test_every_schema_key_has_its_settings_field() -> None:
    from hutch.config import Settings
    from hutch.config.schema import SCHEMA

    fields = [key.field(name) for name, key in SCHEMA.items()]
    assert len(set(fields)) == len(fields), "two keys share a Settings field"
    assert set(Settings._fields) - {"custom_agents", "merged"} == set(fields)


def test_settings_carry_each_value_under_its_field(tmp_path: Path) -> None:
    from hutch.config.schema import SCHEMA

    settings = load_settings(dirs(tmp_path), str(tmp_path))
    for name, key in SCHEMA.items():
        assert getattr(settings, key.field(name)) == settings.merged.values[name], name


@pytest.mark.parametrize("which", ["user", "project"])
def test_a_config_that_is_a_fifo_is_an_error_not_a_hang(tmp_path: Path, which: str) -> None:
    d = dirs(tmp_path)
    project = tmp_path / "p"
    project.mkdir()
    path = Path(d.user_config) if which == "user" else project / "hutch.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    with pytest.raises(ConfigError) as info:
        load_settings(d, str(project))
    assert info.value.exit_code == EXIT_CONFIG
    assert info.value.message == f"{path} is not a regular file"
