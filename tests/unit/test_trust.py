"""hutch.trust: a project's hutch.toml narrows freely; anything else needs trust."""

from __future__ import annotations

from pathlib import Path

import pytest

from hutch import trust
from hutch.config import load_settings
from hutch.config.load import Layer
from hutch.errors import EXIT_CONFIG, ConfigError
from hutch.paths import Dirs


def dirs(tmp_path: Path) -> Dirs:
    return Dirs(*(str(tmp_path / sub) for sub in ("c", "d", "s")))


def setup(tmp_path: Path, project_text: str, user_text: str = "") -> tuple[Dirs, Path]:
    d = dirs(tmp_path)
    if user_text:
        Path(d.user_config).parent.mkdir(parents=True, exist_ok=True)
        Path(d.user_config).write_text(user_text)
    project = tmp_path / "p"
    project.mkdir(exist_ok=True)
    (project / "hutch.toml").write_text(project_text)
    return d, project


def asks(tmp_path: Path, project_text: str, user_text: str = "", flags: Layer | None = None) -> list[str]:
    d, project = setup(tmp_path, project_text, user_text)
    return trust.widening(load_settings(d, str(project), flags).merged)


USER = """
[image]
packages = ["jq", "make"]
[sandbox]
memory = "4g"
cpus = 2
env = ["LANG", "TERM"]
caches = ["npm", "pip"]
[network]
allow = ["api.github.com", "pypi.org"]
[secrets]
mask = ["*.secret"]
unmask = [".env.test", ".env.ci"]
"""


@pytest.mark.parametrize(
    "text",
    [
        "version = 1",
        'agent = "codex"',
        '[image]\npackages = ["jq"]',
        '[image]\nca_certificates = "none"',
        "[image]\nupdate_check_days = 0",
        '[sandbox]\nworkdir = "/workspace"',
        '[sandbox]\nmemory = "512m"',
        '[sandbox]\nmemory = "4096m"',  # the same amount, spelt otherwise
        "[sandbox]\ncpus = 1.5",
        "[sandbox]\npids = 100",
        '[sandbox]\nauth = "isolated"',
        '[sandbox]\nsurface = "ask"',
        '[sandbox]\nenv = ["LANG"]',
        '[sandbox]\ncaches = ["pip"]',
        '[network]\nmode = "none"',
        '[network]\naudit = "required"',
        '[network]\nallow = ["pypi.org"]',
        "[network]\nallow = []",
        '[secrets]\nmask = ["*.key2"]',
        '[secrets]\nunmask = [".env.ci"]',
        '[image]\nbase = "debian:bookworm-slim"',  # what is in effect anyway
    ],
)
def test_narrowing_needs_no_trust(tmp_path: Path, text: str) -> None:
    assert asks(tmp_path, text + "\n", USER) == []


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[network]\nallow = ["127.0.0.1:8080"]', "[network] allow 127.0.0.1:8080"),
        ('[network]\nallow = ["pypi.org", "evil.example"]', "[network] allow evil.example"),
        ('[network]\nallow_private = ["db.internal"]', "[network] allow_private db.internal"),
        ('[network]\nmode = "open"', '[network] mode = "open" (wider than "allowlist")'),
        ('[network]\naudit = "best-effort"', '[network] audit = "best-effort"'),
        ('[image]\nbase = "evil/base"', '[image] base = "evil/base"'),
        ('[image]\npackages = ["jq", "curl"]', "[image] packages curl"),
        ('[image]\nnpm = ["left-pad"]', "[image] npm left-pad"),
        ('[image]\npip = ["requests"]', "[image] pip requests"),
        ('[image]\nca_certificates = ["/etc/shadow.pem"]', "[image] ca_certificates = /etc/shadow.pem"),
        ('[image]\nca_certificates = ["certs/ca.crt"]', "[image] ca_certificates = certs/ca.crt"),
        ('[sandbox]\nmemory = "64g"', '[sandbox] memory = "64g" (more than "4g")'),
        ("[sandbox]\ncpus = 3", "[sandbox] cpus = 3 (more than 2)"),
        ("[sandbox]\npids = 100000", "[sandbox] pids = 100000 (more than 4096)"),
        ('[sandbox]\nenv = ["AWS_SECRET_ACCESS_KEY"]', "[sandbox] env AWS_SECRET_ACCESS_KEY"),
        # Inside the project, yet around the masks and read-only paths.
        ('[sandbox]\nmounts = [".env:/x"]', "[sandbox] mounts .env:/x"),
        ('[sandbox]\nauth = "host"', '[sandbox] auth = "host"'),
        ('[sandbox]\nsurface = "report"', '[sandbox] surface = "report"'),
        ('engine = "docker"', 'engine = "docker"'),
        ('[secrets]\nunmask = [".env"]', "[secrets] unmask .env"),
        ('[agents.tool]\npackage = "tool"\ncommand = "tool"\nhome = [".bashrc"]',
         "[agents.tool] (installs and runs code)"),
    ],
)  # fmt: skip
def test_anything_else_needs_trust(tmp_path: Path, text: str, named: str) -> None:
    assert asks(tmp_path, text + "\n", USER) == [named]


def test_without_a_user_config_the_defaults_are_the_limit(tmp_path: Path) -> None:
    assert asks(tmp_path, '[network]\nallow = ["api.github.com"]\n') == ["[network] allow api.github.com"]
    assert asks(tmp_path, "[sandbox]\npids = 4096\n") == []
    assert asks(tmp_path, "[sandbox]\npids = 4097\n") == ["[sandbox] pids = 4097 (more than 4096)"]


def test_a_value_a_flag_replaced_takes_no_effect_and_needs_no_trust(tmp_path: Path) -> None:
    text = '[network]\nmode = "open"\nallow = ["evil.example"]\n'
    flags = Layer("flag", {"network.mode": "none"})
    assert asks(tmp_path, text, flags=flags) == ["[network] allow evil.example"]
    # An additive flag keeps the project's entries in effect: still asked.
    flags = Layer("flag", {"network.allow": ("pypi.org",)})
    assert "[network] allow evil.example" in asks(tmp_path, text, flags=flags)


def test_the_users_agent_table_may_be_repeated(tmp_path: Path) -> None:
    table = '[agents.tool]\npackage = "tool"\ncommand = "tool"\n'
    assert asks(tmp_path, table, table) == []


def test_a_project_mask_adds_to_the_users_never_replaces_it(tmp_path: Path) -> None:
    d, project = setup(tmp_path, '[secrets]\nmask = ["*.key2"]\n', '[secrets]\nmask = ["*.secret"]\n')
    settings = load_settings(d, str(project))
    assert settings.mask == ("*.secret", "*.key2")
    assert settings.merged.origins["secrets.mask"] == (
        f"user config {d.user_config} + project config {project / 'hutch.toml'}"
    )
    # An empty project list removes nothing.
    (project / "hutch.toml").write_text("[secrets]\nmask = []\n")
    assert load_settings(d, str(project)).mask == ("*.secret",)


def test_trust_is_for_the_exact_bytes(tmp_path: Path) -> None:
    d, project = setup(tmp_path, '[network]\nallow = ["evil.example"]\n')
    config = project / "hutch.toml"

    def check() -> None:
        trust.check(d, str(project), load_settings(d, str(project)).merged)

    with pytest.raises(ConfigError) as info:
        check()
    assert info.value.exit_code == EXIT_CONFIG and "hutch config trust" in (info.value.hint or "")
    assert trust.trust(d, str(project)) == str(config)
    check()
    # Content the agent adds (a comment is enough: it is not the file the user read).
    config.write_text(config.read_text() + "# harmless?\n")
    with pytest.raises(ConfigError):
        check()
    trust.trust(d, str(project))
    check()


def test_a_file_changed_after_loading_is_not_the_trusted_one(tmp_path: Path) -> None:
    d, project = setup(tmp_path, '[network]\nallow = ["a.example"]\n')
    trust.trust(d, str(project))
    # Settings loaded from other bytes than those trusted, as when the file
    # changes between the user's `trust` and the load.
    (project / "hutch.toml").write_text('[network]\nallow = ["a.example", "b.example"]\n')
    merged = load_settings(d, str(project)).merged
    (project / "hutch.toml").write_text('[network]\nallow = ["a.example"]\n')
    with pytest.raises(ConfigError):
        trust.check(d, str(project), merged)


def test_trust_record_is_private(tmp_path: Path) -> None:
    d, project = setup(tmp_path, "version = 1\n")
    trust.trust(d, str(project))
    records = list((Path(d.state) / "trusted").iterdir())
    assert [r.stat().st_mode & 0o777 for r in records] == [0o600]
    assert (Path(d.state) / "trusted").stat().st_mode & 0o777 == 0o700


def test_build_proxy_is_read_from_the_users_config_only(tmp_path: Path) -> None:
    d, project = setup(tmp_path, "[image]\nbuild_proxy = true\n")
    with pytest.raises(ConfigError) as info:
        load_settings(d, str(project))
    assert "[image] build_proxy is read from your own config only" in info.value.message
    d, project = setup(tmp_path, "version = 1\n", "[image]\nbuild_proxy = true\n")
    assert load_settings(d, str(project)).build_proxy is True
    assert load_settings(dirs(tmp_path / "fresh"), str(project)).build_proxy is False
