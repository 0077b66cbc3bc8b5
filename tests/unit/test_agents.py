"""Agent definitions, registry lookups, pins and the update notice (no engine, no internet)."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hutch.agents import BUILTIN, AgentDef, all_agents, custom_agent, registry_name, resolve
from hutch.config import load_settings
from hutch.config.load import merge, parse_mapping
from hutch.config.schema import ConfigValue
from hutch.egress.policy import parse_allow_entry
from hutch.errors import ConfigError, UsageError
from hutch.freshness import DAY, check, lookup_due, notice
from hutch.image.recipe import agent_install_line
from hutch.image.versions import (
    LookupFailed,
    Pin,
    Pins,
    latest_version,
    parse_release,
    release_url,
)
from hutch.paths import Dirs

# -- built-in definitions ------------------------------------------------------------

PERMISSION_FLAGS = {
    "claude": ("--dangerously-skip-permissions",),
    "codex": ("--dangerously-bypass-approvals-and-sandbox",),
    "gemini": ("--yolo",),
    "aider": ("--yes-always", "--no-check-update"),
    # opencode's --auto belongs to its TUI command only: set through the environment.
    "opencode": (),
}


def test_builtin_agents_are_the_five() -> None:
    assert list(BUILTIN) == ["claude", "codex", "gemini", "opencode", "aider"]
    for name, agent in BUILTIN.items():
        assert agent.name == name and agent.builtin and agent.pinned_version is None


@pytest.mark.parametrize(
    ("name", "install", "package", "command"),
    [
        ("claude", "npm", "@anthropic-ai/claude-code", "claude"),
        ("codex", "npm", "@openai/codex", "codex"),
        ("gemini", "npm", "@google/gemini-cli", "gemini"),
        ("opencode", "npm", "opencode-ai", "opencode"),
        ("aider", "pip", "aider-chat", "aider"),
    ],
)
def test_builtin_packages(name: str, install: str, package: str, command: str) -> None:
    agent = BUILTIN[name]
    assert (agent.install, agent.package, agent.command) == (install, package, command)
    assert agent.run_args == PERMISSION_FLAGS[name]


def test_opencode_permissions_come_from_its_environment() -> None:
    env = dict(BUILTIN["opencode"].fixed_env)
    assert json.loads(env["OPENCODE_PERMISSION"]) == {"*": "allow"}
    assert env["OPENCODE_DISABLE_AUTOUPDATE"] == "1"


@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_data_is_well_formed(name: str) -> None:
    agent = BUILTIN[name]
    for entry in agent.allow:
        parse_allow_entry(entry)
    for path in agent.home_paths:
        assert not path.startswith("/") and ".." not in path.split("/")
    for var in (*agent.key_env, *(k for k, _ in agent.fixed_env)):
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", var)
    assert agent.login_hint
    # Keys the agent understands are never set by hutch itself.
    assert not set(agent.key_env) & {k for k, _ in agent.fixed_env}


def test_only_gemini_brings_its_own_node() -> None:
    # Claude Code, Codex and opencode ship native binaries that the base's Node 18
    # installs fine; Gemini CLI is JavaScript that needs Node 20 or later.
    assert {n: a.node for n, a in BUILTIN.items() if a.node} == {"gemini": "24"}


def test_npm_install_line_is_pinned() -> None:
    line = agent_install_line(BUILTIN["codex"], "0.171.0")
    assert "npm install -g" in line and "'@openai/codex@0.171.0'" in line
    assert "node@" not in line


def test_gemini_layer_brings_its_node() -> None:
    # In the agent's own layer, with the agent: other images keep the base's Node.js.
    line = agent_install_line(BUILTIN["gemini"], "0.61.0")
    assert line.startswith("RUN npm install -g ")
    assert "'@google/gemini-cli@0.61.0' 'node@24'" in line


def test_custom_agent_node() -> None:
    assert custom_agent("x", table(node="22")).node == "22"
    for bad in (table(node="latest"), table(node="22", install="pip", package="x")):
        with pytest.raises(ConfigError) as info:
            custom_agent("x", bad)
        assert "[agents.x] node" in info.value.message


# -- custom agents ---------------------------------------------------------------------


def table(**values: ConfigValue) -> dict[str, ConfigValue]:
    return {"package": "cowsay", "command": "cowsay", **values}


def test_custom_agent_from_config() -> None:
    layer = parse_mapping(
        {"agents": {"cow": {"package": "cowsay", "command": "cowsay", "version": "1.6.0",
                            "args": ["-e", "oO"], "env": ["COW_KEY", "COW_MODE=fast"],
                            "allow": ["api.example.com"], "home": [".cow"]}}},
        "hutch.toml", "project",
    )  # fmt: skip
    agents = all_agents(merge([layer]).agents)
    cow = agents["cow"]
    assert set(agents) == {*BUILTIN, "cow"}
    assert (cow.install, cow.package, cow.command, cow.pinned_version) == (
        "npm", "cowsay", "cowsay", "1.6.0"
    )  # fmt: skip
    assert cow.run_args == ("-e", "oO")
    assert cow.key_env == ("COW_KEY",)
    assert cow.fixed_env == (("COW_MODE", "fast"),)
    assert cow.allow == ("api.example.com",)
    assert cow.home_paths == (".cow",)
    assert not cow.builtin and cow.node is None


def test_custom_pip_agent_with_extras() -> None:
    agent = custom_agent("ai", table(install="pip", package="aider-chat[playwright]", command="aider"))
    assert registry_name(agent) == "aider-chat"
    assert release_url(agent) == "https://pypi.org/pypi/aider-chat/json"
    assert "'aider-chat[playwright]==0.86.2'" in agent_install_line(agent, "0.86.2")


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"package": "cowsay'; rm -rf / #"}, "[agents.x] package"),
        ({"package": "Cowsay"}, "[agents.x] package"),
        ({"package": "cowsay@1.6.0"}, "[agents.x] package"),
        ({"install": "pip", "package": "black>=1"}, "[agents.x] package"),
        ({"command": "cowsay --fast"}, "[agents.x] command"),
        ({"command": "../../bin/sh"}, "[agents.x] command"),
        ({"version": "1.0 && true"}, "[agents.x] version"),
        ({"home": ("/etc",)}, "[agents.x] home"),
        ({"home": ("../.ssh",)}, "[agents.x] home"),
        ({"home": ("~/.ssh",)}, "[agents.x] home"),
        ({"home": (".config//x",)}, "[agents.x] home"),
        ({"allow": ("https://api.example.com/v1",)}, "[agents.x] allow"),
    ],
)
def test_custom_agent_rejects(values: dict[str, ConfigValue], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        custom_agent("x", table(**values))
    assert fragment in info.value.message
    assert info.value.hint


def test_unknown_agent_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as info:
        resolve("claud", {})
    assert "claude" in (info.value.hint or "") and "[agents.claud]" in (info.value.hint or "")


# -- registry answers --------------------------------------------------------------------


def test_release_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("npm_config_registry", raising=False)
    monkeypatch.delenv("NPM_CONFIG_REGISTRY", raising=False)
    assert release_url(BUILTIN["claude"]) == "https://registry.npmjs.org/@anthropic-ai%2Fclaude-code/latest"
    assert release_url(BUILTIN["opencode"]) == "https://registry.npmjs.org/opencode-ai/latest"
    assert release_url(BUILTIN["aider"]) == "https://pypi.org/pypi/aider-chat/json"
    monkeypatch.setenv("npm_config_registry", "https://npm.example.org/")
    assert release_url(BUILTIN["codex"]) == "https://npm.example.org/@openai%2Fcodex/latest"


@pytest.mark.parametrize(
    ("install", "data", "expected"),
    [
        ("npm", {"name": "x", "version": "1.2.3"}, "1.2.3"),
        ("npm", {"version": "0.61.0-nightly.20260909.ged2ac40df"}, "0.61.0-nightly.20260909.ged2ac40df"),
        ("pip", {"info": {"version": "0.86.2"}}, "0.86.2"),
        ("npm", {"version": "1.0'; touch /x"}, None),
        ("npm", {"version": ""}, None),
        ("npm", {"version": 3}, None),
        ("npm", ["1.2.3"], None),
        ("pip", {"info": "0.86.2"}, None),
        ("pip", {"version": "0.86.2"}, None),
    ],
)
def test_parse_release(install: str, data: object, expected: str | None) -> None:
    assert parse_release(install, data) == expected


class Registry:
    """A local npm registry: path -> (status, body)."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.requests: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.requests.append(self.path)
                status, body = registry.answers.get(self.path, (404, b'{"error":"not found"}'))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    reg = Registry()
    thread = threading.Thread(target=reg.server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("npm_config_registry", reg.url)
    try:
        yield reg
    finally:
        reg.server.shutdown()
        reg.server.server_close()


def test_latest_version_asks_the_registry(registry: Registry) -> None:
    registry.answers["/@openai%2Fcodex/latest"] = (200, b'{"name":"@openai/codex","version":"0.171.0"}')
    assert latest_version(BUILTIN["codex"], timeout=5) == "0.171.0"
    assert registry.requests == ["/@openai%2Fcodex/latest"]


@pytest.mark.parametrize(
    ("status", "body"),
    [(404, b'{"error":"not found"}'), (200, b"<html>proxy login</html>"), (200, b'{"version":"a b"}')],
)
def test_latest_version_failures(registry: Registry, status: int, body: bytes) -> None:
    registry.answers["/opencode-ai/latest"] = (status, body)
    with pytest.raises(LookupFailed) as info:
        latest_version(BUILTIN["opencode"], timeout=5)
    assert "/opencode-ai/latest" in str(info.value)


def test_latest_version_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9")
    with pytest.raises(LookupFailed):
        latest_version(BUILTIN["codex"], timeout=5)


# -- pins ------------------------------------------------------------------------------------


def test_pins_round_trip(tmp_path: Path) -> None:
    pins = Pins(tmp_path / "state" / "versions.json")
    assert pins.get("claude") is None
    pins.set("claude", "2.1.0", now=1000.0)
    assert pins.get("claude") == Pin("2.1.0", 1000.0, None, 1000.0)
    pins.looking("claude", 2000.0)
    assert pins.get("claude") == Pin("2.1.0", 1000.0, None, 2000.0)
    pins.seen("claude", "2.1.5", 3000.0)
    assert pins.get("claude") == Pin("2.1.0", 1000.0, "2.1.5", 3000.0)
    # The registry naming the pinned release again confirms it.
    pins.seen("claude", "2.1.0", 4000.0)
    assert pins.get("claude") == Pin("2.1.0", 4000.0, None, 4000.0)
    pins.set("codex", "0.1.0", now=5000.0)
    assert pins.names() == ["claude", "codex"]
    assert list(tmp_path.glob("state/*.tmp")) == []


def test_pins_read_the_older_format_and_ignore_damage(tmp_path: Path) -> None:
    path = tmp_path / "versions.json"
    path.write_text(json.dumps({"claude": {"version": "2.1.0", "checked": 10},
                                "codex": {"version": 3}, "gemini": "x"}))  # fmt: skip
    pins = Pins(path)
    assert pins.get("claude") == Pin("2.1.0", 10.0)
    assert pins.get("codex") is None and pins.get("gemini") is None
    path.write_text("{not json")
    assert pins.get("claude") is None
    pins.seen("claude", "2.1.0", 1.0)  # nothing pinned: nothing to record
    assert pins.get("claude") is None


# -- the update notice ------------------------------------------------------------------------

NOW = 1_800_000_000.0


def test_notice_rules() -> None:
    fresh = Pin("2.1.0", NOW - 6 * DAY, None, NOW - 6 * DAY)
    assert notice("claude", fresh, NOW, 7) is None
    old = Pin("2.1.0", NOW - 9 * DAY, None, NOW - 9 * DAY)
    line = notice("claude", old, NOW, 7)
    assert line is not None and "9 days" in line and "`hutch update claude`" in line
    assert "\n" not in line
    known = old._replace(newest="2.1.4")
    assert notice("claude", known, NOW, 7) == (
        "claude 2.1.4 is available (this image has 2.1.0); `hutch update claude` rebuilds with it"
    )
    assert notice("claude", known, NOW, 0) is None  # 0 days: off


def test_lookup_at_most_once_per_period() -> None:
    old = Pin("2.1.0", NOW - 9 * DAY, None, NOW - 9 * DAY)
    assert lookup_due(old, NOW, 7)
    assert not lookup_due(old._replace(looked=NOW - 1 * DAY), NOW, 7)
    assert not lookup_due(old._replace(checked=NOW - 1 * DAY), NOW, 7)
    assert not lookup_due(old, NOW, 0)


class Lookups:
    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.calls: list[str] = []

    def __call__(self, agent: AgentDef) -> str:
        self.calls.append(agent.name)
        if self.answer is None:
            raise LookupFailed("registry down")
        return self.answer


def run_check(pins: Pins, lookup: Lookups, now: float, agent: AgentDef = BUILTIN["claude"],
              days: int = 7) -> list[str]:  # fmt: skip
    said: list[str] = []
    thread = check(pins, agent, days=days, say=said.append, now=now, lookup=lookup, wait_at_exit=0)
    if thread is not None:
        thread.join(5)
        assert not thread.is_alive()
    return said


def test_check_says_nothing_and_asks_nobody_while_fresh(tmp_path: Path) -> None:
    pins = Pins(tmp_path / "versions.json")
    pins.set("claude", "2.1.0", now=NOW - DAY)
    lookup = Lookups("2.1.9")
    assert run_check(pins, lookup, NOW) == []
    assert lookup.calls == []


def test_check_looks_up_in_the_background_then_names_the_release(tmp_path: Path) -> None:
    pins = Pins(tmp_path / "versions.json")
    pins.set("claude", "2.1.0", now=NOW - 10 * DAY)
    lookup = Lookups("2.1.9")
    said = run_check(pins, lookup, NOW)
    assert len(said) == 1 and "10 days" in said[0]
    assert lookup.calls == ["claude"]
    # The next start knows the answer and does not ask again.
    said = run_check(pins, lookup, NOW + 60)
    assert said == ["claude 2.1.9 is available (this image has 2.1.0); "
                    "`hutch update claude` rebuilds with it"]  # fmt: skip
    assert lookup.calls == ["claude"]
    # A period later it asks once more.
    run_check(pins, lookup, NOW + 8 * DAY)
    assert lookup.calls == ["claude", "claude"]


def test_check_confirmed_pin_silences_the_notice(tmp_path: Path) -> None:
    pins = Pins(tmp_path / "versions.json")
    pins.set("claude", "2.1.0", now=NOW - 10 * DAY)
    lookup = Lookups("2.1.0")
    assert len(run_check(pins, lookup, NOW)) == 1
    assert run_check(pins, lookup, NOW + 60) == []
    assert lookup.calls == ["claude"]


def test_check_offline_asks_once_per_period(tmp_path: Path) -> None:
    pins = Pins(tmp_path / "versions.json")
    pins.set("claude", "2.1.0", now=NOW - 10 * DAY)
    lookup = Lookups(None)
    for minute in range(5):
        said = run_check(pins, lookup, NOW + minute * 60)
        assert len(said) == 1 and "last checked" in said[0]
    assert lookup.calls == ["claude"]


def test_check_skips_unpinned_and_config_pinned_agents(tmp_path: Path) -> None:
    pins = Pins(tmp_path / "versions.json")
    lookup = Lookups("9")
    assert run_check(pins, lookup, NOW) == []
    cow = custom_agent("cow", table(version="1.6.0"))
    pins.set("cow", "1.6.0", now=NOW - 100 * DAY)
    assert run_check(pins, lookup, NOW, agent=cow) == []
    assert lookup.calls == []


def test_check_off(tmp_path: Path) -> None:
    pins = Pins(tmp_path / "versions.json")
    pins.set("claude", "2.1.0", now=NOW - 100 * DAY)
    lookup = Lookups("2.1.9")
    assert run_check(pins, lookup, NOW, days=0) == []
    assert lookup.calls == []


def test_check_survives_an_unwritable_state(tmp_path: Path) -> None:
    pins = Pins(tmp_path / "versions.json")
    pins.set("claude", "2.1.0", now=NOW - 10 * DAY)
    # Works as root too: a directory where the pin file's temporary copy would go.
    (tmp_path / f"versions.json.{os.getpid()}.{threading.get_ident()}.tmp").mkdir()
    lookup = Lookups("2.1.9")
    said = run_check(pins, lookup, NOW)
    assert len(said) == 1
    assert lookup.calls == []  # no stamp, no lookup: else every start would ask


def test_update_check_days_from_config(tmp_path: Path) -> None:
    d = Dirs(*(str(tmp_path / sub) for sub in ("c", "d", "s")))
    assert load_settings(d, str(tmp_path)).update_check_days == 7
    (tmp_path / "hutch.toml").write_text("[image]\nupdate_check_days = 0\n")
    assert load_settings(d, str(tmp_path)).update_check_days == 0
    for bad in ("-1", '"7"', "true"):
        (tmp_path / "hutch.toml").write_text(f"[image]\nupdate_check_days = {bad}\n")
        with pytest.raises(ConfigError, match="update_check_days"):
            load_settings(d, str(tmp_path))

