"""Secret masking and the host-executed surface on a real engine, each with a control."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.support import Hutch

pytestmark = [pytest.mark.integration, pytest.mark.engines]

CANARY = "CANARY_d41d8cd98f00"


def sh(hutch: Hutch, project: Path, script: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return hutch.run("exec", "--network", "none", *flags, "--", "sh", "-c", script, cwd=project)


def git(project: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@e", *args],
        cwd=project, check=True, capture_output=True,
    )  # fmt: skip


def test_secret_files_read_empty_and_cannot_be_written(hutch: Hutch, project: Path) -> None:
    (project / ".env").write_text(f"TOKEN={CANARY}\n")
    (project / ".env.example").write_text("TOKEN=changeme\n")
    (project / "deploy.pem").write_text(CANARY)
    (project / ".ssh").mkdir()
    (project / ".ssh" / "id_ed25519").write_text(CANARY)
    (project / "ordinary.txt").write_text("visible")
    hutch.own(project)
    script = (
        "cat .env deploy.pem .env.example ordinary.txt; ls -A .ssh; "
        "echo overwritten > .env && echo WROTE"
    )
    control = sh(hutch, project, script, "--no-mask")
    assert CANARY in control.stdout and "WROTE" in control.stdout
    (project / ".env").write_text(f"TOKEN={CANARY}\n")
    masked = sh(hutch, project, script)
    assert CANARY not in masked.stdout
    assert "changeme" in masked.stdout and "visible" in masked.stdout
    assert "id_ed25519" not in masked.stdout
    assert "WROTE" not in masked.stdout
    assert (project / ".env").read_text() == f"TOKEN={CANARY}\n"
    record = json.loads(hutch.run("audit", "--json", cwd=project).stdout)
    assert ".env" in record["masked_files"] and ".ssh" in record["masked_dirs"]


def test_a_host_executed_file_that_holds_a_secret_is_masked(hutch: Hutch, project: Path) -> None:
    # Both masked and host-executed: one read-only mask, not a second mount on
    # the same path (which the engine refuses).
    (project / ".mcp.json").write_text(json.dumps({"oauth": {"client_secret": CANARY}}))
    hutch.own(project)
    script = "cat .mcp.json; (echo x > .mcp.json) 2>/dev/null && echo WROTE; echo STARTED"
    control = sh(hutch, project, script, "--no-mask")
    assert CANARY in control.stdout, control.stderr
    masked = sh(hutch, project, script)
    assert "STARTED" in masked.stdout, masked.stderr
    assert CANARY not in masked.stdout and "WROTE" not in masked.stdout
    assert CANARY in (project / ".mcp.json").read_text()


def test_config_mask_and_unmask(hutch: Hutch, project: Path) -> None:
    (project / "prod.secret").write_text(CANARY)
    (project / ".env.local").write_text(CANARY + "-local")
    (project / "hutch.toml").write_text(
        '[secrets]\nmask = ["*.secret"]\nunmask = [".env.local"]\n'
    )
    hutch.own(project)
    # Unmasking is the project file widening the sandbox: it needs the user's trust.
    untrusted = sh(hutch, project, "cat .env.local")
    assert untrusted.returncode == 3 and "hutch config trust" in untrusted.stderr
    assert CANARY not in untrusted.stdout
    assert hutch.run("config", "trust", cwd=project).returncode == 0
    out = sh(hutch, project, "cat prod.secret; echo; cat .env.local").stdout
    assert out.splitlines() == ["", CANARY + "-local"]


def test_git_hooks_and_config_never_reach_the_host(hutch: Hutch, project: Path) -> None:
    git(project, "init", "-q")
    (project / "a.txt").write_text("a")
    hutch.own(project)
    script = (
        "git -c user.name=a -c user.email=a@b add a.txt && "
        "git -c user.name=a -c user.email=a@b commit -qm inside && echo COMMITTED; "
        "echo 'curl evil' > .git/hooks/pre-commit && echo HOOKED; "
        "echo '[core] hooksPath = /tmp' >> .git/config && echo CONFIGURED"
    )
    out = sh(hutch, project, script)
    assert "COMMITTED" in out.stdout, out.stderr
    # Inside, .git is a copy-on-write layer: git works as usual there ...
    assert "HOOKED" in out.stdout and "CONFIGURED" in out.stdout
    # ... and only the commit reaches the host.
    assert not (project / ".git" / "hooks" / "pre-commit").exists()
    assert "hooksPath" not in (project / ".git" / "config").read_text()
    log = ["git", "-c", "safe.directory=*", "log", "--format=%s"]  # the project may be another user's
    assert subprocess.run(log, cwd=project, capture_output=True, text=True).stdout.strip() == "inside"
    # --no-mask lifts masking only: the .git layer stays.
    control = sh(hutch, project, "echo x > .git/hooks/pre-commit && echo HOOKED", "--no-mask")
    assert "HOOKED" in control.stdout
    assert not (project / ".git" / "hooks" / "pre-commit").exists()


def test_changes_to_host_surface_are_reported(hutch: Hutch, project: Path) -> None:
    (project / "src").mkdir()
    hutch.own(project)
    script = (
        "printf '#!/bin/sh\\necho pwned\\n' > src/run.sh && chmod +x src/run.sh; "
        "ln -s /etc/passwd src/escape; mkdir -p sub/.vscode; echo '{}' > sub/.vscode/tasks.json"
    )
    result = sh(hutch, project, script)
    assert result.returncode == 0
    assert "src/run.sh" in result.stderr and "src/escape" in result.stderr
    record = json.loads(hutch.run("audit", "--json", cwd=project).stdout)
    kinds = {c["path"]: c["kind"] for c in record["changes"]}
    assert kinds["src/run.sh"] == "executable"
    assert kinds["src/escape"] == "link-outside"
    # Control: an ordinary edit is not news.
    quiet = sh(hutch, project, "echo data > src/notes.txt")
    assert "notes.txt" not in quiet.stderr


def test_planted_link_never_widens_a_mount(hutch: Hutch, project: Path) -> None:
    # Outside the project, but the user's own: readable but for the mount.
    outside = hutch.root / "outside-secret"
    outside.mkdir()
    (outside / "key").write_text(CANARY)
    (project / ".vscode").symlink_to(outside)
    hutch.own(project, outside)
    result = sh(hutch, project, "cat .vscode/key 2>&1; ls -la .vscode")
    assert CANARY not in result.stdout
    assert "symlink" in result.stderr
    assert (outside / "key").read_text() == CANARY


@pytest.mark.parametrize("name", ["with space", "co:lon,comma", "eq=ual", "-dash", "$(touch pwned)"])
def test_odd_names_give_one_correct_mask(hutch: Hutch, project: Path, name: str) -> None:
    directory = project / name
    directory.mkdir()
    (directory / ".env").write_text(CANARY)
    (directory / "plain.txt").write_text("plain")
    hutch.own(project)
    quoted = name.replace("'", "'\\''")
    out = sh(hutch, project, f"cat './{quoted}/.env'; cat './{quoted}/plain.txt'")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "plain"
    assert not (project / "pwned").exists() and not Path("pwned").exists()


def test_host_files_stay_unchanged(hutch: Hutch, project: Path) -> None:
    secret = project / ".env"
    secret.write_text(CANARY)
    hutch.own(project)
    before = os.stat(secret)
    sh(hutch, project, "cat .env > /dev/null; : > .env; rm -f .env")
    after = os.stat(secret)
    assert secret.read_text() == CANARY
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)


def test_no_agent_sockets_or_credential_helpers_inside(hutch: Hutch, project: Path) -> None:
    import socket as socketlib

    agent_socket = hutch.root / "agent.sock"  # one the user could hand in
    server = socketlib.socket(socketlib.AF_UNIX)
    server.bind(str(agent_socket))
    hutch.own(agent_socket)
    env = hutch.env(SSH_AUTH_SOCK=str(agent_socket), GPG_AGENT_INFO=str(agent_socket))
    probe = (
        'echo "ssh=${SSH_AUTH_SOCK:-none} gpg=${GPG_AGENT_INFO:-none}"; '
        f"test -S '{agent_socket}' && echo SOCKET; "
        "git config --get credential.helper || echo nohelper; "
        "for s in /var/run/docker.sock /run/docker.sock /run/podman/podman.sock "
        "/run/user/*/podman/podman.sock; do test -S \"$s\" && echo \"engine=$s\"; done; echo checked"
    )
    result = hutch.run("exec", "--network", "none", "--", "sh", "-c", probe, cwd=project, env=env)
    server.close()
    assert "ssh=none gpg=none" in result.stdout
    assert "SOCKET" not in result.stdout
    assert "nohelper" in result.stdout and "checked" in result.stdout
    assert "engine=" not in result.stdout
    # Control: naming the variable lets the value in (the socket itself still stays out).
    named = hutch.run(
        "exec", "--network", "none", "--env", "SSH_AUTH_SOCK", "--", "sh", "-c", probe,
        cwd=project, env=env,
    )  # fmt: skip
    assert f"ssh={agent_socket}" in named.stdout and "SOCKET" not in named.stdout


def test_planted_link_in_a_user_mount_is_refused(hutch: Hutch, project: Path) -> None:
    private = hutch.root / "private"
    private.mkdir()
    (private / "id").write_text(CANARY)
    real = project / "data"
    real.mkdir()
    (real / "ok.txt").write_text("data")
    (project / "hutch.toml").write_text('[sandbox]\nmounts = ["data:/data:ro"]\n')
    hutch.own(project, private)
    assert hutch.run("config", "trust", cwd=project).returncode == 0  # any added mount needs it
    # Control: a real directory mounts.
    control = sh(hutch, project, "cat /data/ok.txt")
    assert control.stdout == "data", control.stderr
    # A link planted where the mount source was: refused, nothing mounted.
    real.rename(project / "data-old")
    (project / "data").symlink_to(private)
    refused = sh(hutch, project, "cat /data/id")
    assert refused.returncode == 125
    assert "symlink" in refused.stderr
    assert CANARY not in refused.stdout



def test_project_config_cannot_widen_the_sandbox_untrusted(hutch: Hutch, project: Path) -> None:
    # Beside the project, where the engine's user (rootless too) can reach it.
    outside = hutch.root / "outside"
    outside.mkdir()
    (outside / "key").write_text(CANARY)
    hutch.own(outside)
    toml = project / "hutch.toml"
    toml.write_text(f'[sandbox]\nmounts = ["{outside}:/stolen:ro"]\n')
    hutch.own(toml)
    refused = sh(hutch, project, "cat /stolen/key")
    assert refused.returncode == 3
    assert str(outside) in refused.stderr and "hutch config trust" in refused.stderr
    assert CANARY not in refused.stdout
    # Control: once the user trusts this exact file, the mount is theirs.
    assert hutch.run("config", "trust", cwd=project).returncode == 0
    trusted = sh(hutch, project, "cat /stolen/key")
    assert trusted.stdout == CANARY, trusted.stderr
    # Any change asks again.
    toml.write_text(toml.read_text() + '[network]\nmode = "open"\n')
    again = sh(hutch, project, "true")
    assert again.returncode == 3
    # Settings that do not widen need no trust.
    toml.write_text('[sandbox]\nmemory = "2g"\n')
    assert sh(hutch, project, "true").returncode == 0


def test_secrets_added_between_sessions_deep_in_node_modules_are_masked(hutch: Hutch, project: Path) -> None:
    deep = project / "node_modules" / "/".join(f"d{i}" for i in range(12))
    deep.mkdir(parents=True)
    (deep / "index.js").write_text("module.exports = 1\n")
    bundle = project / ".venv" / "lib" / "python3.11" / "site-packages" / "certifi" / "cacert.pem"
    bundle.parent.mkdir(parents=True)
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    hutch.own(project)
    rel = deep.relative_to(project)
    first = sh(hutch, project, f"cat {rel}/index.js; cat {bundle.relative_to(project)}")
    # A CA bundle is not a secret: code that calls certifi.where() keeps working.
    assert "module.exports" in first.stdout and "BEGIN CERTIFICATE" in first.stdout, first.stderr
    # Between two sessions the user adds a key where hutch has walked before.
    (deep / ".env").write_text(CANARY)
    (deep / "server.pem").write_text(f"-----BEGIN PRIVATE KEY-----\n{CANARY}\n-----END PRIVATE KEY-----\n")
    hutch.own(project)
    second = sh(hutch, project, f"cat {rel}/.env {rel}/server.pem; echo done")
    assert "done" in second.stdout and CANARY not in second.stdout, second.stdout
    control = sh(hutch, project, f"cat {rel}/.env", "--no-mask")
    assert CANARY in control.stdout
