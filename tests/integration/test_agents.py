"""Every agent, one command each, always current: each built-in agent's real image
from the real registries, run headless as a non-root host user; a custom agent
from config; images share their system layer; `hutch agents` and `hutch update`."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import time
from pathlib import Path

import pytest

from .support import BUILD_TIMEOUT, Built, HostUser, Hutch, docker

pytestmark = pytest.mark.integration

# What `AGENT --version` prints; group 1 is the version.
VERSION_OUTPUT = {
    "claude": re.compile(r"^(\S+) \(Claude Code\)$"),
    "codex": re.compile(r"^codex-cli (\S+)$"),
    "gemini": re.compile(r"^(\d\S*)$"),
    "opencode": re.compile(r"^(\d\S*)$"),
    "aider": re.compile(r"^aider (\S+)$"),
}


def layers(tag: str) -> list[str]:
    result = docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", tag)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def pins(h: Hutch) -> dict[str, dict[str, object]]:
    data = json.loads((h.state / "hutch" / "versions.json").read_text())
    assert isinstance(data, dict)
    return data


def write_pins(h: Hutch, data: dict[str, dict[str, object]], owner: HostUser | None = None) -> None:
    path = h.state / "hutch" / "versions.json"
    path.write_text(json.dumps(data))
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)


def owned_project(h: Hutch, owner: HostUser) -> Path:
    project = h.root / "proj"
    project.mkdir()
    os.chown(project, owner.uid, owner.gid)
    return project


def assert_system_layer_cached(stderr: str) -> None:
    """The build reused the apt layer: the step after `RUN apt-get` came from the cache."""
    lines = stderr.splitlines()
    apt = [i for i, line in enumerate(lines) if "RUN apt-get update" in line]
    assert apt, stderr
    after = lines[apt[0] : apt[0] + 3]
    # Classic builder: " ---> Using cache"; BuildKit: "#7 CACHED".
    assert any("Using cache" in line or "CACHED" in line for line in after), "\n".join(after)
    assert "Setting up " not in stderr and "Unpacking " not in stderr, "apt ran again"


def build_agent(h: Hutch, agent: str, project: Path, built: Built) -> str:
    planned = h.run("exec", "--agent", agent, "--dry-run", "--", "true", cwd=project)
    assert planned.returncode == 0, planned.stderr
    existed = docker("image", "inspect", shlex.split(planned.stdout)[-2]).returncode == 0
    started = time.monotonic()
    result = h.run("build", agent, cwd=project, timeout=BUILD_TIMEOUT)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-4000:]
    tag = result.stdout.strip().splitlines()[-1]
    assert tag.startswith(f"hutch-{agent}:"), result.stdout
    rebuilt = "hutch: building" in result.stderr
    print(f"\nbuild {agent}: {elapsed:.0f}s ({'built' if rebuilt else 'image existed'})")
    # An image from an earlier run is reused; a new one reuses the claude image's apt layer.
    assert rebuilt == (not existed), result.stderr[-2000:]
    if rebuilt:
        assert_system_layer_cached(result.stderr)
    # Everything below the agent's own layer is the claude image's, byte for byte.
    mine, base = layers(tag), layers(built.tag)
    assert mine[:-1] == base[:-1]
    assert mine[-1] != base[-1]
    return tag


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini", "opencode", "aider"])
def test_builtin_agent_runs_headless_as_non_root_user(
    agent: str, user_hutch: Hutch, host_user: HostUser, built: Built
) -> None:
    project = owned_project(user_hutch, host_user)
    if agent == "claude":
        tag = built.tag  # the session's image, found by its pin
    else:
        tag = build_agent(user_hutch, agent, project, built)
    pin = str(pins(user_hutch)[agent]["version"])
    labels = docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag).stdout
    assert json.loads(labels)["io.hutch.agent-version"] == pin
    # Piped stdin and stdout, the agent's own flags after --, default network policy.
    result = user_hutch.run("-q", "run", agent, "--", "--version", cwd=project, input="")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, result.stderr
    match = VERSION_OUTPUT[agent].match(lines[-1].strip())
    assert match, f"unexpected --version output: {result.stdout!r}"
    assert match.group(1) == pin
    # Nothing the agent wrote belongs to anyone but the host user.
    home = user_hutch.agent_home(project, agent)
    for path in [home, *home.rglob("*")]:
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (host_user.uid, host_user.gid), path


@pytest.mark.parametrize(("agent", "status"), [("claude", 1), ("codex", 2)])
def test_agent_exit_status_passes_through(
    agent: str, status: int, user_hutch: Hutch, host_user: HostUser, built: Built
) -> None:
    project = owned_project(user_hutch, host_user)
    if agent != "claude":
        build_agent(user_hutch, agent, project, built)
    result = user_hutch.run("-q", "run", agent, "--", "--no-such-flag", cwd=project, input="")
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "no-such-flag" in result.stdout + result.stderr


COW = """\
version = 1
agent = "{name}"

[agents.{name}]
package = "cowsay"
command = "cowsay"
"""


def test_custom_agent_from_config(hutch: Hutch, project: Path, built: Built) -> None:
    # A name of its own each session: its image is new, so the build must run,
    # and must take everything up to the agent layer from the cache.
    name = f"cow-{secrets.token_hex(3)}"
    (project / "hutch.toml").write_text(COW.format(name=name))
    # A custom agent's install runs code at build time: the file needs trust.
    assert hutch.run("config", "trust", cwd=project).returncode == 0
    tag = ""
    try:
        started = time.monotonic()
        result = hutch.run("build", cwd=project, timeout=BUILD_TIMEOUT)
        print(f"\nbuild {name} (cowsay): {time.monotonic() - started:.0f}s")
        assert result.returncode == 0, result.stderr[-4000:]
        tag = result.stdout.strip().splitlines()[-1]
        assert tag.startswith(f"hutch-{name}:")
        assert f"hutch: building {tag}" in result.stderr
        assert_system_layer_cached(result.stderr)
        assert layers(tag)[:-1] == layers(built.tag)[:-1]
        version = str(pins(hutch)[name]["version"])
        assert re.fullmatch(r"\d+\.\d+\.\d+", version)

        # The default agent, headless: stdin in, stdout out.
        result = hutch.run("-q", "run", cwd=project, input="moo from stdin\n")
        assert result.returncode == 0, result.stderr
        assert "< moo from stdin >" in result.stdout
        result = hutch.run("-q", "run", name, "--", "hello", cwd=project, input="")
        assert result.returncode == 0, result.stderr
        assert "< hello >" in result.stdout

        # Listed with its image; the registry's newest release is the pinned one.
        result = hutch.run("agents", cwd=project, timeout=120)
        assert result.returncode == 0, result.stderr
        row = next(line for line in result.stdout.splitlines() if line.startswith(name))
        assert row.split() == [name, "(config)", "npm:cowsay", version, version, tag]

        # Nothing newer: no build.
        result = hutch.run("update", name, cwd=project, timeout=BUILD_TIMEOUT)
        assert result.returncode == 0, result.stderr
        assert f"{name} {version} is the newest release" in result.stderr
        assert f"{tag} is up to date" in result.stderr
        assert "hutch: building" not in result.stderr
        assert result.stdout.strip() == tag

        # An older pin moves to the newest release.
        write_pins(hutch, {**pins(hutch), name: {"version": "1.5.0", "checked": time.time()}})
        result = hutch.run("exec", "--dry-run", "--", "true", cwd=project)
        assert f"hutch-{name}:" in result.stdout and tag not in result.stdout
        result = hutch.run("update", "--all", cwd=project, timeout=BUILD_TIMEOUT)
        assert result.returncode == 0, result.stderr
        assert f"{name}: 1.5.0 -> {version}" in result.stderr
        assert tag in result.stdout.split()
        assert pins(hutch)[name]["version"] == version
    finally:
        if tag:
            docker("rmi", tag, timeout=300)


def test_update_notice_on_an_old_pin(hutch: Hutch, project: Path, built: Built) -> None:
    data = pins(hutch)
    old = time.time() - 30 * 86400
    data["claude"] = {**data["claude"], "checked": old, "looked": old}
    write_pins(hutch, data)
    result = hutch.run("run", "--", "--version", cwd=project, input="")
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "hutch update claude" in line]
    assert len(notices) == 1, result.stderr
    # A newer release recorded by an earlier lookup is named; else the pin's age.
    expected = "is available" if "newest" in data["claude"] else "30 days ago"
    assert expected in notices[0], notices[0]
    # The one background lookup answered before hutch exited, and was recorded.
    after = pins(hutch)["claude"]
    assert isinstance(after["looked"], float) and after["looked"] > old
    # Quiet: no notice; and no second lookup within the period.
    result = hutch.run("-q", "run", "--", "--version", cwd=project, input="")
    assert result.returncode == 0 and "hutch update" not in result.stderr
    assert pins(hutch)["claude"]["looked"] == after["looked"]


def test_agents_lists_builtins_with_their_images(hutch: Hutch, project: Path, built: Built) -> None:
    result = hutch.run("agents", cwd=project, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert set(rows) >= {"claude", "codex", "gemini", "opencode", "aider"}
    pin = str(pins(hutch)["claude"]["version"])
    assert rows["claude"][1:3] == ["npm:@anthropic-ai/claude-code", pin]
    assert rows["claude"][-1] == built.tag
    assert rows["aider"][1] == "pip:aider-chat"
    for name in ("codex", "gemini", "opencode", "aider"):
        assert re.fullmatch(r"\d+\.\d+\.\d+\S*", rows[name][3]), rows[name]
