"""The host-executed surface: project files that the host's tools later run.

Three classes, from most to least dangerous:

- SURFACE: files through which git, shells, editors, agents and package
  managers on the host run commands by themselves (hooks, `.envrc`, editor
  tasks, agent hooks and MCP servers, `.npmrc`'s node-options, `.yarnrc.yml`'s
  yarnPath, hutch's own config). The ones that exist are read-only inside the
  sandbox; new or changed ones need the user's yes before the host keeps them.
  The project's own `.git` is not here: it is a copy-on-write layer
  (hutch.gitlayer); nested repositories' config and hooks are.
- BUILD: files whose scripts run when the user builds or tests on the host
  (`Makefile`, `package.json` scripts, `conftest.py`, CI workflows, ...),
  and the instructions the host's agents follow. The agent edits these as
  part of its work, so they stay writable; changes are reported with a diff.
- STARTUP: files an interpreter runs at start-up from a vendored tree
  (`.pth` files, `sitecustomize.py`, `node_modules/.bin` entries); reported
  when they appear or change.
"""

from __future__ import annotations

from typing import Literal

SurfaceKind = Literal["surface", "build", "startup"]

# Relative to the project root: the path itself and everything below it.
SURFACE_ROOT: tuple[str, ...] = (
    ".gitmodules",
    # hook managers whose files a host `git commit` runs
    ".husky",
    ".pre-commit-config.yaml",
    "lefthook.yml",
    "lefthook.yaml",
    ".lefthook.yml",
    ".lefthook.yaml",
    "lefthook-local.yml",
    ".lefthook",
    # editors: tasks, launch configs, extensions' settings, exrc files
    ".vscode",
    ".idea",
    ".devcontainer",
    ".devcontainer.json",
    ".zed",
    ".nvim.lua",
    ".nvimrc",
    ".exrc",
    # agents on the host: hooks, MCP servers, commands and instructions
    ".claude",
    ".mcp.json",
    ".cursor",
    ".gemini",
    ".codex",
    "opencode.json",
    "opencode.jsonc",
    ".opencode",
    ".aider.conf.yml",
    ".continue",
    # tool managers that run hooks or tasks on `cd`
    ".mise",
    "mise.local.toml",
    # hutch's own config decides the next sandbox's mounts and network
    "hutch.toml",
)
# Basenames that count at any depth (outside vendored trees).
SURFACE_ANYWHERE = frozenset(
    {
        ".envrc",  # direnv runs it on `cd`
        ".npmrc",  # node-options, script-shell
        ".yarnrc",
        ".yarnrc.yml",  # yarnPath: JavaScript yarn runs
        ".pnpmfile.cjs",  # pnpm's install hooks
        "bunfig.toml",  # preload scripts
        ".mise.toml",
        "mise.toml",
    }
)
# Inside a nested repository's .git directory: what git on the host runs.
GIT_SURFACE = ("config", "config.worktree", "hooks", "commondir", "gitdir", "info/attributes")

BUILD_ANYWHERE = frozenset(
    {
        "makefile",
        "gnumakefile",
        "package.json",
        "pyproject.toml",
        "setup.py",
        "setup.cfg",
        "conftest.py",
        "noxfile.py",
        "tox.ini",
        "build.rs",
        "justfile",
        ".justfile",
        "taskfile.yml",
        "taskfile.yaml",
        "rakefile",
        "build.gradle",
        "build.gradle.kts",
        "settings.gradle",
        "settings.gradle.kts",
        "gradlew",
        "pom.xml",
        "cmakelists.txt",
        "docker-compose.yml",
        "docker-compose.yaml",
        "compose.yml",
        "compose.yaml",
        "claude.md",
        "agents.md",
        "gemini.md",
    }
)
BUILD_ROOT: tuple[str, ...] = (".github/workflows", ".gitlab-ci.yml", ".cargo/config.toml", ".cargo/config")

STARTUP_NAMES = frozenset({"sitecustomize.py", "usercustomize.py"})

# Walked (a secret or a planted executable there still counts) but never
# searched for build files, and listed last in reports.
VENDORED = frozenset({"node_modules", ".venv", "venv", "vendor", "site-packages", ".tox", "bower_components"})

_ROOT_SET = frozenset(SURFACE_ROOT)
_BUILD_ROOT_SET = frozenset(BUILD_ROOT)


def classify(rel: str, vendored: bool) -> SurfaceKind | None:
    """The surface class of a non-directory at ``rel`` (POSIX, relative to the
    project root), or None. ``vendored``: it lies below a vendored directory."""
    parts = rel.split("/")
    top = parts[0]
    if top in _ROOT_SET:
        return "surface"
    name = parts[-1]
    lower = name.lower()
    if ".git" in parts[:-1] and _in_git_surface(parts):
        return "surface"  # a nested repository's config and hooks, wherever it is
    if not vendored:
        if name in SURFACE_ANYWHERE:
            return "surface"
        if lower in BUILD_ANYWHERE or (lower.startswith("docker-compose") and lower.endswith((".yml", ".yaml"))):
            return "build"
        if any(rel == b or rel.startswith(b + "/") for b in _BUILD_ROOT_SET):
            return "build"
        if parts[-1] == ".git":
            return "surface"  # a gitdir pointer file: sends host git anywhere
        return None
    if lower.endswith(".pth") or lower in STARTUP_NAMES:
        return "startup"
    if len(parts) >= 3 and parts[-2] == ".bin" and parts[-3] == "node_modules":
        return "startup"
    return None


def _in_git_surface(parts: list[str]) -> bool:
    """parts lies inside a nested repository's .git and is one of GIT_SURFACE."""
    at = len(parts) - 1 - parts[::-1].index(".git")
    inner = "/".join(parts[at + 1 :])
    return any(inner == g or inner.startswith(g + "/") for g in GIT_SURFACE)


def is_vendored_name(name: str) -> bool:
    return name in VENDORED
