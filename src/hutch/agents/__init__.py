"""Agent definitions: data describing how each agent installs and runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from hutch.config.schema import ConfigValue
from hutch.errors import ConfigError, UsageError


class AgentDef(NamedTuple):
    name: str
    title: str
    install: str  # "npm" | "pip"
    package: str
    command: str
    # Arguments `hutch run` passes before the user's own: the sandbox is the
    # permission boundary, so the agent's own prompts are switched off.
    run_args: tuple[str, ...] = ()
    # Paths under the agent home that hold its login state and settings.
    home_paths: tuple[str, ...] = ()
    # Variables the agent understands; passed only when the user names them.
    key_env: tuple[str, ...] = ()
    # Fixed variables the agent needs inside the sandbox (not secrets).
    fixed_env: tuple[tuple[str, str], ...] = ()
    allow: tuple[str, ...] = ()
    login_hint: str = ""
    pinned_version: str | None = None
    builtin: bool = True


BUILTIN: dict[str, AgentDef] = {
    "claude": AgentDef(
        name="claude",
        title="Claude Code",
        install="npm",
        package="@anthropic-ai/claude-code",
        command="claude",
        run_args=("--dangerously-skip-permissions",),
        home_paths=(".claude", ".claude.json"),
        key_env=("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"),
        # Claude Code refuses to skip its prompts as UID 0 unless told that it
        # runs in a sandbox; hutch is one (host root maps to a capability-less UID 0).
        fixed_env=(("IS_SANDBOX", "1"), ("DISABLE_AUTOUPDATER", "1")),
        allow=("api.anthropic.com", "console.anthropic.com", "claude.ai", "statsig.anthropic.com"),
        login_hint="run `hutch` and follow the login link, or name ANTHROPIC_API_KEY in [sandbox] env",
    ),
    "codex": AgentDef(
        name="codex",
        title="OpenAI Codex CLI",
        install="npm",
        package="@openai/codex",
        command="codex",
        run_args=("--dangerously-bypass-approvals-and-sandbox",),
        home_paths=(".codex",),
        key_env=("OPENAI_API_KEY",),
        allow=("api.openai.com", "auth.openai.com", "chatgpt.com"),
        login_hint="run `hutch run codex` and sign in, or name OPENAI_API_KEY in [sandbox] env",
    ),
    "gemini": AgentDef(
        name="gemini",
        title="Gemini CLI",
        install="npm",
        package="@google/gemini-cli",
        command="gemini",
        run_args=("--yolo",),
        home_paths=(".gemini",),
        key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        allow=(
            "generativelanguage.googleapis.com",
            "cloudcode-pa.googleapis.com",
            "oauth2.googleapis.com",
            "accounts.google.com",
        ),
        login_hint="name GEMINI_API_KEY in [sandbox] env, or sign in with Google on first run",
    ),
    "opencode": AgentDef(
        name="opencode",
        title="opencode",
        install="npm",
        package="opencode-ai",
        command="opencode",
        home_paths=(".local/share/opencode", ".config/opencode"),
        key_env=("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"),
        allow=("api.anthropic.com", "api.openai.com", "openrouter.ai", "models.dev"),
        login_hint="run `hutch run opencode -- auth login`, or name a provider key in [sandbox] env",
    ),
    "aider": AgentDef(
        name="aider",
        title="aider",
        install="pip",
        package="aider-chat",
        command="aider",
        run_args=("--yes-always", "--no-check-update"),
        home_paths=(".aider",),
        key_env=("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"),
        allow=("api.anthropic.com", "api.openai.com", "openrouter.ai"),
        login_hint="name ANTHROPIC_API_KEY or OPENAI_API_KEY in [sandbox] env",
    ),
}


def _tuple(table: Mapping[str, ConfigValue], key: str) -> tuple[str, ...]:
    value = table.get(key, ())
    assert isinstance(value, tuple)
    return value


def custom_agent(name: str, table: Mapping[str, ConfigValue]) -> AgentDef:
    install = table.get("install", "npm")
    package = table["package"]
    command = table["command"]
    version = table.get("version")
    assert isinstance(install, str) and isinstance(package, str) and isinstance(command, str)
    assert version is None or isinstance(version, str)
    return AgentDef(
        name=name,
        title=name,
        install=install,
        package=package,
        command=command,
        run_args=_tuple(table, "args"),
        home_paths=_tuple(table, "home"),
        key_env=tuple(e.split("=", 1)[0] for e in _tuple(table, "env")),
        allow=_tuple(table, "allow"),
        pinned_version=version,
        builtin=False,
    )


def all_agents(custom: Mapping[str, Mapping[str, ConfigValue]]) -> dict[str, AgentDef]:
    agents = dict(BUILTIN)
    for name, table in custom.items():
        agents[name] = custom_agent(name, table)
    return agents


def resolve(name: str, custom: Mapping[str, Mapping[str, ConfigValue]]) -> AgentDef:
    agents = all_agents(custom)
    try:
        return agents[name]
    except KeyError:
        known = ", ".join(sorted(agents))
        error = UsageError if name else ConfigError
        raise error(
            f"unknown agent {name!r}",
            f"pick one of: {known}; or define [agents.{name}] in hutch.toml",
        ) from None
