"""hutch.guard.tracked: masked files that git tracks are named in the launch line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hutch import process
from hutch.commands.run import describe
from hutch.guard.tracked import TrackedQuery
from hutch.plan import Identity, Masking, Mount, RunPlan

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(project: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", *args], cwd=project,
                   check=True, capture_output=True)  # fmt: skip


@needs_git
def test_tracked_masked_paths_are_found(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    for name in (".env", ".env.local", ":odd*", "keys/id_rsa", "plain.txt"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    git(tmp_path, "--literal-pathspecs", "add", "--", ".env", ":odd*", "keys/id_rsa", "plain.txt")
    masked = (".env", ".env.local", ":odd*", "keys")
    assert TrackedQuery(str(tmp_path), masked).result() == (".env", ":odd*", "keys")


def test_no_git_asked_without_masks_or_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def spawned(*args: object, **kwargs: object) -> process.Pending:
        raise AssertionError("git was run")

    monkeypatch.setattr(process, "start_capture", spawned)
    assert TrackedQuery(str(tmp_path), (".env",)).result() == ()  # no .git
    (tmp_path / ".git").mkdir()
    assert TrackedQuery(str(tmp_path), ()).result() == ()  # nothing masked


def test_without_git_nothing_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".git").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert TrackedQuery(str(tmp_path), (".env",)).result() == ()


def test_the_launch_line_says_when_masked_files_are_in_git_history() -> None:
    plan = RunPlan(image="i", name="n", session="s1", labels=(), identity=Identity(1, 1, "u"),
                   workdir="/p", mounts=(Mount("/p", "/p"),), env=(), network="none", egress="none",
                   memory="1g", cpus=1.0, pids=10, interactive=False, tty=False, command=("x",))  # fmt: skip
    masking = Masking(files=(".env", "a.pem"))
    assert describe(plan, masking, 0).endswith("| 2 secret files masked")
    line = describe(plan, masking, 0, (".env",))
    assert line.endswith("| 2 secret files masked (tracked by git, so readable in its history: .env)")
