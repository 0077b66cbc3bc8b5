"""Agent definitions: data describing how each agent installs and runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from hutch.config.schema import ConfigValue, matches
from hutch.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from collections.abc import Mapping


class LoginFile(NamedTuple):
    """A file in the agent's home that holds (part of) its login state: the
    only thing of an agent's home that every project shares (hutch.logins)."""

    path: str  # relative to the agent's home
    # Only these entries of it are login state: top-level keys (dotted for one
    # level down) of a JSON object, or variable names of a KEY=value file.
    # Empty: the whole file.
    keys: tuple[str, ...] = ()


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
    # Node.js major version for an npm agent that does not run on the base's
    # own Node.js; installed with the agent, from the npm registry's `node` package.
    node: str | None = None
    # Its login state: shared by every project's home for this agent, while
    # everything else in a home stays with its project.
    login: tuple[LoginFile, ...] = ()


BUILTIN: dict[str, AgentDef] = {
    "claude": AgentDef(
        name="claude",
        title="Claude Code",
        install="npm",
        package="@anthropic-ai/claude-code",
        command="claude",
        run_args=("--dangerously-skip-permissions",),
        home_paths=(".claude", ".claude.json"),
        # The OAuth credentials, and the account part of .claude.json (the rest
        # of it is per project: its history, trusted folders, tips).
        login=(
            LoginFile(".claude/.credentials.json"),
            LoginFile(
                ".claude.json",
                ("oauthAccount", "primaryApiKey", "customApiKeyResponses", "userID",
                 "hasCompletedOnboarding", "lastOnboardingVersion"),
            ),
        ),
        key_env=("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"),
        # Claude Code refuses to skip its prompts as UID 0 unless told that it
        # runs in a sandbox; hutch is one (host root maps to a capability-less UID 0).
        fixed_env=(("IS_SANDBOX", "1"), ("DISABLE_AUTOUPDATER", "1")),
        # The API; OAuth token exchange (platform.claude.com since 2.1, console.
        # anthropic.com before); claude.ai for WebFetch's domain check; telemetry.
        allow=(
            "api.anthropic.com",
            "platform.claude.com",
            "console.anthropic.com",
            "claude.ai",
            "statsig.anthropic.com",
        ),
        login_hint=(
            "run `hutch` and open the login link it prints, or name ANTHROPIC_API_KEY "
            "(or CLAUDE_CODE_OAUTH_TOKEN from `claude setup-token`) in [sandbox] env"
        ),
        # The package's engines field asks for Node 22, but its postinstall only
        # copies a native binary into place: the base's Node.js 18 runs that fine.
    ),
    "codex": AgentDef(
        name="codex",
        title="OpenAI Codex CLI",
        install="npm",
        package="@openai/codex",
        command="codex",
        # A native binary behind a small launcher (engines: node >= 16).
        run_args=("--dangerously-bypass-approvals-and-sandbox",),
        home_paths=(".codex",),
        login=(LoginFile(".codex/auth.json"),),
        key_env=("OPENAI_API_KEY", "CODEX_API_KEY"),
        allow=("api.openai.com", "auth.openai.com", "chatgpt.com"),
        # The browser login redirects to a port on localhost, which the host's
        # browser cannot reach inside the sandbox; the device code flow needs none.
        login_hint=(
            "run `hutch run codex -- login --device-auth`, or name OPENAI_API_KEY in [sandbox] env"
        ),
    ),
    "gemini": AgentDef(
        name="gemini",
        title="Gemini CLI",
        install="npm",
        package="@google/gemini-cli",
        command="gemini",
        run_args=("--yolo",),
        home_paths=(".gemini",),
        # Google sign-in's tokens, the account it is for, and which way of
        # signing in was chosen (the rest of settings.json can run commands).
        login=(
            LoginFile(".gemini/oauth_creds.json"),
            LoginFile(".gemini/google_accounts.json"),
            LoginFile(".gemini/settings.json", ("security.auth", "selectedAuthType")),
        ),
        key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        # No browser inside: Google sign-in prints a link and asks for the code.
        fixed_env=(("NO_BROWSER", "true"),),
        allow=(
            "generativelanguage.googleapis.com",
            "cloudcode-pa.googleapis.com",
            "oauth2.googleapis.com",
            "accounts.google.com",
        ),
        login_hint=(
            "name GEMINI_API_KEY in [sandbox] env, or run `hutch run gemini`, "
            "open the Google sign-in link and paste the code back"
        ),
        # Plain JavaScript that needs Node 20 (fails on 18 with "Invalid regular
        # expression flags"); the last release for Node 18 is 0.1.9, far too old.
        node="24",
    ),
    "opencode": AgentDef(
        name="opencode",
        title="opencode",
        install="npm",
        package="opencode-ai",
        command="opencode",
        # opencode's `--auto` is an option of the TUI command only (`opencode
        # --auto run ...` reads "run" as a project path), so the permission rules
        # are set through its environment instead, for every subcommand alike.
        fixed_env=(
            ("OPENCODE_PERMISSION", '{"*":"allow"}'),
            ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
        ),
        home_paths=(".local/share/opencode", ".config/opencode"),
        login=(LoginFile(".local/share/opencode/auth.json"),),
        key_env=("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"),
        allow=("api.anthropic.com", "api.openai.com", "openrouter.ai", "models.dev"),
        login_hint=(
            "run `hutch run opencode -- auth login`, or name a provider key "
            "(ANTHROPIC_API_KEY, OPENAI_API_KEY, ...) in [sandbox] env"
        ),
    ),
    "aider": AgentDef(
        name="aider",
        title="aider",
        install="pip",
        package="aider-chat",
        command="aider",
        run_args=("--yes-always", "--no-check-update"),
        home_paths=(".aider",),
        # aider loads this file as environment: only its OpenRouter login is
        # shared, never an AIDER_* setting (some name commands to run).
        login=(LoginFile(".aider/oauth-keys.env", ("OPENROUTER_API_KEY",)),),
        key_env=("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"),
        allow=("api.anthropic.com", "api.openai.com", "openrouter.ai"),
        login_hint="name ANTHROPIC_API_KEY, OPENAI_API_KEY or OPENROUTER_API_KEY in [sandbox] env",
    ),
}

# Custom agents end up in a RUN line and in registry URLs: keep them to plain names.
_NPM_NAME = r"^(@[a-z0-9][a-z0-9._\-]*/)?[a-z0-9][a-z0-9._\-]*$"
_PIP_NAME = r"^[A-Za-z0-9]([A-Za-z0-9._\-]*[A-Za-z0-9])?(\[[A-Za-z0-9,._\-]+\])?$"
_COMMAND = r"^[A-Za-z0-9][A-Za-z0-9._+\-]*$"
_VERSION = r"^[A-Za-z0-9][A-Za-z0-9.+_\-]*$"
_NODE_MAJOR = r"^[1-9][0-9]*$"


def registry_name(agent: AgentDef) -> str:
    """The package's name in its registry: pip extras (`pkg[extra]`) dropped."""
    return agent.package.split("[", 1)[0]


def _tuple(table: Mapping[str, ConfigValue], key: str) -> tuple[str, ...]:
    value = table.get(key, ())
    assert isinstance(value, tuple)
    return value


def _text(table: Mapping[str, ConfigValue], key: str, default: str | None = None) -> str | None:
    value = table.get(key, default)
    assert value is None or isinstance(value, str)
    return value


def _invalid(name: str, key: str, message: str, hint: str) -> ConfigError:
    return ConfigError(f"[agents.{name}] {key}: {message}", hint)


def custom_agent(name: str, table: Mapping[str, ConfigValue]) -> AgentDef:
    """An agent from an [agents.NAME] table, checked like every other config value."""
    install = _text(table, "install", "npm")
    package = _text(table, "package")
    command = _text(table, "command")
    version = _text(table, "version")
    assert install in ("npm", "pip") and package is not None and command is not None
    pattern = _NPM_NAME if install == "npm" else _PIP_NAME
    if not matches(pattern, package):
        example = '"cowsay" or "@scope/tool"' if install == "npm" else '"aider-chat"'
        raise _invalid(
            name, "package", f"{package!r} is not an {install} package name",
            f"give the bare name, e.g. {example}; put a version in `version`",
        )  # fmt: skip
    if not matches(_COMMAND, command):
        raise _invalid(
            name, "command", f"{command!r} is not a command name",
            "name the program the package installs, e.g. \"cowsay\"; arguments go in `args`",
        )  # fmt: skip
    if version is not None and not matches(_VERSION, version):
        raise _invalid(
            name, "version", f"{version!r} is not a version", 'an exact release, e.g. "1.6.0"'
        )
    homes = _tuple(table, "home")
    for path in homes:
        parts = path.split("/")
        if path.startswith(("/", "~")) or ".." in parts or "" in parts or path == ".":
            raise _invalid(
                name, "home", f"{path!r} must be a path inside the agent's home",
                'relative to the home directory, e.g. ".mytool" or ".config/mytool"',
            )  # fmt: skip
    allow = _tuple(table, "allow")
    if allow:
        from hutch.egress.policy import parse_allow_entry

        for entry in allow:
            try:
                parse_allow_entry(entry)
            except ValueError as err:
                raise _invalid(
                    name, "allow", str(err), 'write HOST[:PORT] or *.DOMAIN[:PORT], e.g. "api.example.com"'
                ) from err
    node = _text(table, "node")
    if node is not None and (install != "npm" or not matches(_NODE_MAJOR, node)):
        raise _invalid(
            name, "node", f"{node!r} is not a Node.js major version for an npm agent",
            'e.g. node = "24", for npm agents that need a newer Node.js than the base has',
        )  # fmt: skip
    key_env: list[str] = []
    fixed_env: list[tuple[str, str]] = []
    for entry in _tuple(table, "env"):
        # NAME: a variable the agent understands (passed only when named in
        # [sandbox] env); NAME=value: set inside, as a built-in agent's fixed ones.
        key, sep, value = entry.partition("=")
        if sep:
            fixed_env.append((key, value))
        else:
            key_env.append(key)
    return AgentDef(
        name=name,
        title=name,
        install=install,
        package=package,
        command=command,
        run_args=_tuple(table, "args"),
        home_paths=homes,
        key_env=tuple(key_env),
        fixed_env=tuple(fixed_env),
        allow=allow,
        login_hint=f"name the keys {name} needs in [sandbox] env" if key_env else "",
        pinned_version=version,
        builtin=False,
        node=node,
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
