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
GIT_SURFACE = ("config", "config.worktree", "hooks", "commondir", "gitdir")

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
_BUILD_ROOT_FILES = frozenset(b for b in BUILD_ROOT if b.count("/") <= 1)
_NESTED_GIT_FILES = frozenset(GIT_SURFACE)
_NESTED_GIT_DIRS = frozenset(GIT_SURFACE)
# Inside a nested repository's .git, these hold submodules' and worktrees'
# own git directories (at any depth: a submodule's name may hold slashes),
# each with its config, hooks and pointers.
_NESTED_GIT_HOLDERS = frozenset({"modules", "worktrees"})


class Context:
    """What a directory's position says about the entries in it, computed once
    per directory so that the test per entry is a few set lookups."""

    __slots__ = ("_rel", "all_kind", "git_dir", "node_bin", "plain", "root", "vendored")

    def __init__(self, rel: str, extra: tuple[str, ...] = ()) -> None:
        """``extra``: more surface directories for this project (the project's
        own core.hooksPath when it lies inside it)."""
        parts = rel.split("/") if rel else []
        self.root = not parts
        self.vendored = not VENDORED.isdisjoint(parts)
        self.all_kind: SurfaceKind | None = None
        self.git_dir = False  # directly inside a nested repository's .git
        self.node_bin = len(parts) >= 2 and parts[-1] == ".bin" and parts[-2] == "node_modules"
        if (parts and parts[0] in _ROOT_SET) or any(rel == e or rel.startswith(e + "/") for e in extra):
            self.all_kind = "surface"
        elif ".git" in parts:
            at = len(parts) - 1 - parts[::-1].index(".git")
            inner = parts[at + 1 :]
            if not inner:
                self.git_dir = True
            elif inner[0] in _NESTED_GIT_DIRS:
                self.all_kind = "surface"
            elif inner[0] in _NESTED_GIT_HOLDERS:
                # Where one git directory ends below is not told by the path,
                # so any `hooks` below counts, and the git files in any
                # directory (a branch named `config` is held too: harmless).
                if "hooks" in inner[1:]:
                    self.all_kind = "surface"
                else:
                    self.git_dir = True
        elif not self.vendored and any(rel == b or rel.startswith(b + "/") for b in BUILD_ROOT):
            self.all_kind = "build"
        self._rel = rel
        # Inside node_modules, .venv, ... with nothing else special: `kind` is
        # None for every name outside PLAIN_NAMES and PLAIN_SUFFIXES.
        self.plain = self.vendored and not self.git_dir and not self.node_bin and self.all_kind is None

    # What may have a kind in a plain context, lower-cased (see kind below).
    PLAIN_NAMES = STARTUP_NAMES | {".git"}
    PLAIN_SUFFIXES = (".pth",)

    def kind(self, name: str, lower: str) -> SurfaceKind | None:
        """The surface class of a non-directory called ``name`` here."""
        if self.all_kind is not None:
            return self.all_kind
        if self.root and name in _ROOT_SET:
            return "surface"
        if self.git_dir:
            return "surface" if name in _NESTED_GIT_FILES else None
        if name == ".git":
            return "surface"  # a gitdir pointer file: sends host git anywhere
        if not self.vendored:
            if name in SURFACE_ANYWHERE:
                return "surface"
            if lower in BUILD_ANYWHERE or (
                lower.startswith("docker-compose") and lower.endswith((".yml", ".yaml"))
            ):
                return "build"
            if (f"{self._rel}/{name}" if self._rel else name) in _BUILD_ROOT_FILES:
                return "build"
            return None
        if lower.endswith(".pth") or lower in STARTUP_NAMES or self.node_bin:
            return "startup"
        return None


def classify(rel: str, vendored: bool | None = None) -> SurfaceKind | None:
    """The surface class of a non-directory at ``rel`` (POSIX, relative to the
    project root), or None. ``vendored`` is implied by the path."""
    parent, _, name = rel.rpartition("/")
    return Context(parent).kind(name, name.lower())
