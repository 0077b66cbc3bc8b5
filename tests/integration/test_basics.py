"""The CLI contract on a real engine: the agent runs, statuses pass through,
the working directory maps, piped use works, doctor reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .support import Built, Hutch

pytestmark = pytest.mark.integration

VERSION_LINE = re.compile(r"^(\d+\.\d+\.\d+) \(Claude Code\)$")


def pinned_version(built: Built) -> str:
    return str(json.loads(built.pins.read_text())["claude"]["version"])


def test_claude_version_in_sandbox(hutch: Hutch, project: Path, built: Built) -> None:
    result = hutch.run("-q", "exec", "--", "claude", "--version", cwd=project)
    assert result.returncode == 0, result.stderr
    match = VERSION_LINE.match(result.stdout.strip())
    assert match, f"unexpected output: {result.stdout!r}"
    pin = pinned_version(built)
    assert pin != "latest", "the session's build pinned no exact release (was the registry down?)"
    # The image holds exactly the pinned release, not whatever a cache kept.
    assert match.group(1) == pin


@pytest.mark.engines
@pytest.mark.parametrize("status", [0, 42])
def test_exit_status_passes_through(hutch: Hutch, project: Path, status: int) -> None:
    result = hutch.run("-q", "exec", "--", "sh", "-c", f"exit {status}", cwd=project)
    assert result.returncode == status, result.stderr


@pytest.mark.engines
def test_workdir_same_absolute_path(hutch: Hutch, project: Path) -> None:
    (project / "hutch.toml").write_text("version = 1\n")
    sub = project / "a" / "b"
    sub.mkdir(parents=True)
    hutch.own(project)
    result = hutch.run("-q", "exec", "--", "pwd", cwd=sub)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{sub}\n"


def test_workdir_workspace(hutch: Hutch, project: Path) -> None:
    (project / "hutch.toml").write_text('version = 1\n[sandbox]\nworkdir = "/workspace"\n')
    (project / "marker-at-root").write_text("here\n")
    sub = project / "a" / "b"
    sub.mkdir(parents=True)
    result = hutch.run(
        "-q", "exec", "--", "sh", "-c", "pwd; cat ../../marker-at-root; test -e " + str(project),
        cwd=sub,
    )
    # The host path itself is not inside: only /workspace is.
    assert result.returncode == 1, result.stderr
    assert result.stdout == "/workspace/a/b\nhere\n"


def test_piped_stdin_with_interactive(hutch: Hutch, project: Path) -> None:
    result = hutch.run("-q", "exec", "-i", "--", "cat", cwd=project, input="hello\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"
    # Control: without -i the sandbox gets no stdin at all.
    result = hutch.run("-q", "exec", "--", "cat", cwd=project, input="hello\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_run_agent_headless(hutch: Hutch, project: Path, built: Built) -> None:
    dry = hutch.run("run", "claude", "--dry-run", "--", "--version", cwd=project)
    assert dry.returncode == 0, dry.stderr
    # The agent's default arguments come first, the user's after them.
    assert dry.stdout.rstrip().endswith(f"{built.tag} claude --dangerously-skip-permissions --version")
    result = hutch.run("-q", "run", "claude", "--", "--version", cwd=project, input="")
    assert result.returncode == 0, result.stderr
    assert VERSION_LINE.match(result.stdout.strip()), result.stdout


def test_doctor(hutch: Hutch, project: Path) -> None:
    result = hutch.run("doctor", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("[FAIL]")], result.stdout
    assert "[ok] engine: docker (docker)" in lines
    assert any(re.match(r"\[ok\] docker daemon answers \(server .+\)$", line) for line in lines)
    assert "[ok] base image debian:bookworm-slim present" in lines
    assert any(line.startswith("[ok] host CA certificates trusted in the image:") for line in lines)


def test_config_show_names_origins(hutch: Hutch, project: Path) -> None:
    config = project / "hutch.toml"
    config.write_text('version = 1\n[sandbox]\nmemory = "4g"\n')
    result = hutch.run("config", "show", cwd=project)
    assert result.returncode == 0, result.stderr
    values = {}
    for line in result.stdout.splitlines():
        key, _, rest = line.partition("=")
        value, _, origin = rest.partition("  # ")
        values[key.strip()] = (value.strip(), origin)
    assert values["sandbox.memory"] == ('"4g"', f"project config {config}")
    assert values["network.mode"] == ('"allowlist"', "default")
