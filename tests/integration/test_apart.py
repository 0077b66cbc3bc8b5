"""Threat model 9 (apart): projects, sessions and local users stay apart, and a
cloned repository's hutch.toml widens nothing. Each guarantee with its control."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .support import Engine, Hutch

pytestmark = [pytest.mark.integration]

CANARY = "CANARY_7e1f0c2b"
OTHER_UID = 1234  # another local user (the non-root test user's uid)


def sh(hutch: Hutch, cwd: Path, script: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return hutch.run("-q", "exec", "--network", "none", *flags, "--", "sh", "-c", script, cwd=cwd)


# -- 3. another local user cannot choose the project root ---------------------------


@pytest.mark.engines("docker", "podman-rootless")
def test_a_hutch_toml_planted_in_a_shared_directory_is_ignored(engine: Engine, hutch: Hutch) -> None:
    other = OTHER_UID if engine.uid != OTHER_UID else OTHER_UID + 1
    shared = hutch.root / "tmp"  # as /tmp: sticky and writable by everyone
    repo = shared / "x" / "repo"
    repo.mkdir(parents=True)
    (shared / "neighbour.txt").write_text(CANARY)
    hutch.own(shared)
    planted = shared / "hutch.toml"
    planted.write_text('[sandbox]\nmemory = "1g"\n')
    os.chown(planted, other, other)
    shared.chmod(0o1777)
    result = sh(hutch, repo, "pwd; cat ../../neighbour.txt 2>&1")
    assert result.stdout, result.stderr
    assert result.stdout.splitlines()[0] == str(repo)  # the project is the repository...
    assert CANARY not in result.stdout  # ...and the shared directory is not in the sandbox
    assert f"ignoring {planted}" in result.stderr and "others can write it" in result.stderr
    # Control: the same file, the user's own in a directory only they can write,
    # makes that directory the project, and all of it is inside.
    os.chown(planted, engine.uid, engine.gid)
    shared.chmod(0o755)
    control = sh(hutch, repo, "pwd; cat ../../neighbour.txt")
    assert control.stdout.splitlines() == [str(repo), CANARY], control.stderr
    assert "ignoring" not in control.stderr
    # Another user's file in that private directory is still passed over.
    os.chown(planted, other, other)
    theirs = sh(hutch, repo, "pwd")
    assert theirs.stdout.strip() == str(repo)
    assert f"belongs to uid {other}" in theirs.stderr


def test_a_config_file_that_is_a_fifo_exits_3_without_waiting(hutch: Hutch, project: Path) -> None:
    os.mkfifo(project / "hutch.toml")
    result = hutch.run("exec", "--", "true", cwd=project, timeout=30)
    assert result.returncode == 3, result.stderr
    assert "is not a regular file" in result.stderr
    (project / "hutch.toml").unlink()
    user_config = hutch.config / "hutch" / "config.toml"
    user_config.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(user_config)
    result = hutch.run("exec", "--", "true", cwd=project, timeout=30)
    assert result.returncode == 3 and str(user_config) in result.stderr
    # Control: a regular file there is read.
    user_config.unlink()
    user_config.write_text("version = 1\n")
    assert hutch.run("-q", "exec", "--", "true", cwd=project, timeout=60).returncode == 0
